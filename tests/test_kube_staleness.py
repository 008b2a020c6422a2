"""An out-of-date view of the cluster: the engine withholds exactly the decisions it bears
on, says why (reason, /metrics, status condition), and decides again once it is current.

Hand-built sync states over the tutorial's objects (no API server: the cache's side is
in tests/test_kube_cache.py, the whole outage in tests/test_fault_kube.py)."""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import fields
from types import MappingProxyType
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from adapter.clock import ManualClock
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadKey, LoadReport, ModelLoad
from adapter.collect.sync import PartitionSync, SyncedClusterSnapshot, SyncState
from adapter.engine import KUBERNETES_STALE, Engine, VariantDecision
from adapter.exporter import REASONS, SnapshotCollector, reason_code
from adapter.model.kube import ClusterSnapshot
from adapter.status import OPTIMIZATION_READY, desired_status
from tests.kube_helpers import MODEL, SAMPLES
from tests.test_exporter import samples

HERE, THERE = "vllm-test", "team-b"
LIMIT = 45.0


class Loads:
    """The tutorial's first job in both namespaces (pods report what is in flight)."""

    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        return LoadReport(
            {
                (ns, MODEL): ModelLoad(
                    ns,
                    MODEL,
                    arrival_rate_rpm=480.0,
                    avg_output_tokens=512.0,
                    running=32.0,
                    waiting=0.0,
                )
                for ns in (HERE, THERE)
            }
        )


def two_namespaces() -> ClusterSnapshot:
    """The tutorial's VA and Deployment, and a copy of both in another namespace."""
    base = load_snapshot(SAMPLES)
    vas = dict(base.variant_autoscalings)
    deployments = dict(base.deployments)
    for source, target in ((vas, vas), (deployments, deployments)):
        moved = copy.deepcopy(dict(source[(HERE, "vllm")]))
        moved["metadata"] = {**moved["metadata"], "namespace": THERE}
        target[(THERE, "vllm")] = moved
    return ClusterSnapshot(
        variant_autoscalings=MappingProxyType(vas),
        config_maps=base.config_maps,
        nodes=base.nodes,
        deployments=MappingProxyType(deployments),
        config_namespace=base.config_namespace,
    )


def with_sync(
    cluster: ClusterSnapshot, now: float, old: Mapping[tuple[str, str], float]
) -> SyncedClusterSnapshot:
    """`cluster` as a namespaced cache would give it at `now`: every partition in sync
    just now, except those in `old` (kind, scope) -> seconds since their last proof."""
    scopes = [("VariantAutoscaling", ns) for ns in (HERE, THERE)]
    scopes += [("Deployment", ns) for ns in (HERE, THERE)]
    scopes += [("ConfigMap", cluster.config_namespace), ("Node", "")]
    state = SyncState(
        taken_at=now,
        started_at=0.0,
        partitions=tuple(
            PartitionSync(kind, scope, synced_at=now - old.get((kind, scope), 0.0))
            for kind, scope in scopes
        ),
    )
    values: dict[str, Any] = {f.name: getattr(cluster, f.name) for f in fields(ClusterSnapshot)}
    return SyncedClusterSnapshot(**values, sync=state)


class Cluster:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.base = two_namespaces()
        self.old: dict[tuple[str, str], float] = {}

    def __call__(self) -> SyncedClusterSnapshot:
        return with_sync(self.base, self.clock.monotonic(), self.old)


def decided(decisions: Mapping[tuple[str, str], VariantDecision]) -> dict[str, bool]:
    return {ns: d.solved for (ns, _name), d in sorted(decisions.items())}


def test_only_the_vas_an_old_partition_bears_on_are_withheld_until_it_syncs() -> None:
    clock = ManualClock()
    clock.advance(1000)
    cluster = Cluster(clock)
    engine = Engine(cluster=cluster, metrics=Loads(), clock=clock, staleness_s=LIMIT)
    assert decided(engine.run_cycle().decisions) == {HERE: True, THERE: True}

    cluster.old = {("VariantAutoscaling", HERE): LIMIT}  # at the limit: still recent enough
    assert decided(engine.run_cycle().decisions) == {HERE: True, THERE: True}

    cluster.old = {("VariantAutoscaling", HERE): 312.0}
    snap = engine.run_cycle()
    assert decided(snap.decisions) == {HERE: False, THERE: True}
    withheld = snap.decisions[(HERE, "vllm")]
    assert withheld.reason == (
        f"{KUBERNETES_STALE}: VariantAutoscaling ({HERE}) last in sync (312 s ago), "
        "limit 45 s; no decision until the Kubernetes API answers again"
    )
    # what the cycle read is kept (metrics, current replicas): only the answer is withheld
    assert withheld.load is not None and withheld.current_replicas == 1
    assert withheld.accelerator == "H100" and withheld.cost is None
    assert engine.stats.cycle_errors_total == 0, "the cycle succeeded: one VA is unsolved"

    cluster.old = {("Deployment", THERE): 60.0}
    snap = engine.run_cycle()
    assert decided(snap.decisions) == {HERE: True, THERE: False}
    assert "Deployment (team-b) last in sync (60 s ago)" in snap.decisions[(THERE, "vllm")].reason

    # the service classes and the GPU capacity bear on every VA
    for cluster_wide in (("ConfigMap", "inferno-autoscaler-system"), ("Node", "")):
        cluster.old = {cluster_wide: 46.0}
        assert decided(engine.run_cycle().decisions) == {HERE: False, THERE: False}

    cluster.old = {}
    assert decided(engine.run_cycle().decisions) == {HERE: True, THERE: True}


def test_a_partition_never_in_sync_is_named_so() -> None:
    clock = ManualClock()
    base = two_namespaces()
    values: dict[str, Any] = {f.name: getattr(base, f.name) for f in fields(ClusterSnapshot)}
    never = SyncState(
        taken_at=100.0,
        started_at=0.0,
        partitions=(
            PartitionSync("VariantAutoscaling", "", synced_at=None),
            PartitionSync("Deployment", "", synced_at=99.0),
        ),
    )
    snapshot = SyncedClusterSnapshot(**values, sync=never)
    engine = Engine(cluster=lambda: snapshot, metrics=Loads(), clock=clock, staleness_s=LIMIT)
    reason = engine.run_cycle().decisions[(HERE, "vllm")].reason
    assert "VariantAutoscaling (all namespaces) never in sync (100 s)" in reason


def test_the_engine_staleness_defaults_to_three_cycles() -> None:
    engine = Engine(cluster=two_namespaces, metrics=Loads(), clock=ManualClock(), interval_s=10)
    assert engine.staleness_s == 30.0
    # a plain ClusterSnapshot (a folder of YAML) has no API server to fall behind
    assert decided(engine.run_cycle().decisions) == {HERE: True, THERE: True}


def test_the_reason_code_metrics_and_status_condition_say_why() -> None:
    clock = ManualClock()
    clock.advance(1000)
    cluster = Cluster(clock)
    cluster.old = {("VariantAutoscaling", HERE): 120.0}
    engine = Engine(cluster=cluster, metrics=Loads(), clock=clock, staleness_s=LIMIT)
    snap = engine.run_cycle()
    withheld = snap.decisions[(HERE, "vllm")]
    assert "KubernetesStale" in REASONS
    assert reason_code(withheld) == "KubernetesStale"
    assert reason_code(snap.decisions[(THERE, "vllm")]) == "Optimized"

    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        SnapshotCollector(
            lambda: snap,
            engine.stats,
            clock,
            max_age_s=LIMIT,
            kubernetes_sync=lambda: cluster().sync or SyncState(0.0, 0.0, ()),
        )
    )
    scraped = samples(generate_latest(registry).decode())

    def sample(name: str, **labels: str) -> float:
        return scraped[(name, frozenset(labels.items()))]

    assert sample("wva_kubernetes_sync_age_seconds", resource="VariantAutoscaling") == 120.0
    assert sample("wva_kubernetes_sync_age_seconds", resource="Deployment") == 0.0
    assert (
        sample(
            "wva_kubernetes_watch_errors_total", resource="VariantAutoscaling", kind="unexpected"
        )
        == 0.0
    )
    labels = {"variant_name": "vllm", "namespace": HERE, "accelerator_type": "H100"}
    assert sample("wva_decision_info", **labels, reason="KubernetesStale") == 1.0
    assert ("wva_desired_replicas", frozenset(labels.items())) not in scraped  # never 0

    obj = {
        "metadata": {"name": "vllm", "namespace": HERE, "generation": 3},
        "status": {"desiredOptimizedAlloc": {"accelerator": "H100", "numReplicas": 2}},
    }
    status = desired_status(obj, withheld, now=clock.now(), run_time=snap.timestamp)
    (ready,) = [c for c in status["conditions"] if c["type"] == OPTIMIZATION_READY]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "KubernetesStale",
        withheld.reason,
    )
    assert status["desiredOptimizedAlloc"]["numReplicas"] == 2, "the last recommendation stays"


def test_a_watch_timeout_too_long_for_the_limit_delays_the_verdict_it_does_not_flap() -> None:
    """A quiet, healthy partition goes up to one watch timeout without a proof: a limit
    below two of them would call it stale between renewals. The engine applies the
    longer one, and says so."""
    clock = ManualClock()
    base = two_namespaces()
    values: dict[str, Any] = {f.name: getattr(base, f.name) for f in fields(ClusterSnapshot)}
    quiet = SyncState(
        taken_at=100.0,
        started_at=0.0,
        partitions=(PartitionSync("VariantAutoscaling", "", synced_at=100.0 - 40.0),),
        renewal_s=22.0,
    )
    assert quiet.limit(30.0) == 44.0 and quiet.limit(45.0) == 45.0
    snapshot = SyncedClusterSnapshot(**values, sync=quiet)
    engine = Engine(cluster=lambda: snapshot, metrics=Loads(), clock=clock, staleness_s=30.0)
    assert decided(engine.run_cycle().decisions) == {HERE: True, THERE: True}  # 40 s <= 44 s
    older = SyncState(100.0, 0.0, (PartitionSync("VariantAutoscaling", "", 50.0),), 22.0)
    snapshot = SyncedClusterSnapshot(**values, sync=older)
    reason = engine.run_cycle().decisions[(HERE, "vllm")].reason
    assert "last in sync (50 s ago), limit 44 s" in reason

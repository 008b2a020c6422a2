"""Several variants of one model in virtual time: one pool, its router, a KEDA per variant.

The cluster is `SimCluster` with pool members: each variant's Deployment has its own
pods and profile, and the gateway routes over all their ready pods by the fewest
outstanding requests (as llm-d's endpoint picker balances an InferencePool by load, not
by cost). The pods of all variants report the model's one set of vLLM series, so the
adapter reads the pool's total load, as in a cluster. Policies:

- `ours`: one adapter (`Engine`, every VA of the samples) that splits the model's load
  between its variants (`adapter.variants`) and serves each variant's replicas to that
  variant's KEDA ScaledObject (`keda/scaledobject.yaml`);
- `alone`: each variant sized on its own for the pool's whole load, as two adapters (or
  two per-Deployment recipes) that do not know of each other would size them;
- `only:<i>`: ours on variant `i` alone, the others held at 0 replicas (one Deployment).

Each policy runs on the same seeded requests; the report has the shares of requests
within the SLOs, and each variant's GPU-hours and cost.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict

from adapter.assemble import AssemblySettings
from adapter.engine import CycleError, Engine
from adapter.model.kube import ACCELERATOR_LABEL, ClusterSnapshot
from adapter.optimizer import DEFAULT_ATTAINMENT
from adapter.scaler.service import ScalerService, ScalerSettings
from adapter.sim.cluster import ClusterSettings, PoolMember, SimCluster
from adapter.sim.hpa import DEFAULT_SYNC_PERIOD_SECONDS, KedaDriven, KedaLoop
from adapter.sim.policies import (
    OURS_INTERVAL_S,
    ClusterMetrics,
    Limits,
    SimClock,
    SimSetup,
    ours_scaled_object,
    setup_from_snapshot,
)
from adapter.sim.simulate import run_policy
from adapter.sim.traces import RequestShape, Trace, make_workload

POOL_POLICIES = ("ours", "alone")


@dataclass(frozen=True, slots=True)
class PoolSetup:
    """The variants of one model, in the samples, with the Deployment index of each."""

    snapshot: ClusterSnapshot
    variants: tuple[SimSetup, ...]

    def __post_init__(self) -> None:
        keys = {(v.variant[0], v.model) for v in self.variants}
        if len(self.variants) < 2 or len(keys) != 1:
            raise ValueError("a pool is two or more variants of one model in one namespace")

    def with_replicas(self, cluster: SimCluster, only: int | None = None) -> ClusterSnapshot:
        """The snapshot with each variant's Deployment as the simulation has it now, and
        (`only`) the other variants' VAs left out."""
        base = self.snapshot
        deployments = dict(base.deployments)
        for index, setup in enumerate(self.variants):
            deployment = dict(deployments[setup.variant])
            replicas, ready = cluster.replicas_of(index), cluster.ready_of(index)
            deployment["spec"] = {**deployment.get("spec", {}), "replicas": replicas}
            deployment["status"] = {"replicas": replicas, "readyReplicas": ready}
            deployments[setup.variant] = deployment
        vas = base.variant_autoscalings
        if only is not None:
            kept = self.variants[only].variant
            vas = {key: va for key, va in vas.items() if key == kept}
        return ClusterSnapshot(
            variant_autoscalings=vas,
            config_maps=base.config_maps,
            nodes=base.nodes,
            deployments=MappingProxyType(deployments),
            config_namespace=base.config_namespace,
        )


def add_variant(
    snapshot: ClusterSnapshot,
    of: tuple[str, str],
    name: str,
    profile: Mapping[str, object],
    gpus: int,
    device: str,
) -> ClusterSnapshot:
    """The samples with a second variant of VA `of`'s model: VA and Deployment `name` in
    its namespace, on accelerator `profile["acc"]` (its decode profile entry), and an
    NVIDIA node (GPU feature discovery's labels) with `gpus` GPUs of `device` (none
    with 0)."""
    base = dict(snapshot.variant_autoscalings[of])
    labels = {**base["metadata"].get("labels", {}), ACCELERATOR_LABEL: str(profile["acc"])}
    va = {
        **base,
        "metadata": {**base["metadata"], "name": name, "labels": labels},
        "spec": {**base["spec"], "modelProfile": {"accelerators": [dict(profile)]}},
    }
    deployment = dict(snapshot.deployments[of])
    deployment["metadata"] = {**deployment["metadata"], "name": name}
    nodes = dict(snapshot.nodes)
    if gpus:
        nodes[f"{name}-node"] = {
            "metadata": {"name": f"{name}-node", "labels": {"nvidia.com/gpu.product": device}},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}},
        }
    key = (of[0], name)
    return ClusterSnapshot(
        variant_autoscalings={**snapshot.variant_autoscalings, key: va},
        config_maps=snapshot.config_maps,
        nodes=nodes,
        deployments={**snapshot.deployments, key: deployment},
        config_namespace=snapshot.config_namespace,
    )


# A second variant for the samples' H100 one: A100s serving the model slower (7.0 + 0.06 x
# batch ms: an SLO batch of 33 against the H100's 60) but cheaper per request (unit cost
# 40 against 100). The profile is illustrative, not a measurement.
A100_PROFILE: Mapping[str, object] = MappingProxyType(
    {"acc": "A100", "accCount": 1, "alpha": "7.0", "beta": "0.06", "maxBatchSize": 512}
)
A100_DEVICE = "NVIDIA-A100-PCIE-80GB"


def h100_a100_pool(snapshot: ClusterSnapshot, a100_gpus: int, name: str = "vllm-a100") -> PoolSetup:
    """The samples' only variant (deployment 0) and an A100 one (`name`, deployment 1) on
    a node with `a100_gpus` A100s."""
    (h100,) = snapshot.variant_autoscalings
    pooled = add_variant(snapshot, h100, name, A100_PROFILE, a100_gpus, A100_DEVICE)
    return PoolSetup(
        pooled,
        (setup_from_snapshot(pooled, h100), setup_from_snapshot(pooled, (h100[0], name))),
    )


class _Member:
    """One Deployment of the pool, as a KEDA-driven loop sets it."""

    def __init__(self, cluster: SimCluster, index: int) -> None:
        self._cluster = cluster
        self._index = index

    @property
    def replicas(self) -> int:
        return self._cluster.replicas_of(self._index)

    def scale(self, replicas: int) -> None:
        self._cluster.scale(replicas, self._index)


def _snapshots(
    pool: PoolSetup, cluster: SimCluster, only: int | None
) -> Callable[[], ClusterSnapshot]:
    return lambda: pool.with_replicas(cluster, only)


def _desired(
    engine: Engine, clock: SimClock, variant: tuple[str, str], interval_s: float
) -> Callable[[], float]:
    """GetMetrics of `variant` from `engine`'s snapshots, through the real ScalerService."""
    scaler = ScalerService(lambda: engine.latest, clock, ScalerSettings.for_interval(interval_s))
    return lambda: float(scaler.desired(variant))


class PoolPolicy:
    """Adapter engines (one, or one per variant) serving each variant's KEDA loop."""

    cycle_s = OURS_INTERVAL_S

    def __init__(self, name: str, pool: PoolSetup, cluster: SimCluster, limits: Limits) -> None:
        self.name = name
        self._clock = SimClock()
        metrics = ClusterMetrics(cluster, pool.variants[0].load_key)
        settings = AssemblySettings(
            min_num_replicas=limits.min_replicas, attainment=DEFAULT_ATTAINMENT
        )
        if name == "ours":
            views: Sequence[int | None] = [None]
        elif name == "alone":
            views = range(len(pool.variants))
        elif name.startswith("only:"):
            views = [int(name.removeprefix("only:"))]
        else:
            raise ValueError(f"unknown pool policy {name!r}; known: ours, alone, only:<i>")
        # one engine per view; `alone` rates the shared counters once per engine, so each
        # gets its own ClusterMetrics (its own previous scrape)
        key = pool.variants[0].load_key
        self._engines: list[Engine] = []
        engine_of: dict[int, Engine] = {}
        for view in views:
            engine = Engine(
                cluster=_snapshots(pool, cluster, view),
                metrics=metrics if len(views) == 1 else ClusterMetrics(cluster, key),
                clock=self._clock,
                settings=settings,
                interval_s=self.cycle_s,
            )
            self._engines.append(engine)
            for index in range(len(pool.variants)) if view is None else [view]:
                engine_of[index] = engine
        self._kedas: list[KedaDriven] = []
        for index, setup in enumerate(pool.variants):
            serving = engine_of.get(index)
            if serving is None:
                continue  # held at 0 (only:<i>)
            keda = KedaLoop(
                spec=ours_scaled_object(limits.min_replicas, limits.max_replicas),
                get_metrics=_desired(serving, self._clock, setup.variant, self.cycle_s),
                initial_replicas=cluster.replicas_of(index),
                start=self.cycle_s / 2.0,
                hpa_sync_period=DEFAULT_SYNC_PERIOD_SECONDS,
            )
            self._kedas.append(KedaDriven(keda, _Member(cluster, index)))
        self._cycles = 0

    def next_time(self) -> float:
        return min(self._cycles * self.cycle_s, *(k.next_time() for k in self._kedas))

    def act(self, now: float) -> None:
        if self._cycles * self.cycle_s <= now:
            self._clock.t = now
            for engine in self._engines:
                with contextlib.suppress(CycleError):  # the previous snapshot stays
                    engine.run_cycle()
            self._cycles += 1
        for keda in self._kedas:
            if keda.next_time() <= now:
                keda.act(now)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VariantFigures(_Frozen):
    variant: str
    accelerator: str
    gpu_hours: float
    cost: float
    max_replicas: int
    scale_ups: int  # changes of its Deployment's spec.replicas, up and down
    scale_downs: int
    itl_attainment_pct: float | None  # of the requests its pods finished


class PoolResult(_Frozen):
    policy: str
    completed: int
    lost: int  # refused, killed, or unfinished at the end
    itl_attainment_pct: float
    slo_attainment_pct: float  # within both SLOs
    cost: float
    variants: list[VariantFigures]


class PoolReport(_Frozen):
    trace: str
    duration_s: float
    requests: int
    seed: int
    policies: list[PoolResult]


def simulate_pool(
    pool: PoolSetup,
    trace: Trace,
    *,
    policies: Sequence[str] = POOL_POLICIES,
    seed: int = 1,
    startup_delay_s: float = 60.0,
    limits: Limits | None = None,
    shape: RequestShape | None = None,
) -> PoolReport:
    """Run `trace` on the pool under each policy, on the same seeded requests. Every
    variant's pods run its VA's declared profile; each Deployment a policy scales starts
    with one replica (or the minimum, if more), the others with none."""
    limits = limits or Limits()
    workload = make_workload(trace, seed, shape or RequestShape())
    results = []
    for name in policies:
        # the Deployments a policy scales start with one replica, the others with none
        driven = [_drives(name, i) for i in range(len(pool.variants))]
        start = [max(limits.min_replicas, 1) if d else 0 for d in driven]
        first, *others = pool.variants
        cluster = SimCluster(
            ClusterSettings(
                first.profile,
                startup_delay_s=startup_delay_s,
                initial_replicas=start[0],
                members=tuple(
                    PoolMember(v.profile, initial_replicas=n)
                    for v, n in zip(others, start[1:], strict=True)
                ),
            ),
            workload,
        )
        run_policy(cluster, PoolPolicy(name, pool, cluster, limits), trace.duration_s)
        results.append(_result(name, pool, cluster))
    return PoolReport(
        trace=trace.name,
        duration_s=trace.duration_s,
        requests=len(workload),
        seed=seed,
        policies=results,
    )


def _drives(policy: str, index: int) -> bool:
    """Whether `policy` scales Deployment `index` (only:<i> scales one, holding the rest)."""
    return not policy.startswith("only:") or policy == f"only:{index}"


def _result(name: str, pool: PoolSetup, cluster: SimCluster) -> PoolResult:
    slo = pool.variants[0]
    done = cluster.finished
    itl_ok = {r: r.itl_mean * 1000.0 <= slo.slo_itl_ms and r not in cluster.retried for r in done}
    ttft_ok = {r: r.ttft * 1000.0 <= slo.slo_ttft_ms and r not in cluster.retried for r in done}
    lost = cluster.counters.arrivals - len(done)
    judged = len(done) + len(cluster.rejected) + len(cluster.killed)
    figures = []
    for index, setup in enumerate(pool.variants):
        hours = cluster.replica_seconds(index) / 3600.0 * setup.gpus_per_replica
        mine = [ok for r, ok in itl_ok.items() if cluster.served_by.get(r) == index]
        specs = [r.replicas for r in cluster.histories[index]]
        moves = [b - a for a, b in itertools.pairwise(specs) if b != a]
        figures.append(
            VariantFigures(
                variant=f"{setup.variant[0]}/{setup.variant[1]}",
                accelerator=setup.accelerator,
                gpu_hours=hours,
                cost=hours * setup.unit_cost,
                max_replicas=max(specs),
                scale_ups=sum(1 for m in moves if m > 0),
                scale_downs=sum(1 for m in moves if m < 0),
                itl_attainment_pct=100.0 * sum(mine) / len(mine) if mine else None,
            )
        )
    return PoolResult(
        policy=name,
        completed=len(done),
        lost=lost,
        itl_attainment_pct=100.0 * sum(itl_ok.values()) / judged if judged else 100.0,
        slo_attainment_pct=(
            100.0 * sum(itl_ok[r] and ttft_ok[r] for r in done) / judged if judged else 100.0
        ),
        cost=sum(f.cost for f in figures),
        variants=figures,
    )

"""Scale from zero in the engine: a VA at 0 replicas, the gateway's queue, the waker.

The cluster is the tutorial's objects with the Deployment at 0 replicas; the pods'
metrics are empty (no pod runs), the gateway is an in-memory `GatewaySource` whose
queue the test sets. Time is a ManualClock.
"""

from __future__ import annotations

from collections.abc import Collection

from adapter.assemble import AssemblySettings
from adapter.clock import ManualClock
from adapter.collect.gateway import GatewayQueue, GatewayReport
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadKey, LoadReport
from adapter.engine import Engine, Snapshot
from adapter.model.kube import ClusterSnapshot
from adapter.waker import Waker, parked
from adapter.zero import ScaleToZero
from tests.kube_helpers import MODEL, SAMPLES

NAMESPACE = "vllm-test"
KEY = (NAMESPACE, "vllm")


def at_zero() -> ClusterSnapshot:
    base = load_snapshot(SAMPLES)
    deployment = dict(base.deployments[KEY])
    deployment["spec"] = {**deployment["spec"], "replicas": 0}
    deployment["status"] = {}
    return ClusterSnapshot(
        variant_autoscalings=base.variant_autoscalings,
        config_maps=base.config_maps,
        nodes=base.nodes,
        deployments={**base.deployments, KEY: deployment},
        config_namespace=base.config_namespace,
    )


class NoPods:
    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        del keys
        return LoadReport()


class Gateway:
    """The gateway's queue for the tutorial's model, as the test sets it."""

    def __init__(self) -> None:
        self.waiting = 0.0
        self.error: str | None = None
        self.reads = 0

    def collect(self, keys: Collection[LoadKey]) -> GatewayReport:
        self.reads += 1
        if self.error is not None:
            return GatewayReport(error=self.error)
        queue = GatewayQueue(NAMESPACE, MODEL, waiting=self.waiting)
        return GatewayReport(
            queues={k: queue for k in keys if k == (NAMESPACE, MODEL)}, exported=True
        )


def engine_at_zero(
    clock: ManualClock,
    gateway: Gateway,
    published: list[Snapshot],
    cluster: ClusterSnapshot | None = None,
) -> tuple[Engine, Waker]:
    """An engine and its waker on `cluster` (default `at_zero()`), from zero."""
    cluster = cluster or at_zero()
    zero = ScaleToZero(retention_s=120)
    engine = Engine(
        cluster=lambda: cluster,
        metrics=NoPods(),
        clock=clock,
        settings=AssemblySettings(min_num_replicas=0),
        on_snapshot=published.append,
        gateway=gateway,
        zero=zero,
    )
    return engine, Waker(engine, gateway, zero, clock)


def test_a_parked_variant_is_woken_between_cycles_and_the_next_cycle_keeps_it_awake() -> None:
    clock, gateway = ManualClock(), Gateway()
    published: list[Snapshot] = []
    engine, waker = engine_at_zero(clock, gateway, published)
    first = engine.run_cycle()
    assert first.decisions[KEY].desired_replicas == 0 and KEY in parked(first)
    assert waker.poll() is None  # nothing waits: nothing published
    assert len(published) == 1

    gateway.waiting = 3
    clock.advance(0.25)
    woken = waker.poll()
    assert woken is not None and woken is engine.latest and published[-1] is woken
    decision = woken.decisions[KEY]
    assert decision.desired_replicas == 1 and "3 requests wait" in decision.reason
    assert woken.cycle == first.cycle and woken.monotonic == first.monotonic  # same age
    assert waker.poll() is None  # not parked any more: no second wake, no gateway read
    reads = gateway.reads

    # the queue drained into the starting pod before the next cycle: it still holds 1
    gateway.waiting = 0
    clock.advance(15)
    again = engine.run_cycle()
    assert again.decisions[KEY].desired_replicas == 1
    assert "held at 1 replica" in again.decisions[KEY].reason
    assert gateway.reads == reads + 1  # the cycle's own read

    clock.advance(120)
    assert engine.run_cycle().decisions[KEY].desired_replicas == 0


def test_the_cycle_itself_wakes_on_the_queue_with_replicas_for_the_waiting_requests() -> None:
    clock, gateway = ManualClock(), Gateway()
    published: list[Snapshot] = []
    engine, _ = engine_at_zero(clock, gateway, published)
    gateway.waiting = 1000
    decision = engine.run_cycle().decisions[KEY]
    assert decision.slo_batch is not None and decision.slo_batch > 0
    assert decision.desired_replicas == -(-1000 // decision.slo_batch)


def test_the_cycles_wake_up_stops_at_the_vas_max_replicas() -> None:
    clock, gateway = ManualClock(), Gateway()
    published: list[Snapshot] = []
    cluster = at_zero()
    va = dict(cluster.variant_autoscalings[KEY])
    va["spec"] = {**va["spec"], "maxReplicas": 2}  # the newer upstream shape's bound
    capped = ClusterSnapshot(
        variant_autoscalings={KEY: va},
        config_maps=cluster.config_maps,
        nodes=cluster.nodes,
        deployments=cluster.deployments,
        config_namespace=cluster.config_namespace,
    )
    engine, _ = engine_at_zero(clock, gateway, published, capped)
    gateway.waiting = 1000
    decision = engine.run_cycle().decisions[KEY]
    assert (decision.max_replicas, decision.desired_replicas) == (2, 2)


def test_a_wake_up_never_replaces_a_newer_snapshot() -> None:
    clock, gateway = ManualClock(), Gateway()
    published: list[Snapshot] = []
    engine, _ = engine_at_zero(clock, gateway, published)
    old = engine.run_cycle()
    clock.advance(15)
    engine.run_cycle()
    woken = {KEY: old.decisions[KEY]}
    assert engine.publish_woken(old, woken) is None
    assert engine.latest is published[-1] and engine.latest is not old


def test_an_unreadable_gateway_leaves_the_parked_variant_unsolved() -> None:
    clock, gateway = ManualClock(), Gateway()
    published: list[Snapshot] = []
    engine, waker = engine_at_zero(clock, gateway, published)
    gateway.error = "connection refused"
    decision = engine.run_cycle().decisions[KEY]
    assert decision.desired_replicas is None and "connection refused" in decision.reason
    assert waker.poll() is None

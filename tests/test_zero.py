"""Scale to zero and back (adapter/zero.py): the retention, the wake-up, unknown queues."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adapter.collect.gateway import GatewayQueue, GatewayReport
from adapter.collect.metrics import LoadReport, ModelLoad
from adapter.engine import VariantDecision
from adapter.zero import HeldArrivals, ScaleToZero, backlog_replicas

NS, NAME, MODEL = "ns", "vllm", "m"
KEY = (NS, NAME)


def decision(desired: int | None, current: int, rpm: float = 0.0) -> VariantDecision:
    load = ModelLoad(namespace=NS, model=MODEL, arrival_rate_rpm=rpm, running=0.0, waiting=0.0)
    return VariantDecision(
        namespace=NS,
        name=NAME,
        model=MODEL,
        accelerator="H100",
        desired_replicas=desired,
        current_replicas=current,
        reason="optimized",
        load=load,
        cost=0.0,
        slo_batch=64,
    )


def gateway(waiting: float) -> GatewayReport:
    queues = {(NS, MODEL): GatewayQueue(NS, MODEL, waiting=waiting)} if waiting else {}
    return GatewayReport(queues=queues, exported=True)


def test_an_idle_variant_is_held_at_one_replica_for_the_retention_then_goes_to_zero() -> None:
    zero = ScaleToZero(retention_s=600)
    busy = zero.apply({KEY: decision(2, 2, rpm=480)}, gateway(0), at=1000)
    assert busy[KEY].desired_replicas == 2
    held = zero.apply({KEY: decision(0, 2)}, gateway(0), at=1599)[KEY]
    assert held.desired_replicas == 1 and "599 s of the 600 s" in held.reason
    assert held.cost is None  # the optimizer's cost was for 0 replicas
    assert zero.apply({KEY: decision(0, 1)}, gateway(0), at=1600)[KEY].desired_replicas == 0


def test_a_variant_first_seen_serving_starts_its_retention_then() -> None:
    zero = ScaleToZero(retention_s=60)
    assert zero.apply({KEY: decision(0, 3)}, None, at=0)[KEY].desired_replicas == 1
    assert zero.apply({KEY: decision(0, 1)}, None, at=59)[KEY].desired_replicas == 1
    assert zero.apply({KEY: decision(0, 1)}, None, at=60)[KEY].desired_replicas == 0


def test_a_variant_first_seen_at_zero_stays_there() -> None:
    zero = ScaleToZero(retention_s=60)
    assert zero.apply({KEY: decision(0, 0)}, gateway(0), at=0)[KEY].desired_replicas == 0


@pytest.mark.parametrize(("waiting", "replicas"), [(1, 1), (64, 1), (65, 2), (300, 5)])
def test_requests_waiting_at_the_gateway_wake_a_variant_at_zero(
    waiting: float, replicas: int
) -> None:
    zero = ScaleToZero(retention_s=60)
    woken = zero.apply({KEY: decision(0, 0)}, gateway(waiting), at=0)[KEY]
    assert woken.desired_replicas == replicas == backlog_replicas(waiting, 64)
    assert "wait at the gateway" in woken.reason
    # the wake-up counts as traffic: the next cycles hold it until its pods serve
    assert zero.apply({KEY: decision(0, 0)}, gateway(0), at=30)[KEY].desired_replicas == 1


def test_a_wake_up_never_exceeds_the_vas_max_replicas() -> None:
    zero = ScaleToZero(retention_s=60)
    capped = replace(decision(0, 0), max_replicas=3)
    assert zero.apply({KEY: capped}, gateway(1000), at=0)[KEY].desired_replicas == 3
    assert backlog_replicas(1000, 64, None) == 16
    assert backlog_replicas(1000, 64, 3) == 3


def test_requests_held_at_the_gateway_count_as_arrivals_by_the_queues_growth() -> None:
    held = HeldArrivals()
    key = (NS, MODEL)
    loads = LoadReport(loads={key: ModelLoad(NS, MODEL, 600.0, running=60.0, waiting=5.0)})
    assert held.adjust(loads, gateway(0), at=0) is loads  # no interval yet
    grown = held.adjust(loads, gateway(30), at=15)  # +30 held in 15 s: +120 requests/min
    assert grown.loads[key].arrival_rate_rpm == pytest.approx(720.0)
    drained = held.adjust(loads, gateway(0), at=30)  # -30 in 15 s: the pods served them
    assert drained.loads[key].arrival_rate_rpm == pytest.approx(480.0)
    unknown = held.adjust(loads, GatewayReport(error="down"), at=45)
    assert unknown is loads
    assert held.adjust(loads, gateway(50), at=60) is loads  # nothing to compare with
    assert held.adjust(loads, None, at=75) is loads


def test_a_serving_variant_is_sized_by_its_load_whatever_the_gateway_holds() -> None:
    zero = ScaleToZero(retention_s=60)
    out = zero.apply({KEY: decision(3, 2, rpm=100)}, gateway(500), at=0)[KEY]
    assert out.desired_replicas == 3 and out.reason == "optimized"


def test_while_the_woken_pods_start_it_keeps_its_wake_replicas() -> None:
    zero = ScaleToZero(retention_s=60)
    woken = zero.apply({KEY: decision(0, 0)}, gateway(100), at=0)[KEY]
    assert woken.desired_replicas == 2  # 100 held / 64 a replica
    starting = replace(
        decision(None, 2), model="", reason="metrics missing: no vLLM series", load=None
    )
    held = zero.apply({KEY: starting}, gateway(400), at=15)[KEY]
    assert held.desired_replicas == 2 and "starting from zero" in held.reason
    assert held.model == MODEL  # from the decision that woke it
    # the pods' first series, without a rate yet: still starting
    no_rate = replace(starting, reason="metrics incomplete: 12 requests in flight but no ...")
    assert zero.apply({KEY: no_rate}, gateway(0), at=20)[KEY].desired_replicas == 2
    # another unsolved reason is left alone
    other = replace(starting, reason="metrics invalid: running=nan")
    assert zero.apply({KEY: other}, gateway(400), at=30)[KEY] is other
    # once the pods serve, vLLM's load sizes it again
    assert zero.apply({KEY: decision(1, 2, rpm=480)}, gateway(0), at=60)[KEY].desired_replicas == 1
    # and a later unsolved cycle is not a start-up any more
    assert zero.apply({KEY: starting}, gateway(400), at=75)[KEY] is starting


def test_an_unknown_queue_leaves_a_variant_at_zero_unsolved_and_others_alone() -> None:
    zero = ScaleToZero(retention_s=60)
    unknown = GatewayReport(error="HTTP 503")
    parked = zero.apply({KEY: decision(0, 0)}, unknown, at=0)[KEY]
    assert parked.desired_replicas is None and "HTTP 503" in parked.reason
    serving = zero.apply({KEY: decision(2, 2, rpm=100)}, unknown, at=0)[KEY]
    assert serving.desired_replicas == 2


def test_without_a_gateway_a_variant_at_zero_stays_at_zero() -> None:
    zero = ScaleToZero(retention_s=60)
    assert zero.apply({KEY: decision(0, 0)}, None, at=0)[KEY].desired_replicas == 0


def test_an_unsolved_decision_passes_through_and_a_deleted_va_is_forgotten() -> None:
    zero = ScaleToZero(retention_s=60)
    unsolved = decision(None, 2)
    passed = zero.apply({KEY: unsolved}, gateway(5), at=0)[KEY]
    assert passed == replace(unsolved, gateway_waiting=5)  # the queue read, nothing decided
    zero.apply({KEY: decision(1, 1, rpm=10)}, None, at=0)
    assert zero.last_active(KEY) == 0
    zero.apply({}, None, at=1)
    assert zero.last_active(KEY) is None

"""Scale to zero and back (adapter/zero.py): the retention, the wake-up, unknown queues."""

from __future__ import annotations

import pytest

from adapter.collect.gateway import GatewayQueue, GatewayReport
from adapter.collect.metrics import ModelLoad
from adapter.engine import VariantDecision
from adapter.zero import ScaleToZero, wake_replicas

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
        max_batch=64,
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
    assert woken.desired_replicas == replicas == wake_replicas(waiting, 64)
    assert "wait at the gateway" in woken.reason
    # the wake-up counts as traffic: the next cycles hold it until its pods serve
    assert zero.apply({KEY: decision(0, 0)}, gateway(0), at=30)[KEY].desired_replicas == 1


def test_the_gateway_queue_does_not_size_a_variant_that_has_replicas() -> None:
    zero = ScaleToZero(retention_s=60)
    out = zero.apply({KEY: decision(3, 2, rpm=100)}, gateway(500), at=0)[KEY]
    assert out.desired_replicas == 3 and out.reason == "optimized"


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
    assert zero.apply({KEY: unsolved}, gateway(5), at=0)[KEY] is unsolved
    zero.apply({KEY: decision(1, 1, rpm=10)}, None, at=0)
    assert zero.last_active(KEY) == 0
    zero.apply({}, None, at=1)
    assert zero.last_active(KEY) is None

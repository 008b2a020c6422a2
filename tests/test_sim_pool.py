"""Two variants of one model behind one router, in virtual time (adapter/sim/pool.py):
the pool's pods of both kinds balanced by outstanding requests, one adapter splitting
the model's load, each variant's KEDA; against each variant sized alone for the whole
load and against each variant on its own."""

from __future__ import annotations

import functools

import pytest

from adapter.collect.local import load_snapshot
from adapter.defaults import DEFAULT_SAMPLES
from adapter.sim.cluster import ClusterSettings, PoolMember, SimCluster
from adapter.sim.policies import Limits
from adapter.sim.pool import PoolResult, h100_a100_pool, simulate_pool
from adapter.sim.traces import RequestShape, Workload, ramp_trace
from tests.test_sim_from_zero import PROFILE


@functools.cache
def run(a100_gpus: int) -> dict[str, PoolResult]:
    """One run per inventory, shared by the tests (cached)."""
    report = simulate_pool(
        h100_a100_pool(load_snapshot(DEFAULT_SAMPLES), a100_gpus),
        ramp_trace(1800.0, 4.0, 24.0),
        policies=["ours", "alone", "only:0", "only:1"],
        limits=Limits(0, 8),
        shape=RequestShape(128, 512),
    )
    return {r.policy: r for r in report.policies}


def test_the_router_balances_both_kinds_of_pods_and_each_deployment_keeps_its_own_count() -> None:
    slow = PROFILE.__class__(alpha_ms=4.0, beta_ms=1.0, max_batch_size=2)
    cluster = SimCluster(
        ClusterSettings(PROFILE, initial_replicas=1, members=(PoolMember(slow, 1),)),
        Workload(tuple(0.001 * i for i in range(8)), (0,) * 8, (20,) * 8),
    )
    cluster.run_until(10.0)
    assert {cluster.served_by[r] for r in cluster.finished} == {0, 1}
    assert (cluster.replicas_of(0), cluster.replicas_of(1)) == (1, 1)
    cluster.scale(3, deployment=1)
    assert (cluster.replicas_of(0), cluster.replicas_of(1), cluster.replicas) == (1, 3, 1)
    assert cluster.replica_seconds(1) == pytest.approx(10.0)  # the new pods hold 0 s yet
    assert cluster.replica_seconds() == pytest.approx(20.0)


@pytest.mark.parametrize("a100_gpus", [8, 2])
def test_ours_holds_the_slo_on_both_kinds_for_less_than_sizing_each_alone(a100_gpus: int) -> None:
    results = run(a100_gpus)
    ours, alone = results["ours"], results["alone"]
    assert ours.itl_attainment_pct >= 99.0
    for variant in ours.variants:
        assert variant.itl_attainment_pct is None or variant.itl_attainment_pct >= 98.5
    assert ours.cost < 0.8 * alone.cost


def test_with_a100s_enough_ours_costs_what_the_cheap_variant_alone_does() -> None:
    results = run(8)
    ours, h100, a100 = results["ours"], results["only:0"], results["only:1"]
    assert ours.cost <= 1.02 * a100.cost
    assert ours.cost < 0.8 * h100.cost

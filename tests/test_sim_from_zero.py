"""Scale to zero and from zero in the simulator: the gateway's flow control (held
requests, saturation, the hold limit), KEDA's pushed activation, and ours from zero on
a trace with idle gaps against the same run held at one replica."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from adapter.collect.local import load_snapshot
from adapter.defaults import DEFAULT_SAMPLES
from adapter.emulator.batching import ServingProfile
from adapter.sim.cluster import FLOW_QUEUE_DEPTH, ClusterSettings, SimCluster
from adapter.sim.hpa import KedaLoop, ScaledObjectSpec
from adapter.sim.policies import Limits, setup_from_snapshot
from adapter.sim.simulate import simulate
from adapter.sim.traces import RequestShape, Workload, csv_trace

PROFILE = ServingProfile(alpha_ms=2.0, beta_ms=0.5, max_batch_size=2)


def workload(arrivals: Sequence[float], output: int = 3) -> Workload:
    return Workload(tuple(arrivals), (0,) * len(arrivals), (output,) * len(arrivals))


def test_with_flow_control_requests_wait_at_the_gateway_for_the_first_ready_replica() -> None:
    cluster = SimCluster(
        ClusterSettings(PROFILE, startup_delay_s=5.0, initial_replicas=0, hold_s=60.0),
        workload([1.0, 2.0, 3.0]),
    )
    cluster.run_until(3.5)
    assert cluster.gateway_gauges().queued == 3 and not cluster.finished
    cluster.scale(1)
    cluster.run_until(20.0)
    assert len(cluster.finished) == 3 and not cluster.rejected
    first = min(cluster.finished, key=lambda r: r.arrival)
    assert first.first_token == pytest.approx(8.5 + 0.0025)  # ready at 3.5 + 5 s
    assert cluster.wake_requests == [first]  # one wake-up: the first request held
    assert len(cluster.held_ever) == 3


def test_a_request_held_longer_than_the_hold_limit_is_refused() -> None:
    cluster = SimCluster(
        ClusterSettings(PROFILE, startup_delay_s=10.0, initial_replicas=0, hold_s=4.0),
        workload([0.0, 7.0]),
    )
    cluster.run_until(1.0)
    cluster.scale(1)  # ready at 11 s: the first waited 11 s > 4 s, the second 4 s
    cluster.run_until(30.0)
    assert cluster.rejected == [0.0, 7.0]
    assert not cluster.finished


def test_without_flow_control_a_request_with_no_ready_replica_is_refused() -> None:
    cluster = SimCluster(ClusterSettings(PROFILE, initial_replicas=0), workload([0.0]))
    cluster.run_until(1.0)
    assert cluster.rejected == [0.0] and cluster.gateway_gauges().queued == 0


def test_a_saturated_pool_holds_requests_at_the_gateway_until_a_pod_frees() -> None:
    arrivals = [0.0] * (2 + FLOW_QUEUE_DEPTH + 3)
    cluster = SimCluster(
        ClusterSettings(PROFILE, initial_replicas=1, hold_s=60.0), workload(arrivals, output=50)
    )
    cluster.run_until(0.001)
    running, waiting, _ = cluster.gauges()
    queued = cluster.gateway_gauges().queued
    # the pod took requests until 5 wait in it (pool saturation 5 / 5 = 1); the rest wait
    # at the gateway
    assert waiting == FLOW_QUEUE_DEPTH and queued > 0
    assert running + waiting + queued == len(arrivals)
    cluster.run_until(60.0)
    assert len(cluster.finished) == len(arrivals) and not cluster.rejected
    # the held ones entered the pod only as it freed seats: in arrival order
    held = sorted(cluster.held_ever, key=lambda r: r.admitted or 0.0)
    assert all(r.admitted is not None and r.admitted > 0.05 for r in held)


def test_keda_activates_at_once_on_a_pushed_active() -> None:
    keda = KedaLoop(
        spec=ScaledObjectSpec(pollingInterval=15.0, minReplicaCount=0, cooldownPeriod=60.0),
        get_metrics=lambda: 0.0,
        initial_replicas=0,
    )
    keda.advance_to(1.0)
    assert keda.current_replicas == 0
    assert keda.push(3.0, True) == "activated" and keda.current_replicas == 1
    assert keda.push(4.0, True) == "active"
    keda.advance_to(60.0)  # inactive since the push at 4 s: not yet the cooldown
    assert keda.current_replicas == 1
    keda.advance_to(80.0)
    assert keda.current_replicas == 0


# 40 minutes: idle 10, 8 req/s for 10, idle 20
IDLE_GAPS = "time_s,rate_rps\n0,0\n600,8\n1200,0\n2400,0\n"


def test_ours_from_zero_wakes_within_a_start_up_loses_nothing_and_saves_gpu_hours() -> None:
    setup = setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))
    pods = replace(setup.profile, max_batch_size=60)  # vLLM's max-num-seqs: the SLO batch
    trace = csv_trace(IDLE_GAPS, "idle-gaps")
    runs = {
        low: simulate(
            setup,
            trace,
            policies=["ours"],
            startup_delay_s=10.0,
            limits=Limits(low, 8),
            shape=RequestShape(128, 512),
            true_profile=pods,
            scale_to_zero_after_s=300.0,
        )
        for low in (0, 1)
    }
    zero, one = runs[0].policies[0], runs[1].policies[0]
    assert zero.rejected == zero.killed == zero.unfinished == 0
    assert zero.itl_attainment_pct >= 99.0
    assert len(zero.wake_ups_s) == 1 and zero.wake_ups_s[0] <= 10.0 + 2.0
    assert zero.gpu_hours <= 0.6 * one.gpu_hours, (zero.gpu_hours, one.gpu_hours)
    replicas = runs[0].series.replicas["ours"]
    assert replicas[0] == 0 and max(replicas) >= 1 and replicas[-1] == 0

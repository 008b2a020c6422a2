"""A removed replica behaves like a deleted pod (adapter.sim.cluster): out of the gateway at
once, running requests get the grace period then are killed, queued requests fail at once
and are retried once by their clients; and the report counts both as misses."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from adapter.collect.local import DEFAULT_SAMPLES, load_snapshot
from adapter.emulator.batching import Request, ServingProfile
from adapter.sim.cluster import ClusterSettings, Killed, SimCluster
from adapter.sim.policies import setup_from_snapshot
from adapter.sim.simulate import _result
from adapter.sim.traces import PiecewiseTrace, Workload

# steps of exactly 2^-10 s (125/128 ms): sums of them are exact, so deadlines can be hit
EXACT = ServingProfile(alpha_ms=0.9765625, beta_ms=0.0, max_batch_size=1)
STEP_S = 2.0**-10


def workload(arrivals: Sequence[float], outputs: Sequence[int]) -> Workload:
    return Workload(tuple(arrivals), (0,) * len(arrivals), tuple(outputs))


def by_arrival(requests: Sequence[Request]) -> list[Request]:
    return sorted(requests, key=lambda r: r.arrival)


class Judged:
    """A policy that never acts, for `_result` to judge a scripted run under its name."""

    name = "ours"
    cycle_s = 15.0
    first_cycle_s = 0.0

    def next_time(self) -> float:
        return 0.0

    def act(self, now: float) -> None:
        pass


def test_a_running_request_not_done_when_the_grace_period_ends_is_killed() -> None:
    # A (long) runs on pod 1, B (short) on pod 0; pod 1 is removed at 1 s, grace 30 s
    cluster = SimCluster(
        ClusterSettings(EXACT, initial_replicas=2, termination_grace_s=30.0),
        workload([0.0, 0.0001], [100_000, 10]),
    )
    cluster.run_until(1.0)
    cluster.scale(1)
    assert cluster.gauges()[:2] == (1, 0)  # A still runs on the terminating pod
    cluster.run_until(30.999)
    assert cluster.killed == [] and cluster.gauges()[0] == 1
    cluster.run_until(60.0)
    assert cluster.killed == [Killed(arrival=0.0, at=31.0)]
    assert [r.arrival for r in cluster.finished] == [0.0001]
    assert cluster.gauges() == (0, 0, 0.0)
    # the pod held its GPU until the kill: 60 s + 31 s
    assert cluster.replica_seconds() == pytest.approx(60.0 + 31.0)
    assert cluster.counters.success == 1  # vLLM counts no success for a killed request


@pytest.mark.parametrize(("grace_s", "killed"), [(0.5, False), (0.5 - STEP_S, True)])
def test_a_request_finishing_as_the_grace_period_ends_finishes(
    grace_s: float, killed: bool
) -> None:
    # A: 1024 tokens of 2^-10 s from t = 0: its last token at exactly 1.0 s
    cluster = SimCluster(
        ClusterSettings(EXACT, initial_replicas=2, termination_grace_s=grace_s),
        workload([0.0], [1024]),
    )
    cluster.run_until(0.5)
    cluster.scale(1)
    cluster.run_until(2.0)
    assert (len(cluster.killed), len(cluster.finished)) == ((1, 0) if killed else (0, 1))
    if not killed:
        assert cluster.finished[0].finished == 1.0


def test_queued_requests_fail_at_once_and_their_clients_retry_once() -> None:
    # three pods, one seat each. Routing (fewest outstanding, ties in rotation): A, B, C
    # run on pods 1, 2, 0; D, E, F wait on pods 1, 2, 0. Each request: 1024 steps (1 s)
    cluster = SimCluster(
        ClusterSettings(EXACT, initial_replicas=3),
        workload([0.0, 0.001, 0.002, 0.003, 0.004, 0.005], [1024] * 6),
    )
    cluster.run_until(0.1)
    cluster.scale(2)  # pod 2 goes: E fails, its retry E' waits on pod 1 behind D
    assert cluster.killed == [] and len(cluster.retried) == 1
    assert cluster.gauges()[:2] == (3, 3)  # B still runs on the terminating pod 2
    cluster.run_until(0.2)
    cluster.scale(1)  # pod 1 goes: D fails (retried), E' fails again: no second retry
    assert cluster.killed == [Killed(arrival=0.004, at=0.2)]
    retries = {r.arrival: first for r, first in cluster.retried.items()}
    assert retries == {0.1: 0.004, 0.2: 0.003}
    cluster.run_until(10.0)

    # A, B finish on their terminating pods; C, F, then D's retry on pod 0
    a, b, c, f, d_retry = by_arrival(cluster.finished)
    assert [r.arrival for r in (a, b, c, f)] == [0.0, 0.001, 0.002, 0.005]
    assert d_retry.arrival == 0.2 and cluster.retried[d_retry] == 0.003
    assert d_retry.admitted == f.finished
    assert cluster.rejected == [] and cluster.counters.arrivals == 6


def test_a_retry_with_no_ready_replica_is_refused() -> None:
    cluster = SimCluster(
        ClusterSettings(EXACT, initial_replicas=1), workload([0.0, 0.001], [1024, 1024])
    )
    cluster.run_until(0.1)
    cluster.scale(0)  # B was queued: it fails, and its retry finds no ready replica
    cluster.run_until(10.0)
    assert cluster.rejected == [0.001]  # its first arrival
    assert [r.arrival for r in cluster.finished] == [0.0]  # A kept running through the grace


def test_the_report_counts_killed_and_retried_requests_as_misses_of_both_slos() -> None:
    setup = setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))  # SLO 9 ms ITL, 1000 ms TTFT
    cluster = SimCluster(
        ClusterSettings(EXACT, initial_replicas=3, termination_grace_s=0.5),
        workload([0.0, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006], [1024] * 6 + [4096]),
    )
    cluster.run_until(0.1)
    cluster.scale(2)
    cluster.run_until(0.2)
    cluster.scale(1)
    cluster.run_until(20.0)

    result = _result(setup, PiecewiseTrace("flat", 20.0, (0.0,), (1.0,)), cluster, Judged())
    # As before, with G queued on pod 1 behind D and a grace of 0.5 s: B and A, running on
    # the removed pods 2 and 1, are killed at 0.6 and 0.7 s; E (queued on pod 2), then D
    # and G (pod 1) are retried on pod 0, where they finish behind C and F. Every ITL
    # (~1 ms) and TTFT is within the SLOs, but only C and F count: the 3 retried and the
    # 2 killed are misses of both
    assert cluster.killed == [Killed(0.001, 0.6), Killed(0.0, 0.7)]
    assert (result.completed, result.killed, result.retried, result.rejected) == (5, 2, 3, 0)
    assert result.unfinished == 0
    assert result.itl_misses == 5
    assert result.itl_attainment_pct == pytest.approx(100.0 * 2 / 7)
    assert result.ttft_attainment_pct == pytest.approx(100.0 * 2 / 7)
    # a retried request's TTFT counts from its client's first arrival: G's retry is
    # admitted at 4.002 s (when E's ends) and G first came at 6 ms
    assert result.ttft_p95_ms == pytest.approx(4002.0 - 6.0 + 1000.0 * STEP_S)


def test_a_retried_request_is_a_miss_even_when_it_is_fast_after_its_retry() -> None:
    setup = setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))  # SLO 9 ms ITL, 1000 ms TTFT
    # A runs on pod 1 and D waits behind it, C runs on pod 0; pod 1 goes at 1 ms: D's
    # retry runs on pod 0 after C, done within 30 ms of D's first arrival
    cluster = SimCluster(
        ClusterSettings(EXACT, initial_replicas=2), workload([0.0, 0.0001, 0.0002], [10] * 3)
    )
    cluster.run_until(0.001)
    cluster.scale(1)
    cluster.run_until(1.0)

    result = _result(setup, PiecewiseTrace("flat", 1.0, (0.0,), (1.0,)), cluster, Judged())
    assert (result.completed, result.retried, result.killed) == (3, 1, 0)
    assert result.ttft_p95_ms is not None and result.ttft_p95_ms < 30.0
    assert result.itl_p95_ms is not None and result.itl_p95_ms < 2.0
    assert result.itl_attainment_pct == result.ttft_attainment_pct == pytest.approx(200 / 3)
    assert result.slo_attainment_pct == pytest.approx(200 / 3)


def test_slo_attainment_counts_the_requests_within_both_slos() -> None:
    setup = setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))  # SLO 9 ms ITL, 1000 ms TTFT
    # four X run together at 5 + 1.5 x 4 = 11 ms a token (ITL miss, TTFT 11 ms); Y waits
    # for them 2.2 s (TTFT miss), then runs alone at 6.5 ms (ITL within)
    profile = ServingProfile(alpha_ms=5.0, beta_ms=1.5, max_batch_size=4)
    cluster = SimCluster(ClusterSettings(profile), workload([0.0, 0.0, 0.0, 0.0, 0.001], [200] * 5))
    cluster.run_until(10.0)
    result = _result(setup, PiecewiseTrace("flat", 10.0, (0.0,), (1.0,)), cluster, Judged())
    assert (result.itl_attainment_pct, result.ttft_attainment_pct) == (20.0, 80.0)
    assert result.slo_attainment_pct == 0.0

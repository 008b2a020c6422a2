"""The Deployment in virtual time (adapter.sim.cluster) against hand-computed cases, and the
fast batcher against ReplicaEngine driven step by step."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from adapter.emulator.batching import DEFAULT_NUM_GPU_BLOCKS, Request, ServingProfile
from adapter.sim.cluster import ClusterSettings, ScaleRecord, SimCluster
from adapter.sim.traces import RequestShape, Workload, make_workload, step_trace

TUTORIAL = ServingProfile(alpha_ms=6.356, beta_ms=0.044, max_batch_size=512)


def workload(arrivals: Sequence[float], output: int | Sequence[int], prompt: int = 0) -> Workload:
    outputs = [output] * len(arrivals) if isinstance(output, int) else list(output)
    return Workload(tuple(arrivals), (prompt,) * len(arrivals), tuple(outputs))


def by_arrival(cluster: SimCluster) -> list[Request]:
    return sorted(cluster.finished, key=lambda r: r.arrival)


@pytest.mark.parametrize("stepwise", [False, True])
def test_one_replica_known_batch_gives_known_itl(stepwise: bool) -> None:
    # A alone for one step (2.5 ms), then B, C, D join: batch 4, steps of 2 + 0.5 * 4 = 4 ms
    profile = ServingProfile(alpha_ms=2.0, beta_ms=0.5, max_batch_size=8)
    cluster = SimCluster(
        ClusterSettings(profile, stepwise=stepwise), workload([0.0, 0.001, 0.001, 0.001], 5)
    )
    cluster.run_until(1.0)

    a, *others = by_arrival(cluster)
    assert a.ttft == pytest.approx(0.0025)
    assert a.finished == pytest.approx(0.0185)  # 2.5 + 4 * 4 ms
    assert a.itl_mean == pytest.approx(0.004)
    for request in others:
        assert request.queue_time == pytest.approx(0.0015)
        assert request.ttft == pytest.approx(0.0055)
        # four tokens at batch 4 ends (6.5 .. 18.5 ms), the last after a batch-3 step of 3.5 ms
        assert request.finished == pytest.approx(0.022)
        assert request.itl_mean == pytest.approx((0.022 - 0.0065) / 4)
    assert cluster.counters.success == 4
    assert cluster.counters.itl_count == 16
    assert cluster.counters.itl_sum_s == pytest.approx(0.016 + 3 * 0.0155)


@pytest.mark.parametrize("stepwise", [False, True])
def test_requests_queue_when_the_batch_is_full(stepwise: bool) -> None:
    profile = ServingProfile(alpha_ms=2.0, beta_ms=0.5, max_batch_size=2)
    cluster = SimCluster(
        ClusterSettings(profile, stepwise=stepwise), workload([0.0, 0.001, 0.001], 3)
    )
    cluster.run_until(0.005)
    # A and B run, C waits for a seat; in the step in progress (2.5 .. 5.5 ms) A holds
    # the block of its first token, B nothing yet (no prompt)
    assert cluster.gauges() == (2, 1, 1 / DEFAULT_NUM_GPU_BLOCKS)

    cluster.run_until(1.0)
    a, b, c = by_arrival(cluster)
    assert a.finished == pytest.approx(0.0085)
    assert b.admitted == pytest.approx(0.0025)
    assert b.finished == pytest.approx(0.0115)
    assert c.admitted == pytest.approx(0.0085)  # when A left
    assert c.queue_time == pytest.approx(0.0075)
    assert c.ttft == pytest.approx(0.0105)
    assert c.itl_mean == pytest.approx(0.0025)  # alone again after B left
    assert cluster.gauges() == (0, 0, 0.0)


def test_gpu_seconds_count_from_creation_to_release() -> None:
    cluster = SimCluster(ClusterSettings(TUTORIAL, startup_delay_s=60.0), workload([], 1))
    cluster.run_until(10.0)
    cluster.scale(2)
    cluster.run_until(30.0)
    cluster.scale(1)  # the new pod was still starting: gone at once, 20 s of GPU
    cluster.run_until(100.0)
    cluster.scale(3)
    cluster.run_until(159.0)
    assert (cluster.replicas, cluster.ready_replicas) == (3, 1)
    cluster.run_until(160.0)
    assert (cluster.replicas, cluster.ready_replicas) == (3, 3)
    cluster.run_until(200.0)
    cluster.scale(1)  # two idle pods released at once
    cluster.run_until(300.0)
    assert cluster.replica_seconds() == pytest.approx(300.0 + 20.0 + 100.0 + 100.0)
    assert cluster.history == [
        ScaleRecord(0.0, 1, 1),
        ScaleRecord(10.0, 2, 1),
        ScaleRecord(30.0, 1, 1),
        ScaleRecord(100.0, 3, 1),
        ScaleRecord(160.0, 3, 3),
        ScaleRecord(200.0, 1, 1),
    ]


def test_a_new_replica_gets_work_only_once_ready() -> None:
    profile = ServingProfile(alpha_ms=2.0, beta_ms=0.5, max_batch_size=8)
    # two long requests on the first pod, one more before the second is ready, one after
    cluster = SimCluster(
        ClusterSettings(profile, startup_delay_s=60.0),
        workload([10.0, 20.0, 50.0, 70.0], [100_000, 100_000, 10, 10]),
    )
    cluster.scale(2)
    cluster.run_until(200.0)
    before, after = sorted((r for r in cluster.finished), key=lambda r: r.arrival)
    assert before.arrival == 50.0 and after.arrival == 70.0
    assert before.itl_mean == pytest.approx(0.0035)  # shared a batch of 3 on the first pod
    assert after.ttft == pytest.approx(0.0025)  # alone on the new pod
    assert after.itl_mean == pytest.approx(0.0025)


def test_a_removed_replica_finishes_its_running_requests_and_its_queue_is_retried() -> None:
    # two pods, one seat each, 2 ms steps, 100 tokens (200 ms) per request. Routing (fewest
    # outstanding, ties in rotation): A -> pod 1, B -> pod 0, C -> pod 1 (queued), D -> pod 0
    profile = ServingProfile(alpha_ms=2.0, beta_ms=0.0, max_batch_size=1)
    cluster = SimCluster(
        ClusterSettings(profile, initial_replicas=2),
        workload([0.0, 0.0001, 0.0002, 0.0003], 100),
    )
    cluster.run_until(0.05)
    cluster.scale(1)  # removes pod 1: A keeps running there; C fails and its client retries
    assert cluster.replicas == 1
    assert cluster.gauges()[:2] == (2, 2)  # A (terminating pod) and B run; D and C wait
    (retry, first_arrival), *_ = cluster.retried.items()
    assert (retry.arrival, first_arrival, len(cluster.retried)) == (0.05, 0.0002, 1)
    cluster.run_until(1.0)

    a, b, d, c = by_arrival(cluster)  # C's retry arrived at 0.05
    assert c is retry
    assert a.finished == pytest.approx(0.2)
    assert b.finished == pytest.approx(0.2001)
    assert d.finished == pytest.approx(0.4001)
    assert c.admitted == pytest.approx(0.4001)  # behind D, which was queued first
    assert c.finished == pytest.approx(0.6001)
    assert cluster.killed == [] and cluster.rejected == []
    # pod 0 for the whole second, pod 1 until A's last token
    assert cluster.replica_seconds() == pytest.approx(1.0 + 0.2)


def test_with_no_ready_replica_requests_are_refused() -> None:
    cluster = SimCluster(ClusterSettings(TUTORIAL, initial_replicas=0), workload([1.0, 2.0], 4))
    cluster.run_until(10.0)
    assert cluster.rejected == [1.0, 2.0]
    assert cluster.finished == []
    assert cluster.counters.arrivals == 2


def _run_scripted(settings: ClusterSettings, load: Workload) -> SimCluster:
    cluster = SimCluster(settings, load)
    for at, replicas in ((40.0, 3), (70.0, 2), (110.0, 4), (130.0, 1), (170.0, 2)):
        cluster.run_until(at)
        cluster.scale(replicas)
    cluster.run_until(200.0)
    return cluster


@pytest.mark.parametrize(
    ("profile", "shape"),
    [
        (TUTORIAL, RequestShape()),
        (
            ServingProfile(alpha_ms=6.0, beta_ms=0.3, max_batch_size=24, prefill_ms_per_token=0.01),
            RequestShape(128, 256, spread=0.5),
        ),
    ],
)
def test_fast_batcher_matches_replica_engine_step_by_step(
    profile: ServingProfile, shape: RequestShape
) -> None:
    load = make_workload(step_trace(200.0, 10.0, 30.0), seed=11, shape=shape)
    runs = [
        _run_scripted(ClusterSettings(profile, startup_delay_s=15.0, stepwise=s), load)
        for s in (False, True)
    ]
    fast, slow = (
        [(r.arrival, r.admitted, r.first_token, r.finished, r.tokens_out) for r in c.finished]
        for c in runs
    )
    assert len(fast) > 1000
    assert fast == slow  # same floats, same order
    assert runs[0].counters == runs[1].counters
    assert runs[0].history == runs[1].history
    assert runs[0].replica_seconds() == runs[1].replica_seconds()
    assert runs[0].gauges() == runs[1].gauges()


def test_counters_are_the_sums_of_the_finished_requests() -> None:
    cluster = _run_scripted(
        ClusterSettings(TUTORIAL, startup_delay_s=15.0),
        make_workload(step_trace(200.0, 10.0, 30.0), seed=3),
    )
    done = cluster.finished
    c = cluster.counters
    assert c.success == len(done)
    assert c.output_tokens == 512 * len(done)
    assert c.itl_count == 511 * len(done)
    assert c.itl_sum_s == pytest.approx(sum(r.itl_mean * 511 for r in done))
    assert c.ttft_sum_s == pytest.approx(sum(r.ttft for r in done))
    assert c.queue_sum_s == pytest.approx(sum(r.queue_time for r in done))
    running, waiting, _ = cluster.gauges()
    assert c.arrivals == len(done) + running + waiting

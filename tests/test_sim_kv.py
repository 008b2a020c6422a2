"""The simulated pods' KV cache, histograms and gauges (adapter.sim.cluster): the fast
batcher against ReplicaEngine when the cache is small enough to preempt, vLLM's
histograms against hand-computed cases, the per-pod and gateway gauges."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from adapter.emulator.batching import ServingProfile
from adapter.sim.cluster import (
    ITL_BUCKETS_S,
    TTFT_BUCKETS_S,
    CacheConfig,
    ClusterSettings,
    GatewayGauges,
    Histogram,
    PodGauges,
    SimCluster,
)
from adapter.sim.traces import RequestShape, Workload, make_workload, step_trace

# 48 seats of 128 + 256 (+-50 %) tokens need up to ~1150 blocks of 16: 600 preempts often
SMALL = ServingProfile(
    alpha_ms=6.0, beta_ms=0.3, max_batch_size=48, prefill_ms_per_token=0.01, num_gpu_blocks=600
)


def workload(arrivals: Sequence[float], output: int, prompt: int = 0) -> Workload:
    n = len(arrivals)
    return Workload(tuple(arrivals), (prompt,) * n, (output,) * n)


def _scripted(settings: ClusterSettings, load: Workload, read_every: float | None) -> SimCluster:
    """The scaling script of test_sim_cluster, optionally reading every gauge and
    histogram every `read_every` seconds (readings must not change the run)."""
    cluster = SimCluster(settings, load)
    t = 0.0
    for at, replicas in ((40.0, 3), (70.0, 2), (110.0, 4), (130.0, 1), (170.0, 2)):
        while read_every is not None and t + read_every < at:
            t += read_every
            cluster.run_until(t)
            cluster.gauges()
            cluster.pod_gauges()
            cluster.histograms()
        cluster.run_until(at)
        cluster.scale(replicas)
    cluster.run_until(200.0)
    return cluster


def test_fast_batcher_matches_replica_engine_when_the_cache_preempts() -> None:
    load = make_workload(step_trace(200.0, 10.0, 30.0), seed=11, shape=RequestShape(128, 256, 0.5))
    fast, slow, read = (
        _scripted(ClusterSettings(SMALL, startup_delay_s=15.0, stepwise=s), load, r)
        for s, r in ((False, None), (True, None), (False, 0.37))
    )
    runs = (fast, slow, read)
    finished = [
        [(r.arrival, r.admitted, r.first_token, r.finished, r.tokens_out) for r in c.finished]
        for c in runs
    ]
    assert len(finished[0]) > 1000
    assert finished[0] == finished[1] == finished[2]  # same floats, same order
    assert fast.preemptions == slow.preemptions == read.preemptions > 1000
    assert fast.counters == slow.counters == read.counters
    assert fast.gauges() == slow.gauges()
    assert fast.pod_gauges() == slow.pod_gauges()
    assert len(fast.retried) == len(slow.retried) > 0  # preempted ones queued on removal
    for (ttft_a, itl_a), (ttft_b, itl_b) in (
        (fast.histograms(), slow.histograms()),
        (read.histograms(), slow.histograms()),
    ):
        assert (ttft_a.buckets, itl_a.buckets) == (ttft_b.buckets, itl_b.buckets)
        assert (ttft_a.count, itl_a.count) == (ttft_b.count, itl_b.count)
        assert ttft_a.sum == pytest.approx(ttft_b.sum) and itl_a.sum == pytest.approx(itl_b.sum)


def test_a_default_cache_never_preempts_the_default_requests() -> None:
    # a full batch of 512 at 128 + 512 tokens holds at most 20,480 of the 27,000 blocks
    profile = ServingProfile(alpha_ms=6.356, beta_ms=0.044, max_batch_size=512)
    arrivals = [i * 0.001 for i in range(600)]
    cluster = SimCluster(ClusterSettings(profile), workload(arrivals, 512, prompt=128))
    cluster.run_until(0.6)
    assert cluster.gauges()[:2] == (512, 88)
    peak = 0.0
    for i in range(1, 400):
        cluster.run_until(0.6 + i * 0.05)
        kv = cluster.gauges()[2]
        assert kv is not None
        peak = max(peak, kv)
    assert 0.7 < peak <= 20_480 / 27_000
    assert cluster.preemptions == 0 and len(cluster.finished) == 600


def test_the_kv_gauge_is_the_blocks_held_per_pod() -> None:
    # 100 blocks of 16; A: 40 prompt tokens + its tokens so far, alone on pod 1; B on pod 0
    profile = ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=4, num_gpu_blocks=100)
    cluster = SimCluster(
        ClusterSettings(profile, initial_replicas=2), workload([0.0, 0.0], 100, prompt=40)
    )
    cluster.run_until(0.0305)  # the step in progress is the 31st: 30 tokens out, 70 held
    assert cluster.pod_gauges() == [
        PodGauges("vllm-0", "ready", 1, 0, 5 / 100),
        PodGauges("vllm-1", "ready", 1, 0, 5 / 100),
    ]
    assert cluster.gauges() == (2, 0, 5 / 100)
    assert cluster.cache_config() == CacheConfig(num_gpu_blocks=100, block_size=16)
    assert cluster.gateway_gauges() == GatewayGauges(queued=0, running=2)


def test_a_workload_with_a_request_the_cache_cannot_hold_is_refused() -> None:
    profile = ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=4, num_gpu_blocks=10)
    with pytest.raises(ValueError, match="does not fit a KV cache of 160 tokens"):
        SimCluster(ClusterSettings(profile), workload([0.0, 1.0], 150, prompt=10))


def test_histograms_observe_each_first_token_and_each_gap_as_vllm_does() -> None:
    # A alone for one step (2.5 ms), then B joins: steps of 3 ms. A: TTFT 2.5 ms, gaps
    # 3, 3, 3 ms; B (arrived at 1 ms, admitted at 2.5 ms): TTFT 4.5 ms, gaps 3, 3 ms,
    # then alone: 2.5 ms. A step's tokens are observed as it starts.
    profile = ServingProfile(alpha_ms=2.0, beta_ms=0.5, max_batch_size=8)
    for stepwise in (False, True):
        cluster = SimCluster(
            ClusterSettings(profile, stepwise=stepwise),
            Workload((0.0, 0.001), (0, 0), (4, 4)),
        )
        cluster.run_until(0.008)  # three steps started (at 0, 2.5 and 5.5 ms)
        ttft, itl = cluster.histograms()
        assert ttft.count == 2 and ttft.sum == pytest.approx(0.0025 + 0.0045)
        assert itl.count == 3 and itl.sum == pytest.approx(0.009)  # A twice, B once
        cluster.run_until(0.0085)  # the fourth starts: one more gap each
        assert cluster.histograms()[1].count == 5
        cluster.run_until(1.0)
        ttft, itl = cluster.histograms()
        assert itl.count == 6 and itl.sum == pytest.approx(0.003 * 5 + 0.0025)
        assert ttft.le == (*TTFT_BUCKETS_S, math.inf) and itl.le == (*ITL_BUCKETS_S, math.inf)
        # le=0.001: none; le=0.005: both TTFTs. Every gap is under the first ITL bucket (10 ms)
        assert ttft.buckets[:2] == (0, 2) and ttft.buckets[-1] == 2
        assert set(itl.buckets) == {6}


def test_a_histogram_bucket_includes_its_upper_bound() -> None:
    histogram = Histogram((0.01, 0.025))
    histogram.observe(0.01)
    histogram.observe(0.0100001, times=2)
    histogram.observe(1.0)
    values = histogram.snapshot()
    assert values.buckets == (1, 3, 4)
    assert values.count == 4 and values.sum == pytest.approx(0.01 + 0.0200002 + 1.0)


def test_fast_batcher_counts_the_cache_exactly_when_its_bound_stops_admitting() -> None:
    # 100 blocks of 16. A (1537 tokens) will hold 96 at its last step: by that bound
    # three of the burst (20 requests of 1 prompt block, 64 tokens) fit, 96 + 3 + 1.
    # Admitted at 1.441 s, when A holds 91, the exact count lets in 8: 91 + 8 + 1 = 100.
    profile = ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=64, num_gpu_blocks=100)
    load = Workload((0.0, *[1.4405] * 20), (0, *[16] * 20), (16 * 96 + 1, *[64] * 20))
    fast, slow = (
        SimCluster(ClusterSettings(profile, stepwise=stepwise), load) for stepwise in (False, True)
    )
    for cluster in (fast, slow):
        cluster.run_until(1.4415)
    assert fast.gauges() == slow.gauges() == (9, 12, 0.99)
    for cluster in (fast, slow):
        cluster.run_until(10.0)
    assert [(r.arrival, r.admitted, r.first_token, r.finished) for r in fast.finished] == [
        (r.arrival, r.admitted, r.first_token, r.finished) for r in slow.finished
    ]
    assert fast.preemptions == slow.preemptions > 0

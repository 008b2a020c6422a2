"""The peer recipes' scaling rules (adapter.sim.peers) on hand-computed readings.

Every expected number below is worked out in the comment next to it from the recipe's
formula (see the module docstring of adapter.sim.peers).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from adapter.sim.hpa import HPASimulator
from adapter.sim.peers import (
    EPP_TPOT_BUCKETS,
    EPP_TTFT_BUCKETS,
    RECIPES,
    AnalyzerVote,
    EndpointLoad,
    PoolReadings,
    SloSignal,
    WvaConfig,
    WvaReadings,
    WvaReplica,
    WvaState,
    average_value_replicas,
    epp_pool_saturation,
    histogram_quantile,
    llmd_saturation_proposal,
    llmd_saturation_scaled_object,
    llmd_slo_scaled_object,
    scaled_object,
    slo_desired_replicas,
    slo_raw_saturation,
    wva_analyze,
    wva_combine,
    wva_desired_replicas,
    wva_scaled_object,
)
from adapter.vllm_metrics import ITL_BUCKETS_S, TTFT_BUCKETS_S

# --------------------------------------------------------------------------- HPA arithmetic


@pytest.mark.parametrize(
    ("value", "target", "status", "expected"),
    [
        (50, 16, 1, 4),  # 50 / 16 = 3.125 -> 4
        (66, 16, 4, 4),  # 66 / 64 = 1.03: inside the 10 % band, keep 4
        (72, 16, 4, 5),  # 72 / 64 = 1.125: outside, ceil(4.5) = 5
        (0.9, 0.7, 5, 2),  # a pool-wide ratio: ceil(0.9 / 0.7) = 2 whatever the pool size
        (0.5, 0.7, 0, 1),  # from zero: no band, ceil(0.71) = 1
        (-3, 1, 2, 0),  # negative values count as 0
        (11, 1, 10, 10),  # a desired count of 11 at 10 replicas: 1.1 is inside the band
    ],
)
def test_average_value_replicas(value: float, target: float, status: int, expected: int) -> None:
    assert average_value_replicas(value, target, status) == expected


def test_average_value_replicas_agrees_with_the_hpa_simulator() -> None:
    for status in range(1, 12):
        for tenths in range(0, 400, 7):
            value = tenths / 10
            hpa = HPASimulator(replicas=status, max_replicas=100, target=1.6)
            expected = hpa.proposal(value, status_replicas=status, ready_replicas=status)
            assert average_value_replicas(value, 1.6, status) == expected, (value, status)


# --------------------------------------------------------------------------- llmd-saturation


def test_pool_saturation_is_the_mean_of_each_endpoints_tightest_resource() -> None:
    endpoints = [
        EndpointLoad(waiting=0, kv_cache_usage=0.4),  # max(0 / 5, 0.4 / 0.8) = 0.5
        EndpointLoad(waiting=10, kv_cache_usage=0.2),  # max(10 / 5, 0.25) = 2.0
        EndpointLoad(waiting=0, kv_cache_usage=0.0, stale=True),  # fail-closed: 1.0
    ]
    assert epp_pool_saturation(endpoints) == pytest.approx(3.5 / 3)
    assert epp_pool_saturation([]) == 1.0  # an empty pool reads saturated
    # the detector's thresholds are its parameters: queue 10, KV 0.5
    assert epp_pool_saturation(endpoints[:1], kv_cache_util_threshold=0.5) == pytest.approx(0.8)


def test_llmd_saturation_takes_the_larger_trigger() -> None:
    readings = PoolReadings(pool_saturation=1.2, running_requests=40)
    proposal = llmd_saturation_proposal(readings, status_replicas=2)
    assert proposal.signal_replicas == 2  # 1.2 / (0.7 x 2) = 0.86 -> ceil(1.2 / 0.7) = 2
    assert proposal.running_replicas == 3  # 40 / 32 = 1.25 -> ceil(40 / 16) = 3
    assert proposal.replicas == 3


def test_llmd_saturation_knob_and_queue_signal() -> None:
    readings = PoolReadings(pool_saturation=1.2, running_requests=10, queue_size=7)
    # a lower saturation target scales further: ceil(1.2 / 0.3) = 4
    assert llmd_saturation_proposal(readings, 2, saturation_target=0.3).replicas == 4
    queue = llmd_saturation_proposal(readings, 2, signal="queue")
    assert queue.signal_replicas == 7  # 7 queued / target 1
    assert queue.running_replicas == 1  # ceil(10 / 16)


def test_llmd_saturation_scaled_object() -> None:
    so = llmd_saturation_scaled_object()
    assert (so.polling_interval_s, so.cooldown_s, so.min_replicas, so.max_replicas) == (
        15.0,
        300.0,
        1,
        10,
    )
    assert [(t.name, t.metric_type, t.target, t.activation_target) for t in so.triggers] == [
        ("pool-saturation", "AverageValue", 0.7, 0.0),
        ("epp-running-requests", "AverageValue", 16.0, 0.0),
    ]
    assert "llm_d_epp_flow_control_pool_saturation" in so.triggers[0].query
    assert so.behavior.scaleUp is not None and so.behavior.scaleDown is not None
    for rules in (so.behavior.scaleUp, so.behavior.scaleDown):
        assert rules.stabilizationWindowSeconds == 300
        assert rules.policies is not None
        assert [(p.type, p.value, p.periodSeconds) for p in rules.policies] == [
            ("Percent", 100, 15)
        ]
    assert so.fallback is None and so.raced
    assert llmd_saturation_scaled_object(signal="queue").max_replicas == 8


def test_raced_triggers_map_to_a_pass_through_metric() -> None:
    spec = llmd_saturation_scaled_object().to_spec()
    assert (spec.metricType, spec.target) == ("AverageValue", 1.0)
    assert spec.behavior is not None
    assert spec.behavior.scaleUp is not None and spec.behavior.scaleDown is not None
    assert spec.behavior.scaleUp.tolerance == 0.0 and spec.behavior.scaleDown.tolerance == 0.0
    assert spec.behavior.scaleUp.stabilizationWindowSeconds == 300
    # with tolerance 0 a proposal P passes the HPA's AverageValue 1 arithmetic unchanged
    for status in range(1, 11):
        hpa = HPASimulator(replicas=status, max_replicas=10, behavior=spec.behavior)
        for proposal in range(0, 11):
            assert hpa.proposal(proposal, status_replicas=status, ready_replicas=status) == proposal


# --------------------------------------------------------------------------- llmd-slo


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (math.inf, 40.0)]
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.38)  # rank 36: 0.2 + 0.3 x 6/10
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20: 0.1 + 0.1 x 10/20
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.04)  # first bucket from 0
    assert histogram_quantile(0.9, list(reversed(buckets))) == pytest.approx(0.38)
    # a rank in the +Inf bucket returns the highest finite bound
    assert histogram_quantile(0.9, [(0.1, 5.0), (math.inf, 10.0)]) == 0.1
    assert math.isnan(histogram_quantile(0.9, [(0.1, 0.0), (math.inf, 0.0)]))  # no traffic
    assert math.isnan(histogram_quantile(0.9, [(0.1, 5.0), (0.2, 10.0)]))  # no +Inf bucket


@pytest.mark.parametrize(
    ("ttft", "tpot", "expected"),
    [
        (1.5, 0.05, 0.5),  # 1.5 / 3 and 0.05 / 0.1
        (3.3, 0.05, 1.1),  # TTFT is the worse
        (math.nan, 0.12, 1.2),  # NaN (no data) counts as 0
        (math.nan, math.nan, 0.0),  # idle pool
    ],
)
def test_slo_raw_saturation(ttft: float, tpot: float, expected: float) -> None:
    assert slo_raw_saturation(ttft, tpot) == pytest.approx(expected)


def test_slo_signal_clamps_then_averages_over_45s() -> None:
    signal = SloSignal()
    assert signal.smoothed == 0.0
    for now, raw in ((0.0, 3.0), (15.0, 0.4), (30.0, 0.6)):
        signal = signal.record(now, raw)
    assert signal.smoothed == pytest.approx((2.0 + 0.4 + 0.6) / 3)  # 3.0 clamped to 2.0
    later = signal.record(45.0, 0.2)  # the sample at t = 0 leaves the (0, 45] window
    assert later.smoothed == pytest.approx((0.4 + 0.6 + 0.2) / 3)
    assert signal.smoothed == pytest.approx(1.0)  # record returns a new value


@pytest.mark.parametrize(
    ("s", "n", "r", "expected"),
    [
        (0.8, 4, 4, 6),  # 4 + ceil(4 x (0.8 / 0.55 - 1)) = 4 + ceil(1.82)
        (0.8, 4, 2, 3),  # credit 1/2: 4 + ceil(4 x (0.4 / 0.55 - 1)) = 4 + ceil(-1.09)
        (1.1, 4, 0, 8),  # no ready pod: no credit, 4 + ceil(4 x 1.0)
        (0.5, 5, 5, 5),  # dead band
        (0.55, 5, 5, 5),  # the bounds belong to the band
        (0.55, 4, 2, 4),  # ... also while pods warm (credited, it would shed 2)
        (0.40, 5, 5, 5),
        (0.2, 6, 6, 3),  # 6 - floor(6 x (1 - 0.5))
        (0.2, 6, 3, 3),  # scale-down ignores the credit
        (0.39, 3, 3, 3),  # 3 - floor(0.075)
        (0.0, 4, 4, 0),  # idle: the formula asks 0, the HPA's minimum (3) holds
    ],
)
def test_slo_formula(s: float, n: int, r: int, expected: int) -> None:
    assert slo_desired_replicas(s, n, r) == expected


def test_slo_formula_knob() -> None:
    # a lower band fires earlier: 4 + ceil(4 x (0.5 / 0.4 - 1)) = 5
    assert slo_desired_replicas(0.5, 4, 4, theta_up=0.4, theta_dn=0.3) == 5
    assert slo_desired_replicas(0.5, 4, 4) == 4


def test_slo_scaled_object() -> None:
    so = llmd_slo_scaled_object()
    assert (so.polling_interval_s, so.cooldown_s, so.min_replicas, so.max_replicas) == (
        15.0,
        300.0,
        3,
        8,
    )
    assert [t.name for t in so.triggers] == ["saturation", "replicas", "readyReplicas"]
    assert so.composite is not None and not so.raced
    spec = so.to_spec()
    assert (spec.metricType, spec.target) == ("AverageValue", 1.0)
    up, down = so.behavior.scaleUp, so.behavior.scaleDown
    assert up is not None and down is not None
    assert up.policies is not None and down.policies is not None
    assert (up.stabilizationWindowSeconds, down.stabilizationWindowSeconds) == (30, 180)
    assert [(p.type, p.value, p.periodSeconds) for p in up.policies] == [
        ("Percent", 100, 60),
        ("Pods", 4, 60),
    ]
    assert [(p.type, p.value, p.periodSeconds) for p in down.policies] == [("Pods", 1, 120)]
    assert up.tolerance is None  # the cluster default 0.1 applies


# --------------------------------------------------------------------------- wva-saturation

# 1000 blocks x 16 tokens = 16000 KV tokens; k1 = 0.8 x 16000 = 12800. With 100 input and
# 400 output tokens the derived k2 is min(8192 x 0.8, 256) x (100 + 200) = 76800, so the
# capacity of a replica that sees no queue is k1 = 12800.
BLOCKS, BLOCK_SIZE = 1000, 16


def pod(kv: float, waiting: float = 0.0, i: float = 100.0, o: float = 400.0) -> WvaReplica:
    return WvaReplica(
        kv_cache_usage=kv,
        waiting=waiting,
        num_gpu_blocks=BLOCKS,
        block_size=BLOCK_SIZE,
        avg_input_tokens=i,
        avg_output_tokens=o,
    )


def readings(
    *pods: WvaReplica, current: int | None = None, ready: int | None = None
) -> WvaReadings:
    n = len(pods)
    return WvaReadings(
        replicas=pods,
        current_replicas=n if current is None else current,
        ready_replicas=n if ready is None else ready,
    )


def test_wva_per_replica_capacity_and_demand() -> None:
    analysis, _ = wva_analyze(readings(pod(0.5, waiting=2)))
    (replica,) = analysis.replicas
    assert replica.total_kv_tokens == 16000
    assert replica.tokens_in_use == 8000  # 0.5 x 16000
    assert replica.demand == 9000  # 8000 + 2 waiting x (100 + 400)
    assert (replica.k1, replica.k2, replica.k2_source) == (12800, 76800, "derived")
    assert replica.capacity == 12800


def test_wva_holds_inside_the_band() -> None:
    # demand 2 x 9000 = 18000 against supply 25600: 0.70 < 0.703 < 0.85
    decision = wva_desired_replicas(readings(pod(0.5, 2), pod(0.5, 2)))
    assert decision.analysis.utilization == pytest.approx(18000 / 25600)
    vote = decision.analysis.vote
    assert vote is not None
    assert vote.required == 0.0  # 18000 / 0.85 = 21176 < 25600
    assert vote.spare == 0.0  # 25600 < 18000 / 0.70 = 25714
    assert (decision.desired_replicas, decision.reason) == (2, "no-change")


def test_wva_scales_up_by_required_over_capacity() -> None:
    # 2 x (12800 + 1000) = 27600; RC = 27600 / 0.85 - 25600 = 6870.6 -> ceil(0.54) = 1
    assert wva_desired_replicas(readings(pod(0.8, 2), pod(0.8, 2))).desired_replicas == 3
    # waiting >= 5: k2 observed = 14400 (> k1, capacity stays 12800); demand
    # 2 x (14400 + 10 x 500) = 38800; RC = 45647.1 - 25600 = 20047.1 -> ceil(1.57) = 2
    decision = wva_desired_replicas(readings(pod(0.9, 10), pod(0.9, 10)))
    assert decision.desired_replicas == 4
    assert decision.analysis.replicas[0].k2_source == "observed"
    assert decision.state.history("medium") == (14400.0, 14400.0)


def test_wva_pending_replicas_count_as_supply_for_scale_up_only() -> None:
    # 3 provisioned, 2 ready: anticipated supply 3 x 12800 = 38400;
    # RC = 45647.1 - 38400 = 7247.1 -> +1
    decision = wva_desired_replicas(readings(pod(0.9, 10), pod(0.9, 10), current=3, ready=2))
    assert decision.analysis.pending_replicas == 1
    assert decision.analysis.supply == 2 * 12800
    assert decision.desired_replicas == 4


def test_wva_scales_down_by_spare_over_capacity() -> None:
    idle_ish = [pod(0.1) for _ in range(4)]  # demand 4 x 1600 = 6400, supply 51200
    # SC = 51200 - 6400 / 0.7 = 42057.1 -> floor(3.29) = 3 removable
    assert wva_desired_replicas(readings(*idle_ish)).desired_replicas == 1
    assert (
        wva_desired_replicas(readings(*idle_ish), WvaConfig(min_replicas=2)).desired_replicas == 2
    )
    # all idle: SC = supply, floor(4) = 4, but the only variant keeps one replica
    assert wva_desired_replicas(readings(*[pod(0.0) for _ in range(4)])).desired_replicas == 1


def test_wva_knob_moves_the_scale_up_point() -> None:
    # the held case (utilization 0.703) scales up with scaleUpThreshold 0.70 and
    # scaleDownBoundary 0.5: RC = 18000 / 0.70 - 25600 = 114.3 -> +1
    config = WvaConfig(scale_up_threshold=0.70, scale_down_boundary=0.5)
    assert wva_desired_replicas(readings(pod(0.5, 2), pod(0.5, 2)), config).desired_replicas == 3


def test_wva_observes_k2_from_five_waiting() -> None:
    # queueLengthThreshold 5 is inclusive: resident tokens become the observed k2
    analysis, state = wva_analyze(readings(pod(0.5, waiting=5)))
    replica = analysis.replicas[0]
    assert (replica.k2, replica.k2_source, replica.capacity) == (8000, "observed", 8000)
    assert state.history("medium") == (8000.0,)
    four, _ = wva_analyze(readings(pod(0.5, waiting=4)))
    assert four.replicas[0].k2_source == "derived"


def test_wva_capacity_is_the_median_replica() -> None:
    small = replace(pod(0.1), num_gpu_blocks=500)  # k1 = 0.8 x 8000 = 6400
    two, _ = wva_analyze(readings(small, pod(0.1)))
    # even count: the mean of the middle two, (6400 + 12800) // 2 = 9600
    assert two.per_replica_capacity == 9600
    assert two.supply == 2 * 9600
    three, _ = wva_analyze(readings(small, pod(0.1), pod(0.1)))
    assert three.per_replica_capacity == 12800


def test_wva_history_feeds_later_cycles() -> None:
    state = WvaState(k2_history=(("medium", (10000.0,)),))
    analysis, new_state = wva_analyze(readings(pod(0.5, 2)), state=state)
    replica = analysis.replicas[0]
    assert (replica.k2, replica.k2_source, replica.capacity) == (10000, "historical", 10000)
    assert new_state.history("medium") == (10000.0,)
    # the history keeps the last 10 observations
    full = WvaState(k2_history=(("medium", tuple(float(v) for v in range(1, 11))),))
    _, after = wva_analyze(readings(pod(0.9, 10)), state=full)
    assert after.history("medium") == (*(float(v) for v in range(2, 11)), 14400.0)
    assert full.history("medium")[0] == 1.0  # the input state is not changed


def test_wva_scheduler_queue_adds_demand() -> None:
    base = readings(pod(0.5, 2), pod(0.5, 2))
    queued = replace(base, scheduler_queue_size=10)
    analysis, _ = wva_analyze(queued)
    # 10 queued x 100 input + 10 x 400 output = 5000 on top of 18000
    assert analysis.demand == pytest.approx(23000)
    by_bytes = replace(base, scheduler_queue_size=10, scheduler_queue_bytes=8000)
    # input tokens max(8000 / 4, 10 x 100) = 2000, plus 4000 output
    assert wva_analyze(by_bytes)[0].demand == pytest.approx(24000)


def test_wva_one_analyzer_is_enough_to_scale_up() -> None:
    saturation_holds = AnalyzerVote(
        "saturation", required=0.0, spare=0.0, per_replica_capacity=12800
    )
    throughput_up = AnalyzerVote("throughput", required=3.0, spare=0.0, per_replica_capacity=2.0)
    # ceil(3 / 2) = 2 replicas, whatever saturation says
    votes = (saturation_holds, throughput_up)
    assert wva_combine(2, votes, anchor_capacity=12800) == 4
    assert wva_combine(2, votes, anchor_capacity=12800, max_replicas=3) == 3
    assert wva_combine(2, (saturation_holds,), anchor_capacity=12800) == 2


def test_wva_scale_down_needs_every_live_analyzer() -> None:
    saturation_down = AnalyzerVote(
        "saturation", required=0.0, spare=30000.0, per_replica_capacity=12800
    )
    throughput_holds = AnalyzerVote("throughput", required=0.0, spare=0.0, per_replica_capacity=2.0)
    assert wva_combine(4, (saturation_down,), anchor_capacity=12800) == 2  # floor(2.34)
    assert wva_combine(4, (saturation_down, throughput_holds), anchor_capacity=12800) == 4
    stale = replace(throughput_holds, live=False)  # a non-live analyzer does not veto
    assert wva_combine(4, (saturation_down, stale), anchor_capacity=12800) == 2
    one_more = replace(throughput_holds, spare=2.5)  # allows floor(2.5 / 2) = 1
    assert wva_combine(4, (saturation_down, one_more), anchor_capacity=12800) == 3
    nobody_live = replace(saturation_down, live=False)
    assert wva_combine(4, (nobody_live,), anchor_capacity=12800) == 4
    # a live analyzer without spare vetoes even when it has no capacity for this variant
    blind = replace(throughput_holds, per_replica_capacity=0.0)
    assert wva_combine(4, (saturation_down, blind), anchor_capacity=12800) == 4


def test_wva_combine_keeps_one_replica() -> None:
    everything_spare = AnalyzerVote(
        "saturation", required=0.0, spare=4 * 12800.0, per_replica_capacity=12800
    )
    # floor(4) = 4 could go; the only variant keeps one
    assert wva_combine(4, (everything_spare,), anchor_capacity=12800) == 1


def test_wva_without_data_repeats_its_last_answer() -> None:
    empty = WvaReadings(replicas=(), current_replicas=3, ready_replicas=0)
    decision = wva_desired_replicas(empty)
    assert (decision.desired_replicas, decision.reason) == (3, "no-data")
    remembered = wva_desired_replicas(empty, state=WvaState(last_desired=5))
    assert remembered.desired_replicas == 5


def test_wva_scaled_object() -> None:
    so = wva_scaled_object()
    assert (so.polling_interval_s, so.cooldown_s, so.initial_cooldown_s) == (5.0, 30.0, 30.0)
    assert (so.min_replicas, so.max_replicas) == (1, 10)
    (trigger,) = so.triggers
    assert (trigger.metric_type, trigger.target, trigger.activation_target) == (
        "AverageValue",
        1.0,
        0.0,
    )
    assert so.fallback is not None
    assert (so.fallback.failureThreshold, so.fallback.replicas, so.fallback.behavior) == (
        3,
        2,
        "currentReplicasIfHigher",
    )
    up, down = so.behavior.scaleUp, so.behavior.scaleDown
    assert up is not None and down is not None
    assert (up.stabilizationWindowSeconds, down.stabilizationWindowSeconds) == (0, 60)
    spec = so.to_spec()
    assert (spec.pollingInterval, spec.metricType, spec.target) == (5.0, "AverageValue", 1.0)


# --------------------------------------------------------------------------- vocabulary


def test_each_recipe_has_a_scaled_object() -> None:
    assert [scaled_object(name).recipe for name in RECIPES] == list(RECIPES)
    with pytest.raises(ValueError, match="unknown recipe"):
        scaled_object("hpa-cpu")  # type: ignore[arg-type]


def test_bucket_bounds_are_the_sources() -> None:
    # spot checks against the cited definitions (first, a middle one, last, count)
    assert (EPP_TTFT_BUCKETS[0], EPP_TTFT_BUCKETS[12], EPP_TTFT_BUCKETS[-1]) == (0.005, 3.0, 120.0)
    assert len(EPP_TTFT_BUCKETS) == 24
    assert (EPP_TPOT_BUCKETS[1], EPP_TPOT_BUCKETS[8], len(EPP_TPOT_BUCKETS)) == (0.00205, 0.1, 19)
    assert (TTFT_BUCKETS_S[-1], len(TTFT_BUCKETS_S)) == (2560.0, 22)
    assert (ITL_BUCKETS_S[0], ITL_BUCKETS_S[-1], len(ITL_BUCKETS_S)) == (0.01, 80.0, 19)
    for bounds in (EPP_TTFT_BUCKETS, EPP_TPOT_BUCKETS, TTFT_BUCKETS_S, ITL_BUCKETS_S):
        assert list(bounds) == sorted(set(bounds))

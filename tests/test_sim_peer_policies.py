"""The peer recipes as policies of the simulator (adapter.sim.peer_policies): what the
cluster exports for them, that they read it as Prometheus scraped it, that each one
scales on the loads its rule reacts to and not on the others, and that each runs with
its recipe's ScaledObject.

Loads are deterministic (evenly spaced arrivals) so that each pod's batch, KV usage
and latencies are steady and the expected readings can be worked out by hand: a request
of `output` tokens on a pod stepping every `alpha` ms lasts output x alpha, so a pod fed
rate x holds x x output x alpha requests.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from adapter.collect.local import DEFAULT_SAMPLES, load_snapshot
from adapter.emulator.batching import ServingProfile
from adapter.sim.arguments import TRACES
from adapter.sim.cluster import ClusterSettings, SimCluster
from adapter.sim.command import make_trace
from adapter.sim.peer_policies import (
    POOL,
    LlmdSaturationPolicy,
    LlmdSloPolicy,
    WvaSaturationPolicy,
    cluster_target,
)
from adapter.sim.peers import (
    EPP_POOL_SATURATION,
    EPP_REQUEST_RUNNING,
    EPP_TTFT,
    KSM_READY_REPLICAS,
    KSM_REPLICAS,
    RECIPES,
    SLO_CLAMPED_RULE,
    SLO_SMOOTHED_RULE,
    SLO_TPOT_P90_RULE,
    scaled_object,
)
from adapter.sim.policies import (
    DESCRIPTIONS,
    KNOBS,
    Limits,
    SimSetup,
    build_policy,
    parse_label,
    setup_from_snapshot,
)
from adapter.sim.promsim import SeriesKey
from adapter.sim.simulate import run_policy, simulate
from adapter.sim.traces import RequestShape, Workload
from adapter.vllm_metrics import KV_CACHE_USAGE, NUM_REQUESTS_WAITING

Policy = LlmdSaturationPolicy | LlmdSloPolicy | WvaSaturationPolicy


@pytest.fixture(scope="module")
def setup() -> SimSetup:
    return setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))


def even(rates: list[tuple[float, float]], end: float, prompt: int, output: int) -> Workload:
    """Evenly spaced arrivals: `rates` are (from time, requests/s) pieces."""
    arrivals: list[float] = []
    for i, (start, rps) in enumerate(rates):
        stop = rates[i + 1][0] if i + 1 < len(rates) else end
        if rps > 0:
            n = int((stop - start) * rps)
            arrivals.extend(start + k / rps for k in range(n))
    n = len(arrivals)
    return Workload(tuple(arrivals), (prompt,) * n, (output,) * n)


def cluster(
    workload: Workload, profile: ServingProfile, *, replicas: int = 1, startup_s: float = 30.0
) -> SimCluster:
    return SimCluster(
        ClusterSettings(profile, startup_delay_s=startup_s, initial_replicas=replicas), workload
    )


def first_scale_up(sim: SimCluster) -> float | None:
    return next((r.at for r in sim.history if r.replicas > sim.history[0].replicas), None)


# --------------------------------------------------------------------------- what is exported


def test_the_epp_observes_ttft_and_tpot_when_a_request_ends() -> None:
    # one request at 1 s: 5 tokens, one every 12 ms from 1.012: TTFT 0.012 s (EPP bucket
    # (0.005, 0.025]), TPOT (1.060 - 1.012) / 4 = 0.012 s (bucket (0.01, 0.02])
    profile = ServingProfile(alpha_ms=12.0, beta_ms=0.0, max_batch_size=4)
    sim = cluster(Workload((1.0,), (16,), (5,)), profile)
    sim.run_until(1.03)
    ttft, tpot = sim.gateway_histograms()
    assert ttft.count == tpot.count == 0  # the first token is out, the stream is not over
    assert sim.histograms()[0].count == 1  # vLLM observed its TTFT already
    sim.run_until(2.0)
    ttft, tpot = sim.gateway_histograms()
    assert ttft.count == 1 and ttft.sum == pytest.approx(0.012)
    assert ttft.buckets[:3] == (0, 1, 1) and ttft.le[1] == 0.025
    assert tpot.count == 1 and tpot.sum == pytest.approx(0.012)
    assert tpot.buckets[3:5] == (0, 1) and tpot.le[4] == 0.02
    # a single-token request has no TPOT
    sim = cluster(Workload((0.0,), (16,), (1,)), profile)
    sim.run_until(1.0)
    assert [h.count for h in sim.gateway_histograms()] == [1, 0]


def test_the_scrape_exports_pods_pool_gateway_and_deployment() -> None:
    # 2 pods of batch 1, 6 requests at once: 3 each (1 running, 2 waiting); removing
    # vllm-1 retries its 2 waiting on vllm-0 (1 running, 4 waiting) while vllm-1 finishes
    # its running one. The pool is vllm-0 alone: max(4 / 5, KV / 0.8) = 0.8 (KV: 2 blocks
    # of 100); the EPP's running gauge counts all 6 outstanding.
    profile = ServingProfile(alpha_ms=10.0, beta_ms=0.0, max_batch_size=1, num_gpu_blocks=100)
    sim = cluster(Workload((0.0,) * 6, (16,) * 6, (100,) * 6), profile, replicas=2)
    sim.run_until(0.05)
    sim.scale(1)
    series = cluster_target(sim)()
    waiting = NUM_REQUESTS_WAITING.value
    assert series[SeriesKey.of(waiting, pod="vllm-0")] == 4.0
    assert series[SeriesKey.of(waiting, pod="vllm-1")] == 0.0  # terminating, still scraped
    assert series[SeriesKey.of(KV_CACHE_USAGE.value, pod="vllm-0")] == 0.02
    for stage in ("prefill", "decode", "effective"):
        key = SeriesKey.of(EPP_POOL_SATURATION, inference_pool=POOL, stage=stage)
        assert series[key] == pytest.approx(0.8)
    assert series[SeriesKey.of(EPP_REQUEST_RUNNING)] == 6.0
    assert series[SeriesKey.of(KSM_REPLICAS)] == series[SeriesKey.of(KSM_READY_REPLICAS)] == 1.0
    assert series[SeriesKey.of(EPP_TTFT + "_bucket", le="+Inf")] == 0.0  # none ended yet


# --------------------------------------------------------------------------- ScaledObjects


@pytest.mark.parametrize(
    ("label", "polling", "windows"),
    [
        ("llmd-saturation", 15.0, (300, 300)),
        ("llmd-slo", 15.0, (30, 180)),
        ("wva-saturation", 5.0, (0, 60)),
    ],
)
def test_each_policy_runs_its_recipes_scaled_object(
    setup: SimSetup, label: str, polling: float, windows: tuple[int, int]
) -> None:
    profile = ServingProfile(alpha_ms=10.0, beta_ms=0.0, max_batch_size=8)
    policy = build_policy(label, setup, cluster(even([], 60.0, 16, 10), profile), Limits(2, 6))
    assert isinstance(policy, LlmdSaturationPolicy | LlmdSloPolicy | WvaSaturationPolicy)
    expected = replace(
        scaled_object(policy.recipe.recipe).to_spec(), minReplicaCount=2, maxReplicaCount=6
    )
    assert policy.keda.spec == expected
    spec = policy.keda.spec
    assert spec.pollingInterval == polling
    assert spec.behavior is not None and spec.behavior.scaleUp and spec.behavior.scaleDown
    up, down = spec.behavior.scaleUp, spec.behavior.scaleDown
    assert (up.stabilizationWindowSeconds, down.stabilizationWindowSeconds) == windows
    assert policy.keda.hpa_sync_period == 15.0 and policy.prometheus.interval_s == 15.0
    assert policy.recipe.recipe in RECIPES


# --------------------------------------------------------------------------- readings lag


def drive(
    sim: SimCluster, policy: Policy, end: float, probe: list[tuple[float, dict[str, float]]]
) -> dict[float, dict[str, float]]:
    """Run the policy loop to `end`; note the cluster's truth at each scrape and, at each
    instant, `probe` the policy (after it acted). Returns the truths by scrape time."""
    truth: dict[float, dict[str, float]] = {}
    while (at := policy.next_time()) < end:
        sim.run_until(at)
        if policy.prometheus.next_scrape <= at:
            truth[at] = {
                "running": float(sim.gateway_gauges().running),
                "replicas": float(sim.replicas),
                "ready": float(sim.ready_replicas),
            }
        policy.act(at)
        now = {"running": float(sim.gateway_gauges().running), "replicas": float(sim.replicas)}
        probe.append((at, now))
    return truth


def last_scrape(truth: dict[float, dict[str, float]], t: float) -> dict[str, float]:
    return truth[max(s for s in truth if s <= t)]


def test_scrapes_fall_half_an_interval_after_the_loops_instants() -> None:
    # an arbitrary phase in a cluster; half an interval is its mean: a reading is 7.5 s old
    sim = cluster(even([], 60.0, 16, 10), RUNNING_PROFILE)
    for phase, first in ((0.0, 7.5), (3.0, 10.5), (9.0, 1.5)):
        policy = LlmdSaturationPolicy(sim, min_replicas=1, max_replicas=2, phase_s=phase)
        assert (policy.first_cycle_s, policy.prometheus.first_scrape_s) == (phase, first)
        assert policy.keda.start == phase


def test_llmd_saturation_reads_the_gauges_as_last_scraped() -> None:
    # a step from 10 to 30 req/s at 40 s (5 then 15 running): the count moves between two
    # scrapes, the reading does not
    profile = ServingProfile(alpha_ms=10.0, beta_ms=0.0, max_batch_size=256)
    sim = cluster(even([(0.0, 10.0), (40.0, 30.0)], 120.0, 16, 50), profile)
    policy = LlmdSaturationPolicy(sim, min_replicas=1, max_replicas=4, scrape_offset_s=7.5)
    probe: list[tuple[float, dict[str, float]]] = []
    truth = drive(sim, policy, 120.0, probe)
    assert sorted(truth) == [7.5 + 15.0 * k for k in range(8)]
    stale = 0
    for t, now in probe:
        if t < 7.5:
            continue
        reading = policy.readings(t).running_requests
        assert reading == last_scrape(truth, t)["running"]
        stale += reading != now["running"]
    assert stale > 0  # the cluster moved on since the scrape: the reading did not


def test_llmd_slo_reads_replicas_and_its_rules_as_last_scraped() -> None:
    # 17 req/s of 50 tokens on alpha 10 + beta 1 x batch ms: batch 8.5 / 0.15 = 57, TPOT
    # 67 ms; its P90 is 0.06 + 0.02 x 0.9 = 0.078 s (EPP bucket (0.06, 0.08]), over a
    # 100 ms SLO 0.78 > 0.55: it scales up, and right after the HPA's change the
    # formula still sees the replicas of the last scrape
    profile = ServingProfile(alpha_ms=10.0, beta_ms=1.0, max_batch_size=256)
    sim = cluster(even([(0.0, 17.0)], 200.0, 16, 50), profile)
    policy = LlmdSloPolicy(
        sim, min_replicas=1, max_replicas=4, ttft_slo_s=3.0, tpot_slo_s=0.1, scrape_offset_s=7.5
    )
    probe: list[tuple[float, dict[str, float]]] = []
    truth = drive(sim, policy, 200.0, probe)
    scaled = first_scale_up(sim)
    assert scaled is not None and scaled % 15.0 == 0.0  # at an HPA sync
    # the rules evaluated at the scrapes: the P90 of the last minute, on one replica
    tpot = policy.prometheus.tsdb.samples(SeriesKey.of(SLO_TPOT_P90_RULE), scaled, 10.0)
    assert [t for t, _ in tpot] == [scaled - 7.5]
    assert tpot[0][1] == pytest.approx(0.078)
    clamped = policy.prometheus.tsdb.samples(SeriesKey.of(SLO_CLAMPED_RULE), scaled, 45.0)
    smoothed = policy.prometheus.tsdb.samples(SeriesKey.of(SLO_SMOOTHED_RULE), scaled, 10.0)
    assert len(clamped) == 3  # (t - 45, t]: three rule evaluations
    assert smoothed[0][1] == pytest.approx(sum(v for _, v in clamped) / 3)
    lagging = 0
    for t, now in probe:
        if t < 7.5:
            continue
        _, n, r = policy.readings(t)
        seen = last_scrape(truth, t)
        assert (n, r) == (seen["replicas"], seen["ready"])
        lagging += n != now["replicas"]
    assert lagging > 0  # between the HPA's scale-up and the next scrape


def test_wva_reads_one_minute_maxima_of_the_scrapes_and_keda_its_scraped_gauge() -> None:
    profile = ServingProfile(alpha_ms=10.0, beta_ms=0.0, max_batch_size=64, num_gpu_blocks=500)
    sim = cluster(even([(0.0, 20.0), (60.0, 50.0)], 150.0, 200, 50), profile)
    policy = WvaSaturationPolicy(sim, min_replicas=1, max_replicas=4, scrape_offset_s=7.5)
    kv_at: dict[float, float] = {}
    decisions: list[tuple[float, int]] = []
    while (at := policy.next_time()) < 150.0:
        sim.run_until(at)
        if policy.prometheus.next_scrape <= at:
            kv_at[at] = next(p.kv_cache_usage for p in sim.pod_gauges() if p.name == "vllm-0")
        before = policy.decision
        policy.act(at)
        if policy.decision is not before:
            assert policy.decision is not None
            decisions.append((at, policy.decision.desired_replicas))
            # what it read: the largest of the scrapes in (at - 60, at], not the KV now
            replica = policy.decision.analysis.replicas[0] if at > 7.5 else None
            if replica is not None:
                peak = max(v for s, v in kv_at.items() if at - 60 < s <= at)
                assert replica.tokens_in_use == math.floor(peak * 8000 + 0.5)
        # KEDA reads the gauge as scraped: the decision made before the last scrape
        scraped = [d for t, d in decisions if t <= max((s for s in kv_at if s <= at), default=-1)]
        assert policy.metric() == (float(scraped[-1]) if scraped else 0.0)
    assert [t for t, _ in decisions] == [15.0 * k for k in range(10)]


# --------------------------------------------------------------------------- who scales when


def run(policy: Policy, sim: SimCluster, end: float) -> SimCluster:
    run_policy(sim, policy, end)
    return sim


RUNNING_PROFILE = ServingProfile(alpha_ms=10.0, beta_ms=0.0, max_batch_size=256)


@pytest.mark.parametrize(("rps", "scales"), [(40.0, True), (20.0, False)])
def test_llmd_saturation_sizes_by_running_requests(rps: float, scales: bool) -> None:
    # 50-token requests of 0.5 s: 40 req/s keep 20 running, ceil(20 / 16) = 2 replicas;
    # 20 req/s keep 10: one. The pool-saturation trigger stays near 0 (a huge cache).
    # The proposal must hold for the whole 300 s scale-up window.
    sim = cluster(even([(0.0, 5.0), (60.0, rps)], 480.0, 16, 50), RUNNING_PROFILE)
    policy = LlmdSaturationPolicy(sim, min_replicas=1, max_replicas=4)
    run(policy, sim, 480.0)
    up = first_scale_up(sim)
    if scales:
        assert up is not None and 60.0 + 300.0 <= up <= 60.0 + 300.0 + 30.0
        assert max(r.replicas for r in sim.history) == 2
    else:
        assert up is None


KV_PROFILE = ServingProfile(alpha_ms=10.0, beta_ms=0.0, max_batch_size=64, num_gpu_blocks=80)


@pytest.mark.parametrize(("target", "scales"), [(0.7, True), (1.5, False)])
def test_llmd_saturation_pool_saturation_trigger_and_its_knob(
    setup: SimSetup, target: float, scales: bool
) -> None:
    # 8 req/s of 200 + 50 tokens: 4 running, ~58 of 80 KV blocks: saturation
    # max(0 / 5, 0.73 / 0.8) = 0.91: ceil(0.91 / 0.7) = 2, but ceil(0.91 / 1.5) = 1;
    # the running trigger asks ceil(4 / 16) = 1 either way
    sim = cluster(even([(0.0, 8.0)], 420.0, 200, 50), KV_PROFILE)
    policy = LlmdSaturationPolicy(sim, min_replicas=1, max_replicas=4, saturation_target=target)
    run(policy, sim, 420.0)
    assert 0.85 < policy.readings(250.0).pool_saturation < 0.95
    assert (first_scale_up(sim) is not None) == scales


@pytest.mark.parametrize(("target", "scales"), [(2.0, True), (16.0, False)])
def test_llmd_saturation_label_knob_is_the_running_target(
    setup: SimSetup, target: float, scales: bool
) -> None:
    # the same 4-5 running requests in a cache far from full (saturation at most 0.2, a
    # request waiting for the step's end): the saturation trigger asks 1 replica, the
    # running one ceil(5 / 2) = 3 against ceil(5 / 16) = 1
    big = ServingProfile(alpha_ms=10.0, beta_ms=0.0, max_batch_size=64)
    sim = cluster(even([(0.0, 8.0)], 420.0, 200, 50), big)
    policy = build_policy(f"llmd-saturation@{target:g}", setup, sim, Limits(1, 4))
    assert isinstance(policy, LlmdSaturationPolicy) and policy.running_target == target
    run(policy, sim, 420.0)
    assert policy.readings(250.0).pool_saturation <= 0.2
    assert (first_scale_up(sim) is not None) == scales


SLO_PROFILE = ServingProfile(alpha_ms=10.0, beta_ms=1.0, max_batch_size=256)


@pytest.mark.parametrize(("rps", "scales"), [(17.0, True), (5.0, False)])
def test_llmd_slo_scales_when_p90_tpot_crosses_its_threshold(rps: float, scales: bool) -> None:
    # 17 req/s: P90 TPOT 0.078 s over a 100 ms SLO = 0.78 > 0.55 (see above); 5 req/s:
    # batch 2.5 / 0.75 = 3.3, TPOT 13 ms, P90 0.019 s: 0.19, below the dead band
    sim = cluster(even([(0.0, 5.0), (60.0, rps)], 300.0, 16, 50), SLO_PROFILE)
    policy = LlmdSloPolicy(sim, min_replicas=1, max_replicas=4, ttft_slo_s=3.0, tpot_slo_s=0.1)
    run(policy, sim, 300.0)
    up = first_scale_up(sim)
    if scales:
        # 1 m of rates, 45 s of smoothing, a 30 s scale-up window: within 2.5 minutes
        assert up is not None and 60.0 < up <= 60.0 + 150.0
    else:
        assert up is None


def test_llmd_slo_knob_moves_the_threshold_and_its_dead_band(setup: SimSetup) -> None:
    sim = cluster(even([(0.0, 17.0)], 300.0, 16, 50), SLO_PROFILE)
    policy = build_policy("llmd-slo@0.9", setup, sim, Limits(1, 4))
    assert isinstance(policy, LlmdSloPolicy)
    assert policy.theta_up == 0.9
    assert policy.theta_dn == pytest.approx(0.9 * 0.40 / 0.55)
    # the scenario's SLOs: 9 ms TPOT, 1000 ms TTFT (a 9 ms SLO puts every 10 .. 70 ms
    # TPOT far above any threshold)
    assert (policy.tpot_slo_s, policy.ttft_slo_s) == (0.009, 1.0)
    policy = LlmdSloPolicy(
        sim, min_replicas=1, max_replicas=4, ttft_slo_s=3.0, tpot_slo_s=0.1, theta_up=0.9
    )
    run(policy, sim, 300.0)
    assert first_scale_up(sim) is None  # 0.78 < 0.9


WVA_PROFILE = ServingProfile(alpha_ms=10.0, beta_ms=0.0, max_batch_size=64, num_gpu_blocks=500)


@pytest.mark.parametrize(("rps", "scales"), [(50.0, True), (40.0, False)])
def test_wva_scales_when_kv_demand_passes_085_of_capacity(rps: float, scales: bool) -> None:
    # 200 + 50 token requests of 0.5 s on 500 blocks of 16 (8000 tokens): capacity
    # min(k1 = 6400, k2 = 64 x (200 + 25) = 14400) = 6400 tokens. 50 req/s keep 25
    # running, ~362 blocks: 5800 tokens > 0.85 x 6400 = 5440: scale up; 40 req/s keep
    # 20, ~290 blocks, 4640 tokens: utilization 0.73, inside the band: hold
    sim = cluster(even([(0.0, 10.0), (60.0, rps)], 240.0, 200, 50), WVA_PROFILE)
    policy = WvaSaturationPolicy(sim, min_replicas=1, max_replicas=4)
    run(policy, sim, 240.0)
    assert policy.decision is not None
    analysis = policy.decision.analysis
    assert analysis.per_replica_capacity == 6400.0
    up = first_scale_up(sim)
    if scales:
        # WVA's cycle after a 1-minute maximum crosses, its gauge's scrape, KEDA's poll
        assert up is not None and 60.0 < up <= 60.0 + 60.0
    else:
        assert up is None
        assert 0.70 < analysis.utilization < 0.85


def test_wva_knob(setup: SimSetup) -> None:
    sim = cluster(even([(0.0, 10.0), (60.0, 40.0)], 240.0, 200, 50), WVA_PROFILE)
    policy = build_policy("wva-saturation@0.6", setup, sim, Limits(1, 4))
    assert isinstance(policy, WvaSaturationPolicy)
    assert policy.config.scale_up_threshold == 0.6
    assert policy.config.scale_down_boundary == pytest.approx(0.6 * 0.70 / 0.85)
    assert policy.config.max_num_seqs == 64  # the pods' batch limit
    run(policy, sim, 240.0)
    assert first_scale_up(sim) is not None  # 0.73 > 0.6
    with pytest.raises(ValueError, match="out of range"):
        parse_label("wva-saturation@1.2")


# --------------------------------------------------------------------------- in simulate


@pytest.mark.parametrize("trace", TRACES)
def test_simulate_runs_the_peers_on_every_trace(setup: SimSetup, trace: str) -> None:
    names = ["llmd-saturation", "llmd-slo@0.6", "wva-saturation"]
    report = simulate(
        setup,
        make_trace(trace, 600.0, 1),
        policies=names,
        shape=RequestShape(128, 128),
        limits=Limits(1, 4),
    )
    assert [r.policy for r in report.policies] == names
    for result in report.policies:
        assert result.completed > 0 and result.cycle_s == 15.0
        assert "llm-d/" in result.description  # the recipe's source


def test_descriptions_and_knobs_name_each_recipe() -> None:
    assert "keda-epp" in DESCRIPTIONS["llmd-saturation"]
    assert "slo-aware" in DESCRIPTIONS["llmd-slo"]
    assert "llm-d-workload-variant-autoscaler" in DESCRIPTIONS["wva-saturation"]
    for name in ("llmd-saturation", "llmd-slo", "wva-saturation"):
        assert KNOBS[name] is not None
    assert parse_label("llmd-saturation@0.5") == ("llmd-saturation", 0.5, 0.0, False)

"""The three policies of the simulator (adapter.sim.policies) on the tutorial's objects."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, replace
from itertools import pairwise
from pathlib import Path

import pytest
import yaml
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from adapter.collect.local import DEFAULT_SAMPLES, load_snapshot
from adapter.collect.metrics import MetricsWarmingUp, ModelLoad
from adapter.collect.scrape import ScrapeSettings, ScrapeSource, ScrapeTarget
from adapter.emulator.batching import ServingProfile
from adapter.emulator.metrics import MetricsServer
from adapter.sim.cluster import ClusterSettings, SimCluster
from adapter.sim.hpa import HPAScalingPolicy
from adapter.sim.policies import (
    FROM_ZERO_COOLDOWN_S,
    ClusterMetrics,
    Limits,
    OursPolicy,
    QueuePolicy,
    SetupError,
    SimSetup,
    TutorialPolicy,
    build_policy,
    ours_scaled_object,
    setup_from_snapshot,
)
from adapter.sim.simulate import run_policy
from adapter.sim.traces import PiecewiseTrace, Workload, make_workload, step_trace

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup() -> SimSetup:
    return setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))


def test_setup_reads_the_variant_as_the_adapter_does(setup: SimSetup) -> None:
    assert setup.variant == ("vllm-test", "vllm")
    assert setup.model == "unsloth/Meta-Llama-3.1-8B"
    assert setup.accelerator == "H100"
    assert setup.profile == ServingProfile(alpha_ms=6.356, beta_ms=0.044, max_batch_size=512)
    assert (setup.slo_itl_ms, setup.slo_ttft_ms) == (9.0, 1000.0)
    assert (setup.unit_cost, setup.gpus_per_replica) == (100.0, 1)
    with pytest.raises(SetupError, match="VariantAutoscaling other/nope: not in the samples"):
        setup_from_snapshot(setup.snapshot, ("other", "nope"))


@pytest.mark.parametrize("manifest", ["scaledobject.yaml", "scaledobject-from-zero.yaml"])
def test_ours_is_configured_like_the_shipped_scaled_object(manifest: str) -> None:
    doc = yaml.safe_load((ROOT / "keda" / manifest).read_text())["spec"]
    from_zero = doc["minReplicaCount"] == 0
    spec = ours_scaled_object(
        doc["minReplicaCount"],
        doc["maxReplicaCount"],
        cooldown_s=FROM_ZERO_COOLDOWN_S if from_zero else 300.0,
    )
    assert spec.pollingInterval == doc["pollingInterval"]
    assert spec.cooldownPeriod == doc.get("cooldownPeriod", 300)  # KEDA's default 300
    assert spec.fallback is not None
    assert (spec.fallback.failureThreshold, spec.fallback.replicas, spec.fallback.behavior) == (
        doc["fallback"]["failureThreshold"],
        doc["fallback"]["replicas"],
        doc["fallback"]["behavior"],
    )
    trigger = doc["triggers"][0]
    assert (spec.metricType, spec.target) == (trigger["metricType"], 1.0)
    behavior = doc["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert spec.behavior is not None
    pairs = ((spec.behavior.scaleUp, "scaleUp"), (spec.behavior.scaleDown, "scaleDown"))
    for ours, direction in pairs:
        shipped = behavior[direction]
        assert ours is not None
        assert ours.tolerance == shipped["tolerance"]
        assert ours.stabilizationWindowSeconds == shipped["stabilizationWindowSeconds"]
        assert ours.selectPolicy == shipped["selectPolicy"]
        assert ours.policies is not None
        assert set(ours.policies) == {HPAScalingPolicy(**p) for p in shipped["policies"]}


def test_metrics_are_rated_over_the_window_like_the_pod_scraper() -> None:
    profile = ServingProfile(alpha_ms=2.0, beta_ms=0.5, max_batch_size=8)
    load = Workload((0.0, 0.001, 0.001, 0.001), (10, 20, 30, 40), (5, 5, 5, 5))
    cluster = SimCluster(ClusterSettings(profile), load)
    metrics = ClusterMetrics(cluster, ("ns", "m"))
    cluster.run_until(1.0)

    report = metrics.collect({("ns", "m")})
    got = report.get("ns", "m")
    assert got.arrival_rate_rpm == pytest.approx(240.0)  # 4 completions in 1 s
    assert got.avg_prompt_tokens == pytest.approx(25.0)
    assert got.avg_output_tokens == pytest.approx(5.0)
    # inter-token gaps: A 4 x 4 ms, B..D 15.5 ms over 4 gaps each (see test_sim_cluster)
    assert got.itl_ms == pytest.approx((16.0 + 3 * 15.5) / 16)
    assert got.ttft_ms == pytest.approx((2.5 + 3 * 5.5) / 4)
    assert got.queue_time_ms == pytest.approx((0.0 + 3 * 1.5) / 4)
    assert (got.running, got.waiting, got.kv_cache_usage) == (0.0, 0.0, 0.0)

    cluster.run_until(3.0)  # the next window (1 s, 3 s] has no completion
    quiet = metrics.collect({("ns", "m")}).get("ns", "m")
    assert quiet.arrival_rate_rpm == 0.0
    assert quiet.itl_ms is None
    assert metrics.collect({("ns", "other")}).loads == {}


class DeploymentExposition(Collector):
    """The simulated Deployment's counters and gauges as one vLLM pod's /metrics, written
    independently of ClusterMetrics (with prometheus_client's own families)."""

    def __init__(self, cluster: SimCluster, model: str) -> None:
        self.cluster, self.model = cluster, model
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        c, labels = self.cluster.counters, [self.model, "0"]
        running, waiting, kv = self.cluster.gauges()
        names = ["model_name", "engine"]
        success = CounterMetricFamily("vllm:request_success", "", labels=names)
        success.add_metric(labels, c.success)
        yield success
        for name, total, count in (
            ("vllm:request_prompt_tokens", c.prompt_tokens, c.success),
            ("vllm:request_generation_tokens", c.output_tokens, c.success),
            ("vllm:request_queue_time_seconds", c.queue_sum_s, c.success),
            ("vllm:time_to_first_token_seconds", c.ttft_sum_s, c.success),
            ("vllm:inter_token_latency_seconds", c.itl_sum_s, c.itl_count),
        ):
            histogram = HistogramMetricFamily(name, "", labels=names)
            histogram.add_metric(labels, [("+Inf", float(count))], total)
            yield histogram
        for name, value in (
            ("vllm:num_requests_running", running),
            ("vllm:num_requests_waiting", waiting),
            ("vllm:kv_cache_usage_perc", kv),
        ):
            gauge = GaugeMetricFamily(name, "", labels=names)
            gauge.add_metric(labels, float(value or 0.0))
            yield gauge

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


def test_cluster_metrics_agree_with_the_pod_scraper_on_the_same_counters() -> None:
    """ClusterMetrics against a real ScrapeSource reading the same Deployment over HTTP,
    collect after collect, through a burst that queues and drains (in-system growth up,
    then down)."""
    profile = ServingProfile(alpha_ms=2.0, beta_ms=0.5, max_batch_size=4)
    arrivals = tuple(0.05 * i for i in range(40))  # 20 req/s for 2 s, then none
    load = Workload(arrivals, (10,) * 40, (50,) * 40)
    cluster = SimCluster(ClusterSettings(profile), load)
    key = ("ns", "m")
    ours = ClusterMetrics(cluster, key)
    tutorial = ClusterMetrics(cluster, key, arrivals="completions")
    assert (ours.arrivals, tutorial.arrivals) == ("in-system", "completions")
    exposed = DeploymentExposition(cluster, "m")
    with (
        MetricsServer(exposed) as server,
        ScrapeSource(
            ScrapeSettings(targets=(ScrapeTarget(url=server.url, namespace="ns"),)),
            clock=lambda: cluster.now,
        ) as scraper,
    ):
        with pytest.raises(MetricsWarmingUp):
            scraper.collect([key])
        grew = shrank = False
        before = (cluster.now, cluster.counters.arrivals, cluster.counters.success)
        for t in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0):
            in_system = sum(cluster.gauges()[:2])
            cluster.run_until(t)
            grew |= sum(cluster.gauges()[:2]) > in_system
            shrank |= sum(cluster.gauges()[:2]) < in_system
            scraped = scraper.collect([key]).get(*key)
            simulated = ours.collect([key]).get(*key)
            completions = tutorial.collect([key]).get(*key)
            for field in fields(ModelLoad):
                want, got = getattr(scraped, field.name), getattr(simulated, field.name)
                assert got == (pytest.approx(want) if isinstance(want, float) else want), field
            # in the simulator nothing is lost: what entered is exactly the arrivals
            elapsed = t - before[0]
            arrived = cluster.counters.arrivals - before[1]
            finished = cluster.counters.success - before[2]
            assert simulated.arrival_rate_rpm == pytest.approx(arrived / elapsed * 60.0)
            # the tutorial's definition: completions only, everything else the same
            assert completions.arrival_rate_rpm == pytest.approx(finished / elapsed * 60.0)
            assert replace(completions, arrival_rate_rpm=simulated.arrival_rate_rpm) == simulated
            before = (t, cluster.counters.arrivals, cluster.counters.success)
    assert grew and shrank


def test_ours_reads_arrivals_the_tutorial_reads_completions(setup: SimSetup) -> None:
    cluster = SimCluster(ClusterSettings(setup.profile), make_workload(step_trace(60.0), 1))
    ours = OursPolicy(setup, cluster, Limits())
    tutorial = TutorialPolicy(setup, cluster, Limits())
    assert ours._adapter.metrics.arrivals == "in-system"
    assert tutorial._adapter.metrics.arrivals == "completions"
    with pytest.raises(ValueError, match="unknown arrival estimate"):
        ClusterMetrics(cluster, setup.load_key, arrivals="guess")  # type: ignore[arg-type]


def spec_changes(cluster: SimCluster) -> list[tuple[float, int]]:
    """(time, new spec.replicas) at every change of spec.replicas."""
    return [
        (h.at, h.replicas) for prev, h in pairwise(cluster.history) if h.replicas != prev.replicas
    ]


def _step_run(setup: SimSetup, policy_name: str) -> SimCluster:
    """The tutorial's step compressed: 8 req/s, 16 from 300 s, 8 again from 600 s."""
    trace = step_trace(900.0)
    cluster = SimCluster(ClusterSettings(setup.profile), make_workload(trace, seed=2))
    limits = Limits()
    policy = (
        OursPolicy(setup, cluster, limits)
        if policy_name == "ours"
        else TutorialPolicy(setup, cluster, limits)
    )
    run_policy(cluster, policy, trace.duration_s)
    return cluster


def test_ours_scales_one_to_two_on_the_step_and_back(setup: SimSetup) -> None:
    cluster = _step_run(setup, "ours")
    spec = spec_changes(cluster)
    assert [n for _, n in spec] == [2, 1]
    up, down = spec[0][0], spec[1][0]
    # the HPA acts on its syncs, half a cycle after the adapter's: 7.5 s + k * 15 s
    assert up % 15.0 == 7.5 and down % 15.0 == 7.5
    assert 300.0 < up <= 330.0  # within 2 adapter cycles of the step
    assert down >= 600.0 + 180.0  # the shipped 180 s scale-down window
    assert down <= 600.0 + 180.0 + 2 * 15.0


def test_ours_with_headroom_is_ready_before_the_step(setup: SimSetup) -> None:
    """`ours+50%` sizes 8 req/s as 12: two replicas from the first decisions, so the
    step to 16 finds them serving; without headroom the second comes after the step."""
    trace = step_trace(900.0)
    cluster = SimCluster(ClusterSettings(setup.profile), make_workload(trace, seed=2))
    run_policy(cluster, build_policy("ours+50%", setup, cluster, Limits()), trace.duration_s)
    spec = spec_changes(cluster)
    assert spec[0][1] == 2 and spec[0][0] < 60.0
    assert min(h.replicas for h in cluster.history if h.at >= 60.0) == 2


def test_wva_tutorial_patches_replicas_directly_on_its_60_s_cycle(setup: SimSetup) -> None:
    cluster = _step_run(setup, "wva-tutorial")
    assert spec_changes(cluster) == [
        (360.0, 2),
        (660.0, 1),
    ]  # the first cycle after each step, no window


def _drive_queue_policy(
    trace: PiecewiseTrace, profile: ServingProfile
) -> list[tuple[float, int, int, int]]:
    """(time, waiting, replicas before, replicas after) at every action of keda-queue."""
    cluster = SimCluster(ClusterSettings(profile), make_workload(trace, seed=5))
    policy = QueuePolicy(cluster, Limits())
    seen = []
    while (at := policy.next_time()) < trace.duration_s:
        cluster.run_until(at)
        waiting, before = cluster.gauges()[1], cluster.replicas
        policy.act(at)
        seen.append((at, waiting, before, cluster.replicas))
    return seen


def test_queue_policy_ignores_load_that_does_not_queue(setup: SimSetup) -> None:
    # 16 req/s on one replica: ITL 9.9 ms, over the SLO, but the batch (about 80) never fills
    seen = _drive_queue_policy(step_trace(900.0), setup.profile)
    assert {after for *_, after in seen} == {1}
    assert max(waiting for _, waiting, _, _ in seen) <= 5


def test_queue_policy_reacts_once_the_queue_exceeds_five_per_replica(setup: SimSetup) -> None:
    # 45 req/s is more than one replica's 34.6 req/s at a full batch of 512: a queue builds
    trace = PiecewiseTrace("burst", 900.0, (0.0, 60.0, 300.0), (8.0, 45.0, 8.0))
    seen = _drive_queue_policy(trace, setup.profile)
    ups = [(at, waiting, before, after) for at, waiting, before, after in seen if after > before]
    assert ups, "the queue policy never scaled up"
    for _at, waiting, before, _after in ups:
        assert waiting > 5 * before
    first_over = next(at for at, waiting, before, _ in seen if waiting > 5 * before)
    assert ups[0][0] == first_over
    downs = [at for at, _, before, after in seen if after < before]
    assert downs and downs[0] >= ups[-1][0] + 300.0  # the default 300 s stabilization

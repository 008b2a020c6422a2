"""ScrapeSource against emulated vLLM endpoints, with an injected clock."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from adapter.collect.metrics import MetricsUnavailable, MetricsWarmingUp
from adapter.collect.scrape import ScrapeSettings, ScrapeSource, ScrapeTarget
from adapter.emulator.metrics import MetricsServer, VllmMetrics
from adapter.vllm_metrics import RELEASES, VllmRelease

KEY = ("ns-a", "m1")
OPENMETRICS = "application/openmetrics-text;version=1.0.0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Endpoint:
    metrics: VllmMetrics
    server: MetricsServer

    def target(self, namespace: str) -> ScrapeTarget:
        return ScrapeTarget(url=self.server.url, namespace=namespace)

    def serve(
        self,
        n: int,
        *,
        prompt: int,
        output: int,
        itl_s: float,
        queue_s: float = 0.1,
        ttft_s: float = 0.2,
    ) -> None:
        for _ in range(n):
            self.metrics.record_request(
                prompt_tokens=prompt,
                output_tokens=output,
                queue_time_s=queue_s,
                ttft_s=ttft_s,
                inter_token_latencies_s=[itl_s] * (output - 1),
            )


@pytest.fixture
def endpoints() -> Iterator[list[Endpoint]]:
    """Two vLLM pods of model m1; the second (vLLM 0.11) exports both ITL histogram names."""
    started = [
        Endpoint(m, MetricsServer(m).start())
        for m in (VllmMetrics("m1"), VllmMetrics("m1", engine="1", release="0.11"))
    ]
    yield started
    for endpoint in started:
        endpoint.server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_source(clock: FakeClock, *targets: ScrapeTarget) -> ScrapeSource:
    return ScrapeSource(ScrapeSettings(targets=targets, timeout_s=2), clock=clock)


def test_first_collect_is_warming_up_not_zero_load(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    a, b = endpoints
    a.serve(3, prompt=10, output=2, itl_s=0.01)
    with make_source(clock, a.target("ns-a"), b.target("ns-a")) as source:
        with pytest.raises(MetricsWarmingUp, match="second scrape"):
            source.collect([KEY])
        clock.now += 1
        assert source.collect([KEY]).get(*KEY).arrival_rate_rpm == 0.0


def test_rates_and_means_over_the_interval_summed_across_pods(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    a, b = endpoints
    a.serve(7, prompt=999, output=99, itl_s=0.5)  # before the first scrape: not counted
    with make_source(clock, a.target("ns-a"), b.target("ns-a")) as source:
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        a.serve(10, prompt=100, output=11, itl_s=0.020, queue_s=0.1, ttft_s=0.2)
        b.serve(30, prompt=200, output=21, itl_s=0.030, queue_s=0.3, ttft_s=0.4)
        a.metrics.set_gauges(running=3, waiting=1, kv_cache_usage=0.2)
        b.metrics.set_gauges(running=5, waiting=0, kv_cache_usage=0.6)
        clock.now += 10

        report = source.collect([KEY])

    load = report.get(*KEY)
    assert report.queries == 2
    # 40 completed and 9 more are now in the pods (running + waiting), over 10 s
    assert load.arrival_rate_rpm == pytest.approx((40 + 9) / 10 * 60)
    assert load.avg_prompt_tokens == pytest.approx((10 * 100 + 30 * 200) / 40)
    assert load.avg_output_tokens == pytest.approx((10 * 11 + 30 * 21) / 40)
    # per token, each pod counted once although b exports both ITL names
    assert load.itl_ms == pytest.approx((100 * 20 + 600 * 30) / 700)
    # requests decoding on average over the 10 s: the ITL seconds accrued per second
    assert load.decoding == pytest.approx((100 * 0.020 + 600 * 0.030) / 10)
    assert load.queue_time_ms == pytest.approx((10 * 100 + 30 * 300) / 40)
    assert load.ttft_ms == pytest.approx((10 * 200 + 30 * 400) / 40)
    assert (load.running, load.waiting) == (8, 1)
    assert load.kv_cache_usage == pytest.approx(0.4)


@pytest.mark.parametrize("release", RELEASES)
def test_every_vllm_release_is_read(release: VllmRelease, clock: FakeClock) -> None:
    """0.10 exports only the old ITL name, 0.11 both (counted once), 0.34 only the new."""
    metrics = VllmMetrics("m2", release=release)
    pod = Endpoint(metrics, MetricsServer(metrics).start())
    try:
        with make_source(clock, pod.target("ns-b")) as source:
            with pytest.raises(MetricsWarmingUp):
                source.collect([("ns-b", "m2")])
            pod.serve(4, prompt=10, output=6, itl_s=0.04)
            clock.now += 2
            load = source.collect([("ns-b", "m2")]).get("ns-b", "m2")
    finally:
        pod.server.stop()
    assert load.itl_ms == pytest.approx(40)
    assert load.arrival_rate_rpm == pytest.approx(4 / 2 * 60)
    assert (load.avg_prompt_tokens, load.avg_output_tokens) == (10, 6)


class AlwaysOpenMetrics:
    """A pod whose server answers OpenMetrics whatever the scraper asks (the escaped
    `vllm_` sample names of prometheus_client >= 0.23 with it)."""

    def __init__(self, metrics: VllmMetrics) -> None:
        self.metrics = metrics

    def exposition(self) -> tuple[bytes, str]:
        return self.metrics.negotiate(OPENMETRICS)


def test_an_openmetrics_answer_with_escaped_names_is_read_alike(clock: FakeClock) -> None:
    plain, escaped = VllmMetrics("m1"), VllmMetrics("m1", engine="1")
    with (
        MetricsServer(plain) as a,
        MetricsServer(AlwaysOpenMetrics(escaped)) as b,
        make_source(clock, ScrapeTarget(url=a.url, namespace="ns-a")) as only_plain,
        make_source(clock, ScrapeTarget(url=b.url, namespace="ns-a")) as only_escaped,
    ):
        assert b"vllm_request_success_total" in AlwaysOpenMetrics(escaped).exposition()[0]
        for source in (only_plain, only_escaped):
            with pytest.raises(MetricsWarmingUp):
                source.collect([KEY])
        for pod in (Endpoint(plain, a), Endpoint(escaped, b)):
            pod.serve(6, prompt=100, output=11, itl_s=0.02, queue_s=0.1, ttft_s=0.2)
        plain.set_gauges(running=3, waiting=2, kv_cache_usage=0.5)
        escaped.set_gauges(running=3, waiting=2, kv_cache_usage=0.5)
        clock.now += 3
        read_plain = only_plain.collect([KEY]).get(*KEY)
        read_escaped = only_escaped.collect([KEY]).get(*KEY)

    assert read_escaped == read_plain
    assert read_escaped.arrival_rate_rpm == pytest.approx((6 + 5) / 3 * 60)
    assert read_escaped.itl_ms == pytest.approx(20)
    assert (read_escaped.running, read_escaped.kv_cache_usage) == (3, 0.5)


def test_no_traffic_gives_zero_rate_and_no_means(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    a, b = endpoints
    with make_source(clock, a.target("ns-a"), b.target("ns-a")) as source:
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        clock.now += 5
        load = source.collect([KEY]).get(*KEY)
    assert load.arrival_rate_rpm == 0.0
    assert load.avg_prompt_tokens == 0.0 and load.avg_output_tokens == 0.0
    assert load.itl_ms is None and load.ttft_ms is None and load.queue_time_ms is None
    assert load.running == 0


def test_counter_reset_counts_from_zero(endpoints: list[Endpoint], clock: FakeClock) -> None:
    a, b = endpoints
    a.serve(50, prompt=100, output=2, itl_s=0.01)
    with make_source(clock, a.target("ns-a"), b.target("ns-a")) as source:
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        restarted = VllmMetrics("m1")  # the pod restarted: counters start again from 0
        a.server.source = restarted
        Endpoint(restarted, a.server).serve(5, prompt=300, output=2, itl_s=0.01)
        b.serve(10, prompt=100, output=2, itl_s=0.01)
        clock.now += 5
        load = source.collect([KEY]).get(*KEY)
    assert load.arrival_rate_rpm == pytest.approx(15 / 5 * 60)
    assert load.avg_prompt_tokens == pytest.approx((5 * 300 + 10 * 100) / 15)


def test_a_restart_counts_the_in_flight_growth_from_zero(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    """The requests in the old process died with it: they are not negative arrivals."""
    a, _ = endpoints
    with make_source(clock, a.target("ns-a")) as source:
        a.serve(1000, prompt=1, output=2, itl_s=0.01)
        a.metrics.set_gauges(running=40, waiting=0)
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        restarted = VllmMetrics("m1")  # same URL, a new process
        a.server.source = restarted
        Endpoint(restarted, a.server).serve(10, prompt=1, output=2, itl_s=0.01)
        restarted.set_gauges(running=8, waiting=0)
        clock.now += 60
        load = source.collect([KEY]).get(*KEY)
    # since the restart: 10 finished and 8 in flight (not 10 + 8 - 40 = -22)
    assert load.arrival_rate_rpm == pytest.approx(18.0)


def test_a_window_without_completions_takes_the_means_since_start(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    """The first cycles with traffic (long requests) have arrivals but no completion: the
    token means since the pod started stand in, rather than no request length."""
    a, _ = endpoints
    a.serve(3, prompt=100, output=500, itl_s=0.01)
    a.serve(1, prompt=200, output=1000, itl_s=0.01)
    with make_source(clock, a.target("ns-a")) as source:
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        a.metrics.set_gauges(running=12, waiting=0)  # 12 arrived, none finished yet
        clock.now += 2
        load = source.collect([KEY]).get(*KEY)
        assert load.arrival_rate_rpm == pytest.approx(12 / 2 * 60)
        assert load.avg_output_tokens == pytest.approx(2500 / 4)
        assert load.avg_prompt_tokens == pytest.approx(500 / 4)
        # once the window has completions, its own means are used
        a.serve(2, prompt=10, output=20, itl_s=0.01)
        clock.now += 2
        load = source.collect([KEY]).get(*KEY)
    assert (load.avg_output_tokens, load.avg_prompt_tokens) == (20, 10)


def test_one_target_down_is_reported_and_the_rest_still_counts(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    a, b = endpoints
    target_b = b.target("ns-a")
    with make_source(clock, a.target("ns-a"), target_b) as source:
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        a.serve(6, prompt=10, output=2, itl_s=0.01)
        b.serve(100, prompt=10, output=2, itl_s=0.01)
        b.server.stop()
        clock.now += 3

        report = source.collect([KEY])

        assert report.get(*KEY).arrival_rate_rpm == pytest.approx(6 / 3 * 60)
        assert source.last_failures == (target_b,)
        assert source.failures_total == 1
        # that rate is a lower bound: the model's load is reported incomplete
        reason = report.incomplete[KEY]
        assert reason.startswith(
            f"1 of 2 pods of model m1 in namespace ns-a failed to scrape ({target_b.url}: "
        )
        assert "ConnectionError" in reason


def test_a_failed_pod_marks_only_the_models_it_served(
    endpoints: list[Endpoint], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Its model is known from its last answer; a target that never answered names no
    model, so it is logged and holds nothing back."""
    a, b = endpoints
    other = VllmMetrics("m2")
    c = Endpoint(other, MetricsServer(other).start())
    gone = MetricsServer(VllmMetrics("m3")).start()
    never = ScrapeTarget(url=gone.url, namespace="ns-a")
    gone.stop()
    targets = (a.target("ns-a"), b.target("ns-a"), c.target("ns-a"), never)
    keys = [KEY, ("ns-a", "m2"), ("ns-a", "m3")]
    try:
        with make_source(clock, *targets) as source:
            with pytest.raises(MetricsWarmingUp):
                source.collect(keys)
            a.server.stop()
            b.server.stop()
            clock.now += 1
            with caplog.at_level(logging.WARNING, logger="adapter.collect.scrape"):
                report = source.collect(keys)
    finally:
        c.server.stop()
    assert set(report.incomplete) == {KEY}
    assert report.incomplete[KEY].startswith("2 of 2 pods of model m1 in namespace ns-a")
    assert targets[0].url in report.incomplete[KEY] and targets[1].url in report.incomplete[KEY]
    assert ("ns-a", "m2") in report.loads and KEY not in report.loads
    assert any(
        never.url in r.getMessage() and "never answered" in r.getMessage() for r in caplog.records
    )


def test_a_target_answering_an_error_counts_as_failed(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    a, _ = endpoints
    broken = ScrapeTarget(url=a.server.url.replace("/metrics", "/nope"), namespace="ns-a")
    with make_source(clock, a.target("ns-a"), broken) as source:
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        clock.now += 1
        source.collect([KEY])
        assert source.last_failures == (broken,)
        assert source.failures_total == 2


def test_all_targets_down_raises(endpoints: list[Endpoint], clock: FakeClock) -> None:
    a, b = endpoints
    with make_source(clock, a.target("ns-a"), b.target("ns-a")) as source:
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        for endpoint in endpoints:
            endpoint.server.stop()
        clock.now += 1
        with pytest.raises(MetricsUnavailable, match="all 2 vLLM metrics targets failed") as err:
            source.collect([KEY])
        assert not isinstance(err.value, MetricsWarmingUp)
        assert source.failures_total == 2


def test_namespaces_are_kept_apart_and_only_wanted_keys_reported(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    a, b = endpoints
    with make_source(clock, a.target("ns-a"), b.target("ns-b")) as source:
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        a.serve(2, prompt=10, output=2, itl_s=0.01)
        b.serve(4, prompt=10, output=2, itl_s=0.01)
        clock.now += 2
        report = source.collect([("ns-b", "m1"), ("ns-c", "absent")])

    assert set(report.loads) == {("ns-b", "m1")}
    assert report.get("ns-b", "m1").arrival_rate_rpm == pytest.approx(4 / 2 * 60)
    assert report.get("ns-c", "absent").arrival_rate_rpm == 0.0


def test_no_targets_is_an_empty_report() -> None:
    with ScrapeSource(ScrapeSettings()) as source:
        report = source.collect([KEY])
    assert report.loads == {} and report.queries == 0


def test_forgotten_target_starts_warming_up_again(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    a, _ = endpoints
    target = a.target("ns-a")
    with make_source(clock, target) as source:
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        source.set_targets([])
        source.set_targets([target, target])
        assert source.targets == (target,)
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])


def test_target_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        ScrapeTarget(url="10.0.0.1:8000/metrics", namespace="ns")


def test_arrivals_count_what_entered_not_only_what_finished(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    """A load step shows at once (queue grows), and a draining backlog (more completions
    than arrivals) is not mistaken for more load."""
    a, _ = endpoints
    with make_source(clock, a.target("ns-a")) as source:
        a.metrics.set_gauges(running=30, waiting=0)
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        # step: 16 arrived, 8 finished, 8 more in the pod
        a.serve(8, prompt=128, output=512, itl_s=0.008)
        a.metrics.set_gauges(running=38, waiting=0)
        clock.now += 1
        assert source.collect([KEY]).get(*KEY).arrival_rate_rpm == pytest.approx(16 * 60)
        # backlog drains: 23 finished, 16 arrived, 7 fewer in the pod
        a.serve(23, prompt=128, output=512, itl_s=0.008)
        a.metrics.set_gauges(running=31, waiting=0)
        clock.now += 1
        assert source.collect([KEY]).get(*KEY).arrival_rate_rpm == pytest.approx(16 * 60)
        # the pod empties faster than anything finishes: never a negative rate
        a.metrics.set_gauges(running=0, waiting=0)
        clock.now += 1
        assert source.collect([KEY]).get(*KEY).arrival_rate_rpm == 0.0


def test_rate_window_spans_several_scrapes(endpoints: list[Endpoint], clock: FakeClock) -> None:
    """With window_s, a burst in one interval is averaged over the window, like
    PromQL's rate(...[w]); until the window is covered the oldest scrape is the base."""
    a, _ = endpoints
    settings = ScrapeSettings(targets=(a.target("ns-a"),), window_s=6.0)
    with ScrapeSource(settings, clock=clock) as source:
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        rates = []
        for served in (8, 8, 32, 8, 8):
            a.serve(served, prompt=1, output=1, itl_s=0.01)
            clock.now += 2
            rates.append(source.collect([KEY]).get(*KEY).arrival_rate_rpm / 60)
    assert rates == pytest.approx([4, 4, 8, 8, 8])


def test_a_new_pod_adds_to_the_window_of_the_others(
    endpoints: list[Endpoint], clock: FakeClock
) -> None:
    """Right after a scale-up the new pod takes the requests the old one no longer gets.
    Rated over its own short span it would count them a second time (the old pod's
    window still holds them): the closed loop then asked for a third replica."""
    a, b = endpoints
    settings = ScrapeSettings(targets=(a.target("ns-a"),), window_s=6.0)
    with ScrapeSource(settings, clock=clock) as source:
        a.metrics.set_gauges(running=30, waiting=0)
        with pytest.raises(MetricsWarmingUp):
            source.collect([KEY])
        for _ in range(3):  # 16 req/s, all on a; what finishes equals what arrives
            a.serve(32, prompt=1, output=1, itl_s=0.01)
            clock.now += 2
            assert source.collect([KEY]).get(*KEY).arrival_rate_rpm == pytest.approx(16 * 60)
        b.metrics.set_gauges(running=0, waiting=0)
        source.set_targets([a.target("ns-a"), b.target("ns-a")])
        source.collect([KEY])  # b is scraped once, empty, as the pod starts
        # the next 2 s: half the load on each pod; b only fills up (nothing finished yet)
        a.serve(16, prompt=1, output=1, itl_s=0.01)
        b.metrics.set_gauges(running=16, waiting=0)
        clock.now += 2
        load = source.collect([KEY]).get(*KEY)
    assert load.arrival_rate_rpm == pytest.approx(16 * 60)

"""Fault: vLLM pods exporting NaN, +Inf, negative, absent and reset counters.

Through both metric sources (direct scrape, and a real Prometheus scraping the same
pods), nothing non-finite or negative reaches the optimizer's input, the snapshot or the
gRPC answer, and a value that is unknown because of it (an in-flight gauge, the mean
output length) leaves the VA unsolved, never sized as idle.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from dataclasses import fields

import grpc
import pytest

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.clock import ManualClock
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadReport, MetricsUnavailable, MetricsWarmingUp, ModelLoad
from adapter.collect.prometheus import PrometheusSettings, PrometheusSource
from adapter.collect.scrape import ScrapeSettings, ScrapeSource, ScrapeTarget
from adapter.emulator.metrics import MetricsServer
from adapter.engine import Engine, Snapshot
from adapter.scaler import ScalerServer, ScalerService, ScalerSettings, ServerSettings
from tests.kube_helpers import MODEL, SAMPLES
from tests.prometheus_server import PrometheusServer, poll

NS = "vllm-test"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COUNTERS = (
    "vllm:request_success_total",
    "vllm:request_prompt_tokens_sum",
    "vllm:request_prompt_tokens_count",
    "vllm:request_generation_tokens_sum",
    "vllm:request_generation_tokens_count",
    "vllm:inter_token_latency_seconds_sum",
    "vllm:inter_token_latency_seconds_count",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:request_queue_time_seconds_sum",
    "vllm:request_queue_time_seconds_count",
)
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
IN_FLIGHT = GAUGES[:2]
# what the optimizer sizes on: arrivals, the output length, the requests in flight
SIZED_ON = (
    "vllm:request_success_total",
    "vllm:request_generation_tokens_sum",
    "vllm:request_generation_tokens_count",
    *IN_FLIGHT,
)
ODD = ("NaN", "+Inf", "-Inf", "-5")


class Exposition:
    """A hand-written /metrics body: every vLLM series of one model, values settable."""

    def __init__(self, model: str = MODEL) -> None:
        self.model = model
        self.values: dict[str, str] = {name: "0" for name in (*COUNTERS, *GAUGES)}
        self.lock = threading.Lock()

    def set(self, **values: str) -> None:
        with self.lock:
            self.values.update({k.replace("__", ":"): v for k, v in values.items()})

    def drop(self, name: str) -> None:
        with self.lock:
            self.values.pop(name, None)

    def exposition(self) -> tuple[bytes, str]:
        with self.lock:
            items = sorted(self.values.items())
        lines = []
        for name, value in items:
            family = name.removesuffix("_sum").removesuffix("_count").removesuffix("_total")
            kind = "gauge" if name in GAUGES else "untyped"
            lines.append(f"# TYPE {name if kind == 'gauge' else family} {kind}")
            lines.append(f'{name}{{model_name="{self.model}",engine="0"}} {value}')
        return ("\n".join(lines) + "\n").encode(), CONTENT_TYPE

    def healthy(self, t: float) -> None:
        """Counters of 20 req/s, 512 output tokens, ITL 9 ms, after `t` seconds of traffic."""
        n = 20.0 * t
        self.set(
            vllm__request_success_total=str(n),
            vllm__request_prompt_tokens_sum=str(128 * n),
            vllm__request_prompt_tokens_count=str(n),
            vllm__request_generation_tokens_sum=str(512 * n),
            vllm__request_generation_tokens_count=str(n),
            vllm__inter_token_latency_seconds_sum=str(0.009 * 511 * n),
            vllm__inter_token_latency_seconds_count=str(511 * n),
            vllm__time_to_first_token_seconds_sum=str(0.05 * n),
            vllm__time_to_first_token_seconds_count=str(n),
            vllm__request_queue_time_seconds_sum="0",
            vllm__request_queue_time_seconds_count=str(n),
            vllm__num_requests_running="10",
            vllm__num_requests_waiting="0",
            vllm__kv_cache_usage_perc="0.3",
        )


def assert_sane(load: ModelLoad) -> None:
    for f in fields(load):
        value = getattr(load, f.name)
        if isinstance(value, float | int):
            assert math.isfinite(value) and value >= 0, (f.name, value, load)


def assert_sane_report(report: LoadReport) -> None:
    for load in report.loads.values():
        assert_sane(load)


def assert_sane_snapshot(snapshot: Snapshot) -> None:
    for decision in snapshot.decisions.values():
        if decision.load is not None:
            assert_sane(decision.load)
        for name in ("predicted_itl_ms", "predicted_wait_ms", "max_rpm_per_replica", "cost"):
            value = getattr(decision, name)
            assert value is None or math.isfinite(value), (name, value, decision)
        assert decision.desired_replicas is None or decision.desired_replicas >= 0


@pytest.fixture
def pod() -> Iterator[tuple[Exposition, MetricsServer]]:
    exposition = Exposition()
    with MetricsServer(exposition) as server:
        yield exposition, server


# --- direct scrape ---------------------------------------------------------------------


@pytest.mark.parametrize("odd", ODD)
@pytest.mark.parametrize("where", ["counter", "gauge"])
def test_scrape_source_never_passes_odd_values(
    pod: tuple[Exposition, MetricsServer], odd: str, where: str
) -> None:
    exposition, server = pod
    clock = ManualClock()
    source = ScrapeSource(
        ScrapeSettings(targets=(ScrapeTarget(url=server.url, namespace=NS),)),
        clock=clock.monotonic,
    )
    cluster = load_snapshot(SAMPLES)
    engine = Engine(cluster=lambda: cluster, metrics=source, clock=clock, interval_s=1.0)
    with source:
        exposition.healthy(10)
        with pytest.raises(MetricsWarmingUp):
            source.collect([(NS, MODEL)])  # first scrape
        for step in range(1, 5):
            clock.advance(1.0)
            exposition.healthy(10 + step)
            names = COUNTERS if where == "counter" else GAUGES
            # one series goes odd at each step, cycling through them
            odd_name = names[step % len(names)]
            exposition.set(**{odd_name.replace(":", "__"): odd})
            snapshot = engine.run_cycle()
            assert_sane_snapshot(snapshot)
            decision = snapshot.decisions[(NS, "vllm")]
            if odd_name in SIZED_ON:
                # arrivals, the output length or the requests in flight are unknown, and
                # a VA is never sized on unknown (as idle, or at one replica for a length
                # of 0): unsolved, answered UNAVAILABLE, naming the pod and the series
                assert not decision.solved
                assert f"{server.url} answered {odd_name}=" in decision.reason
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    asyncio.run(ask(snapshot, clock))
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            else:
                # a latency, the KV cache or prompt tokens: not sized on, left out
                assert decision.solved


def test_one_pods_odd_gauge_makes_the_load_unknown_not_smaller() -> None:
    """Two pods serve the model; one answers NaN for its running requests. Summing the
    other pod alone would read half the requests in flight: the load is unknown."""
    pods = [Exposition(), Exposition()]
    with MetricsServer(pods[0]) as good, MetricsServer(pods[1]) as bad:
        clock = ManualClock()
        targets = tuple(ScrapeTarget(url=s.url, namespace=NS) for s in (good, bad))
        source = ScrapeSource(ScrapeSettings(targets=targets), clock=clock.monotonic)
        with source:
            for pod in pods:
                pod.healthy(10)
            with pytest.raises(MetricsWarmingUp):
                source.collect([(NS, MODEL)])
            clock.advance(1.0)
            for pod in pods:
                pod.healthy(11)
            report = source.collect([(NS, MODEL)])
            assert (NS, MODEL) not in report.incomplete  # both pods sane: known
            clock.advance(1.0)
            pods[1].set(vllm__num_requests_running="NaN")
            report = source.collect([(NS, MODEL)])
            assert report.incomplete[NS, MODEL] == (
                f"{bad.url} answered vllm:num_requests_running=nan for model {MODEL}"
            )


def test_scrape_source_reset_and_absent_counters_stay_sane(
    pod: tuple[Exposition, MetricsServer],
) -> None:
    exposition, server = pod
    clock = ManualClock()
    source = ScrapeSource(
        ScrapeSettings(targets=(ScrapeTarget(url=server.url, namespace=NS),)),
        clock=clock.monotonic,
    )
    with source:
        exposition.healthy(100)
        with pytest.raises(MetricsWarmingUp):
            source.collect([(NS, MODEL)])
        clock.advance(1.0)
        exposition.healthy(1)  # the pod restarted: every counter went down
        report = source.collect([(NS, MODEL)])
        assert_sane_report(report)
        # since the restart: 20 completions and 10 running, in 1 s (the growth of the
        # in-flight gauges counts from 0: the old process's requests were lost)
        assert report.get(NS, MODEL).arrival_rate_rpm == pytest.approx(1800.0)
        clock.advance(1.0)
        for name in COUNTERS:  # the counters vanish (a pod that lost its model)
            exposition.drop(name)
        report = source.collect([(NS, MODEL)])
        assert_sane_report(report)
        load = report.get(NS, MODEL)
        assert load.arrival_rate_rpm == 0.0 and load.itl_ms is None


# --- a real Prometheus scraping the odd pod -------------------------------------------


@pytest.fixture
def scraped(
    prometheus_server: PrometheusServer, pod: tuple[Exposition, MetricsServer]
) -> Iterator[tuple[Exposition, PrometheusServer]]:
    exposition, server = pod
    address = f"127.0.0.1:{server.port}"
    prometheus_server.add_target(address, {"namespace": NS, "pod": "odd-0"})
    try:
        yield exposition, prometheus_server
    finally:
        prometheus_server.remove_target(address)


def test_prometheus_source_never_passes_odd_values_to_the_engine_or_grpc(
    scraped: tuple[Exposition, PrometheusServer],
) -> None:
    exposition, prometheus = scraped
    # counters that go NaN, +Inf, negative, down (reset) and absent, gauges NaN / -Inf
    exposition.set(
        vllm__request_success_total="NaN",
        vllm__request_generation_tokens_sum="+Inf",
        vllm__request_generation_tokens_count="-3",
        vllm__inter_token_latency_seconds_sum="NaN",
        vllm__inter_token_latency_seconds_count="0",
        vllm__num_requests_running="NaN",
        vllm__num_requests_waiting="-Inf",
        vllm__kv_cache_usage_perc="+Inf",
    )
    exposition.drop("vllm:time_to_first_token_seconds_sum")

    def scraped_twice() -> bool | None:
        counts = prometheus.query(
            f'count_over_time(vllm:num_requests_running{{namespace="{NS}"}}[5s])'
        )
        return True if counts and float(counts[0]["value"][1]) >= 3 else None

    poll(scraped_twice, timeout_s=20, what="three scrapes of the odd pod")
    exposition.set(vllm__request_prompt_tokens_sum="1", vllm__request_prompt_tokens_count="5")
    exposition.set(vllm__request_prompt_tokens_sum="0", vllm__request_prompt_tokens_count="0")

    settings = PrometheusSettings(url=prometheus.url, window="5s", namespace=NS)
    with PrometheusSource(settings) as source:

        def collected() -> LoadReport | None:
            try:
                return source.collect([(NS, MODEL)])
            except MetricsUnavailable:  # the session Prometheus may be too young
                return None

        report = poll(collected, timeout_s=20, what="Prometheus up for two rate windows")
        assert_sane_report(report)
        clock = ManualClock()
        cluster = load_snapshot(SAMPLES)
        engine = Engine(cluster=lambda: cluster, metrics=source, clock=clock)
        # every series the queries read is odd: no usable sample, so the model's load is
        # unknown, not zero, and the VA (its Deployment has a replica) is not sized
        unknown = engine.run_cycle()
        assert_sane_snapshot(unknown)
        assert not unknown.decisions[(NS, "vllm")].solved
        assert unknown.decisions[(NS, "vllm")].reason.startswith("metrics missing")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            asyncio.run(ask(unknown, clock))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        # one usable series (the completion counter back to a number): the pod answers,
        # but its in-flight gauges are NaN and -Inf. The arrival rate is completions plus
        # the growth of the requests in flight (the scrape source's definition), so odd
        # gauges make the arrivals themselves unknown: still not sized, still UNAVAILABLE
        exposition.set(vllm__request_success_total="7")

        def counter_back() -> bool | None:
            answer = prometheus.query(f'vllm:request_success_total{{namespace="{NS}"}}')
            return True if answer and float(answer[0]["value"][1]) == 7 else None

        poll(counter_back, timeout_s=20, what="Prometheus to scrape the usable counter")
        gauges_odd = engine.run_cycle()
        assert_sane_snapshot(gauges_odd)
        decision = gauges_odd.decisions[(NS, "vllm")]
        assert not decision.solved
        assert decision.reason.startswith("metrics missing"), decision.reason
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            asyncio.run(ask(gauges_odd, clock))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        # the gauges back to numbers: the pod answers, idle, and the odd series around it
        # still never pass
        exposition.set(vllm__num_requests_running="0", vllm__num_requests_waiting="0")

        def solved() -> Snapshot | None:
            snapshot = engine.run_cycle()
            return snapshot if snapshot.decisions[(NS, "vllm")].solved else None

        snapshot = poll(solved, timeout_s=20, what="Prometheus to scrape the usable gauges")
    assert_sane_snapshot(snapshot)
    decision = snapshot.decisions[(NS, "vllm")]
    (value,) = asyncio.run(ask(snapshot, clock)).metricValues
    assert math.isfinite(value.metricValueFloat)
    assert value.metricValue == value.metricValueFloat == decision.desired_replicas


async def ask(snapshot: Snapshot, clock: ManualClock) -> pb.GetMetricsResponse:
    """GetMetrics for the VA over a real gRPC server serving `snapshot`."""
    service = ScalerService(lambda: snapshot, clock, ScalerSettings(staleness_s=30))
    async with ScalerServer(service, ServerSettings(address="127.0.0.1:0")) as server:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        async with channel:
            stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
            ref = pb.ScaledObjectRef(name="vllm", namespace=NS)
            answer: pb.GetMetricsResponse = await stub.GetMetrics(
                pb.GetMetricsRequest(scaledObjectRef=ref), timeout=10
            )
            return answer

"""PrometheusSource against a REAL Prometheus scraping emulated vLLM endpoints.

Known traffic is served by a background driver (real time, bounded duration); the
collected load must match it within 5 %. Also: the query count per cycle does not
depend on the number of VariantAutoscalings, and failures raise MetricsUnavailable.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from adapter.assemble import AssemblySettings, build_system
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadKey, LoadReport, MetricsUnavailable
from adapter.collect.prometheus import PrometheusSettings, PrometheusSource
from adapter.emulator.metrics import ITL_NEW, ITL_OLD, MetricsServer, VllmMetrics
from tests.kube_helpers import MODEL, SAMPLES
from tests.prometheus_server import PrometheusServer, free_port, poll

pytestmark = pytest.mark.integration

WINDOW_S = 10
M1: LoadKey = ("wva-it-a", "m1")
M2: LoadKey = ("wva-it-b", "m2")
IDLE: LoadKey = ("wva-it-b", "m3")


@dataclass
class Pod:
    """An emulated vLLM pod and the traffic it finishes, per second of real time."""

    key: LoadKey
    metrics: VllmMetrics
    rate_per_s: float = 0.0
    prompt: int = 0
    output: int = 0
    itl_s: float = 0.0
    queue_s: float = 0.0
    ttft_s: float = 0.0
    server: MetricsServer = field(init=False)
    done: int = 0

    def catch_up(self, elapsed_s: float) -> None:
        """Record every request due by now: exactly floor(rate * elapsed) so far."""
        while self.done < int(self.rate_per_s * elapsed_s):
            self.metrics.record_request(
                prompt_tokens=self.prompt,
                output_tokens=self.output,
                queue_time_s=self.queue_s,
                ttft_s=self.ttft_s,
                inter_token_latencies_s=[self.itl_s] * (self.output - 1),
            )
            self.done += 1


class Driver(threading.Thread):
    """Finishes requests on the pods at their rates until stopped or `max_s` elapsed."""

    def __init__(self, pods: list[Pod], max_s: float) -> None:
        super().__init__(name="vllm-traffic", daemon=True)
        self.pods, self.max_s = pods, max_s
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.halt.is_set() and (elapsed := time.monotonic() - start) < self.max_s:
            for pod in self.pods:
                pod.catch_up(elapsed)
            self.halt.wait(0.01)  # pacing, not synchronisation


def pods() -> list[Pod]:
    return [
        Pod(M1, VllmMetrics("m1", itl_metrics=[ITL_NEW]), 5, 100, 40, 0.020, 0.05, 0.1),
        Pod(M1, VllmMetrics("m1", itl_metrics=[ITL_NEW, ITL_OLD]), 3, 200, 20, 0.030, 0.15, 0.3),
        Pod(M2, VllmMetrics("m2", itl_metrics=[ITL_OLD]), 8, 50, 10, 0.010, 0.0, 0.05),
        Pod(IDLE, VllmMetrics("m3")),
    ]


@pytest.fixture(scope="module")
def served(prometheus_server: PrometheusServer) -> Iterator[list[Pod]]:
    """Pods under steady traffic, scraped by Prometheus until a full window is stored."""
    fleet = pods()
    fleet[0].metrics.set_gauges(running=4, waiting=1, kv_cache_usage=0.5)
    fleet[1].metrics.set_gauges(running=2, waiting=0, kv_cache_usage=0.3)
    fleet[2].metrics.set_gauges(running=1, waiting=3, kv_cache_usage=0.9)
    driver = Driver(fleet, max_s=120)
    driver.start()
    addresses = []
    try:
        for i, pod in enumerate(fleet):
            pod.server = MetricsServer(pod.metrics).start()
            address = f"127.0.0.1:{pod.server.port}"
            addresses.append(address)
            prometheus_server.add_target(address, {"namespace": pod.key[0], "pod": f"vllm-{i}"})

        def window_filled() -> bool | None:
            counts = prometheus_server.query(
                f'count_over_time(vllm:request_success_total{{namespace=~"wva-it-.*"}}'
                f"[{WINDOW_S}s])"
            )
            full = [s for s in counts if float(s["value"][1]) >= WINDOW_S]
            return True if len(full) == len(fleet) else None

        poll(window_filled, timeout_s=60, what=f"{WINDOW_S}s of samples from {len(fleet)} pods")
        yield fleet
    finally:
        driver.halt.set()
        driver.join()
        for address in addresses:
            prometheus_server.remove_target(address)
        for pod in fleet:
            if hasattr(pod, "server"):
                pod.server.stop()


@pytest.fixture
def source(prometheus_server: PrometheusServer) -> Iterator[PrometheusSource]:
    settings = PrometheusSettings(url=prometheus_server.url, window=f"{WINDOW_S}s")
    with PrometheusSource(settings) as src:
        yield src


def expected_mean(pods: list[Pod], value: str, weight: str) -> float:
    """Traffic-weighted mean of a per-request (or per-token) value over pods."""

    def w(pod: Pod) -> float:
        return pod.rate_per_s * (pod.output - 1 if weight == "tokens" else 1)

    return sum(w(p) * float(getattr(p, value)) for p in pods) / sum(w(p) for p in pods)


def test_collected_load_matches_the_served_traffic(
    served: list[Pod], source: PrometheusSource
) -> None:
    report = source.collect([M1, M2, IDLE])

    for key in (M1, M2):
        group = [p for p in served if p.key == key]
        load = report.get(*key)
        rel = pytest.approx
        assert load.arrival_rate_rpm == rel(60 * sum(p.rate_per_s for p in group), rel=0.05)
        assert load.avg_prompt_tokens == rel(expected_mean(group, "prompt", "req"), rel=0.05)
        assert load.avg_output_tokens == rel(expected_mean(group, "output", "req"), rel=0.05)
        assert load.itl_ms == rel(1000 * expected_mean(group, "itl_s", "tokens"), rel=0.05)
        assert load.ttft_ms == rel(1000 * expected_mean(group, "ttft_s", "req"), rel=0.05)
    m1 = report.get(*M1)
    assert m1.queue_time_ms == pytest.approx(
        1000 * expected_mean(served[:2], "queue_s", "req"), 0.05
    )
    assert (m1.running, m1.waiting) == (6, 1)
    assert m1.kv_cache_usage == pytest.approx(0.4)
    assert report.get(*M2).kv_cache_usage == pytest.approx(0.9)


def test_idle_model_has_zero_rate_and_no_nan(served: list[Pod], source: PrometheusSource) -> None:
    report = source.collect([IDLE, ("wva-it-b", "unscraped")])
    # an idle pod is present with zeros; a model no pod serves is absent, not zero
    assert report.find("wva-it-b", "unscraped") is None
    idle = report.find(*IDLE)
    assert idle is not None
    # 0/0 means in PromQL are NaN: dropped, never passed on
    assert idle.arrival_rate_rpm == 0.0
    assert (idle.avg_prompt_tokens, idle.avg_output_tokens) == (0.0, 0.0)
    assert idle.itl_ms is None and idle.ttft_ms is None and idle.queue_time_ms is None
    assert idle.running == 0


def test_namespace_filter(served: list[Pod], prometheus_server: PrometheusServer) -> None:
    settings = PrometheusSettings(url=prometheus_server.url, window="10s", namespace="wva-it-b")
    with PrometheusSource(settings) as filtered:
        report = filtered.collect([M1, M2])
    assert set(report.loads) == {M2}


def test_query_count_does_not_grow_with_variants(
    served: list[Pod], source: PrometheusSource, prometheus_server: PrometheusServer
) -> None:
    """Counted by Prometheus itself: its own HTTP request counter for /api/v1/query."""

    def queries_served() -> float:
        return prometheus_server.self_metric(
            "prometheus_http_requests_total", {"handler": "/api/v1/query"}
        )

    def cycle(keys: list[LoadKey]) -> tuple[LoadReport, float]:
        before = queries_served()
        report = source.collect(keys)
        # the counter is bumped as the handler returns: wait until our queries are in
        after = poll(
            lambda: n if (n := queries_served()) >= before + report.queries else None,
            timeout_s=5,
            what="Prometheus to count the queries",
        )
        return report, after - before

    one, served_for_one = cycle([M1])
    many_keys = [M1, M2] + [(f"ns-{i}", f"model-{i}") for i in range(498)]
    many, served_for_many = cycle(many_keys)

    assert one.queries == len(source.queries) == 9
    assert served_for_one == one.queries
    assert served_for_many == many.queries == one.queries
    assert set(many.loads) == {M1, M2}


def test_prometheus_down_raises_never_zero_load() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        PrometheusSource(PrometheusSettings(url=url, timeout_s=2)) as down,
        pytest.raises(MetricsUnavailable, match="unreachable"),
    ):
        down.collect([M1])


# --- a stub Prometheus for error answers, odd samples, auth and TLS -------------------


class Stub:
    """Answers every query with `status` and `body`; records the Authorization headers."""

    def __init__(self, status: int, body: Any, *, tls: tuple[Path, Path] | None = None) -> None:
        self.status, self.body = status, body
        self.authorizations: list[str | None] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.authorizations.append(self.headers.get("Authorization"))
                data = stub.body if isinstance(stub.body, bytes) else json.dumps(stub.body).encode()
                self.send_response(stub.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Stub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def vector(*values: str) -> dict[str, Any]:
    result = [
        {"metric": {"namespace": "ns", "model_name": f"m{i}"}, "value": [0, v]}
        for i, v in enumerate(values)
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_error_answer_raises_with_prometheus_message() -> None:
    body = {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}
    with (
        Stub(503, body) as stub,
        PrometheusSource(PrometheusSettings(url=stub.url)) as src,
        pytest.raises(MetricsUnavailable, match=r"HTTP 503 \(unavailable: TSDB not ready\)"),
    ):
        src.collect([("ns", "m0")])


def test_non_json_answer_raises() -> None:
    with (
        Stub(200, b"<html>proxy login</html>") as stub,
        PrometheusSource(PrometheusSettings(url=stub.url)) as src,
        pytest.raises(MetricsUnavailable, match="proxy login"),
    ):
        src.collect([("ns", "m0")])


def test_nan_inf_and_negative_samples_are_absent() -> None:
    keys = [("ns", f"m{i}") for i in range(4)]
    with (
        Stub(200, vector("NaN", "+Inf", "-1", "2.5")) as stub,
        PrometheusSource(PrometheusSettings(url=stub.url)) as src,
    ):
        report = src.collect(keys)
    assert set(report.loads) == {("ns", "m3")}
    assert report.get("ns", "m3").arrival_rate_rpm == 150.0  # 2.5 req/s
    assert report.get("ns", "m3").itl_ms == 2500.0
    assert report.get("ns", "m0").itl_ms is None


def test_empty_answers_leave_the_model_absent_and_its_va_unsized(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prometheus up, the vLLM targets down: staleness markers empty every answer. That
    is unknown load, not zero load, while the Deployment has replicas."""
    snapshot = load_snapshot(SAMPLES)
    key = ("vllm-test", MODEL)
    with (
        Stub(200, vector()) as stub,
        PrometheusSource(PrometheusSettings(url=stub.url)) as src,
    ):
        report = src.collect([key])
    assert report.loads == {} and report.find(*key) is None
    with caplog.at_level(logging.WARNING):
        assembly = build_system(snapshot, report, AssemblySettings(min_num_replicas=0))
    (problem,) = assembly.problems
    assert (problem.namespace, problem.name) == ("vllm-test", "vllm")
    assert problem.reason.startswith(
        f"metrics missing: no vLLM series for model {MODEL} in namespace vllm-test while its"
        " Deployment has 1 replicas"
    )
    assert assembly.system["serverData"]["servers"] == []
    assert any("vllm-test/vllm" in r.getMessage() for r in caplog.records)


def test_bearer_token_is_read_at_each_request_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-secret\n")
    settings = PrometheusSettings(url="http://127.0.0.1:1", bearer_token_file=token_file)
    caplog.set_level(logging.DEBUG)
    with (
        Stub(200, vector("1")) as stub,
        PrometheusSource(settings.model_copy(update={"url": stub.url})) as src,
    ):
        src.collect([("ns", "m0")])
        token_file.write_text("second-secret")
        src.collect([("ns", "m0")])
        token_file.unlink()
        with pytest.raises(MetricsUnavailable, match="bearer token file") as err:
            src.collect([("ns", "m0")])
    assert stub.authorizations[0] == "Bearer first-secret"
    assert stub.authorizations[-1] == "Bearer second-secret"
    assert "secret" not in str(err.value) and "secret" not in caplog.text


def test_https_with_ca_file(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    with Stub(200, vector("1"), tls=(cert, key)) as stub:
        with PrometheusSource(PrometheusSettings(url=stub.url, ca_file=cert)) as trusted:
            assert trusted.collect([("ns", "m0")]).get("ns", "m0").arrival_rate_rpm == 60.0
        with (
            PrometheusSource(PrometheusSettings(url=stub.url)) as untrusted,
            pytest.raises(MetricsUnavailable, match="SSLError"),
        ):
            untrusted.collect([("ns", "m0")])


@pytest.mark.parametrize(
    "bad",
    [
        {"url": "prometheus:9090"},
        {"url": "http://p:9090", "window": "1 minute"},
        {"url": "https://p", "ca_file": "/ca.pem", "insecure_skip_verify": True},
        {"url": "http://p:9090", "timeout_s": 0},
    ],
)
def test_settings_reject_invalid_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PrometheusSettings(**bad)

"""PrometheusSource against a REAL Prometheus scraping emulated vLLM endpoints.

Known traffic is served by a background driver (real time, bounded duration); the
collected load must match it within 5 %. Prometheus 2.42 asks every target for
OpenMetrics first (it has no `scrape_protocols` setting yet), and the emulated pods
answer it as vLLM does, so it stores their samples as `vllm_...` only; one pod answers
the classic format (a prometheus_client before 0.23), stored as `vllm:...`, beside an
escaped pod of the same model. The pods run vLLM 0.10, 0.11 and 0.34 (the three ITL
naming schemes). Also: the query count per cycle does not depend on the number of
VariantAutoscalings, failures raise MetricsUnavailable, and HTTPS, the bearer token and
warnings through an auth-checking proxy in front of it.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3

from adapter.assemble import AssemblySettings, build_system
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadKey, LoadReport, MetricsUnavailable
from adapter.collect.prometheus import (
    AnswerError,
    PrometheusSettings,
    PrometheusSource,
    Query,
    build_queries,
    vector_samples,
)
from adapter.emulator.metrics import MetricsServer, VllmMetrics
from tests.kube_helpers import MODEL, SAMPLES
from tests.prometheus_server import PrometheusServer, free_port, poll
from tests.test_scaler_support import Pki, make_pki

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
    classic: bool = False  # answers the classic text format whatever the Accept header
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


class ClassicOnly:
    """A pod that answers the classic text format to every scrape, as vLLM on a
    prometheus_client before 0.23 did in effect: Prometheus stores its colon names."""

    def __init__(self, metrics: VllmMetrics) -> None:
        self.metrics = metrics

    def exposition(self) -> tuple[bytes, str]:
        return self.metrics.exposition()


def pods() -> list[Pod]:
    return [
        Pod(M1, VllmMetrics("m1", release="0.34"), 5, 100, 40, 0.020, 0.05, 0.1),
        Pod(M1, VllmMetrics("m1", release="0.11"), 3, 200, 20, 0.030, 0.15, 0.3),
        Pod(M2, VllmMetrics("m2", release="0.10"), 8, 50, 10, 0.010, 0.0, 0.05),
        Pod(M2, VllmMetrics("m2", release="0.34"), 4, 80, 16, 0.004, 0.1, 0.2, classic=True),
        Pod(IDLE, VllmMetrics("m3")),
    ]


@pytest.fixture(scope="module")
def served(prometheus_server: PrometheusServer) -> Iterator[list[Pod]]:
    """Pods under steady traffic, scraped by Prometheus until a full window is stored."""
    fleet = pods()
    fleet[0].metrics.set_gauges(running=4, waiting=1, kv_cache_usage=0.5)
    fleet[1].metrics.set_gauges(running=2, waiting=0, kv_cache_usage=0.3)
    fleet[2].metrics.set_gauges(running=1, waiting=3, kv_cache_usage=0.9)
    fleet[3].metrics.set_gauges(running=2, waiting=0, kv_cache_usage=0.9)
    driver = Driver(fleet, max_s=120)
    driver.start()
    addresses = []
    try:
        for i, pod in enumerate(fleet):
            source = ClassicOnly(pod.metrics) if pod.classic else pod.metrics
            pod.server = MetricsServer(source).start()
            address = f"127.0.0.1:{pod.server.port}"
            addresses.append(address)
            prometheus_server.add_target(address, {"namespace": pod.key[0], "pod": f"vllm-{i}"})

        def window_filled() -> bool | None:
            stored = f'{{namespace=~"wva-it-.*"}}[{WINDOW_S}s]'
            full = prometheus_server.query(
                f"min by (pod) (count_over_time(vllm:request_success_total{stored})"
                f" or count_over_time(vllm_request_success_total{stored})) >= {WINDOW_S}"
            )
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
        decoding = sum(p.rate_per_s * (p.output - 1) * float(p.itl_s) for p in group)
        assert load.decoding == rel(decoding, rel=0.05)
        assert load.ttft_ms == rel(1000 * expected_mean(group, "ttft_s", "req"), rel=0.05)
        assert load.queue_time_ms == rel(1000 * expected_mean(group, "queue_s", "req"), rel=0.05)
    m1 = report.get(*M1)
    assert m1.queue_time_ms == pytest.approx(
        1000 * expected_mean(served[:2], "queue_s", "req"), 0.05
    )
    assert (m1.running, m1.waiting) == (6, 1)
    assert m1.kv_cache_usage == pytest.approx(0.4)
    m2 = report.get(*M2)  # one pod stored as vllm_..., the other as vllm:...
    assert (m2.running, m2.waiting) == (3, 3)
    assert m2.kv_cache_usage == pytest.approx(0.9)


def test_prometheus_stored_the_names_each_pod_was_scraped_with(
    served: list[Pod], prometheus_server: PrometheusServer
) -> None:
    """What makes the alternatives in every query necessary: the pods that negotiate
    (vLLM on prometheus_client >= 0.23) left no `vllm:` series at all."""

    def pods_with(prefix: str) -> set[str]:
        stored = prometheus_server.query(
            f'count by (pod) ({{__name__=~"{prefix}.+", namespace=~"wva-it-.*"}})'
        )
        return {s["metric"]["pod"] for s in stored}

    classic = {f"vllm-{i}" for i, pod in enumerate(served) if pod.classic}
    assert classic == {"vllm-3"}
    assert pods_with("vllm:") == classic
    assert pods_with("vllm_") == {f"vllm-{i}" for i in range(len(served))} - classic


def test_idle_model_has_zero_rate_and_no_nan(served: list[Pod], source: PrometheusSource) -> None:
    report = source.collect([IDLE, ("wva-it-b", "unscraped")])
    # an idle pod is present with zeros; a model no pod serves is absent, not zero
    assert report.find("wva-it-b", "unscraped") is None
    # what the namespace's pods serve instead, unwanted keys included (llm-d#2310)
    assert {"m2", "m3"} <= report.served["wva-it-b"]
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

    assert one.queries == len(source.queries) == 10
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


# --- loopback servers in front of (or instead of) Prometheus ----------------------------

Answer = Callable[[str, str, Message, bytes], tuple[int, bytes]]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with its query string
    authorization: str | None


class Loopback:
    """An HTTP(S) server on 127.0.0.1 answering every request with `answer(method, path,
    headers, body)`; records the requests it got."""

    def __init__(self, answer: Answer, *, tls: tuple[Path, Path] | None = None) -> None:
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.seen.append(Seen(self.command, self.path, self.headers["Authorization"]))
                status, data = answer(self.command, self.path, self.headers, body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def queries(self) -> list[str]:
        return [parse_qs(urlsplit(s.path).query)["query"][0] for s in self.seen]


def encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


class Stub(Loopback):
    """A stand-in Prometheus: answers a query with `answer(expr)` -> (status, JSON-able or
    bytes), or every query with `status` and `body`."""

    def __init__(
        self,
        status: int = 200,
        body: Any = None,
        *,
        answer: Callable[[str], tuple[int, Any]] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        def reply(method: str, path: str, headers: Message, data: bytes) -> tuple[int, bytes]:
            form = parse_qs(urlsplit(path).query) | parse_qs(data.decode())
            code, out = answer(form["query"][0]) if answer is not None else (status, body)
            return code, encode(out)

        super().__init__(reply, tls=tls)


class AuthProxy(Loopback):
    """An HTTPS reverse proxy in front of a real Prometheus, as a kube-rbac-proxy or an
    ingress would be: it answers 401 unless the bearer token is `token`, forwards the
    request otherwise, and adds `warnings` to the answers (as a querier whose stores only
    partly answered does)."""

    def __init__(
        self, upstream: str, token: str, tls: tuple[Path, Path], warnings: tuple[str, ...] = ()
    ) -> None:
        session = requests.Session()
        self.session = session

        def forward(method: str, path: str, headers: Message, data: bytes) -> tuple[int, bytes]:
            if headers["Authorization"] != f"Bearer {token}":
                return 401, b"Unauthorized\n"
            response = session.request(
                method,
                upstream + path,
                data=data or None,
                headers={"Content-Type": headers["Content-Type"] or "text/plain"},
                timeout=10,
            )
            if not warnings:
                return response.status_code, response.content
            return response.status_code, encode(response.json() | {"warnings": list(warnings)})

        super().__init__(forward, tls=tls)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.session.close()


def vector(*values: str) -> dict[str, Any]:
    result = [
        {"metric": {"namespace": "ns", "model_name": f"m{i}"}, "value": [0, v]}
        for i, v in enumerate(values)
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_error_answer_raises_with_prometheus_message() -> None:
    body = {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}
    with (
        Stub(503, body) as stub,
        PrometheusSource(PrometheusSettings(url=stub.url)) as src,
        pytest.raises(MetricsUnavailable, match=r"HTTP 503 \(unavailable: TSDB not ready\)"),
    ):
        src.collect([("ns", "m0")])
    # no retries: the next cycle is the retry, on time
    assert len(stub.seen) == 1


def test_real_prometheus_error_answer_names_the_query(
    prometheus_server: PrometheusServer,
) -> None:
    """A query Prometheus rejects: its HTTP 400, errorType and message, and the query."""
    with PrometheusSource(PrometheusSettings(url=prometheus_server.url)) as src:
        broken = "sum by (namespace, model_name) (vllm:num_requests_running"
        src.queries = (*src.queries[:1], Query("running", broken, 1.0))
        with pytest.raises(MetricsUnavailable) as err:
            src.collect([M1])
    message = str(err.value)
    assert message.startswith(f"Prometheus at {prometheus_server.url} answered HTTP 400")
    assert "(bad_data: invalid parameter" in message
    assert message.endswith(f" to {broken}")


def test_error_answer_with_http_200_raises() -> None:
    """A proxy passing on an error with status 200: still an error, Prometheus' words."""
    body = {"status": "error", "errorType": "timeout", "error": "query timed out"}
    with (
        Stub(200, body) as stub,
        PrometheusSource(PrometheusSettings(url=stub.url)) as src,
        pytest.raises(MetricsUnavailable, match=r"HTTP 200 \(timeout: query timed out\) to clamp"),
    ):
        src.collect([("ns", "m0")])


def test_non_json_answer_raises() -> None:
    with (
        Stub(200, b"<html>proxy login</html>") as stub,
        PrometheusSource(PrometheusSettings(url=stub.url)) as src,
        pytest.raises(MetricsUnavailable, match=r"HTTP 200 \(<html>proxy login</html>\) to "),
    ):
        src.collect([("ns", "m0")])


@pytest.mark.parametrize(
    ("result", "says"),
    [
        ([{"metric": {"model_name": "m0"}, "values": [[0, "1"]]}], "a matrix, not a vector"),
        ([0, "1"], "a scalar or string, not a vector"),
        ([{"metric": {"model_name": "m0"}, "value": [0]}], "a malformed sample"),
        ({"m0": 1}, "a result that is not a list"),
    ],
)
def test_an_answer_that_is_not_a_vector_raises(result: Any, says: str) -> None:
    with pytest.raises(AnswerError, match=says):
        list(vector_samples(result))
    body = {"status": "success", "data": {"resultType": "?", "result": result}}
    with (
        Stub(200, body) as stub,
        PrometheusSource(PrometheusSettings(url=stub.url)) as src,
        pytest.raises(MetricsUnavailable, match=f"answered {says}"),
    ):
        src.collect([("ns", "m0")])


def test_nan_inf_and_negative_samples_are_absent() -> None:
    """Every model has an arrival rate; a NaN, infinite or negative sample of another
    quantity leaves that quantity unknown (None, or 0 for the token means), never NaN."""
    keys = [("ns", f"m{i}") for i in range(4)]
    arrivals = build_queries("1m")[0].expr

    def answer(expr: str) -> tuple[int, Any]:
        if expr == arrivals:
            return 200, vector("1", "1", "1", "1")
        return 200, vector("NaN", "+Inf", "-1", "2.5")

    with (
        Stub(answer=answer) as stub,
        PrometheusSource(PrometheusSettings(url=stub.url)) as src,
    ):
        report = src.collect(keys)
    assert set(report.loads) == set(keys)
    for key in keys[:3]:
        load = report.loads[key]
        assert load.arrival_rate_rpm == 60.0
        assert (load.avg_prompt_tokens, load.avg_output_tokens) == (0.0, 0.0)
        unknown = (load.itl_ms, load.ttft_ms, load.queue_time_ms, load.running, load.waiting)
        assert unknown == (None,) * 5 and load.kv_cache_usage is None
    m3 = report.loads[("ns", "m3")]
    assert (m3.arrival_rate_rpm, m3.avg_output_tokens, m3.itl_ms) == (60.0, 2.5, 2500.0)
    assert (m3.running, m3.kv_cache_usage) == (2.5, 2.5)
    # with the odd samples only, the models are absent: unknown load, not zero load
    with (
        Stub(200, vector("NaN", "+Inf", "-1")) as stub,
        PrometheusSource(PrometheusSettings(url=stub.url)) as src,
    ):
        assert src.collect(keys).loads == {}


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
    assert stub.seen[0].authorization == "Bearer first-secret"
    assert stub.seen[-1].authorization == "Bearer second-secret"
    assert len(stub.seen) == 2 * len(src.queries)  # nothing sent without a token
    assert "secret" not in str(err.value) and "secret" not in caplog.text


def test_https_bearer_token_and_warnings_through_a_proxy_to_real_prometheus(
    served: list[Pod],
    prometheus_server: PrometheusServer,
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """HTTPS with a certificate from our own CA, a bearer token the proxy checks, and
    Prometheus' answers with a warning added: the real load is read, each warning logged
    with its query, the token never."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    warning = "partial response: store 10.0.0.7:10901 unavailable"
    tls = (pki.server_cert, pki.server_key)
    caplog.set_level(logging.DEBUG)
    with AuthProxy(prometheus_server.url, "s3cret-token", tls, (warning,)) as proxy:
        settings = PrometheusSettings(
            url=proxy.url, window=f"{WINDOW_S}s", ca_file=pki.ca, bearer_token_file=token_file
        )
        with PrometheusSource(settings) as src:
            report = src.collect([M1, M2])
        assert report.get(*M2).arrival_rate_rpm == pytest.approx(60 * 12, rel=0.05)
        assert (report.get(*M1).running, report.get(*M2).waiting) == (6, 3)
        assert proxy.queries() == [q.expr for q in src.queries]
        assert {s.method for s in proxy.seen} == {"GET"}
        logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert logged == [f"Prometheus warning for {q.expr}: {warning}" for q in src.queries]
        assert "s3cret" not in caplog.text

        token_file.write_text("an-old-token")
        with (
            PrometheusSource(settings) as src,
            pytest.raises(MetricsUnavailable, match=r"answered HTTP 401 \(Unauthorized\) to "),
        ):
            src.collect([M1])
        # the system's CA bundle does not know ours
        with (
            PrometheusSource(settings.model_copy(update={"ca_file": None})) as src,
            pytest.raises(MetricsUnavailable, match="unreachable: SSLError"),
        ):
            src.collect([M1])
        token_file.write_text("s3cret-token")
        insecure = settings.model_copy(update={"ca_file": None, "insecure_skip_verify": True})
        with (
            PrometheusSource(insecure) as src,
            pytest.warns(urllib3.exceptions.InsecureRequestWarning),
        ):
            assert src.collect([M2]).get(*M2).waiting == 3


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

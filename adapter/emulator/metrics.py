"""The vLLM metric families of one served model, as a chosen vLLM release exports them.

`VllmMetrics` is the state an emulated vLLM engine updates, at the moments vLLM does
(sources: vllm-project/vllm `vllm/v1/metrics/stats.py` and
`vllm/v1/engine/output_processor.py` at 0015f3f6a0e6ccca781c3f0b127101153c12ebbe, and
`vllm/v1/metrics/loggers.py` at 005a810bc40faa25b8870fbc8559c3462581eee3):
- at a request's first token: its prompt tokens (`vllm:prompt_tokens_total`) and its
  time to first token;
- at every later token: the inter-token latency, the gap since its previous token;
- at its finish: `vllm:request_success_total` (by `finished_reason`), the end-to-end and
  queue times, the per-request token histograms;
- a request its client aborts is never counted as finished: it only leaves the gauges
  (the output processor drops its state and records nothing).
No engine counter counts arrivals.

`MetricsServer` serves an exposition on /metrics. The answer is negotiated as
prometheus_client's own HTTP handlers negotiate it (`choose_encoder` on the Accept
header, with the installed prometheus_client): OpenMetrics when asked for, so a
Prometheus scraping the emulator stores what it stores from real vLLM, `vllm_` sample
names included with prometheus_client >= 0.23 (see adapter/vllm_metrics.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from adapter import vllm_metrics as vm
from adapter.vllm_metrics import DEFAULT_RELEASE, Family, VllmRelease

# Bucket layouts in the spirit of vLLM's (1-2-5 for token counts, latency ladders); the
# TTFT and inter-token latency histograms take vLLM's own bounds from the vocabulary.
_TOKEN_BUCKETS: Final = tuple(float(m * 10**e) for e in range(6) for m in (1, 2, 5))  # 1 .. 500000
_REQUEST_LATENCY_BUCKETS: Final = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

_LABELS: Final = ("model_name", "engine")


class _WithoutCreated:
    """Registry view that drops the `_created` series prometheus_client adds.

    vLLM's families are what a scraper should see; the extra timestamp gauges would
    only add noise to every scrape and every Prometheus under test.
    """

    def __init__(self, inner: CollectorRegistry) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        for family in self._inner.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class VllmMetrics:
    """The metrics of one vLLM engine serving `model_name`, in a private registry.

    `release` picks the family names that release exports (the per-token latency
    histogram is `vllm:time_per_output_token_seconds` in 0.10, both names in 0.11,
    `vllm:inter_token_latency_seconds` in 0.34). Thread-safe: prometheus_client metrics
    are.
    """

    def __init__(
        self,
        model_name: str,
        *,
        engine: str = "0",
        release: VllmRelease = DEFAULT_RELEASE,
    ) -> None:
        self.model_name = model_name
        self.engine = engine
        self.release = vm.release(release)
        self._registry = CollectorRegistry()
        self.registry = CollectorRegistry()
        self.registry.register(_WithoutCreated(self._registry))
        r = self._registry
        labels = (model_name, engine)

        def counter(family: Family) -> Counter:
            # prometheus_client appends `_total` to the samples itself
            return Counter(family.name, family.documentation, _LABELS, registry=r)

        def histogram(family: Family, buckets: Sequence[float]) -> Histogram:
            return Histogram(
                family.name, family.documentation, _LABELS, registry=r, buckets=buckets
            ).labels(*labels)

        def gauge(family: Family) -> Gauge:
            return Gauge(family.name, family.documentation, _LABELS, registry=r).labels(*labels)

        self._success = Counter(
            vm.REQUEST_SUCCESS.name,
            vm.REQUEST_SUCCESS.documentation,
            [*_LABELS, "finished_reason"],
            registry=r,
        )
        self._prompt_tokens_total = counter(vm.PROMPT_TOKENS).labels(*labels)
        self._generation_tokens_total = counter(vm.GENERATION_TOKENS).labels(*labels)
        self._prompt_tokens = histogram(vm.REQUEST_PROMPT_TOKENS, _TOKEN_BUCKETS)
        self._generation_tokens = histogram(vm.REQUEST_GENERATION_TOKENS, _TOKEN_BUCKETS)
        self._ttft = histogram(vm.TIME_TO_FIRST_TOKEN, vm.TTFT_BUCKETS_S)
        self._itl = [histogram(f, vm.ITL_BUCKETS_S) for f in vm.itl_families(self.release)]
        self._queue_time = histogram(vm.REQUEST_QUEUE_TIME, _REQUEST_LATENCY_BUCKETS)
        self._e2e = histogram(vm.E2E_REQUEST_LATENCY, _REQUEST_LATENCY_BUCKETS)
        self._running = gauge(vm.NUM_REQUESTS_RUNNING)
        self._waiting = gauge(vm.NUM_REQUESTS_WAITING)
        self._kv_cache = gauge(vm.KV_CACHE_USAGE)
        # vLLM creates its series at start-up: a scraper sees zeros, not absent series.
        for reason in vm.FINISHED_REASONS:
            self._success.labels(*labels, reason)

    def record_first_token(self, *, prompt_tokens: int, ttft_s: float) -> None:
        """The step that prefilled a request gave it its first token.

        vLLM counts the prompt's tokens here, not at arrival nor at finish, and observes
        the time to first token (from arrival, queueing included).
        """
        if prompt_tokens < 0:
            raise ValueError("token counts must be >= 0")
        self._prompt_tokens_total.inc(prompt_tokens)
        self._generation_tokens_total.inc()
        self._ttft.observe(ttft_s)

    def record_tokens(self, *, gap_s: float, tokens: int = 1) -> None:
        """`tokens` later tokens (one each for as many requests), each `gap_s` after the
        previous token of its request: vLLM observes the inter-token latency per token."""
        if tokens < 0:
            raise ValueError("token counts must be >= 0")
        if tokens == 0:
            return
        self._generation_tokens_total.inc(tokens)
        for histogram in self._itl:
            for _ in range(tokens):
                histogram.observe(gap_s)

    def record_finish(
        self,
        *,
        prompt_tokens: int,
        output_tokens: int,
        queue_time_s: float,
        e2e_s: float,
        finished_reason: str = "length",
    ) -> None:
        """A request finished (its tokens were recorded as they came): what vLLM records
        at the finish only."""
        if prompt_tokens < 0 or output_tokens < 0:
            raise ValueError("token counts must be >= 0")
        self._success.labels(self.model_name, self.engine, finished_reason).inc()
        self._prompt_tokens.observe(prompt_tokens)
        self._generation_tokens.observe(output_tokens)
        self._queue_time.observe(queue_time_s)
        self._e2e.observe(e2e_s)

    def record_request(
        self,
        *,
        prompt_tokens: int,
        output_tokens: int,
        queue_time_s: float,
        ttft_s: float,
        inter_token_latencies_s: Sequence[float],
        e2e_s: float | None = None,
        finished_reason: str = "length",
    ) -> None:
        """A whole request at once, for drivers that model finished requests only.

        The totals equal what the per-token calls would have left once it finished.
        `e2e_s` defaults to TTFT plus the sum of the inter-token latencies.
        """
        if prompt_tokens < 0 or output_tokens < 0:
            raise ValueError("token counts must be >= 0")
        self._prompt_tokens_total.inc(prompt_tokens)
        self._generation_tokens_total.inc(output_tokens)
        self._ttft.observe(ttft_s)
        for latency in inter_token_latencies_s:
            for histogram in self._itl:
                histogram.observe(latency)
        self.record_finish(
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            queue_time_s=queue_time_s,
            e2e_s=e2e_s if e2e_s is not None else ttft_s + sum(inter_token_latencies_s),
            finished_reason=finished_reason,
        )

    def set_gauges(
        self,
        *,
        running: float | None = None,
        waiting: float | None = None,
        kv_cache_usage: float | None = None,
    ) -> None:
        """Set the scheduler gauges; None leaves a gauge unchanged. KV usage is a 0..1 ratio."""
        if running is not None:
            self._running.set(running)
        if waiting is not None:
            self._waiting.set(waiting)
        if kv_cache_usage is not None:
            self._kv_cache.set(kv_cache_usage)

    def negotiate(self, accept: str) -> tuple[bytes, str]:
        """The /metrics body and Content-Type for a scrape sending this Accept header.

        prometheus_client's own choice (what vLLM's /metrics answers): OpenMetrics when
        the header asks for it, with its sample-name escaping; else the classic text
        format 0.0.4, colons kept.
        """
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def exposition(self) -> tuple[bytes, str]:
        """The answer to a scrape that sends no Accept header: classic text, colons kept."""
        return self.negotiate("")


class Exposable(Protocol):
    def exposition(self) -> tuple[bytes, str]: ...


@runtime_checkable
class Negotiating(Protocol):
    """A source whose answer depends on the scrape's Accept header."""

    def negotiate(self, accept: str) -> tuple[bytes, str]: ...


class MetricsServer:
    """A threaded HTTP server answering GET /metrics on 127.0.0.1 from `source`.

    A `Negotiating` source (`VllmMetrics`) is given each scrape's Accept header, so a
    Prometheus gets OpenMetrics, as from real vLLM; any other source answers alike to
    every scrape. `source` may be replaced while serving (e.g. a fresh `VllmMetrics` to
    emulate a restarted pod whose counters start again from zero).
    """

    def __init__(self, source: Exposable, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.source = source
        self._address = (host, port)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The /metrics URL."""
        return f"http://{self._address[0]}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                source = server.source
                if isinstance(source, Negotiating):
                    body, content_type = source.negotiate(self.headers.get("Accept", ""))
                else:
                    body, content_type = source.exposition()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a scrape per second per target would flood test output

        httpd = ThreadingHTTPServer(self._address, Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop
            name=f"metrics-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; idempotent."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

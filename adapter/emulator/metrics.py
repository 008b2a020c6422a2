"""The vLLM metric families, with vLLM's real names and types, for one served model.

`VllmMetrics` is the state an emulated vLLM server updates (finished requests, gauges);
`MetricsServer` serves its exposition on /metrics. Both are kept free of any serving
logic so a full OpenAI-compatible emulator can build on them.

The exposition is always the classic text format 0.0.4: prometheus_client >= 0.23
rewrites `vllm:` names to `vllm_` when a scraper negotiates OpenMetrics, and real
Prometheus does negotiate it, so content negotiation is deliberately not offered.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final, Protocol

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

# vLLM renamed the per-token latency histogram; a server may export either or both.
ITL_NEW: Final = "vllm:inter_token_latency_seconds"
ITL_OLD: Final = "vllm:time_per_output_token_seconds"
ITL_METRIC_NAMES: Final = (ITL_NEW, ITL_OLD)

# Bucket layouts in the spirit of vLLM's (1-2-5 for token counts, latency ladders).
_TOKEN_BUCKETS: Final = tuple(float(m * 10**e) for e in range(6) for m in (1, 2, 5))  # 1 .. 500000
_TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_ITL_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
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

    `itl_metrics` chooses which per-token latency histogram(s) are exported: the new
    `vllm:inter_token_latency_seconds`, the old `vllm:time_per_output_token_seconds`,
    or both (as vLLM did during the rename). Thread-safe: prometheus_client metrics are.
    """

    def __init__(
        self,
        model_name: str,
        *,
        engine: str = "0",
        itl_metrics: Collection[str] = ITL_METRIC_NAMES,
    ) -> None:
        unknown = set(itl_metrics) - set(ITL_METRIC_NAMES)
        if unknown or not itl_metrics:
            raise ValueError(f"itl_metrics must be a non-empty subset of {ITL_METRIC_NAMES}")
        self.model_name = model_name
        self.engine = engine
        self._registry = CollectorRegistry()
        self.registry = CollectorRegistry()
        self.registry.register(_WithoutCreated(self._registry))
        r = self._registry
        labels = (model_name, engine)

        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*_LABELS, "finished_reason"],
            registry=r,
        )
        self._prompt_tokens_total = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", _LABELS, registry=r
        ).labels(*labels)
        self._generation_tokens_total = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", _LABELS, registry=r
        ).labels(*labels)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, _LABELS, registry=r, buckets=buckets).labels(*labels)

        self._prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens per request.", _TOKEN_BUCKETS
        )
        self._generation_tokens = histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens per request.",
            _TOKEN_BUCKETS,
        )
        self._ttft = histogram(
            "vllm:time_to_first_token_seconds", "Time to first token in seconds.", _TTFT_BUCKETS
        )
        self._itl = [
            histogram(name, "Inter-token latency in seconds.", _ITL_BUCKETS)
            for name in ITL_METRIC_NAMES
            if name in itl_metrics
        ]
        self._queue_time = histogram(
            "vllm:request_queue_time_seconds",
            "Time spent waiting in the queue, in seconds.",
            _REQUEST_LATENCY_BUCKETS,
        )
        self._e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency in seconds.",
            _REQUEST_LATENCY_BUCKETS,
        )

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, _LABELS, registry=r).labels(*labels)

        self._running = gauge("vllm:num_requests_running", "Number of requests in model execution.")
        self._waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting.")
        self._kv_cache = gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
        )
        # vLLM creates its series at start-up: a scraper sees zeros, not absent series.
        self._success.labels(*labels, "length")

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
        """Record one finished request as vLLM does when it completes.

        `ttft_s` counts from arrival (queueing included), as in vLLM. `e2e_s` defaults to
        TTFT plus the sum of the inter-token latencies.
        """
        if prompt_tokens < 0 or output_tokens < 0:
            raise ValueError("token counts must be >= 0")
        labels = (self.model_name, self.engine, finished_reason)
        self._success.labels(*labels).inc()
        self._prompt_tokens_total.inc(prompt_tokens)
        self._generation_tokens_total.inc(output_tokens)
        self._prompt_tokens.observe(prompt_tokens)
        self._generation_tokens.observe(output_tokens)
        self._queue_time.observe(queue_time_s)
        self._ttft.observe(ttft_s)
        for latency in inter_token_latencies_s:
            for histogram in self._itl:
                histogram.observe(latency)
        self._e2e.observe(e2e_s if e2e_s is not None else ttft_s + sum(inter_token_latencies_s))

    def record_abort(self) -> None:
        """A request its client abandoned: counted as finished with reason `abort`.

        Only the counter moves (latency and token histograms describe completed work),
        so finished requests still equal arrivals minus what is in the engine.
        """
        self._success.labels(self.model_name, self.engine, "abort").inc()

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

    def exposition(self) -> tuple[bytes, str]:
        """The /metrics body and its Content-Type, classic text format 0.0.4, colons kept."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


class Exposable(Protocol):
    def exposition(self) -> tuple[bytes, str]: ...


class MetricsServer:
    """A threaded HTTP server answering GET /metrics on 127.0.0.1 from `source`.

    `source` may be replaced while serving (e.g. a fresh `VllmMetrics` to emulate a
    restarted pod whose counters start again from zero).
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
                body, content_type = server.source.exposition()
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

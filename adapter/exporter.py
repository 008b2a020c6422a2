"""Prometheus metrics over the latest snapshot, served on their own loopback-testable port.

Every family is regenerated from the snapshot on each scrape (a custom Collector, never
module-level gauges), so the series of a deleted VariantAutoscaling disappear with it,
and a VA the optimizer could not solve exports no desired replicas at all (never 0).

Per VariantAutoscaling (labels `variant_name`, `namespace`, `accelerator_type`, as the
reference names them; `accelerator_type` is the chosen accelerator, or the current one
for an unsolved VA, or `unresolved` when unknown):

- solved only: `wva_desired_replicas`, `wva_current_replicas`, `wva_desired_ratio`
  (desired / current; when current is 0 the ratio is the desired count itself, as the
  reference does, so 0 -> N reads as "N times"), `wva_predicted_itl_seconds`,
  `wva_predicted_wait_seconds`, `wva_max_request_rate_per_replica` (req/s; absent
  without load), `wva_desired_cost` (accelerator unit cost x replicas);
- whenever the cycle read them: observed load `wva_arrival_rate_requests_per_second`,
  `wva_avg_output_tokens`, `wva_observed_itl_seconds`, `wva_observed_wait_seconds`, and
  SLO targets `wva_slo_itl_seconds`, `wva_slo_ttft_seconds` (the service class'
  `slo-tpot` / `slo-ttft`, in seconds);
- with profile learning on: `wva_declared_alpha_seconds`, `wva_declared_beta_seconds`,
  `wva_learned_profile_in_use` (1 when the learned profile sized the cycle), and once
  the pods gave an observation `wva_learned_alpha_seconds`, `wva_learned_beta_seconds`,
  `wva_learned_profile_observations`, `wva_learned_profile_trusted`;
- with look-ahead on: `wva_sized_arrival_rate_requests_per_second` (the forecast a
  start-up ahead it was sized for) and `wva_startup_seconds` (the start-up planned with);
- solved: `wva_slo_batch_requests` (the batch whose decode step is the ITL SLO: what
  vLLM's `--max-num-seqs` should not exceed for the SLO to hold under a backlog);
- with a gateway source (`--min-replicas 0`): `wva_gateway_waiting_requests` (requests
  the inference gateway held for the variant's model);
- always: `wva_decision_info{reason=...} 1`, `reason` one of `REASONS` (a small enum;
  the free-text reason goes to the logs and the VA's status, never into a label).

Per adapter: `wva_last_successful_cycle_timestamp_seconds` (wall-clock start of the
cycle that produced the snapshot), `wva_snapshot_age_seconds`, `wva_config_problems`,
`wva_cycle_phase_seconds{phase}` (that cycle's collect, assemble and optimize times),
`wva_cycle_duration_seconds` (histogram; fed by `observe`, see below), counters
`wva_cycles_total`, `wva_cycle_errors_total`, `wva_metrics_errors_total` (from
`EngineStats`), `wva_kubernetes_errors_total{operation}` (when a provider is given) and
`wva_build_info{version}`. With the Kubernetes cache's `sync_state` (`kubernetes_sync`):
`wva_kubernetes_sync_age_seconds{resource}` (seconds since the resource, in its worst
namespace, was last known in sync with the API server: `adapter.collect.sync`; past
`--staleness` the VAs it bears on are `KubernetesStale`) and
`wva_kubernetes_watch_errors_total{resource, kind}` (the cache's failed list and watch
requests: `api` when the API server could not be read, `unexpected` for anything else,
which is logged with its traceback).

A snapshot older than `max_age_s` is stale: the per-VA families are withheld (the age
and the timestamp stay), so an HPA reading them through prometheus-adapter freezes at
its current scale instead of following an outdated recommendation, as the KEDA scaler
answers UNAVAILABLE.

Probes (`MetricsServer`, the kubelet's): `/readyz` is 200 while the process serves the
external scaler's gRPC (`serving`), stale snapshot or not. A stale snapshot is answered
UNAVAILABLE call by call, which KEDA's fallback handles; an unready pod instead leaves
the Service, and during a Prometheus outage every replica would go unready together: the
Service empties, KEDA gets connection errors, and the PodDisruptionBudget blocks node
drains. `/healthz` fails when the engine loop has attempted no cycle for
`liveness_limit(interval)` (a hung loop, which a restart cures), not when its cycles fail
(a failing backend, which a restart does not cure). Both bodies say why.

The `namespace` label collision: Prometheus' Kubernetes service discovery attaches the
target's own `namespace` label (the adapter's namespace). Without `honorLabels: true` in
the ServiceMonitor (`honor_labels: true` in a scrape config), Prometheus renames ours to
`exported_namespace`, which is what the reference's users had to put in their HPA and
KEDA selectors. We keep the reference's label name and ship the ServiceMonitor with
`honorLabels: true`, so `namespace` is the VariantAutoscaling's namespace; the Grafana
dashboard (deploy/grafana-dashboard.yaml) relies on that. The adapter exports no
`job`/`instance`/`pod` labels, so honouring its labels overrides nothing else.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from adapter import __version__
from adapter.clock import Clock
from adapter.collect.sync import SyncState
from adapter.engine import KUBERNETES_STALE, EngineStats, Snapshot, VariantDecision
from adapter.learn import LearnedProfile

__all__ = [
    "DURATION_BUCKETS",
    "REASONS",
    "Exporter",
    "LoopLiveness",
    "MetricsServer",
    "Probe",
    "SnapshotCollector",
    "liveness_limit",
    "reason_code",
]

log = logging.getLogger(__name__)

VARIANT_LABELS = ("variant_name", "namespace", "accelerator_type")
UNRESOLVED = "unresolved"

# A cycle is a few ms when the sizing cache is warm and up to seconds when it is cold
# or the metrics backend is slow.
DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

REASONS: tuple[str, ...] = (
    "Optimized",  # a desired allocation exists
    "InvalidConfiguration",  # the VA, its ConfigMaps or its Deployment are unusable
    "CapacityExhausted",  # feasible, but the limited solver ran out of accelerators
    "Infeasible",  # no accelerator meets the SLO at this load
    "OptimizationFailed",  # anything else
    "KubernetesStale",  # its objects were last in sync with the API server too long ago
)


def reason_code(decision: VariantDecision) -> str:
    """The decision's reason as one of `REASONS` (bounded, fit for a label or a condition).

    VAs the assembler rejected carry no load (the engine never reaches the optimizer for
    them); the optimizer's own reasons are classified by their fixed texts.
    """
    if decision.solved:
        return "Optimized"
    reason = decision.reason
    if reason.startswith(KUBERNETES_STALE):
        return "KubernetesStale"
    if decision.load is None or reason.startswith("invalid input"):
        return "InvalidConfiguration"
    if reason == "accelerator capacity exhausted":
        return "CapacityExhausted"
    if reason == "not in the optimizer's input":
        return "OptimizationFailed"
    return "Infeasible"


@dataclass(frozen=True, slots=True)
class _Variant:
    labels: tuple[str, str, str]
    decision: VariantDecision


class SnapshotCollector(Collector):
    """Builds every `wva_` family from the snapshot the provider returns at scrape time."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot | None],
        stats: EngineStats | Callable[[], EngineStats],
        clock: Clock,
        *,
        max_age_s: float | None = 60.0,
        version: str = __version__,
        kubernetes_errors: Callable[[], Mapping[str, int]] | None = None,
        kubernetes_sync: Callable[[], SyncState] | None = None,
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        self._snapshot = snapshot
        self._stats = stats
        self._clock = clock
        self.max_age_s = max_age_s
        self._version = version
        self._kubernetes_errors = kubernetes_errors
        self._kubernetes_sync = kubernetes_sync
        self._buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self._bucket_counts = [0] * (len(self._buckets) + 1)  # last: +Inf only
        self._count = 0
        self._sum = 0.0
        self._last_cycle: int | None = None

    # ------------------------------------------------------------ feeding the histogram

    def observe(self, snapshot: Snapshot) -> None:
        """Count the cycle behind `snapshot` in the duration histogram, once per cycle.

        Pass this as (or call it from) the engine's `on_snapshot` hook to count every
        successful cycle; snapshots are also observed at scrape time, so without the hook
        the histogram still counts the cycles a scrape happened to see.
        """
        with self._lock:
            if self._last_cycle is not None and snapshot.cycle <= self._last_cycle:
                return
            self._last_cycle = snapshot.cycle
            duration = max(0.0, snapshot.duration_s)
            self._bucket_counts[bisect.bisect_left(self._buckets, duration)] += 1
            self._count += 1
            self._sum += duration

    # ------------------------------------------------------------ readiness

    def fresh(self, snapshot: Snapshot | None = None) -> bool:
        """A snapshot exists and is no older than `max_age_s`."""
        current = snapshot if snapshot is not None else self._snapshot()
        if current is None:
            return False
        return self.max_age_s is None or current.age(self._clock) <= self.max_age_s

    # ------------------------------------------------------------ Collector

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the snapshot; no collision checks at registration

    def collect(self) -> Iterable[Metric]:
        snapshot = self._snapshot()
        if snapshot is not None:
            self.observe(snapshot)
        yield from self._adapter_families(snapshot)
        if snapshot is not None and self.fresh(snapshot):
            yield from self._variant_families(snapshot)

    def _adapter_families(self, snapshot: Snapshot | None) -> Iterator[Metric]:
        build = InfoMetricFamily("wva_build", "wva-adapter build.", labels=["version"])
        build.add_metric([self._version], {})
        yield build

        stats = self._stats() if callable(self._stats) else self._stats
        for name, value, doc in (
            ("wva_cycles", stats.cycles_total, "Optimization cycles started."),
            (
                "wva_cycle_errors",
                stats.cycle_errors_total,
                "Cycles that published no snapshot (inputs unreadable, or an internal error).",
            ),
            (
                "wva_metrics_errors",
                stats.metrics_errors_total,
                "Metric collections that failed (PromQL or pod scrape errors).",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=float(value))
        if self._kubernetes_errors is not None:
            errors = CounterMetricFamily(
                "wva_kubernetes_errors",
                "Failed Kubernetes API calls made by the adapter, by operation.",
                labels=["operation"],
            )
            for operation, count in sorted(self._kubernetes_errors().items()):
                errors.add_metric([operation], float(count))
            yield errors
        if self._kubernetes_sync is not None:
            yield from _sync_families(self._kubernetes_sync())

        with self._lock:
            cumulative, buckets = 0, []
            for bound, count in zip(self._buckets, self._bucket_counts, strict=False):
                cumulative += count
                buckets.append((_bound(bound), float(cumulative)))
            buckets.append(("+Inf", float(self._count)))
            total = self._sum
        yield HistogramMetricFamily(
            "wva_cycle_duration_seconds",
            "Duration of successful optimization cycles.",
            buckets=buckets,
            sum_value=total,
        )

        if snapshot is None:
            return
        yield GaugeMetricFamily(
            "wva_last_successful_cycle_timestamp_seconds",
            "Wall-clock start of the cycle that produced the current snapshot, Unix seconds.",
            value=snapshot.timestamp,
        )
        yield GaugeMetricFamily(
            "wva_snapshot_age_seconds",
            "Seconds since the current snapshot's cycle started.",
            value=max(0.0, snapshot.age(self._clock)),
        )
        yield GaugeMetricFamily(
            "wva_config_problems",
            "Unusable ConfigMap entries and Node labels seen by the current snapshot.",
            value=float(len(snapshot.config_problems)),
        )
        phases = GaugeMetricFamily(
            "wva_cycle_phase_seconds",
            "Where the current snapshot's cycle spent its time (collect, assemble, optimize).",
            labels=["phase"],
        )
        for phase, seconds in snapshot.phases_s.items():
            phases.add_metric([phase], seconds)
        yield phases

    def _variant_families(self, snapshot: Snapshot) -> Iterator[Metric]:
        variants = [
            _Variant(
                (decision.name, decision.namespace, decision.accelerator or UNRESOLVED),
                decision,
            )
            for _key, decision in sorted(snapshot.decisions.items())
        ]

        def family(
            name: str, doc: str, value: Callable[[VariantDecision], float | None]
        ) -> GaugeMetricFamily:
            gauge = GaugeMetricFamily(name, doc, labels=VARIANT_LABELS)
            for variant in variants:
                found = value(variant.decision)
                if found is not None:
                    gauge.add_metric(variant.labels, found)
            return gauge

        def solved(read: Callable[[VariantDecision], float | None]) -> Callable[..., float | None]:
            return lambda d: read(d) if d.solved else None

        yield family(
            "wva_desired_replicas",
            "Replicas the optimizer recommends (solved VariantAutoscalings only).",
            solved(lambda d: d.desired_replicas),
        )
        yield family(
            "wva_current_replicas",
            "Replicas of the variant's Deployment when the cycle read it.",
            solved(lambda d: d.current_replicas),
        )
        yield family(
            "wva_desired_ratio",
            "Desired / current replicas; equals desired replicas when current is 0.",
            solved(_ratio),
        )
        yield family(
            "wva_predicted_itl_seconds",
            "Inter-token latency the queueing model predicts at the desired allocation.",
            solved(lambda d: _seconds(d.predicted_itl_ms)),
        )
        yield family(
            "wva_predicted_wait_seconds",
            "Queue wait the queueing model predicts at the desired allocation.",
            solved(lambda d: _seconds(d.predicted_wait_ms)),
        )
        yield family(
            "wva_max_request_rate_per_replica",
            "Highest request rate one replica sustains within the SLO, requests per second.",
            solved(lambda d: None if d.max_rpm_per_replica is None else d.max_rpm_per_replica / 60),
        )
        yield family(
            "wva_desired_cost",
            "Cost of the desired allocation (accelerator unit cost x replicas).",
            solved(lambda d: d.cost),
        )
        yield family(
            "wva_arrival_rate_requests_per_second",
            "Observed request arrival rate of the variant's model, requests per second.",
            lambda d: None if d.load is None else d.load.arrival_rate_rpm / 60,
        )
        yield family(
            "wva_avg_output_tokens",
            "Observed average output tokens per request.",
            lambda d: None if d.load is None else d.load.avg_output_tokens,
        )
        yield family(
            "wva_observed_itl_seconds",
            "Observed average inter-token latency.",
            lambda d: None if d.load is None else _seconds(d.load.itl_ms),
        )
        yield family(
            "wva_observed_wait_seconds",
            "Observed average queue wait.",
            lambda d: None if d.load is None else _seconds(d.load.queue_time_ms),
        )
        yield family(
            "wva_slo_itl_seconds",
            "Inter-token latency target of the variant's service class.",
            lambda d: None if d.slo is None else d.slo.slo_itl / 1000,
        )
        yield family(
            "wva_slo_ttft_seconds",
            "Time-to-first-token (queue wait) target of the variant's service class.",
            lambda d: None if d.slo is None else d.slo.slo_ttw / 1000,
        )
        yield from _profile_families(family)
        yield family(
            "wva_sized_arrival_rate_requests_per_second",
            "Arrival rate the variant was sized for: the forecast a start-up ahead"
            " (look-ahead on; never below the smoothed rate now).",
            lambda d: None if d.ahead is None else d.ahead.sized_rpm / 60,
        )
        yield family(
            "wva_startup_seconds",
            "Start-up the look-ahead plans with: learned from the Deployment's scale-ups,"
            " or the default until two are seen.",
            lambda d: None if d.ahead is None else d.ahead.startup.seconds,
        )
        yield family(
            "wva_slo_batch_requests",
            "Requests one replica decodes at once within the ITL SLO (the batch whose step"
            " time is the SLO, at most its max batch).",
            solved(lambda d: d.slo_batch),
        )
        yield family(
            "wva_gateway_waiting_requests",
            "Requests the inference gateway (llm-d router flow control) holds for the"
            " variant's model.",
            lambda d: d.gateway_waiting,
        )
        info = InfoMetricFamily(
            "wva_decision",
            "The cycle's outcome per VariantAutoscaling; reason is one of " + ", ".join(REASONS),
            labels=[*VARIANT_LABELS, "reason"],
        )
        for variant in variants:
            info.add_metric([*variant.labels, reason_code(variant.decision)], {})
        yield info


def _profile_families(
    family: Callable[[str, str, Callable[[VariantDecision], float | None]], GaugeMetricFamily],
) -> Iterator[Metric]:
    """The decode profile each VA was sized with, declared and learned (learning on)."""

    def learned(read: Callable[[LearnedProfile], float]) -> Callable[..., float | None]:
        def value(d: VariantDecision) -> float | None:
            fit = d.profile.learned if d.profile is not None else None
            return read(fit) if fit is not None and fit.accepted > 0 else None

        return value

    yield family(
        "wva_declared_alpha_seconds",
        "Decode step time at batch 0 the VariantAutoscaling declares (alpha).",
        lambda d: None if d.profile is None else d.profile.declared_alpha_ms / 1000,
    )
    yield family(
        "wva_declared_beta_seconds",
        "Decode step time added per request in the batch the VariantAutoscaling declares.",
        lambda d: None if d.profile is None else d.profile.declared_beta_ms / 1000,
    )
    yield family(
        "wva_learned_alpha_seconds",
        "Decode step time at batch 0 learned from the pods (alpha).",
        learned(lambda f: f.alpha_ms / 1000),
    )
    yield family(
        "wva_learned_beta_seconds",
        "Decode step time added per request in the batch, learned from the pods (beta).",
        learned(lambda f: f.beta_ms / 1000),
    )
    yield family(
        "wva_learned_profile_observations",
        "Cycles whose pod metrics the learned profile rests on.",
        learned(lambda f: f.accepted),
    )
    yield family(
        "wva_learned_profile_trusted",
        "1 when the learned profile is known well enough to size with, else 0.",
        learned(lambda f: float(f.trusted)),
    )
    yield family(
        "wva_learned_profile_in_use",
        "1 when a learned profile sized this cycle (the current fit refutes the declared"
        " one, or the last one that did is held while the fit regains trust), else 0.",
        lambda d: None if d.profile is None else float(d.profile.source != "declared"),
    )


def _sync_families(state: SyncState) -> Iterator[Metric]:
    """How current the Kubernetes cache is, and how its requests fared, by resource."""
    ages = GaugeMetricFamily(
        "wva_kubernetes_sync_age_seconds",
        "Seconds since the resource (its worst namespace) was last known in sync with the "
        "Kubernetes API server; past the staleness limit its VAs are KubernetesStale.",
        labels=["resource"],
    )
    for resource, age in state.ages().items():
        ages.add_metric([resource], age)
    yield ages
    errors = CounterMetricFamily(
        "wva_kubernetes_watch_errors",
        "Failed list and watch requests of the Kubernetes cache, by resource and kind: api "
        "(the API server could not be read) or unexpected (anything else, logged with its "
        "traceback).",
        labels=["resource", "kind"],
    )
    for (resource, kind), count in state.errors().items():
        errors.add_metric([resource, kind], float(count))
    yield errors


def _ratio(decision: VariantDecision) -> float | None:
    desired, current = decision.desired_replicas, decision.current_replicas
    if desired is None or current is None:
        return None
    return float(desired) if current == 0 else desired / current


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _bound(value: float) -> str:
    return repr(float(value))


# ---------------------------------------------------------------- probes

# /healthz: the engine loop must have attempted a cycle within
# max(LIVENESS_CYCLES x interval, interval + LIVENESS_MARGIN_S). Attempts start one interval
# after the previous one ended, so the margin is the longest a cycle may legitimately take
# (10 PromQL queries against a slow Prometheus with a 10 s timeout each; 100 hung pods
# scraped 10 at a time with a 5 s timeout: 50 s).
LIVENESS_CYCLES = 3.0
LIVENESS_MARGIN_S = 60.0
# Before the first attempt: the serving processes start first (ScalerPool allows them
# 60 s), then the loop's first attempt is immediate.
STARTUP_GRACE_S = 60.0


def liveness_limit(interval_s: float) -> float:
    """Seconds without a cycle attempt after which the engine loop counts as hung."""
    return max(LIVENESS_CYCLES * interval_s, interval_s + LIVENESS_MARGIN_S)


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe's answer: `ok` is 200 (else 503), `detail` the body, saying why."""

    ok: bool
    detail: str


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


class LoopLiveness:
    """`/healthz`: has the engine loop attempted a cycle recently enough?

    `last_attempt` returns when the latest attempt started on `clock`'s monotonic scale
    (`Engine.last_attempt`), None before the first. Attempts that fail count: a loop that
    keeps failing on a dead Prometheus is alive, and a restart would not help it. Before
    the first attempt the loop gets `grace_s` from this object's creation.
    """

    def __init__(
        self,
        last_attempt: Callable[[], float | None],
        clock: Clock,
        interval_s: float,
        *,
        limit_s: float | None = None,
        grace_s: float | None = None,
    ) -> None:
        self._last_attempt = last_attempt
        self._clock = clock
        self.limit_s = liveness_limit(interval_s) if limit_s is None else limit_s
        self.grace_s = self.limit_s + STARTUP_GRACE_S if grace_s is None else grace_s
        self._since = clock.monotonic()

    def __call__(self) -> Probe:
        now = self._clock.monotonic()
        last = self._last_attempt()
        if last is None:
            waited = now - self._since
            if waited <= self.grace_s:
                return Probe(
                    True,
                    f"ok: starting, no cycle attempted yet ({waited:.1f} s of the "
                    f"{self.grace_s:g} s start-up grace)",
                )
            return Probe(
                False,
                f"the engine loop has attempted no cycle since the start, "
                f"{_utc(self._clock.now() - waited)} ({waited:.1f} s ago; start-up grace "
                f"{self.grace_s:g} s)",
            )
        idle = now - last
        if idle <= self.limit_s:
            return Probe(True, f"ok: last cycle attempt {idle:.1f} s ago")
        return Probe(
            False,
            f"the engine loop has attempted no cycle since {_utc(self._clock.now() - idle)} "
            f"({idle:.1f} s ago; limit {self.limit_s:g} s): it is hung",
        )


# ---------------------------------------------------------------- HTTP


class MetricsServer:
    """`/metrics`, `/healthz` (`live()`) and `/readyz` (`ready()`): 200 or 503 with the
    probe's detail as the body (without `live`, `/healthz` is 200 while the process answers).

    A plain threaded HTTP server on `host:port` (port 0: the OS picks one). `/metrics`
    honours the scraper's Accept header (OpenMetrics or the classic text format).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], Probe],
        *,
        live: Callable[[], Probe] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._live = live
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _bound(self) -> ThreadingHTTPServer:
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return self._server

    @property
    def port(self) -> int:
        return int(self._bound().server_address[1])

    @property
    def url(self) -> str:
        host = self._bound().server_address[0]
        return f"http://{host!s}:{self.port}"

    def start(self) -> MetricsServer:
        """Bind and serve in a daemon thread (the socket is opened here, not before)."""
        if self._server is not None:
            raise RuntimeError("MetricsServer.start() called twice")
        server = ThreadingHTTPServer(self._address, self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name="wva-metrics", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics server: " + format, *args)

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/metrics":
                    try:
                        encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
                        body = encoder(server._registry)
                    except Exception:
                        log.exception("cannot render /metrics")
                        self._send(500, "text/plain; charset=utf-8", b"cannot render metrics\n")
                        return
                    self._send(200, content_type, body)
                elif path == "/healthz":
                    self._probe("/healthz", server._live)
                elif path == "/readyz":
                    self._probe("/readyz", server._ready)
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found\n")

            def _probe(self, path: str, probe: Callable[[], Probe] | None) -> None:
                try:
                    answer = probe() if probe is not None else Probe(True, "ok")
                except Exception as error:  # a probe that cannot answer is a failed probe
                    log.exception("%s: the probe failed", path)
                    answer = Probe(False, f"the probe failed: {type(error).__name__}: {error}")
                if not answer.ok:
                    log.debug("%s: 503 %s", path, answer.detail)
                self._send(
                    200 if answer.ok else 503,
                    "text/plain; charset=utf-8",
                    (answer.detail + "\n").encode(),
                )

            do_HEAD = do_GET

        return Handler


class Exporter:
    """The collector, its own registry and the HTTP server, started and stopped together.

    Wiring in `run`: `Exporter(snapshot=lambda: engine.latest, stats=engine.stats,
    clock=clock, host="0.0.0.0", port=8080, max_age_s=..., kubernetes_errors=...,
    kubernetes_sync=cache.sync_state,
    serving=pool.serving, last_attempt=lambda: engine.last_attempt, interval_s=...)`, and
    `exporter.observe` in the engine's `on_snapshot` hook.

    `/readyz` follows `serving` (the external scaler's gRPC is served; without it: ready
    whenever the HTTP server answers), never the snapshot's age. `/healthz` follows
    `last_attempt` through `LoopLiveness` (without it: healthy whenever it answers).
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot | None],
        stats: EngineStats | Callable[[], EngineStats],
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_age_s: float | None = 60.0,
        version: str = __version__,
        kubernetes_errors: Callable[[], Mapping[str, int]] | None = None,
        kubernetes_sync: Callable[[], SyncState] | None = None,
        serving: Callable[[], bool] | None = None,
        last_attempt: Callable[[], float | None] | None = None,
        interval_s: float = 15.0,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SnapshotCollector(
            snapshot,
            stats,
            clock,
            max_age_s=max_age_s,
            version=version,
            kubernetes_errors=kubernetes_errors,
            kubernetes_sync=kubernetes_sync,
        )
        self.registry.register(self.collector)
        self._serving = serving
        self.liveness = (
            LoopLiveness(last_attempt, clock, interval_s) if last_attempt is not None else None
        )
        self.server = MetricsServer(
            self.registry, self.readiness, live=self.liveness, host=host, port=port
        )

    def observe(self, snapshot: Snapshot) -> None:
        self.collector.observe(snapshot)

    def readiness(self) -> Probe:
        """`/readyz`: the external scaler is served. The snapshot's age only adds a note:
        stale VAs are answered UNAVAILABLE call by call, which KEDA's fallback handles."""
        if self._serving is not None and not self._serving():
            return Probe(
                False, "the KEDA external scaler is not serving (not bound yet, or stopping)"
            )
        if self.collector.fresh():
            return Probe(True, "ok")
        return Probe(True, "ok; no fresh optimization result: GetMetrics answers UNAVAILABLE")

    def ready(self) -> bool:
        return self.readiness().ok

    def live(self) -> Probe:
        """`/healthz`'s answer now (always ok without a `last_attempt`)."""
        return self.liveness() if self.liveness is not None else Probe(True, "ok")

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> Exporter:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Exporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Load from Prometheus with batched PromQL: one instant query per quantity for all models.

Every query aggregates `by (namespace, model_name)`, so a cycle costs the same fixed
number of HTTP requests whether one or five hundred VariantAutoscalings are watched;
the wanted keys are picked from the answers on our side. The arrival rate is the pod
scraper's (completions plus in-flight growth over the window, see `arrivals`), so both
sources give the same load on the same pods (tests/test_arrival_agreement.py).

The queries go through prometheus-api-client's `PrometheusConnect.custom_query` (GET
/api/v1/query) over a requests Session configured here: the CA bundle or no
verification, a bearer token re-read from its file at every request (a requests auth
class), no retries (a failed cycle is retried by the next one, on time). The client keeps
only `data.result` of an answer and reports an HTTP error as the status code and raw
bytes; a response hook keeps the last answer, so Prometheus' own error message
(`errorType: error`) and its `warnings` still reach the error and the log. The answer's
`data.result` is read by `vector_samples`, which does no I/O. Since 0.7.0 the client's
package `__init__` is lazy: `prometheus_connect` loads requests and the standard library
only (0.6 loaded pandas and numpy with it).

A series is found under whichever name Prometheus stored it (adapter/vllm_metrics.py):
`vllm:x` when it scraped vLLM in the classic text format, `vllm_x` when it scraped in
OpenMetrics (prometheus_client >= 0.23 escapes the sample names then, and Prometheus
asks for OpenMetrics first), and the per-token latency under either of its release
names. The alternatives are joined with `or`, which keeps one series per label set
(Prometheus ignores the metric name there, and `rate` drops it): a pod is counted once,
under the first alternative it has, colon form and newest name first. A name regex
(`{__name__=~"vllm:x|vllm_x"}`) would not do: while a pod switches form (a Prometheus
or vLLM upgrade) both series are in the window, `rate` gives them the same labels, and
Prometheus rejects the whole query ("vector cannot contain metrics with the same
labelset"); with `or` that window only counts the older form's part.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from urllib3.util import Retry

from adapter.collect.metrics import (
    LoadKey,
    LoadReport,
    MetricsUnavailable,
    ModelLoad,
    served_models,
)
from adapter.vllm_metrics import (
    ITL_FAMILIES,
    KV_CACHE_USAGE,
    NUM_REQUESTS_RUNNING,
    NUM_REQUESTS_WAITING,
    REQUEST_GENERATION_TOKENS,
    REQUEST_PROMPT_TOKENS,
    REQUEST_QUEUE_TIME,
    REQUEST_SUCCESS,
    TIME_TO_FIRST_TOKEN,
    Family,
    forms,
)

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_BY: Final = "by (namespace, model_name)"
_UNIT_SECONDS: Final = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}


class PrometheusSettings(BaseModel):
    """How to reach Prometheus and which window to average over."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="Base URL, e.g. https://prometheus.monitoring:9090")
    ca_file: Path | None = Field(default=None, description="PEM bundle to verify HTTPS with")
    bearer_token_file: Path | None = Field(
        default=None, description="File holding a bearer token; read at every request"
    )
    insecure_skip_verify: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    window: str = Field(default="1m", description="PromQL range for rate(), e.g. 1m or 30s")
    namespace: str | None = Field(default=None, description="Only read this namespace")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("url must start with http:// or https:// and name a host")
        return url.rstrip("/")

    @field_validator("window")
    @classmethod
    def _promql_duration(cls, window: str) -> str:
        if not _DURATION.match(window):
            raise ValueError(f"window {window!r} is not a PromQL duration like 1m or 30s")
        if duration_seconds(window) <= 0:
            raise ValueError(f"window {window!r} must be longer than 0")
        return window

    @model_validator(mode="after")
    def _one_trust_mode(self) -> PrometheusSettings:
        if self.ca_file is not None and self.insecure_skip_verify:
            raise ValueError("ca_file and insecure_skip_verify exclude each other")
        return self


@dataclass(frozen=True, slots=True)
class Query:
    """One batched PromQL query and the ModelLoad field its samples fill."""

    field: str
    expr: str
    scale: float  # to ModelLoad units (per second -> per minute, seconds -> ms)


def _selector(namespace: str | None) -> str:
    if namespace is None:
        return ""
    escaped = namespace.replace("\\", "\\\\").replace('"', '\\"')
    return f'{{namespace="{escaped}"}}'


def build_queries(window: str, namespace: str | None = None) -> tuple[Query, ...]:
    """The fixed set of PromQL expressions one cycle runs: one per quantity, each finding
    its series under any of their stored names (see the module's docstring)."""
    sel = _selector(namespace)

    def instant(*names: str) -> str:
        return " or ".join(f"{form}{sel}" for name in names for form in forms(name))

    def rate(*names: str) -> str:
        return " or ".join(f"rate({form}{sel}[{window}])" for name in names for form in forms(name))

    def mean(*histograms: Family) -> str:
        # the same alternative must win for _sum and _count: a pod exports both of a name
        sums = rate(*(h.sum for h in histograms))
        counts = rate(*(h.count for h in histograms))
        return f"sum {_BY} ({sums}) / sum {_BY} ({counts})"

    return (
        Query("arrival_rate_rpm", arrivals(window, sel), 60.0),
        Query("avg_prompt_tokens", mean(REQUEST_PROMPT_TOKENS), 1.0),
        Query("avg_output_tokens", mean(REQUEST_GENERATION_TOKENS), 1.0),
        Query("itl_ms", mean(*ITL_FAMILIES), 1000.0),
        # requests decoding, time-averaged: the ITL sum's rate (`ModelLoad.decoding`)
        Query("decoding", f"sum {_BY} ({rate(*(h.sum for h in ITL_FAMILIES))})", 1.0),
        Query("queue_time_ms", mean(REQUEST_QUEUE_TIME), 1000.0),
        Query("ttft_ms", mean(TIME_TO_FIRST_TOKEN), 1000.0),
        Query("running", f"sum {_BY} ({instant(NUM_REQUESTS_RUNNING.value)})", 1.0),
        Query("waiting", f"sum {_BY} ({instant(NUM_REQUESTS_WAITING.value)})", 1.0),
        # a ratio per replica: the model's usage is the mean, not the sum
        Query("kv_cache_usage", f"avg {_BY} ({instant(KV_CACHE_USAGE.value)})", 1.0),
    )


def duration_seconds(window: str) -> float:
    """A PromQL duration (`1m`, `90s`, `1m30s`, `500ms`) in seconds."""
    if not _DURATION.match(window):
        raise ValueError(f"{window!r} is not a PromQL duration like 1m or 30s")
    return sum(
        float(number) * _UNIT_SECONDS[unit]
        for number, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", window)
    )


def arrivals(window: str, selector: str = "") -> str:
    """The arrival rate (requests/s) by (namespace, model_name): the scrape source's
    definition (adapter/collect/scrape.py) in PromQL.

    vLLM counts no arrivals. What entered a pod over the window is what finished there
    plus the growth of what is in it (running + waiting): `rate(success[w]) +
    (delta(running[w]) + delta(waiting[w])) / w`. Completions alone lag a load step by a
    whole request's duration and overshoot while a backlog drains after a scale-up.

    - Both terms are extrapolated alike by Prometheus (to the window's edges, from the
      samples in it), so their sum is the window's change over the sampled span, as the
      scrape source's difference of two scrapes is.
    - A pod whose success counter went down in the window restarted: `rate` counts its
      completions from 0 after the reset, and its in-flight growth counts from 0 too
      (its gauges now, not their delta): the old process' requests were lost, not
      served, and are no negative arrivals. Its gauges carry no `finished_reason`,
      hence `ignoring(finished_reason)` (set operators match many-to-many).
    - The parts are kept apart by a label (`wva_part`) before one `sum`: a model whose
      pods export no gauges gets its completion rate alone, as from the scrape source,
      and `or` cannot drop a part that happens to carry the same labels as another.
    - The sum is clamped at 0: a pod emptying faster than anything finishes (its
      requests aborted) is no negative load. Nothing is divided by a sample (only by the
      window's length), so nothing is NaN.
    """
    seconds = duration_seconds(window)

    def each(function: str, name: str) -> str:
        return " or ".join(f"{function}({form}{selector}[{window}])" for form in forms(name))

    def now(name: str) -> str:
        return " or ".join(f"{form}{selector}" for form in forms(name))

    running, waiting = NUM_REQUESTS_RUNNING.value, NUM_REQUESTS_WAITING.value
    restarted = f"({each('resets', REQUEST_SUCCESS.total)}) > 0"
    grown = f"({each('delta', running)}) + ({each('delta', waiting)})"
    since_restart = f"({now(running)}) + ({now(waiting)})"
    growth = (
        f"(({grown}) unless ignoring(finished_reason) ({restarted}))"
        f" or (({since_restart}) and ignoring(finished_reason) ({restarted}))"
    )
    completed = each("rate", REQUEST_SUCCESS.total)
    parts = (
        f'label_replace({completed}, "wva_part", "completed", "", "")'
        f' or label_replace(({growth}) / {seconds:g}, "wva_part", "in_flight_growth", "", "")'
    )
    return f"clamp_min(sum {_BY} ({parts}), 0)"


class AnswerError(ValueError):
    """An answer whose result is not the vector of samples a batched query returns."""


def vector_samples(result: object) -> Iterator[tuple[LoadKey, float]]:
    """The (namespace, model) samples of an instant query's `data.result`.

    Pure: no I/O. Samples without a model_name are skipped; NaN, infinite and negative
    values are dropped (an idle model's 0/0 means are NaN, never passed on). A result
    that is not a vector, or a sample without a number, raises AnswerError.
    """
    if not isinstance(result, list):
        raise AnswerError(f"a result that is not a list: {result!r:.200}")
    for sample in result:
        if not isinstance(sample, dict):
            raise AnswerError(f"a scalar or string, not a vector: {result!r:.200}")
        if "value" not in sample and "values" in sample:
            raise AnswerError("a matrix, not a vector")
        labels = sample.get("metric")
        if not isinstance(labels, dict) or not (model := labels.get("model_name")):
            continue
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise AnswerError(f"a malformed sample {sample!r:.200}") from None
        if math.isfinite(value) and value >= 0:
            yield (str(labels.get("namespace", "")), str(model)), value


class BearerTokenFile(requests.auth.AuthBase):
    """`Authorization: Bearer <token>` with the token read from its file at every request,
    so a rotated service-account token is picked up without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        try:
            token = self.path.read_text().strip()
        except OSError as exc:
            raise MetricsUnavailable(
                f"cannot read the Prometheus bearer token file {self.path}: {exc.strerror}"
            ) from None
        if not token:
            raise MetricsUnavailable(f"the Prometheus bearer token file {self.path} is empty")
        request.headers["Authorization"] = f"Bearer {token}"
        return request


class _LastResponse(threading.local):
    """Response hook keeping this thread's last answer, for what the client drops."""

    response: requests.Response | None = None

    def __call__(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self.response = response


class PrometheusSource:
    """MetricsSource reading vLLM metrics from Prometheus' HTTP API."""

    def __init__(
        self, settings: PrometheusSettings, *, session: requests.Session | None = None
    ) -> None:
        """`session`, if given, is configured here (TLS, auth, hooks) and closed with us."""
        self.settings = settings
        self.queries = build_queries(settings.window, settings.namespace)
        self._session = session if session is not None else requests.Session()
        # the client passes verify=session.verify with every request: a CA path or False
        # beats REQUESTS_CA_BUNDLE, which only replaces True
        if settings.ca_file is not None:
            self._session.verify = str(settings.ca_file)
        elif settings.insecure_skip_verify:
            log.warning("TLS verification of %s is disabled", settings.url)
            self._session.verify = False
        if settings.bearer_token_file is not None:
            self._session.auth = BearerTokenFile(settings.bearer_token_file)
        self._last = _LastResponse()
        self._session.hooks["response"].append(self._last)
        # requests takes float seconds; the client's `int` hint is narrower than its use
        timeout: Any = settings.timeout_s
        self._client = PrometheusConnect(
            url=settings.url,
            session=self._session,
            # requests' own default: no retry (the client's is 3, with back-off, also on
            # 5xx answers, which would stretch a failing cycle past its interval)
            retry=Retry(total=0, read=False),
            timeout=timeout,
            method="GET",
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        """Run every query once and keep the samples of the wanted keys.

        A key with a usable sample in any answer is in the report (its missing
        quantities zero or None); a key with none (pods down or not scraped, or only
        garbage values) is left out, so the caller can tell unknown load from no
        traffic. No keys means nothing to size: no query is made.
        """
        wanted = set(keys)
        if not wanted:
            return LoadReport()
        fields: dict[LoadKey, dict[str, float]] = {}
        seen: set[LoadKey] = set()
        for query in self.queries:
            result = self.instant(query.expr)
            try:
                for key, value in vector_samples(result):
                    seen.add(key)
                    if key in wanted:
                        fields.setdefault(key, {})[query.field] = value * query.scale
            except AnswerError as exc:
                raise MetricsUnavailable(
                    f"Prometheus at {self.settings.url} answered {exc} to {query.expr}"
                ) from None
        loads = {key: _model_load(key, values) for key, values in fields.items()}
        return LoadReport(loads=loads, queries=len(self.queries), served=served_models(seen))

    def instant(self, expr: str) -> object:
        """`data.result` of one instant query, its warnings logged; anything but a success
        answer raises MetricsUnavailable naming the query."""
        url = self.settings.url
        self._last.response = None
        try:
            result: object = self._client.custom_query(expr)
            response = self._last.response
        except (PrometheusApiClientException, requests.JSONDecodeError, KeyError, TypeError):
            # in turn: any HTTP status but 200; a 200 that is not JSON (a proxy's login
            # page); a 200 JSON body without data.result (an error answer via a proxy)
            response = self._last.response
            if response is None:
                raise  # not about an answer: a fault of ours or of the client
            raise MetricsUnavailable(
                f"Prometheus at {url} answered {_refusal(response)} to {expr}"
            ) from None
        except requests.RequestException as exc:
            raise MetricsUnavailable(
                f"Prometheus at {url} is unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self._last.response = None
        # the client drops the warnings; a substring test spares a second JSON parse of
        # every (possibly large) answer that has none
        if response is not None and b'"warnings"' in response.content:
            body = _json(response) or {}
            for warning in body.get("warnings") or ():
                log.warning("Prometheus warning for %s: %s", expr, warning)
        return result


def _refusal(response: requests.Response) -> str:
    """`HTTP <status> (<Prometheus' errorType: error, or the start of the body>)`."""
    body = _json(response)
    if body is not None and ("error" in body or "errorType" in body):
        detail = f"{body.get('errorType')}: {body.get('error')}"
    else:
        detail = response.text[:200].strip()
    return f"HTTP {response.status_code} ({detail})"


def _json(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _model_load(key: LoadKey, values: Mapping[str, float]) -> ModelLoad:
    """A ModelLoad from query answers; no traffic counts as zero, a missing gauge as None."""
    return ModelLoad(
        namespace=key[0],
        model=key[1],
        arrival_rate_rpm=values.get("arrival_rate_rpm", 0.0),
        avg_prompt_tokens=values.get("avg_prompt_tokens", 0.0),
        avg_output_tokens=values.get("avg_output_tokens", 0.0),
        itl_ms=values.get("itl_ms"),
        decoding=values.get("decoding"),
        queue_time_ms=values.get("queue_time_ms"),
        ttft_ms=values.get("ttft_ms"),
        running=values.get("running"),
        waiting=values.get("waiting"),
        kv_cache_usage=values.get("kv_cache_usage"),
    )

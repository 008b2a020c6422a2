"""Load from Prometheus with batched PromQL: one instant query per quantity for all models.

Every query aggregates `by (namespace, model_name)`, so a cycle costs the same fixed
number of HTTP requests whether one or five hundred VariantAutoscalings are watched;
the wanted keys are picked from the answers on our side.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapter.collect.metrics import LoadKey, LoadReport, MetricsUnavailable, ModelLoad

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_BY: Final = "by (namespace, model_name)"


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
    """The fixed set of PromQL expressions one cycle runs."""
    sel = _selector(namespace)

    def rate(series: str) -> str:
        return f"rate({series}{sel}[{window}])"

    def mean(histogram: str) -> str:
        return f"sum {_BY} ({rate(histogram + '_sum')}) / sum {_BY} ({rate(histogram + '_count')})"

    # vLLM renamed the ITL histogram; `or` per series takes the new name where a pod
    # exports it and the old one elsewhere, before aggregating.
    new, old = "vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"
    itl = (
        f"sum {_BY} ({rate(new + '_sum')} or {rate(old + '_sum')})"
        f" / sum {_BY} ({rate(new + '_count')} or {rate(old + '_count')})"
    )
    return (
        Query("arrival_rate_rpm", f"sum {_BY} ({rate('vllm:request_success_total')})", 60.0),
        Query("avg_prompt_tokens", mean("vllm:request_prompt_tokens"), 1.0),
        Query("avg_output_tokens", mean("vllm:request_generation_tokens"), 1.0),
        Query("itl_ms", itl, 1000.0),
        Query("queue_time_ms", mean("vllm:request_queue_time_seconds"), 1000.0),
        Query("ttft_ms", mean("vllm:time_to_first_token_seconds"), 1000.0),
        Query("running", f"sum {_BY} (vllm:num_requests_running{sel})", 1.0),
        Query("waiting", f"sum {_BY} (vllm:num_requests_waiting{sel})", 1.0),
        # a ratio per replica: the model's usage is the mean, not the sum
        Query("kv_cache_usage", f"avg {_BY} (vllm:kv_cache_usage_perc{sel})", 1.0),
    )


class PrometheusSource:
    """MetricsSource reading vLLM metrics from Prometheus' HTTP API."""

    def __init__(
        self, settings: PrometheusSettings, *, session: requests.Session | None = None
    ) -> None:
        self.settings = settings
        self.queries = build_queries(settings.window, settings.namespace)
        self._endpoint = f"{settings.url}/api/v1/query"
        self._session = session if session is not None else requests.Session()
        # passed with every request: a Session-level verify loses to REQUESTS_CA_BUNDLE
        self._verify: bool | str = True
        if settings.ca_file is not None:
            self._verify = str(settings.ca_file)
        elif settings.insecure_skip_verify:
            log.warning("TLS verification of %s is disabled", settings.url)
            self._verify = False

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
        for query in self.queries:
            for key, value in self._instant(query.expr):
                if key in wanted:
                    fields.setdefault(key, {})[query.field] = value * query.scale
        loads = {key: _model_load(key, values) for key, values in fields.items()}
        return LoadReport(loads=loads, queries=len(self.queries))

    def _headers(self) -> dict[str, str]:
        path = self.settings.bearer_token_file
        if path is None:
            return {}
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise MetricsUnavailable(
                f"cannot read the Prometheus bearer token file {path}: {exc.strerror}"
            ) from None
        if not token:
            raise MetricsUnavailable(f"the Prometheus bearer token file {path} is empty")
        return {"Authorization": f"Bearer {token}"}

    def _instant(self, expr: str) -> Iterator[tuple[LoadKey, float]]:
        """Samples of one instant query; NaN, infinite and negative values are dropped."""
        url = self.settings.url
        try:
            response = self._session.post(
                self._endpoint,
                data={"query": expr},
                headers=self._headers(),
                timeout=self.settings.timeout_s,
                verify=self._verify,
            )
        except requests.RequestException as exc:
            raise MetricsUnavailable(
                f"Prometheus at {url} is unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        body = _json(response)
        if response.status_code != 200 or body is None or body.get("status") != "success":
            detail = (
                f"{body.get('errorType')}: {body.get('error')}"
                if body is not None
                else response.text[:200]
            )
            raise MetricsUnavailable(
                f"Prometheus at {url} answered HTTP {response.status_code} ({detail}) to {expr}"
            )
        for warning in body.get("warnings") or ():
            log.warning("Prometheus warning for %s: %s", expr, warning)
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise MetricsUnavailable(
                f"Prometheus at {url} answered a {data.get('resultType')!r}, not a vector,"
                f" to {expr}"
            )
        for sample in data.get("result") or ():
            labels = sample.get("metric", {})
            model = labels.get("model_name")
            if not model:
                continue
            try:
                value = float(sample["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                raise MetricsUnavailable(
                    f"Prometheus at {url} answered a malformed sample {sample!r} to {expr}"
                ) from None
            if math.isfinite(value) and value >= 0:
                yield (labels.get("namespace", ""), model), value


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
        queue_time_ms=values.get("queue_time_ms"),
        ttft_ms=values.get("ttft_ms"),
        running=values.get("running"),
        waiting=values.get("waiting"),
        kv_cache_usage=values.get("kv_cache_usage"),
    )

"""What waits at the inference gateway, per (namespace, model): the wake-up signal.

A model scaled to zero has no pod and so no vLLM series: the gateway's flow-control
queue (`adapter.gateway_metrics`) is the only sign that requests wait for it. Two
readers give the same `GatewayReport`: `GatewayScrape` reads EPP /metrics endpoints,
`GatewayPrometheus` one instant query on the Prometheus that scrapes them.

Matching (`attribute`, pure): a sample belongs to the model in `target_model_name`
(else `model_name`) and to the namespace in its `namespace` label (Prometheus' target
label), else the one its scraped endpoint was configured with. A sample with neither is
matched on the model name alone: to the only namespace with a VA for that model, and
to none when several have one (GIE #2309, WVA #246: the EPP's series name no
namespace). Those VAs' queues are then unknown, not zero, and say why.

Unknown is never zero: a gateway that cannot be read knows nothing about any model, and
a series whose value is garbage or cannot be placed leaves its models unknown. A gateway
that answers without a series for a model holds nothing for it: the EPP creates a
queue series at the first request it holds for a model (llm-d/llm-d-inference-scheduler
pkg/epp/flowcontrol/controller/controller.go, IncFlowControlQueueSize, @
520af47896e5f06e43d09aca281a1149187b0ffd), and an EPP without flow control holds
nothing at all (it refuses what no pod can take). `exported` says whether the queue
family was in the answer: without it, whether the router would hold (and so wake) at
all is not known, which the engine warns about.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import requests
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, field_validator

from adapter.collect.metrics import LoadKey, MetricsUnavailable
from adapter.collect.prometheus import BearerTokenFile
from adapter.gateway_metrics import (
    FAMILIES,
    MODEL,
    NAMESPACE,
    QUEUE_BYTES,
    QUEUE_SIZE,
    RUNNING,
    TARGET_MODEL,
    GatewayFamily,
    family_of,
)

log = logging.getLogger(__name__)

_FIELDS: Mapping[GatewayFamily, str] = {
    QUEUE_SIZE: "waiting",
    QUEUE_BYTES: "queue_bytes",
    RUNNING: "running",
}
_ACCEPT = "text/plain;version=0.0.4;q=1.0,*/*;q=0.1"


@dataclass(frozen=True, slots=True)
class GatewaySample:
    """One gateway sample, with the namespace its endpoint was configured with (if any)."""

    name: str
    labels: Mapping[str, str]
    value: float
    endpoint_namespace: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayQueue:
    """The gateway's view of one model: requests held, their bytes, requests in flight."""

    namespace: str
    model: str
    waiting: float = 0.0
    queue_bytes: float = 0.0
    running: float | None = None


@dataclass(frozen=True, slots=True)
class GatewayReport:
    queues: Mapping[LoadKey, GatewayQueue] = field(default_factory=dict)
    exported: bool = False  # the answer had the flow-control queue family at all
    unknown: Mapping[LoadKey, str] = field(default_factory=dict)  # keys not told, why
    error: str | None = None  # the gateway could not be read: nothing is known

    def waiting(self, key: LoadKey) -> float | None:
        """Requests held at the gateway for this model; None when that is not known."""
        if self.error is not None or key in self.unknown:
            return None
        queue = self.queues.get(key)
        return queue.waiting if queue is not None else 0.0

    def why_unknown(self, key: LoadKey) -> str:
        """Why `waiting(key)` is None ("" when it is known)."""
        if self.error is not None:
            return f"gateway unreadable: {self.error}"
        return self.unknown.get(key, "")


class GatewaySource(Protocol):
    def collect(self, keys: Collection[LoadKey]) -> GatewayReport:
        """The gateway's queues for these keys; an unreadable gateway is `error`, not raised."""
        ...


def attribute(samples: Iterable[GatewaySample], keys: Collection[LoadKey]) -> GatewayReport:
    """Sum the samples into per-key queues (see the module's docstring for the rules)."""
    samples = list(samples)
    present = {sample.name for sample in samples}
    chosen = {f.name if f.name in present else f.alias for f in FAMILIES}
    owners: dict[str, list[str]] = defaultdict(list)  # model -> namespaces with a VA for it
    for key_namespace, key_model in sorted(set(keys)):
        owners[key_model].append(key_namespace)
    sums: dict[LoadKey, dict[str, float]] = defaultdict(dict)
    unknown: dict[LoadKey, str] = {}
    for sample in samples:
        family = family_of(sample.name)
        model = sample.labels.get(TARGET_MODEL) or sample.labels.get(MODEL)
        if family is None or sample.name not in chosen or not model:
            continue
        named = sample.labels.get(NAMESPACE) or sample.endpoint_namespace
        candidates = owners.get(model, [])
        if named:
            key_list = [(named, model)] if named in candidates else []
        else:
            key_list = [(ns, model) for ns in candidates]
        if len(key_list) > 1:
            for key in key_list:
                unknown[key] = (
                    f"the gateway's {sample.name} for model {model} names no namespace and"
                    f" VAs in namespaces {', '.join(ns for ns, _ in key_list)} serve that"
                    " model: whose requests wait cannot be told"
                )
            continue
        for key in key_list:
            if not (math.isfinite(sample.value) and sample.value >= 0):
                unknown[key] = f"the gateway's {sample.name} for model {model} is {sample.value}"
                continue
            fields = sums[key]
            name = _FIELDS[family]
            fields[name] = fields.get(name, 0.0) + sample.value
    queues = {
        key: GatewayQueue(
            namespace=key[0],
            model=key[1],
            waiting=values.get("waiting", 0.0),
            queue_bytes=values.get("queue_bytes", 0.0),
            running=values.get("running"),
        )
        for key, values in sums.items()
        if key not in unknown
    }
    exported = QUEUE_SIZE.name in present or QUEUE_SIZE.alias in present
    return GatewayReport(queues=queues, exported=exported, unknown=unknown)


# ------------------------------------------------------------------ scraping the EPP


class GatewayEndpoint(BaseModel):
    """An EPP /metrics URL, and the namespace whose models it routes (None: say none)."""

    model_config = ConfigDict(frozen=True)
    url: str
    namespace: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url!r}")
        return url

    @classmethod
    def parse(cls, item: str) -> GatewayEndpoint:
        """`[NAMESPACE=]URL`, as `--gateway` takes it."""
        namespace, sep, url = item.partition("=")
        if sep and not namespace.startswith(("http://", "https://")):
            return cls(url=url, namespace=namespace or None)
        return cls(url=item)


def parse_gateway_exposition(text: str, namespace: str | None = None) -> list[GatewaySample]:
    """The gateway samples of one exposition (classic text format). Raises ValueError."""
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family_of(sample.name) is not None:
                samples.append(GatewaySample(sample.name, sample.labels, sample.value, namespace))
    return samples


class GatewayScrape:
    """GatewaySource scraping EPP endpoints; any endpoint failing makes the report `error`:
    which models it routes is not known, so none of its queues can be read as empty."""

    def __init__(
        self,
        endpoints: Sequence[GatewayEndpoint],
        *,
        timeout_s: float = 2.0,
        bearer_token_file: Path | None = None,
        session: requests.Session | None = None,
    ) -> None:
        """`bearer_token_file`: sent as `Authorization: Bearer`, read at every scrape (an
        llm-d EPP serves /metrics only to a token allowed `get` on the `/metrics`
        non-resource URL: the adapter's service-account token)."""
        if not endpoints:
            raise ValueError("no gateway endpoint to scrape")
        self.endpoints = tuple(endpoints)
        self.timeout_s = timeout_s
        self._session = session if session is not None else requests.Session()
        if bearer_token_file is not None:
            self._session.auth = BearerTokenFile(bearer_token_file)

    def close(self) -> None:
        self._session.close()

    def collect(self, keys: Collection[LoadKey]) -> GatewayReport:
        samples: list[GatewaySample] = []
        for endpoint in self.endpoints:
            try:
                response = self._session.get(
                    endpoint.url, headers={"Accept": _ACCEPT}, timeout=self.timeout_s
                )
                response.raise_for_status()
                samples += parse_gateway_exposition(response.text, endpoint.namespace)
            except (requests.RequestException, ValueError, MetricsUnavailable) as exc:
                return GatewayReport(error=f"{endpoint.url}: {type(exc).__name__}: {exc}")
        return attribute(samples, keys)


# ------------------------------------------------------------------ through Prometheus


def gateway_query() -> str:
    """One instant query for every gateway series (both names of each family)."""
    names = "|".join(name for family in FAMILIES for name in family.names)
    return f'{{__name__=~"{names}"}}'


def prometheus_samples(result: object) -> list[GatewaySample]:
    """The samples of an instant query's `data.result` (pure). Raises ValueError on a
    result that is not a vector."""
    if not isinstance(result, list):
        raise ValueError(f"a result that is not a list: {result!r:.200}")
    samples = []
    for item in result:
        labels = item.get("metric") if isinstance(item, dict) else None
        if not isinstance(labels, dict) or "value" not in item:
            raise ValueError(f"not a vector sample: {item!r:.200}")
        try:
            value = float(item["value"][1])
        except (IndexError, TypeError, ValueError):
            raise ValueError(f"a malformed sample {item!r:.200}") from None
        text = {str(k): str(v) for k, v in labels.items()}
        samples.append(GatewaySample(text.get("__name__", ""), text, value))
    return samples


class GatewayPrometheus:
    """GatewaySource reading the EPP's series from Prometheus, with `instant` (an instant
    query's `data.result`, raising MetricsUnavailable: `PrometheusSource.instant`)."""

    def __init__(self, instant: Callable[[str], object]) -> None:
        self._instant = instant
        self.query = gateway_query()

    def collect(self, keys: Collection[LoadKey]) -> GatewayReport:
        try:
            samples = prometheus_samples(self._instant(self.query))
        except (MetricsUnavailable, ValueError) as exc:
            return GatewayReport(error=str(exc))
        return attribute(samples, keys)

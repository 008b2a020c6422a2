"""What the optimizer needs to know about live traffic, whatever the source.

Both metric sources (Prometheus and direct pod scraping) produce the same
`LoadReport`, keyed by (namespace, model name) as vLLM labels its series.
A key present with zeros means the pods answered and saw no traffic. A key absent
from the report means no series at all: zero load only if nothing runs the model
(scaled to zero); while its Deployment has replicas it means the pods are down or not
scraped, so `find` returns None and the caller decides (assemble rejects the VA). A key
in `incomplete` lost part of its pods' answers this cycle: its load is a lower bound.
A source that cannot answer at all raises `MetricsUnavailable`, so the cycle fails
loudly instead of scaling a service to zero.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

LoadKey = tuple[str, str]  # (namespace, model_name)


class MetricsUnavailable(RuntimeError):
    """The metrics backend could not be read; the cycle must not use zero load."""


class MetricsWarmingUp(MetricsUnavailable):
    """A counter-rating source's first reading: no interval to rate over yet.

    Its own type so that the engine can tell a normal start (this scrape is the baseline,
    logged at INFO) from a failure, without reading the message. It is still a
    MetricsUnavailable: a caller that does not know it must not take it for zero load.
    """


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """vLLM quantities for one (namespace, model) over the collection window.

    Units are the optimizer's: requests/minute, tokens per request, milliseconds.
    Optional fields are None when the server did not report them.
    """

    namespace: str
    model: str
    arrival_rate_rpm: float = 0.0
    avg_prompt_tokens: float = 0.0
    avg_output_tokens: float = 0.0
    itl_ms: float | None = None
    queue_time_ms: float | None = None
    ttft_ms: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None  # ratio 0..1
    # requests decoding, time-averaged over the window and summed over the pods: the
    # rate of the per-token latency histogram's sum (each decode step adds its duration
    # once per request in it). Over the serving replicas, the batch the ITL was seen at.
    decoding: float | None = None


@dataclass(frozen=True, slots=True)
class LoadReport:
    loads: Mapping[LoadKey, ModelLoad] = field(default_factory=dict)
    # how many backend requests this report cost (for the batching guarantee)
    queries: int = 0
    # keys whose load is known to be partial this cycle (e.g. a pod failed to scrape),
    # with why; their loads, if any, must not be sized on
    incomplete: Mapping[LoadKey, str] = field(default_factory=dict)
    # every model name the pods' series carried, by namespace (wanted or not): what a VA
    # whose modelID matches none of them is told the pods serve instead (llm-d/llm-d#2310)
    served: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def find(self, namespace: str, model: str) -> ModelLoad | None:
        """The load for a key, or None if no series at all named it."""
        return self.loads.get((namespace, model))

    def get(self, namespace: str, model: str) -> ModelLoad:
        """The load for a key, or a zero load if absent (for display; sizing uses `find`)."""
        found = self.loads.get((namespace, model))
        return found if found is not None else ModelLoad(namespace=namespace, model=model)


def served_models(keys: Iterable[LoadKey]) -> dict[str, frozenset[str]]:
    """The model names of these keys, by namespace (`LoadReport.served`)."""
    served: dict[str, set[str]] = {}
    for namespace, model in keys:
        served.setdefault(namespace, set()).add(model)
    return {namespace: frozenset(models) for namespace, models in served.items()}


class MetricsSource(Protocol):
    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        """Read the current load for these keys; raise MetricsUnavailable on failure."""
        ...

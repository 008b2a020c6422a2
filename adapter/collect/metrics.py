"""What the optimizer needs to know about live traffic, whatever the source.

Both metric sources (Prometheus and direct pod scraping) produce the same
`LoadReport`, keyed by (namespace, model name) as vLLM labels its series.
A key absent from the report means no traffic in the window: zero load, not an
error. A source that cannot answer at all raises `MetricsUnavailable`, so the cycle
fails loudly instead of scaling a service to zero.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

LoadKey = tuple[str, str]  # (namespace, model_name)


class MetricsUnavailable(RuntimeError):
    """The metrics backend could not be read; the cycle must not use zero load."""


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


@dataclass(frozen=True, slots=True)
class LoadReport:
    loads: Mapping[LoadKey, ModelLoad] = field(default_factory=dict)
    # how many backend requests this report cost (for the batching guarantee)
    queries: int = 0

    def get(self, namespace: str, model: str) -> ModelLoad:
        """The load for a key, or an explicit zero load if it had no traffic."""
        found = self.loads.get((namespace, model))
        return found if found is not None else ModelLoad(namespace=namespace, model=model)


class MetricsSource(Protocol):
    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        """Read the current load for these keys; raise MetricsUnavailable on failure."""
        ...

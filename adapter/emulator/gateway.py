"""The emulated gateway's EPP series: what an llm-d router exports for the pool it fronts.

The names and labels are `adapter.gateway_metrics`' (both names of each family, as
llm-d's EPP exports them). One fairness flow and one priority, one pool; the model
asked for is the model served (no rewrite). The series exist from the start, at 0: an
EPP that has queued before (a fresh EPP creates them at its first queued request).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from adapter.gateway_metrics import (
    QUEUE_BYTES,
    QUEUE_LABELS,
    QUEUE_SIZE,
    RUNNING,
    RUNNING_ALIAS_LABELS,
    RUNNING_LABELS,
    GatewayFamily,
)

FAIRNESS_ID = "default-flow"
PRIORITY = "0"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    """The gateway's registry; the values are read from the callables at scrape time."""

    def __init__(
        self,
        model: str,
        pool: str,
        *,
        waiting: Callable[[], float],
        waiting_bytes: Callable[[], float],
        running: Callable[[], float],
    ) -> None:
        self.registry = CollectorRegistry()
        queue = {"fairness_id": FAIRNESS_ID, "priority": PRIORITY, "inference_pool": pool}
        queue |= {"model_name": model, "target_model_name": model}
        flow = {"model_name": model, "target_model_name": model}
        flow |= {"fairness_id": FAIRNESS_ID, "priority": PRIORITY}
        for family, read in ((QUEUE_SIZE, waiting), (QUEUE_BYTES, waiting_bytes)):
            for name in family.names:
                self._gauge(name, family, QUEUE_LABELS, queue, read)
        self._gauge(RUNNING.name, RUNNING, RUNNING_LABELS, flow, running)
        self._gauge(RUNNING.alias, RUNNING, RUNNING_ALIAS_LABELS, {"model_name": model}, running)

    def _gauge(
        self,
        name: str,
        family: GatewayFamily,
        labels: tuple[str, ...],
        values: dict[str, str],
        read: Callable[[], float],
    ) -> None:
        gauge = Gauge(name, family.documentation, labels, registry=self.registry)
        gauge.labels(**{label: values[label] for label in labels}).set_function(read)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

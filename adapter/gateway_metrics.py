"""The inference gateway's (llm-d router / GIE endpoint picker, "EPP") metric vocabulary.

One module, like `adapter.vllm_metrics`: the readers (EPP scraping, PromQL) and the
emulator's gateway name these series from here only. Pure, standard library only.

What the adapter reads of the EPP, and why: the flow-control queue holds requests for a
pool that cannot take them yet, above all a pool with no ready pod. It is the only
signal that a model scaled to zero has work waiting (no pod, no vLLM series).

Each quantity has two names. llm-d's EPP renamed the family to the `llm_d_epp_` prefix
and keeps the `inference_extension_` / `inference_objective_` names as deprecated
aliases, exporting both; the upstream GIE EPP exports the old names only. A reader takes
the new name when the answer has any sample of it, else the old one: never both (they
mirror each other, and adding them would count every request twice).

Sources (names, types and label names; no code taken):
- llm-d/llm-d-inference-scheduler `pkg/epp/metrics/metrics.go` at
  520af47896e5f06e43d09aca281a1149187b0ffd: `inference_extension_flow_control_queue_size`
  and `_queue_bytes` (gauges; labels fairness_id, priority, inference_pool, model_name,
  target_model_name), `inference_objective_running_requests` (gauge; label model_name).
- llm-d/llm-d-autoscaling `internal/constants/metrics.go` at
  3300e6f85e8de133217c236d9adb9c7d50bcd60d: `llm_d_epp_flow_control_queue_size` and
  `llm_d_epp_flow_control_queue_bytes`, same labels, "no namespace label" (GIE #2309).
- llm-d/llm-d-inference-scheduler `pkg/epp/metrics/metrics.go` at
  490ffc75832ef3e8ab83d72ad7dca2c29def5774 (stored copy; the deprecation note naming it is
  in a later version): `llm_d_epp_request_running` replaces
  `inference_objective_running_requests` and adds target_model_name.

Matching a series to a VA: the EPP labels a queue with the model the request asked for
(`model_name`) and the model it is sent to after any rewrite (`target_model_name`); the
served model, which a VA's `modelID` names, is the target. The EPP adds no namespace
label. Prometheus adds the scraped pod's `namespace` as a target label under the usual
ServiceMonitor/PodMonitor relabelling, and a scraped EPP endpoint is configured with the
namespace it serves; a series with neither is matched by model name alone, which is
ambiguous when VAs in several namespaces serve that name (`adapter.collect.gateway`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class GatewayFamily:
    """One EPP gauge: its current name and the deprecated alias it replaces."""

    name: str
    alias: str
    documentation: str

    @property
    def names(self) -> tuple[str, str]:
        """Both names, the preferred first."""
        return (self.name, self.alias)


QUEUE_SIZE: Final = GatewayFamily(
    "llm_d_epp_flow_control_queue_size",
    "inference_extension_flow_control_queue_size",
    "Current number of requests actively held in the Flow Control queue.",
)
QUEUE_BYTES: Final = GatewayFamily(
    "llm_d_epp_flow_control_queue_bytes",
    "inference_extension_flow_control_queue_bytes",
    "Current total size in bytes of requests actively held in the Flow Control queue.",
)
RUNNING: Final = GatewayFamily(
    "llm_d_epp_request_running",
    "inference_objective_running_requests",
    "Number of requests the gateway is handling, per model.",
)
FAMILIES: Final = (QUEUE_SIZE, QUEUE_BYTES, RUNNING)

# label names
TARGET_MODEL: Final = "target_model_name"
MODEL: Final = "model_name"
POOL: Final = "inference_pool"
FAIRNESS_ID: Final = "fairness_id"
PRIORITY: Final = "priority"
NAMESPACE: Final = "namespace"  # a Prometheus target label, never the EPP's own

# The queue's labels, in the EPP's order; the running gauge's old name has model_name only.
QUEUE_LABELS: Final = (FAIRNESS_ID, PRIORITY, POOL, MODEL, TARGET_MODEL)
RUNNING_LABELS: Final = (MODEL, TARGET_MODEL, FAIRNESS_ID, PRIORITY)
RUNNING_ALIAS_LABELS: Final = (MODEL,)


def family_of(name: str) -> GatewayFamily | None:
    """The family a sample name belongs to (either of its names), or None."""
    for family in FAMILIES:
        if name in family.names:
            return family
    return None

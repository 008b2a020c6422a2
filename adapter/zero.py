"""Scale to zero and back: when an idle variant may go to 0, and what wakes it.

Pure (no I/O; time is passed in). Only in use with `--min-replicas 0`, where the
optimizer sizes an idle variant at 0 replicas.

- **To zero, after a retention.** A variant goes to 0 only once it has seen no traffic
  (no arrivals, nothing running or waiting in its pods or at the gateway) for
  `retention_s`; until then it is held at one replica. A variant first seen with
  replicas starts its retention then: an adapter restart never parks a service at once.
- **From zero, on the gateway's queue.** A model at 0 replicas has no pod and no vLLM
  series; requests held for it at the gateway (`adapter.collect.gateway`) wake it, to
  enough replicas that every waiting request finds a batch slot:
  `max(1, ceil(waiting / max_batch))`. Once its pods serve, vLLM's measured load sizes
  it as usual. The `Waker` (adapter/waker.py) checks the queue between cycles, so a
  wake-up does not wait for the next cycle.
- **Unknown is never zero.** A variant at 0 whose gateway queue is unknown (gateway
  unreadable, no flow-control queue exported, series that cannot be told apart between
  namespaces) is left unsolved, with the reason: nobody can say that nothing waits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: this module imports nothing that does I/O
    from adapter.collect.gateway import GatewayReport
    from adapter.engine import VariantDecision, VariantKey

DEFAULT_RETENTION_S = 600.0  # WVA's scale-to-zero enforcer held idle variants 10 minutes


def wake_replicas(waiting: float, max_batch: int | None) -> int:
    """Replicas whose batch slots hold every waiting request at once (at least one)."""
    if max_batch is None or max_batch < 1:
        return 1
    return max(1, math.ceil(waiting / max_batch))


def has_traffic(decision: VariantDecision, waiting_at_gateway: float | None) -> bool:
    """Arrivals, requests in the pods, or requests held at the gateway."""
    load = decision.load
    in_pods = load is not None and (
        load.arrival_rate_rpm > 0 or (load.running or 0) > 0 or (load.waiting or 0) > 0
    )
    return in_pods or bool(waiting_at_gateway)


@dataclass
class ScaleToZero:
    """When each variant last had traffic, and the rules above."""

    retention_s: float = DEFAULT_RETENTION_S

    def __post_init__(self) -> None:
        if not self.retention_s >= 0:
            raise ValueError("retention_s must be >= 0")
        self._last_active: dict[VariantKey, float] = {}

    def wake(self, key: VariantKey, at: float) -> None:
        """The gateway holds requests for this variant's model (seen between cycles)."""
        self._last_active[key] = at

    def last_active(self, key: VariantKey) -> float | None:
        return self._last_active.get(key)

    def apply(
        self,
        decisions: Mapping[VariantKey, VariantDecision],
        gateway: GatewayReport | None,
        at: float,
    ) -> dict[VariantKey, VariantDecision]:
        """The decisions with the retention and the wake-ups applied (None: no gateway)."""
        for key in self._last_active.keys() - decisions.keys():
            del self._last_active[key]  # the VA is gone
        return {key: self._decide(key, d, gateway, at) for key, d in decisions.items()}

    def _decide(
        self, key: VariantKey, decision: VariantDecision, gateway: GatewayReport | None, at: float
    ) -> VariantDecision:
        if decision.desired_replicas is None:
            return decision
        parked = not decision.current_replicas
        load_key = (decision.namespace, decision.model)
        waiting = gateway.waiting(load_key) if gateway is not None else None
        if has_traffic(decision, waiting):
            self._last_active[key] = at
        elif key not in self._last_active and not parked:
            self._last_active[key] = at  # first seen serving: its retention starts now
        if parked and gateway is not None and waiting is None:
            return replace(
                decision,
                desired_replicas=None,
                reason=f"gateway queue unknown for a variant at 0 replicas: "
                f"{gateway.why_unknown(load_key)}; whether requests wait cannot be told",
            )
        if parked and waiting:
            woken = wake_replicas(waiting, decision.max_batch)
            if woken > decision.desired_replicas:
                return replace(
                    decision,
                    desired_replicas=woken,
                    cost=None,
                    reason=f"woken from zero: {waiting:g} requests wait at the gateway"
                    f" for model {decision.model}",
                )
            return decision
        since = self._last_active.get(key)
        if decision.desired_replicas == 0 and since is not None and at - since < self.retention_s:
            return replace(
                decision,
                desired_replicas=1,
                cost=None,
                reason=f"held at 1 replica: no traffic for {at - since:.0f} s of the"
                f" {self.retention_s:g} s before scaling to zero",
            )
        return decision

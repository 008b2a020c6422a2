"""Scale to zero and back: when an idle variant may go to 0, and what wakes it.

Pure (no I/O; time is passed in). Only in use with `--min-replicas 0`, where the
optimizer sizes an idle variant at 0 replicas.

- **To zero, after a retention.** A variant goes to 0 only once it has seen no traffic
  (no arrivals, nothing running or waiting in its pods or at the gateway) for
  `retention_s`; until then it is held at one replica. A variant first seen with
  replicas starts its retention then: an adapter restart never parks a service at once.
- **From zero, on the gateway's queue.** A model at 0 replicas has no pod and no vLLM
  series; requests held for it at the gateway (`adapter.collect.gateway`) wake it, to
  the replicas that decode them at once within the ITL SLO: `ceil(held / slo_batch)`
  (at least one), `slo_batch` being the batch whose step time is the SLO. The `Waker`
  (adapter/waker.py) checks the queue between cycles, so a wake-up does not wait for
  the next cycle: it sees the first request, and wakes one replica.
- **While the woken pods start.** They serve no series yet, then series without a rate
  (requests in flight, none completed in the window), so the cycle cannot size the
  variant from vLLM (its decision is "metrics missing", then "metrics incomplete"), and
  an UNAVAILABLE answer would end KEDA's StreamIsActive stream at every wake-up (KEDA
  backs off its reconnects after an error, up to a minute). A variant this policy woke
  keeps the replicas it was woken to, as a decision (not UNAVAILABLE), until its pods
  serve and vLLM's measured load sizes it. Not more for the backlog that builds
  meanwhile: its requests have missed the TTFT SLO already, and replicas started for
  them come a start-up later, when the first pod has mostly served them (a ready pod
  batches them up to vLLM's `--max-num-seqs`, or queues them past it, and the router
  holds the rest while the pod is saturated). Measured with `bench/from_zero.py` at a
  60 s start-up (and a 600 s retention): sizing for the backlog (during the start-up
  and while the router held requests) took 2.55 and 2.64 GPU-hours on its two traces,
  against 1.41 and 1.31 without, for the same ITL attainment.
- **Requests held at the gateway are arrivals.** While the pool is saturated the router
  holds requests, and no vLLM series counts them: the pods' arrival estimate
  (completions plus the growth of their requests) caps at what they serve, and a loop
  sized on it would never add the replica the held load needs. `held_arrivals` adds the
  growth of the gateway's queue over the cycle to the estimate: by conservation, the
  arrival rate at the gateway.
- **Unknown is never zero.** A variant at 0 whose gateway queue is unknown (gateway
  unreadable, a garbage value, series that cannot be told apart between namespaces) is
  left unsolved, with the reason: nobody can say that nothing waits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from adapter.collect.metrics import LoadKey, LoadReport, ModelLoad
from adapter.defaults import DEFAULT_RETENTION_S

if TYPE_CHECKING:  # types only: this module imports nothing that does I/O
    from adapter.collect.gateway import GatewayReport
    from adapter.engine import VariantDecision, VariantKey

# how the engine's reasons start for a VA whose pods serve no series yet while it has
# replicas, and for one whose first series have no rate yet (requests in flight, no
# completion in the window): both are a woken variant's first cycles
STARTING_REASONS = ("metrics missing", "metrics incomplete")


def backlog_replicas(
    requests: float, slo_batch: int | None, max_replicas: int | None = None
) -> int:
    """Replicas that decode `requests` at once within the ITL SLO (at least one, at most
    the VA's `max_replicas`)."""
    wanted = 1 if slo_batch is None or slo_batch < 1 else max(1, math.ceil(requests / slo_batch))
    return wanted if max_replicas is None else max(1, min(wanted, max_replicas))


def has_traffic(decision: VariantDecision, waiting_at_gateway: float | None) -> bool:
    """Arrivals, requests in the pods, or requests held at the gateway."""
    load = decision.load
    in_pods = load is not None and (
        load.arrival_rate_rpm > 0 or (load.running or 0) > 0 or (load.waiting or 0) > 0
    )
    return in_pods or bool(waiting_at_gateway)


class HeldArrivals:
    """Adds the growth of the gateway's queue to each model's arrival rate (see above)."""

    def __init__(self) -> None:
        self._held: dict[LoadKey, tuple[float, float]] = {}  # key -> (when, held)

    def adjust(self, loads: LoadReport, gateway: GatewayReport | None, at: float) -> LoadReport:
        """`loads` with each rate plus the queue's growth (requests/minute) since the last
        cycle, clamped at zero; keys whose queue is unknown now or then are left alone."""
        if gateway is None:
            return loads
        previous, self._held = self._held, {}
        adjusted: dict[LoadKey, ModelLoad] = {}
        for key in {*loads.loads, *gateway.queues}:
            held = gateway.waiting(key)
            if held is None:
                continue
            self._held[key] = (at, held)
            before, load = previous.get(key), loads.loads.get(key)
            if before is None or load is None or at <= before[0]:
                continue
            growth_rpm = (held - before[1]) / (at - before[0]) * 60.0
            if growth_rpm:
                rate = max(0.0, load.arrival_rate_rpm + growth_rpm)
                adjusted[key] = replace(load, arrival_rate_rpm=rate)
        if not adjusted:
            return loads
        return replace(loads, loads={**loads.loads, **adjusted})


@dataclass
class ScaleToZero:
    """When each variant last had traffic, what it was woken to, and the rules above."""

    retention_s: float = DEFAULT_RETENTION_S

    def __post_init__(self) -> None:
        if not self.retention_s >= 0:
            raise ValueError("retention_s must be >= 0")
        self._last_active: dict[VariantKey, float] = {}
        # variants woken from zero whose pods serve no series yet -> (the replicas they
        # were woken to, the decision that woke them)
        self._starting: dict[VariantKey, tuple[int, VariantDecision]] = {}

    def wake(self, key: VariantKey, at: float, decision: VariantDecision) -> None:
        """`decision` (the variant woken, with its replicas) was published between cycles."""
        self._last_active[key] = at
        self._starting[key] = (decision.desired_replicas or 1, decision)

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
        for key in self._starting.keys() - decisions.keys():
            del self._starting[key]
        return {
            key: _with_gateway(self._decide(key, d, gateway, at), gateway)
            for key, d in decisions.items()
        }

    def _decide(
        self, key: VariantKey, decision: VariantDecision, gateway: GatewayReport | None, at: float
    ) -> VariantDecision:
        if decision.desired_replicas is None:
            return self._starting_up(key, decision, gateway, at)
        self._starting.pop(key, None)  # its pods serve (or it is parked): sized as usual
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
            woken = backlog_replicas(waiting, decision.slo_batch, decision.max_replicas)
            if woken > decision.desired_replicas:
                self._starting[key] = (woken, decision)
                return replace(
                    decision,
                    desired_replicas=woken,
                    cost=None,
                    reason=f"woken from zero: {waiting:g} requests wait at the gateway"
                    f" for model {decision.model}",
                )
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

    def _starting_up(
        self, key: VariantKey, decision: VariantDecision, gateway: GatewayReport | None, at: float
    ) -> VariantDecision:
        """An unsolved decision: kept at its wake replicas if it is a variant woken from
        zero whose pods give no rate yet; left as it is otherwise."""
        starting = self._starting.get(key)
        if starting is None or gateway is None or not decision.reason.startswith(STARTING_REASONS):
            return decision
        woken_to, solved = starting
        waiting = gateway.waiting((solved.namespace, solved.model))
        if waiting is None:
            return decision
        if waiting:
            self._last_active[key] = at
        return replace(
            solved,
            desired_replicas=woken_to,
            current_replicas=decision.current_replicas,
            load=decision.load,
            cost=None,
            reason=f"starting from zero: {waiting:g} requests wait at the gateway while no"
            f" pod serves yet ({decision.reason})",
        )


def _with_gateway(decision: VariantDecision, gateway: GatewayReport | None) -> VariantDecision:
    """The decision with what the gateway held for its model, when known."""
    if gateway is None or not decision.model:
        return decision
    return replace(decision, gateway_waiting=gateway.waiting((decision.namespace, decision.model)))

"""Wake variants at zero between cycles, as soon as requests wait at the gateway for them.

A cycle runs every 15 s; a request waiting for a model at 0 replicas should not wait for
the next one before KEDA hears of it. The waker polls the gateway (`poll_s`, 0.25 s by
default) for the models of the variants the latest snapshot parks at zero, and when
requests wait for one it publishes that snapshot again with the variant woken
(`Engine.publish_woken`): the scaler's StreamIsActive pushes `true` at once and IsActive
answers it, and the retention (`adapter.zero.ScaleToZero.wake`) keeps the next cycles
from putting it back to zero before its pods serve. Only parked variants cost a
gateway read, and none is made while nothing is parked.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from adapter.clock import Clock, sleep_unless
from adapter.collect.gateway import GatewaySource
from adapter.engine import Engine, Snapshot, VariantDecision, VariantKey
from adapter.zero import ScaleToZero, backlog_replicas

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 0.25


def parked(snapshot: Snapshot) -> dict[VariantKey, VariantDecision]:
    """The variants the snapshot keeps at zero: decided 0 with no replica now."""
    return {
        key: d
        for key, d in snapshot.decisions.items()
        if d.desired_replicas == 0 and not d.current_replicas
    }


class Waker:
    def __init__(
        self,
        engine: Engine,
        gateway: GatewaySource,
        zero: ScaleToZero,
        clock: Clock,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        if not poll_s > 0:
            raise ValueError("poll_s must be > 0")
        self._engine = engine
        self._gateway = gateway
        self._zero = zero
        self._clock = clock
        self.poll_s = poll_s
        self.wakes_total = 0

    def poll(self) -> Snapshot | None:
        """One look at the gateway; the snapshot published if it woke a variant."""
        snapshot = self._engine.latest
        if snapshot is None:
            return None
        candidates = parked(snapshot)
        if not candidates:
            return None
        report = self._gateway.collect({(d.namespace, d.model) for d in candidates.values()})
        at = self._clock.monotonic()
        woken: dict[VariantKey, VariantDecision] = {}
        for key, decision in candidates.items():
            waiting = report.waiting((decision.namespace, decision.model))
            if not waiting:
                continue
            woken[key] = replace(
                decision,
                desired_replicas=backlog_replicas(
                    waiting, decision.slo_batch, decision.max_replicas
                ),
                cost=None,
                reason=f"woken from zero between cycles: {waiting:g} requests wait at the"
                f" gateway for model {decision.model}",
            )
            self._zero.wake(key, at, woken[key])
        if not woken:
            return None
        published = self._engine.publish_woken(snapshot, woken)
        if published is not None:
            self.wakes_total += len(woken)
        return published

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every `poll_s` until `stop`; a failed poll is logged and retried."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.poll)
            except Exception:
                log.exception("waker: polling the gateway failed")
            await sleep_unless(self._clock, self.poll_s, stop)

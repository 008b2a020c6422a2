"""Kubernetes Lease leader election (coordination.k8s.io/v1), as client-go's leaderelection.

Every adapter replica computes the same decisions; only the leader writes VA status.
Candidates share one Lease. Each `step()` (every `retry_period_s`):

- reads the Lease (creating it, held by us, when it does not exist);
- remembers when it last saw the Lease *change*, on its own monotonic clock. Like
  client-go, a candidate never compares its clock with the `renewTime` written by
  another machine: the holder has lost the Lease once the record has not changed for
  `lease_duration_s` of the observer's own time;
- takes the Lease when it is free (no holder, or expired) or ours, with a PUT carrying
  the `resourceVersion` it read, so two candidates racing get one 409 Conflict loser.

The leader counts as leader (`is_leader`) only while its last successful renewal is
younger than `renew_deadline_s` (< `lease_duration_s`), so it stops writing before
anybody else can take over. `release()` (on shutdown) empties `holderIdentity` so a
successor does not wait for the expiry. Time comes from an injected `Clock`; tests
advance a `ManualClock` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from adapter.clock import Clock, sleep_unless

__all__ = ["LeaderElector", "LeaderSettings", "default_identity"]

log = logging.getLogger(__name__)


def default_identity() -> str:
    """The pod name (`POD_NAME` from the downward API, else the hostname, which is it)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


@dataclass(frozen=True, slots=True)
class LeaderSettings:
    namespace: str
    name: str = "wva-adapter-leader"
    identity: str = field(default_factory=default_identity)
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    request_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("leader election needs a non-empty identity")
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                "need 0 < retry_period_s < renew_deadline_s < lease_duration_s, got "
                f"{self.retry_period_s}, {self.renew_deadline_s}, {self.lease_duration_s}"
            )


_Record = tuple[str, int, Any, Any, int]  # holder, duration, acquire, renew, transitions


def _record(lease: client.V1Lease) -> _Record:
    spec = lease.spec or client.V1LeaseSpec()
    return (
        spec.holder_identity or "",
        int(spec.lease_duration_seconds or 0),
        spec.acquire_time,
        spec.renew_time,
        int(spec.lease_transitions or 0),
    )


class LeaderElector:
    """One candidate. Call `step()` periodically (or `run(stop)`), read `is_leader`."""

    def __init__(
        self,
        api: client.CoordinationV1Api,
        settings: LeaderSettings,
        clock: Clock,
        *,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._api = api
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._observed: _Record | None = None
        self._observed_at = 0.0  # our monotonic time when a read first returned the record
        self._renewed_at: float | None = None  # our monotonic time of the last renewal
        self._leading = False  # as last reported to `on_change`
        self.errors_total = 0  # failed API calls (409 races excluded)

    @property
    def identity(self) -> str:
        return self.settings.identity

    @property
    def is_leader(self) -> bool:
        if self._renewed_at is None:
            return False
        return self._clock.monotonic() - self._renewed_at < self.settings.renew_deadline_s

    @property
    def holder(self) -> str:
        """The holder as last observed ("" when free or unknown)."""
        return self._observed[0] if self._observed else ""

    # ------------------------------------------------------------ one attempt

    def step(self) -> bool:
        """Try to acquire or renew once; returns `is_leader` afterwards. Never raises."""
        try:
            self._try_acquire_or_renew()
        except client.ApiException as error:
            if error.status != 409:
                self.errors_total += 1
            log.log(
                logging.DEBUG if error.status == 409 else logging.WARNING,
                "lease %s/%s: %s %s",
                self.settings.namespace,
                self.settings.name,
                error.status,
                error.reason,
            )
        except Exception as error:  # connection refused, timeouts
            self.errors_total += 1
            log.warning("lease %s/%s: %s", self.settings.namespace, self.settings.name, error)
        self._set_leading(self.is_leader)
        return self.is_leader

    def _try_acquire_or_renew(self) -> None:
        """Read, then take or renew the Lease when it is free or ours.

        Two times, as client-go: a renewal counts from before its requests (`now`: the
        holder's deadline errs early), a record is observed when its read returns (a slow
        read must not back-date the holder's renewal and let us take a live Lease).
        """
        s = self.settings
        now = self._clock.monotonic()
        stamp = _micro_time(self._clock.now())
        try:
            lease = self._api.read_namespaced_lease(
                s.name, s.namespace, _request_timeout=s.request_timeout_s
            )
        except client.ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=s.name, namespace=s.namespace),
                spec=self._spec(stamp, stamp, transitions=0),
            )
            created = self._api.create_namespaced_lease(
                s.namespace, body, _request_timeout=s.request_timeout_s
            )
            self._observe(created, self._clock.monotonic())
            self._renewed(now)
            log.info("lease %s/%s: created and acquired by %s", s.namespace, s.name, s.identity)
            return

        record = _record(lease)
        if record != self._observed:
            self._observe(lease, self._clock.monotonic())
        holder, duration, acquired, _renew, transitions = record
        ours = holder == s.identity
        expired = self._observed_at + duration <= now
        if holder and not ours and not expired:
            self._renewed_at = None  # somebody else holds a live lease (maybe taken from us)
            return
        spec = self._spec(
            acquired if ours and acquired is not None else stamp,
            stamp,
            transitions=transitions if ours else transitions + 1,
        )
        lease.spec = spec
        updated = self._api.replace_namespaced_lease(
            s.name, s.namespace, lease, _request_timeout=s.request_timeout_s
        )
        self._observe(updated, self._clock.monotonic())
        self._renewed(now)
        if not ours:
            log.info(
                "lease %s/%s: acquired by %s (previous holder %r)",
                s.namespace,
                s.name,
                s.identity,
                holder,
            )

    def _spec(self, acquired: Any, renewed: Any, *, transitions: int) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.settings.identity,
            lease_duration_seconds=max(1, round(self.settings.lease_duration_s)),
            acquire_time=acquired,
            renew_time=renewed,
            lease_transitions=transitions,
        )

    def _observe(self, lease: client.V1Lease, now: float) -> None:
        self._observed = _record(lease)
        self._observed_at = now

    def _renewed(self, now: float) -> None:
        self._renewed_at = now

    def _set_leading(self, leading: bool) -> None:
        was = self._leading
        self._leading = leading
        if leading != was:
            log.info(
                "lease %s/%s: %s %s leadership",
                self.settings.namespace,
                self.settings.name,
                self.settings.identity,
                "gained" if leading else "lost",
            )
            if self._on_change is not None:
                self._on_change(leading)

    # ------------------------------------------------------------ shutdown

    def release(self) -> bool:
        """Give the Lease up if we hold it (holder emptied, duration 1 s). True if released."""
        s = self.settings
        if self.holder != s.identity:
            return False
        self._renewed_at = None
        self._set_leading(False)
        try:
            lease = self._api.read_namespaced_lease(
                s.name, s.namespace, _request_timeout=s.request_timeout_s
            )
            spec = lease.spec or client.V1LeaseSpec()
            if spec.holder_identity != s.identity:
                return False
            stamp = _micro_time(self._clock.now())
            lease.spec = client.V1LeaseSpec(
                holder_identity="",
                lease_duration_seconds=1,
                acquire_time=stamp,
                renew_time=stamp,
                lease_transitions=spec.lease_transitions,
            )
            self._api.replace_namespaced_lease(
                s.name, s.namespace, lease, _request_timeout=s.request_timeout_s
            )
        except Exception as error:
            self.errors_total += 1
            log.warning("lease %s/%s: release failed: %s", s.namespace, s.name, error)
            return False
        log.info("lease %s/%s: released by %s", s.namespace, s.name, s.identity)
        return True

    # ------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        """`step()` every `retry_period_s` until `stop` is set, then `release()`."""
        try:
            while not stop.is_set():
                await asyncio.to_thread(self.step)
                await sleep_unless(self._clock, self.settings.retry_period_s, stop)
        finally:
            await asyncio.to_thread(self.release)


def _micro_time(wall: float) -> datetime:
    """A Lease MicroTime: UTC with microseconds."""
    return datetime.fromtimestamp(wall, tz=UTC)

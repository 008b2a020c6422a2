"""KEDA ExternalScaler servicer: serves the latest snapshot's desired replicas.

The servicer never computes anything: it reads the latest snapshot through a
`SnapshotSource` (a callable returning a `ServedSnapshot` or None) and measures its age
with the injected `Clock`. A `ServedSnapshot` is what the scaler needs of a snapshot: the
engine's `Snapshot` is one, and so is the compact copy a serving process receives
(`adapter.scaler.feed`). Answers, per ScaledObjectRef (VA chosen by
`metadata.variant_key`):

- `GetMetrics`: one MetricValue, the VA's desired replicas in `metricValue` and
  `metricValueFloat` (metricName echoes the request's, or `wva-<ns>-<name>` if empty).
- `IsActive`: desired replicas > 0.
- `StreamIsActive`: the current activity at once, then again whenever it changes (checked
  on every `notify()`, i.e. every new snapshot) and every `heartbeat_s`; a clean end of
  stream on `close()` (server shutdown). If the answer becomes an error (stale snapshot,
  VA gone or unsolved) the stream ends with that error; KEDA reconnects with backoff.
- `GetMetricSpec`: one MetricSpec `wva-<ns>-<name>`, targetSize 1 / targetSizeFloat 1.0,
  for any well-formed ScaledObjectRef, from the first second: before any cycle, with a
  stale snapshot, and for a VA no snapshot has seen. The spec depends only on the
  reference, and refusing it is harmful: KEDA below 2.20 then builds its HPA with no
  metric, Kubernetes fills in its default (CPU 80 %), and KEDA never repairs it
  (kedacore/keda#7729, fixed in 2.20 by #7777). With the spec in place the HPA exists
  from the start and freezes on GetMetrics' UNAVAILABLE / NOT_FOUND until there is a
  decision.
- `StreamMetricSpec`: the same spec once, then the stream stays open until shutdown.

Errors: bad metadata -> INVALID_ARGUMENT naming the key (every RPC, GetMetricSpec
included). GetMetrics / IsActive / StreamIsActive only: VA not in a fresh snapshot ->
NOT_FOUND naming namespace/name; no snapshot yet, snapshot older than `staleness_s`, or
the VA not solved (`desired_replicas is None`) -> UNAVAILABLE with the reason. A VA that
is not solved never gets a number (no 0, no NaN): KEDA's fallback and the HPA's freeze
protect the service instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn, Protocol

import grpc

from adapter._proto import externalscaler_pb2 as pb
from adapter.clock import Clock
from adapter.scaler.metadata import MetadataError, metric_name, variant_key

log = logging.getLogger(__name__)

VariantKey = tuple[str, str]  # (namespace, name), as in adapter.engine


class ServedDecision(Protocol):
    """What the scaler reads of one VA's decision (`adapter.engine.VariantDecision` is one)."""

    @property
    def desired_replicas(self) -> int | None: ...

    @property
    def reason(self) -> str: ...


class ServedSnapshot(Protocol):
    """What the scaler reads of a snapshot (`adapter.engine.Snapshot` is one).

    `monotonic` is when the cycle started on the clock the service is given, so the
    service can tell the snapshot's age at every call.
    """

    @property
    def cycle(self) -> int: ...

    @property
    def monotonic(self) -> float: ...

    @property
    def decisions(self) -> Mapping[VariantKey, ServedDecision]: ...


SnapshotSource = Callable[[], ServedSnapshot | None]

# Answers kept per snapshot (a client choosing metric names at will cannot grow it further)
MAX_CACHED_ANSWERS = 20_000

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name


@dataclass(frozen=True, slots=True)
class ScalerSettings:
    staleness_s: float = 45.0  # a snapshot older than this is not served (3 x 15 s cycles)
    heartbeat_s: float = 10.0  # StreamIsActive repeats the current answer this often

    def __post_init__(self) -> None:
        if not self.staleness_s > 0:
            raise ValueError("staleness_s must be > 0")
        if not self.heartbeat_s > 0:
            raise ValueError("heartbeat_s must be > 0")

    @classmethod
    def for_interval(
        cls, interval_s: float, *, cycles: float = 3.0, heartbeat_s: float = 10.0
    ) -> ScalerSettings:
        """Staleness = `cycles` x the engine's cycle interval (default 3 missed cycles)."""
        return cls(staleness_s=cycles * interval_s, heartbeat_s=heartbeat_s)


class Refusal(Exception):
    """An RPC answer that is a gRPC status, not a value."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Readiness:
    serving: bool
    reason: str


class _Signal:
    """A broadcast 'something changed': waiters take `current()` then wait on it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


class ScalerService:
    """The `externalscaler.ExternalScaler` servicer (grpc.aio), reading only snapshots.

    Register with `adapter._proto.externalscaler_pb2_grpc.add_ExternalScalerServicer_to_server`
    (ScalerServer does). `notify()` is thread-safe: call it when a snapshot is published.
    """

    def __init__(
        self, source: SnapshotSource, clock: Clock, settings: ScalerSettings | None = None
    ) -> None:
        self._source = source
        self._clock = clock
        self.settings = settings or ScalerSettings()
        self._changed = _Signal()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._answered: ServedSnapshot | None = None  # the snapshot `_answers` were built from
        self._answers: dict[tuple[VariantKey, str], pb.GetMetricsResponse] = {}

    # -- wiring ---------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the server runs on (needed for `notify` from other threads)."""
        self._loop = loop

    def notify(self) -> None:
        """A new snapshot is out (or time moved on): re-evaluate open streams. Thread-safe."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._changed.fire()
        else:
            loop.call_soon_threadsafe(self._changed.fire)

    def changed(self) -> asyncio.Event:
        """An event set at the next `notify()`/`close()` (take it before reading state)."""
        return self._changed.current()

    def close(self) -> None:
        """End the open streams cleanly (server shutdown). Call on the server's loop."""
        self._closing = True
        self._changed.fire()

    @property
    def closing(self) -> bool:
        return self._closing

    def readiness(self) -> Readiness:
        """SERVING iff there is a snapshot no older than the staleness limit."""
        snapshot = self._source()
        if snapshot is None:
            return Readiness(False, "no optimization result yet")
        age = self._clock.monotonic() - snapshot.monotonic
        if age > self.settings.staleness_s:
            return Readiness(False, _stale_message(snapshot, age, self.settings.staleness_s))
        return Readiness(True, f"cycle {snapshot.cycle}, {age:.1f} s old")

    # -- answers (pure reads of the latest snapshot) -----------------------------------

    def resolve(self, ref: pb.ScaledObjectRef) -> VariantKey:
        try:
            return variant_key(ref.name, ref.namespace, ref.scalerMetadata)
        except MetadataError as error:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"bad ScaledObject trigger metadata for {ref.namespace}/{ref.name}: {error}",
            ) from None

    def decision(self, key: VariantKey) -> ServedDecision:
        """The solved decision for a VA, or Refusal (UNAVAILABLE / NOT_FOUND)."""
        snapshot = self._fresh_snapshot(key)
        return _solved(snapshot, key)

    def desired(self, key: VariantKey) -> int:
        desired = self.decision(key).desired_replicas
        assert desired is not None  # decision() refuses unsolved VAs
        return desired

    def metrics(self, key: VariantKey, metric: str) -> pb.GetMetricsResponse:
        """The GetMetrics answer (`metric` empty: `wva-<ns>-<name>`), or Refusal.

        Built once per snapshot, VA and metric name: KEDA asks the same question at every
        poll. Freshness is still checked at every call.
        """
        snapshot = self._fresh_snapshot(key)
        if snapshot is not self._answered:
            self._answered, self._answers = snapshot, {}
        answer = self._answers.get((key, metric))
        if answer is None:
            desired = _solved(snapshot, key).desired_replicas
            name = metric or metric_name(*key)
            answer = pb.GetMetricsResponse(
                metricValues=[
                    pb.MetricValue(metricName=name, metricValue=desired, metricValueFloat=desired)
                ]
            )
            if len(self._answers) >= MAX_CACHED_ANSWERS:
                self._answers.clear()
            self._answers[(key, metric)] = answer
        return answer

    def _snapshot(self, key: VariantKey) -> ServedSnapshot:
        """The latest snapshot, or UNAVAILABLE before the first successful cycle."""
        snapshot = self._source()
        if snapshot is None:
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                f"no optimization result yet (VariantAutoscaling {key[0]}/{key[1]})",
            )
        return snapshot

    def _fresh_snapshot(self, key: VariantKey) -> ServedSnapshot:
        """The latest snapshot, or UNAVAILABLE when there is none or it is stale."""
        snapshot = self._snapshot(key)
        age = self._clock.monotonic() - snapshot.monotonic
        if age > self.settings.staleness_s:
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                f"{_stale_message(snapshot, age, self.settings.staleness_s)} "
                f"(VariantAutoscaling {key[0]}/{key[1]})",
            )
        return snapshot

    def metric_spec(self, key: VariantKey) -> pb.GetMetricSpecResponse:
        """The spec for a VA, whatever the snapshot says (none yet, stale, VA absent).

        It depends only on the reference. Refusing it until a cycle has seen the VA made
        KEDA < 2.20 build an HPA on CPU that it never repaired (kedacore/keda#7729); the
        value itself stays UNAVAILABLE / NOT_FOUND in GetMetrics until there is one.
        """
        namespace, name = key
        return pb.GetMetricSpecResponse(
            metricSpecs=[
                pb.MetricSpec(
                    metricName=metric_name(namespace, name), targetSize=1, targetSizeFloat=1.0
                )
            ]
        )

    # -- RPCs ------------------------------------------------------------------------

    async def IsActive(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.IsActiveResponse:
        try:
            key = self.resolve(request)
            active = self.desired(key) > 0
        except Refusal as refusal:
            await _abort(context, "IsActive", request, refusal)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("IsActive %s/%s -> %s", key[0], key[1], active)
        return pb.IsActiveResponse(result=active)

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.IsActiveResponse]:
        try:
            key = self.resolve(request)
        except Refusal as refusal:
            await _abort(context, "StreamIsActive", request, refusal)
        log.debug("StreamIsActive %s/%s opened", key[0], key[1])
        last: bool | None = None
        heartbeat = False
        while not self._closing:
            changed = self.changed()  # before reading, so no notify() is missed
            try:
                active = self.desired(key) > 0
            except Refusal as refusal:
                await _abort(context, "StreamIsActive", request, refusal)
            if active != last or heartbeat:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("StreamIsActive %s/%s -> %s", key[0], key[1], active)
                yield pb.IsActiveResponse(result=active)
                last = active
            if self._closing:
                break
            try:
                async with asyncio.timeout(self.settings.heartbeat_s):
                    await changed.wait()
                heartbeat = False
            except TimeoutError:
                heartbeat = True
        log.debug("StreamIsActive %s/%s closed (shutdown)", key[0], key[1])

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetMetricSpecResponse:
        try:
            response = self.metric_spec(self.resolve(request))
        except Refusal as refusal:
            await _abort(context, "GetMetricSpec", request, refusal)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("GetMetricSpec %s/%s -> %s", request.namespace, request.name, response)
        return response

    async def StreamMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.GetMetricSpecResponse]:
        try:
            response = self.metric_spec(self.resolve(request))
        except Refusal as refusal:
            await _abort(context, "StreamMetricSpec", request, refusal)
        yield response  # the spec never changes for a given VA: hold the stream until shutdown
        while not self._closing:
            await self.changed().wait()

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetMetricsResponse:
        ref = request.scaledObjectRef
        try:
            key = self.resolve(ref)
            response = self.metrics(key, request.metricName)
        except Refusal as refusal:
            await _abort(context, "GetMetrics", ref, refusal)
        if log.isEnabledFor(logging.DEBUG):
            (value,) = response.metricValues
            log.debug("GetMetrics %s/%s %s -> %d", *key, value.metricName, value.metricValue)
        return response


def _solved(snapshot: ServedSnapshot, key: VariantKey) -> ServedDecision:
    """The VA's decision in the snapshot if it was solved; NOT_FOUND / UNAVAILABLE otherwise."""
    decision = snapshot.decisions.get(key)
    if decision is None:
        raise Refusal(
            grpc.StatusCode.NOT_FOUND,
            f"VariantAutoscaling {key[0]}/{key[1]} not found (optimization cycle {snapshot.cycle})",
        )
    desired = decision.desired_replicas
    if desired is None or desired < 0:
        raise Refusal(
            grpc.StatusCode.UNAVAILABLE,
            f"VariantAutoscaling {key[0]}/{key[1]} has no decision: {decision.reason}",
        )
    return decision


def _stale_message(snapshot: ServedSnapshot, age: float, limit: float) -> str:
    return (
        f"the latest optimization result (cycle {snapshot.cycle}) is {age:.1f} s old, "
        f"older than the {limit:g} s staleness limit"
    )


async def _abort(
    context: grpc.aio.ServicerContext[object, object],
    method: str,
    ref: pb.ScaledObjectRef,
    refusal: Refusal,
) -> NoReturn:
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s/%s -> %s: %s",
            method,
            ref.namespace,
            ref.name,
            refusal.code.name,
            refusal.message,
        )
    await context.abort(refusal.code, refusal.message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

"""KEDA's `external-push` trigger, emulated: StreamIsActive read in a thread, and the
activation KEDA runs for each value the scaler pushes.

KEDA (kedacore/keda pkg/scalers/external_scaler.go, `runStreamIsActive`) keeps one
StreamIsActive open per ScaledObject and hands every value it receives to the scale
executor at once (`RequestScale`): `true` at 0 replicas scales to
max(minReplicaCount, 1) without waiting for the polling interval, `true` otherwise
refreshes the last-active time; `false` scales to zero only once `cooldownPeriod` has
passed since the trigger was last active (the polling loop's rule). When the stream ends
it is opened again after a back-off of 2 s, doubled after every attempt up to 60 s and
reset to 2 s only by a clean end of stream (io.EOF): a stream the scaler ends with an
error (the adapter ends it with UNAVAILABLE while a woken variant is unsolved) keeps the
back-off growing. The polling loop goes on meanwhile, so a push only ever comes first.

`PushedActivity` is that client, with the values queued for the harness' loop, which
applies them (`apply_push`) in its own thread, in order, at the time they arrived.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.sim.hpa import KedaLoop

log = logging.getLogger(__name__)

RETRY_FIRST_S = 2.0  # KEDA's back-off before StreamIsActive is opened again
RETRY_MAX_S = 60.0


def retry_delays(first_s: float = RETRY_FIRST_S, max_s: float = RETRY_MAX_S) -> Iterator[float]:
    """KEDA's successive waits before re-opening a stream that ended with an error."""
    delay = first_s
    while True:
        yield delay
        delay = min(delay * 2, max_s)


def apply_push(keda: KedaLoop, now: float, active: bool) -> str:
    """KEDA's `RequestScale` for a value the push scaler sent, on the simulated
    ScaledObject, after the polls and syncs due before it arrived (`KedaLoop.push`).
    Returns what happened, as `poll` names it."""
    keda.advance_to(now)
    return keda.push(now, active)


@dataclass(frozen=True)
class Push:
    """One value StreamIsActive sent, at `at` (the caller's clock)."""

    at: float
    active: bool


@dataclass(frozen=True)
class StreamEnd:
    """A stream that ended: `code` is None for a clean end (the server closed it)."""

    at: float
    code: str | None
    details: str = ""


@dataclass
class PushedActivity:
    """StreamIsActive for one ScaledObjectRef, read in a daemon thread with KEDA's
    back-off; `drain()` hands the values received since the last call."""

    address: str
    namespace: str
    name: str
    clock: Callable[[], float] = time.monotonic
    retry_first_s: float = RETRY_FIRST_S
    retry_max_s: float = RETRY_MAX_S
    opened: int = field(default=0, init=False)  # streams opened
    ends: list[StreamEnd] = field(default_factory=list, init=False)
    _pending: list[Push] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _arrived: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _call: Any = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="keda-push", daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float) -> None:
        """Return when a value is waiting to be drained, or after `timeout_s`."""
        self._arrived.wait(max(0.0, timeout_s))

    def drain(self) -> list[Push]:
        with self._lock:
            pushes, self._pending = self._pending, []
            self._arrived.clear()
        return pushes

    def close(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        channel = grpc.insecure_channel(self.address)
        stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        ref = pb.ScaledObjectRef(name=self.name, namespace=self.namespace)
        try:
            delays = retry_delays(self.retry_first_s, self.retry_max_s)
            while not self._stop.is_set():
                if self._stream_once(stub, ref):
                    delays = retry_delays(self.retry_first_s, self.retry_max_s)
                if self._stop.wait(next(delays)):
                    break
        finally:
            channel.close()

    def _stream_once(self, stub: Any, ref: pb.ScaledObjectRef) -> bool:
        """Read one stream to its end; True for a clean end of stream."""
        call = stub.StreamIsActive(ref)
        self._call = call
        if self._stop.is_set():  # closed while this stream was being opened
            call.cancel()
        self.opened += 1
        try:
            for response in call:
                push = Push(self.clock(), bool(response.result))
                with self._lock:
                    self._pending.append(push)
                    self._arrived.set()
        except grpc.RpcError as error:
            if self._stop.is_set():
                return False
            code = error.code()
            self.ends.append(StreamEnd(self.clock(), code.name, str(error.details() or "")))
            log.debug("StreamIsActive ended: %s %s", code.name, error.details())
            return False
        finally:
            self._call = None
        self.ends.append(StreamEnd(self.clock(), None))
        return True

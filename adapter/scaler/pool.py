"""The external scaler served by worker processes, so that a cycle never stalls an RPC.

A cycle is CPU-bound Python. In the process that runs it, the gRPC event loop waits for
the GIL: at 5000 VAs GetMetrics p99 was 70 ms while cycles ran. `ScalerPool` serves from
`workers` processes of their own (`python -m adapter.scaler.worker`), all bound to the
same port with SO_REUSEPORT (the kernel spreads incoming connections among them; one
HTTP/2 connection, such as KEDA's, stays with one worker). The engine's process keeps
the cycle, the exporter and the status writer; `publish` sends each worker a compact
copy of every new snapshot (adapter/scaler/feed.py) and each worker judges staleness
itself, at every call.

- Start: all workers are spawned at once (they import in parallel); worker 0 binds the
  configured address (port 0 picks one), the others then bind the port it got.
- A worker that exits on its own is logged and replaced after `RESTART_DELAY_S`, bound
  to the same port and given the latest snapshot at once.
- Stop: every worker gets `Stop` (health NOT_SERVING, open streams end cleanly,
  in-flight calls get the grace period) and is waited for; one still alive
  `STOP_MARGIN_S` after the grace period is killed.
- A worker stops by itself when its stdin ends: the parent died (even by SIGKILL), so
  no worker outlives it.

The snapshot's `monotonic` must be `time.monotonic()` (the engine's WallClock): the
workers measure ages on that clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from types import TracebackType

from adapter.scaler.feed import Stop, WorkerConfig, encode, encode_snapshot, frame
from adapter.scaler.server import ServerSettings
from adapter.scaler.service import ScalerSettings, ServedSnapshot

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0  # import and bind
RESTART_DELAY_S = 1.0
STOP_MARGIN_S = 5.0  # beyond the grace period, for the worker's own exit


def default_workers() -> int:
    """Two serving processes, or one on a single CPU.

    KEDA keeps one connection, which one process serves; a second one keeps the port
    answering while a dead one is replaced and gives other clients a second core. Each
    costs about 54 MB RSS, 36 MB of it its own (bench/results/load.json).
    """
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return min(2, len(usable) if usable else (os.cpu_count() or 1))


class WorkerError(RuntimeError):
    """A serving process could not start (cannot bind, unreadable TLS files...)."""


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    pending: asyncio.Event = field(default_factory=asyncio.Event)  # a snapshot to send
    installed: int | None = None  # the last cycle it acknowledged
    starting: asyncio.subprocess.Process | None = None  # its replacement, not serving yet


class ScalerPool:
    """Build, start, feed and gracefully stop the external scaler's serving processes."""

    def __init__(
        self,
        server: ServerSettings | None = None,
        scaler: ScalerSettings | None = None,
        workers: int | None = None,
    ) -> None:
        self.server = server or ServerSettings()
        self.scaler = scaler or ScalerSettings()
        self.workers = default_workers() if workers is None else workers
        if self.workers < 1:
            raise ValueError("a pool needs at least one worker")
        if self.server.interceptors:
            raise ValueError("interceptors cannot be passed to worker processes")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._payload: bytes | None = None  # the latest snapshot, encoded
        self._workers: list[_Worker] = []
        self._supervisors: list[asyncio.Task[None]] = []
        self._address = self.server.address
        self._port = 0
        self._stopping = asyncio.Event()
        self._grace_s = self.server.grace_s  # the one stop() was given, once stopping

    @property
    def started(self) -> bool:
        return self._loop is not None

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if not self._port:
            raise RuntimeError("the pool is not started")
        return self._port

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    def serving(self) -> bool:
        """Whether the external scaler is served now: started, not stopping, and at least
        one serving process alive (one in `_workers` has bound the port and reported it;
        a replacement enters only once it has). The adapter's `/readyz`. Thread-safe
        (plain reads), so the HTTP server's thread may ask.
        """
        if self._loop is None or self._stopping.is_set():
            return False
        return any(worker.process.returncode is None for worker in self._workers)

    def installed(self) -> list[int | None]:
        """Per worker, the last cycle it acknowledged (None: no snapshot yet)."""
        return [worker.installed for worker in self._workers]

    # -- feeding ---------------------------------------------------------------------

    def publish(self, snapshot: ServedSnapshot) -> None:
        """Send `snapshot` to every worker. Thread-safe; encodes in the caller's thread.

        Never blocks on a worker: each gets the latest snapshot when it can take it
        (one that falls behind skips the snapshots in between).
        """
        payload = frame(encode_snapshot(snapshot))
        loop = self._loop
        if loop is None:
            self._payload = payload  # sent to the workers as they start
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the pool is gone
            loop.call_soon_threadsafe(self._dispatch, payload)

    def _dispatch(self, payload: bytes) -> None:
        self._payload = payload
        for worker in self._workers:
            worker.pending.set()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> int:
        """Start every worker and return the shared port."""
        if self._loop is not None:
            raise RuntimeError("the pool is already started")
        self._loop = asyncio.get_running_loop()
        processes: list[asyncio.subprocess.Process] = []
        try:
            for _ in range(self.workers):  # all at once: they import in parallel
                processes.append(await _spawn())
            for index, process in enumerate(processes):
                port = await self._configure(index, process)
                if index == 0:
                    self._port = port
                    self._address = _with_port(self.server.address, port)
        except BaseException:
            for process in processes:
                await _kill(process)
            self._loop = None
            raise
        self._workers = [_Worker(index, process) for index, process in enumerate(processes)]
        self._supervisors = [
            asyncio.create_task(self._supervise(worker), name=f"scaler-worker-{worker.index}")
            for worker in self._workers
        ]
        log.info(
            "external scaler: %d serving process(es) on port %d (pids %s)",
            self.workers,
            self._port,
            ", ".join(str(pid) for pid in self.pids),
        )
        return self._port

    async def _configure(self, index: int, process: asyncio.subprocess.Process) -> int:
        """Send a new worker its settings; its bound port once it serves."""
        assert process.stdin is not None and process.stdout is not None
        config = WorkerConfig(
            index=index,
            server=replace(self.server, address=self._address),
            scaler=self.scaler,
            log_level=log.getEffectiveLevel(),
        )
        process.stdin.write(frame(encode(config)))
        try:
            await process.stdin.drain()
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                line = await process.stdout.readline()
        except (OSError, TimeoutError) as error:
            raise WorkerError(f"scaler worker {index} did not start: {error!r}") from error
        if not line:
            code = await process.wait()
            raise WorkerError(f"scaler worker {index} exited with status {code} before serving")
        try:
            report = json.loads(line)
            if "error" in report:
                raise WorkerError(f"scaler worker {index}: {report['error']}")
            return int(report["port"])
        except (ValueError, KeyError, TypeError) as error:
            raise WorkerError(f"scaler worker {index} said {line[:200]!r}") from error

    async def _supervise(self, worker: _Worker) -> None:
        """Feed the worker until it exits; replace it if it was not asked to stop.

        Nothing but cancellation ends this loop early: a slot left empty would close
        the port for good with a single worker, and silently with several.
        """
        while True:
            try:
                await self._attend(worker)
            except Exception:  # e.g. a report line over the reader's limit
                log.exception("scaler worker %d: lost contact; replacing it", worker.index)
                await _kill(worker.process)
            if self._stopping.is_set():
                return
            log.error(
                "scaler worker %d (pid %d) exited with status %s; starting another",
                worker.index,
                worker.process.pid,
                worker.process.returncode,
            )
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESTART_DELAY_S):
                        await self._stopping.wait()
                if self._stopping.is_set():
                    return
                try:
                    process = await self._replace(worker)
                except Exception as error:  # cannot fork, cannot bind, a process limit...
                    if not self._stopping.is_set():
                        log.error("cannot restart scaler worker %d: %s", worker.index, error)
                    continue
                if process is None:  # the pool began stopping meanwhile
                    return
                worker.process, worker.installed = process, None
                break

    async def _replace(self, worker: _Worker) -> asyncio.subprocess.Process | None:
        """A configured new process for `worker`'s slot, or None if the pool is stopping.

        While it starts it is `worker.starting`, so that `stop()` can kill it: otherwise
        it would bind the port and serve after the pool said it had stopped.
        """
        process = await _spawn()
        worker.starting = process
        try:
            if self._stopping.is_set():
                await _kill(process)
                return None
            await self._configure(worker.index, process)
        except BaseException:
            await _kill(process)
            raise
        finally:
            worker.starting = None
        if self._stopping.is_set():  # configured just as the pool began stopping
            _tell_stop(process, self._grace_s)
        return process

    async def _attend(self, worker: _Worker) -> None:
        """Send snapshots and read acknowledgements until the worker exits."""
        if self._stopping.is_set():  # started while the pool was stopping
            _tell_stop(worker.process, self._grace_s)
        if self._payload is not None:
            worker.pending.set()
        sender = asyncio.create_task(self._send(worker))
        try:
            await self._read(worker)  # until its stdout ends: it is exiting
            await worker.process.wait()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send(self, worker: _Worker) -> None:
        stdin = worker.process.stdin
        assert stdin is not None
        while not self._stopping.is_set():
            await worker.pending.wait()
            worker.pending.clear()
            if self._stopping.is_set() or self._payload is None:
                break
            try:
                stdin.write(self._payload)
                await stdin.drain()
            except OSError:  # it exited: the supervisor sees to it
                return

    async def _read(self, worker: _Worker) -> None:
        stdout = worker.process.stdout
        assert stdout is not None
        while line := await stdout.readline():
            try:
                worker.installed = int(json.loads(line)["cycle"])
            except (ValueError, KeyError, TypeError):
                log.warning("scaler worker %d said %r", worker.index, line[:200])

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop every worker gracefully; kill those still alive after the grace period."""
        if self._loop is None or self._stopping.is_set():
            return
        grace = self.server.grace_s if grace_s is None else grace_s
        self._grace_s = grace
        self._stopping.set()
        log.info("external scaler stopping (grace %.1f s)", grace)
        for worker in self._workers:
            worker.pending.set()  # its sender sees the pool stopping and ends
            _tell_stop(worker.process, grace)
            if worker.starting is not None:  # a replacement not serving yet: not needed
                await _kill(worker.starting)
        _done, late = await asyncio.wait(self._supervisors, timeout=grace + STOP_MARGIN_S)
        for worker in self._workers:
            if worker.process.returncode is None:
                log.warning("scaler worker %d did not stop in time: killing it", worker.index)
                await _kill(worker.process)
        for supervisor in late:  # e.g. still starting a replacement, which then sees EOF
            supervisor.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)
        log.info("external scaler stopped")

    async def wait_for_termination(self) -> None:
        await asyncio.gather(*self._supervisors, return_exceptions=True)

    async def __aenter__(self) -> ScalerPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _spawn() -> asyncio.subprocess.Process:
    """A serving process: stdin the feed, stdout its reports, stderr shared (the log)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapter.scaler.worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


def _tell_stop(process: asyncio.subprocess.Process, grace_s: float) -> None:
    """Queue Stop after whatever is being sent, then close the feed (at most once).

    Does not wait for the pipe to drain: a hung worker is killed after the grace period.
    """
    stdin = process.stdin
    if stdin is None or stdin.is_closing():
        return
    with contextlib.suppress(OSError):
        stdin.write(frame(encode(Stop(grace_s))))
    stdin.close()


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await process.wait()


def _with_port(address: str, port: int) -> str:
    """`host:port` with another port (IPv6 hosts keep their brackets)."""
    host, _, _ = address.rpartition(":")
    return f"{host}:{port}"

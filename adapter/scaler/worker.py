"""One serving process of the external scaler: `python -m adapter.scaler.worker`.

Started by `ScalerPool` (adapter/scaler/pool.py), never by hand. It reads frames from
stdin (adapter/scaler/feed.py): its `WorkerConfig`, then snapshots, then `Stop`. It
binds the configured address with SO_REUSEPORT (every worker of a pool binds the same
port and the kernel spreads connections among them) and answers with `ScalerServer`
over the latest snapshot it received, judging staleness itself at every call on
CLOCK_MONOTONIC. Its stdout is its report to the parent, one JSON object a line:
`{"port": N}` (or `{"error": "..."}`) once bound, then `{"cycle": N}` for every snapshot
installed.

It stops gracefully (NOT_SERVING, open streams end cleanly, in-flight calls get the
grace period) on `Stop`, on SIGTERM, and at the end of stdin: the parent closed the pipe
without `Stop` only if it died, and a worker must not outlive its parent. It ignores
SIGINT: a terminal's Ctrl-C reaches the parent too, which then sends `Stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from typing import BinaryIO

from adapter.clock import WallClock
from adapter.scaler.feed import CompactSnapshot, Stop, WorkerConfig, decode, read_frame
from adapter.scaler.server import ScalerServer
from adapter.scaler.service import ScalerService

log = logging.getLogger("adapter.scaler.worker")  # not "__main__" when run with -m


class _Latest:
    """The snapshot being served (replaced whole, on the event loop)."""

    def __init__(self) -> None:
        self.snapshot: CompactSnapshot | None = None

    def get(self) -> CompactSnapshot | None:
        return self.snapshot


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    first = read_frame(stdin)
    if first is None:
        return 0  # the parent went away before configuring this worker
    config = decode(first)
    if not isinstance(config, WorkerConfig):
        raise TypeError(f"the first frame must be a WorkerConfig, not {type(config).__name__}")
    logging.basicConfig(
        level=config.log_level,
        format=f"%(asctime)s %(levelname)s %(name)s [scaler worker {config.index}]: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(serve(config, stdin))


async def serve(config: WorkerConfig, stdin: BinaryIO) -> int:
    loop = asyncio.get_running_loop()
    latest = _Latest()
    service = ScalerService(latest.get, WallClock(), config.scaler)
    settings = replace(config.server, options=(*config.server.options, ("grpc.so_reuseport", 1)))
    server = ScalerServer(service, settings)
    try:
        port = await server.start()
    except Exception as error:  # cannot bind, unreadable TLS files: the parent reports it
        _report({"error": f"cannot serve on {settings.address}: {error}"})
        return 1
    _report({"port": port})
    # Answers must not wait: the garbage collector's full passes would walk the startup
    # heap (grpc, protobuf, pydantic: about 36 000 objects, 27 ms on a 2-core VM) unless
    # it is frozen; and the feed thread decoding a snapshot (a few ms at 5000 VAs) hands
    # the GIL to the event loop within 1 ms instead of 5.
    gc.freeze()
    sys.setswitchinterval(0.001)
    grace_s = config.server.grace_s  # a Stop frame may set another
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def install(snapshot: CompactSnapshot) -> None:
        latest.snapshot = snapshot
        server.notify()
        _report({"cycle": snapshot.cycle})

    def halt(message: Stop | None) -> None:
        nonlocal grace_s
        if message is not None:
            grace_s = message.grace_s
        elif not stop.is_set():
            log.warning("the snapshot feed ended (the adapter process went away): stopping")
        stop.set()

    def feed() -> None:
        """Read frames until Stop or end of stdin (a thread: reads block)."""
        message: Stop | None = None
        try:
            while (data := read_frame(stdin)) is not None:
                decoded = decode(data)
                if isinstance(decoded, Stop):
                    message = decoded
                    break
                if isinstance(decoded, CompactSnapshot):
                    loop.call_soon_threadsafe(install, decoded)
        except Exception:
            log.exception("cannot read the snapshot feed: stopping")
        with contextlib.suppress(RuntimeError):  # the loop is closed: stopped already
            loop.call_soon_threadsafe(halt, message)

    threading.Thread(target=feed, name="snapshot-feed", daemon=True).start()
    await stop.wait()
    await server.stop(grace_s)
    return 0


def _report(message: dict[str, object]) -> None:
    """One line to the parent; nobody to tell if it is gone (the feed then ends too)."""
    with contextlib.suppress(OSError):
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())

"""h2load (nghttp2-client) as the benchmarks' gRPC load generator, when it is installed.

h2load is a C HTTP/2 load generator; given a gRPC-framed request body it drives a unary
gRPC method (`apt-get install nghttp2-client`; see /work/shared/reference/infra.md
section 5). On a 2-core machine the client's CPU is taken from the server: h2load costs
about a tenth of what the Python grpc.aio client does per call.

What it cannot do, and how the benchmarks make up for it:
- it sends one body for every request (one ScaledObject): the server's work does not
  depend on which VA is asked (a dict lookup), and the benchmarks check every
  ScaledObject's answer with the Python client first;
- it counts by HTTP status only (a gRPC error still has HTTP status 200, its status
  is in the trailers): same check.

Two shapes of load:
- `closed`: `streams` requests always in flight over `connections` connections;
- `paced`: open loop (sent on schedule whether or not earlier answers came back) at a
  fixed total rate, one h2load process per connection at staggered phases.
Latencies come from h2load's per-request log (send to end of answer).
"""

from __future__ import annotations

import math
import random
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def version() -> str | None:
    """h2load's version line, or None when it is not on PATH."""
    if shutil.which("h2load") is None:
        return None
    shown = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout
    return shown.strip() or "h2load"


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, answered (HTTP 200) only
    starts: list[float] = field(default_factory=list)  # wall-clock seconds, same order
    failed: int = 0  # streams that got no HTTP 200
    elapsed: float = 0.0  # first send to last answer, seconds

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else 0.0


class H2load:
    """h2load against one unary gRPC method with one serialized request message."""

    def __init__(self, port: int, method: str, message: bytes, workdir: Path) -> None:
        self.url = f"http://127.0.0.1:{port}{method}"
        self.workdir = workdir
        body = workdir / "request.grpc"
        body.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)  # gRPC frame
        self.common = [
            "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
        ]  # fmt: skip

    def closed(self, requests: int, connections: int, streams: int) -> Result:
        """`requests` calls with `streams` in flight over `connections` connections."""
        log = self.workdir / "closed.log"
        log.unlink(missing_ok=True)
        per = math.ceil(streams / connections)
        command = [
            "h2load", "-n", str(requests), "-c", str(connections), "-m", str(per),
            "--log-file", str(log), *self.common, self.url,
        ]  # fmt: skip
        subprocess.run(command, capture_output=True, text=True, check=True)
        return _read_logs([log])

    def paced(
        self, rate: float, duration: float, connections: int, streams: int, seed: int = 7
    ) -> Result:
        """`rate` calls a second in total for `duration` seconds, open loop.

        One h2load process per connection, each sending rate/connections calls a second
        at a fixed interval (`--rps`), started at staggered random phases, with up to
        streams/connections calls in flight. (h2load's timing scripts would give every
        ScaledObject its own phase, but h2load re-arms its timer relative to the last
        send, so the schedule drifts: 8 % slow at 500 calls/s here.)
        """
        per_connection = rate / connections
        rng = random.Random(seed)
        processes, logs = [], []
        for k in range(connections):
            log = self.workdir / f"paced-{k}.log"
            log.unlink(missing_ok=True)
            logs.append(log)
            share = max(1, len(range(k, streams, connections)))  # in flight at most
            command = [
                "h2load", "-c", "1", "-m", str(share), "--rps", f"{per_connection:g}",
                "-D", f"{duration:g}", "--log-file", str(log), *self.common, self.url,
            ]  # fmt: skip
            processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
            # a random phase for the next one: not waiting for anything to happen
            time.sleep(rng.uniform(0.0, 1.0 / per_connection) / connections)
        for process in processes:
            if process.wait(timeout=duration + 300) != 0:
                raise RuntimeError(f"h2load failed with status {process.returncode}")
        result = _read_logs(logs)
        result.elapsed = max(result.elapsed, duration)  # the schedule's length at least
        return result


def _read_logs(paths: list[Path]) -> Result:
    """h2load's --log-file: start (µs since the epoch), HTTP status, µs to the answer."""
    result = Result()
    ends = []
    for path in paths:
        for line in path.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 3:
                continue
            start, latency = int(fields[0]) / 1e6, int(fields[2]) / 1e6
            if fields[1] == "200":
                result.latencies.append(latency)
                result.starts.append(start)
                ends.append(start + latency)
            else:
                result.failed += 1
    if result.starts:
        result.elapsed = max(ends) - min(result.starts)
    return result

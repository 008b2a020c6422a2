"""External-scaler benchmark: GetMetrics for many ScaledObjects, polled concurrently.

The server (ScalerServer over a snapshot of N VariantAutoscalings) runs in its own
process; the clients (grpc.aio, one task per ScaledObject = "stream", a few channels per
process) run in one or more other processes, so client and server do not share an event
loop. Two runs:

- closed: every stream sends its next GetMetrics as soon as the previous one answers
  (as many requests in flight as streams): the server's maximum throughput. Latency here
  is mostly queueing (Little's law: in flight / throughput), not service time.
- paced: every stream sends at a fixed rate (total `--rate` requests/s, random phases):
  the latency a poller sees below saturation. `latency` is send -> answer; `lag` adds
  the client's own delay in sending on schedule (what an open-loop load sees).

Usage: python bench/scaler.py [--smoke] [--vas 1000] [--streams 1000] [--requests 40000]
       [--duration 15] [--rates 100,1000,3000] [--client-procs 1] [--channels 4]
Writes bench/results/scaler.json (or scaler-smoke.json with --smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapter._proto import externalscaler_pb2 as pb  # noqa: E402
from adapter._proto import externalscaler_pb2_grpc as pb_grpc  # noqa: E402

NAMESPACE = "bench"


def va_name(i: int) -> str:
    return f"variant-{i:05d}"


# -- server process ---------------------------------------------------------------------


async def serve(vas: int) -> None:
    from adapter.clock import WallClock
    from adapter.engine import Snapshot, VariantDecision
    from adapter.scaler import ScalerServer, ScalerService, ScalerSettings, ServerSettings

    clock = WallClock()
    decisions = {
        (NAMESPACE, va_name(i)): VariantDecision(
            namespace=NAMESPACE,
            name=va_name(i),
            model=f"model-{i}",
            accelerator="H100",
            desired_replicas=i % 7,
            current_replicas=1,
            reason="optimized",
        )
        for i in range(vas)
    }
    snapshot = Snapshot(
        cycle=1,
        timestamp=clock.now(),
        monotonic=clock.monotonic(),
        duration_s=0.0,
        decisions=decisions,
    )
    service = ScalerService(lambda: snapshot, clock, ScalerSettings(staleness_s=3600.0))
    server = ScalerServer(service, ServerSettings(address="127.0.0.1:0"))
    port = await server.start()
    print(port, flush=True)
    # Run until the coordinator closes our stdin.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.stop(grace_s=1.0)


# -- client process ---------------------------------------------------------------------


async def client(args: argparse.Namespace) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{args.port}") for _ in range(args.channels)]
    stubs = [
        pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        for channel in channels
    ]
    indexes = list(range(args.first, args.first + args.streams))
    requests = {
        i: pb.GetMetricsRequest(
            scaledObjectRef=pb.ScaledObjectRef(name=va_name(i % args.vas), namespace=NAMESPACE),
            metricName=f"wva-{NAMESPACE}-{va_name(i % args.vas)}",
        )
        for i in indexes
    }
    expected = {i: (i % args.vas) % 7 for i in indexes}
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    budget = args.requests
    deadline = 0.0

    async def call(i: int) -> float:
        nonlocal errors
        stub = stubs[i % len(stubs)]
        started = time.perf_counter()
        try:
            response = await stub.GetMetrics(requests[i], timeout=30)
            if response.metricValues[0].metricValue != expected[i]:
                errors += 1
        except grpc.aio.AioRpcError:
            errors += 1
        return started

    async def closed_stream(i: int) -> None:
        nonlocal budget
        while budget > 0 and time.perf_counter() < deadline:
            budget -= 1
            started = await call(i)
            latencies.append(time.perf_counter() - started)

    async def paced_stream(i: int, interval: float) -> None:
        nonlocal budget
        due = time.perf_counter() + random.uniform(0.0, interval)
        while budget > 0 and due < deadline:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            budget -= 1
            started = await call(i)
            done = time.perf_counter()
            latencies.append(done - started)
            lags.append(done - due)
            due += interval

    for channel in channels:
        await channel.channel_ready()
    for i in indexes:  # warm-up: one call per stream, not counted
        await call(i)
    errors = 0
    began = time.perf_counter()
    deadline = began + args.duration
    if args.mode == "closed":
        await asyncio.gather(*(closed_stream(i) for i in indexes))
    else:
        interval = args.total_streams / args.rate  # every stream: rate / streams per second
        await asyncio.gather(*(paced_stream(i, interval) for i in indexes))
    elapsed = time.perf_counter() - began
    for channel in channels:
        await channel.close()
    return {"elapsed": elapsed, "errors": errors, "latencies": latencies, "lags": lags}


# -- coordinator ------------------------------------------------------------------------


def quantiles_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1)] * 1e3, 3)

    return {
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "max_ms": round(ordered[-1] * 1e3, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to see what the server costs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_clients(
    args: argparse.Namespace, port: int, mode: str, server_pid: int, rate: float
) -> dict[str, Any]:
    cpu_before = cpu_seconds(server_pid)
    procs = []
    per = math.ceil(args.streams / args.client_procs)
    for k in range(args.client_procs):
        first, count = k * per, min(per, args.streams - k * per)
        if count <= 0:
            break
        command = [
            sys.executable, __file__, "--client", "--mode", mode, "--port", str(port),
            "--vas", str(args.vas), "--first", str(first), "--streams", str(count),
            "--total-streams", str(args.streams), "--channels", str(args.channels),
            "--requests", str(math.ceil(args.requests / args.client_procs)),
            "--duration", str(args.duration), "--rate", str(rate),
        ]  # fmt: skip
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE))
    parts = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=args.duration + 300)
        if proc.returncode != 0:
            raise RuntimeError(f"client process failed with {proc.returncode}")
        parts.append(json.loads(stdout))
    server_cpu = cpu_seconds(server_pid) - cpu_before  # includes the clients' warm-up calls
    latencies = [x for part in parts for x in part["latencies"]]
    lags = [x for part in parts for x in part["lags"]]
    elapsed = max(part["elapsed"] for part in parts)
    result: dict[str, Any] = {
        "mode": mode,
        "streams": args.streams,
        "client_procs": len(procs),
        "channels_per_proc": args.channels,
        "requests": len(latencies),
        "errors": sum(part["errors"] for part in parts),
        "duration_s": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency": quantiles_ms(latencies),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_us_per_request": round(server_cpu / max(1, len(latencies)) * 1e6, 1),
    }
    if mode == "paced":
        result["target_rate_per_s"] = rate
        result["lag"] = quantiles_ms(lags)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small and fast (CI)")
    parser.add_argument("--vas", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=40000, help="total per run (bound)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run (bound)")
    parser.add_argument(
        "--rates", default="100,1000,3000", help="paced runs: total requests/s, comma-separated"
    )
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--channels", type=int, default=4, help="channels per client process")
    parser.add_argument("--output", type=Path)
    # internal: server / client processes
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="closed", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--total-streams", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        asyncio.run(serve(args.vas))
        return 0
    if args.client:
        print(json.dumps(asyncio.run(client(args))))
        return 0

    if args.smoke:
        args.vas, args.streams, args.requests = 50, 50, 1000
        args.duration, args.rates, args.channels = 2.0, "200", 1
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--vas", str(args.vas)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        runs = [run_clients(args, port, "closed", server.pid, 0.0)]
        for rate in (float(r) for r in args.rates.split(",")):
            runs.append(run_clients(args, port, "paced", server.pid, rate))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    report = {
        "benchmark": "scaler GetMetrics",
        "smoke": args.smoke,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
        },
        "vas": args.vas,
        "runs": runs,
    }
    output = args.output or ROOT / "bench" / "results" / (
        "scaler-smoke.json" if args.smoke else "scaler.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    for run in runs:
        line = (
            f"{run['mode']:>6} {run.get('target_rate_per_s', '')}: "
            f"{run['requests']} requests, {run['errors']} errors, "
            f"{run['requests_per_s']} req/s, p50 {run['latency'].get('p50_ms')} ms, "
            f"p99 {run['latency'].get('p99_ms')} ms, "
            f"server CPU {run['server_cpu_us_per_request']} us/request"
        )
        print(line)
    print(f"wrote {output}")
    return 0 if all(run["errors"] == 0 for run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())

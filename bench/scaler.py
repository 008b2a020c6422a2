"""External-scaler benchmark: GetMetrics for 1000 ScaledObjects polled concurrently.

The server runs in a process of its own (`--serve`): a snapshot of `--vas` VAs served
as `wva-adapter run` serves it, by `--workers` processes sharing the port (ScalerPool;
0: the former design, one grpc.aio server in the process). The target (issue 4): on
this machine, at 1000 concurrent streams, p99 under 5 ms and at least 3000 requests/s.

Clients (client and server share this machine's 2 cores, so a cheap client matters):

- h2load (nghttp2-client; `apt-get install nghttp2-client`), used when it is on PATH
  (bench/h2load.py): a C HTTP/2 load generator driving unary gRPC, about a tenth of the
  Python client's CPU per call. It sends one GetMetrics body every time (the server's
  work does not depend on the VA asked: one dict lookup) and counts by HTTP status only,
  so every ScaledObject's answer is first checked with the Python client.
- the Python grpc.aio client (`--client python`, or when h2load is missing): one task
  per ScaledObject, a different VA each, every answer checked. It costs about as much
  CPU per call as the server, so its figures understate the server.

Runs:
- closed: `--streams` requests always in flight over `--connections` connections: the
  server's maximum throughput. Latency here is queueing (Little's law: in flight /
  throughput), not service time.
- closed, one connection: the same through a single connection, as KEDA keeps one; the
  kernel hands a connection to one serving process, so this is one process' throughput.
- paced: `--rates` requests/s in total, open loop (sent on schedule whether or not
  earlier answers came back), up to `--streams` in flight. h2load: one process per
  connection at a fixed interval, phases staggered; Python: every ScaledObject polls at
  rate/streams per second from a random phase. The p99 target is judged on 3000/s.

Usage: python bench/scaler.py [--smoke] [--workers N] [--client auto|h2load|python]
       [--vas 1000] [--streams 1000] [--connections 8] [--requests 30000]
       [--duration 10] [--rates 100,1000,3000]
Writes bench/results/scaler.json (scaler-smoke.json with --smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):  # the adapter; bench/h2load.py
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import h2load  # noqa: E402  (bench/h2load.py)

from adapter._proto import externalscaler_pb2 as pb  # noqa: E402
from adapter._proto import externalscaler_pb2_grpc as pb_grpc  # noqa: E402

NAMESPACE = "bench"
TARGET_P99_MS = 5.0
TARGET_RATE = 3000.0
METHOD = "/externalscaler.ExternalScaler/GetMetrics"


def va_name(i: int) -> str:
    return f"variant-{i:05d}"


def request(i: int, vas: int) -> pb.GetMetricsRequest:
    name = va_name(i % vas)
    return pb.GetMetricsRequest(
        scaledObjectRef=pb.ScaledObjectRef(name=name, namespace=NAMESPACE),
        metricName=f"wva-{NAMESPACE}-{name}",
    )


def expected(i: int, vas: int) -> int:
    return (i % vas) % 7


# -- server process ---------------------------------------------------------------------


async def serve(vas: int, workers: int) -> None:
    from adapter.clock import WallClock
    from adapter.engine import Snapshot, VariantDecision
    from adapter.scaler import (
        ScalerPool,
        ScalerServer,
        ScalerService,
        ScalerSettings,
        ServerSettings,
    )

    clock = WallClock()
    decisions = {
        (NAMESPACE, va_name(i)): VariantDecision(
            namespace=NAMESPACE,
            name=va_name(i),
            model=f"model-{i}",
            accelerator="H100",
            desired_replicas=expected(i, vas),
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
    settings = ScalerSettings(staleness_s=3600.0)
    address = ServerSettings(address="127.0.0.1:0")
    loop = asyncio.get_running_loop()
    if workers == 0:  # the former design: the server in this process
        server = ScalerServer(ScalerService(lambda: snapshot, clock, settings), address)
        port = await server.start()
        pids = [os.getpid()]
    else:
        pool = ScalerPool(address, settings, workers=workers)
        port = await pool.start()
        pool.publish(snapshot)
        pids = [os.getpid(), *pool.pids]
    print(json.dumps({"port": port, "pids": pids}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the coordinator closes stdin
    if workers == 0:
        await server.stop(grace_s=1.0)
    else:
        await pool.stop(grace_s=1.0)


# -- Python client process --------------------------------------------------------------


async def client(args: argparse.Namespace) -> dict[str, Any]:
    """grpc.aio: one task per ScaledObject over `--connections` separate connections."""
    options = [("grpc.use_local_subchannel_pool", 1)]  # a TCP connection per channel
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{args.port}", options=options)
        for _ in range(args.connections)
    ]
    stubs = [
        pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        for channel in channels
    ]
    indexes = list(range(args.streams))
    requests = {i: request(i, args.vas) for i in indexes}
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    budget = args.requests
    deadline = 0.0

    async def call(i: int) -> float:
        nonlocal errors
        started = time.perf_counter()
        try:
            response = await stubs[i % len(stubs)].GetMetrics(requests[i], timeout=30)
            if response.metricValues[0].metricValue != expected(i, args.vas):
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
    for i in indexes:  # warm-up and check: one call per ScaledObject, not counted
        await call(i)
    checked_errors, errors = errors, 0
    began = time.perf_counter()
    deadline = began + args.duration
    if args.mode == "closed":
        await asyncio.gather(*(closed_stream(i) for i in indexes))
    elif args.mode == "paced":
        interval = args.streams / args.rate  # every stream: rate / streams per second
        await asyncio.gather(*(paced_stream(i, interval) for i in indexes))
    elapsed = time.perf_counter() - began
    for channel in channels:
        await channel.close()
    return {
        "elapsed": elapsed,
        "errors": errors,
        "checked": len(indexes),
        "checked_errors": checked_errors,
        "latencies": latencies,
        "lags": lags,
    }


# -- measuring --------------------------------------------------------------------------


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
    """User + system CPU time of a process (Linux /proc): what the server costs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process' finished children: what the clients cost."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Server and client CPU over one run."""

    def __init__(self, server_pids: list[int]) -> None:
        self.server_pids = server_pids
        self.server = [cpu_seconds(pid) for pid in server_pids]
        self.clients = children_cpu_seconds()

    def result(self, requests: int) -> dict[str, Any]:
        now = [cpu_seconds(pid) for pid in self.server_pids]
        used = [after - before for after, before in zip(now, self.server, strict=True)]
        server = sum(used)
        clients = children_cpu_seconds() - self.clients
        return {
            "server_cpu_s": round(server, 2),
            # the adapter's process, then each serving process: the kernel's spread of the
            # connections among the serving processes shows here
            "server_cpu_s_per_process": [round(seconds, 2) for seconds in used],
            "server_cpu_us_per_request": round(server / max(1, requests) * 1e6, 1),
            "client_cpu_us_per_request": round(clients / max(1, requests) * 1e6, 1),
        }


# -- h2load runs -------------------------------------------------------------------------


def h2load_run(
    result: h2load.Result, meter: Meter, mode: str, connections: int, streams: int
) -> dict[str, Any]:
    return {
        "mode": mode,
        "connections": connections,
        "streams": streams,
        "requests": len(result.latencies),
        "errors": result.failed,
        "duration_s": round(result.elapsed, 3),
        "requests_per_s": round(result.rate, 1),
        "latency": quantiles_ms(result.latencies),
        **meter.result(len(result.latencies)),
    }


# -- Python client runs -----------------------------------------------------------------


def python_run(
    args: argparse.Namespace, port: int, mode: str, rate: float, connections: int, pids: list[int]
) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--client-process", "--mode", mode, "--port", str(port),
        "--vas", str(args.vas), "--streams", str(args.streams),
        "--connections", str(connections), "--requests", str(args.requests),
        "--duration", str(args.duration), "--rate", str(rate),
    ]  # fmt: skip
    meter = Meter(pids)
    answer = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=args.duration + 300
    )
    part = json.loads(answer.stdout)
    latencies = part["latencies"]
    result: dict[str, Any] = {
        "mode": mode,
        "connections": connections,
        "streams": args.streams,
        "requests": len(latencies),
        "errors": part["errors"],
        "checked": part["checked"],
        "checked_errors": part["checked_errors"],
        "duration_s": round(part["elapsed"], 3),
        "requests_per_s": round(len(latencies) / max(1e-9, part["elapsed"]), 1),
        "latency": quantiles_ms(latencies),
        **meter.result(len(latencies) + part["checked"]),  # the check calls cost too
    }
    if mode == "paced":
        result["target_rate_per_s"] = rate
        result["lag"] = quantiles_ms(part["lags"])
    return result


# -- coordinator ------------------------------------------------------------------------


def targets(runs: list[dict[str, Any]], streams: int) -> dict[str, Any]:
    """Whether issue 4's targets were met, judged on the runs that measure them."""
    closed = [r for r in runs if r["mode"] == "closed" and r["connections"] > 1]
    paced = [r for r in runs if r["mode"] == "paced" and r["target_rate_per_s"] >= TARGET_RATE]
    best = max((r["requests_per_s"] for r in closed), default=None)
    out: dict[str, Any] = {
        "streams": streams,
        "throughput_requests_per_s": best,
        "throughput_met": best is not None and best >= TARGET_RATE and streams >= 1000,
    }
    if paced:
        run = paced[0]
        p99 = run["latency"].get("p99_ms")
        achieved = run["requests_per_s"]
        out.update(
            p99_ms_at_target_rate=p99,
            achieved_rate_per_s=achieved,
            p99_met=(
                p99 is not None
                and p99 < TARGET_P99_MS
                and achieved >= 0.98 * TARGET_RATE
                and streams >= 1000
                and run["errors"] == 0
            ),
        )
    else:
        out.update(p99_ms_at_target_rate=None, p99_met=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small and fast (CI)")
    parser.add_argument(
        "--workers", type=int, help="serving processes (default: as `run`; 0: in-process)"
    )
    parser.add_argument("--client", choices=("auto", "h2load", "python"), default="auto")
    parser.add_argument("--vas", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=1000, help="ScaledObjects polled")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--requests", type=int, default=30000, help="closed runs (bound)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per paced run")
    parser.add_argument("--rates", default="100,1000,3000", help="paced runs, requests/s")
    parser.add_argument("--output", type=Path)
    # internal: server / client processes
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="closed", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client_process:
        print(json.dumps(asyncio.run(client(args))))
        return 0

    from adapter.scaler import default_workers

    workers = default_workers() if args.workers is None else args.workers
    if args.serve:
        asyncio.run(serve(args.vas, workers))
        return 0
    if args.smoke:
        args.vas, args.streams, args.requests = 50, 50, 2000
        args.duration, args.rates, args.connections = 2.0, "200", 2
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    version = h2load.version()
    use_h2load = args.client == "h2load" or (args.client == "auto" and version is not None)
    if use_h2load and version is None:
        raise SystemExit("--client h2load: h2load is not on PATH (apt-get install nghttp2-client)")
    if not use_h2load:
        print(
            "note: h2load not found (apt-get install nghttp2-client): measuring with the "
            "Python grpc.aio client, which takes a large share of the CPU the server needs"
            if args.client == "auto"
            else "note: measuring with the Python grpc.aio client (--client python)"
        )
    rates = [float(r) for r in args.rates.split(",")]

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--vas", str(args.vas), "--workers", str(workers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    runs: list[dict[str, Any]] = []
    try:
        assert server.stdout is not None
        started = json.loads(server.stdout.readline())
        port, pids = started["port"], started["pids"]
        # Every ScaledObject once with the Python client: the answers are right.
        check = python_run(args, port, "check", 0.0, args.connections, pids)
        if use_h2load:
            with tempfile.TemporaryDirectory(prefix="wva-bench-") as tmp:
                message = request(3, args.vas).SerializeToString()
                load = h2load.H2load(port, METHOD, message, Path(tmp))
                load.closed(min(3000, args.requests), args.connections, args.streams)  # warm-up
                for connections in (args.connections, 1):
                    meter = Meter(pids)
                    result = load.closed(args.requests, connections, args.streams)
                    runs.append(h2load_run(result, meter, "closed", connections, args.streams))
                for rate in rates:
                    meter = Meter(pids)
                    result = load.paced(rate, args.duration, args.connections, args.streams)
                    run = h2load_run(result, meter, "paced", args.connections, args.streams)
                    runs.append({**run, "target_rate_per_s": rate})
        else:
            runs.append(python_run(args, port, "closed", 0.0, args.connections, pids))
            runs.append(python_run(args, port, "closed", 0.0, 1, pids))
            for rate in rates:
                runs.append(python_run(args, port, "paced", rate, args.connections, pids))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=60)
    report = {
        "benchmark": "scaler GetMetrics",
        "smoke": args.smoke,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_at_start": load_at_start,  # others busy on this machine?
            "platform": platform.platform(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
        },
        "server": {
            "workers": workers,
            "design": (
                "one grpc.aio server in the process (the former design)"
                if workers == 0
                else f"{workers} serving process(es) sharing the port (ScalerPool)"
            ),
        },
        "client": {
            "tool": version if use_h2load else "python grpc.aio",
            "note": (
                "h2load sends one GetMetrics body (answers checked with the Python client "
                "first); closed: --connections connections in one h2load process; paced: one "
                "h2load process per connection following a timing script"
                if use_h2load
                else "Python grpc.aio client, a different ScaledObject per stream, every "
                "answer checked"
            ),
        },
        "vas": args.vas,
        "check": {"requests": check["checked"], "errors": check["checked_errors"]},
        "runs": runs,
        "targets": targets(runs, args.streams),
    }
    output = args.output or ROOT / "bench" / "results" / (
        "scaler-smoke.json" if args.smoke else "scaler.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"server: {report['server']['design']}; client: {report['client']['tool']}")
    print(f"check: {check['checked']} ScaledObjects, {check['checked_errors']} wrong answers")
    for run in runs:
        print(
            f"{run['mode']:>6} {run.get('target_rate_per_s', ''):>6} "
            f"{run['connections']} conn: {run['requests']} requests, {run['errors']} errors, "
            f"{run['requests_per_s']} req/s, p50 {run['latency'].get('p50_ms')} ms, "
            f"p99 {run['latency'].get('p99_ms')} ms; CPU per request: server "
            f"{run['server_cpu_us_per_request']} us, client {run['client_cpu_us_per_request']} us; "
            f"server CPU s by process {run['server_cpu_s_per_process']}"
        )
    goal = report["targets"]
    if args.smoke:
        print("smoke run: the targets are judged on the full run only")
    else:
        print(
            f"target {TARGET_RATE:g} requests/s at {args.streams} streams: "
            f"{'met' if goal['throughput_met'] else 'NOT met'} "
            f"({goal['throughput_requests_per_s']} req/s closed loop); "
            f"p99 < {TARGET_P99_MS:g} ms at {TARGET_RATE:g}/s: "
            f"{'met' if goal['p99_met'] else 'NOT met'} ({goal['p99_ms_at_target_rate']} ms)"
        )
    print(f"wrote {output}")
    failures = check["checked_errors"] + sum(run["errors"] for run in runs)
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

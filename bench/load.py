"""Load benchmark: thousands of VariantAutoscalings through the whole adapter.

Three processes, so that neither the fakes nor the client share the adapter's GIL:

- coordinator (this process): the fake Kubernetes API server (tests/fakes/kube_api.py)
  holding N VAs and their Deployments (clones of deploy/samples/, spread over namespaces
  and models), the tutorial's ConfigMaps (the service classes extended with every
  model), GPU nodes; and a small HTTP server that speaks Prometheus' query API
  (`GET /api/v1/query?query=`, or a POSTed form) answering the adapter's 9 batched PromQL
  expressions with a vector sample for every (namespace, model_name) key. It is not a
  real Prometheus: it answers exactly the expressions `build_queries` makes, with
  synthetic but plausible vLLM figures; a fraction (`--churn`) of the keys get a new
  arrival rate at every cycle so that warm cycles are not all cache hits.
- adapter (`--adapter`): the production path as `wva-adapter run` wires it: KubeCache
  (list+watch through the official client), PrometheusSource, Engine (`Engine.run`,
  cycle in a worker thread, back to back: interval 0), the external scaler on
  127.0.0.1 served by `--workers` processes of their own fed with every snapshot
  (ScalerPool, as `run`; `--workers 0`: the former design, a grpc.aio server in the
  adapter's process), INFO logging to a file. It reports the cold (first) and warm
  cycle times, its own memory, and the cycle intervals on CLOCK_MONOTONIC (shared by
  the processes).
- the whole adapter, measured from the coordinator (`ProcessSampler`): the adapter
  process and every process under it (the serving processes are its children), found
  in /proc every `SAMPLE_PERIOD_S` through the run. Memory: the sum over the processes
  of their proportional resident memory (Pss, /proc/PID/smaps_rollup: a library every
  process maps counts once in all, about what the pod's memory cgroup is charged) at
  each sample, and its peak; the sum of each process' peak RSS (VmHWM, exact but
  counting shared pages in every process); per process both. CPU: utime+stime
  (/proc/PID/stat) per process between marks (the first cycle published, the start and
  end of each polling run), as cores. The reads cost this process, not the adapter.
  Pss also depends on what else runs (other Python programs on the machine take their
  share of the libraries), so each sample also adds up the processes' private pages
  plus the largest shared set of one of them: what they hold at least, whatever else
  runs. The memory target is judged on the larger of the two peaks.
- client: `--scaled-objects` ScaledObjects polled with GetMetrics at a paced total rate
  over `--channels` connections, each from a random phase, one run of `--duration`
  seconds per rate in `--rates`. Cycles run back to back meanwhile, so (almost) every
  call is answered while a cycle runs. The client is h2load when it is installed
  (bench/h2load.py: a C load generator, open loop, one process per connection; every
  polled ScaledObject's answer is first checked once with the Python client), else the
  Python grpc.aio client (`--client python`), which costs the machine about as much CPU
  per call as the server and so stretches the latencies it measures on 2 cores.

Usage: python bench/load.py [--smoke] [--vas 5000] [--namespaces 100] [--models 50]
       [--rates 100,500] [--scaled-objects 1000] [--duration 20] [--churn 0.2]
       [--workers N] [--client auto|h2load|python]
Prints a summary and writes bench/results/load.json (load-smoke.json with --smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import yaml

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):  # the adapter; bench/h2load.py
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import h2load  # noqa: E402  (bench/h2load.py)
from machine import cpu_model  # noqa: E402  (bench/machine.py)

from adapter.collect.prometheus import build_queries  # noqa: E402

SAMPLES = ROOT / "deploy" / "samples"
METHOD = "/externalscaler.ExternalScaler/GetMetrics"
WINDOW = "1m"
TARGETS = {"cycle_s": 2.0, "rss_mb": 300.0, "p99_ms": 10.0}  # rss_mb: the whole adapter
SAMPLE_PERIOD_S = 0.25  # the whole adapter's memory and CPU, read from /proc
MIN_WINDOW_S = 0.5  # CPU is reported between marks at least this far apart


# -- the cluster -------------------------------------------------------------------------


def _samples() -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def va_namespace(i: int, vas: int, namespaces: int) -> str:
    return f"load-{i * namespaces // vas:03d}"


def va_name(i: int) -> str:
    return f"vllm-{i:05d}"


def model_name(i: int, models: int) -> str:
    return f"org/model-{i % models:03d}"


def cluster_objects(vas: int, namespaces: int, models: int) -> list[dict[str, Any]]:
    """ConfigMaps, Nodes, then a VA and its Deployment per variant (clones of the samples).

    VA i lives in namespace i*namespaces//vas and serves model i % models, so every VA has
    its own (namespace, model) key when models >= vas/namespaces. Each model has one
    profile (H100 and A100 entries, alpha/beta varying by model) and a Premium or
    Freemium SLO; a fifth of the VAs run on A100. GPU nodes: twice as many GPUs as VAs.
    """
    samples = _samples()
    costs = next(c for c in samples["ConfigMap"] if c["metadata"]["name"].startswith("acc"))
    classes = copy.deepcopy(
        next(c for c in samples["ConfigMap"] if c["metadata"]["name"].startswith("service"))
    )
    premium = yaml.safe_load(classes["data"]["premium.yaml"])
    freemium = yaml.safe_load(classes["data"]["freemium.yaml"])
    for m in range(models):
        target = premium if m % 2 == 0 else freemium
        itl, ttft = (24 + m % 7, 1000) if m % 2 == 0 else (80 + m % 11, 2000)
        target["data"].append({"model": model_name(m, models), "slo-tpot": itl, "slo-ttft": ttft})
    classes["data"] = {
        "premium.yaml": yaml.safe_dump(premium, sort_keys=False),
        "freemium.yaml": yaml.safe_dump(freemium, sort_keys=False),
    }
    objects: list[dict[str, Any]] = [costs, classes]

    node = samples["Node"][0]
    gpus_per_node = 8
    a100_nodes = max(1, vas * 2 // 5 // gpus_per_node)
    h100_nodes = max(1, vas * 2 * 4 // 5 // gpus_per_node)
    for n in range(h100_nodes + a100_nodes):
        clone = copy.deepcopy(node)
        clone["metadata"]["name"] = f"gpu-node-{n:05d}"
        clone["metadata"]["labels"]["kubernetes.io/hostname"] = clone["metadata"]["name"]
        if n >= h100_nodes:
            clone["metadata"]["labels"]["nvidia.com/gpu.product"] = "NVIDIA-A100-PCIE-80GB"
        clone["status"]["allocatable"]["nvidia.com/gpu"] = str(gpus_per_node)
        objects.append(clone)

    va_sample = samples["VariantAutoscaling"][0]
    deployment_sample = samples["Deployment"][0]
    for i in range(vas):
        m = i % models
        namespace, name, model = va_namespace(i, vas, namespaces), va_name(i), model_name(i, models)
        accelerator = "A100" if i % 5 == 4 else "H100"
        va = copy.deepcopy(va_sample)
        va["metadata"].update(name=name, namespace=namespace)
        va["metadata"]["labels"] = {
            "inference.optimization/modelName": model.split("/")[-1],
            "inference.optimization/acceleratorName": accelerator,
        }
        va["spec"]["modelID"] = model
        va["spec"]["sloClassRef"] = {
            "name": "service-classes-config",
            "key": "premium.yaml" if m % 2 == 0 else "freemium.yaml",
        }
        va["spec"]["modelProfile"]["accelerators"] = [
            {
                "acc": "H100",
                "accCount": 1,
                "alpha": f"{6.0 + 0.05 * m:.3f}",
                "beta": f"{0.040 + 0.0005 * (m % 9):.4f}",
                "maxBatchSize": 256 + 64 * (m % 5),
                "atTokens": 512,
            },
            {
                "acc": "A100",
                "accCount": 1,
                "alpha": f"{9.0 + 0.05 * m:.3f}",
                "beta": f"{0.060 + 0.0005 * (m % 9):.4f}",
                "maxBatchSize": 256,
                "atTokens": 512,
            },
        ]
        deployment = copy.deepcopy(deployment_sample)
        deployment["metadata"].update(name=name, namespace=namespace)
        deployment["metadata"]["labels"] = {"app": name}
        deployment["spec"]["replicas"] = 1 + i % 3
        deployment["spec"]["selector"]["matchLabels"] = {"app": name}
        deployment["spec"]["template"]["metadata"]["labels"] = {"app": name}
        deployment["status"] = {"replicas": 1 + i % 3, "readyReplicas": 1 + i % 3}
        objects += [va, deployment]
    return objects


# -- Prometheus' query API, for the adapter's batched expressions ------------------------


class FakePrometheus:
    """`GET`/`POST /api/v1/query` answering the expressions of `build_queries(WINDOW)`.

    Every (namespace, model) key gets a sample in every answer; values are in
    Prometheus' units (per second, seconds) and plausible for vLLM. The arrival rate of
    a `churn` fraction of the keys changes at every cycle (the arrival-rate query is the
    first of a cycle): warm cycles then size that many servers anew.
    """

    def __init__(self, keys: list[tuple[str, str]], churn: float, seed: int = 7) -> None:
        self.keys = keys
        self.churn = churn
        self.queries = {q.expr: q for q in build_queries(WINDOW)}
        self.arrival_expr = build_queries(WINDOW)[0].expr
        self.requests = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rates = [self._rng.uniform(60.0, 900.0) for _ in keys]  # requests/minute
        self._static: dict[str, bytes] = {}
        for query in self.queries.values():
            if query.expr != self.arrival_expr:
                self._static[query.expr] = self._render(
                    [self._value(query.field, k) / query.scale for k in range(len(keys))]
                )
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _value(self, field: str, k: int) -> float:
        """A plausible figure for key k in ModelLoad units (rpm, tokens, ms, ratio)."""
        return {
            "avg_prompt_tokens": 128.0 + k % 512,
            "avg_output_tokens": 256.0 + k % 384,
            "itl_ms": 7.0 + (k % 30) / 10.0,
            "queue_time_ms": float(k % 50),
            "ttft_ms": 40.0 + k % 200,
            "running": float(k % 64),
            "decoding": float(k % 64),
            "waiting": float(k % 5),
            "kv_cache_usage": (k % 100) / 100.0,
        }[field]

    def _render(self, values: list[float]) -> bytes:
        now = time.time()
        samples = ",".join(
            f'{{"metric":{{"namespace":"{ns}","model_name":"{model}"}},'
            f'"value":[{now:.3f},"{value!r}"]}}'
            for (ns, model), value in zip(self.keys, values, strict=True)
        )
        return (
            '{"status":"success","data":{"resultType":"vector","result":[' + samples + "]}}"
        ).encode()

    def answer(self, expr: str) -> bytes | None:
        with self._lock:
            self.requests += 1
            if expr != self.arrival_expr:
                return self._static.get(expr)
            for k in self._rng.sample(range(len(self.keys)), int(self.churn * len(self.keys))):
                self._rates[k] = self._rng.uniform(60.0, 900.0)
            return self._render([rate / 60.0 for rate in self._rates])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body in one send (no Nagle/delayed-ACK stall)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                path, _, query = self.path.partition("?")
                form = parse_qs(query) | parse_qs(self.rfile.read(length).decode())
                body = None
                if path == "/api/v1/query" and form.get("query"):
                    body = fake.answer(form["query"][0])
                status = 200
                if body is None:
                    status = 400
                    body = json.dumps(
                        {"status": "error", "errorType": "bad_data", "error": "unknown query"}
                    ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST  # the adapter's client sends GET, the query in the URL

        return Handler

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakePrometheus:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# -- adapter process -------------------------------------------------------------------


def memory_mb(pid: int | None = None) -> dict[str, float]:
    """Resident memory of a process (default: this one), MiB: peak (VmHWM) and current
    (VmRSS); the current proportional share (Pss: shared pages, such as the libraries
    every serving process maps, divided among the processes that map them), and the
    current pages of its own (Private) and shared with any other process (Shared)."""
    kib: dict[str, int] = {}
    where = Path(f"/proc/{pid or 'self'}")
    for name in ("status", "smaps_rollup"):
        for line in (where / name).read_text().splitlines():
            key, _, value = line.partition(":")
            if key in _MEMORY_KEYS:
                kib[key] = int(value.split()[0])
    found = {key: round(kib[key] / 1024, 1) for key in ("VmHWM", "VmRSS", "Pss")}
    for kind in ("Private", "Shared"):
        found[kind] = round((kib[f"{kind}_Clean"] + kib[f"{kind}_Dirty"]) / 1024, 1)
    if pid is None:
        found["ru_maxrss"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return found


_MEMORY_KEYS = {
    "VmHWM",
    "VmRSS",
    "Pss",
    "Private_Clean",
    "Private_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
}


# -- the whole adapter, from outside ---------------------------------------------------


def _stat(pid: int) -> tuple[int, float, int]:
    """(ppid, utime+stime in seconds, start time in clock ticks) from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks, int(fields[19])


def process_tree(root: int) -> list[int]:
    """`root` and every live process under it (children, theirs...), root first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = _stat(int(entry.name))[0]
            except (OSError, ValueError, IndexError):  # gone meanwhile
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, index = [root], 0
    while index < len(tree):
        tree += sorted(children.get(tree[index], []))
        index += 1
    return tree


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "engine"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    return "grpc-worker" if "adapter.scaler.worker" in command else "other"


class ProcessSampler:
    """The adapter process and every process under it, read from /proc in a thread of
    this process every `period_s` (and at each `mark`): per process its Pss, VmHWM and
    CPU seconds; per sample the Pss summed over the processes alive then.

    A process is known by (pid, start time), so a replaced serving process is another
    entry; the processes' own peaks (VmHWM) are exact, the Pss sum's peak is the largest
    sampled.
    """

    def __init__(self, root: int, period_s: float = SAMPLE_PERIOD_S) -> None:
        self.root = root
        self.period_s = period_s
        self.processes: dict[tuple[int, int], dict[str, Any]] = {}
        self.pss_sums: list[tuple[float, float]] = []  # (CLOCK_MONOTONIC, MiB)
        self.own_sums: list[float] = []  # MiB: private pages + the most any one shares
        self.marks: list[tuple[str, float, dict[tuple[int, int], float]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)

    def __enter__(self) -> ProcessSampler:
        self.mark("start")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def sample(self) -> dict[tuple[int, int], float]:
        """Read every process of the tree once; their CPU seconds now."""
        with self._lock:
            now, total, cpu = time.monotonic(), 0.0, {}
            private, shared = 0.0, 0.0
            for pid in process_tree(self.root):
                try:
                    _parent, cpu_s, started = _stat(pid)
                    memory = memory_mb(pid)
                except (OSError, ValueError, IndexError):  # exited meanwhile
                    continue
                key = (pid, started)
                seen = self.processes.setdefault(
                    key,
                    {"pid": pid, "role": _role(pid, self.root), "first_cpu_s": cpu_s, "pss": []},
                )
                seen.update(cpu_s=cpu_s, VmHWM=memory["VmHWM"], last_seen=now)
                seen["pss"].append(memory["Pss"])
                total += memory["Pss"]
                private += memory["Private"]
                shared = max(shared, memory["Shared"])
                cpu[key] = cpu_s
            if cpu:
                self.pss_sums.append((now, total))
                self.own_sums.append(private + shared)
            return cpu

    def mark(self, label: str) -> None:
        """A sample now, named: CPU is reported between consecutive marks."""
        cpu = self.sample()
        self.marks.append((label, time.monotonic(), cpu))

    def report(self, cycle_ends: list[float]) -> dict[str, Any]:
        """The figures, as load.json has them; `cycle_ends`: when each cycle ended."""
        processes = [
            {
                "role": p["role"],
                "pid": p["pid"],
                "pss_peak_mb": max(p["pss"]),
                "pss_median_mb": round(statistics.median(p["pss"]), 1),
                "VmHWM_mb": p["VmHWM"],
                "cpu_s": round(p["cpu_s"], 2),  # since the process started
            }
            for p in self.processes.values()
        ]
        processes.sort(key=lambda p: (p["role"] != "engine", p["role"], p["pid"]))
        windows = []
        for (began, t0, cpu0), (ended, t1, cpu1) in zip(self.marks, self.marks[1:], strict=False):
            wall = t1 - t0
            if wall < MIN_WINDOW_S:  # between two polling runs: too short to say anything
                continue
            used: dict[str, float] = {}
            for key, cpu_s in cpu1.items():
                role = self.processes[key]["role"]
                start = cpu0.get(key, self.processes[key]["first_cpu_s"])
                used[role] = used.get(role, 0.0) + cpu_s - start
            cycles = sum(t0 < end <= t1 for end in cycle_ends)
            windows.append(
                {
                    "from": began,
                    "to": ended,
                    "wall_s": round(wall, 2),
                    "cycles_ended": cycles,
                    "cpu_s": {role: round(v, 2) for role, v in sorted(used.items())},
                    "cores": {role: round(v / wall, 3) for role, v in sorted(used.items())}
                    | {"total": round(sum(used.values()) / wall, 3)},
                    "engine_cpu_s_per_cycle": (
                        round(used.get("engine", 0.0) / cycles, 3) if cycles else None
                    ),
                }
            )
        sums = [total for _t, total in self.pss_sums]
        return {
            "sample_period_s": self.period_s,
            "samples": len(sums),
            "processes": processes,
            # at each sample, Pss summed over the processes alive: its peak and median
            "pss_sum_peak_mb": round(max(sums), 1),
            "pss_sum_median_mb": round(statistics.median(sums), 1),
            # Pss depends on what else runs: other processes mapping the same libraries
            # (other Python programs here) take their share. The pages of the processes'
            # own, plus the largest set one of them shares, is what a container running
            # them alone is charged at least, whatever else runs beside them.
            "private_plus_shared_peak_mb": round(max(self.own_sums), 1),
            # each process' own peak RSS, added up (shared pages counted in each)
            "vmhwm_sum_mb": round(sum(p["VmHWM_mb"] for p in processes), 1),
            "cpu_windows": windows,
        }


async def adapter(args: argparse.Namespace) -> dict[str, Any]:
    from kubernetes import client

    from adapter.clock import WallClock
    from adapter.collect.kube import CacheSettings, KubeCache
    from adapter.collect.prometheus import PrometheusSettings, PrometheusSource
    from adapter.engine import Engine, Snapshot
    from adapter.runtime import SettleAfterCycle, tune_for_serving
    from adapter.scaler import (
        ScalerPool,
        ScalerServer,
        ScalerService,
        ScalerSettings,
        ServerSettings,
        Serving,
    )

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=args.log_file,
    )
    tune_for_serving()  # as `wva-adapter run` does (for good: this process ends with the run)
    config = client.Configuration()
    config.host = args.kube_url
    started = time.monotonic()
    api = client.ApiClient(config)
    cache = KubeCache(api, CacheSettings()).start()
    synced = cache.wait_for(
        lambda snap: (
            len(snap.variant_autoscalings) == args.vas and len(snap.deployments) == args.vas
        ),
        timeout=args.sync_timeout,
    )
    if synced is None:
        raise RuntimeError(f"the cache did not see {args.vas} VAs in {args.sync_timeout} s")
    sync_s = time.monotonic() - started
    memory_synced = memory_mb()

    clock = WallClock()
    cycles: list[dict[str, Any]] = []
    engine: Engine | None = None
    settings = ScalerSettings(staleness_s=3600.0)
    address = ServerSettings(address="127.0.0.1:0")
    pool: ScalerPool | None = None
    server: ScalerServer | None = None
    serving: Serving
    if args.workers == 0:  # the former design: gRPC in this process
        service = ScalerService(lambda: engine.latest if engine else None, clock, settings)
        serving = server = ScalerServer(service, address)
    else:
        serving = pool = ScalerPool(address, settings, workers=args.workers)
    stop = asyncio.Event()
    first = asyncio.Event()
    loop = asyncio.get_running_loop()

    def published(snapshot: Snapshot) -> None:
        cycles.append(
            {
                "start": snapshot.monotonic,
                "end": snapshot.monotonic + snapshot.duration_s,
                "duration_s": snapshot.duration_s,
                "phases_s": dict(snapshot.phases_s),
                "solved": sum(d.solved for d in snapshot.decisions.values()),
                "rss_mb": memory_mb()["VmRSS"],
            }
        )
        if pool is not None:
            pool.publish(snapshot)
        else:
            assert server is not None
            server.notify()
        loop.call_soon_threadsafe(first.set)

    source = PrometheusSource(PrometheusSettings(url=args.prometheus_url, window=WINDOW))
    engine = Engine(
        cluster=cache.snapshot,
        metrics=source,
        clock=clock,
        interval_s=0.0,  # back to back
        on_snapshot=published,
        after_cycle=SettleAfterCycle(),  # as `wva-adapter run` does
    )
    port = await serving.start()
    run = asyncio.create_task(engine.run(stop))
    await first.wait()
    print(json.dumps({"port": port}), flush=True)
    # Cycles run until the coordinator closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    stop.set()
    await run
    await serving.stop(grace_s=1.0)
    source.close()
    cache.stop()
    api.close()  # type: ignore[no-untyped-call]
    return {
        "sync_s": round(sync_s, 3),
        "memory_after_sync_mb": memory_synced,
        "memory_mb": memory_mb(),
        "grpc_workers": pool.workers if pool is not None else 0,
        "cycles": cycles,
        "errors": engine.stats.cycle_errors_total,
        "last_error": engine.stats.last_error,
    }


# -- client process --------------------------------------------------------------------


def polled_requests(args: argparse.Namespace) -> tuple[list[int], list[Any]]:
    """The VAs polled (every vas/scaled_objects-th) and their GetMetrics requests."""
    from adapter._proto import externalscaler_pb2 as pb

    step = max(1, args.vas // args.scaled_objects)
    targets = [i * step for i in range(min(args.scaled_objects, args.vas))]
    requests = [
        pb.GetMetricsRequest(
            scaledObjectRef=pb.ScaledObjectRef(
                name=va_name(i), namespace=va_namespace(i, args.vas, args.namespaces)
            ),
            metricName=f"wva-{i}",
        )
        for i in targets
    ]
    return targets, requests


async def poll(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from adapter._proto import externalscaler_pb2_grpc as pb_grpc

    options = [("grpc.use_local_subchannel_pool", 1)]  # a TCP connection per channel
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{args.port}", options=options)
        for _ in range(args.channels)
    ]
    stubs = [pb_grpc.ExternalScalerStub(c) for c in channels]  # type: ignore[no-untyped-call]
    targets, requests = polled_requests(args)
    samples: list[tuple[float, float]] = []  # (sent on CLOCK_MONOTONIC, latency s)
    errors: list[str] = []

    async def call(k: int) -> None:
        sent = time.monotonic()
        try:
            response = await stubs[k % len(stubs)].GetMetrics(requests[k], timeout=30)
            if response.metricValues[0].metricValue < 1:
                errors.append(f"{targets[k]}: {response.metricValues[0].metricValue}")
        except grpc.aio.AioRpcError as error:
            errors.append(f"{targets[k]}: {error.code().name} {error.details()}")
        samples.append((sent, time.monotonic() - sent))

    async def paced(k: int, interval: float, deadline: float) -> None:
        due = time.monotonic() + random.uniform(0.0, interval)
        while due < deadline:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await call(k)
            due += interval

    for channel in channels:
        await channel.channel_ready()
    for k in range(len(requests)):  # warm-up and check, not counted
        await call(k)
    if args.check_only:
        for channel in channels:
            await channel.close()
        return {"checked": len(requests), "errors": errors}
    samples.clear()
    errors.clear()
    began = time.monotonic()
    interval = len(requests) / args.rate
    await asyncio.gather(*(paced(k, interval, began + args.duration) for k in range(len(requests))))
    elapsed = time.monotonic() - began
    for channel in channels:
        await channel.close()
    return {"elapsed": elapsed, "samples": samples, "errors": errors, "streams": len(requests)}


# -- coordinator -----------------------------------------------------------------------


def quantiles_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1)] * 1e3, 3)

    return {
        "count": len(ordered),
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "max_ms": round(ordered[-1] * 1e3, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
    }


@contextmanager
def fake_environment(args: argparse.Namespace) -> Iterator[tuple[str, FakePrometheus]]:
    from tests.fakes.kube_api import FakeKubeAPI

    keys = sorted(
        {
            (va_namespace(i, args.vas, args.namespaces), model_name(i, args.models))
            for i in range(args.vas)
        }
    )
    with FakeKubeAPI() as kube, FakePrometheus(keys, args.churn) as prometheus:
        for obj in cluster_objects(args.vas, args.namespaces, args.models):
            kube.apply(obj)
        yield kube.url, prometheus


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the fakes here, the adapter and then the client in their own processes."""
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    tool = h2load.version() if args.client in ("auto", "h2load") else None
    if args.client == "h2load" and tool is None:
        raise SystemExit("--client h2load: h2load is not on PATH (apt-get install nghttp2-client)")
    if tool is None and args.client == "auto":
        print(
            "note: h2load not found (apt-get install nghttp2-client): polling with the Python "
            "grpc.aio client, which takes a large share of the CPU the adapter needs"
        )
    began = time.monotonic()
    with (
        fake_environment(args) as (kube_url, prometheus),
        tempfile.TemporaryDirectory(prefix="wva-load-") as tmp,
    ):
        setup_s = time.monotonic() - began
        log_file = Path(tmp) / "adapter.log"
        command = [
            sys.executable, __file__, "--adapter", "--kube-url", kube_url,
            "--prometheus-url", prometheus.url, "--vas", str(args.vas),
            "--log-file", str(log_file),
        ]  # fmt: skip
        if args.workers is not None:
            command += ["--workers", str(args.workers)]
        log_stream = log_file.open("ab")  # stderr too: the serving processes log there
        server = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_stream, text=True
        )
        try:
            assert server.stdout is not None and server.stdin is not None
            with ProcessSampler(server.pid) as sampler:
                line = server.stdout.readline()
                if not line:
                    raise RuntimeError(f"the adapter process failed:\n{_tail(log_file)}")
                sampler.mark("first cycle")  # import, list+sync, the first (cold) cycle
                port = json.loads(line)["port"]
                polled = poll_every_rate(args, port, tool, Path(tmp), sampler.mark)
            out, _ = server.communicate(input="", timeout=120)  # EOF on stdin: stop
            if server.returncode != 0:
                raise RuntimeError(f"the adapter process failed:\n{_tail(log_file)}")
            measured = json.loads(out)
            log_bytes = log_file.stat().st_size
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            log_stream.close()
    whole = sampler.report([cycle["end"] for cycle in measured["cycles"]])
    report = summarize(args, measured, whole, polled, setup_s, log_bytes, prometheus.requests)
    report["machine"]["load_average_at_start"] = load_at_start  # others busy on this machine?
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["client"] = tool or "python grpc.aio"
    return report


def poll_every_rate(
    args: argparse.Namespace,
    port: int,
    tool: str | None,
    workdir: Path,
    mark: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One polling run per rate: h2load when `tool` is set (after checking every polled
    ScaledObject's answer with the Python client), the Python client otherwise. `mark`
    is called with a name before and after each run."""
    client_command = [
        sys.executable, __file__, "--client-process", "--port", str(port),
        "--vas", str(args.vas), "--namespaces", str(args.namespaces),
        "--scaled-objects", str(args.scaled_objects), "--duration", str(args.duration),
        "--channels", str(args.channels),
    ]  # fmt: skip
    timeout = args.duration + 120
    polled = []
    if tool is None:
        for rate in args.rates:
            command = [*client_command, "--rate", str(rate)]
            mark(f"polling {rate:g}/s")
            answer = subprocess.run(
                command, check=True, capture_output=True, text=True, timeout=timeout
            )
            mark(f"polled {rate:g}/s")
            polled.append({"rate": rate, **json.loads(answer.stdout)})
        return polled
    command = [*client_command, "--check-only"]
    answer = subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
    checked = json.loads(answer.stdout)
    _targets, requests = polled_requests(args)
    load = h2load.H2load(port, METHOD, requests[0].SerializeToString(), workdir)
    for rate in args.rates:
        mark(f"polling {rate:g}/s")
        result = load.paced(rate, args.duration, args.channels, len(requests))
        mark(f"polled {rate:g}/s")
        errors = list(checked["errors"])
        if result.failed:
            errors.append(f"{result.failed} calls got no HTTP 200")
        polled.append(
            {
                "rate": rate,
                "elapsed": result.elapsed,
                "samples": list(zip(result.starts, result.latencies, strict=True)),
                "errors": errors,
                "streams": len(requests),
            }
        )
    return polled


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-30:])
    except OSError:
        return "(no log)"


def summarize(
    args: argparse.Namespace,
    measured: dict[str, Any],
    whole: dict[str, Any],
    polled: list[dict[str, Any]],
    setup_s: float,
    log_bytes: int,
    prometheus_requests: int,
) -> dict[str, Any]:
    cycles = measured["cycles"]
    durations = [c["duration_s"] for c in cycles]
    warm = durations[1:]
    busy = sum(durations[1:]) / max(1e-9, cycles[-1]["end"] - cycles[1]["start"]) if warm else 0

    def latency(run: dict[str, Any]) -> dict[str, Any]:
        samples = run["samples"]
        return {
            "target_rate_per_s": run["rate"],
            "requests": len(samples),
            "errors": len(run["errors"]),
            "first_errors": run["errors"][:5],
            "achieved_rate_per_s": round(len(samples) / run["elapsed"], 1),
            "latency": quantiles_ms([seconds for _sent, seconds in samples]),
        }

    return {
        "benchmark": "load: VAs through the whole adapter",
        "smoke": args.smoke,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": cpu_model(),
            "python": platform.python_version(),
        },
        "source": _source(),
        "size": {
            "vas": args.vas,
            "namespaces": args.namespaces,
            "models": args.models,
            "scaled_objects": polled[0]["streams"],
            "rates_per_s": args.rates,
            "churn": args.churn,
        },
        "targets": TARGETS,
        # warm cycles; the whole adapter's memory (the larger of its two peaks, Pss and
        # private + shared); p99 at the lowest rate polled
        "targets_met": {
            "cycle_s": bool(warm) and max(warm) < TARGETS["cycle_s"],
            "rss_mb": max(whole["pss_sum_peak_mb"], whole["private_plus_shared_peak_mb"])
            < TARGETS["rss_mb"],
            "p99_ms": latency(min(polled, key=lambda run: run["rate"]))["latency"].get(
                "p99_ms", math.inf
            )
            < TARGETS["p99_ms"],
        },
        "setup_s": round(setup_s, 3),
        "adapter_sync_s": measured["sync_s"],
        "cycles": {
            "count": len(durations),
            "errors": measured["errors"],
            "last_error": measured["last_error"],
            "solved_last": cycles[-1]["solved"] if cycles else 0,
            "cold_s": round(durations[0], 3) if durations else None,
            "warm_median_s": round(statistics.median(warm), 3) if warm else None,
            "warm_max_s": round(max(warm), 3) if warm else None,
            # collect / assemble / optimize, s: the first cycle, and the warm cycles' medians
            "cold_phases_s": _rounded(cycles[0]["phases_s"]) if cycles else {},
            "warm_phases_median_s": _rounded(
                {
                    phase: statistics.median(c["phases_s"][phase] for c in cycles[1:])
                    for phase in cycles[0]["phases_s"]
                }
                if warm
                else {}
            ),
            # the adapter process' RSS as each cycle published (MiB): growth per cycle
            "rss_mb_after_each": [c["rss_mb"] for c in cycles],
        },
        "grpc_workers": measured["grpc_workers"],  # 0: gRPC in the adapter process
        # the adapter process (cycle, cache, feeding the serving processes), by itself
        "memory_mb": measured["memory_mb"],
        # the engine process and every serving process, from outside (ProcessSampler)
        "whole_adapter": whole,
        "memory_after_sync_mb": measured["memory_after_sync_mb"],
        "log_bytes_per_cycle": round(log_bytes / max(1, len(durations))),
        "prometheus_requests": prometheus_requests,
        # cycles run back to back: (almost) every call is sent while one runs
        "warm_cycle_busy_fraction": round(busy, 3),
        "get_metrics": [latency(run) for run in polled],
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 3) for key, value in values.items()}


def _source() -> str | None:
    """The commit measured, `-dirty` when the work tree had changes."""
    try:
        described = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return None
    return described.stdout.strip() or None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="500 VAs / 10 namespaces, short")
    p.add_argument("--vas", type=int, default=5000)
    p.add_argument("--namespaces", type=int, default=100)
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--scaled-objects", type=int, default=1000)
    p.add_argument(
        "--rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[100.0, 500.0],
        help="GetMetrics per second, total; one polling run per rate",
    )
    p.add_argument("--rate", type=float, default=100.0, help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of polling")
    p.add_argument("--channels", type=int, default=4, help="client connections")
    p.add_argument(
        "--workers", type=int, help="gRPC serving processes (default: as `run`; 0: in-process)"
    )
    p.add_argument("--churn", type=float, default=0.2, help="keys with new load per cycle")
    p.add_argument("--output", type=Path)
    # internal: the adapter and client processes
    p.add_argument("--adapter", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--client",
        choices=("auto", "h2load", "python"),
        default="auto",
        help="polling client (auto: h2load when installed)",
    )
    p.add_argument("--client-process", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--check-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kube-url", help=argparse.SUPPRESS)
    p.add_argument("--prometheus-url", help=argparse.SUPPRESS)
    p.add_argument("--log-file", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--sync-timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    return p


def smoke(args: argparse.Namespace) -> argparse.Namespace:
    """The reduced size `make test` runs (tests/test_load.py)."""
    args.vas, args.namespaces, args.models = 500, 10, 50
    args.scaled_objects, args.rates, args.duration, args.channels = 200, [100.0], 4.0, 2
    return args


def report_lines(report: dict[str, Any]) -> list[str]:
    c, m, w = report["cycles"], report["memory_mb"], report["whole_adapter"]
    lines = [
        f"machine: {report['machine']['cpu_count']} CPUs, {report['machine']['processor']}; "
        f"load average at start {report['machine']['load_average_at_start']}, "
        f"at the end {report['machine']['load_average_at_end']}; "
        f"client {report['client']}",
        f"size: {report['size']}",
        f"setup {report['setup_s']} s, adapter list+sync {report['adapter_sync_s']} s",
        f"cycles: {c['count']} ({c['errors']} errors, {c['solved_last']} solved), "
        f"cold {c['cold_s']} s, warm median {c['warm_median_s']} s, max {c['warm_max_s']} s",
        f"cycle phases: cold {c['cold_phases_s']}, warm median {c['warm_phases_median_s']}",
        f"memory, whole adapter ({len(w['processes'])} processes, {report['grpc_workers']} "
        f"serving): Pss sum peak {w['pss_sum_peak_mb']} MB (median {w['pss_sum_median_mb']}), "
        f"private + shared at least {w['private_plus_shared_peak_mb']} MB, "
        f"VmHWM sum {w['vmhwm_sum_mb']} MB; the adapter process alone VmHWM {m['VmHWM']} MB",
    ]
    for p in w["processes"]:
        lines.append(
            f"  {p['role']} {p['pid']}: Pss peak {p['pss_peak_mb']} MB, "
            f"VmHWM {p['VmHWM_mb']} MB, CPU {p['cpu_s']} s"
        )
    for x in w["cpu_windows"]:
        lines.append(
            f"cores, {x['from']} -> {x['to']} ({x['wall_s']} s, {x['cycles_ended']} cycles): "
            f"{x['cores']}; engine CPU per cycle {x['engine_cpu_s_per_cycle']} s"
        )
    for g in report["get_metrics"]:
        lines.append(
            f"GetMetrics at {g['target_rate_per_s']}/s: {g['requests']} requests "
            f"({g['achieved_rate_per_s']}/s), {g['errors']} errors; "
            f"p50 {g['latency'].get('p50_ms')} ms, p99 {g['latency'].get('p99_ms')} ms, "
            f"max {g['latency'].get('max_ms')} ms"
        )
    lines.append(f"targets {report['targets']}: met {report['targets_met']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.adapter:
        result = asyncio.run(adapter(args))
        print(json.dumps(result))
        return 0
    if args.client_process:
        print(json.dumps(asyncio.run(poll(args))))
        return 0
    if args.smoke:
        smoke(args)
    report = run(args)
    output = args.output or ROOT / "bench" / "results" / (
        "load-smoke.json" if args.smoke else "load.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    for line in report_lines(report):
        print(line)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

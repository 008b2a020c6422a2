"""The attainment model against the real-time emulator, one replica: predicted vs measured
share of requests whose mean inter-token latency is within the ITL SLO.

`bench/attainment.py` checks the model (adapter/queueing/attainment.py) against the
simulator, which runs the emulator's batching physics in virtual time. This runs the
emulator itself (`python -m adapter.emulator`, its own process: OpenAI-compatible HTTP,
the decode steps driven by wall time) under a Poisson load from an asyncio aiohttp
client in this process, and measures what a client sees: per request the send time and
the arrival times of the chunks holding the first and the last token. A request's mean
ITL is (last - first) / (tokens - 1), the same definition as the model's and the
simulator's.

Four figures at one operating point, so the causes of a gap are told apart:

- predicted: the model at the nominal rate;
- emulator: the measured share (requests sent after a warm-up);
- simulator on the same arrivals: the client's send times and token counts replayed
  through `adapter.sim.cluster.SimCluster`. It shares the arrivals with the emulator,
  so emulator - simulator is the emulator's timing error, and the client's (tokens
  delivered late by a loaded host, steps stretched). Per request, the emulator's ITL
  minus the simulator's shows whether the emulator kept real time;
- simulator on the Poisson schedule the client meant to keep: against the previous
  figure, what the client's late sends did to the load (a client that stalls sends a
  burst when it wakes, and a burst raises the batch); against the prediction, the
  model's error plus this seed's arrivals' noise.

A share measured over a finite run is noisy: the batch wanders on the time scale of a
request's life. The bench reports that noise from independent simulator runs of the
same length (seeds of their own), and the model's bias from their mean.

Why this operating point. The share depends on the output length N and the rate only
through N * rate (the batch's statistics are the same in units of a request's life), so
shorter outputs at a proportionally higher rate give the same share with more
independent lifetimes per minute. The standard deviation of a 10-minute run's share,
from 30 simulator runs: 2.0 points at 256 tokens, 1.2 at 128, 0.7-0.9 at 64 (skewed
low: a burst of arrivals makes many requests miss at once). 64 tokens at the rate the
model puts at 95 % (87.65 req/s, SLO 9 ms; the tutorial's H100 profile, alpha 6.356 ms,
beta 0.044 ms, max batch 512): 32 tokens would double the request rate the client and
the emulator (one core each) must carry, and the error a late token delivery makes in
a request's mean ITL. 20 minutes judged: the standard deviation is 0.6 points (40
simulator runs), 2 points are 3.3 of them; at 10 minutes 2 points are 2.3-2.9 (the
seed-1 10-minute run came out 2.6 points low, the simulator on its arrivals too: the
worst of 120 seeds).

The host. The client and the emulator take about 10 % of a core each. On a quiet
machine neither falls behind (sends at most ~10 ms late, per-request ITL within
+-0.035 ms of the simulator's for 98 % of the requests). With other test suites running
on the same 2 cores, two runs saw the client and the emulator frozen together for
1.5-1.7 s: the emulator restarts its timeline, every request in flight gains ~25 ms of
ITL, and the client sends the frozen second's requests in one burst. One such 20-minute
run came out -2.35 points: -0.39 from the timing, -0.55 from the bursts. The report
counts the freezes (sends more than `STALL_MS` late) and gives the share over the
requests clear of them.

Beside the direct comparison, the report gives the emulator's share corrected for its
run's arrivals (common random numbers): emulator - simulator on the same arrivals +
the simulator's mean over the independent runs, an estimate of the emulator's long-run
share with the independent runs' standard error. It leans on the simulator's mean,
so it is reported, not judged.

The stream interval: the emulator writes the chunk with a request's first token when
the step that made it ends, and the chunk with its last token when it finishes,
whatever the interval (server.py notifies the stream on both); the interval only
coalesces the tokens in between, which this measure ignores. A long one (1 s) keeps the
emulator's CPU for the steps. If the stream handler runs late and a first chunk holds
k > 1 tokens, the ITL is taken over the tokens after it: (last - first) / (tokens - k).

Acceptance: |predicted - emulator| <= 2 points.

Usage: python bench/attainment_emulator.py [--smoke] [--duration S] [--rate R]
       [--output-tokens N] [--seed K]
Writes bench/results/attainment-emulator.md and .json (-smoke before the extension).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):  # the adapter; bench/machine.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from machine import cpu_model  # noqa: E402  (bench/machine.py)

from adapter.emulator.batching import ServingProfile  # noqa: E402
from adapter.emulator.server import TOKEN_TEXT  # noqa: E402
from adapter.queueing.attainment import ReplicaModel, attainment  # noqa: E402
from adapter.sim.cluster import ClusterSettings, SimCluster  # noqa: E402
from adapter.sim.traces import (  # noqa: E402
    PiecewiseTrace,
    RequestShape,
    Workload,
    make_workload,
    poisson_arrivals,
)

ALPHA_MS, BETA_MS, MAX_BATCH, PROMPT = 6.356, 0.044, 512, 128
SLO_ITL_MS = 9.0
OUTPUT = 64  # tokens per request (see the docstring: why 64)
TARGET_SHARE = 0.95  # the operating point: the rate the model puts at this share
TOLERANCE = 2.0  # points, the acceptance
# points, for a --smoke run (60 s judged): a share over 60 s has a standard deviation of
# 2.5 points (200 simulator runs), skewed low (0.5th percentile 7.6 under the mean)
SMOKE_TOLERANCE = 8.0
STREAM_INTERVAL_MS = 1000.0
MODEL_NAME = "attainment-bench"
SPREAD_SEEDS = 40  # independent simulator runs for the share's noise at this length
# judged, after the warm-up (see the docstring: why 20 minutes)
DURATION_S, SMOKE_DURATION_S = 1200.0, 60.0
_TICKS = os.sysconf("SC_CLK_TCK")


def replica_model(output_tokens: int, beta_ms: float = BETA_MS) -> ReplicaModel:
    return ReplicaModel(ALPHA_MS, beta_ms, MAX_BATCH, output_tokens, PROMPT)


def predicted_share(output_tokens: int, rate: float, beta_ms: float = BETA_MS) -> float:
    """The model's share (0..1) of requests within the ITL SLO, one replica."""
    return attainment(replica_model(output_tokens, beta_ms), rate, 1, SLO_ITL_MS, 0.0).itl


def rate_for_share(output_tokens: int, target: float = TARGET_SHARE) -> float:
    """The rate (req/s) at which the model predicts `target`: bisection (the share falls
    with the rate) between 0 and the rate where the batch grows without bound."""
    low, high = 0.0, 1000.0 / (output_tokens * BETA_MS)
    for _ in range(60):
        mid = (low + high) / 2.0
        if predicted_share(output_tokens, mid) >= target:
            low = mid
        else:
            high = mid
    return low


def warmup_s(output_tokens: int, rate: float) -> float:
    """Requests sent before this are not judged: 20 lifetimes (the batch forgets its empty
    start within a few), at least 10 s."""
    return max(10.0, round(20.0 * lifetime_s(output_tokens, rate)))


def lifetime_s(output_tokens: int, rate: float) -> float:
    """A request's mean decode time at this load, as the model sees it."""
    model = replica_model(output_tokens)
    return attainment(model, rate, 1, SLO_ITL_MS, 0.0).statistics.lifetime_s


# --------------------------------------------------------------------------- the client


@dataclass(frozen=True, slots=True)
class Observation:
    """One request as the client saw it; times in seconds from the run's start."""

    scheduled: float  # its Poisson arrival time
    sent: float  # when the client sent it
    first: float  # when the chunk with its first token arrived (nan: none)
    last: float  # when the chunk with its last token arrived
    tokens: int  # tokens received
    first_chunk_tokens: int  # tokens in that first chunk (1 unless delivered late)
    error: str | None = None

    @property
    def itl_ms(self) -> float:
        """Mean inter-token latency over the tokens after the first chunk (nan if none)."""
        gaps = self.tokens - self.first_chunk_tokens
        if self.error is not None or gaps <= 0:
            return math.nan
        return 1000.0 * (self.last - self.first) / gaps

    @property
    def ttft_ms(self) -> float:
        return 1000.0 * (self.first - self.sent)


# A request as `_request` stores it: the fields of `Observation`, in order. A tuple of
# numbers and strings, which Python's garbage collector stops tracking: the client keeps
# tens of thousands of them, and scanning them all at every full collection would stall
# its event loop (tokens timed late) more and more as the run goes on.
_Row = tuple[float, float, float, float, int, int, str | None]


async def _request(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    scheduled: float,
    origin: float,
    rows: list[_Row | None],
    index: int,
) -> None:
    """Send one streaming completion and time its first and last token chunks."""
    loop = asyncio.get_running_loop()
    sent = loop.time() - origin
    first = last = math.nan
    tokens = first_chunk = 0
    error: str | None = None
    try:
        async with session.post(url, data=body) as response:
            if response.status != 200:
                error = f"HTTP {response.status}: {await response.text()}"
            else:
                async for line in response.content:
                    if not line.startswith(b"data: {"):
                        continue  # the blank line after each event, and [DONE]
                    now = loop.time() - origin
                    choices = json.loads(line[6:])["choices"]
                    n = choices[0]["text"].count(TOKEN_TEXT) if choices else 0
                    if n == 0:
                        continue
                    if tokens == 0:
                        first, first_chunk = now, n
                    tokens += n
                    last = now
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = repr(exc)
    rows[index] = (scheduled, sent, first, last, tokens, first_chunk, error)


@dataclass(frozen=True, slots=True)
class ClientPauses:
    """The client's garbage collector's pauses over the load, in ms of wall time; the
    longest one's CPU time too (much less: the process was not running, but waiting for
    a CPU)."""

    collections: int
    total_ms: float
    max_ms: float
    max_cpu_ms: float


async def drive(
    gateway: str, arrivals: Sequence[float], output_tokens: int
) -> tuple[list[Observation], ClientPauses]:
    """Send a streaming completion at each arrival time (seconds from now); wait for all.

    The connection pool is unbounded: a pool limit would hold requests back in the
    client and turn the Poisson arrivals into a queue of the client's own. What was
    loaded before (modules, the arrivals) is frozen out of the garbage collector's scans.
    """
    body = json.dumps(
        {
            "model": MODEL_NAME,
            "prompt": " ".join(["word"] * PROMPT),
            "max_tokens": output_tokens,
            "stream": True,
            "ignore_eos": True,
        }
    ).encode()
    url = gateway + "/v1/completions"
    loop = asyncio.get_running_loop()
    rows: list[_Row | None] = [None] * len(arrivals)
    live: set[asyncio.Task[None]] = set()
    pauses: list[tuple[float, float]] = []  # (wall, CPU) ms
    began = [0.0, 0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[:] = time.perf_counter(), time.thread_time()
        else:
            wall = 1000.0 * (time.perf_counter() - began[0])
            pauses.append((wall, 1000.0 * (time.thread_time() - began[1])))

    gc.collect()
    gc.freeze()
    gc.callbacks.append(timed)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=300.0)
    headers = {"Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers
        ) as session:
            origin = loop.time()
            for index, at in enumerate(arrivals):
                delay = origin + at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # the load's schedule
                task = asyncio.create_task(_request(session, url, body, at, origin, rows, index))
                live.add(task)
                task.add_done_callback(live.discard)
            await asyncio.gather(*live)
    finally:
        gc.callbacks.remove(timed)
        gc.unfreeze()
    observations = [Observation(*row) for row in rows if row is not None]
    if len(observations) != len(arrivals):
        raise RuntimeError(f"{len(arrivals) - len(observations)} requests never ended")
    longest = max(pauses, default=(0.0, 0.0))
    return observations, ClientPauses(
        len(pauses), sum(w for w, _ in pauses), longest[0], longest[1]
    )


# --------------------------------------------------------------------------- the emulator


@dataclass(frozen=True, slots=True)
class Emulator:
    pid: int
    gateway: str


@contextlib.asynccontextmanager
async def emulator(log_path: Path, stream_interval_ms: float) -> AsyncIterator[Emulator]:
    """One emulated replica in its own process (its own core: the client's work takes no
    time from its steps). Ready when it prints its endpoints line: read, not polled."""
    args = [
        *("--model", MODEL_NAME, "--alpha-ms", str(ALPHA_MS), "--beta-ms", str(BETA_MS)),
        *("--max-batch-size", str(MAX_BATCH), "--replicas", "1"),
        *("--stream-interval-ms", str(stream_interval_ms)),
    ]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "adapter.emulator",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout=60.0)
            if not line:
                raise RuntimeError(f"the emulator exited; see {log_path}")
            yield Emulator(process.pid, str(json.loads(line)["gateway"]))
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), timeout=15.0)
                except TimeoutError:
                    process.kill()
                    await process.wait()


# --------------------------------------------------------------------------- CPU


@dataclass(frozen=True, slots=True)
class CpuSample:
    emulator_s: float  # the emulator process's user + system CPU
    client_s: float  # this process's
    busy_s: float  # every CPU of the machine, busy
    total_s: float  # every CPU of the machine, busy or idle
    waiting_s: float  # time some task waited for a CPU (Linux PSI; nan without it)
    wall: float


def _cpu_pressure_s() -> float:
    """/proc/pressure/cpu's "some" total: time at least one runnable task waited."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return math.nan
    return int(line.rsplit("total=", 1)[1]) / 1e6


def cpu_sample(emulator_pid: int) -> CpuSample:
    fields = Path(f"/proc/{emulator_pid}/stat").read_text().rsplit(")", 1)[1].split()
    emulator_s = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    total = sum(ticks[:8])  # up to steal (guest time is counted in user already)
    return CpuSample(
        emulator_s=emulator_s,
        client_s=time.process_time(),
        busy_s=(total - idle) / _TICKS,
        total_s=total / _TICKS,
        waiting_s=_cpu_pressure_s(),
        wall=time.monotonic(),
    )


@dataclass(frozen=True, slots=True)
class CpuLoad:
    """Over the load's run, in % of one core (the machine: % of all its cores)."""

    emulator_pct: float
    client_pct: float
    others_pct: float  # every other program on the machine
    machine_pct: float
    cpu_waiting_pct: float  # % of the time some runnable task waited for a CPU
    cores: int
    loadavg_1m: float

    @staticmethod
    def between(a: CpuSample, b: CpuSample) -> CpuLoad:
        wall = b.wall - a.wall
        cores = os.cpu_count() or 1
        emulator = 100.0 * (b.emulator_s - a.emulator_s) / wall
        client = 100.0 * (b.client_s - a.client_s) / wall
        machine = 100.0 * (b.busy_s - a.busy_s) / (b.total_s - a.total_s)
        return CpuLoad(
            emulator_pct=emulator,
            client_pct=client,
            others_pct=max(0.0, machine * cores - emulator - client),
            machine_pct=machine,
            cpu_waiting_pct=100.0 * (b.waiting_s - a.waiting_s) / wall,
            cores=cores,
            loadavg_1m=os.getloadavg()[0],
        )


# --------------------------------------------------------------------------- the simulator


@dataclass(frozen=True, slots=True)
class Replayed:
    """A request's mean ITL and TTFT (ms) in the simulator, on the emulator's arrivals."""

    itl_ms: float
    ttft_ms: float


def replay(times: Sequence[float], output_tokens: int, beta_ms: float = BETA_MS) -> list[Replayed]:
    """Requests arriving at `times` (the client's send times: the emulator's arrivals)
    through the simulator (one pinned replica), in the order of `times`. `beta_ms` other
    than the emulator's: a control the comparison must tell apart."""
    profile = ServingProfile(ALPHA_MS, beta_ms, MAX_BATCH)
    arrivals = tuple(sorted(times))
    n = len(arrivals)
    workload = Workload(arrivals, (PROMPT,) * n, (output_tokens,) * n)
    cluster = SimCluster(
        ClusterSettings(profile, startup_delay_s=0.0, initial_replicas=1), workload
    )
    cluster.run_until(arrivals[-1] + 600.0)
    by_arrival = {r.arrival: r for r in cluster.finished}
    if len(by_arrival) != n:
        raise RuntimeError(f"the simulator finished {len(by_arrival)} of {n} requests")
    return [Replayed(1000.0 * by_arrival[t].itl_mean, 1000.0 * by_arrival[t].ttft) for t in times]


def simulated_share(
    output_tokens: int, rate: float, warmup: float, duration: float, seed: int
) -> float:
    """% within the SLO in one simulator run of the bench's length, arrivals of its own."""
    total = warmup + duration
    trace = PiecewiseTrace("steady", total, (0.0,), (rate,))
    workload = make_workload(trace, seed, RequestShape(PROMPT, output_tokens))
    profile = ServingProfile(ALPHA_MS, BETA_MS, MAX_BATCH)
    cluster = SimCluster(
        ClusterSettings(profile, startup_delay_s=0.0, initial_replicas=1), workload
    )
    cluster.run_until(total + 600.0)
    judged = [r for r in cluster.finished if warmup <= r.arrival < total]
    return 100.0 * sum(1 for r in judged if r.itl_mean * 1000.0 <= SLO_ITL_MS) / len(judged)


# --------------------------------------------------------------------------- the run

STALL_MS = 50.0  # a send this late means the client (or the host) stalled


def stall_windows(observations: Sequence[Observation]) -> list[tuple[float, float]]:
    """When the client was frozen: from the schedule to the send of every request sent
    more than `STALL_MS` late, overlapping spans merged (seconds from the start)."""
    spans = sorted(
        (o.scheduled, o.sent) for o in observations if o.sent - o.scheduled > STALL_MS / 1000
    )
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def outside_stalls(
    scheduled: float, windows: Sequence[tuple[float, float]], before: float, after: float
) -> bool:
    """Whether a request due at `scheduled` is clear of every stall window: not alive
    when it began (`before`: a few lifetimes) and not in the `after` it takes the batch
    to forget the burst the stall sent. The windows come from the host, not from the
    batch, so leaving them out does not bias the share."""
    return all(not (start - before <= scheduled <= end + after) for start, end in windows)


@dataclass(frozen=True)
class Result:
    """One run's figures; shares in %, times in ms unless named otherwise."""

    output_tokens: int
    rate: float
    warmup_s: float
    duration_s: float
    seed: int
    stream_interval_ms: float
    tolerance: float  # points, on |emulator - predicted|
    sent: int
    judged: int
    errors: int  # judged requests that failed (counted as misses)
    incomplete: int  # judged requests with fewer tokens than asked, or no ITL (misses)
    late_first_chunks: int  # judged requests whose first chunk held more than one token
    predicted_pct: float
    emulator_pct: float
    simulator_same_pct: float  # the simulator on the client's send times
    simulator_scheduled_pct: float  # the simulator on the Poisson schedule itself
    spread_mean_pct: float  # independent simulator runs of this length: mean
    spread_std_pct: float  # ... and standard deviation (one run's noise)
    spread_runs: int
    disagreements: int  # requests within the SLO in one of emulator, simulator only
    itl_diff_mean_ms: float  # emulator - simulator on the same arrivals, per request
    itl_diff_p01_ms: float
    itl_diff_p99_ms: float
    itl_diff_max_abs_ms: float
    itl_emulator_mean_ms: float
    itl_simulator_mean_ms: float
    ttft_diff_p50_ms: float  # emulator TTFT (sent to first chunk) - simulator TTFT
    ttft_diff_p99_ms: float
    send_lag_p99_ms: float  # the client's sends behind their schedule
    send_lag_max_ms: float
    stalled_sends: int  # sends more than STALL_MS behind
    stalls: int  # windows the client was frozen in (merged stalled sends)
    stalled_s: float  # their total length
    clear: int  # judged requests clear of the stalls (see `outside_stalls`)
    emulator_clear_pct: float  # the shares over those requests only
    simulator_same_clear_pct: float
    simulator_scheduled_clear_pct: float
    client_gc: ClientPauses
    cpu: CpuLoad
    wall_s: float

    @property
    def gap(self) -> float:
        """emulator - predicted, points: what the acceptance bounds."""
        return self.emulator_pct - self.predicted_pct

    @property
    def timing_gap(self) -> float:
        """emulator - simulator on the same arrivals, points: the emulator's (and the
        client's) timing error."""
        return self.emulator_pct - self.simulator_same_pct

    @property
    def send_gap(self) -> float:
        """simulator on the send times - on the schedule, points: how much the client's
        late sends (bunched after a stall) changed the load."""
        return self.simulator_same_pct - self.simulator_scheduled_pct

    @property
    def arrivals_gap(self) -> float:
        """simulator on the schedule - predicted, points: the model's error plus this
        seed's arrivals' noise (one run's standard deviation: `spread_std_pct`)."""
        return self.simulator_scheduled_pct - self.predicted_pct

    @property
    def corrected_pct(self) -> float:
        """The emulator's share corrected for this run's arrivals (common random
        numbers): its timing gap on top of the simulator's long-run mean."""
        return self.timing_gap + self.spread_mean_pct

    @property
    def clear_gap(self) -> float:
        """emulator - predicted over the requests clear of the host's stalls, points."""
        return self.emulator_clear_pct - self.predicted_pct

    @property
    def passed(self) -> bool:
        return abs(self.gap) <= self.tolerance


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


def _share_pct(itl_ms: Sequence[float]) -> float:
    """% of the ITLs within the SLO; nan (a failed request, no ITL) is a miss."""
    if not itl_ms:
        return math.nan
    return 100.0 * sum(1 for x in itl_ms if x <= SLO_ITL_MS) / len(itl_ms)


async def _load(
    arrivals: Sequence[float], output_tokens: int, stream_interval_ms: float, log_path: Path
) -> tuple[list[Observation], ClientPauses, CpuLoad]:
    async with emulator(log_path, stream_interval_ms) as emu:
        before = cpu_sample(emu.pid)
        observations, pauses = await drive(emu.gateway, arrivals, output_tokens)
        after = cpu_sample(emu.pid)
    return observations, pauses, CpuLoad.between(before, after)


def run(
    *,
    output_tokens: int = OUTPUT,
    rate: float | None = None,
    duration_s: float = DURATION_S,
    seed: int = 1,
    stream_interval_ms: float = STREAM_INTERVAL_MS,
    spread_runs: int = SPREAD_SEEDS,
    tolerance: float = TOLERANCE,
    log_path: Path | None = None,
) -> tuple[Result, list[Observation], list[Replayed]]:
    """Load the emulator, replay its arrivals through the simulator, predict; returns the
    figures, every request as the client saw it, and each one in the simulator (on the
    client's send times)."""
    started = time.monotonic()
    if rate is None:
        rate = rate_for_share(output_tokens)
    warmup = warmup_s(output_tokens, rate)
    total = warmup + duration_s
    arrivals = poisson_arrivals(PiecewiseTrace("steady", total, (0.0,), (rate,)), seed)
    log = log_path or Path(tempfile.gettempdir()) / f"attainment-emulator-{os.getpid()}.log"
    observations, pauses, cpu = asyncio.run(_load(arrivals, output_tokens, stream_interval_ms, log))
    replayed = replay([o.sent for o in observations], output_tokens)
    scheduled = replay([o.scheduled for o in observations], output_tokens)
    kept = [i for i, o in enumerate(observations) if o.scheduled >= warmup]
    judged = [(observations[i], replayed[i]) for i in kept]
    windows = stall_windows(observations)
    alive = 2.0 * lifetime_s(output_tokens, rate)
    clear = [i for i in kept if outside_stalls(observations[i].scheduled, windows, alive, warmup)]
    timed = [(o, s) for o, s in judged if not math.isnan(o.itl_ms)]
    diffs = [o.itl_ms - s.itl_ms for o, s in timed]
    ttft_diffs = [o.ttft_ms - s.ttft_ms for o, s in timed]
    lags = [1000.0 * (o.sent - o.scheduled) for o in observations]
    spread = [
        simulated_share(output_tokens, rate, warmup, duration_s, 1000 + k)
        for k in range(spread_runs)
    ]
    result = Result(
        output_tokens=output_tokens,
        rate=rate,
        warmup_s=warmup,
        duration_s=duration_s,
        seed=seed,
        stream_interval_ms=stream_interval_ms,
        tolerance=tolerance,
        sent=len(observations),
        judged=len(judged),
        errors=sum(1 for o, _ in judged if o.error is not None),
        incomplete=sum(1 for o, _ in judged if o.tokens != output_tokens or math.isnan(o.itl_ms)),
        late_first_chunks=sum(1 for o, _ in judged if o.first_chunk_tokens > 1),
        predicted_pct=100.0 * predicted_share(output_tokens, rate),
        emulator_pct=_share_pct([o.itl_ms for o, _ in judged]),
        simulator_same_pct=_share_pct([s.itl_ms for _, s in judged]),
        simulator_scheduled_pct=_share_pct([scheduled[i].itl_ms for i in kept]),
        spread_mean_pct=statistics.fmean(spread) if spread else math.nan,
        spread_std_pct=statistics.stdev(spread) if len(spread) > 1 else math.nan,
        spread_runs=len(spread),
        disagreements=sum(
            1 for o, s in judged if (o.itl_ms <= SLO_ITL_MS) != (s.itl_ms <= SLO_ITL_MS)
        ),
        itl_diff_mean_ms=statistics.fmean(diffs),
        itl_diff_p01_ms=_quantile(diffs, 0.01),
        itl_diff_p99_ms=_quantile(diffs, 0.99),
        itl_diff_max_abs_ms=max(abs(d) for d in diffs),
        itl_emulator_mean_ms=statistics.fmean(o.itl_ms for o, _ in timed),
        itl_simulator_mean_ms=statistics.fmean(s.itl_ms for _, s in timed),
        ttft_diff_p50_ms=_quantile(ttft_diffs, 0.5),
        ttft_diff_p99_ms=_quantile(ttft_diffs, 0.99),
        send_lag_p99_ms=_quantile(lags, 0.99),
        send_lag_max_ms=max(lags),
        stalled_sends=sum(1 for lag in lags if lag > STALL_MS),
        stalls=len(windows),
        stalled_s=sum(end - start for start, end in windows),
        clear=len(clear),
        emulator_clear_pct=_share_pct([observations[i].itl_ms for i in clear]),
        simulator_same_clear_pct=_share_pct([replayed[i].itl_ms for i in clear]),
        simulator_scheduled_clear_pct=_share_pct([scheduled[i].itl_ms for i in clear]),
        client_gc=pauses,
        cpu=cpu,
        wall_s=time.monotonic() - started,
    )
    return result, observations, replayed


# --------------------------------------------------------------------------- the report


def markdown(r: Result, smoke: bool) -> str:
    c, g = r.cpu, r.client_gc
    verdict = "PASS" if r.passed else "FAIL"
    spread_se = r.spread_std_pct / math.sqrt(max(1, r.spread_runs))
    lines = [
        "# Attainment model vs the real-time emulator, one replica"
        f" (`bench/attainment_emulator.py{' --smoke' if smoke else ''}`)",
        "",
        f"Machine: {cpu_model()}, {c.cores} cores, {platform.python_implementation()}"
        f" {platform.python_version()}. {r.wall_s:.0f} s wall.",
        "",
        f"Operating point: alpha {ALPHA_MS} ms, beta {BETA_MS} ms, max batch {MAX_BATCH},"
        f" {PROMPT} prompt / {r.output_tokens} output tokens, ITL SLO {SLO_ITL_MS:g} ms,"
        f" Poisson arrivals at {r.rate:.2f} req/s (the rate the model puts at"
        f" {100 * TARGET_SHARE:g} %), seed {r.seed}; {r.warmup_s:g} s warm-up, then"
        f" {r.duration_s:g} s judged ({r.judged} of {r.sent} requests). Emulator stream"
        f" interval {r.stream_interval_ms:g} ms (the first and the last token are sent as"
        " they are made whatever the interval). Share: % of requests whose mean ITL,"
        " (last token - first token) / (tokens - 1), is within the SLO.",
        "",
        f"**{verdict}**: emulator - predicted = {r.gap:+.2f} points (tolerance"
        f" {r.tolerance:g}); one run of this length has a standard deviation of"
        f" {r.spread_std_pct:.2f} points ({r.spread_runs} simulator runs).",
        "",
        "| share within the ITL SLO | % |",
        "| --- | ---: |",
        f"| predicted (model) | {r.predicted_pct:.2f} |",
        f"| emulator (measured by the client) | {r.emulator_pct:.2f} |",
        f"| simulator on the same arrivals (the client's send times) |"
        f" {r.simulator_same_pct:.2f} |",
        f"| simulator on the Poisson schedule (what the client meant to send) |"
        f" {r.simulator_scheduled_pct:.2f} |",
        f"| simulator, {r.spread_runs} independent runs of this length: mean (+- standard"
        f" error) | {r.spread_mean_pct:.2f} (+- {spread_se:.2f}) |",
        f"| ... their standard deviation (one run's noise) | {r.spread_std_pct:.2f} |",
        f"| emulator corrected for its arrivals (emulator - simulator on the same arrivals"
        f" + the independent runs' mean; not judged) | {r.corrected_pct:.2f} (+-"
        f" {spread_se:.2f}) |",
        "",
        "emulator - predicted, in parts:",
        "",
        f"- emulator - simulator on the same arrivals: {r.timing_gap:+.2f} points, the"
        f" emulator's and the client's timing ({r.disagreements} requests judged"
        " differently);",
        f"- simulator on the send times - on the schedule: {r.send_gap:+.2f} points, the"
        " client's late sends (a stalled client sends a burst);",
        f"- simulator on the schedule - predicted: {r.arrivals_gap:+.2f} points, the"
        " model's error plus this seed's arrivals' noise;",
        f"- independent simulator runs' mean - predicted:"
        f" {r.spread_mean_pct - r.predicted_pct:+.2f} points, the model's error alone"
        f" (+- {spread_se:.2f}).",
        "",
        f"Host stalls: the client was frozen {r.stalls} times ({r.stalled_s:.2f} s in all;"
        f" sends more than {STALL_MS:g} ms late, merged). Over the {r.clear} judged requests"
        " clear of them (none alive when one began, none within a warm-up after it ended):"
        f" emulator {r.emulator_clear_pct:.2f} %, simulator on the same arrivals"
        f" {r.simulator_same_clear_pct:.2f} %, on the schedule"
        f" {r.simulator_scheduled_clear_pct:.2f} %; emulator - predicted"
        f" {r.clear_gap:+.2f} points (not the verdict: reported to show what the stalls"
        " cost).",
        "",
        "Did the emulator keep real time (per request, emulator - simulator on the same arrivals):",
        "",
        f"- mean ITL: emulator {r.itl_emulator_mean_ms:.4f} ms, simulator"
        f" {r.itl_simulator_mean_ms:.4f} ms; difference mean {r.itl_diff_mean_ms:+.4f} ms,"
        f" 1st-99th percentile {r.itl_diff_p01_ms:+.4f} .. {r.itl_diff_p99_ms:+.4f} ms,"
        f" largest {r.itl_diff_max_abs_ms:.4f} ms;",
        f"- TTFT (the client's send to the first chunk): median {r.ttft_diff_p50_ms:+.2f} ms,"
        f" 99th percentile {r.ttft_diff_p99_ms:+.2f} ms behind the simulator (HTTP and"
        " event-loop delays);",
        f"- first chunks holding more than one token (a stream handler a step late):"
        f" {r.late_first_chunks}; failed requests {r.errors}; incomplete {r.incomplete};",
        f"- the client's sends behind schedule: 99th percentile {r.send_lag_p99_ms:.2f} ms,"
        f" largest {r.send_lag_max_ms:.1f} ms, {r.stalled_sends} more than {STALL_MS:g} ms;"
        f" its garbage collector ran {g.collections} times, {g.total_ms:.0f} ms in all, the"
        f" longest {g.max_ms:.1f} ms ({g.max_cpu_ms:.1f} ms of it on a CPU).",
        "",
        f"CPU over the load, in % of one core: emulator {c.emulator_pct:.0f}, client (this"
        f" process) {c.client_pct:.0f}, other programs {c.others_pct:.0f}; the machine"
        f" {c.machine_pct:.0f} % busy (of {c.cores} cores), some task waiting for a CPU"
        f" {c.cpu_waiting_pct:.0f} % of the time (Linux PSI); load average"
        f" {c.loadavg_1m:.2f} at the end.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_DURATION_S:g} s judged (CI)")
    parser.add_argument("--duration", type=float, help="seconds judged, after the warm-up")
    parser.add_argument("--rate", type=float, help="req/s (default: the model's 95 % rate)")
    parser.add_argument("--output-tokens", type=int, default=OUTPUT)
    parser.add_argument("--seed", type=int, default=1, help="the arrivals' seed")
    parser.add_argument("--stream-interval-ms", type=float, default=STREAM_INTERVAL_MS)
    args = parser.parse_args()
    duration = args.duration or (SMOKE_DURATION_S if args.smoke else DURATION_S)
    suffix = "-smoke" if args.smoke else ""
    out = ROOT / "bench" / "results"
    result, _, _ = run(
        output_tokens=args.output_tokens,
        rate=args.rate,
        duration_s=duration,
        seed=args.seed,
        stream_interval_ms=args.stream_interval_ms,
        tolerance=SMOKE_TOLERANCE if args.smoke else TOLERANCE,
    )
    report = markdown(result, args.smoke)
    print(report)
    (out / f"attainment-emulator{suffix}.md").write_text(report, "utf-8")
    figures: dict[str, Any] = {
        **asdict(result),
        "gap": result.gap,
        "timing_gap": result.timing_gap,
        "send_gap": result.send_gap,
        "arrivals_gap": result.arrivals_gap,
        "corrected_pct": result.corrected_pct,
        "clear_gap": result.clear_gap,
        "passed": result.passed,
        "machine": cpu_model(),
    }
    (out / f"attainment-emulator{suffix}.json").write_text(
        json.dumps(figures, indent=2) + "\n", "utf-8"
    )
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

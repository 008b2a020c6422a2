"""Offered load for the closed-loop simulator: arrival-rate traces and the requests they make.

A trace is a rate of requests per second over virtual time. Arrivals are a
non-homogeneous Poisson process drawn from it by thinning, with a seed, so a run can be
repeated exactly and every policy sees the very same requests.

Pure: the CSV trace parses text it is given (the caller reads the file).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

DAY_S = 86_400.0


class TraceError(ValueError):
    """A trace that cannot be used; the message names the source (and line) at fault."""


@dataclass(frozen=True, slots=True)
class PiecewiseTrace:
    """A rate that holds from each breakpoint to the next (the last one to the end).

    Step traces, CSV traces and the bursty (MMPP) trace are of this shape.
    """

    name: str
    duration_s: float
    times: tuple[float, ...]  # increasing, first 0
    rates: tuple[float, ...]  # req/s from times[i] on

    def __post_init__(self) -> None:
        _check_duration(self.name, self.duration_s)
        if not self.times or self.times[0] != 0.0 or len(self.times) != len(self.rates):
            raise TraceError(f"{self.name}: breakpoints must start at 0, one rate each")
        if any(b <= a for a, b in zip(self.times, self.times[1:], strict=False)):
            raise TraceError(f"{self.name}: breakpoint times must increase")
        if any(not (math.isfinite(r) and r >= 0) for r in self.rates):
            raise TraceError(f"{self.name}: rates must be finite and >= 0")

    def rate(self, t: float) -> float:
        return self.rates[bisect.bisect_right(self.times, t) - 1]

    @property
    def peak(self) -> float:
        return max(self.rates[: bisect.bisect_left(self.times, self.duration_s)] or self.rates[:1])

    @property
    def step_up_at(self) -> float | None:
        """When the rate first rises (the step a policy must react to), if it does."""
        for i in range(1, len(self.times)):
            if self.rates[i] > self.rates[i - 1] and self.times[i] < self.duration_s:
                return self.times[i]
        return None


@dataclass(frozen=True, slots=True)
class RampTrace:
    """A rate going linearly from `start_rps` to `end_rps` over the run."""

    name: str
    duration_s: float
    start_rps: float
    end_rps: float

    def __post_init__(self) -> None:
        _check_duration(self.name, self.duration_s)
        _check_rates(self.name, self.start_rps, self.end_rps)

    def rate(self, t: float) -> float:
        fraction = min(max(t / self.duration_s, 0.0), 1.0)
        return self.start_rps + (self.end_rps - self.start_rps) * fraction

    @property
    def peak(self) -> float:
        return max(self.start_rps, self.end_rps)

    @property
    def step_up_at(self) -> float | None:
        return None


@dataclass(frozen=True, slots=True)
class DiurnalTrace:
    """A day of traffic as a sinusoid: `low_rps` at t=0 (night), `high_rps` half a period on.

    `period_s` is 24 h for real time; a shorter period compresses the day.
    """

    name: str
    duration_s: float
    low_rps: float
    high_rps: float
    period_s: float = DAY_S

    def __post_init__(self) -> None:
        _check_duration(self.name, self.duration_s)
        _check_rates(self.name, self.low_rps, self.high_rps)
        if not self.period_s > 0:
            raise TraceError(f"{self.name}: period must be > 0")

    def rate(self, t: float) -> float:
        phase = (1.0 - math.cos(2.0 * math.pi * t / self.period_s)) / 2.0
        return self.low_rps + (self.high_rps - self.low_rps) * phase

    @property
    def peak(self) -> float:
        return max(self.low_rps, self.high_rps)

    @property
    def step_up_at(self) -> float | None:
        return None


Trace = PiecewiseTrace | RampTrace | DiurnalTrace


def _check_duration(name: str, duration_s: float) -> None:
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise TraceError(f"{name}: duration must be > 0 s, got {duration_s}")


def _check_rates(name: str, *rates: float) -> None:
    if any(not (math.isfinite(r) and r >= 0) for r in rates):
        raise TraceError(f"{name}: rates must be finite and >= 0, got {rates}")


# --------------------------------------------------------------------------- the shapes


def step_trace(
    duration_s: float, low_rps: float = 8.0, high_rps: float = 16.0, name: str = "step"
) -> PiecewiseTrace:
    """The tutorial's story: one stream at `low_rps`, a second joins for the middle third
    (`high_rps` in all), then leaves. Steps at whole seconds."""
    up = float(round(duration_s / 3.0))
    down = float(round(2.0 * duration_s / 3.0))
    return PiecewiseTrace(name, duration_s, (0.0, up, down), (low_rps, high_rps, low_rps))


def saturating_step_trace(
    duration_s: float, low_rps: float = 8.0, high_rps: float = 40.0
) -> PiecewiseTrace:
    """The step, with a second stream big enough that one replica's batch fills and a
    queue forms: for the samples' H100 profile (max batch 512, 6.356 + 0.044 x batch ms
    per step) a full batch serves 512 / 28.9 ms = 17.7k tokens/s, 34.6 req/s of 512
    output tokens, less than 40. The tutorial's 16 req/s never queues, so a policy
    that scales on the queue does not move on the plain step."""
    return step_trace(duration_s, low_rps, high_rps, name="step-saturating")


def ramp_trace(duration_s: float, start_rps: float = 4.0, end_rps: float = 32.0) -> RampTrace:
    return RampTrace("ramp", duration_s, start_rps, end_rps)


def diurnal_trace(
    duration_s: float, low_rps: float = 4.0, high_rps: float = 24.0, period_s: float | None = None
) -> DiurnalTrace:
    """One day compressed into the run unless `period_s` says otherwise."""
    return DiurnalTrace("diurnal", duration_s, low_rps, high_rps, period_s or duration_s)


def bursty_trace(
    duration_s: float,
    seed: int,
    base_rps: float = 8.0,
    burst_rps: float = 40.0,
    mean_calm_s: float = 300.0,
    mean_burst_s: float = 60.0,
) -> PiecewiseTrace:
    """A two-state Markov-modulated Poisson process: calm at `base_rps`, bursts at
    `burst_rps`, exponential dwell times. The switching path is drawn from `seed` too,
    so the same seed gives the same bursts."""
    if not (mean_calm_s > 0 and mean_burst_s > 0):
        raise TraceError("bursty: mean dwell times must be > 0")
    rng = random.Random(f"bursty:{seed}")
    times, rates = [0.0], [base_rps]
    t, burst = rng.expovariate(1.0 / mean_calm_s), True
    while t < duration_s:
        times.append(t)
        rates.append(burst_rps if burst else base_rps)
        t += rng.expovariate(1.0 / (mean_burst_s if burst else mean_calm_s))
        burst = not burst
    return PiecewiseTrace("bursty", duration_s, tuple(times), tuple(rates))


def flash_trace(
    duration_s: float,
    seed: int,
    base_rps: float = 8.0,
    mean_gap_s: float = 900.0,
    step_s: float = 5.0,
) -> PiecewiseTrace:
    """Flash crowds: a calm `base_rps` load that, now and then, climbs to 2.5-4 times
    itself over 1-5 minutes, holds 5-10 minutes and falls back over as long. Unlike a
    step, the climb lasts about a start-up or more, so a policy that sees the trend can
    have replicas ready on time. The climbs are `step_s` stairs; gaps, heights and
    lengths are drawn from `seed` (each seed another trace of the family). The first
    crowd comes after 10 minutes of calm."""
    if not (mean_gap_s > 0 and step_s > 0):
        raise TraceError("flash: need mean_gap_s > 0 and step_s > 0")
    _check_rates("flash", base_rps)
    rng = random.Random(f"flash:{seed}")
    times, rates = [0.0], [base_rps]
    t = 600.0
    while t < duration_s:
        peak = base_rps * rng.uniform(2.5, 4.0)
        climb, hold = rng.uniform(60.0, 300.0), rng.uniform(300.0, 600.0)
        for start, low, high in ((t, base_rps, peak), (t + climb + hold, peak, base_rps)):
            stairs = max(1, round(climb / step_s))
            for i in range(1, stairs + 1):
                times.append(start + (i - 1) * climb / stairs)
                rates.append(low + (high - low) * i / stairs)
        t += 2 * climb + hold + rng.expovariate(1.0 / mean_gap_s) + 300.0
    kept = [(a, r) for a, r in zip(times, rates, strict=True) if a < duration_s]
    return PiecewiseTrace("flash", duration_s, tuple(a for a, _ in kept), tuple(r for _, r in kept))


def accelerating_trace(
    duration_s: float, start_rps: float = 4.0, end_rps: float = 32.0, step_s: float = 15.0
) -> PiecewiseTrace:
    """A ramp that speeds up: `start + (end - start) * (t / duration) ** 2`, in `step_s`
    stairs. Its slope at the end is twice the linear ramp's: a reactive policy falls
    further behind as it goes."""
    _check_rates("accelerating", start_rps, end_rps)
    if not step_s > 0:
        raise TraceError("accelerating: need step_s > 0")
    count = max(1, math.ceil(duration_s / step_s))
    times = tuple(i * step_s for i in range(count))
    rates = tuple(start_rps + (end_rps - start_rps) * (t / duration_s) ** 2 for t in times)
    return PiecewiseTrace("accelerating", duration_s, times, rates)


def noisy_trace(
    duration_s: float,
    seed: int,
    low_rps: float = 6.0,
    high_rps: float = 26.0,
    noise: float = 0.1,
    sample_s: float = 60.0,
) -> PiecewiseTrace:
    """Smooth load with noise, as a monitoring export gives it (the CSV family): a slow
    wave between `low_rps` and `high_rps` (one to two periods a run, starting low like
    the other shapes, where one replica serves), sampled every `sample_s` and each
    sample off by a normal `noise` fraction. The wave's length and the noise are drawn
    from `seed`: each seed is another trace of the family."""
    if not (sample_s > 0 and 0.0 <= noise < 1.0):
        raise TraceError("noisy: need sample_s > 0 and 0 <= noise < 1")
    _check_rates("noisy", low_rps, high_rps)
    rng = random.Random(f"noisy:{seed}")
    periods = rng.uniform(1.0, 2.0)
    times: list[float] = []
    rates: list[float] = []
    t = 0.0
    while t < duration_s:
        wave = (1.0 - math.cos(2.0 * math.pi * periods * t / duration_s)) / 2.0
        smooth = low_rps + (high_rps - low_rps) * wave
        times.append(t)
        rates.append(max(0.0, smooth * (1.0 + noise * rng.gauss(0.0, 1.0))))
        t += sample_s
    return PiecewiseTrace("noisy", duration_s, tuple(times), tuple(rates))


def csv_trace(text: str, source: str, duration_s: float | None = None) -> PiecewiseTrace:
    """A piecewise-constant trace from CSV lines `time_s,rate_rps` (an optional header line
    `time_s,rate_rps`, blank lines and `#` comments allowed). Each rate holds until the
    next line's time; the first time must be 0. Without `duration_s` the run ends at the
    last line's time, so give at least two lines. Errors name `source` and the line."""
    times: list[float] = []
    rates: list[float] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}"
        fields = [f.strip() for f in line.split(",")]
        if not times and [f.lower() for f in fields] == ["time_s", "rate_rps"]:
            continue
        if len(fields) != 2:
            raise TraceError(f"{where}: expected 'time_s,rate_rps', got {raw.strip()!r}")
        try:
            at, rate = float(fields[0]), float(fields[1])
        except ValueError:
            raise TraceError(f"{where}: not numbers: {raw.strip()!r}") from None
        if not (math.isfinite(at) and at >= 0):
            raise TraceError(f"{where}: time_s must be a finite number >= 0, got {fields[0]}")
        if not (math.isfinite(rate) and rate >= 0):
            raise TraceError(f"{where}: rate_rps must be a finite number >= 0, got {fields[1]}")
        if not times and at != 0.0:
            raise TraceError(f"{where}: the first time_s must be 0, got {fields[0]}")
        if times and at <= times[-1]:
            raise TraceError(f"{where}: time_s {fields[0]} does not increase (after {times[-1]:g})")
        times.append(at)
        rates.append(rate)
    if not times:
        raise TraceError(f"{source}: no 'time_s,rate_rps' lines")
    if duration_s is None:
        if len(times) < 2:
            raise TraceError(f"{source}: one line only: give a duration, or a last line")
        duration_s = times[-1]
    return PiecewiseTrace(source, duration_s, tuple(times), tuple(rates))


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class RequestShape:
    """Tokens per request: the tutorial's 128 in / 512 out, optionally spread uniformly
    by +-`spread` (a fraction) around the means."""

    prompt_tokens: int = 128
    output_tokens: int = 512
    spread: float = 0.0

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0 or self.output_tokens < 1:
            raise TraceError("need prompt_tokens >= 0 and output_tokens >= 1")
        if not 0.0 <= self.spread < 1.0:
            raise TraceError(f"token spread must be in [0, 1), got {self.spread}")


@dataclass(frozen=True, slots=True)
class Workload:
    """The requests of one run, by arrival time: the same for every policy compared."""

    arrivals: tuple[float, ...]
    prompt_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.arrivals)


def poisson_arrivals(trace: Trace, seed: int, duration_s: float | None = None) -> list[float]:
    """Arrival times of a Poisson process with the trace's rate (thinning, Lewis-Shedler):
    candidates at the peak rate, each kept with probability rate(t) / peak."""
    end = trace.duration_s if duration_s is None else duration_s
    peak = trace.peak
    if peak <= 0:
        return []
    rng = random.Random(f"arrivals:{seed}")
    out: list[float] = []
    t = 0.0
    rate = trace.rate
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return out
        if rng.random() * peak < rate(t):
            out.append(t)


def make_workload(
    trace: Trace, seed: int, shape: RequestShape | None = None, duration_s: float | None = None
) -> Workload:
    """Seeded arrivals and token counts (the token draws use their own stream, so a spread
    does not move the arrival times)."""
    shape = shape or RequestShape()
    arrivals = poisson_arrivals(trace, seed, duration_s)
    n = len(arrivals)
    if shape.spread == 0.0:
        prompts: Sequence[int] = [shape.prompt_tokens] * n
        outputs: Sequence[int] = [shape.output_tokens] * n
    else:
        rng = random.Random(f"tokens:{seed}")
        prompts = [_spread(rng, shape.prompt_tokens, shape.spread, 0) for _ in range(n)]
        outputs = [_spread(rng, shape.output_tokens, shape.spread, 1) for _ in range(n)]
    return Workload(tuple(arrivals), tuple(prompts), tuple(outputs))


def _spread(rng: random.Random, mean: int, spread: float, minimum: int) -> int:
    low, high = round(mean * (1.0 - spread)), round(mean * (1.0 + spread))
    return max(minimum, rng.randint(low, high))

"""`clairvoyant`: the GPU-hour floor that every policy is measured against.

It knows what no autoscaler can: the trace's rate at every moment, the GPUs' true
profile and the start-up delay. From those it runs, at every moment, the fewest
replicas that hold the target share of requests within both SLOs at that moment's
rate, each one created a start-up ahead so that it is ready exactly when it is needed.

How many replicas a rate needs is measured, not modelled: `capacity_table` finds, for
each replica count, the highest constant rate at which the simulator's own cluster
(pinned replicas, the same physics, gateway and request shape as the runs) still holds
the target, by bisection over steady-state runs. A policy that held the target with
fewer GPU-hours would have to run fewer replicas than that somewhere, for longer than
the sampling noise of a share.

One refinement makes it a floor rather than a guess: a replica that will be needed
again less than a start-up later is kept through the gap (releasing and re-creating it
would hold its GPU longer, for the new pod's start-up). Levels are handled one by one:
the k-th replica is held over the times the rate needs k or more, gaps shorter than
the start-up bridged, and created a start-up before each of its intervals.

`causal-floor` is the same schedule for a policy that sees only the past, but sees it
perfectly: it knows the true rate now and where a climb is going the moment the climb
begins, the true profile and the start-up. A replica is then created a start-up before
it is needed, but never before the climb that needs it began (`schedule(causal=True)`):
on a smooth ramp that is on time, as the clairvoyant; on a step, a start-up late. No
policy that reacts to load, rather than anticipating it, can start sooner; it can only
hold capacity in advance (`headroom`), for GPU hours. Its scale-downs are the
clairvoyant's (it knows when a need ends): a floor on cost, not a policy to run.

Pure: the steady-state runs are simulations in memory, cached per input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from adapter.emulator.batching import ServingProfile
from adapter.queueing.attainment import ReplicaModel, attainment
from adapter.sim.cluster import ClusterSettings, SimCluster
from adapter.sim.traces import PiecewiseTrace, RequestShape, Trace, make_workload

# resolution of the schedule over continuous traces (ramp, diurnal): the rate is read
# at the middle of every such slice
SCHEDULE_SLICE_S = 5.0


@dataclass(frozen=True, slots=True)
class SteadyState:
    """What a capacity is measured on: the true profile, the requests, the SLOs."""

    profile: ServingProfile
    shape: RequestShape
    slo_itl_ms: float
    slo_ttft_ms: float
    target: float = 0.99  # the share of requests within both SLOs
    duration_s: float = 1800.0
    warmup_s: float = 300.0
    seeds: tuple[int, ...] = (101, 102)  # not the runs' seeds: no overlap with them

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"target must be in (0, 1), got {self.target}")
        if not 0.0 <= self.warmup_s < self.duration_s:
            raise ValueError("need 0 <= warmup_s < duration_s")


def measured_share(state: SteadyState, replicas: int, total_rps: float) -> float:
    """The share of requests within both SLOs with `replicas` pinned at a constant rate,
    over the requests that arrive after the warm-up (averaged over the seeds)."""
    if total_rps <= 0:
        return 1.0
    shares = []
    for seed in state.seeds:
        trace = PiecewiseTrace("steady", state.duration_s, (0.0,), (total_rps,))
        workload = make_workload(trace, seed, state.shape)
        cluster = SimCluster(
            ClusterSettings(state.profile, startup_delay_s=0.0, initial_replicas=replicas),
            workload,
        )
        # long enough for the last judged request to finish unless the load is unstable
        cluster.run_until(state.duration_s + 120.0)
        judged = [r for r in cluster.finished if r.arrival >= state.warmup_s]
        arrived = sum(1 for t in workload.arrivals if t >= state.warmup_s)
        ok = sum(
            1
            for r in judged
            if r.itl_mean * 1000.0 <= state.slo_itl_ms and r.ttft * 1000.0 <= state.slo_ttft_ms
        )
        shares.append(ok / arrived if arrived else 1.0)  # unfinished ones are misses
    return sum(shares) / len(shares)


def _model_capacity(state: SteadyState, replicas: int) -> float:
    """The attainment model's highest total rate for the target: the bisection's start."""
    p = state.profile
    model = ReplicaModel(
        p.alpha_ms,
        p.beta_ms,
        p.max_batch_size,
        state.shape.output_tokens,
        state.shape.prompt_tokens,
        p.prefill_ms_per_token,
    )
    low, high = 0.0, 1.0 / (state.shape.output_tokens * p.beta_ms / 1000.0) if p.beta_ms else 1e4
    for _ in range(40):
        middle = (low + high) / 2.0
        share = attainment(model, middle, replicas, state.slo_itl_ms, state.slo_ttft_ms).both
        low, high = (middle, high) if share >= state.target else (low, middle)
    return low * replicas


@lru_cache(maxsize=256)
def capacity(state: SteadyState, replicas: int, tolerance: float = 0.015) -> float:
    """The highest constant total rate (req/s) at which `replicas` hold the target in the
    simulator, to `tolerance` (relative), by bisection bracketed around the model's."""
    guess = max(_model_capacity(state, replicas), 0.05 * replicas)
    low, high = 0.85 * guess, 1.15 * guess
    while measured_share(state, replicas, low) < state.target:
        low, high = low * 0.8, low
        if low < 1e-3:
            return 0.0
    while measured_share(state, replicas, high) >= state.target:
        low, high = high, high * 1.2
    while high - low > tolerance * low:
        middle = (low + high) / 2.0
        if measured_share(state, replicas, middle) >= state.target:
            low = middle
        else:
            high = middle
    return low


class CapacityTable:
    """`capacity` per replica count, measured only for the counts a trace reaches, made
    non-decreasing (more replicas never carry less: a measured dip is sampling noise)."""

    def __init__(
        self, state: SteadyState, max_replicas: int, known: tuple[float, ...] = ()
    ) -> None:
        """`known`: capacities already measured for 1, 2, ... replicas (a saved table)."""
        if max_replicas < 1:
            raise ValueError("max_replicas must be >= 1")
        self.state = state
        self.max_replicas = max_replicas
        self._tops: list[float] = []
        for value in known[:max_replicas]:
            self._tops.append(max(value, self._tops[-1]) if self._tops else value)

    def top(self, replicas: int) -> float:
        """The highest total rate `replicas` carry within the target."""
        while len(self._tops) < replicas:
            value = capacity(self.state, len(self._tops) + 1)
            self._tops.append(max(value, self._tops[-1]) if self._tops else value)
        return self._tops[replicas - 1]

    @property
    def measured(self) -> tuple[float, ...]:
        return tuple(self._tops)

    def replicas_needed(self, rate_rps: float, minimum: int) -> int:
        """The fewest replicas (at least `minimum`) whose capacity covers the rate; the
        most there may be if none does."""
        if rate_rps <= 0:
            return minimum
        for count in range(max(1, minimum), self.max_replicas + 1):
            if self.top(count) >= rate_rps:
                return count
        return self.max_replicas


def schedule(
    trace: Trace,
    table: CapacityTable,
    startup_s: float,
    minimum: int,
    end_s: float | None = None,
    *,
    causal: bool = False,
    headroom: float = 0.0,
) -> tuple[tuple[float, int], ...]:
    """spec.replicas over time: (time, replicas) at every change, the first at 0.

    `causal`: no replica starts before the climb that needs it began (module
    docstring). `headroom`: sized for the rate x (1 + headroom)."""
    if not (math.isfinite(headroom) and headroom >= 0):
        raise ValueError(f"headroom must be >= 0, got {headroom}")
    end = trace.duration_s if end_s is None else end_s
    times = _slices(trace, end)
    stops = [*times[1:], end]
    needs = [
        table.replicas_needed(_peak(trace, a, b) * (1.0 + headroom), minimum)
        for a, b in zip(times, stops, strict=True)
    ]
    onsets = _onsets(trace, times) if causal else [0.0] * len(times)
    top = max(needs, default=minimum)
    # per level k: the intervals needing >= k replicas, gaps under a start-up bridged,
    # each started a start-up early (from t = 0 at the latest: the run starts there)
    held: list[list[tuple[float, float]]] = []
    for level in range(minimum + 1, top + 1):
        spans: list[tuple[float, float]] = []
        for start, stop, need, onset in zip(times, stops, needs, onsets, strict=True):
            if need < level:
                continue
            if spans and start - spans[-1][1] < startup_s:
                spans[-1] = (spans[-1][0], stop)
            else:
                spans.append((max(0.0, start - startup_s, onset), stop))
        held.append(spans)
    points = sorted({0.0, *(t for spans in held for span in spans for t in span)})
    out: list[tuple[float, int]] = []
    for t in points:
        if t >= end:
            continue
        count = minimum + sum(1 for spans in held if any(a <= t < b for a, b in spans))
        if not out or out[-1][1] != count:
            out.append((t, count))
    return tuple(out)


def _onsets(trace: Trace, times: list[float]) -> list[float]:
    """For each slice, when the climb it belongs to began: the start of the first slice
    of the run of rising slices that ends at it (its own start when it does not rise)."""
    rates = [trace.rate(t) for t in times]
    onsets: list[float] = []
    for i, start in enumerate(times):
        rising = i > 0 and rates[i] > rates[i - 1]
        continued = rising and i > 1 and rates[i - 1] > rates[i - 2]
        onsets.append(onsets[-1] if continued else start)
    return onsets


def _slices(trace: Trace, end: float) -> list[float]:
    """Where the rate may change: a piecewise trace's breakpoints, else a fine grid."""
    if isinstance(trace, PiecewiseTrace):
        return [t for t in trace.times if t < end]
    return [i * SCHEDULE_SLICE_S for i in range(math.ceil(end / SCHEDULE_SLICE_S))]


def _peak(trace: Trace, start: float, stop: float) -> float:
    """The rate a slice must be sized for: the higher of its ends (a slice is short, and
    the traces are monotone over it)."""
    return max(trace.rate(start), trace.rate(max(start, stop - 1e-9)))


class ClairvoyantPolicy:
    """Sets spec.replicas by the precomputed schedule (no metrics, no controller)."""

    name = "clairvoyant"
    cycle_s = SCHEDULE_SLICE_S
    first_cycle_s = 0.0

    def __init__(self, cluster: SimCluster, plan: tuple[tuple[float, int], ...]) -> None:
        self._cluster = cluster
        self._plan = plan
        self._next = 0

    def next_time(self) -> float:
        return self._plan[self._next][0] if self._next < len(self._plan) else math.inf

    def act(self, now: float) -> None:
        while self._next < len(self._plan) and self._plan[self._next][0] <= now:
            self._cluster.scale(self._plan[self._next][1])
            self._next += 1

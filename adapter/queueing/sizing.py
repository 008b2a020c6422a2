"""Per-replica capacity: the highest arrival rate at which one replica meets its SLOs.

The SLOs become limits on the queue (reference semantics):
- ITL: mean time in service S <= K * ITL (mean ITL over a request's K tokens);
- TTFT (`slo-ttw`): mean queueing wait W <= TTW / -ln(0.05), i.e. the wait's P95
  under an exponential assumption; prefill is not counted;
- TPS: 90 % of the batch-saturation rate (the stability safety fraction).
Each limit is found by the reference's float32 bisection on [mu_1 / 1000,
0.999 * mu_N]. A profile is infeasible when even the lowest rate misses a limit.

The capacity depends only on the profile (alpha, beta, N, K and the SLO), never on
the load, so callers cache it (`CapacityCache`).

`size_batch` runs all bisections in lockstep over numpy rows. Both bisections of a
row start from the same bracket and so probe the same midpoints until their
decisions differ; from then on the one whose bracket lies above the other's cannot
be the minimum and is dropped. The answer is identical to running both to the end.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from adapter.queueing.bisection import HALF, MAX_ITERATIONS, binary_search, within_tolerance_array
from adapter.queueing.statedependent import (
    EXPANSION_RADIUS,
    BatchModel,
    Expansion,
    service_rates,
    solve_sequential,
)

F32 = np.float32
DELTA = F32(0.001)
ONE_MINUS_DELTA = F32(0.999)
# P95 of an exponential wait is -ln(0.05) times its mean
SLO_MARGIN = F32(-math.log(0.05))
# with a TPS target the replica runs at 90 % of saturation
STABLE_FRACTION = F32(0.9)

Limit = Literal["itl", "ttw", "tps", "batch"]


class Profile(NamedTuple):
    """What a replica's capacity depends on. Floats hold float32 values exactly.

    A NamedTuple: it is a cache key, hashed thousands of times per cycle.
    """

    alpha: float  # ms
    beta: float  # ms per request in the batch
    batch: int  # N, max batch size
    tokens: int  # K, output tokens per request
    slo_itl: float  # ms per token, 0 = none
    slo_ttw: float  # ms, 0 = none
    slo_tps: float  # tokens/s, 0 = none

    @classmethod
    def of(
        cls,
        alpha: float,
        beta: float,
        batch: int,
        tokens: int,
        slo_itl: float = 0.0,
        slo_ttw: float = 0.0,
        slo_tps: float = 0.0,
    ) -> Profile:
        """Round the real-valued inputs to float32, as the reference stores them."""
        a, b, i, w, t = np.array(
            [alpha, beta, slo_itl, slo_ttw, slo_tps], dtype=np.float32
        ).tolist()
        return cls(a, b, int(batch), int(tokens), i, w, t)


@dataclass(frozen=True, slots=True)
class Capacity:
    """Max arrival rate per replica (req/ms), or why there is none."""

    feasible: bool
    rate: np.float32
    limit: Limit | None
    reason: str = ""

    @property
    def max_rpm(self) -> np.float32:
        return self.rate * F32(1000) * F32(60)


def _bounds(rate_first: np.float32, rate_last: np.float32) -> tuple[np.float32, np.float32]:
    return rate_first * DELTA, rate_last * ONE_MINUS_DELTA


def _service_target(profile: Profile) -> np.float32:
    return F32(profile.tokens) * F32(profile.slo_itl)


def _wait_target(profile: Profile) -> np.float32:
    return F32(profile.slo_ttw) / SLO_MARGIN


def _choose(profile: Profile, itl: np.float32, ttw: np.float32, lam_max: np.float32) -> Capacity:
    tps = lam_max * STABLE_FRACTION if profile.slo_tps > 0 else lam_max
    best = F32(min(float(itl), float(ttw), float(tps)))
    limit: Limit
    if best == itl and profile.slo_itl > 0:
        limit = "itl"
    elif best == ttw and profile.slo_ttw > 0:
        limit = "ttw"
    elif profile.slo_tps > 0:
        limit = "tps"
    else:
        limit = "batch"
    return Capacity(True, best, limit)


def _unattainable(
    profile: Profile, which: Literal["itl", "ttw"], serv_low: np.float32, serv_high: np.float32
) -> Capacity:
    """Why no rate meets a limit, in the operator's terms."""
    if which == "itl":
        tokens = F32(profile.tokens)
        itl_low = float(serv_low / tokens)
        if serv_low >= serv_high:
            reason = (
                f"ITL SLO {profile.slo_itl:g} ms cannot be sized: the predicted ITL "
                f"({itl_low:.6g} ms) does not grow with load at max batch {profile.batch}, so "
                "the reference's search finds no crossing"
            )
        else:
            reason = (
                f"ITL SLO {profile.slo_itl:g} ms unattainable: even at minimal load the "
                f"predicted ITL is {itl_low:.6g} ms"
            )
    else:
        reason = f"TTFT SLO {profile.slo_ttw:g} ms unattainable even at minimal load"
    return Capacity(False, F32(0), None, reason)


def slo_batch(alpha: float, beta: float, slo_itl: float, largest: int) -> int | None:
    """The largest batch whose decode step (alpha + beta x batch, ms) is within the ITL
    SLO, at most `largest`; None when not even one request is."""
    if beta <= 0:
        return largest if alpha <= slo_itl else None
    batch = math.floor((slo_itl - alpha) / beta)
    return min(batch, largest) if batch >= 1 else None


def size_exact(profile: Profile) -> Capacity:
    """Size one profile exactly as the reference does (sequential engine). Slow: for tests."""
    rates = service_rates(profile.alpha, profile.beta, profile.batch, profile.tokens)
    lam_min, lam_max = _bounds(rates[0], rates[-1])

    def serv(x: np.float32) -> np.float32:
        return solve_sequential(rates, float(x)).serv_time

    def wait(x: np.float32) -> np.float32:
        return solve_sequential(rates, float(x)).wait_time

    lam_itl = lam_max
    if profile.slo_itl > 0:
        lam_itl, indicator = binary_search(lam_min, lam_max, _service_target(profile), serv)
        if indicator < 0:
            return _unattainable(profile, "itl", serv(lam_min), serv(lam_max))
    lam_ttw = lam_max
    if profile.slo_ttw > 0:
        lam_ttw, indicator = binary_search(lam_min, lam_max, _wait_target(profile), wait)
        if indicator < 0:
            return _unattainable(profile, "ttw", F32(0), F32(0))
    return _choose(profile, lam_itl, lam_ttw, lam_max)


BoolArray = npt.NDArray[np.bool_]
F32Array = npt.NDArray[np.float32]


@dataclass
class _Search:
    """Lockstep state of one bisection family (ITL or TTW) over all rows."""

    target: F32Array
    low: F32Array
    high: F32Array
    increasing: BoolArray
    active: BoolArray
    result: F32Array
    infeasible: BoolArray

    @classmethod
    def start(
        cls,
        enabled: BoolArray,
        target: F32Array,
        low: F32Array,
        high: F32Array,
        y_low: F32Array,
        y_high: F32Array,
    ) -> _Search:
        result = high.copy()  # disabled limit: the batch-saturation rate
        active = enabled.copy()
        hit_low = active & within_tolerance_array(y_low, target)
        result[hit_low] = low[hit_low]
        active &= ~hit_low
        hit_high = active & within_tolerance_array(y_high, target)
        active &= ~hit_high  # result already high
        increasing = y_low < y_high
        below = np.where(increasing, target < y_low, target > y_low)
        infeasible = active & below
        active &= ~below
        above = np.where(increasing, target > y_high, target < y_high)
        active &= ~above  # result already high
        return cls(target, low.copy(), high.copy(), increasing, active, result, infeasible)

    def step(self, rows: npt.NDArray[np.intp], x: F32Array, y: F32Array) -> None:
        """Advance the active rows `rows` after evaluating y at midpoints x."""
        target = self.target[rows]
        done = within_tolerance_array(y, target)
        go_down = np.where(self.increasing[rows], target < y, target > y)
        low = self.low[rows]
        high = self.high[rows]
        new_low = np.where(go_down, low, x)
        new_high = np.where(go_down, x, high)
        done |= (new_low == low) & (new_high == high)  # fixed point reached
        self.low[rows] = new_low
        self.high[rows] = new_high
        finished = rows[done]
        self.result[finished] = x[done]
        self.active[finished] = False


# Rows per lockstep batch. Rows are sorted by max batch first, so each chunk's
# matrices are barely wider than its rows need.
CHUNK_ROWS = 1024
# At mu_1 / 1000 every state is at least 1000x less likely than the one before, so
# states beyond this contribute nothing representable in float64.
LOW_RATE_STATES = 64


def size_batch(profiles: Sequence[Profile]) -> list[Capacity]:
    """Size many profiles at once; identical results to `size_exact`, far faster."""
    order = sorted(range(len(profiles)), key=lambda i: profiles[i].batch)
    out: list[Capacity | None] = [None] * len(profiles)
    for start in range(0, len(order), CHUNK_ROWS):
        chunk = order[start : start + CHUNK_ROWS]
        for index, capacity in zip(chunk, _size_chunk([profiles[i] for i in chunk]), strict=True):
            out[index] = capacity
    return [c for c in out if c is not None]


def _size_chunk(profiles: Sequence[Profile]) -> list[Capacity]:
    if not profiles:
        return []
    alpha = np.array([p.alpha for p in profiles], dtype=np.float32)
    beta = np.array([p.beta for p in profiles], dtype=np.float32)
    batch = np.array([p.batch for p in profiles], dtype=np.int64)
    tokens = np.array([p.tokens for p in profiles], dtype=np.float32)
    slo_itl = np.array([p.slo_itl for p in profiles], dtype=np.float32)
    slo_ttw = np.array([p.slo_ttw for p in profiles], dtype=np.float32)
    model = BatchModel(alpha, beta, batch, tokens)
    lam_min = model.rates_first * DELTA
    lam_max = model.mu_last * ONE_MINUS_DELTA

    every = np.arange(len(profiles))
    serv_low, wait_low, _ = model.solve(every, lam_min, width=LOW_RATE_STATES)
    serv_high, wait_high, _ = model.solve(every, lam_max)
    itl = _Search.start(slo_itl > 0, tokens * slo_itl, lam_min, lam_max, serv_low, serv_high)
    ttw = _Search.start(slo_ttw > 0, slo_ttw / SLO_MARGIN, lam_min, lam_max, wait_low, wait_high)
    # a row already infeasible needs no search
    dead = itl.infeasible | ttw.infeasible
    itl.active &= ~dead
    ttw.active &= ~dead

    expansions = _Expansions(model)
    for _ in range(MAX_ITERATIONS):
        _drop_non_binding(itl, ttw)
        _drop_non_binding(ttw, itl)
        live = itl.active | ttw.active
        if not live.any():
            break
        rows = np.nonzero(live)[0]
        use_itl = itl.active[rows]
        low = np.where(use_itl, itl.low[rows], ttw.low[rows])
        high = np.where(use_itl, itl.high[rows], ttw.high[rows])
        expansions.add_narrow(rows, low, high)
        x = HALF * (low + high)
        serv, wait = expansions.solve(rows, x)
        on_itl = itl.active[rows]
        on_ttw = ttw.active[rows]
        itl.step(rows[on_itl], x[on_itl], serv[on_itl])
        ttw.step(rows[on_ttw], x[on_ttw], wait[on_ttw])
    # rows still active after MAX_ITERATIONS keep their last midpoint (reference behaviour)
    for search in (itl, ttw):
        left = np.nonzero(search.active)[0]
        if len(left):
            search.result[left] = HALF * (search.low[left] + search.high[left])

    out: list[Capacity] = []
    for i, profile in enumerate(profiles):
        if itl.infeasible[i]:
            out.append(_unattainable(profile, "itl", serv_low[i], serv_high[i]))
        elif ttw.infeasible[i]:
            out.append(_unattainable(profile, "ttw", F32(0), F32(0)))
        else:
            out.append(_choose(profile, itl.result[i], ttw.result[i], lam_max[i]))
    return out


class _Expansions:
    """Per-row Taylor expansions, taken once a row's bracket is narrow enough.

    Every later midpoint of a bisection lies inside its current bracket, so an
    expansion at the bracket's low end stays valid for the rest of that row's search.
    """

    def __init__(self, model: BatchModel) -> None:
        self.model = model
        self.owner = np.full(len(model), -1, dtype=np.int64)  # expansion id per row
        self.position = np.zeros(len(model), dtype=np.int64)
        self.items: list[Expansion] = []

    def add_narrow(self, rows: npt.NDArray[np.intp], low: F32Array, high: F32Array) -> None:
        batch = self.model.batch[rows].astype(np.float64)
        low64 = low.astype(np.float64)
        narrow = (self.owner[rows] < 0) & (
            (high.astype(np.float64) - low64) * batch <= EXPANSION_RADIUS * low64
        )
        if not narrow.any():
            return
        chosen = rows[narrow]
        self.owner[chosen] = len(self.items)
        self.position[chosen] = np.arange(len(chosen))
        self.items.append(self.model.expand(chosen, low[narrow]))

    def solve(self, rows: npt.NDArray[np.intp], x: F32Array) -> tuple[F32Array, F32Array]:
        serv = np.empty(len(rows), dtype=np.float32)
        wait = np.empty(len(rows), dtype=np.float32)
        owner = self.owner[rows]
        direct = owner < 0
        if direct.any():
            serv[direct], wait[direct], _ = self.model.solve(rows[direct], x[direct])
        for ident in np.unique(owner[~direct]).tolist():
            mine = owner == ident
            serv[mine], wait[mine], _ = self.model.solve_expanded(
                self.items[ident], self.position[rows[mine]], x[mine]
            )
        return serv, wait


def _drop_non_binding(this: _Search, other: _Search) -> None:
    """Stop searching rows whose result cannot be below the other limit's result.

    Any bisection's final answer lies inside every bracket it passed through, so once
    this bracket's low end reaches the other's high end (or its finished result), the
    other limit is the binding one (or ties with it).
    """
    rows = np.nonzero(this.active)[0]
    if not len(rows):
        return
    other_top = np.where(other.active[rows], other.high[rows], other.result[rows])
    beaten = this.low[rows] >= other_top
    if beaten.any():
        gone = rows[beaten]
        this.active[gone] = False
        this.result[gone] = np.float32(np.inf)


class CapacityCache:
    """LRU of capacities by profile: a steady-state cycle re-sizes nothing."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._entries: OrderedDict[Profile, Capacity] = OrderedDict()
        self._max = max_entries
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def capacities(self, profiles: Sequence[Profile]) -> list[Capacity]:
        entries = self._entries
        missing = [p for p in dict.fromkeys(profiles) if p not in entries]
        self.misses += len(missing)
        self.hits += len(profiles) - len(missing)
        for profile, capacity in zip(missing, size_batch(missing), strict=True):
            entries[profile] = capacity
        out = list(map(entries.__getitem__, profiles))
        if len(entries) > self._max:
            for profile in profiles:  # keep what this cycle used
                entries.move_to_end(profile)
            while len(entries) > self._max:
                entries.popitem(last=False)
        return out

"""One vLLM replica as a state-dependent M/M/1/K queue (a batching server).

State n is the number of requests in the replica. Up to N (the max batch) decode
together; one decode step takes alpha + beta * n ms and a request needs K steps, so
the service rate in state n is mu_n = n / (K * (alpha + beta * n)) requests/ms,
constant above N. Up to 9N more wait; an arrival finding 10N present is lost.

The reference does its rates and outputs in float32 and its probabilities in float64;
a decision that must match the reference bit for bit has to round the same way, so
every float32 step below is a separate numpy float32 operation.

Two engines compute the same stationary distribution:
- `solve_sequential`: the reference's own order (a float64 product recurrence with
  overflow rescaling), one state at a time. Slow; the oracle for tests.
- `BatchModel.solve`: many (profile, rate) rows at once. The head (n <= N) is done in
  log space from a per-profile prefix sum of log(mu); the tail (n > N) is geometric
  with ratio r = lambda / mu_N, so its sums have closed forms and the cost is O(N),
  not O(10N).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

F32 = np.float32
F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]

# Occupancy bound: the reference allows 9N waiting requests besides N in service.
OCCUPANCY_PER_BATCH = 10


def service_rates(alpha: float, beta: float, batch: int, tokens: int) -> F32Array:
    """mu_n for n = 1..N in requests/ms, computed as the reference does in float32."""
    n = np.arange(1, batch + 1, dtype=np.float32)
    step = F32(alpha) + F32(beta) * n  # ms per decode step at batch n
    return n / (step * F32(tokens))


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Steady-state figures of one replica at arrival rate `rate` (req/ms)."""

    rate: np.float32
    serv_time: np.float32  # mean time in service per request, ms (S)
    wait_time: np.float32  # mean queueing wait, ms (W)
    rho: np.float32  # probability the replica is busy, 1 - p0
    throughput: np.float32  # req/ms


def stats_from_sums(
    rate: np.float32, mean_in_system: float, mean_in_service: float, p0: float, p_full: float
) -> QueueStats:
    """The reference's float32 finish: X, T, S and W from float32-rounded sums."""
    avg_system = F32(mean_in_system)
    avg_service = F32(mean_in_service)
    throughput = rate * (F32(1) - F32(p_full))
    resp_time = avg_system / throughput
    serv_time = avg_service / throughput
    wait_time = resp_time - serv_time
    if wait_time < 0:
        wait_time = F32(0)
    return QueueStats(rate, serv_time, wait_time, F32(1) - F32(p0), throughput)


def solve_sequential(rates: F32Array, rate: float) -> QueueStats:
    """Solve one replica exactly in the reference's order of operations."""
    return stats_from_sums(*sequential_sums(rates, rate))


def sequential_sums(rates: F32Array, rate: float) -> tuple[np.float32, float, float, float, float]:
    """The reference's float64 sums before its float32 finish (`stats_from_sums`): the
    rate in float32, the mean in system, the mean in service, p0 and p(full)."""
    lam32, p = sequential_distribution(rates, rate)
    batch = len(rates)
    mean_in_system = 0.0
    mean_in_service = 0.0
    cumulative = p[0]
    for i in range(1, len(p)):
        mean_in_system += i * p[i]
        cumulative += p[i]
        if i == batch:
            mean_in_service = mean_in_system + (1 - cumulative) * batch
    return lam32, mean_in_system, mean_in_service, p[0], p[-1]


def sequential_distribution(rates: F32Array, rate: float) -> tuple[np.float32, list[float]]:
    """The rate in float32 and the stationary distribution p_0..p_10N, in float64 as the
    reference computes it (a product recurrence, rescaled on overflow)."""
    batch = len(rates)
    kmax = OCCUPANCY_PER_BATCH * batch
    lam32 = F32(rate)
    lam = float(lam32)
    mus = [float(m) for m in rates]
    scale = sys.float_info.max / kmax
    p = [0.0] * (kmax + 1)
    p[0] = 1.0
    for n in range(kmax):
        mu = mus[n] if n < batch else mus[batch - 1]
        value = p[n] * lam / mu
        while value < 0 or math.isinf(value) or math.isnan(value):
            for i in range(n + 1):
                p[i] /= scale
            value = p[n] * lam / mu
        p[n + 1] = value
    total = 0.0
    for n in range(kmax + 1):
        total += p[n]
        if total < 0 or math.isinf(total):
            total = 0.0
            for i in range(kmax + 1):
                p[i] /= scale
                if i <= n:
                    total += p[i]
    return lam32, [x / total for x in p]


class BatchModel:
    """Precomputed tables for many profiles, solved for many rates at once.

    Row i describes one profile (alpha, beta, N, K). Rows are padded to the longest
    batch; padding states get log-weight -inf so they contribute nothing.
    """

    __slots__ = ("batch", "cum_log_mu", "log_mu_last", "mu_last", "rates_first", "states")

    def __init__(
        self, alpha: F32Array, beta: F32Array, batch: npt.NDArray[np.int64], tokens: F32Array
    ):
        rows = len(batch)
        width = int(batch.max()) if rows else 1
        n = np.arange(1, width + 1, dtype=np.float32)
        step = alpha[:, None] + beta[:, None] * n[None, :]
        mu = n[None, :] / (step * tokens[:, None])  # float32, as the reference
        valid = n[None, :] <= batch[:, None].astype(np.float32)
        log_mu = np.log(mu.astype(np.float64))
        log_mu[~valid] = np.inf  # padding states: weight 0
        cum = np.empty((rows, width + 1), dtype=np.float64)
        cum[:, 0] = 0.0
        np.cumsum(log_mu, axis=1, out=cum[:, 1:])
        self.cum_log_mu = cum
        self.batch = batch
        index = np.arange(rows)
        self.mu_last: F32Array = np.asarray(mu[index, batch - 1], dtype=np.float32)
        self.rates_first: F32Array = np.asarray(mu[:, 0], dtype=np.float32)
        self.log_mu_last: F64Array = np.log(self.mu_last.astype(np.float64))
        self.states = np.arange(width + 1, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.batch)

    def _head_weights(
        self, rows: npt.NDArray[np.intp], log_lam: F64Array, width: int | None = None
    ) -> tuple[F64Array, F64Array]:
        """Head weights w_n / w_max for n = 0..width, and log w_max per row."""
        columns = (
            self.cum_log_mu.shape[1] if width is None else min(width + 1, self.cum_log_mu.shape[1])
        )
        if len(rows) == len(self.batch) and bool((rows == np.arange(len(rows))).all()):
            # all rows, in order: use the table itself, no gather copy
            cum = self.cum_log_mu[:, :columns]
        else:
            cum = self.cum_log_mu[rows, :columns]
        states = self.states[:columns]
        # n*log(lam) - sum_{j<=n} log(mu_j), then shifted by its maximum
        logw = np.multiply.outer(log_lam, states)
        logw -= cum
        top = logw.max(axis=1)
        logw -= top[:, None]
        return np.exp(logw, out=logw), top

    def solve(
        self, rows: npt.NDArray[np.intp], rate: F32Array, width: int | None = None
    ) -> tuple[F32Array, F32Array, F32Array]:
        """(S, W, rho) in float32 for rows `rows` at arrival rates `rate` (req/ms).

        `width` truncates the head to states 0..width; only for rates whose weights
        are negligible beyond it (e.g. mu_1 / 1000, where each state is 1000x less
        likely than the one before).
        """
        log_lam = np.log(rate.astype(np.float64))
        weights, top = self._head_weights(rows, log_lam, width)
        batch = self.batch[rows]
        # w_N / w_max straight from the prefix sums: valid whether or not N was truncated
        log_last = batch * log_lam - self.cum_log_mu[rows, batch] - top
        return self._finish(
            rows,
            rate,
            log_lam,
            head_mass=weights.sum(axis=1),
            head_moment=weights @ self.states[: weights.shape[1]],
            weight_last=np.exp(log_last),
            weight_zero=np.exp(-top),
        )

    def expand(self, rows: npt.NDArray[np.intp], base: F32Array) -> Expansion:
        """Taylor coefficients of the head sums in eps = rate/base - 1, for 0 <= eps <= 4/N.

        w_n(rate) = w_n(base) * (1 + eps)^n, so the head sums are polynomials in eps
        whose coefficients are binomial moments of the weights at `base`. Evaluating
        them afterwards costs O(terms) per row instead of O(N): the last twenty-odd
        bisection steps, all within a narrow bracket, become almost free.
        """
        log_base = np.log(base.astype(np.float64))
        weights, top = self._head_weights(rows, log_base)
        width = weights.shape[1]
        binomial = _binomials(width, EXPANSION_TERMS)
        states = self.states[:width]
        coefficients = weights @ np.hstack([binomial, binomial * states[:, None]])
        return Expansion(
            rows=rows,
            base=base.astype(np.float64),
            mass=coefficients[:, :EXPANSION_TERMS],
            moment=coefficients[:, EXPANSION_TERMS:],
            weight_last=weights[np.arange(len(rows)), self.batch[rows]],
            weight_zero=np.exp(-top),
        )

    def solve_expanded(
        self, expansion: Expansion, select: npt.NDArray[np.intp], rate: F32Array
    ) -> tuple[F32Array, F32Array, F32Array]:
        """Like `solve`, for expansion entries `select`, at rates within their radius."""
        rows = expansion.rows[select]
        lam = rate.astype(np.float64)
        base = expansion.base[select]
        eps = (lam - base) / base
        # powers eps^k, k = 0..terms-1; every term is >= 0 (eps >= 0), so no cancellation
        powers = np.empty((len(eps), EXPANSION_TERMS))
        powers[:, 0] = 1.0
        powers[:, 1:] = eps[:, None]
        np.cumprod(powers, axis=1, out=powers)
        head_mass = np.einsum("ij,ij->i", expansion.mass[select], powers)
        head_moment = np.einsum("ij,ij->i", expansion.moment[select], powers)
        growth = np.exp(self.batch[rows].astype(np.float64) * np.log1p(eps))  # (1+eps)^N
        return self._finish(
            rows,
            rate,
            np.log(lam),
            head_mass=head_mass,
            head_moment=head_moment,
            weight_last=expansion.weight_last[select] * growth,
            weight_zero=expansion.weight_zero[select],
        )

    def _finish(
        self,
        rows: npt.NDArray[np.intp],
        rate: F32Array,
        log_lam: F64Array,
        head_mass: F64Array,
        head_moment: F64Array,
        weight_last: F64Array,
        weight_zero: F64Array,
    ) -> tuple[F32Array, F32Array, F32Array]:
        """Add the geometric tail, normalise, and finish in float32 as the reference."""
        batch = self.batch[rows]
        # tail n = N+1 .. 10N: w_N * r^k with r = lam / mu_N
        tail_len = (OCCUPANCY_PER_BATCH - 1) * batch.astype(np.float64)
        log_r = log_lam - self.log_mu_last[rows]
        r = np.exp(log_r)
        one_minus_r = -np.expm1(log_r)
        near_one = np.abs(one_minus_r) < 1e-12
        # an overloaded replica (r > 1, a rate beyond what the optimizer's sizing probes,
        # e.g. at a VA's maxReplicas): r^M overflows float64 from r ~ 1.17 at N = 512, so
        # its sums are taken divided by r^M below; other rows exactly as the reference
        over = (log_r > 0) & ~near_one
        r_pow = np.exp(np.where(over, 0.0, tail_len * log_r))  # r^M
        safe = np.where(near_one, 1.0, one_minus_r)
        g1 = np.where(near_one, tail_len, r * (1 - r_pow) / safe)
        g2 = np.where(
            near_one,
            tail_len * (tail_len + 1) / 2,
            r * (1 - (tail_len + 1) * r_pow + tail_len * r_pow * r) / (safe * safe),
        )
        nb = batch.astype(np.float64)
        total = head_mass + weight_last * g1
        moment = head_moment + weight_last * (nb * g1 + g2)
        mean_in_system = moment / total
        mean_in_service = head_moment / total + (1 - head_mass / total) * nb
        p0 = weight_zero / total
        p_full = weight_last * r_pow / total
        if over.any():
            # the same sums over r^M: with s = r^-M (underflows to 0 harmlessly),
            # g1 / r^M = r (1 - s) / (r - 1), g2 / r^M = r (s - (M + 1) + M r) / (r - 1)^2
            s = np.exp(-np.where(over, tail_len * log_r, 0.0))
            above = np.where(over, -one_minus_r, 1.0)  # r - 1
            g1_s = r * (1 - s) / above
            g2_s = r * (s - (tail_len + 1) + tail_len * r) / (above * above)
            total_s = head_mass * s + weight_last * g1_s
            moment_s = head_moment * s + weight_last * (nb * g1_s + g2_s)
            mean_in_system = np.where(over, moment_s / total_s, mean_in_system)
            mean_in_service = np.where(
                over,
                head_moment * s / total_s + (1 - head_mass * s / total_s) * nb,
                mean_in_service,
            )
            p0 = np.where(over, weight_zero * s / total_s, p0)
            p_full = np.where(over, weight_last / total_s, p_full)
        lam32 = rate.astype(np.float32)
        throughput = lam32 * (F32(1) - p_full.astype(np.float32))
        resp = mean_in_system.astype(np.float32) / throughput
        serv = mean_in_service.astype(np.float32) / throughput
        wait: F32Array = np.maximum(resp - serv, F32(0)).astype(np.float32, copy=False)
        rho = (F32(1) - p0.astype(np.float32)).astype(np.float32, copy=False)
        return serv.astype(np.float32, copy=False), wait, rho


# Terms kept in the expansion; with N*eps <= EXPANSION_RADIUS the first term left out
# is below (4^36 / 36!) ~ 1e-20 of the sum.
EXPANSION_TERMS = 36
EXPANSION_RADIUS = 4.0


@dataclass(frozen=True, slots=True)
class Expansion:
    rows: npt.NDArray[np.intp]
    base: F64Array
    mass: F64Array
    moment: F64Array
    weight_last: F64Array
    weight_zero: F64Array


@lru_cache(maxsize=8)
def _binomials(width: int, terms: int) -> F64Array:
    """C(n, k) for n < width, k < terms."""
    table = np.zeros((width, terms))
    table[:, 0] = 1.0
    n = np.arange(width, dtype=np.float64)
    for k in range(1, terms):
        table[:, k] = table[:, k - 1] * (n - k + 1) / k
    table[table < 0] = 0.0
    return table

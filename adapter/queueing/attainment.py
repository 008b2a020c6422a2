"""The share of requests that meet the ITL and TTFT SLOs, for a variant at a given load.

The reference sizes a replica so that the *mean* ITL meets the SLO; users judge each
request. A request's mean ITL is `alpha + beta * Y`, where `Y` is the batch it shares
the GPU with, averaged over its decode steps. `Y` fluctuates from request to request:
the Poisson arrivals around its lifetime make the batch go up and down, and a bigger
batch slows every step, which lets more requests arrive during the same steps (a
self-exciting feedback: the batch is a linear Hawkes process in step time). At the
optimizer's own capacity (mean ITL = SLO) about half the requests miss.

The model, in step time (one decode step of the replica):

- arrivals per step: Poisson with mean `lam * d_k`, where `d_k = alpha + beta * B_k` is
  the step's duration and `B_k` the batch; every request stays `N` steps (its output
  tokens). Stationary mean batch `B = N lam alpha / (1 - rho)`, `rho = N lam beta`.
- one arrival raises the batch by the response `h_B`: a box of `N` steps plus the
  arrivals its own extra step time triggers, recursively: `H_B = BOX / (1 - lam beta BOX)`
  (in Fourier space; `rho < 1` keeps it finite).
- a request's window average `Y` is shot noise of the other arrivals, each weighted by
  its response averaged over the request's `N` steps (`h_Y`). Its cumulants are those of
  a Poisson sum: `kappa_r = (arrivals per step) * sum(h_Y ** r)`. On top come the request
  itself, the arrivals its own presence triggers, and the size bias of arriving in a
  long step (more likely, by the step's length).
- `n` replicas behind the gateway's least-outstanding rule hold the pool's batch evenly:
  the pool is one such process with `n` times the arrivals and each replica sees `1/n`
  of it (variance over `n`, third cumulant over `n ** 2`).
- `Y` is then a shifted gamma matched to its mean, variance and skew (Wilson-Hilferty).

TTFT: a request waits only when its replica's batch is full; then the pool is a
many-server queue (`replicas * max_batch` places, each held for a lifetime at the full
batch's step time), with Erlang C's chance to wait and the M/D/c correction of its tail.

Checked against the simulator's physics (`adapter.sim.cluster`, which this models) with
pinned replicas: tests/test_attainment.py and `bench/attainment.py`.

Pure: no I/O, no globals; numpy for the transforms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# a lifetime is resolved in at most this many bins (coarser for long outputs: the
# response is smooth, and the transform stays small)
_MAX_BINS = 256
# the transform spans this many lifetimes past the decay of the feedback's cascade
_SPAN_LIFETIMES = 8
# the branching ratio's grid: sums are computed at multiples of 1 / _RHO_GRID
_RHO_GRID = 1000
# The least-outstanding rule sends a request to the emptiest replica, which it then
# leaves up to one request above the pool's mean until later arrivals, sent elsewhere,
# even it out; fewer replicas even out more slowly. Fitted to the simulator at 2, 4 and
# 8 replicas (a request sees 0.22, 0.26 and 0.10 requests more than its own share and
# the pool's mean): `_JOIN_IMBALANCE * (1 - 1/n) / sqrt(n)`.
_JOIN_IMBALANCE = 0.6


@dataclass(frozen=True, slots=True)
class ReplicaModel:
    """One replica's serving physics and the requests' shape, as the sizing sees them."""

    alpha_ms: float  # decode step time at batch 0
    beta_ms: float  # added per request in the batch
    max_batch: int  # requests in the batch at most (vLLM's max_num_seqs)
    output_tokens: float  # mean tokens generated per request (decode steps)
    prompt_tokens: float = 0.0
    prefill_ms_per_token: float = 0.0

    def __post_init__(self) -> None:
        if not (self.alpha_ms > 0 and self.beta_ms >= 0):
            raise ValueError("need alpha_ms > 0 and beta_ms >= 0")
        if self.max_batch < 1 or not self.output_tokens >= 1:
            raise ValueError("need max_batch >= 1 and output_tokens >= 1")
        if not (self.prompt_tokens >= 0 and self.prefill_ms_per_token >= 0):
            raise ValueError("need prompt_tokens >= 0 and prefill_ms_per_token >= 0")


@dataclass(frozen=True, slots=True)
class BatchStatistics:
    """The batch a request sees, at one per-replica rate and replica count."""

    stable: bool  # False: the batch grows without bound (rho >= 1), every SLO is missed
    arrival_rate: float  # per replica, requests/s
    mean_batch: float  # stationary (per step) mean batch of a replica
    step_s: float  # mean decode step, seconds
    lifetime_s: float  # mean decode time of a request, seconds
    window_mean: float  # mean of Y: the batch averaged over a request's steps
    window_std: float
    window_skew: float


def batch_statistics(model: ReplicaModel, rate_rps: float, replicas: int) -> BatchStatistics:
    """Moments of the batch a request sees, at `rate_rps` per replica over `replicas`."""
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    if not (math.isfinite(rate_rps) and rate_rps >= 0):
        raise ValueError(f"rate must be finite and >= 0, got {rate_rps}")
    alpha, beta = model.alpha_ms / 1000.0, model.beta_ms / 1000.0
    steps = model.output_tokens
    rho = steps * rate_rps * beta
    if rho >= 1.0:
        return BatchStatistics(False, rate_rps, math.inf, math.inf, math.inf, math.inf, 0.0, 0.0)
    mean_batch = steps * rate_rps * alpha / (1.0 - rho)
    step_s = alpha + beta * mean_batch
    if rate_rps == 0:
        return BatchStatistics(True, 0.0, 0.0, alpha, steps * alpha, 1.0, 0.0, 0.0)
    bins, per_bin = _binning(steps)
    sums = _interpolated_sums(bins, rho)
    arrivals = rate_rps * step_s * per_bin * replicas  # per bin, over the pool
    var = arrivals * sums.window2 / replicas**2
    third = arrivals * sums.window3 / replicas**3
    # the request itself and what its own presence triggers, both spread over the pool
    # by the gateway; the size bias of arriving in a long step (the covariance of the
    # step's batch with Y); and the gateway's imbalance (below)
    own = (1.0 + sums.self_excited) / replicas
    bias = beta / step_s * arrivals * sums.cross / replicas**2
    imbalance = _JOIN_IMBALANCE * (1.0 - 1.0 / replicas) / math.sqrt(replicas)
    return BatchStatistics(
        stable=True,
        arrival_rate=rate_rps,
        mean_batch=mean_batch,
        step_s=step_s,
        lifetime_s=steps * step_s,
        window_mean=mean_batch + own + bias + imbalance,
        window_std=math.sqrt(var),
        window_skew=third / var**1.5 if var > 0 else 0.0,
    )


@dataclass(frozen=True, slots=True)
class Attainment:
    """Predicted shares (0..1) of requests within each SLO, and what they rest on."""

    itl: float
    ttft: float
    statistics: BatchStatistics

    @property
    def both(self) -> float:
        """The smaller share: what a target on both SLOs is held to."""
        return min(self.itl, self.ttft)


def attainment(
    model: ReplicaModel,
    rate_rps: float,
    replicas: int,
    slo_itl_ms: float,
    slo_ttft_ms: float,
) -> Attainment:
    """Predicted shares of requests within the SLOs (an SLO of 0 or less is not set)."""
    stats = batch_statistics(model, rate_rps, replicas)
    if not stats.stable:
        return Attainment(0.0, 0.0, stats)
    itl = 1.0
    if slo_itl_ms > 0:
        limit = (slo_itl_ms - model.alpha_ms) / model.beta_ms if model.beta_ms > 0 else math.inf
        if slo_itl_ms < model.alpha_ms:
            itl = 0.0
        elif limit < model.max_batch:
            itl = _shifted_gamma_cdf(limit, stats.window_mean, stats.window_std, stats.window_skew)
    ttft = _ttft_share(model, stats, replicas, slo_ttft_ms) if slo_ttft_ms > 0 else 1.0
    return Attainment(itl, ttft, stats)


def _ttft_share(
    model: ReplicaModel, stats: BatchStatistics, replicas: int, slo_ttft_ms: float
) -> float:
    """Requests whose queueing plus first step fit the TTFT SLO.

    A request queues only when its replica's batch is full. With the batch full, every
    request in it is served for `lifetime` at the full batch's step time: the pool is a
    many-server queue with `replicas * max_batch` servers (the gateway keeps the
    replicas even). Erlang C gives the chance to wait; the wait's tail is exponential,
    at half the M/M/c rate's time scale since a lifetime is nearly deterministic (the
    usual M/D/c correction). Checked against the simulator at small batches: within a
    point from 78 % to 96 %.
    """
    first_ms = stats.step_s * 1000.0 + model.prefill_ms_per_token * model.prompt_tokens
    budget_s = (slo_ttft_ms - first_ms) / 1000.0
    if budget_s < 0:
        return 0.0
    full_step_s = (model.alpha_ms + model.beta_ms * model.max_batch) / 1000.0
    service_s = model.output_tokens * full_step_s
    servers = replicas * model.max_batch
    offered = stats.arrival_rate * replicas * service_s
    if offered >= servers:
        return 0.0
    if offered + 10.0 * math.sqrt(offered) + 10.0 < servers:
        return 1.0  # the batch is never full: the chance to wait is below 1e-18
    waits = _erlang_c(servers, offered)
    return 1.0 - waits * math.exp(-2.0 * (servers - offered) * budget_s / service_s)


def _erlang_c(servers: int, offered: float) -> float:
    """The chance an arrival waits in an M/M/c queue (Erlang B by its stable recursion)."""
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered * blocking / (k + offered * blocking)
    load = offered / servers
    return blocking / (1.0 - load * (1.0 - blocking))


def replicas_for(
    model: ReplicaModel,
    total_rate_rps: float,
    slo_itl_ms: float,
    slo_ttft_ms: float,
    target: float,
    start: int,
    limit: int,
) -> tuple[int, Attainment] | None:
    """The fewest replicas from `start` up to `limit` whose predicted attainment of both
    SLOs reaches `target` (0..1), with that prediction; None if even `limit` falls short."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    for replicas in range(max(1, start), limit + 1):
        predicted = attainment(model, total_rate_rps / replicas, replicas, slo_itl_ms, slo_ttft_ms)
        if predicted.both >= target:
            return replicas, predicted
    return None


@dataclass(frozen=True, slots=True)
class _Sums:
    window2: float  # sum of h_Y ** 2
    window3: float  # sum of h_Y ** 3
    self_excited: float  # expected extra batch a request's own presence triggers in Y
    cross: float  # sum over lags of h_B(s) * h_Y(s): Cov(B at arrival, Y) per arrival rate

    def values(self) -> tuple[float, float, float, float]:
        return (self.window2, self.window3, self.self_excited, self.cross)


def _binning(steps: float) -> tuple[int, float]:
    """Bins per lifetime and steps per bin."""
    bins = max(1, min(_MAX_BINS, round(steps)))
    return bins, steps / bins


def _interpolated_sums(bins: int, rho: float) -> _Sums:
    """The sums at `rho`, linear between the two nearest points of a grid of `_RHO_GRID`
    steps: each grid point's transforms are computed once per process, so a cycle over
    thousands of variants at ever different loads costs lookups, not transforms. The
    sums are smooth in `rho` (the interpolation moves a share by < 0.01 points)."""
    position = rho * _RHO_GRID
    low = math.floor(position)
    weight = position - low
    a = _response_sums(bins, low / _RHO_GRID)
    if weight == 0.0:
        return a
    b = _response_sums(bins, (low + 1) / _RHO_GRID)
    return _Sums(*(x + weight * (y - x) for x, y in zip(a.values(), b.values(), strict=True)))


@lru_cache(maxsize=8192)
def _response_sums(bins: int, rho: float) -> _Sums:
    """The response sums for a lifetime of `bins` bins and branching ratio `rho`.

    They depend on the load only through `rho` (and scale with the arrivals), so the
    transforms are cached by it.
    """
    # the cascade decays like rho ** k per lifetime: span enough lifetimes to lose < 1e-9
    decay = 0 if rho <= 0 else math.ceil(math.log(1e-9) / math.log(rho))
    span = bins * (min(decay, 200) + _SPAN_LIFETIMES)
    size = 1 << (2 * span - 1).bit_length()
    box = np.zeros(size)
    box[:bins] = 1.0
    box_f = np.fft.rfft(box)
    gain = rho / bins  # arrivals triggered per bin per unit of batch, in units of rate
    h_b = np.fft.irfft(box_f / (1.0 - gain * box_f), size)
    # h_Y at index m: the mean of h_B over the request's window for an arrival m bins
    # before it (a correlation of h_B with the box; arrivals after it wrap to the end)
    h_y = np.maximum(np.fft.irfft(np.fft.rfft(h_b) * np.conj(box_f), size) / bins, 0.0)
    self_excited = float(np.sum(h_b[:bins]) / bins - 1.0)
    # an arrival m bins earlier moves the batch at the request's arrival by h_B(m) and
    # its Y by h_Y(m): their covariance per unit of arrivals
    cross = float(np.sum(h_b[:span] * h_y[:span]))
    return _Sums(
        window2=float(np.sum(h_y**2)),
        window3=float(np.sum(h_y**3)),
        self_excited=self_excited,
        cross=cross,
    )


def _shifted_gamma_cdf(x: float, mean: float, std: float, skew: float) -> float:
    """P(Y <= x) for a shifted gamma with these moments (a normal when the skew is ~0)."""
    if std <= 0:
        return 1.0 if x >= mean else 0.0
    if skew < 1e-3:
        return _normal_cdf((x - mean) / std)
    shape = 4.0 / skew**2
    scale = std * skew / 2.0
    shift = mean - shape * scale
    g = (x - shift) / scale
    if g <= 0:
        return 0.0
    # Wilson-Hilferty: (G / k) ** (1/3) is close to normal(1 - 1/(9k), 1/(9k))
    v = 1.0 / (9.0 * shape)
    return _normal_cdf(((g / shape) ** (1.0 / 3.0) - (1.0 - v)) / math.sqrt(v))


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))

"""Prometheus in virtual time: scrapes at an interval, a small TSDB, the PromQL functions
the peer recipes use.

What a recipe reads is not the cluster's state at the instant it decides: it is what a
Prometheus scraped, up to one scrape interval earlier, folded by a PromQL function over a
window of those samples. This module gives exactly that, on the simulator's clock:

- `Prometheus` scrapes its targets (functions returning {series: value}) every
  `interval_s` from `first_scrape_s` on; every series of one scrape carries the scrape's
  timestamp, and a series a scrape no longer returns gets a staleness marker (the pod went
  away), as Prometheus writes one;
- selectors as Prometheus evaluates them (promql/engine.go): an instant selector at t
  returns each series' newest sample in (t - 5 m, t] unless that is a staleness marker;
  a range selector [w] at t the samples in (t - w, t] (left-open, Prometheus >= 3.0),
  staleness markers left out;
- the functions, pure, on such sample lists: `extrapolated_rate` (rate, increase),
  `max_over_time`, `avg_over_time`, and `histogram_quantile` over classic buckets.

Sources (prometheus/prometheus at d15adb9ad7e5d9fbde3a9a8f30200593a5a14d86, 2026-08-21):
promql/functions.go `extrapolatedRate` (rate/increase: the counter-reset correction, the
extrapolation to the window's edges when the first or last sample is within 1.1 average
sample intervals of them, else by half an interval, never below the counter's zero
point), `funcAvgOverTime`, `funcMaxOverTime`; promql/quantile.go `BucketQuantile`
(sorted buckets, equal bounds coalesced, counts made monotonic, linear interpolation
inside the bucket holding rank q x N, from 0 in the first bucket, the highest finite
bound for a rank in +Inf, NaN without +Inf, with fewer than two buckets or no
observations); promql/engine.go: the default lookback delta of 5 minutes. The same
`bucketQuantile` rules are at 8035c04624fb04cea53609fdb837e85d3bf2b869 (older, without
the 1e-12 tolerance for float noise between buckets, which counts of whole observations
never have).

Pure apart from the state of the store; no I/O. Kept small: one float per sample, no
native histograms, no label matchers beyond selecting a metric name.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

LOOKBACK_DELTA_S: Final = 300.0  # Prometheus' default --query.lookback-delta
DEFAULT_SCRAPE_INTERVAL_S: Final = 15.0
# samples older than this are dropped: the longest window read (5 m) plus the lookback
DEFAULT_RETENTION_S: Final = 900.0

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Sample = tuple[float, float]  # (timestamp s, value)


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """A series: metric name and sorted labels."""

    name: str
    labels: Labels = ()

    @classmethod
    def of(cls, name: str, **labels: str) -> SeriesKey:
        return cls(name, tuple(sorted(labels.items())))

    def label(self, name: str) -> str | None:
        for key, value in self.labels:
            if key == name:
                return value
        return None


Target = Callable[[], Mapping[SeriesKey, float]]


# --------------------------------------------------------------------------- the functions


def extrapolated_rate(
    samples: Sequence[Sample],
    range_start: float,
    range_end: float,
    *,
    is_counter: bool = True,
    is_rate: bool = True,
) -> float | None:
    """Prometheus' `extrapolatedRate`: `rate()` (is_rate) or `increase()` of the samples
    a range selector returned for (range_start, range_end]; None (no result) with fewer
    than two samples.

    The increase from the first to the last sample (a drop in a counter is a reset: the
    value before it is added back), stretched to the window's edges: to an edge when the
    nearest sample is within 1.1 average sample intervals of it, else by half an average
    interval; for a counter, never back past the point where it would have been 0.
    """
    n = len(samples)
    if n < 2:
        return None
    (first_t, first_v), (last_t, last_v) = samples[0], samples[-1]
    result = last_v - first_v
    if is_counter:
        previous = first_v
        for _, value in samples[1:]:
            if value < previous:
                result += previous
            previous = value
    sampled = last_t - first_t
    average = sampled / (n - 1)
    threshold = average * 1.1
    to_start = first_t - range_start
    to_end = range_end - last_t
    if to_start >= threshold:
        to_start = average / 2
    if is_counter:
        to_zero = to_start
        if result > 0 and first_v >= 0:
            to_zero = sampled * (first_v / result)
        to_start = min(to_start, to_zero)
    if to_end >= threshold:
        to_end = average / 2
    factor = (sampled + to_start + to_end) / sampled if sampled != 0 else 1.0
    if is_rate:
        factor /= range_end - range_start
    return result * factor


def rate(samples: Sequence[Sample], t: float, window_s: float) -> float | None:
    """`rate(x[window])` at t, from the samples the selector returned."""
    return extrapolated_rate(samples, t - window_s, t, is_counter=True, is_rate=True)


def increase(samples: Sequence[Sample], t: float, window_s: float) -> float | None:
    """`increase(x[window])` at t."""
    return extrapolated_rate(samples, t - window_s, t, is_counter=True, is_rate=False)


def max_over_time(samples: Sequence[Sample]) -> float | None:
    """`max_over_time`: the largest value (NaN only if every value is NaN); None if empty."""
    if not samples:
        return None
    best = samples[0][1]
    for _, value in samples[1:]:
        if value > best or math.isnan(best):
            best = value
    return best


def avg_over_time(samples: Sequence[Sample]) -> float | None:
    """`avg_over_time`: the mean of the values; None if empty."""
    if not samples:
        return None
    return math.fsum(v for _, v in samples) / len(samples)


_SMALL_DELTA: Final = 1e-12  # quantile.go smallDeltaTolerance
_MIN_NORMAL: Final = 2.2250738585072014e-308  # the smallest positive normal float64


def _almost_equal(a: float, b: float, epsilon: float) -> bool:
    """util/almost.Equal: a and b differ by less than epsilon times their sum."""
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    total, diff = abs(a) + abs(b), abs(a - b)
    if a == 0 or b == 0 or total < _MIN_NORMAL:
        return diff < epsilon * _MIN_NORMAL
    return diff / total < epsilon


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """Prometheus' `BucketQuantile` over classic buckets: (upper bound, cumulative count)
    pairs, e.g. `sum by (le) (rate(x_bucket[1m]))`. NaN where Prometheus gives NaN.

    Sorted by bound, equal bounds merged, counts made monotonic (a dip is raised to the
    count below it); the rank q x N falls in the first bucket whose count reaches it, and
    the result is interpolated linearly inside it (from 0 in the lowest bucket unless its
    bound is <= 0, which is then returned); a rank in the +Inf bucket returns the highest
    finite bound. NaN: q NaN, no +Inf bucket, fewer than two buckets, no observations;
    q < 0 gives -Inf, q > 1 +Inf.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda b: b[0])
    if not ordered or not math.isinf(ordered[-1][0]) or ordered[-1][0] < 0:
        return math.nan
    merged: list[list[float]] = []
    for bound, count in ordered:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    previous = merged[0][1]
    for bucket in merged[1:]:
        current = bucket[1]
        if current == previous:
            continue
        if _almost_equal(previous, current, _SMALL_DELTA) or current < previous:
            bucket[1] = previous
            continue
        previous = current
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = len(merged) - 1
    for i in range(len(merged) - 1):  # sort.Search over all but the +Inf bucket
        if merged[i][1] >= rank:
            b = i
            break
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


# --------------------------------------------------------------------------- the store


class _Series:
    __slots__ = ("stale", "times", "values")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.values: list[float] = []
        self.stale: list[bool] = []


class Tsdb:
    """Samples by series, appended in time order; old ones dropped past `retention_s`."""

    def __init__(self, retention_s: float = DEFAULT_RETENTION_S) -> None:
        if not retention_s > 0:
            raise ValueError("retention_s must be > 0")
        self.retention_s = retention_s
        self._series: dict[SeriesKey, _Series] = {}
        self._by_name: dict[str, list[SeriesKey]] = {}

    def append(self, key: SeriesKey, t: float, value: float, *, stale: bool = False) -> None:
        """A sample (or, with `stale`, a staleness marker) at t, not before the last one."""
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
            self._by_name.setdefault(key.name, []).append(key)
        if series.times and t < series.times[-1]:
            raise ValueError(f"{key}: sample at {t} before the last one at {series.times[-1]}")
        series.times.append(t)
        series.values.append(value)
        series.stale.append(stale)

    def keys(self, name: str) -> list[SeriesKey]:
        """Every series of metric `name` the store holds."""
        return list(self._by_name.get(name, ()))

    def samples(self, key: SeriesKey, t: float, window_s: float) -> list[Sample]:
        """The range selector `key[window]` at t: samples in (t - window, t], no markers."""
        series = self._series.get(key)
        if series is None:
            return []
        lo = bisect_right(series.times, t - window_s)
        hi = bisect_right(series.times, t)
        return [(series.times[i], series.values[i]) for i in range(lo, hi) if not series.stale[i]]

    def latest(
        self, key: SeriesKey, t: float, lookback_s: float = LOOKBACK_DELTA_S
    ) -> float | None:
        """The instant selector at t: the newest sample in (t - lookback, t], None if there
        is none or it is a staleness marker."""
        series = self._series.get(key)
        if series is None:
            return None
        hi = bisect_right(series.times, t)
        if hi == 0 or series.times[hi - 1] <= t - lookback_s or series.stale[hi - 1]:
            return None
        return series.values[hi - 1]

    def trim(self, now: float) -> None:
        """Drop the samples older than the retention (series left empty are forgotten)."""
        horizon = now - self.retention_s
        for key in list(self._series):
            series = self._series[key]
            cut = bisect_left(series.times, horizon)
            if cut:
                del series.times[:cut], series.values[:cut], series.stale[:cut]
            if not series.times:
                del self._series[key]
                self._by_name[key.name].remove(key)


# --------------------------------------------------------------------------- the server


class Prometheus:
    """A Prometheus scraping `targets` every `interval_s` from `first_scrape_s`, and the
    queries the recipes run on what it stored.

    The caller (a policy in the simulation loop) calls `scrape(now)` when `next_scrape`
    comes, with the cluster standing at that instant, and queries at any later time.
    Recording rules append their results with `record`.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        *,
        interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
        first_scrape_s: float = 0.0,
        retention_s: float = DEFAULT_RETENTION_S,
        lookback_s: float = LOOKBACK_DELTA_S,
    ) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if not (math.isfinite(first_scrape_s) and first_scrape_s >= 0):
            raise ValueError(f"first_scrape_s must be >= 0, got {first_scrape_s}")
        self.targets = list(targets)
        self.interval_s = float(interval_s)
        self.first_scrape_s = float(first_scrape_s)
        self.lookback_s = lookback_s
        self.tsdb = Tsdb(retention_s)
        self.scrapes = 0
        self._present: set[SeriesKey] = set()

    @property
    def next_scrape(self) -> float:
        return self.first_scrape_s + self.scrapes * self.interval_s

    def scrape(self, now: float) -> None:
        """One scrape of every target at `now`; series gone since the last get a marker."""
        tsdb = self.tsdb
        present: set[SeriesKey] = set()
        for target in self.targets:
            for key, value in target().items():
                tsdb.append(key, now, float(value))
                present.add(key)
        for key in self._present - present:
            tsdb.append(key, now, math.nan, stale=True)
        self._present = present
        self.scrapes += 1
        if self.scrapes % 20 == 0:
            tsdb.trim(now)

    def record(self, key: SeriesKey, t: float, value: float) -> None:
        """A recording rule's result at its evaluation time."""
        self.tsdb.append(key, t, value)

    # queries: one metric name, every series of it (the recipes' selectors match one
    # pool / one model, which is everything this store holds)

    def instant(self, name: str, t: float) -> dict[SeriesKey, float]:
        """`name` at t: each series' newest sample within the lookback."""
        out: dict[SeriesKey, float] = {}
        for key in self.tsdb.keys(name):
            value = self.tsdb.latest(key, t, self.lookback_s)
            if value is not None:
                out[key] = value
        return out

    def range(self, name: str, t: float, window_s: float) -> dict[SeriesKey, list[Sample]]:
        """`name[window]` at t: the series with samples in the window."""
        out: dict[SeriesKey, list[Sample]] = {}
        for key in self.tsdb.keys(name):
            samples = self.tsdb.samples(key, t, window_s)
            if samples:
                out[key] = samples
        return out

    def rate(self, name: str, t: float, window_s: float) -> dict[SeriesKey, float]:
        """`rate(name[window])` at t (series with fewer than two samples drop out)."""
        out: dict[SeriesKey, float] = {}
        for key, samples in self.range(name, t, window_s).items():
            value = rate(samples, t, window_s)
            if value is not None:
                out[key] = value
        return out

    def over_time(
        self, name: str, t: float, window_s: float, fold: Callable[[Sequence[Sample]], float | None]
    ) -> dict[SeriesKey, float]:
        """`fold_over_time(name[window])` at t, per series (max_over_time, avg_over_time)."""
        out: dict[SeriesKey, float] = {}
        for key, samples in self.range(name, t, window_s).items():
            value = fold(samples)
            if value is not None:
                out[key] = value
        return out

    def quantile(self, q: float, bucket_name: str, t: float, window_s: float) -> float:
        """`histogram_quantile(q, sum by (le) (rate(bucket_name[window])))` at t; NaN when
        the inner expression is empty or has no observations."""
        by_le: dict[float, float] = {}
        for key, value in self.rate(bucket_name, t, window_s).items():
            le = key.label("le")
            if le is None:
                continue
            bound = float(le)
            by_le[bound] = by_le.get(bound, 0.0) + value
        if not by_le:
            return math.nan
        return histogram_quantile(q, by_le.items())


def histogram_series(
    name: str, le: Sequence[float], cumulative: Sequence[float], total: float, count: float
) -> dict[SeriesKey, float]:
    """A classic histogram as its scrape shows it: `name_bucket{le}` per bound (cumulative,
    +Inf last), `name_sum`, `name_count`."""
    out = {
        SeriesKey.of(name + "_bucket", le=format_le(bound)): float(n)
        for bound, n in zip(le, cumulative, strict=True)
    }
    out[SeriesKey.of(name + "_sum")] = float(total)
    out[SeriesKey.of(name + "_count")] = float(count)
    return out


def format_le(bound: float) -> str:
    """An `le` label value as client libraries write it (`+Inf`, `0.005`, `1.0`)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))

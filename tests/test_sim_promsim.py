"""Prometheus in virtual time (adapter.sim.promsim): the PromQL functions on hand-computed
samples, the selectors' windows, scrapes and staleness.

Every expected number is worked out in the comment next to it from Prometheus' rules
(promql/functions.go extrapolatedRate, promql/quantile.go BucketQuantile).
"""

from __future__ import annotations

import math

import pytest

from adapter.sim.promsim import (
    Prometheus,
    SeriesKey,
    Tsdb,
    avg_over_time,
    extrapolated_rate,
    format_le,
    histogram_quantile,
    histogram_series,
    increase,
    max_over_time,
    rate,
)

# --------------------------------------------------------------------------- rate, increase


def test_rate_of_a_counter_from_zero_is_not_extrapolated_below_zero() -> None:
    # window (0, 60] at t = 60; samples every 15 s from 15. To the start: 15 s, under the
    # threshold 1.1 x 15 = 16.5, but the counter was 0 at 15 s: its zero point is 0 s
    # before the first sample, so nothing is added on the left; to the end: 0.
    samples = [(15.0, 0.0), (30.0, 10.0), (45.0, 20.0), (60.0, 30.0)]
    assert increase(samples, 60.0, 60.0) == pytest.approx(30.0)
    assert rate(samples, 60.0, 60.0) == pytest.approx(0.5)  # 30 / 60 s


def test_rate_extrapolates_to_the_window_edges() -> None:
    # the same slope from 10: zero point 45 x 10 / 30 = 15 s back, not shorter than the
    # 15 s to the start: the whole 15 s is added, 30 x (45 + 15) / 45 = 40
    samples = [(15.0, 10.0), (30.0, 20.0), (45.0, 30.0), (60.0, 40.0)]
    assert increase(samples, 60.0, 60.0) == pytest.approx(40.0)
    assert rate(samples, 60.0, 60.0) == pytest.approx(40.0 / 60.0)


def test_rate_far_from_an_edge_extrapolates_half_an_interval() -> None:
    # window (0, 60]: samples at 40 and 55. To the start 40 s >= 16.5: half the average
    # interval, 7.5 s (the zero point, 15 x 5 / 3 = 25 s back, is further); to the end
    # 5 s < 16.5: all of it. 3 x (15 + 7.5 + 5) / 15 = 5.5
    samples = [(40.0, 5.0), (55.0, 8.0)]
    assert increase(samples, 60.0, 60.0) == pytest.approx(5.5)


def test_rate_handles_counter_resets_and_gauges() -> None:
    # 5 -> 8 -> reset -> 2 -> 4: 4 - 5 + 8 = 7 over 45 s, both edges at 0 s
    samples = [(0.0, 5.0), (15.0, 8.0), (30.0, 2.0), (45.0, 4.0)]
    assert extrapolated_rate(samples, 0.0, 45.0, is_counter=True, is_rate=False) == 7.0
    # a gauge (delta): no reset correction, no zero point: 4 - 5 = -1
    assert extrapolated_rate(samples, 0.0, 45.0, is_counter=False, is_rate=False) == -1.0


def test_rate_needs_two_samples() -> None:
    assert rate([(10.0, 3.0)], 60.0, 60.0) is None
    assert rate([], 60.0, 60.0) is None


# --------------------------------------------------------------------------- over time


def test_max_and_avg_over_time() -> None:
    samples = [(0.0, 1.0), (15.0, 4.0), (30.0, 2.5)]
    assert max_over_time(samples) == 4.0
    assert avg_over_time(samples) == pytest.approx(7.5 / 3)
    assert max_over_time([]) is None and avg_over_time([]) is None


# --------------------------------------------------------------------------- histogram_quantile


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (math.inf, 40.0)]
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.38)  # rank 36: 0.2 + 0.3 x 6/10
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20: 0.1 + 0.1 x 10/20
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.04)  # first bucket, from 0
    assert histogram_quantile(0.9, list(reversed(buckets))) == pytest.approx(0.38)  # sorted
    # a rank in +Inf: the highest finite bound
    assert histogram_quantile(0.9, [(0.1, 5.0), (math.inf, 10.0)]) == 0.1
    # a first bucket with a bound <= 0 is returned as is
    assert histogram_quantile(0.1, [(-1.0, 5.0), (1.0, 10.0), (math.inf, 10.0)]) == -1.0
    assert math.isnan(histogram_quantile(0.9, [(0.1, 0.0), (math.inf, 0.0)]))  # no traffic
    assert math.isnan(histogram_quantile(0.9, [(0.1, 5.0), (0.2, 10.0)]))  # no +Inf bucket
    assert math.isnan(histogram_quantile(0.9, [(math.inf, 10.0)]))  # one bucket
    assert math.isnan(histogram_quantile(math.nan, buckets))
    assert histogram_quantile(-0.1, buckets) == -math.inf
    assert histogram_quantile(1.1, buckets) == math.inf


def test_histogram_quantile_merges_equal_bounds_and_repairs_dips() -> None:
    # two series with le=0.2 (summed: 30), then a dip at 0.5 (25 < 30: raised to 30):
    # rank 0.5 x 40 = 20 falls in (0.1, 0.2]: 0.1 + 0.1 x (20 - 10) / (30 - 10) = 0.15
    buckets = [(0.1, 10.0), (0.2, 12.0), (0.2, 18.0), (0.5, 25.0), (math.inf, 40.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)
    # rank 0.8 x 40 = 32 is past the repaired 0.5 bucket (30): in +Inf -> 0.5
    assert histogram_quantile(0.8, buckets) == 0.5


# --------------------------------------------------------------------------- the store


def test_range_selector_is_left_open_and_skips_staleness_markers() -> None:
    tsdb = Tsdb()
    key = SeriesKey.of("x", pod="a")
    for t, v in ((0.0, 1.0), (15.0, 2.0), (30.0, 3.0)):
        tsdb.append(key, t, v)
    tsdb.append(key, 45.0, math.nan, stale=True)
    # (0, 45]: the sample at exactly 0 is out, the marker is not a sample
    assert tsdb.samples(key, 45.0, 45.0) == [(15.0, 2.0), (30.0, 3.0)]
    assert tsdb.samples(key, 44.0, 45.0) == [(0.0, 1.0), (15.0, 2.0), (30.0, 3.0)]
    assert tsdb.latest(key, 40.0) == 3.0  # the newest sample at or before 40
    assert tsdb.latest(key, 45.0) is None  # the series went stale
    with pytest.raises(ValueError, match="before the last one"):
        tsdb.append(key, 10.0, 4.0)


def test_instant_selector_looks_back_five_minutes() -> None:
    tsdb = Tsdb()
    key = SeriesKey.of("x")
    tsdb.append(key, 100.0, 7.0)
    assert tsdb.latest(key, 99.0) is None  # not yet
    assert tsdb.latest(key, 399.0) == 7.0
    assert tsdb.latest(key, 400.0) is None  # (100, 400]: 100 is out


def test_trim_forgets_old_samples() -> None:
    tsdb = Tsdb(retention_s=60.0)
    key = SeriesKey.of("x")
    for t in (0.0, 30.0, 90.0):
        tsdb.append(key, t, t)
    tsdb.trim(100.0)  # keeps t >= 40
    assert tsdb.samples(key, 100.0, 1000.0) == [(90.0, 90.0)]
    tsdb.trim(1000.0)
    assert tsdb.keys("x") == []


# --------------------------------------------------------------------------- the server


def test_scrapes_stamp_every_series_and_mark_the_vanished_stale() -> None:
    values: dict[SeriesKey, float] = {SeriesKey.of("up", pod="a"): 1.0}
    prometheus = Prometheus([lambda: dict(values)], interval_s=15.0, first_scrape_s=7.5)
    assert prometheus.next_scrape == 7.5
    prometheus.scrape(7.5)
    assert prometheus.next_scrape == 22.5
    values[SeriesKey.of("up", pod="a")] = 2.0
    # a query between scrapes sees the last scrape, not the value now
    assert prometheus.instant("up", 20.0) == {SeriesKey.of("up", pod="a"): 1.0}
    values.clear()
    values[SeriesKey.of("up", pod="b")] = 5.0
    prometheus.scrape(22.5)
    assert prometheus.instant("up", 30.0) == {SeriesKey.of("up", pod="b"): 5.0}  # a: stale
    # a range still holds a's samples up to the marker
    assert prometheus.range("up", 30.0, 60.0)[SeriesKey.of("up", pod="a")] == [(7.5, 1.0)]
    assert prometheus.over_time("up", 30.0, 60.0, max_over_time) == {
        SeriesKey.of("up", pod="a"): 1.0,
        SeriesKey.of("up", pod="b"): 5.0,
    }


def test_quantile_of_rated_buckets_carries_prometheus_extrapolation() -> None:
    # buckets le 0.1, 0.2, +Inf scraped at 0 (5, 10, 10) and at 15 (15, 40, 50); at
    # t = 15 over [1m]: increases 10, 30, 40; the first sample is 45 s from the window's
    # start (>= 16.5: half an interval, 7.5 s, unless the zero point is nearer:
    # 15 x 5/10 = 7.5, 15 x 10/30 = 5, 15 x 10/40 = 3.75), so they stretch differently:
    # 10 x 22.5/15 = 15, 30 x 20/15 = 40, 40 x 18.75/15 = 50. Rank 25 in (0.1, 0.2]:
    # 0.1 + 0.1 x (25 - 15) / (40 - 15) = 0.14 (the raw increases would give 0.15)
    snapshots = iter(
        [
            histogram_series("h", (0.1, 0.2, math.inf), (5, 10, 10), 1.0, 10),
            histogram_series("h", (0.1, 0.2, math.inf), (15, 40, 50), 6.0, 50),
        ]
    )
    prometheus = Prometheus([lambda: next(snapshots)])
    prometheus.scrape(0.0)
    prometheus.scrape(15.0)
    assert prometheus.quantile(0.5, "h_bucket", 15.0, 60.0) == pytest.approx(0.14)
    assert math.isnan(prometheus.quantile(0.5, "h_bucket", 100.0, 60.0))  # window empty
    assert math.isnan(prometheus.quantile(0.5, "other_bucket", 15.0, 60.0))


def test_histogram_series_is_what_a_scrape_shows() -> None:
    series = histogram_series("h", (0.5, math.inf), (3, 4), 2.5, 4)
    assert series == {
        SeriesKey.of("h_bucket", le="0.5"): 3.0,
        SeriesKey.of("h_bucket", le="+Inf"): 4.0,
        SeriesKey.of("h_sum"): 2.5,
        SeriesKey.of("h_count"): 4.0,
    }
    assert (format_le(1), format_le(0.005), format_le(math.inf)) == ("1.0", "0.005", "+Inf")
    assert SeriesKey.of("h", b="2", a="1").labels == (("a", "1"), ("b", "2"))
    assert SeriesKey.of("h", le="1.0").label("le") == "1.0"
    assert SeriesKey.of("h").label("le") is None

"""Forecasting the arrival rate (adapter.learn.forecast) on synthetic noisy loads.

Every 15 s the measured rate is a Poisson count of the true rate over the last 15 s,
divided by 15, as a scraped counter gives it. The forecast for 60 s ahead (a start-up)
is compared with the true rate then, and with the naive forecast: the last sample.
The first two minutes (warm-up) are not scored.

Measured on the linear ramp 4 -> 32 req/s over an hour (seeds 1-3): median relative
error 1.9-2.1 % (last sample 4.4-4.7 %), the largest 13-19 % (at 4 req/s, in the
first minutes), RMSE 0.49-0.53 req/s against 1.15-1.26; the upper bound (z 1.28)
covers the true rate in 97-100 % of cycles.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
import pytest

from adapter.learn.forecast import Forecast, ForecastSettings, RateForecaster

CYCLE = 15.0
HORIZON = 60.0
WARM_UP = 8  # cycles not scored
Rate = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]
Array = npt.NDArray[np.float64]


def ramp(t: Array) -> Array:
    return 4 + 28 * np.clip(t, 0, 3600) / 3600


def accelerating(t: Array) -> Array:
    return 4 + 28 * (np.clip(t, 0, 3600) / 3600) ** 2


def constant(t: Array) -> Array:
    return np.full_like(t, 20.0)


def measured(true: Rate, times: Array, seed: int) -> Array:
    """The rate a 15 s Poisson count gives: the true mean over the window, plus noise."""
    rng = np.random.default_rng(seed)
    window = times[:, None] - CYCLE + np.linspace(0, CYCLE, 31)[None, :]
    mean = true(window).mean(axis=1)
    counts: Array = rng.poisson(mean * CYCLE).astype(float)
    return counts / CYCLE


@dataclasses.dataclass
class Run:
    times: Array
    samples: Array
    rate: Array  # forecast HORIZON ahead, after each sample
    upper: Array
    trend: Array
    truth: Array  # the true rate HORIZON after each sample
    seasonal: npt.NDArray[np.bool_]

    def scored(self) -> Run:
        return Run(*(getattr(self, f.name)[WARM_UP:] for f in dataclasses.fields(self)))

    def rmse(self, forecast: Array) -> float:
        return float(np.sqrt(np.mean((forecast - self.truth) ** 2)))


def feed(
    true: Rate,
    until: float,
    seed: int,
    settings: ForecastSettings | None = None,
    horizon: float = HORIZON,
) -> Run:
    times = np.arange(CYCLE, until + CYCLE / 2, CYCLE)
    samples = measured(true, times, seed)
    forecaster = RateForecaster(settings)
    rows = []
    for at, sample in zip(times.tolist(), samples.tolist(), strict=True):
        assert forecaster.observe(at, sample)
        result = forecaster.forecast(horizon)
        assert result is not None
        rows.append((result.rate, result.upper, result.trend, result.seasonal_used))
    rate, upper, trend, seasonal = (np.array(column) for column in zip(*rows, strict=True))
    return Run(times, samples, rate, upper, trend, true(times + horizon), seasonal.astype(bool))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_noisy_ramp(seed: int) -> None:
    run = feed(ramp, 3600 - HORIZON, seed).scored()
    error = np.abs(run.rate - run.truth) / run.truth
    naive = np.abs(run.samples - run.truth) / run.truth
    # measured: median 1.9-2.1 %, max 13-19 %; the last sample: median 4.4-4.7 %
    assert np.median(error) < 0.03
    assert error.max() < 0.25
    assert np.median(error) < 0.6 * np.median(naive)
    # measured RMSE ratio 0.40-0.43: it lags less than the last sample and is less noisy
    assert run.rmse(run.rate) < 0.6 * run.rmse(run.samples)
    # once learned, the trend is the ramp's (28 / 3600 req/s per s) and the forecast
    # does not lag: mean error -0.10 to -0.21 req/s after 20 minutes (a damped state
    # would settle below the slope: -0.38 to -0.50)
    late = run.times > 1200
    assert np.median(run.trend[late]) == pytest.approx(28 / 3600, rel=0.25)
    assert abs(float(np.mean((run.rate - run.truth)[late]))) < 0.3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_upper_bound_covers_the_ramp(seed: int) -> None:
    run = feed(ramp, 3600 - HORIZON, seed).scored()
    # measured 97-100 % (z 1.28, the bound is for the measured rate, noisier than this)
    assert np.mean(run.upper >= run.truth) >= 0.9
    assert np.all(run.upper >= run.rate)


def test_the_bound_widens_with_the_horizon() -> None:
    forecaster = RateForecaster()
    times = np.arange(CYCLE, 900.0, CYCLE)
    for at, sample in zip(times.tolist(), measured(constant, times, 4).tolist(), strict=True):
        forecaster.observe(at, sample)
    spreads = [forecaster.forecast(h) for h in (0.0, 15.0, 60.0, 120.0, 300.0)]
    sds = [f.sd for f in spreads if f is not None]
    assert len(sds) == 5
    assert sds[0] == sds[1] > 0  # one step: the one-step error RMS
    assert sds[1] < sds[2] < sds[3] < sds[4]
    assert forecaster.upper_at(60.0, z=0.0) == forecaster.rate_at(60.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_accelerating_ramp(seed: int) -> None:
    run = feed(accelerating, 3600 - HORIZON, seed).scored()
    # measured RMSE 0.47-0.49 against 1.07-1.17 for the last sample
    assert run.rmse(run.rate) < 0.6 * run.rmse(run.samples)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_constant_load_does_not_drift(seed: int) -> None:
    run = feed(constant, 3600, seed).scored()
    error = np.abs(run.rate - 20.0) / 20.0
    # measured: max 7 %, |trend| * 60 s at most 0.33 req/s, mean -0.13 to +0.05
    assert error.max() < 0.12
    assert np.abs(run.trend).max() * HORIZON < 0.5
    assert abs(float(np.mean(run.rate)) - 20.0) < 0.3


@pytest.mark.parametrize(("before", "after"), [(10.0, 20.0), (20.0, 10.0)])
def test_a_step(before: float, after: float) -> None:
    """The step lands between the samples at 1800 and 1815 s."""

    def step(t: Array) -> Array:
        return np.where(t < 1800, before, after)

    settle, overshoot = [], []
    for seed in range(1, 11):
        run = feed(step, 2400, seed)
        first = int(np.searchsorted(run.times, 1815.0))
        off = np.abs(run.rate - after) > 0.1 * after
        # cycles from the first sample of the new level until 8 in a row within 10 %
        settle.append(
            next(k for k in range(first, len(off)) if not off[k : k + 8].any()) - first + 1
        )
        beyond = (run.rate[first : first + 20] - after) * math.copysign(1, after - before)
        overshoot.append(float(beyond.max()))
    # measured: 1-4 cycles; beyond the new level by at most 1.95 req/s (one sample's
    # noise: the shift rule takes the first sample as the level)
    assert max(settle) <= 5
    assert max(overshoot) < 0.25 * abs(after - before)


PERIOD = 3600.0
SEASONAL = ForecastSettings(period_s=PERIOD, season_bins=24)


def daily(t: Array) -> Array:
    return 20 + 15 * np.sin(2 * np.pi * t / PERIOD)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_season_is_used_when_it_helps(seed: int) -> None:
    run = feed(daily, 3 * PERIOD, seed, SEASONAL)
    plain = feed(daily, 3 * PERIOD, seed, dataclasses.replace(SEASONAL, seasonal=False))
    third = run.times >= 2 * PERIOD
    assert not run.seasonal[run.times < 2 * PERIOD].any()  # not before two periods
    assert run.seasonal[third].mean() > 0.95
    assert not plain.seasonal.any()
    # measured: RMSE 0.43-0.56 against 1.18-1.32 without the season; used from 7215 s
    with_season = float(np.sqrt(np.mean((run.rate - run.truth)[third] ** 2)))
    without = float(np.sqrt(np.mean((plain.rate - plain.truth)[third] ** 2)))
    assert with_season < 0.6 * without


def test_no_season_from_one_period_or_without_one() -> None:
    run = feed(daily, 1.9 * PERIOD, 1, SEASONAL)
    assert not run.seasonal.any()
    # constant load over three periods: the profile is noise and does not score better
    assert not feed(constant, 3 * PERIOD, 1, SEASONAL).seasonal.any()


def climb(seconds: float) -> Rate:
    """8 req/s, then from 600 s a climb to 24 over `seconds`, then 24: a flash crowd."""

    def rate(t: Array) -> Array:
        return np.where(t < 600, 8.0, np.minimum(24.0, 8.0 + 16.0 * (t - 600) / seconds))

    return rate


def cycles(true: Rate, until: float, seed: int) -> Iterator[tuple[float, Forecast]]:
    """Each cycle's time and forecast a start-up plus a cycle (75 s) ahead."""
    times = np.arange(CYCLE, until + CYCLE / 2, CYCLE)
    forecaster = RateForecaster()
    for at, sample in zip(times.tolist(), measured(true, times, seed).tolist(), strict=True):
        assert forecaster.observe(at, sample)
        result = forecaster.forecast(75.0)
        assert result is not None
        yield at, result


@pytest.mark.parametrize("seconds", [120.0, 300.0])
def test_a_climb_is_seen_about_a_minute_after_it_begins(seconds: float) -> None:
    """Measured over 10 seeds: seen 30-75 s (120 s climbs) and 30-105 s (300 s) after
    it began, a median 60 s; the line then forecasts the rate 75 s ahead better than
    Holt's level and trend every time."""
    seen = []
    for seed in range(1, 11):
        for at, result in cycles(climb(seconds), 1200.0, seed):
            if at >= 600 and result.rising is not None:
                truth = float(climb(seconds)(np.array([at + 75.0]))[0])
                assert abs(result.rising - truth) < abs(result.rate - truth), (seed, at)
                seen.append(at - 600)
                break
    assert len(seen) == 10
    assert float(np.median(seen)) <= 60.0 and max(seen) <= 120.0, seen


@pytest.mark.parametrize(
    ("name", "true", "at_most"),
    [
        ("8 req/s", lambda t: np.full_like(t, 8.0), 0.003),
        ("20 req/s", constant, 0.003),
        ("a step 10 -> 20", lambda t: np.where(t < 600, 10.0, 20.0), 0.01),
    ],
)
def test_steady_load_and_a_step_are_rarely_a_climb(name: str, true: Rate, at_most: float) -> None:
    """Measured over 10 seeds: 0.06-0.08 % of cycles on constant load, 0.4 % with a
    step (at 3 sd instead of 4: 0.7 and 1.2 %)."""
    found = [
        result.rising is not None
        for seed in range(1, 11)
        for _at, result in cycles(true, 3600.0 if "req/s" in name else 1200.0, seed)
    ]
    assert np.mean(found) <= at_most, name


@pytest.mark.parametrize("level", [8.0, 20.0])
def test_the_measurement_noise_is_the_poisson_counts(level: float) -> None:
    """A count over 15 s has variance rate / 15: estimated within 0.6-1.5 x of it over
    an hour (10 seeds), the median within 15 %."""
    ratios = []

    def steady(t: Array) -> Array:
        return np.full_like(t, level)

    for seed in range(1, 11):
        times = np.arange(CYCLE, 3600 + CYCLE / 2, CYCLE)
        forecaster = RateForecaster()
        for at, sample in zip(times.tolist(), measured(steady, times, seed).tolist(), strict=True):
            forecaster.observe(at, sample)
        variance = forecaster.measurement_variance
        assert variance is not None
        ratios.append(variance / (level / CYCLE))
    assert min(ratios) >= 0.5 and max(ratios) <= 1.6, ratios
    assert abs(float(np.median(ratios)) - 1.0) <= 0.15, ratios


def test_no_data_is_unknown_not_zero() -> None:
    forecaster = RateForecaster()
    assert forecaster.forecast(HORIZON) is None
    assert forecaster.rate_at(HORIZON) is None
    assert forecaster.upper_at(HORIZON) is None
    forecaster.observe(0.0, 0.0)
    assert forecaster.rate_at(HORIZON) == 0.0  # a measured zero is a zero
    forecaster.reset()
    assert forecaster.rate_at(HORIZON) is None


def test_bad_values_are_rejected_and_counted() -> None:
    forecaster = RateForecaster()
    for at, rate in [(0.0, math.nan), (0.0, -1.0), (math.inf, 5.0), (0.0, math.inf)]:
        assert not forecaster.observe(at, rate)
    assert forecaster.rate_at(HORIZON) is None
    assert forecaster.observe(15.0, 5.0)
    assert not forecaster.observe(15.0, 6.0)  # time not moving forward
    assert not forecaster.observe(10.0, 6.0)
    assert forecaster.rejected == 6
    assert forecaster.samples == 1
    assert forecaster.rate_at(HORIZON) == 5.0


def test_gaps() -> None:
    """Missed cycles are longer steps; a long gap restarts the level, with no trend."""
    times = np.arange(CYCLE, 1800.0, CYCLE)
    keep = np.ones(len(times), dtype=bool)
    keep[20:23] = False  # a 60 s step
    keep[60:66] = False  # a 105 s step
    samples = ramp(times)  # noise-free: the forecast should be all but exact
    forecaster = RateForecaster()
    for at, sample in zip(times[keep].tolist(), samples[keep].tolist(), strict=True):
        forecaster.observe(at, sample)
    truth = float(ramp(np.array([times[keep][-1] + HORIZON]))[0])
    assert forecaster.rate_at(HORIZON) == pytest.approx(truth, rel=0.01)
    forecaster.observe(times[keep][-1] + 600.0, 10.0)  # back after ten minutes
    result = forecaster.forecast(HORIZON)
    assert result is not None
    assert (result.rate, result.trend) == (10.0, 0.0)


def test_never_negative() -> None:
    forecaster = RateForecaster()
    for i in range(40):
        forecaster.observe(CYCLE * i, max(20.0 - 0.5 * i, 0.0))  # falling to zero
    forecast = forecaster.forecast(600.0)
    assert forecast is not None
    assert forecast.trend < 0
    assert forecast.rate == 0.0
    assert forecast.upper >= 0.0


def test_deterministic() -> None:
    first = feed(ramp, 900.0, 5)
    second = feed(ramp, 900.0, 5)
    assert np.array_equal(first.rate, second.rate)
    assert np.array_equal(first.upper, second.upper)

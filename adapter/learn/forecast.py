"""Forecast a variant's arrival rate a start-up ahead, from the rates measured each cycle.

A replica asked for now serves only a start-up later, so sizing wants the rate at
now + start-up, not the rate now. The measured rate is noisy (a Poisson count over a
short window) and the load moves; the forecaster smooths the one and extrapolates the
other, cautiously.

The model: Holt's linear method (double exponential smoothing) in continuous time,
with a damped trend in the forecast. Holt rather than a local linear regression over
a window: its state is two numbers, it takes irregular steps without resampling (a
missed cycle is a longer step, not a hole), it is unbiased on a linear ramp like the
regression, and its memory is set by time constants, so its behaviour does not depend
on the cycle length. For a step of dt seconds the smoothing gains are
1 - exp(-dt / time constant). The trend is damped where it is extrapolated: a forecast
h ahead adds trend * damping * (1 - exp(-h / damping)), about trend * h for the short
horizons sizing asks (a start-up) and never more than trend * damping, so a noisy
trend cannot run away. The state itself is not damped: a damped state settles on a
ramp at a trend below the slope and a level behind it (on the test ramp the 60 s
forecast then ran 0.4-0.5 req/s low, against 0.1-0.2 undamped).

A step in the load is not a slope. A one-step error beyond `jump_z` (5) sd of the
recent errors is taken as a level shift: the level takes the sample, the trend is left
alone. Plain Holt feeds the step into the trend, which then carries the forecast past
the new level for a trend time (measured, 10 -> 20 req/s: 5-26 cycles to settle within
10 %; 20 -> 10: not within 40 cycles; with the shift rule 1-4 cycles both ways).

A climb too steep for Holt is a rise. Holt's trend has a long memory (it must, or the
noise makes a trend of its own), so on a flash crowd it learns a slope minutes late; on a
steep one every sample passes for a level shift and the trend learns nothing. A second,
short look runs beside it: straight lines fitted by least squares to the samples of
the last `rise_windows_s` (60 s for steep climbs, 180 s for slow ones, at least 4
samples each). The load is taken to be climbing when, for one of them, both:
- the line's slope is positive beyond `rise_z` (4) standard errors;
- the samples lie on the line: their mean squared residual is within `rise_fit` (3)
  times the noise's variance. A step in the window fits a line badly, and a step is a
  level shift, not a climb.
The noise here is the measurement's alone, from the second differences of the samples
over `noise_time_s` (a straight load has none; white noise of sd s gives 6 s^2): their
mean square without the largest 10 % (a step's), scaled as for a normal's. Not Holt's
one-step errors: those also hold the load's own moves, and after one climb they hid
the next (measured: the second to sixth 120 s climbs of a run not seen at all).
`Forecast.rising` then extrapolates the line (of the two, the surer: the larger t
statistic), undamped, from its value at the last sample. Measured with 15 s Poisson
samples (10 seeds each, tests/test_learn_forecast.py): climbs from 8 to 24 req/s over
120 s and over 300 s are seen a median 60 s after they begin, where Holt's trend then
held 5 % of the slope; a false climb on constant load (8 and 20 req/s) comes in
0.06-0.08 % of cycles, and around a step in 0.4 %. At 3 sd it was 0.7 % and 1.2 %.

The upper bound is rate + z * sd(h). sd(h) grows with the horizon as the variance of
Holt's method does (ETS(A,A,N), Hyndman et al. 2008: sigma^2 [1 + (k-1)(a^2 + a b k +
b^2 k (2k-1) / 6)] for k = h / dt steps), where sigma is the RMS of the recent one-step
errors. Those errors include the measurement noise, so the bound is one for the next
*measured* rate (at z 1.28, nominally 90 %, it measured 81-93 % on the test loads: the
noise of a rising Poisson rate grows faster than its 15-minute RMS follows); the true
rate, which is what the replicas serve, is covered in 97-100 % of cycles.

A seasonal term (a daily pattern by default) joins only when the history supports
it. The profile is the time-weighted mean measured rate in bins of the period (older
periods fade with `season_memory_periods`), read by linear interpolation between bin
centres. A second Holt model runs on the deseasonalised rate (measured minus profile)
once every bin has data; its forecast is its level and trend plus the profile at the
forecast time, i.e. the current rate plus the seasonal difference between now and
now + h. The seasonal forecast is used when both:
- the history spans `season_min_periods` periods (2: one to learn the profile, one to
  test it), and every bin has data;
- over about the last period, the seasonal model's mean squared error `compare_horizon_s`
  ahead (forecasts made that long before each sample, checked against it) is below the
  plain model's by at least `season_margin` (10 %). Comparing a few minutes ahead, not
  one step ahead, because a smooth pattern barely changes within one cycle: what it
  adds shows at the horizons sizing asks for.

Never negative, and unknown is never zero: with no sample yet the forecast is None
(the caller then uses the measured rate). NaN, infinite or negative rates and times
that do not move forward are rejected and counted. A step longer than `max_gap_s`
restarts the level from the new sample with no trend (the old trend says nothing about
a load seen again after minutes); the noise estimate and the seasonal profile survive.

Pure: no clock (times are the `at` the caller passes), no I/O, deterministic.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# one-sided 90 %: the upper bound a cautious sizing takes by default
Z_90 = 1.2816
# the one-step errors needed before one can be called a jump
MIN_JUMP_ERRORS = 4.0
# the second differences needed before a climb can be seen (`RateForecaster.climb`)
MIN_BENDS = 8
# the share of the largest second differences left out of the noise (a step's two)
TRIM = 0.1
# E[Z^2 | |Z| below its 90th percentile] for a standard normal Z: 1 - 2 c phi(c) / 0.9,
# c = 1.645
TRIMMED_NORMAL = 0.6231


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """How fast the forecaster follows the load. Times in seconds.

    The defaults come from a sweep on noisy ramps (linear and accelerating), constant
    load and steps with 15 s cycles (tests/test_learn_forecast.py). A level time of
    60 s averages about 8 samples, halving the 60 s-ahead error of the last sample on
    the ramp; the trend needs a longer memory (300 s) or the noise makes a trend of its
    own (120 s: 25 % more error on constant load); 600 s of damping is far above the
    horizons asked (a start-up, 1-2 min), so a real ramp is extrapolated almost in full
    (95 % at 60 s), while a trend never adds more than 600 s of itself. `jump_z` 5 and
    not 4: at 4 the skewed Poisson counts of a few req/s pass for jumps now and then.
    """

    level_time_s: float = 60.0
    trend_time_s: float = 300.0
    damping_time_s: float = 600.0
    # the memory of the one-step error RMS behind the upper bound
    noise_time_s: float = 900.0
    z: float = Z_90
    # a one-step error beyond jump_z sd is a level shift (`_update`)
    jump_z: float = 5.0
    # a climb: the slope of a line through the samples of the last 60 s, or 180 s, beyond
    # rise_z standard errors, its residuals within rise_fit x the noise variance (module
    # docstring); rise_z inf: never
    rise_windows_s: tuple[float, ...] = (60.0, 180.0)
    rise_z: float = 4.0
    rise_fit: float = 3.0
    max_gap_s: float = 300.0
    seasonal: bool = True  # False: never a seasonal term
    period_s: float = 86400.0
    season_bins: int = 96  # 15-minute bins of a day
    season_memory_periods: float = 3.0
    season_min_periods: float = 2.0
    season_margin: float = 0.1
    compare_horizon_s: float = 120.0

    def __post_init__(self) -> None:
        for name in (
            "level_time_s",
            "trend_time_s",
            "damping_time_s",
            "noise_time_s",
            "max_gap_s",
            "period_s",
            "season_memory_periods",
            "compare_horizon_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")
        if not (math.isfinite(self.z) and self.z >= 0):
            raise ValueError(f"z must be >= 0, got {self.z}")
        if not self.jump_z > 0:
            raise ValueError(f"jump_z must be > 0 (inf: never), got {self.jump_z}")
        if not (self.rise_windows_s and all(w > 0 for w in self.rise_windows_s)):
            raise ValueError(f"rise_windows_s must be > 0, got {self.rise_windows_s}")
        if not (self.rise_z > 0 and self.rise_fit > 0):
            raise ValueError(f"rise_z and rise_fit must be > 0, got {self.rise_z}, {self.rise_fit}")
        if self.season_bins < 2:
            raise ValueError(f"season_bins must be >= 2, got {self.season_bins}")
        if not (math.isfinite(self.season_min_periods) and self.season_min_periods >= 2):
            raise ValueError("season_min_periods must be >= 2: one to learn, one to test")
        if not (0 <= self.season_margin < 1):
            raise ValueError(f"season_margin must be in [0, 1), got {self.season_margin}")


@dataclass(frozen=True, slots=True)
class Forecast:
    """The rate expected `horizon_s` after the last sample, and how sure it is."""

    horizon_s: float
    rate: float  # req/s, >= 0
    upper: float  # rate + z * sd, >= rate
    sd: float  # of the measured rate at the horizon
    level: float  # the model's rate now
    trend: float  # req/s per s now (of the deseasonalised rate when seasonal)
    seasonal: float  # profile(now + h) - profile(now) added; 0 when not used
    seasonal_used: bool
    # when the load climbs (module docstring): the fitted line's rate at the horizon;
    # None when it does not
    rising: float | None = None


@dataclass(frozen=True, slots=True)
class _Holt:
    level: float
    trend: float  # per second


def _line(
    samples: Collection[tuple[float, float]], window_s: float, noise: float, fit: float
) -> tuple[float, float, float] | None:
    """A least-squares line through the samples of the last `window_s` (at least 4):
    (its slope's t statistic against `noise`, the line at the last sample, the slope),
    or None when there are too few or they do not lie on it (residuals beyond `fit` x
    the noise variance)."""
    last = max(at for at, _rate in samples) if samples else 0.0
    kept = [(at - last, rate) for at, rate in samples if at >= last - window_s]
    if len(kept) < 4:
        return None
    times, rates = (np.array(column) for column in zip(*kept, strict=True))
    centred = times - times.mean()
    sxx = float(centred @ centred)
    slope = float(centred @ (rates - rates.mean())) / sxx
    now = float(rates.mean()) - slope * float(times.mean())
    residuals = rates - (now + slope * times)
    if float(residuals @ residuals) / (len(rates) - 2) > fit * noise:
        return None
    return slope * math.sqrt(sxx / noise), now, slope


def _gain(dt: float, time_s: float) -> float:
    """The smoothing gain of a step dt for a time constant: the same memory at any dt."""
    return 1.0 - math.exp(-dt / time_s)


def _trend_reach(h: float, damping_s: float) -> float:
    """What a damped trend adds over h seconds, per unit of trend: at most damping_s."""
    return damping_s * (1.0 - math.exp(-h / damping_s))


def _predict(state: _Holt, h: float, settings: ForecastSettings) -> float:
    return state.level + state.trend * _trend_reach(h, settings.damping_time_s)


def _one_step(state: _Holt, dt: float) -> float:
    """The state's own prediction dt ahead: undamped (module docstring)."""
    return state.level + state.trend * dt


def _update(state: _Holt, dt: float, y: float, settings: ForecastSettings, jump: float) -> _Holt:
    """One Holt step of dt seconds to the sample y.

    An error beyond `jump` is a level shift, not a slope: the level takes the sample and
    the trend is left as it was. Without this a step feeds the trend, which then
    carries the forecast past the new level for a trend time (tests: a step).
    """
    predicted = _one_step(state, dt)
    if abs(y - predicted) > jump:
        return _Holt(y, state.trend)
    level = predicted + _gain(dt, settings.level_time_s) * (y - predicted)
    slope = (level - state.level) / dt
    trend = state.trend + _gain(dt, settings.trend_time_s) * (slope - state.trend)
    return _Holt(level, trend)


@dataclass(frozen=True, slots=True)
class _Mean:
    """An exponentially weighted mean over time, exact while few values are in.

    Sums (not a running value) so that the first values weigh as a plain mean would:
    no start value biases it.
    """

    weight: float = 0.0
    total: float = 0.0

    def add(self, value: float, decay: float) -> _Mean:
        return _Mean(self.weight * decay + 1.0, self.total * decay + value)

    @property
    def value(self) -> float | None:
        return self.total / self.weight if self.weight > 0 else None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The models' states at a sample, to score their forecasts a horizon later."""

    at: float
    plain: _Holt
    seasonal: _Holt | None


class _Profile:
    """The seasonal profile: the time-weighted mean rate per bin of the period."""

    def __init__(self, settings: ForecastSettings) -> None:
        self._settings = settings
        bins = settings.season_bins
        self._weight: npt.NDArray[np.float64] = np.zeros(bins)
        self._total: npt.NDArray[np.float64] = np.zeros(bins)
        self._last: npt.NDArray[np.float64] = np.zeros(bins)

    def _position(self, at: float) -> float:
        """Where `at` falls in the period, in bins (0 at the period's start)."""
        return (at % self._settings.period_s) / self._settings.period_s * len(self._weight)

    @property
    def complete(self) -> bool:
        return bool(np.all(self._weight > 0))

    def add(self, at: float, y: float, dt: float) -> None:
        """Weigh y by its step (a gap does not count twice); old periods fade."""
        b = int(self._position(at)) % len(self._weight)
        memory = self._settings.season_memory_periods * self._settings.period_s
        decay = math.exp(-(at - self._last[b]) / memory) if self._weight[b] > 0 else 0.0
        self._weight[b] = self._weight[b] * decay + dt
        self._total[b] = self._total[b] * decay + dt * y
        self._last[b] = at

    def value(self, at: float) -> float:
        """The profile at `at`, centred on its mean, between bin centres. Needs `complete`."""
        means = self._total / self._weight
        centred = means - float(means.mean())
        position = self._position(at) - 0.5
        low = math.floor(position)
        share = position - low
        bins = len(centred)
        return float((1 - share) * centred[low % bins] + share * centred[(low + 1) % bins])


class RateForecaster:
    """One variant's arrival-rate forecaster. Feed `observe` every cycle, ask `forecast`."""

    def __init__(self, settings: ForecastSettings | None = None) -> None:
        self.settings = settings or ForecastSettings()
        self.rejected = 0  # samples refused: NaN, negative, or time not moving forward
        self.reset()

    def reset(self) -> None:
        """Forget everything learned (the rejected count stays: it is a record)."""
        self.samples = 0
        self._first_at = 0.0
        self._last_at = 0.0
        self._last_dt = 0.0
        self._plain = _Holt(0.0, 0.0)
        self._seasonal: _Holt | None = None
        self._noise_plain = _Mean()
        self._noise_seasonal = _Mean()
        self._error_plain = _Mean()
        self._error_seasonal = _Mean()
        self._snapshots: deque[_Snapshot] = deque()
        self._profile = _Profile(self.settings)
        # (at, rate) within the longest of rise_windows_s
        self._recent: deque[tuple[float, float]] = deque()
        self._bends: deque[tuple[float, float]] = deque()  # (at, |second difference|)

    def observe(self, at: float, rate: float) -> bool:
        """Take the rate measured at `at` (s, any origin; the same clock each call).

        Returns False, and counts it, when the sample is refused.
        """
        valid = math.isfinite(at) and math.isfinite(rate) and rate >= 0
        if not valid or (self.samples > 0 and at <= self._last_at):
            self.rejected += 1
            return False
        if self.samples == 0:
            self._first_at = at
            self._plain = _Holt(rate, 0.0)
        else:
            dt = at - self._last_at
            if dt > self.settings.max_gap_s:
                self._restart(rate, at)
            else:
                self._score(at, rate)
                self._step(at, dt, rate)
            if self.settings.seasonal:
                self._profile.add(at, rate, min(dt, self.settings.max_gap_s))
            self._last_dt = dt
        self.samples += 1
        self._last_at = at
        self._snapshots.append(_Snapshot(at, self._plain, self._seasonal))
        self._recent.append((at, rate))
        self._bend(at)
        while self._recent[0][0] < at - max(self.settings.rise_windows_s):
            self._recent.popleft()
        return True

    def _bend(self, at: float) -> None:
        """Keep the last three samples' second difference (the measurement noise's)."""
        if len(self._recent) >= 3:
            (t0, y0), (t1, y1), (t2, y2) = list(self._recent)[-3:]
            self._bends.append((at, abs(y2 - y1 - (y1 - y0) * (t2 - t1) / (t1 - t0))))
        while self._bends and self._bends[0][0] < at - self.settings.noise_time_s:
            self._bends.popleft()

    @property
    def measurement_variance(self) -> float | None:
        """The measured rate's noise variance, from the second differences; None with
        fewer than `MIN_BENDS` of them (module docstring)."""
        if len(self._bends) < MIN_BENDS:
            return None
        bends = np.sort(np.array([bend for _at, bend in self._bends]))
        kept = bends[: max(1, int(len(bends) * (1.0 - TRIM)))]
        return float(np.mean(kept * kept)) / TRIMMED_NORMAL / 6.0

    def _restart(self, rate: float, at: float) -> None:
        """After a long gap: the level is the new sample, no trend, no pending scores."""
        self._plain = _Holt(rate, 0.0)
        if self._seasonal is not None:
            self._seasonal = _Holt(rate - self._profile.value(at), 0.0)
        self._snapshots.clear()
        self._recent.clear()

    def _step(self, at: float, dt: float, rate: float) -> None:
        """Both models' Holt updates, and their one-step errors (the noise)."""
        self._plain, self._noise_plain = self._advance(self._plain, self._noise_plain, dt, rate)
        if self._seasonal is not None:
            season = self._profile.value(at)
            self._seasonal, self._noise_seasonal = self._advance(
                self._seasonal, self._noise_seasonal, dt, rate - season
            )
        elif self._profile.complete:
            # the profile has seen every bin: from now on the seasonal model runs and
            # is scored, starting from where the plain one stands
            self._seasonal = _Holt(self._plain.level - self._profile.value(at), 0.0)

    def _advance(self, state: _Holt, noise: _Mean, dt: float, y: float) -> tuple[_Holt, _Mean]:
        """One model's step. Its error joins the noise clipped at the jump limit, so that
        a level shift widens the bound for a while but does not blind the jump test."""
        jump = math.inf
        if noise.weight >= MIN_JUMP_ERRORS and noise.value is not None:
            jump = self.settings.jump_z * math.sqrt(noise.value)
        error = min(abs(y - _one_step(state, dt)), jump)
        decay = math.exp(-dt / self.settings.noise_time_s)
        return _update(state, dt, y, self.settings, jump), noise.add(error * error, decay)

    def _score(self, at: float, rate: float) -> None:
        """Score the forecasts made `compare_horizon_s` before this sample, if any."""
        horizon = self.settings.compare_horizon_s
        while len(self._snapshots) > 1 and self._snapshots[1].at <= at - horizon:
            self._snapshots.popleft()
        if not self._snapshots:
            return
        then = self._snapshots[0]
        ahead = at - then.at
        if then.seasonal is None or not horizon <= ahead <= 2 * horizon:
            return
        decay = math.exp(-(at - self._last_at) / self.settings.period_s)
        plain = rate - _predict(then.plain, ahead, self.settings)
        seasonal = rate - _predict(then.seasonal, ahead, self.settings)
        seasonal -= self._profile.value(at)
        self._error_plain = self._error_plain.add(plain * plain, decay)
        self._error_seasonal = self._error_seasonal.add(seasonal * seasonal, decay)

    @property
    def seasonal_used(self) -> bool:
        """Whether the seasonal model forecasts: enough history, and it scores better."""
        if not self.settings.seasonal or self._seasonal is None:
            return False
        history = self._last_at - self._first_at
        if history < self.settings.season_min_periods * self.settings.period_s:
            return False
        plain, seasonal = self._error_plain.value, self._error_seasonal.value
        if plain is None or seasonal is None:
            return False
        return seasonal < (1 - self.settings.season_margin) * plain

    def forecast(self, horizon_s: float, z: float | None = None) -> Forecast | None:
        """The rate `horizon_s` after the last sample; None before the first sample."""
        if self.samples == 0:
            return None
        if not (math.isfinite(horizon_s) and horizon_s >= 0):
            raise ValueError(f"horizon_s must be >= 0, got {horizon_s}")
        z = self.settings.z if z is None else z
        seasonal_used = self.seasonal_used
        if seasonal_used and self._seasonal is not None:
            now = self._profile.value(self._last_at)
            seasonal = self._profile.value(self._last_at + horizon_s) - now
            state = _Holt(self._seasonal.level + now, self._seasonal.trend)
            noise = self._noise_seasonal.value
        else:
            seasonal = 0.0
            state = self._plain
            noise = self._noise_plain.value
        rate = max(_predict(state, horizon_s, self.settings) + seasonal, 0.0)
        sd = self._spread(noise, horizon_s)
        climb = self.climb
        rising = None if climb is None else climb[0] + climb[1] * horizon_s
        return Forecast(
            horizon_s=horizon_s,
            rate=rate,
            upper=rate + z * sd,
            sd=sd,
            level=state.level,
            trend=state.trend,
            seasonal=seasonal,
            seasonal_used=seasonal_used,
            rising=rising,
        )

    @property
    def climb(self) -> tuple[float, float] | None:
        """(the rate now, its slope in req/s per s) on the line fitted to the last
        samples, when the load climbs; else None (module docstring)."""
        noise = self.measurement_variance
        if not noise:
            return None
        best: tuple[float, float, float] | None = None  # (t statistic, now, slope)
        for window in self.settings.rise_windows_s:
            fit = _line(self._recent, window, noise, self.settings.rise_fit)
            if fit is not None and fit[0] > self.settings.rise_z and (best is None or fit > best):
                best = fit
        return None if best is None else (best[1], best[2])

    def _spread(self, mean_square: float | None, horizon_s: float) -> float:
        """The sd of the measured rate horizon_s ahead (Holt's variance, undamped).

        Before the first one-step error nothing is known of the noise: 0, so the upper
        bound is the forecast itself, as the caller's fallback (the measured rate) is.
        """
        if mean_square is None or self._last_dt <= 0:
            return 0.0
        dt = self._last_dt
        steps = max(horizon_s / dt, 1.0)
        a = _gain(dt, self.settings.level_time_s)
        b = a * _gain(dt, self.settings.trend_time_s)  # ETS's beta is Holt's beta times a
        growth = a * a + a * b * steps + b * b * steps * (2 * steps - 1) / 6
        return math.sqrt(mean_square * (1 + (steps - 1) * growth))

    def rate_at(self, horizon_s: float) -> float | None:
        """The forecast rate `horizon_s` after the last sample; None with no data."""
        result = self.forecast(horizon_s)
        return None if result is None else result.rate

    def upper_at(self, horizon_s: float, z: float | None = None) -> float | None:
        """The upper bound `horizon_s` ahead (z: the settings' by default); None with no data."""
        result = self.forecast(horizon_s, z)
        return None if result is None else result.upper

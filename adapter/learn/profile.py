"""Learn a variant's decode step time, `step_ms = alpha + beta * batch`, from what its pods report.

The VariantAutoscaling declares a profile (alpha, beta, max batch) and the optimizer sizes
replicas with it; when the GPUs are slower than declared, each replica is given more load
than it can serve within the ITL SLO. Each cycle the pods report, over the window, the mean
ITL and the time-averaged decode batch per replica: one noisy point on the line.

The estimator is a Kalman filter on `theta = (alpha, beta)` with the declared profile as
the prior mean. The prior covariance says how a declared profile is usually wrong: mostly
in its common scale (another GPU, clock or vLLM version), less in each parameter on its
own. At a steady load the points sit near one batch, which fixes the line's height there
and barely its slope; the correlated prior then moves both parameters by nearly the same
factor, right for the common case, and the posterior keeps the slope uncertain. Around it:

- the measurement noise is a share of the ITL, larger for windows with few tokens; its
  scale is learned from the innovations, so the filter is calibrated whether the window's
  mean ITL varies by 0.1 % or 5 %; while that scale rests on few observations, innovations
  are judged with Student's t, not the normal;
- process noise shaped like the prior lets an old fit fade and follows a drifting GPU;
- an observation more than `gate` standard deviations from the prediction is rejected;
  `change_after` rejections in a row on the same side, or a CUSUM of the innovations, mean
  the profile changed: the covariance is widened by the prior's size around the current
  fit and the rejected observations are used again;
- the fit is used for sizing only when trusted: enough observations since the last change,
  physical and plausible values, and a predicted ITL known within `max_relative_error` at
  the batches the decisions hinge on (the mean observed batch, and the batch at which the
  fitted ITL reaches the SLO). Otherwise the declared profile is used.

What the data cannot give: at a steady load the slope comes from the batch's ~10 % wobble
alone, so beta alone stays uncertain (about 10 %, 1 sd, after 10 cycles at batch 35 and
0.5 % ITL noise); the posterior says so, and trust asks only for the ITL where it is used.

Pure: no I/O, no clock (observations carry their time), no globals; numpy for the algebra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

# the noise scale's prior weight, in observations: the first innovations move it, none
# decides it alone
_NOISE_PRIOR_OBSERVATIONS = 4.0
# one observation changes the log of the noise scale by at most this much (a factor e)
_NOISE_MAX_STEP = 1.0
# the noise variance stays within this factor of the nominal one, either way
_NOISE_RANGE = 1e4


@dataclass(frozen=True, slots=True)
class DeclaredProfile:
    """The profile in the VariantAutoscaling: the prior, and the fallback."""

    alpha_ms: float  # decode step time at batch 0
    beta_ms: float  # added per request in the batch
    max_batch: int  # requests in the batch at most (vLLM's max_num_seqs)
    slo_itl_ms: float  # the ITL SLO; math.inf when there is none

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha_ms) and self.alpha_ms > 0):
            raise ValueError(f"alpha_ms must be finite and > 0, got {self.alpha_ms}")
        if not (math.isfinite(self.beta_ms) and self.beta_ms >= 0):
            raise ValueError(f"beta_ms must be finite and >= 0, got {self.beta_ms}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not self.slo_itl_ms > 0:
            raise ValueError(f"slo_itl_ms must be > 0, got {self.slo_itl_ms}")


@dataclass(frozen=True, slots=True)
class DecodeObservation:
    """One cycle's window, as the pods of one variant reported it."""

    at: float  # seconds, on the engine's injected clock
    batch: float  # time-averaged requests decoding per serving replica
    itl_ms: float  # mean inter-token latency over the window's tokens
    tokens: float  # decode tokens in the window: how much the mean rests on


@dataclass(frozen=True, slots=True)
class LearnSettings:
    """How much to doubt the declared profile and the data. The defaults, and why:

    - scale_sd 0.5: the profile's common scale is off by this share (1 sd): a GPU twice as
      slow as declared is a 2-sd surprise, not an impossibility;
    - own_sd 0.2: each parameter's error beyond the common scale. Smaller than scale_sd, so
      points at one batch move both parameters by nearly one factor: at batch 35 of the
      H100 profile a 1.3x truth comes out with alpha 0.4 % over, beta 1.6 % short (0.3
      would leave beta 3 % short).
      Not smaller: at one batch, a truth with only alpha off would then be fitted as a
      scale change with a falsely small uncertainty on beta;
    - drift_sd 0.002: each parameter may wander 0.2 % a cycle (a 3 % random walk in an
      hour): a GPU drifting 20 % in 50 minutes is followed within 1 % at the batch it runs
      at. 0.5 % would forget faster than 0.5 % ITL noise can be averaged, and hide the
      noise's size (the innovations would be put down to drift);
    - noise_rel 0.01, noise_sampling_rel 0.01 at noise_tokens 1000: the starting guess of a
      window's relative noise: 1 % that averaging cannot remove (batch composition, prefill
      interference) and 1 % over 1000 tokens that falls as 1/sqrt(tokens). Only a start,
      and a cautious one: the scale is learned, with a memory of 1 / (1 - noise_memory) =
      20 observations. A noise guessed too large only slows the first cycles; one guessed
      too small makes the first fit overconfident;
    - gate 4.0: innovations beyond 4 sd are outliers (a 1-in-16 000 chance otherwise);
    - change_after 3: three outliers in a row on the same side are a new profile, not bad
      luck (isolated outliers, even frequent ones, rarely line up three times);
    - cusum_slack 0.5, cusum_limit 8.0: a bias of 1 sd is flagged in about 16 cycles, of
      3 sd in about 4; no false alarm in 60 000 simulated cycles of a constant profile. It
      catches drifts faster than drift_sd allows for (20 % in 50 cycles);
    - min_batch 1.0: nearly idle pods say little, and idle time biases their average batch;
    - min_tokens 100: a window with fewer decode tokens has no mean worth the name;
    - bound_factor 4.0: a fit beyond 4x either way of the declared profile is a broken
      measurement or a broken declaration, and is not used either way;
    - min_observations 4, max_relative_error 0.02: trusted after 4 points since the last
      change, when the predicted ITL is known within 2 % where the decisions are made;
    - keep_trust_factor 1.5: a trusted fit stays trusted until that error exceeds 1.5x the
      limit (3 %), so sizing does not flip between the fit and the declared profile, 30 %
      apart, each time the error wobbles across 2 %;
    - slo_batch_check True: the error limit holds at the SLO's batch too. Off, it holds
      where the pods ran only, and the fit sizes with its extrapolation to the SLO's batch
      (the prior's shape: a scale change). Without it a faster GPU than declared is never
      trusted, since sizing by the declared profile keeps the batch away from the SLO's.
    """

    scale_sd: float = 0.5
    own_sd: float = 0.2
    drift_sd: float = 0.002
    cycle_s: float = 15.0
    noise_rel: float = 0.01
    noise_sampling_rel: float = 0.01
    noise_tokens: float = 1000.0
    noise_memory: float = 0.95
    gate: float = 4.0
    change_after: int = 3
    cusum_slack: float = 0.5
    cusum_limit: float = 8.0
    min_batch: float = 1.0
    min_tokens: float = 100.0
    bound_factor: float = 4.0
    min_observations: int = 4
    max_relative_error: float = 0.02
    keep_trust_factor: float = 1.5
    slo_batch_check: bool = True

    def __post_init__(self) -> None:
        positive = {
            "scale_sd": self.scale_sd,
            "own_sd": self.own_sd,  # > 0: the prior covariance must be invertible
            "cycle_s": self.cycle_s,
            "noise_tokens": self.noise_tokens,
            "gate": self.gate,
            "cusum_limit": self.cusum_limit,
            "max_relative_error": self.max_relative_error,
        }
        non_negative = {
            "drift_sd": self.drift_sd,
            "noise_rel": self.noise_rel,
            "noise_sampling_rel": self.noise_sampling_rel,
            "cusum_slack": self.cusum_slack,
            "min_batch": self.min_batch,
            "min_tokens": self.min_tokens,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if not self.noise_rel + self.noise_sampling_rel > 0:
            raise ValueError("noise_rel and noise_sampling_rel cannot both be 0")
        if not 0 < self.noise_memory < 1:
            raise ValueError(f"noise_memory must be in (0, 1), got {self.noise_memory}")
        if not self.keep_trust_factor >= 1:
            raise ValueError(f"keep_trust_factor must be >= 1, got {self.keep_trust_factor}")
        if not self.bound_factor > 1:
            raise ValueError(f"bound_factor must be > 1, got {self.bound_factor}")
        if self.change_after < 1 or self.min_observations < 1:
            raise ValueError("change_after and min_observations must be >= 1")


@dataclass(frozen=True, slots=True)
class LearnedProfile:
    """The fit after the latest observation, and whether to size with it."""

    declared: DeclaredProfile
    alpha_ms: float
    beta_ms: float
    alpha_se_ms: float  # posterior standard deviations
    beta_se_ms: float
    accepted: int  # observations used, since the start
    rejected: int  # observations not used: invalid ones and outliers
    resets: int  # profile changes detected
    trusted: bool
    reason: str  # why not trusted; when trusted, how well the ITL is known

    @property
    def alpha_rel_se(self) -> float:
        return self.alpha_se_ms / abs(self.alpha_ms) if self.alpha_ms else math.inf

    @property
    def beta_rel_se(self) -> float:
        return self.beta_se_ms / abs(self.beta_ms) if self.beta_ms else math.inf

    def sizing(self) -> tuple[float, float]:
        """(alpha_ms, beta_ms) to size with: the fit if trusted, else the declared profile."""
        if self.trusted:
            return self.alpha_ms, self.beta_ms
        return self.declared.alpha_ms, self.declared.beta_ms


class _NoiseScale:
    """The measurement noise's scale over its nominal size, learned from innovations.

    One Fisher-scoring step on its log per observation: an innovation's variance is the
    prediction's spread plus the noise, and `share`, the noise's part of it, is also how
    much the innovation says about the noise. Innovations too large on average (z^2 > 1)
    raise the scale, too small lower it. Older innovations weigh `memory` less each step.
    """

    def __init__(self, memory: float) -> None:
        self._memory = memory
        self._log_scale = 0.0
        self._information = _NOISE_PRIOR_OBSERVATIONS / 2  # 1/2 per fully informative z
        self._evidence = 0.0  # the same, from the innovations alone

    @property
    def scale(self) -> float:
        return math.exp(self._log_scale)

    @property
    def freedom(self) -> float:
        """Degrees of freedom: the observations' worth the scale was learned from."""
        return 2.0 * self._information

    def learn(self, z: float, share: float) -> float:
        """Take one innovation's z; return the new scale over the old."""
        self._information = self._memory * self._information + 0.5 * share**2
        self._evidence = self._memory * self._evidence + 0.5 * share**2
        step = share * (z * z - 1.0) / (2.0 * self._information)
        step = min(max(step, -_NOISE_MAX_STEP), _NOISE_MAX_STEP)
        limit = math.log(_NOISE_RANGE)
        before = self._log_scale
        self._log_scale = min(max(before + step, -limit), limit)
        return math.exp(self._log_scale - before)

    def as_normal(self, z: float) -> float:
        """The normal deviate as unlikely as `z` under Student's t with the scale's freedom.

        With the scale learned from few observations, 5 sd can be bad luck with the scale
        rather than an outlier; this is the z it amounts to with the scale known (Wallace's
        approximation: within 10 % in the tail from 10 degrees of freedom).
        """
        freedom = self.freedom
        normal = math.sqrt(max(freedom - 0.5, 0.0) * math.log1p(z * z / freedom))
        return math.copysign(normal, z)

    def widening(self) -> float:
        """How much a standard error understates the spread while the scale is uncertain.

        The ratio of Student's t to the normal at 2 sd (95 %), with the freedom of the
        innovations alone: the nominal noise is a guess, not evidence, and no fit is to be
        trusted before the data have shown how noisy they are. Wallace's approximation
        inverted: t = sqrt(f * (exp(z^2 / (f - 1/2)) - 1)).
        """
        freedom = 2.0 * self._evidence
        exponent = 4.0 / (freedom - 0.5) if freedom > 0.5 else math.inf
        if exponent > 700.0:
            return math.inf
        return math.sqrt(freedom * math.expm1(exponent)) / 2.0


class ProfileEstimator:
    """One variant's profile, updated once a cycle with that cycle's observation."""

    def __init__(self, declared: DeclaredProfile, settings: LearnSettings | None = None) -> None:
        self._declared = declared
        self._settings = settings = settings or LearnSettings()
        factor = settings.bound_factor
        # a declared beta of 0 has no size: take the beta that doubles the step at max batch
        beta_size = declared.beta_ms or declared.alpha_ms / declared.max_batch
        self._lower = np.array([declared.alpha_ms / factor, declared.beta_ms / factor])
        self._upper = np.array([declared.alpha_ms * factor, beta_size * factor])
        # covariances are shaped at no smaller magnitudes: a fit near 0 must not freeze
        self._shape_floor = np.array([declared.alpha_ms, beta_size]) / factor
        self._mean = np.array([declared.alpha_ms, declared.beta_ms], dtype=np.float64)
        self._cov = self._prior_size(np.array([declared.alpha_ms, beta_size]))
        # the fit without the observations since the start or the last change: the data's
        # share of the information is reweighed when the noise scale is relearned
        self._base_mean = self._mean
        self._base_cov = self._cov
        self._noise = _NoiseScale(settings.noise_memory)
        self._at: float | None = None
        self._held: list[DecodeObservation] = []  # outliers in a row, on one side
        self._held_sign = 0.0
        self._cusum_up = 0.0
        self._cusum_down = 0.0
        self._since_change = 0
        self._batch_sum = 0.0  # of the observations used since the last change
        self._accepted = 0
        self._rejected = 0
        self._resets = 0
        self._learned = self._summarize()

    @property
    def learned(self) -> LearnedProfile:
        return self._learned

    def sizing_profile(self) -> tuple[float, float]:
        """(alpha_ms, beta_ms) to size with: the fit if trusted, else the declared profile."""
        return self._learned.sizing()

    def update(self, observation: DecodeObservation) -> LearnedProfile:
        """Use one cycle's observation (or reject it) and return the fit after it."""
        if not self._informative(observation):
            self._rejected += 1
        else:
            self._drift(observation.at)
            used, z = self._measure(observation)
            if used:
                self._held = []
                self._watch_bias(z)
            else:
                self._rejected += 1
                self._hold(observation, z)
        self._learned = self._summarize()
        return self._learned

    def _informative(self, obs: DecodeObservation) -> bool:
        """Finite, busy enough and with enough tokens to say something about the profile."""
        if not all(math.isfinite(v) for v in (obs.at, obs.batch, obs.itl_ms, obs.tokens)):
            return False
        settings = self._settings
        busy = obs.batch >= settings.min_batch and obs.itl_ms > 0
        # tokens > 0 even with min_tokens 0: the noise's size divides by them
        return busy and obs.tokens >= settings.min_tokens and obs.tokens > 0

    def _drift(self, at: float) -> None:
        """Widen the covariance for the time since the last observation: the GPU may drift."""
        if self._at is not None and at > self._at:
            settings = self._settings
            cycles = (at - self._at) / settings.cycle_s
            # shaped like the prior, sized so that each parameter wanders drift_sd a cycle
            share = settings.drift_sd**2 / (settings.scale_sd**2 + settings.own_sd**2)
            drift = cycles * share * self._prior_size(self._mean)
            self._cov = self._cov + drift
            self._base_cov = self._base_cov + drift
        if self._at is None or at > self._at:
            self._at = at

    def _measure(self, obs: DecodeObservation) -> tuple[bool, float]:
        """Kalman-update with one observation unless it is an outlier; return (used, z).

        z is the innovation in standard deviations, as a normal deviate (see `as_normal`).
        """
        h = np.array([1.0, obs.batch])
        nominal = self._nominal_noise(obs)
        spread = float(h @ self._cov @ h)
        noise = self._noise.scale * nominal
        z = (obs.itl_ms - float(h @ self._mean)) / math.sqrt(spread + noise)
        if abs(self._noise.as_normal(z)) > self._settings.gate:
            return False, z
        change = self._noise.learn(z, noise / (spread + noise))
        if change != 1.0:
            self._reweigh_data(1.0 / change)
        # predict again: the reweighing moved the fit
        noise = self._noise.scale * nominal
        gain = self._cov @ h
        total = float(h @ gain) + noise
        innovation = obs.itl_ms - float(h @ self._mean)
        self._mean = self._mean + gain * (innovation / total)
        cov = self._cov - np.outer(gain, gain) / total
        self._cov = (cov + cov.T) / 2
        self._accepted += 1
        self._since_change += 1
        self._batch_sum += obs.batch
        return True, self._noise.as_normal(innovation / math.sqrt(total))

    def _nominal_noise(self, obs: DecodeObservation) -> float:
        """The noise variance before its scale is learned: a share of the ITL.

        The prediction, not the observation, sets its size (an observation must not weigh
        itself), but never below the fastest plausible profile's ITL at that batch.
        """
        settings = self._settings
        h = np.array([1.0, obs.batch])
        level = max(float(h @ self._mean), float(h @ self._lower))
        sampling = settings.noise_sampling_rel**2 * settings.noise_tokens / obs.tokens
        return (settings.noise_rel**2 + sampling) * level**2

    def _reweigh_data(self, ratio: float) -> None:
        """Scale the information the past observations gave by `ratio` (old / new noise).

        The covariance was built with the noise scale of each observation's time; when the
        scale is relearned (say 25x up), the past observations were worth less than they
        were given, and the fit leans back towards the prior. In information form the data's
        part is the posterior's information less the base's (the prior with the drift).
        """
        base_info = np.linalg.inv(self._base_cov)
        info = np.linalg.inv(self._cov)
        data_info = _positive_part(info - base_info)
        data_vector = info @ self._mean - base_info @ self._base_mean
        cov = np.linalg.inv(base_info + ratio * data_info)
        self._mean = cov @ (base_info @ self._base_mean + ratio * data_vector)
        self._cov = (cov + cov.T) / 2

    def _watch_bias(self, z: float) -> None:
        """CUSUM of the used observations' innovations: a sustained bias is a change."""
        settings = self._settings
        self._cusum_up = max(0.0, self._cusum_up + z - settings.cusum_slack)
        self._cusum_down = max(0.0, self._cusum_down - z - settings.cusum_slack)
        if max(self._cusum_up, self._cusum_down) > settings.cusum_limit:
            self._change()

    def _hold(self, obs: DecodeObservation, z: float) -> None:
        """Keep an outlier; `change_after` of them in a row on one side mean a change."""
        sign = math.copysign(1.0, z)
        if sign != self._held_sign:
            self._held = []
            self._held_sign = sign
        self._held.append(obs)
        if len(self._held) < self._settings.change_after:
            return
        held, self._held = self._held, []
        self._change()
        for again in held:
            used, _ = self._measure(again)
            if used:
                self._rejected -= 1

    def _change(self) -> None:
        """A new profile: widen the covariance by the prior's size around the current fit."""
        self._cov = self._cov + self._prior_size(self._mean)
        self._base_mean = self._mean
        self._base_cov = self._cov
        self._cusum_up = 0.0
        self._cusum_down = 0.0
        self._since_change = 0
        self._batch_sum = 0.0
        self._resets += 1

    def _prior_size(self, theta: Array) -> Array:
        """The prior's covariance at `theta`: a common scale, plus each parameter's own."""
        settings = self._settings
        size = np.maximum(np.abs(theta), self._shape_floor)
        common = settings.scale_sd**2 * np.outer(size, size)
        result: Array = common + np.diag((settings.own_sd * size) ** 2)
        return result

    def _summarize(self) -> LearnedProfile:
        """The fit, its uncertainty, and whether it is good enough to size with."""
        alpha, beta = (float(value) for value in self._mean)
        alpha_se, beta_se = (math.sqrt(max(float(v), 0.0)) for v in np.diag(self._cov))
        reasons = self._distrust(alpha, beta)
        return LearnedProfile(
            declared=self._declared,
            alpha_ms=alpha,
            beta_ms=beta,
            alpha_se_ms=alpha_se,
            beta_se_ms=beta_se,
            accepted=self._accepted,
            rejected=self._rejected,
            resets=self._resets,
            trusted=not reasons,
            reason="; ".join(reasons) if reasons else self._precision(beta),
        )

    def _precision(self, beta: float) -> str:
        errors = ", ".join(f"{e:.1%} at batch {b:.0f}" for b, e in self._itl_errors(beta))
        return f"ITL known within {errors}"

    def _distrust(self, alpha: float, beta: float) -> list[str]:
        """Why the fit is not to be used (empty: it is)."""
        settings = self._settings
        if self._since_change < settings.min_observations:
            since = "the last profile change" if self._resets else "the start"
            need = settings.min_observations
            return [f"{self._since_change} observations since {since}, need {need}"]
        # the lower bounds also keep the fit physical: alpha > 0, beta >= 0
        reasons = [
            f"{name} {value:.4g} ms out of bounds [{low:.4g}, {high:.4g}]"
            for name, value, low, high in (
                ("alpha", alpha, self._lower[0], self._upper[0]),
                ("beta", beta, self._lower[1], self._upper[1]),
            )
            if not low <= value <= high
        ]
        if reasons:
            return reasons
        limit = settings.max_relative_error
        if self._learned.trusted:
            limit *= settings.keep_trust_factor
        return [
            f"ITL at batch {batch:.0f} known within {error:.1%}, need {limit:.1%}"
            for batch, error in self._itl_errors(beta)
            if not error <= limit
        ]

    def _itl_errors(self, beta: float) -> list[tuple[float, float]]:
        """The predicted ITL's relative error at the mean observed batch and the SLO's batch.

        The standard error is widened by Student's t while the noise scale rests on few
        observations.
        """
        declared = self._declared
        slo_batch = float(declared.max_batch)
        if beta > 0:
            slo_batch = (declared.slo_itl_ms - float(self._mean[0])) / beta
        slo_batch = min(max(slo_batch, 1.0), float(declared.max_batch))
        widening = self._noise.widening()
        errors = []
        batches = [self._batch_sum / self._since_change]
        if self._settings.slo_batch_check:
            batches.append(slo_batch)
        for batch in batches:
            h = np.array([1.0, batch])
            predicted = float(h @ self._mean)
            spread = widening * math.sqrt(max(float(h @ self._cov @ h), 0.0))
            errors.append((batch, spread / predicted if predicted > 0 else math.inf))
        return errors


def _positive_part(matrix: Array) -> Array:
    """The symmetric matrix with its negative eigenvalues (rounding errors) set to 0."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    result: Array = (vectors * np.maximum(values, 0.0)) @ vectors.T
    return result

"""Each VariantAutoscaling's decode profile, learned from its pods while the adapter runs.

A VA declares `ITL = alpha + beta * batch`; users rarely know it for their model, GPU and
prompt mix, and a profile 30 % too fast sizes every decision 30 % too small. The engine
hands this module each cycle's assembly; for every assembled VA it turns what the pods
reported into one observation for that VA's estimator (`adapter.learn.profile`):

- the batch: requests decoding, time-averaged over the window (`ModelLoad.decoding`, the
  rate of the ITL histogram's sum), over the serving (ready) replicas, plus one. The ITL
  is averaged over tokens, so over the batches the requests see: with Poisson arrivals a
  request finds the time-averaged batch of the others, and itself (the simulator's
  counters over long windows fit `alpha + beta * (batch + 1)` exactly; without the one
  the fit puts beta into alpha);
- the mean ITL over the window, and how many tokens it rests on (decoding / ITL x the
  cycle's length).

A cycle whose ready replicas differ from the Deployment's replicas, or changed within the
metrics' rate window, is skipped: a replica that started or left within the window puts
its share of the batch on too few or too many pods.

The declared profile sizes until the fit is trusted (the estimator's rule), and then
still unless the data refute it: the learned profile replaces it only when the two put
the step time at the batches the pods actually ran (the recent mean batch) more than
`tolerance` apart. Where the data are, the fit is sure; a slope extrapolated far from
them is not, and a correct declaration must not be overruled by it (a real emulator's
closed loop, batches 25-35, fitted beta at half the declared one with the line through
the data equal to the declared within 0.5 %). A correct declaration therefore keeps its
decisions and logs; a wrong one (30 % off in alpha, or in both) is replaced within a few
cycles under load. The profile a cycle sizes with was learned from the cycles before it:
the estimator is fed after the cycle's decisions.

Once the data have refuted the declaration, a fit that loses its trust (a change
detected, the load moved to batches not seen yet) does not hand sizing back to it: the
declaration was shown wrong. Until the fit is trusted again, the VA is sized with the
slower, at the recent mean batch, of the declared profile and the last learned one that
refuted it ("held"): when unsure, more replicas. Measured on a 1-hour ramp with pods 1.3x
the declared profile: falling back to the declaration cut a VA from 14 replicas to 3
when the fit's error band widened from 1.9 to 4.4 % (87.7 % of requests within the ITL
SLO, against 99.3 % when sizing with the true profile).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from adapter.assemble import Assembly, Served
from adapter.learn import (
    DeclaredProfile,
    DecodeObservation,
    LearnedProfile,
    LearnSettings,
    ProfileEstimator,
)

VariantKey = tuple[str, str]  # (namespace, name)

# how far apart (relative step time at the recent mean batch) the learned and the
# declared profile must be for the learned one to size: below it, not refuted
DEFAULT_TOLERANCE = 0.05
# the recent mean batch: an exponential average over about this many observations
_BATCH_MEMORY = 10.0


@dataclass(frozen=True, slots=True)
class ProfileView:
    """The profile a VA was sized with this cycle, and what was learned of it."""

    declared_alpha_ms: float
    declared_beta_ms: float
    alpha_ms: float  # sized with
    beta_ms: float
    # "declared", "learned", or "held": the last learned profile that refuted the
    # declaration, while the fit is not trusted (module docstring)
    source: str
    learned: LearnedProfile | None  # None: no estimator yet (or learning is off)


class ProfileLearning:
    """The estimators of every VA, fed once a cycle (`observe`), read for sizing."""

    def __init__(
        self,
        *,
        cycle_s: float,
        window_s: float | None = None,
        settings: LearnSettings | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        """`window_s`: the span the metrics are rated over (Prometheus' window; the cycle
        when scraping, the default)."""
        window_s = cycle_s if window_s is None else window_s
        if not (math.isfinite(cycle_s) and cycle_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"need cycle_s > 0 and a finite window_s, got {cycle_s}, {window_s}")
        self._window_s = max(cycle_s, window_s)
        self._settings = settings or LearnSettings(cycle_s=cycle_s, slo_batch_check=False)
        self._tolerance = tolerance
        self._estimators: dict[VariantKey, ProfileEstimator] = {}
        # ready replicas, and since when, by VA
        self._ready: dict[VariantKey, tuple[int, float]] = {}
        self._batch: dict[VariantKey, float] = {}  # the recent mean batch observed
        # the last trusted learned (alpha, beta) that refuted the declaration, by VA
        self._held: dict[VariantKey, tuple[float, float]] = {}

    def sizing_profiles(self) -> dict[VariantKey, tuple[float, float]]:
        """(alpha, beta) by VA for the VAs not sized with their declared profile."""
        out = {}
        for key, estimator in self._estimators.items():
            declared = estimator.learned.declared
            alpha, beta, source = self._sizing(key, (declared.alpha_ms, declared.beta_ms))
            if source != "declared":
                out[key] = (alpha, beta)
        return out

    def view(self, key: VariantKey, declared: tuple[float, float]) -> ProfileView:
        """What `key` is sized with, given its declared (alpha, beta)."""
        estimator = self._estimators.get(key)
        learned = estimator.learned if estimator is not None else None
        alpha, beta, source = self._sizing(key, declared)
        return ProfileView(declared[0], declared[1], alpha, beta, source, learned)

    def _sizing(self, key: VariantKey, declared: tuple[float, float]) -> tuple[float, float, str]:
        """(alpha, beta, source) that size `key` this cycle (module docstring)."""
        estimator = self._estimators.get(key)
        batch = self._batch.get(key)
        if estimator is None or batch is None:
            return (*declared, "declared")
        learned = estimator.learned
        if learned.trusted:
            if self._refutes(learned, batch):
                return (learned.alpha_ms, learned.beta_ms, "learned")
            return (*declared, "declared")
        held = self._held.get(key)
        if held is None or _step_ms(declared, batch) >= _step_ms(held, batch):
            return (*declared, "declared")
        return (*held, "held")

    def observe(self, assembly: Assembly, at: float, skip: Collection[VariantKey] = ()) -> None:
        """Feed each assembled VA's observation to its estimator; forget removed VAs.
        `skip`: VAs whose cluster view is out of date (their replica counts may be old)."""
        present = {(p.namespace, p.name) for p in assembly.problems}
        for server, va in assembly.servers.items():
            key = (va.namespace, va.name)
            present.add(key)
            served = assembly.served.get(server)
            if served is not None and key not in skip:
                self._observe(key, served, at)
        for key in self._estimators.keys() - present:
            del self._estimators[key]
            self._ready.pop(key, None)
            self._batch.pop(key, None)
            self._held.pop(key, None)

    def _observe(self, key: VariantKey, served: Served, at: float) -> None:
        declared = DeclaredProfile(
            alpha_ms=served.declared.alpha,
            beta_ms=served.declared.beta,
            max_batch=served.declared.max_batch_size,
            slo_itl_ms=served.slo_itl_ms if served.slo_itl_ms > 0 else math.inf,
        )
        estimator = self._estimators.get(key)
        if estimator is None or estimator.learned.declared != declared:
            # a new VA, or its declaration or SLO was edited: start from the new one
            estimator = self._estimators[key] = ProfileEstimator(declared, self._settings)
            self._held.pop(key, None)
        observation = self._observation(key, served, at)
        if observation is not None:
            estimator.update(observation)
            seen = self._batch.get(key, observation.batch)
            batch = self._batch[key] = seen + (observation.batch - seen) / _BATCH_MEMORY
            learned = estimator.learned
            if learned.trusted and self._refutes(learned, batch):
                self._held[key] = (learned.alpha_ms, learned.beta_ms)
            elif learned.trusted:
                self._held.pop(key, None)  # trusted and agreeing: the declaration holds

    def _observation(self, key: VariantKey, served: Served, at: float) -> DecodeObservation | None:
        ready, load = served.ready_replicas, served.load
        previous, since = self._ready.get(key, (ready, -math.inf))
        if ready != previous:
            since = at
        self._ready[key] = (ready, since)
        settled = at - since >= self._window_s  # no change within the rate window
        steady = ready > 0 and ready == served.replicas and settled
        if not steady or load.decoding is None or load.itl_ms is None or load.itl_ms <= 0:
            return None
        tokens = load.decoding / (load.itl_ms / 1000.0) * self._window_s
        return DecodeObservation(
            at=at, batch=load.decoding / ready + 1.0, itl_ms=load.itl_ms, tokens=tokens
        )

    def _refutes(self, learned: LearnedProfile, batch: float) -> bool:
        """More than `tolerance` from the declaration at the batches seen."""
        declared = learned.declared
        fitted = _step_ms((learned.alpha_ms, learned.beta_ms), batch)
        stated = _step_ms((declared.alpha_ms, declared.beta_ms), batch)
        return abs(fitted - stated) > self._tolerance * stated


def _step_ms(profile: tuple[float, float], batch: float) -> float:
    alpha, beta = profile
    return alpha + beta * batch

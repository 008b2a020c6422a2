"""Learn a variant's start-up time: from a replica being asked for to it serving.

Sizing for the load a start-up ahead needs the start-up itself. The declared value
(`default_s`) is a guess; the cluster shows the real one every time it scales up.
The engine feeds one `StartupObservation` per cycle per variant; the estimator turns
scale-ups into samples and samples into a `StartupEstimate`.

Two ways to a sample, the exact one first:

- Pod timestamps (`pods`: each pod's creationTimestamp and its Ready condition's
  lastTransitionTime, on the caller's clock). A pod seen starting (not ready), or
  created since the previous cycle, gives ready_at - created_at once it is ready:
  exact, matched per pod by name. Every fresh pod counts (scale-up, replacement,
  rollout): each is the same image starting on the same kind of node. A pod already
  ready when first seen gives nothing (its Ready time may be a later re-readiness, not
  its start), and neither does one seen ready that turns unready and ready again.

- Replica counts only (`pods` None): scale-up episodes. When the Deployment's spec
  replicas (what KEDA/HPA set: the trigger) rise to k above what was asked and ready
  before, replica k is asked for; when the ready count reaches k, replica k is ready.
  Both moments are known only to lie between two cycles, so each is taken at the
  midpoint of its interval: the last cycle before and the first cycle after. A sample
  is therefore within +-resolution of the truth, resolution = half the ask interval +
  half the ready interval (one cycle, 15 s, on a regular cycle); with a regular cycle
  the two midpoints shift alike and a sample is the number of cycles between the
  cycle that saw the ask and the one that saw it ready. Replicas asked together or in
  steps are paired in order (the k-th to be ready with the k-th asked); when pods
  overtake one another the pairs swap but the sum, hence the mean, is unchanged.
  An ask cancelled by a scale-down (spec below k) is dropped; one not ready after
  `failed_after_s` is dropped as failed; a ready count rising with no ask seen (e.g.
  the adapter restarted mid start-up, or a crashed pod came back) is ignored. Both
  are counted. A ready pod lost while another starts delays the count: the pod path
  has no such confusion.

Accuracy of the count path: with a regular cycle of c seconds and an unknown phase, a
sample is floor or ceil of T / c cycles, the ceiling with probability frac(T / c):
unbiased, error below one cycle. So a true start-up that is a whole number of cycles
(60 s, 90 s with 15 s cycles) is learned exactly, and any other to within one cycle
(15 s) at worst; after three samples 110 s reads 105-120 s (at most 9 % off). A
start-up just above a whole number of cycles is the worst case relative to its size
(61 s can read up to 75 s if all three samples round up, p = (1/15)^3). Pod
timestamps remove the quantisation: prefer them when the caller can read pods.

The estimate: the median of the last `window` samples (10), refined by the mean of
the samples clipped to median +- 2 x resolution. The median alone is robust but keeps
the quantisation (it picks one of the two cycle counts); the mean of quantised samples
is unbiased; clipping at twice the quantisation width keeps every sample of a steady
start-up whole while bounding what one slow outlier (a cold image pull) can add to
2 x resolution / n. Exact samples have resolution 0, so it is their median. The
spread `upper_s` is the 90th percentile (nearest rank) of the same samples: the
largest of up to 9, the second largest of 10, since sizing must cover a slow start
but not the single slowest of many.

`min_samples` is 2: the first start-up after a deploy is the least typical one (the
image pulled onto a fresh node), one count sample is only good to a cycle, and one
sample has no spread. Until then the estimate is the default, but its upper is at
least the slowest start-up seen, so a slow first start is not ignored for sizing.

Pure: times are the caller's `at` and pod timestamps, no clock is read, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

Source = Literal["learned", "default"]


class PodTimes(NamedTuple):
    """One pod of the variant: its name, creation and Ready times (s, the caller's clock)."""

    name: str
    created_at: float
    ready_at: float | None  # None: not ready


@dataclass(frozen=True, slots=True)
class StartupObservation:
    """What the engine sees of one variant in one cycle.

    `desired_replicas` (what the adapter published) and `serving` (the pods report
    metrics) are carried for the record but do not time a start-up: the scale-up
    starts when spec replicas rise (the autoscaler's reaction to the desired count is
    not start-up), and metrics appear a scrape interval after readiness, a delay that
    is not the pod's.
    """

    at: float  # s, the caller's clock, increasing
    desired_replicas: int | None
    spec_replicas: int
    ready_replicas: int
    serving: bool
    pods: tuple[PodTimes, ...] | None = None  # None: not known; use the counts


@dataclass(frozen=True, slots=True)
class StartupSettings:
    default_s: float = 60.0  # the declared start-up, until samples come
    min_samples: int = 2
    window: int = 10  # the samples the estimate is made of, the newest
    failed_after_s: float = 1800.0  # an ask not ready after this failed
    upper_quantile: float = 0.9

    def __post_init__(self) -> None:
        if not (math.isfinite(self.default_s) and self.default_s > 0):
            raise ValueError(f"default_s must be > 0, got {self.default_s}")
        if not (1 <= self.min_samples <= self.window):
            raise ValueError("need 1 <= min_samples <= window")
        if not (math.isfinite(self.failed_after_s) and self.failed_after_s > 0):
            raise ValueError(f"failed_after_s must be > 0, got {self.failed_after_s}")
        if not (0 < self.upper_quantile <= 1):
            raise ValueError(f"upper_quantile must be in (0, 1], got {self.upper_quantile}")


@dataclass(frozen=True, slots=True)
class StartupSample:
    seconds: float
    resolution_s: float  # the truth is within +- this; 0 from pod timestamps
    at: float  # the cycle it was taken at


@dataclass(frozen=True, slots=True)
class StartupEstimate:
    seconds: float  # the start-up to plan with
    upper_s: float  # a slow start-up: sizing that must cover one takes this
    samples: int  # behind the estimate (0 with the default)
    source: Source
    resolution_s: float  # the largest sample resolution behind it; 0 exact


@dataclass(frozen=True, slots=True)
class StartupCounters:
    samples: int  # taken in all
    failed: int  # asks (or starting pods) not ready after failed_after_s
    cancelled: int  # asks (or starting pods) gone in a scale-down before ready
    unasked: int  # ready replicas with no ask seen (ignored)
    rejected: int  # observations or pod entries refused as invalid


@dataclass(frozen=True, slots=True)
class _Ask:
    """Replica k was asked for between `after` and `by` (two cycles' times)."""

    after: float
    by: float


class StartupEstimator:
    """One variant's start-up time, learned from its scale-ups."""

    def __init__(self, settings: StartupSettings | None = None) -> None:
        self.settings = settings or StartupSettings()
        self._samples: deque[StartupSample] = deque(maxlen=self.settings.window)
        self._previous: StartupObservation | None = None
        self._asks: dict[int, _Ask] = {}  # by replica number k
        self._pods: dict[str, bool] = {}  # by name: True once ready (or given up)
        self._taken = 0
        self._failed = 0
        self._cancelled = 0
        self._unasked = 0
        self._rejected = 0

    def observe(self, seen: StartupObservation) -> tuple[StartupSample, ...]:
        """Take one cycle's observation; returns the samples it completed."""
        previous = self._previous
        if not _valid(seen) or (previous is not None and seen.at <= previous.at):
            self._rejected += 1
            return ()
        if seen.pods is not None:
            self._asks.clear()  # the pods path times these exactly: no double count
            new = self._from_pods(previous, seen, seen.pods)
        elif previous is None:
            new = []  # no earlier cycle: nothing starting now has a known ask time
        else:
            new = self._from_counts(previous, seen)
        self._previous = seen
        self._samples.extend(new)
        self._taken += len(new)
        return tuple(new)

    def _from_counts(
        self, previous: StartupObservation, seen: StartupObservation
    ) -> list[StartupSample]:
        """Scale-up episodes from the replica counts (module docstring)."""
        asked_before = max(previous.spec_replicas, previous.ready_replicas)
        for k in range(asked_before + 1, seen.spec_replicas + 1):
            self._asks[k] = _Ask(previous.at, seen.at)
        new = self._ready_asks(previous, seen)
        risen = max(seen.ready_replicas - previous.ready_replicas, 0)
        self._unasked += max(risen - len(new), 0)
        self._drop_asks(seen)
        return new

    def _ready_asks(
        self, previous: StartupObservation, seen: StartupObservation
    ) -> list[StartupSample]:
        """The asks the ready count has reached: each is ready between the two cycles."""
        ready_mid = (previous.at + seen.at) / 2
        ready_half = (seen.at - previous.at) / 2
        new = []
        for k in sorted(k for k in self._asks if k <= seen.ready_replicas):
            ask = self._asks.pop(k)
            seconds = ready_mid - (ask.after + ask.by) / 2
            resolution = ready_half + (ask.by - ask.after) / 2
            new.append(StartupSample(seconds, resolution, seen.at))
        return new

    def _drop_asks(self, seen: StartupObservation) -> None:
        """Drop the asks a scale-down cancelled and those that waited too long (failed)."""
        for k, ask in list(self._asks.items()):
            if k > seen.spec_replicas:
                del self._asks[k]
                self._cancelled += 1
            elif seen.at - ask.by > self.settings.failed_after_s:
                del self._asks[k]
                self._failed += 1

    def _from_pods(
        self,
        previous: StartupObservation | None,
        seen: StartupObservation,
        pods: tuple[PodTimes, ...],
    ) -> list[StartupSample]:
        """Exact samples from the pods' timestamps (module docstring)."""
        new = []
        names = set()
        for pod in pods:
            if not _valid_pod(pod):
                self._rejected += 1
                continue
            names.add(pod.name)
            sample = self._pod_sample(previous, seen.at, pod)
            if sample is not None:
                new.append(sample)
        for name in [n for n in self._pods if n not in names]:
            if not self._pods.pop(name):
                self._cancelled += 1  # went away while starting
        return new

    def _pod_sample(
        self, previous: StartupObservation | None, at: float, pod: PodTimes
    ) -> StartupSample | None:
        """One pod's sample, the first time it is seen ready after starting."""
        first_seen = pod.name not in self._pods
        seen_starting = self._pods.get(pod.name) is False
        if pod.ready_at is None:
            if first_seen:
                self._pods[pod.name] = False
            elif seen_starting and at - pod.created_at > self.settings.failed_after_s:
                self._pods[pod.name] = True
                self._failed += 1
            return None
        self._pods[pod.name] = True
        # seen starting, or born since the previous cycle: its Ready time is its start
        born_since = first_seen and previous is not None and pod.created_at > previous.at
        if not (seen_starting or born_since):
            return None
        seconds = pod.ready_at - pod.created_at
        if seconds > self.settings.failed_after_s:
            self._failed += 1
            return None
        return StartupSample(seconds, 0.0, at)

    def estimate(self) -> StartupEstimate:
        """The start-up to plan with (module docstring: clipped mean, p90 upper)."""
        values = [s.seconds for s in self._samples]
        resolution = max((s.resolution_s for s in self._samples), default=0.0)
        default = self.settings.default_s
        if len(values) < self.settings.min_samples:
            upper = max([default, *values])
            return StartupEstimate(default, upper, len(values), "default", resolution)
        array = np.array(values)
        median = float(np.median(array))
        band = 2 * resolution
        seconds = float(np.clip(array, median - band, median + band).mean())
        rank = math.ceil(self.settings.upper_quantile * len(values))
        upper = max(float(np.sort(array)[rank - 1]), seconds)
        return StartupEstimate(seconds, upper, len(values), "learned", resolution)

    def recent(self) -> tuple[StartupSample, ...]:
        """The samples behind the estimate, oldest first."""
        return tuple(self._samples)

    def counters(self) -> StartupCounters:
        return StartupCounters(
            samples=self._taken,
            failed=self._failed,
            cancelled=self._cancelled,
            unasked=self._unasked,
            rejected=self._rejected,
        )


def _valid(seen: StartupObservation) -> bool:
    return math.isfinite(seen.at) and seen.spec_replicas >= 0 and seen.ready_replicas >= 0


def _valid_pod(pod: PodTimes) -> bool:
    if not math.isfinite(pod.created_at):
        return False
    return pod.ready_at is None or (math.isfinite(pod.ready_at) and pod.ready_at >= pod.created_at)

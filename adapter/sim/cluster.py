"""A Deployment of vLLM replicas in virtual time: a discrete-event simulation, no HTTP.

What it models, and where each rule comes from:

- each replica serves with the emulator's physics (`adapter.emulator.batching`): decode
  steps back to back while it has work, FIFO admission up to the batch limit, step time
  `alpha + beta * batch`;
- a new replica holds its GPU from creation and takes `startup_delay_s` (image pull,
  model load) before it is ready and receives work;
- requests go to the ready replica with the fewest outstanding requests, ties in
  rotation (the emulator's gateway rule);
- scaling down removes the newest replica first (a starting one goes at once); a
  removed replica leaves the rotation, hands its waiting requests back for re-routing
  and finishes its running ones before its GPU is released;
- the counters vLLM exports (success, tokens, ITL, TTFT, queue time; observed when a
  request finishes, as the emulator does) are kept per Deployment, so a metrics source
  can rate them over any window like Prometheus or the pod scraper would.

Simulating every decode step (about 125 per second per replica) is exact but slow in
Python. `FastBatcher` gives the same schedule, bit for bit, by acting only when the batch
changes (a request joins or finishes): in between every step lasts the same time, so
step ends are a running sum and no request needs touching. `stepwise=True` drives
`ReplicaEngine` itself, one event per step; the tests check the two agree exactly.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from adapter.emulator.batching import ReplicaEngine, Request, ServingProfile
from adapter.sim.traces import Workload

PodState = Literal["starting", "ready", "terminating", "gone"]

_STEP, _READY = 0, 1  # event priorities at equal times: steps, then readiness, then arrivals


class Batcher(Protocol):
    """One replica's serving physics as the cluster drives it."""

    @property
    def running(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    @property
    def next_event(self) -> float | None:
        """When this replica next needs `on_event` (None: idle)."""
        ...

    def submit(self, request: Request, now: float) -> None: ...

    def on_event(self, now: float) -> list[Request]:
        """Handle the event due at `now`; returns the requests that finished then."""
        ...

    def drain_waiting(self) -> list[Request]: ...

    def kv_cache_usage(self) -> float: ...


class StepwiseBatcher:
    """`ReplicaEngine` driven one step at a time, as the emulator drives it in wall time."""

    __slots__ = ("_end", "engine")

    def __init__(self, profile: ServingProfile) -> None:
        self.engine = ReplicaEngine(profile)
        self._end: float | None = None

    @property
    def running(self) -> int:
        return self.engine.running

    @property
    def waiting(self) -> int:
        return self.engine.waiting

    @property
    def next_event(self) -> float | None:
        return self._end

    def submit(self, request: Request, now: float) -> None:
        self.engine.submit(request)
        if self._end is None:
            duration = self.engine.start_step(now)
            assert duration is not None
            self._end = now + duration

    def on_event(self, now: float) -> list[Request]:
        outcome = self.engine.finish_step()
        duration = self.engine.start_step(outcome.end)
        self._end = None if duration is None else outcome.end + duration
        return list(outcome.finished)

    def drain_waiting(self) -> list[Request]:
        return self.engine.drain_waiting()

    def kv_cache_usage(self) -> float:
        return self.engine.kv_cache_usage()


class FastBatcher:
    """`ReplicaEngine`'s schedule computed only where the batch changes.

    Same rules and the same float arithmetic as `ReplicaEngine.start_step` /
    `finish_step`: a step's duration is `alpha + beta * batch + prefill * prompt tokens
    admitted`, the next starts where it ended. While nobody joins or leaves the batch,
    every step lasts `_next_d`; a request admitted at step k gets its first token at the
    end of step k and its last (finishing) at the end of step k + output_tokens - 1. The
    running requests sit in a heap by that last step, so a step costs one float addition.
    """

    __slots__ = (
        "_admissions",
        "_alpha_s",
        "_beta_s",
        "_busy",
        "_end",
        "_max_batch",
        "_next",
        "_next_d",
        "_next_step",
        "_prefill_s",
        "_running",
        "_step",
        "_waiting",
    )

    def __init__(self, profile: ServingProfile) -> None:
        # the same conversions as ReplicaEngine, so durations are the same floats
        self._alpha_s = profile.alpha_ms / 1000.0
        self._beta_s = profile.beta_ms / 1000.0
        self._prefill_s = profile.prefill_ms_per_token / 1000.0
        self._max_batch = profile.max_batch_size
        self._waiting: deque[Request] = deque()
        self._running: list[tuple[int, int, Request]] = []  # (last step, admission no., req)
        self._admissions = 0
        self._step = -1  # the step in progress (or the last one run)
        self._end = 0.0  # when step `_step` ends
        self._next_d = 0.0  # duration of the steps after it while the batch stays
        self._busy = False
        self._next: float | None = None
        self._next_step = -1

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def next_event(self) -> float | None:
        return self._next

    def submit(self, request: Request, now: float) -> None:
        self._waiting.append(request)
        if not self._busy:
            self._start(now)
            return
        # catch up with the step in progress at `now` (no change to the batch before it:
        # those would have been events); a step ending exactly now has ended
        end, d, step = self._end, self._next_d, self._step
        while end <= now:
            end += d
            step += 1
        self._end, self._step = end, step
        if len(self._running) < self._max_batch:
            self._next_step, self._next = step, end  # it joins when this step ends

    def on_event(self, now: float) -> list[Request]:
        end, d, step = self._end, self._next_d, self._step
        while step < self._next_step:
            end += d
            step += 1
        self._end, self._step = end, step
        finished: list[Request] = []
        running = self._running
        while running and running[0][0] == step:
            request = heapq.heappop(running)[2]
            request.tokens_out = request.output_tokens
            request.last_token = end
            request.finished = end
            finished.append(request)
        self._start(end)
        return finished

    def drain_waiting(self) -> list[Request]:
        drained = list(self._waiting)
        self._waiting.clear()
        if self._busy:
            self._schedule()
        return drained

    def kv_cache_usage(self) -> float:
        return len(self._running) / self._max_batch

    def _start(self, now: float) -> None:
        running = self._running
        waiting = self._waiting
        room = self._max_batch - len(running)
        prefill_tokens = 0
        admitted: list[Request] = []
        while room > 0 and waiting:
            request = waiting.popleft()
            request.admitted = now
            prefill_tokens += request.prompt_tokens
            admitted.append(request)
            room -= 1
        batch = len(running) + len(admitted)
        if batch == 0:
            self._busy = False
            self._next = None
            return
        duration = self._alpha_s + self._beta_s * batch + self._prefill_s * prefill_tokens
        end = now + duration
        step = self._step + 1
        for request in admitted:
            request.first_token = end
            heapq.heappush(running, (step + request.output_tokens - 1, self._admissions, request))
            self._admissions += 1
        self._step, self._end, self._busy = step, end, True
        self._next_d = self._alpha_s + self._beta_s * batch + self._prefill_s * 0
        self._schedule()

    def _schedule(self) -> None:
        """The next change of the batch: admission at this step's end, or the next finish."""
        if self._waiting and len(self._running) < self._max_batch:
            self._next_step, self._next = self._step, self._end
            return
        last = self._running[0][0]
        t, d = self._end, self._next_d
        for _ in range(last - self._step):
            t += d
        self._next_step, self._next = last, t


@dataclass(slots=True)
class Counters:
    """Cumulative vLLM counters of the whole Deployment (what `sum(...)` in PromQL sees)."""

    arrivals: int = 0
    success: int = 0
    prompt_tokens: float = 0.0
    output_tokens: float = 0.0
    itl_sum_s: float = 0.0  # inter-token gaps, summed
    itl_count: int = 0  # inter-token gaps, counted
    queue_sum_s: float = 0.0
    ttft_sum_s: float = 0.0

    def copy(self) -> Counters:
        return replace(self)


@dataclass(slots=True, eq=False)
class Pod:
    """One replica of the Deployment and its GPU."""

    name: str
    batcher: Batcher
    created: float
    state: PodState = "starting"
    ended: float | None = None
    version: int = 0  # bumped when its pending step event is replaced
    scheduled: float | None = None

    @property
    def outstanding(self) -> int:
        return self.batcher.running + self.batcher.waiting


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    profile: ServingProfile
    startup_delay_s: float = 60.0
    initial_replicas: int = 1  # ready at t = 0
    stepwise: bool = False  # one event per decode step (ReplicaEngine), for checking

    def __post_init__(self) -> None:
        if not (math.isfinite(self.startup_delay_s) and self.startup_delay_s >= 0):
            raise ValueError(f"startup_delay_s must be >= 0, got {self.startup_delay_s}")
        if self.initial_replicas < 0:
            raise ValueError("initial_replicas must be >= 0")


@dataclass(frozen=True, slots=True)
class ScaleRecord:
    at: float
    replicas: int  # spec: starting + ready
    ready: int


class SimCluster:
    """The Deployment and its traffic; `run_until` moves virtual time, `scale` acts on it."""

    def __init__(self, settings: ClusterSettings, workload: Workload) -> None:
        self.settings = settings
        self.workload = workload
        self.now = 0.0
        self.counters = Counters()
        self.finished: list[Request] = []
        self.rejected: list[float] = []  # arrival times of requests with no ready replica
        self.history: list[ScaleRecord] = []
        self._pods: list[Pod] = []  # not gone, by creation
        self._ready: list[Pod] = []
        self._heap: list[tuple[float, int, int, Pod, int]] = []
        self._seq = 0
        self._next_arrival = 0
        self._rotation = 0
        self._created = 0
        self._ended_seconds = 0.0
        for _ in range(settings.initial_replicas):
            self._new_pod().state = "ready"
        self._ready = list(self._pods)
        self._record()

    # ------------------------------------------------------------------ what policies read

    @property
    def replicas(self) -> int:
        """The Deployment's spec.replicas: pods starting or ready."""
        return sum(1 for p in self._pods if p.state != "terminating")

    @property
    def ready_replicas(self) -> int:
        return len(self._ready)

    def gauges(self) -> tuple[int, int, float | None]:
        """(running, waiting, mean KV-cache usage) over the pods that serve."""
        serving = [p for p in self._pods if p.state in ("ready", "terminating")]
        running = sum(p.batcher.running for p in serving)
        waiting = sum(p.batcher.waiting for p in serving)
        kv = sum(p.batcher.kv_cache_usage() for p in serving) / len(serving) if serving else None
        return running, waiting, kv

    def replica_seconds(self) -> float:
        """GPU-holding time of every pod so far (starting pods included)."""
        live = sum(self.now - p.created for p in self._pods)
        return self._ended_seconds + live

    # ------------------------------------------------------------------ time

    def run_until(self, until: float) -> None:
        """Process every event at or before `until` (steps, then readiness, then arrivals
        on ties), and stand at `until`."""
        if until < self.now:
            raise ValueError(f"cannot go back from {self.now} to {until}")
        heap = self._heap
        arrivals = self.workload.arrivals
        count = len(arrivals)
        while True:
            while heap and heap[0][4] != heap[0][3].version:
                heapq.heappop(heap)  # replaced or cancelled
            next_arrival = arrivals[self._next_arrival] if self._next_arrival < count else math.inf
            if heap and heap[0][0] <= next_arrival:
                at = heap[0][0]
                if at > until:
                    break
                _, kind, _, pod, _ = heapq.heappop(heap)
                self.now = at
                if kind == _STEP:
                    self._step(pod, at)
                else:
                    self._become_ready(pod)
            else:
                if next_arrival > until:
                    break
                self.now = next_arrival
                self._arrive(next_arrival)
        self.now = until

    def scale(self, replicas: int) -> None:
        """Set spec.replicas now: start new pods, or remove the newest ones."""
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        live = [p for p in self._pods if p.state in ("starting", "ready")]
        if len(live) == replicas:
            return
        while len(live) < replicas:
            pod = self._new_pod()
            live.append(pod)
            if self.settings.startup_delay_s == 0:
                self._become_ready(pod, record=False)
            else:
                self._push(self.now + self.settings.startup_delay_s, _READY, pod)
        orphans: list[Request] = []
        while len(live) > replicas:
            pod = live.pop()
            if pod.state == "starting":
                pod.version += 1  # its readiness event no longer applies
                self._end_pod(pod)
                continue
            pod.state = "terminating"
            self._ready.remove(pod)
            orphans.extend(pod.batcher.drain_waiting())
            self._reschedule(pod)
            if pod.outstanding == 0:
                self._end_pod(pod)
        for request in orphans:
            self._route(request, self.now)
        self._record()

    # ------------------------------------------------------------------ events

    def _new_pod(self) -> Pod:
        profile = self.settings.profile
        batcher: Batcher = (
            StepwiseBatcher(profile) if self.settings.stepwise else FastBatcher(profile)
        )
        pod = Pod(name=f"vllm-{self._created}", batcher=batcher, created=self.now)
        self._created += 1
        self._pods.append(pod)
        return pod

    def _push(self, at: float, kind: int, pod: Pod) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, kind, self._seq, pod, pod.version))

    def _reschedule(self, pod: Pod) -> None:
        at = pod.batcher.next_event
        if at == pod.scheduled:
            return
        pod.version += 1
        pod.scheduled = at
        if at is not None:
            self._push(at, _STEP, pod)

    def _become_ready(self, pod: Pod, *, record: bool = True) -> None:
        pod.state = "ready"
        self._ready = [p for p in self._pods if p.state == "ready"]
        if record:
            self._record()

    def _arrive(self, at: float) -> None:
        i = self._next_arrival
        self._next_arrival = i + 1
        self.counters.arrivals += 1
        workload = self.workload
        request = Request(
            arrival=at,
            prompt_tokens=workload.prompt_tokens[i],
            output_tokens=workload.output_tokens[i],
        )
        self._route(request, at)

    def _route(self, request: Request, now: float) -> None:
        """The ready pod with the fewest outstanding requests, ties in rotation."""
        ready = self._ready
        n = len(ready)
        if n == 0:
            self.rejected.append(request.arrival)
            return
        self._rotation = (self._rotation + 1) % n
        best = ready[self._rotation]
        best_out = best.outstanding
        for i in range(1, n):
            candidate = ready[(self._rotation + i) % n]
            out = candidate.outstanding
            if out < best_out:
                best, best_out = candidate, out
        best.batcher.submit(request, now)
        self._reschedule(best)

    def _step(self, pod: Pod, at: float) -> None:
        pod.scheduled = None
        done = pod.batcher.on_event(at)
        if done:
            c = self.counters
            for request in done:
                assert request.first_token is not None and request.admitted is not None
                n = request.tokens_out
                c.success += 1
                c.prompt_tokens += request.prompt_tokens
                c.output_tokens += n
                c.itl_sum_s += at - request.first_token
                c.itl_count += n - 1
                c.queue_sum_s += request.admitted - request.arrival
                c.ttft_sum_s += request.first_token - request.arrival
            self.finished.extend(done)
        self._reschedule(pod)
        if pod.state == "terminating" and pod.outstanding == 0:
            self._end_pod(pod)

    def _end_pod(self, pod: Pod) -> None:
        pod.state = "gone"
        pod.ended = self.now
        self._ended_seconds += self.now - pod.created
        self._pods.remove(pod)

    def _record(self) -> None:
        """Note (spec, ready) as it stands at the end of this instant."""
        history = self.history
        if history and history[-1].at == self.now:
            history.pop()
        replicas, ready = self.replicas, len(self._ready)
        if not history or (history[-1].replicas, history[-1].ready) != (replicas, ready):
            history.append(ScaleRecord(self.now, replicas, ready))

"""A Deployment of vLLM replicas in virtual time: a discrete-event simulation, no HTTP.

What it models, and where each rule comes from:

- each replica serves with the emulator's physics (`adapter.emulator.batching`): decode
  steps back to back while it has work, FIFO admission up to the batch limit and the
  KV-cache room, step time `alpha + beta * batch`, preemption (recompute) when the
  running requests outgrow the KV cache;
- a new replica holds its GPU from creation and takes `startup_delay_s` (image pull,
  model load) before it is ready and receives work;
- requests go to the ready replica with the fewest outstanding requests, ties in
  rotation (the emulator's gateway rule); with no ready replica a request is refused.
  With `members`, several Deployments of the model (say H100 and A100 pods, each with
  its own profile) serve behind the one gateway, which routes over all their ready pods
  by the same rule, whatever the Deployment: as llm-d's endpoint picker balances one
  InferencePool by load, not by cost. Deployment 0 is `profile`'s; `scale`, `replicas`,
  `history` and `replica_seconds` take the Deployment's index (default 0).
  With `hold_s`, the gateway is an llm-d router with flow control: it holds requests, in
  arrival order, while the pool is saturated and dispatches them as it stops being so,
  refusing one held for `hold_s` (checked as requests are dispatched, and at the end of
  the run). The saturation is the router's utilization detector with its defaults: a
  pod's is max(waiting / 5, KV-cache usage / 0.8), the pool's their mean over the ready
  pods (1 with none), saturated at >= 1; a request goes to the pod with the fewest
  outstanding requests among those under both limits (among all if none is)
  (llm-d/llm-d-inference-scheduler pkg/epp/framework/plugins/flowcontrol/
  saturationdetector/utilization/config.go and detector.go @
  520af47896e5f06e43d09aca281a1149187b0ffd; metrics are read at the instant, not
  through its 200 ms staleness bound);
- scaling down removes the newest replica first (a starting one goes at once). A removed
  replica is a pod being deleted:

  - it leaves the gateway at once: no new requests (the endpoint is removed as the pod
    gets SIGTERM);
  - its running requests keep running; those not finished when the termination grace
    period ends (`termination_grace_s`, Kubernetes' default terminationGracePeriodSeconds
    of 30 s) are killed then (SIGKILL): they fail;
  - its waiting requests (not admitted yet, or preempted back to the queue) fail at once
    with an error the client sees, and the client retries each one once through the
    gateway: it arrives anew at a ready replica (or is refused if there is none). A
    retry that fails the same way again is not retried: it fails;
  - it holds its GPU until it is gone: its last request finished or killed.

  Why this rule. vLLM's API server, since the shutdown timeout of vllm-project/vllm PR
  #34730 (re-applied in #36666, 2026), rejects new requests on SIGTERM and, with the
  default `--shutdown-timeout 0`, aborts every in-flight request at once (before it,
  SIGTERM ended the process at once); with `--shutdown-timeout S` it lets in-flight
  requests finish for up to S seconds, then aborts them (the abort is reported as an
  error, HTTP 500, "the request can/should be retried" in the PR's review). A request
  still in vLLM's queue has no token yet and is the one a client can safely resend: the
  OpenAI Python SDK (openai-python `_base_client.py`, `_constants.py`) retries connection
  errors, 408, 409, 429 and >= 500 by itself, `DEFAULT_MAX_RETRIES = 2` times, after
  0.5 s x 2^n (at most 8 s) with jitter. The model here sits between vLLM's two modes on
  purpose: running requests get the grace period (as with `--shutdown-timeout` >= the
  grace), queued ones fail at once, as an abort of unscheduled requests does, and are
  retried once and at once (the SDK would back off ~0.5 s first and might try a second
  time). What matters for the comparison is that a scale-down is not free: every killed
  or retried request counts as a miss of both SLOs in the report;
- the counters vLLM exports (success, tokens, ITL, TTFT, queue time; observed when a
  request finishes, as the emulator does) are kept per Deployment, so a metrics source
  can rate them over any window like Prometheus or the pod scraper would. Beside them,
  for recipes that read them: the TTFT and inter-token-latency histograms with vLLM's
  buckets (a step's tokens observed as the step starts, when they are known; vLLM
  observes them as it ends, one step later: tens of milliseconds, nothing a scrape
  every 15 s tells apart), preemptions, the KV-cache usage per pod,
  `vllm:cache_config_info` (blocks, block size) and the gateway's gauges;
- the gateway's (llm-d EPP's) own latency histograms, with the EPP's buckets
  (`adapter.sim.peers`): per request, observed when its stream ends as the EPP does
  (llm-d/llm-d-router pkg/epp/handlers/response.go @
  ebab687927f5331c1b39defcb579a07951bce56c), the TTFT from its arrival at the gateway and,
  for more than one output token, the streaming TPOT (e2e - TTFT) / (output tokens - 1).
  One observation per finished request, nothing per step.

Simulating every decode step (about 125 per second per replica) is exact but slow in
Python. `FastBatcher` gives the same schedule, bit for bit, by acting only when the batch
changes (a request joins or finishes): in between every step lasts the same time, so
step ends are a running sum and no request needs touching. When the KV cache could fill
before the next change, it acts at every step, as `ReplicaEngine` does, until it cannot.
`stepwise=True` drives `ReplicaEngine` itself, one event per step; the tests check the
two agree exactly.
"""

from __future__ import annotations

import heapq
import math
import operator
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from adapter.emulator.batching import ReplicaEngine, Request, ServingProfile
from adapter.sim.peers import EPP_TPOT_BUCKETS, EPP_TTFT_BUCKETS
from adapter.sim.traces import Workload
from adapter.vllm_metrics import ITL_BUCKETS_S as ITL_BUCKETS_S  # re-exported
from adapter.vllm_metrics import TTFT_BUCKETS_S as TTFT_BUCKETS_S  # re-exported

PodState = Literal["starting", "ready", "terminating", "gone"]

# event priorities at equal times: steps, then kills, then readiness, then arrivals (a
# request finishing exactly at the grace period's end finishes)
_STEP, _KILL, _READY = 0, 1, 2

DEFAULT_TERMINATION_GRACE_S = 30.0  # Kubernetes' terminationGracePeriodSeconds default


class Histogram:
    """A Prometheus histogram being observed: per-bucket counts (`le`, inclusive)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        """`times` observations of `value`."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times
        self.count += times

    def snapshot(self) -> HistogramValues:
        cumulative: list[int] = []
        total = 0
        for n in self.counts:
            total += n
            cumulative.append(total)
        return HistogramValues(
            le=(*self.bounds, math.inf), buckets=tuple(cumulative), sum=self.sum, count=self.count
        )


@dataclass(frozen=True, slots=True)
class HistogramValues:
    """A histogram as a scrape shows it: cumulative `_bucket{le}` counts, `_sum`, `_count`."""

    le: tuple[float, ...]  # upper bounds, +Inf last
    buckets: tuple[int, ...]  # cumulative counts, one per bound
    sum: float
    count: int


@dataclass(slots=True)
class EngineStats:
    """What the replicas observe as their steps start, summed over the Deployment.

    The batchers write it (every pod of a Deployment shares one): the TTFT of every first
    token, every inter-token gap (a step's duration for the requests already running in
    it; the whole time since the previous token for a request readmitted after a
    preemption), and the preemptions.
    """

    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS_S))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS_S))
    preemptions: int = 0


@dataclass(slots=True)
class GatewayStats:
    """The EPP's request latency histograms (`llm_d_epp_request_ttft_seconds`,
    `llm_d_epp_request_streaming_tpot_seconds`), with its bucket bounds."""

    ttft: Histogram = field(default_factory=lambda: Histogram(EPP_TTFT_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram(EPP_TPOT_BUCKETS))


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

    def advance(self, now: float) -> None:
        """Bring the state up to `now` (steps started by then observed) before a reading."""
        ...

    def drain_waiting(self) -> list[Request]: ...

    def drain_all(self, now: float) -> list[Request]:
        """Remove every request (running ones first, by admission) and go idle: killed."""
        ...

    def kv_cache_usage(self) -> float:
        """Blocks the running requests hold / the cache's blocks, as of the last `advance`
        or event."""
        ...


class StepwiseBatcher:
    """`ReplicaEngine` driven one step at a time, as the emulator drives it in wall time."""

    __slots__ = ("_end", "_preemptions", "_stats", "engine")

    def __init__(self, profile: ServingProfile, stats: EngineStats | None = None) -> None:
        self.engine = ReplicaEngine(profile)
        self._stats = stats if stats is not None else EngineStats()
        self._end: float | None = None
        self._preemptions = 0

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
            self._begin(now)

    def on_event(self, now: float) -> list[Request]:
        outcome = self.engine.finish_step()
        self._begin(outcome.end)
        return list(outcome.finished)

    def advance(self, now: float) -> None:
        """Nothing to do: every step is an event, observed as it starts."""

    def drain_waiting(self) -> list[Request]:
        return self.engine.drain_waiting()

    def drain_all(self, now: float) -> list[Request]:
        self._end = None
        return self.engine.abort_all()

    def kv_cache_usage(self) -> float:
        return self.engine.kv_cache_usage()

    def _begin(self, now: float) -> None:
        """Start the next step and observe its tokens: a gap of its duration for each
        request already running, the TTFT of each new one, the gap since its last token
        for each one readmitted after a preemption."""
        engine = self.engine
        duration = engine.start_step(now)
        stats = self._stats
        if engine.preemptions != self._preemptions:
            stats.preemptions += engine.preemptions - self._preemptions
            self._preemptions = engine.preemptions
        if duration is None:
            self._end = None
            return
        end = self._end = now + duration
        joining = engine.joining()
        decoders = engine.running - len(joining)
        if decoders:
            stats.itl.observe(duration, decoders)
        for request in joining:
            if request.first_token is not None:
                assert request.last_token is not None
                stats.itl.observe(end - request.last_token)
        for request in joining:
            if request.first_token is None:
                stats.ttft.observe(end - request.arrival)


class FastBatcher:
    """`ReplicaEngine`'s schedule computed only where the batch changes.

    Same rules and the same float arithmetic as `ReplicaEngine.start_step` /
    `finish_step`: a step's duration is `alpha + beta * batch + prefill * tokens
    prefilled`, the next starts where it ended. While nobody joins or leaves the batch,
    every step lasts `_next_d`; a request admitted at step k with g tokens already
    generated (0, or what it had when preempted) gets a token at the end of each step from
    k on and its last (finishing) at the end of step k + output_tokens - g - 1. The
    running requests sit in a heap by that last step, so a step costs one float addition.

    KV cache. A request holds blocks for its prompt and its tokens so far, so until the
    batch changes the blocks held only grow, and each request's largest holding is at
    its last step (`_peak` sums them). While that sum fits the cache nothing can be
    preempted before the next change, and a waiting request refused for want of room
    cannot fit before someone leaves: the event-per-change schedule stays exact. When the
    sum does not fit, every step is an event and runs `ReplicaEngine`'s rules (blocks held
    counted, newest admitted preempted), until it fits again.

    Histograms: a step that admits is observed as it starts (`_start`); the steps
    between two changes, all alike, at the later event (or an `advance`), so that a
    reading counts the steps started by then, as the stepwise engine does.
    """

    __slots__ = (
        "_admissions",
        "_alpha_s",
        "_beta_s",
        "_block_size",
        "_busy",
        "_capacity",
        "_counted",
        "_d_bucket",
        "_end",
        "_kv_blocked",
        "_max_batch",
        "_next",
        "_next_d",
        "_next_step",
        "_peak",
        "_prefill_s",
        "_running",
        "_stats",
        "_step",
        "_waiting",
    )

    def __init__(self, profile: ServingProfile, stats: EngineStats | None = None) -> None:
        # the same conversions as ReplicaEngine, so durations are the same floats
        self._alpha_s = profile.alpha_ms / 1000.0
        self._beta_s = profile.beta_ms / 1000.0
        self._prefill_s = profile.prefill_ms_per_token / 1000.0
        self._max_batch = profile.max_batch_size
        self._capacity = profile.gpu_blocks
        self._block_size = profile.block_size
        self._stats = stats if stats is not None else EngineStats()
        self._waiting: deque[Request] = deque()
        self._running: list[tuple[int, int, Request]] = []  # (last step, admission no., req)
        self._admissions = 0
        self._step = -1  # the step in progress (or the last one run)
        self._end = 0.0  # when step `_step` ends
        self._next_d = 0.0  # duration of the steps after it while the batch stays
        self._d_bucket = 0  # its bucket in the inter-token latency histogram
        self._busy = False
        self._next: float | None = None
        self._next_step = -1
        self._peak = 0  # blocks the running requests hold at their last steps, summed
        self._kv_blocked = False  # the queue's head did not fit the cache at the last try
        self._counted = -1  # the steps up to this one are in the histograms

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
        """Queue `request` (the cluster checked up front that the cache can hold it)."""
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
        if step != self._step:
            self._end, self._step = end, step
            counted = self._counted
            if step > counted:  # `_count(step)`, inlined
                self._counted = step
                times = (step - counted) * len(self._running)
                itl = self._stats.itl
                itl.counts[self._d_bucket] += times
                itl.sum += d * times
                itl.count += times
        if len(self._running) < self._max_batch and not self._kv_blocked:
            self._next_step, self._next = self._step, self._end  # it joins when this step ends

    def advance(self, now: float) -> None:
        if not self._busy:
            return
        end, d, step = self._end, self._next_d, self._step
        while end <= now:
            end += d
            step += 1
        self._end, self._step = end, step
        self._count(step)

    def on_event(self, now: float) -> list[Request]:
        end, d, step = self._end, self._next_d, self._step
        while step < self._next_step:
            end += d
            step += 1
        self._end, self._step = end, step
        running = self._running
        counted = self._counted
        if step > counted:  # `_count(step)`, inlined: the hot path
            self._counted = step
            times = (step - counted) * len(running)
            itl = self._stats.itl
            itl.counts[self._d_bucket] += times
            itl.sum += d * times
            itl.count += times
        finished: list[Request] = []
        block_size = self._block_size
        while running and running[0][0] == step:
            request = heapq.heappop(running)[2]
            n = request.output_tokens
            request.tokens_out = n
            request.last_token = end
            request.finished = end
            self._peak -= -(-(request.prompt_tokens + n - 1) // block_size)
            finished.append(request)
        self._start(end)
        return finished

    def drain_waiting(self) -> list[Request]:
        drained = list(self._waiting)
        self._waiting.clear()
        self._kv_blocked = False
        if self._busy:
            self._schedule()
        return drained

    def drain_all(self, now: float) -> list[Request]:
        self.advance(now)
        dropped = [r for _, _, r in sorted(self._running, key=lambda e: e[1])]
        dropped.extend(self._waiting)
        self._running.clear()
        self._waiting.clear()
        self._busy = False
        self._next = None
        self._peak = 0
        self._kv_blocked = False
        return dropped

    def kv_cache_usage(self) -> float:
        if not self._busy:
            return 0.0
        return self._held(self._step) / self._capacity

    def _count(self, upto: int) -> None:
        """Observe the steps (`_counted`, `upto`], all started and all alike: the batch
        has not changed since the last `_start`, which observed its step if it admitted
        requests. (Inlined in `on_event`, where most steps are counted.)"""
        counted = self._counted
        if upto > counted:
            self._counted = upto
            times = (upto - counted) * len(self._running)
            itl = self._stats.itl
            itl.counts[self._d_bucket] += times
            itl.sum += self._next_d * times
            itl.count += times

    def _start(self, now: float) -> None:
        running = self._running
        waiting = self._waiting
        step = self._step + 1
        used = -1  # blocks held at this step, when counted (the sum of peaks bounds it)
        preempted = False
        if self._peak > self._capacity:
            used = self._held(step)
            while used > self._capacity:
                used -= self._preempt(step, now)
                preempted = True
        decoders = len(running)
        fresh: list[Request] | None = None  # admitted by this step
        resumed: list[Request] | None = None  # readmitted by it after a preemption
        prefill_tokens = 0
        if waiting and decoders < self._max_batch and not preempted:
            fresh = []
            capacity = self._capacity
            block_size = self._block_size
            room = self._max_batch - decoders
            held = self._peak if used < 0 else used
            admissions = self._admissions
            blocked = False
            while room > 0 and waiting:
                request = waiting[0]
                # a preempted request recomputes its prompt and the tokens it generated
                tokens = request.prompt_tokens + request.tokens_out
                need = -(-tokens // block_size)
                if held + need + 1 > capacity:
                    if used < 0:  # the bound was not enough: count exactly (those
                        # admitted so far included: they are in `running`)
                        used = held = self._held(step)
                    if held + need + 1 > capacity:
                        blocked = True
                        break
                waiting.popleft()
                held += need
                prefill_tokens += tokens
                n = request.output_tokens
                last = step + n - request.tokens_out - 1
                heapq.heappush(running, (last, admissions, request))
                admissions += 1
                self._peak += -(-(request.prompt_tokens + n - 1) // block_size)
                if request.first_token is None:
                    request.admitted = now
                    fresh.append(request)
                elif resumed is None:
                    resumed = [request]
                else:
                    resumed.append(request)
                room -= 1
            self._admissions = admissions
            self._kv_blocked = blocked
        else:
            self._kv_blocked = False
        batch = len(running)
        if batch == 0:
            self._busy = False
            self._next = None
            self._counted = self._step
            return
        duration = self._alpha_s + self._beta_s * batch + self._prefill_s * prefill_tokens
        end = now + duration
        if fresh or resumed:
            self._observe_admitting(decoders, duration, end, fresh or [], resumed or [])
            self._counted = step
        self._step, self._end, self._busy = step, end, True
        d = self._alpha_s + self._beta_s * batch + self._prefill_s * 0
        if d != self._next_d:
            self._next_d = d
            self._d_bucket = bisect_left(self._stats.itl.bounds, d)
        self._schedule()

    def _observe_admitting(
        self,
        decoders: int,
        duration: float,
        end: float,
        fresh: list[Request],
        resumed: list[Request],
    ) -> None:
        """A step that admits requests, as it starts (the others, alike, when counted):
        a gap of its duration for each request already running, the gap since its last
        token for each readmitted one, the TTFT of each new one (whose first token it
        gives at its end)."""
        stats = self._stats
        itl = stats.itl
        if decoders:
            itl.observe(duration, decoders)
        for request in resumed:
            assert request.last_token is not None
            itl.observe(end - request.last_token)
        ttft = stats.ttft
        bounds, counts = ttft.bounds, ttft.counts
        for request in fresh:
            request.first_token = end
            value = end - request.arrival
            counts[bisect_left(bounds, value)] += 1
            ttft.sum += value
        ttft.count += len(fresh)

    def _held(self, step: int) -> int:
        """Blocks the running requests hold during `step`: prompt + tokens out before it
        (a request ending at step `last` has output - 1 - (last - step) then)."""
        block_size = self._block_size
        return sum(
            -(-(r.prompt_tokens + r.output_tokens - 1 - last + step) // block_size)
            for last, _, r in self._running
        )

    def _preempt(self, step: int, now: float) -> int:
        """Evict the newest admitted running request to the queue's front (recompute
        mode); returns the blocks it held at `step`."""
        running = self._running
        index = max(range(len(running)), key=lambda i: running[i][1])
        last, _, request = running[index]
        running[index] = running[-1]
        running.pop()
        heapq.heapify(running)
        n = request.output_tokens
        self._peak -= -(-(request.prompt_tokens + n - 1) // self._block_size)
        request.tokens_out = n - 1 - (last - step)
        request.last_token = now  # its latest token came at the end of the previous step
        self._waiting.appendleft(request)
        self._stats.preemptions += 1
        return -(-(request.prompt_tokens + request.tokens_out) // self._block_size)

    def _schedule(self) -> None:
        """The next change of the batch: admission at this step's end, every step while
        the cache could fill, or the next finish."""
        if (
            self._waiting and len(self._running) < self._max_batch and not self._kv_blocked
        ) or self._peak > self._capacity:
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

    arrivals: int = 0  # client requests that came to the gateway (retries not counted)
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
    deployment: int = 0  # which of the pool's Deployments it belongs to
    ended: float | None = None
    version: int = 0  # bumped when its pending step event is replaced
    scheduled: float | None = None

    @property
    def outstanding(self) -> int:
        return self.batcher.running + self.batcher.waiting


# the llm-d router's saturation detector defaults (see the module docstring)
FLOW_QUEUE_DEPTH = 5
FLOW_KV_UTILIZATION = 0.8


@dataclass(frozen=True, slots=True)
class PoolMember:
    """Another Deployment of the model behind the same gateway."""

    profile: ServingProfile
    initial_replicas: int = 0


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    profile: ServingProfile  # what the pods' GPUs really do (may differ from the VA's)
    startup_delay_s: float = 60.0
    initial_replicas: int = 1  # ready at t = 0
    stepwise: bool = False  # one event per decode step (ReplicaEngine), for checking
    termination_grace_s: float = DEFAULT_TERMINATION_GRACE_S
    # > 0: the gateway has flow control and holds a request up to this long while the
    # pool is saturated (no ready replica, or all of them past the detector's limits)
    hold_s: float = 0.0
    members: tuple[PoolMember, ...] = ()  # Deployments 1, 2, ... of the pool

    def __post_init__(self) -> None:
        if not (math.isfinite(self.startup_delay_s) and self.startup_delay_s >= 0):
            raise ValueError(f"startup_delay_s must be >= 0, got {self.startup_delay_s}")
        if self.initial_replicas < 0:
            raise ValueError("initial_replicas must be >= 0")
        if not (math.isfinite(self.termination_grace_s) and self.termination_grace_s >= 0):
            raise ValueError(f"termination_grace_s must be >= 0, got {self.termination_grace_s}")
        if not (math.isfinite(self.hold_s) and self.hold_s >= 0):
            raise ValueError(f"hold_s must be >= 0, got {self.hold_s}")
        if any(m.initial_replicas < 0 for m in self.members):
            raise ValueError("a member's initial_replicas must be >= 0")

    def profile_of(self, deployment: int) -> ServingProfile:
        return self.profile if deployment == 0 else self.members[deployment - 1].profile

    @property
    def deployments(self) -> int:
        return 1 + len(self.members)


@dataclass(frozen=True, slots=True)
class ScaleRecord:
    at: float
    replicas: int  # spec: starting + ready
    ready: int


@dataclass(frozen=True, slots=True)
class Killed:
    """A client request that failed for good when a pod went away."""

    arrival: float  # its first arrival at the gateway
    at: float  # when it failed


@dataclass(frozen=True, slots=True)
class PodGauges:
    """One serving pod's vLLM gauges."""

    name: str
    state: PodState
    running: int
    waiting: int
    kv_cache_usage: float  # vllm:kv_cache_usage_perc, 0..1


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The labels of `vllm:cache_config_info` the recipes read (the same on every pod)."""

    num_gpu_blocks: int
    block_size: int


@dataclass(frozen=True, slots=True)
class GatewayGauges:
    """The gateway's (EPP's) view of the pool.

    `queued`: requests held at the gateway for want of a ready replica (0 unless the
    cluster has `hold_s`: they are refused, `SimCluster.rejected`). `running`: requests the
    gateway has sent to the pool's pods and not seen finish (their running and waiting
    requests), as the inference extension's running-requests gauge counts them.
    """

    queued: int
    running: int


class SimCluster:
    """The Deployment and its traffic; `run_until` moves virtual time, `scale` acts on it."""

    def __init__(self, settings: ClusterSettings, workload: Workload) -> None:
        self.settings = settings
        self.workload = workload
        if len(workload):
            # every request must fit the pods' KV cache (vLLM refuses longer ones)
            sizes = list(map(operator.add, workload.prompt_tokens, workload.output_tokens))
            i = sizes.index(max(sizes))
            for d in range(settings.deployments):
                settings.profile_of(d).check_fits(
                    workload.prompt_tokens[i], workload.output_tokens[i]
                )
        self.now = 0.0
        self.counters = Counters()
        self.stats = EngineStats()  # shared by the pods' batchers
        self.gateway_stats = GatewayStats()  # the EPP's, in front of the pods
        self.finished: list[Request] = []
        self.rejected: list[float] = []  # first arrival of requests with no ready replica
        self.killed: list[Killed] = []
        self.retried: dict[Request, float] = {}  # a retry -> its client's first arrival
        # (spec, ready) over time, per Deployment; `history` is Deployment 0's
        self.histories: list[list[ScaleRecord]] = [[] for _ in range(settings.deployments)]
        self.history = self.histories[0]
        # with `hold_s`: requests held at the gateway now, and the first one held after
        # the gateway had none (each wake-up's first request: its TTFT is the wake-up's)
        self.held: deque[Request] = deque()
        self.held_ever: set[Request] = set()
        # with pool members: which Deployment's pod finished each request
        self.served_by: dict[Request, int] = {}
        self.wake_requests: list[Request] = []
        self._pods: list[Pod] = []  # not gone, by creation
        self._ready: list[Pod] = []
        self._heap: list[tuple[float, int, int, Pod, int]] = []
        self._seq = 0
        self._next_arrival = 0
        self._rotation = 0
        self._created = 0
        self._ended_seconds = [0.0] * settings.deployments
        initial = [settings.initial_replicas, *(m.initial_replicas for m in settings.members)]
        for deployment, count in enumerate(initial):
            for _ in range(count):
                self._new_pod(deployment).state = "ready"
        self._ready = list(self._pods)
        self._record()

    # ------------------------------------------------------------------ what policies read

    @property
    def replicas(self) -> int:
        """The Deployment's spec.replicas: pods starting or ready."""
        return self.replicas_of(0)

    @property
    def ready_replicas(self) -> int:
        return self.ready_of(0)

    def replicas_of(self, deployment: int) -> int:
        """Deployment `deployment`'s spec.replicas: its pods starting or ready."""
        return sum(1 for p in self._pods if p.deployment == deployment and p.state != "terminating")

    def ready_of(self, deployment: int) -> int:
        return sum(1 for p in self._ready if p.deployment == deployment)

    def gauges(self) -> tuple[int, int, float | None]:
        """(running, waiting, mean KV-cache usage) over the pods that serve."""
        serving = self._serving()
        running = sum(p.batcher.running for p in serving)
        waiting = sum(p.batcher.waiting for p in serving)
        kv = sum(p.batcher.kv_cache_usage() for p in serving) / len(serving) if serving else None
        return running, waiting, kv

    def pod_gauges(self) -> list[PodGauges]:
        """Each serving pod's gauges (ready and terminating pods, by creation)."""
        return [
            PodGauges(
                p.name, p.state, p.batcher.running, p.batcher.waiting, p.batcher.kv_cache_usage()
            )
            for p in self._serving()
        ]

    def cache_config(self) -> CacheConfig:
        profile = self.settings.profile
        return CacheConfig(num_gpu_blocks=profile.gpu_blocks, block_size=profile.block_size)

    def gateway_gauges(self) -> GatewayGauges:
        return GatewayGauges(queued=len(self.held), running=sum(p.outstanding for p in self._pods))

    def histograms(self) -> tuple[HistogramValues, HistogramValues]:
        """(TTFT, inter-token latency) of the Deployment: every token up to now."""
        for pod in self._pods:
            pod.batcher.advance(self.now)
        return self.stats.ttft.snapshot(), self.stats.itl.snapshot()

    def gateway_histograms(self) -> tuple[HistogramValues, HistogramValues]:
        """(TTFT, streaming TPOT) as the EPP observed them: every request finished so far."""
        return self.gateway_stats.ttft.snapshot(), self.gateway_stats.tpot.snapshot()

    @property
    def preemptions(self) -> int:
        """vllm:num_preemptions, summed over the Deployment."""
        return self.stats.preemptions

    def replica_seconds(self, deployment: int | None = None) -> float:
        """GPU-holding time of every pod so far (starting pods included), of one Deployment
        or (None) of the whole pool."""
        live = sum(
            self.now - p.created
            for p in self._pods
            if deployment is None or p.deployment == deployment
        )
        ended = self._ended_seconds
        return (sum(ended) if deployment is None else ended[deployment]) + live

    # ------------------------------------------------------------------ time

    def run_until(self, until: float) -> None:
        """Process every event at or before `until` (steps, then kills, then readiness,
        then arrivals on ties), and stand at `until`."""
        if until < self.now:
            raise ValueError(f"cannot go back from {self.now} to {until}")
        heap = self._heap
        arrivals = self.workload.arrivals
        count = len(arrivals)
        while True:
            # replaced or cancelled events; a kill is never replaced (it checks the pod)
            while heap and heap[0][4] != heap[0][3].version and heap[0][1] != _KILL:
                heapq.heappop(heap)
            next_arrival = arrivals[self._next_arrival] if self._next_arrival < count else math.inf
            if heap and heap[0][0] <= next_arrival:
                at = heap[0][0]
                if at > until:
                    break
                _, kind, _, pod, _ = heapq.heappop(heap)
                self.now = at
                if kind == _STEP:
                    self._step(pod, at)
                elif kind == _KILL:
                    self._kill(pod)
                else:
                    self._become_ready(pod)
            else:
                if next_arrival > until:
                    break
                self.now = next_arrival
                self._arrive(next_arrival)
        self.now = until
        if self._next_arrival >= count and not heap:
            self._expire_held()  # nothing will ever serve them now

    def scale(self, replicas: int, deployment: int = 0) -> None:
        """Set a Deployment's spec.replicas now: start new pods, or remove its newest."""
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        live = [
            p for p in self._pods if p.deployment == deployment and p.state in ("starting", "ready")
        ]
        if len(live) == replicas:
            return
        while len(live) < replicas:
            pod = self._new_pod(deployment)
            live.append(pod)
            if self.settings.startup_delay_s == 0:
                self._become_ready(pod, record=False)
            else:
                self._push(self.now + self.settings.startup_delay_s, _READY, pod)
        retries: list[Request] = []
        while len(live) > replicas:
            pod = live.pop()
            if pod.state == "starting":
                pod.version += 1  # its readiness event no longer applies
                self._end_pod(pod)
                continue
            self._terminate(pod, retries)
        for request in retries:  # after every removal: none goes to a pod on its way out
            self._route(request, self.now)
        self._record()

    # ------------------------------------------------------------------ events

    def _serving(self) -> list[Pod]:
        serving = [p for p in self._pods if p.state in ("ready", "terminating")]
        for pod in serving:
            pod.batcher.advance(self.now)
        return serving

    def _new_pod(self, deployment: int = 0) -> Pod:
        profile = self.settings.profile_of(deployment)
        batcher: Batcher = (
            StepwiseBatcher(profile, self.stats)
            if self.settings.stepwise
            else FastBatcher(profile, self.stats)
        )
        pod = Pod(
            name=f"vllm-{self._created}", batcher=batcher, created=self.now, deployment=deployment
        )
        self._created += 1
        self._pods.append(pod)
        return pod

    def _push(self, at: float, kind: int, pod: Pod) -> None:
        self._seq += 1
        version = -1 if kind == _KILL else pod.version
        heapq.heappush(self._heap, (at, kind, self._seq, pod, version))

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
        self._dispatch_held()

    def _dispatch_held(self) -> None:
        """Flow control: the held requests, oldest first, while the pool is not saturated."""
        self._expire_held()
        while self.held and not self._saturated():
            request = self.held.popleft()
            self._submit(self._pick(), request, self.now)
            self._expire_held()

    def _saturated(self) -> bool:
        """The router's pool saturation (mean over the ready pods) is >= 1."""
        ready = self._ready
        if not ready:
            return True
        total = 0.0
        for pod in ready:
            pod.batcher.advance(self.now)
            batcher = pod.batcher
            total += max(
                batcher.waiting / FLOW_QUEUE_DEPTH,
                batcher.kv_cache_usage() / FLOW_KV_UTILIZATION,
            )
        return total >= len(ready)

    def _expire_held(self) -> None:
        """Refuse the held requests that waited `hold_s` (the router's answer then)."""
        limit = self.settings.hold_s
        while self.held and self.now - self.held[0].arrival >= limit:
            request = self.held.popleft()
            self.rejected.append(self.retried.get(request, request.arrival))

    def _terminate(self, pod: Pod, retries: list[Request]) -> None:
        """SIGTERM: out of the gateway, queued requests fail (retried once), the running
        ones get the grace period."""
        pod.state = "terminating"
        self._ready.remove(pod)
        for request in pod.batcher.drain_waiting():
            retry = self._fail(request)
            if retry is not None:
                retries.append(retry)
        self._reschedule(pod)
        if pod.outstanding == 0:
            self._end_pod(pod)
        else:
            self._push(self.now + self.settings.termination_grace_s, _KILL, pod)

    def _fail(self, request: Request) -> Request | None:
        """A queued request failed: its client's retry, or None if that was the retry."""
        first = self.retried.get(request)
        if first is not None:
            self.killed.append(Killed(first, self.now))
            return None
        retry = Request(
            arrival=self.now,
            prompt_tokens=request.prompt_tokens,
            output_tokens=request.output_tokens,
        )
        self.retried[retry] = request.arrival
        return retry

    def _kill(self, pod: Pod) -> None:
        """The grace period is over: whatever the pod still holds fails with it."""
        if pod.state != "terminating":
            return  # it finished its requests in time
        for request in pod.batcher.drain_all(self.now):
            self.killed.append(Killed(self.retried.get(request, request.arrival), self.now))
        self._reschedule(pod)
        self._end_pod(pod)

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
        """The ready pod with the fewest outstanding requests, ties in rotation; with flow
        control, held while the pool is saturated or older requests are held."""
        if self.settings.hold_s > 0:
            if self.held or self._saturated():
                if not self._ready and not self.held:
                    self.wake_requests.append(request)
                self.held.append(request)
                self.held_ever.add(request)
                return
        elif not self._ready:
            self.rejected.append(self.retried.get(request, request.arrival))
            return
        self._submit(self._pick(), request, now)

    def _pick(self) -> Pod:
        """The ready pod with the fewest outstanding requests, ties in rotation; with flow
        control, among those under the detector's limits if any is."""
        ready = self._ready
        if self.settings.hold_s > 0:
            under = [
                p
                for p in ready
                if p.batcher.waiting < FLOW_QUEUE_DEPTH
                and p.batcher.kv_cache_usage() < FLOW_KV_UTILIZATION
            ]
            ready = under or ready
        n = len(ready)
        self._rotation = (self._rotation + 1) % n
        best = ready[self._rotation]
        best_out = best.outstanding
        for i in range(1, n):
            candidate = ready[(self._rotation + i) % n]
            out = candidate.outstanding
            if out < best_out:
                best, best_out = candidate, out
        return best

    def _submit(self, pod: Pod, request: Request, now: float) -> None:
        pod.batcher.submit(request, now)
        self._reschedule(pod)

    def _step(self, pod: Pod, at: float) -> None:
        pod.scheduled = None
        done = pod.batcher.on_event(at)
        if done:
            c = self.counters
            epp_ttft, epp_tpot = self.gateway_stats.ttft, self.gateway_stats.tpot
            for request in done:
                assert request.first_token is not None and request.admitted is not None
                n = request.tokens_out
                ttft = request.first_token - request.arrival
                decode = at - request.first_token
                c.success += 1
                c.prompt_tokens += request.prompt_tokens
                c.output_tokens += n
                c.itl_sum_s += decode
                c.itl_count += n - 1
                c.queue_sum_s += request.admitted - request.arrival
                c.ttft_sum_s += ttft
                # the EPP's view (a retry arrived anew at the gateway: its own arrival)
                epp_ttft.observe(ttft)
                if n > 1:
                    epp_tpot.observe(decode / (n - 1))
            self.finished.extend(done)
            if self.settings.members:
                self.served_by.update(dict.fromkeys(done, pod.deployment))
        self._reschedule(pod)
        if pod.state == "terminating" and pod.outstanding == 0:
            self._end_pod(pod)
        elif self.held and pod.state == "ready":
            self._dispatch_held()  # the pod admitted or finished requests

    def _end_pod(self, pod: Pod) -> None:
        pod.state = "gone"
        pod.ended = self.now
        self._ended_seconds[pod.deployment] += self.now - pod.created
        self._pods.remove(pod)

    def _record(self) -> None:
        """Note each Deployment's (spec, ready) as it stands at the end of this instant."""
        for deployment, history in enumerate(self.histories):
            if history and history[-1].at == self.now:
                history.pop()
            replicas, ready = self.replicas_of(deployment), self.ready_of(deployment)
            if not history or (history[-1].replicas, history[-1].ready) != (replicas, ready):
                history.append(ScaleRecord(self.now, replicas, ready))

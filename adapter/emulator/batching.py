"""Continuous batching of one vLLM replica, as a pure state machine the caller drives.

The model is the one the optimizer assumes (reference: ITL = alpha + beta * batch): a
replica runs decode steps back to back while it has work; a step produces one token for
every request in the running batch and lasts `alpha + beta * batch` milliseconds. A
request waits in a FIFO queue until the batch has room (`max_batch_size`, vLLM's
`max_num_seqs`), joins at the start of a step (that step also pays the prefill of the
newly admitted prompts, when `prefill_ms_per_token` > 0) and leaves at the end of the
step that gives it its last token.

No clock and no I/O: the HTTP emulator drives it in wall time and the simulator in
virtual time, so both see exactly the same serving behaviour.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServingProfile:
    """How fast one replica serves: a decode step takes `alpha_ms + beta_ms * batch`."""

    alpha_ms: float
    beta_ms: float
    max_batch_size: int
    prefill_ms_per_token: float = 0.0

    def __post_init__(self) -> None:
        if not self.alpha_ms > 0:
            raise ValueError(f"alpha_ms must be > 0, got {self.alpha_ms}")
        if not self.beta_ms >= 0:
            raise ValueError(f"beta_ms must be >= 0, got {self.beta_ms}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not self.prefill_ms_per_token >= 0:
            raise ValueError(f"prefill_ms_per_token must be >= 0, got {self.prefill_ms_per_token}")

    def itl_ms(self, batch: int) -> float:
        """The decode step time (one inter-token latency) at a given batch size."""
        return self.alpha_ms + self.beta_ms * batch


@dataclass(slots=True, eq=False)
class Request:
    """One generation request and its life cycle, on the caller's clock (seconds).

    Identity equality (eq=False): two requests with the same numbers are still two
    requests, and the engine keeps them in lists and queues.
    """

    arrival: float
    prompt_tokens: int
    output_tokens: int
    admitted: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    tokens_out: int = 0
    finished: float | None = None

    def __post_init__(self) -> None:
        if self.output_tokens < 1:
            raise ValueError(f"output_tokens must be >= 1, got {self.output_tokens}")
        if self.prompt_tokens < 0:
            raise ValueError(f"prompt_tokens must be >= 0, got {self.prompt_tokens}")

    @property
    def queue_time(self) -> float:
        """Seconds between arrival and admission into the running batch."""
        if self.admitted is None:
            raise ValueError("request not admitted yet")
        return self.admitted - self.arrival

    @property
    def ttft(self) -> float:
        """Time to first token counted from arrival (queueing included), as vLLM does."""
        if self.first_token is None:
            raise ValueError("request has no token yet")
        return self.first_token - self.arrival

    @property
    def itl_mean(self) -> float:
        """Mean gap between consecutive tokens so far; 0 for a single token."""
        if self.first_token is None or self.last_token is None:
            raise ValueError("request has no token yet")
        if self.tokens_out <= 1:
            return 0.0
        return (self.last_token - self.first_token) / (self.tokens_out - 1)

    @property
    def e2e(self) -> float:
        """Seconds from arrival to the last token."""
        if self.finished is None:
            raise ValueError("request not finished yet")
        return self.finished - self.arrival


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one decode step did: when it ended and who started or finished in it.

    `decoded` requests got a token that was not their first (every request of the batch
    but `started`), each `token_gap` seconds after its previous one: the inter-token
    latency vLLM observes at every step (0.0 when `decoded` is 0).
    """

    end: float
    batch: int
    started: tuple[Request, ...]
    finished: tuple[Request, ...]
    decoded: int = 0
    token_gap: float = 0.0


class ReplicaEngine:
    """Continuous batching of one vLLM replica, pure (no clock, no I/O): the caller drives time.

    Drive it as: `duration = start_step(now)`; if not None, at `now + duration` call
    `finish_step()`; repeat while not `idle`. Requests may be submitted at any time;
    they join the batch at the next `start_step`, as in vLLM's scheduler.
    """

    __slots__ = (
        "_admitted_from",
        "_alpha_s",
        "_beta_s",
        "_last_end",
        "_max_batch",
        "_prefill_s",
        "_running",
        "_step_end",
        "_waiting",
        "profile",
    )

    def __init__(self, profile: ServingProfile) -> None:
        self.profile = profile
        self._alpha_s = profile.alpha_ms / 1000.0
        self._beta_s = profile.beta_ms / 1000.0
        self._prefill_s = profile.prefill_ms_per_token / 1000.0
        self._max_batch = profile.max_batch_size
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []
        self._step_end: float | None = None
        # a running request got its previous token at the end of the previous step
        self._last_end: float | None = None
        self._admitted_from = 0  # index in _running of the requests admitted by this step

    def submit(self, request: Request) -> None:
        """Queue a request (FIFO); it joins the batch at the next step with room."""
        self._waiting.append(request)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def idle(self) -> bool:
        """Nothing running and nothing waiting: no step to run."""
        return not self._running and not self._waiting

    @property
    def in_step(self) -> bool:
        """A step was started and not finished yet."""
        return self._step_end is not None

    def start_step(self, now: float) -> float | None:
        """Admit waiting requests (FIFO) up to the batch limit and begin a step at `now`.

        Only requests that arrived by `now` are admitted: a real-time driver running a
        little behind its timeline must not let a later arrival into an earlier step.
        Returns the step's duration in seconds, or None (and starts nothing) when
        nothing can run yet.
        """
        if self._step_end is not None:
            raise RuntimeError("a step is already in progress")
        running = self._running
        waiting = self._waiting
        self._admitted_from = len(running)
        prefill_tokens = 0
        room = self._max_batch - len(running)
        while room > 0 and waiting and waiting[0].arrival <= now:
            request = waiting.popleft()
            request.admitted = now
            prefill_tokens += request.prompt_tokens
            running.append(request)
            room -= 1
        if not running:
            return None
        batch = len(running)
        duration = self._alpha_s + self._beta_s * batch + self._prefill_s * prefill_tokens
        self._step_end = now + duration
        return duration

    def finish_step(self) -> StepOutcome:
        """End the current step: every running request gets one token at the step's end.

        Requests reaching their `output_tokens` leave the batch (`finished` = end).
        """
        end = self._step_end
        if end is None:
            raise RuntimeError("no step in progress")
        self._step_end = None
        running = self._running
        batch = len(running)
        done = 0
        for request in running:
            n = request.tokens_out + 1
            request.tokens_out = n
            request.last_token = end
            if n >= request.output_tokens:
                request.finished = end
                done += 1
        started = tuple(running[self._admitted_from :])
        for request in started:
            request.first_token = end
        decoded = batch - len(started)
        last_end, self._last_end = self._last_end, end
        gap = end - last_end if decoded and last_end is not None else 0.0
        if done:
            finished = tuple(r for r in running if r.finished is not None)
            running[:] = [r for r in running if r.finished is None]
        else:
            finished = ()
        return StepOutcome(
            end=end,
            batch=batch,
            started=started,
            finished=finished,
            decoded=decoded,
            token_gap=gap,
        )

    def cancel(self, request: Request) -> bool:
        """Drop a request that is waiting or running (its client went away), as vLLM aborts.

        A request cancelled during a step gets no token from it; the step keeps the
        duration it started with. Returns False when the request is not here.
        """
        try:
            self._waiting.remove(request)
            return True
        except ValueError:
            pass
        try:
            index = self._running.index(request)
        except ValueError:
            return False
        del self._running[index]
        if index < self._admitted_from:
            self._admitted_from -= 1
        return True

    def drain_waiting(self) -> list[Request]:
        """Remove and return the waiting queue, oldest first (the replica is going away)."""
        drained = list(self._waiting)
        self._waiting.clear()
        return drained

    def kv_cache_usage(self) -> float:
        """KV-cache usage as a 0..1 ratio, approximated as running / max_batch_size.

        Simplification: real vLLM counts KV blocks (prompt + generated tokens); here every
        running sequence is taken to use an equal share of a cache sized for
        `max_batch_size` sequences, which is what the batch limit stands for.
        """
        return len(self._running) / self._max_batch

"""Continuous batching of one vLLM replica, as a pure state machine the caller drives.

The model is the one the optimizer assumes (reference: ITL = alpha + beta * batch): a
replica runs decode steps back to back while it has work; a step produces one token for
every request in the running batch and lasts `alpha + beta * batch` milliseconds. A
request waits in a FIFO queue until the batch has room (`max_batch_size`, vLLM's
`max_num_seqs`) and the KV cache has room for its prompt, joins at the start of a step
(that step also pays the prefill of the newly admitted prompts, when
`prefill_ms_per_token` > 0) and leaves at the end of the step that gives it its last
token.

The KV cache is paged as vLLM's: `num_gpu_blocks` blocks of `block_size` tokens
(`vllm:cache_config_info`). A running request holds its prompt and the tokens it has
generated so far, rounded up to whole blocks. Admission (FIFO, the first that does not
fit stops it) needs the blocks of the request's prompt plus one block to spare. When the
running requests' growth does not fit at a step, the newest admitted one is preempted,
as vLLM V1 does in recompute mode: it goes back to the front of the waiting queue and
loses its KV; when readmitted its prefill recomputes the prompt and every token it had
generated, and it goes on from there. No admission in a step that preempted (V1's
scheduler neither). `vllm:num_preemptions` counts them. Unless the profile says
otherwise, the cache is `DEFAULT_NUM_GPU_BLOCKS`, more than a full batch of the
tutorial's requests ever holds, so the batch limit alone decides.

No clock and no I/O: the HTTP emulator drives it in wall time and the simulator in
virtual time, so both see exactly the same serving behaviour.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# The default KV cache, in blocks of 16 tokens: 27,000 blocks = 432,000 tokens. About what
# vLLM finds for the tutorial's Llama-3.1-8B on an 80 GB H100 at its default
# gpu_memory_utilization 0.9 (an estimate, not a measurement: 128 KiB of bf16 KV per token,
# 32 layers x 8 KV heads x 128 x 2 x 2 bytes, in the ~53 GiB left after 15 GiB of weights
# and the activations). A full batch of 512 tutorial requests (128 + 512 tokens, 40 blocks
# each) holds 20,480 blocks: the default workload never fills it.
DEFAULT_NUM_GPU_BLOCKS = 27_000
DEFAULT_BLOCK_SIZE = 16  # vLLM's default block size on CUDA


@dataclass(frozen=True, slots=True)
class ServingProfile:
    """How fast one replica serves: a decode step takes `alpha_ms + beta_ms * batch`.

    `num_gpu_blocks` x `block_size` is its KV cache in tokens (`kv_cache_tokens`); None
    takes `DEFAULT_NUM_GPU_BLOCKS`.
    """

    alpha_ms: float
    beta_ms: float
    max_batch_size: int
    prefill_ms_per_token: float = 0.0
    num_gpu_blocks: int | None = None
    block_size: int = DEFAULT_BLOCK_SIZE

    def __post_init__(self) -> None:
        if not self.alpha_ms > 0:
            raise ValueError(f"alpha_ms must be > 0, got {self.alpha_ms}")
        if not self.beta_ms >= 0:
            raise ValueError(f"beta_ms must be >= 0, got {self.beta_ms}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not self.prefill_ms_per_token >= 0:
            raise ValueError(f"prefill_ms_per_token must be >= 0, got {self.prefill_ms_per_token}")
        if self.num_gpu_blocks is not None and self.num_gpu_blocks < 2:
            raise ValueError(f"num_gpu_blocks must be >= 2, got {self.num_gpu_blocks}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")

    @property
    def gpu_blocks(self) -> int:
        """The KV cache in blocks (`num_gpu_blocks`, or the default)."""
        return self.num_gpu_blocks if self.num_gpu_blocks is not None else DEFAULT_NUM_GPU_BLOCKS

    @property
    def kv_cache_tokens(self) -> int:
        """The KV cache in tokens: blocks x block size."""
        return self.gpu_blocks * self.block_size

    def blocks(self, tokens: int) -> int:
        """KV blocks holding `tokens` tokens (paged: whole blocks)."""
        return -(-tokens // self.block_size)

    def check_fits(self, prompt_tokens: int, output_tokens: int) -> None:
        """ValueError if such a request could never be served: alone, at its longest, it
        would not leave the block admission keeps to spare (vLLM refuses a request over
        max_model_len, which is at most the cache, with a 400)."""
        if self.blocks(prompt_tokens + output_tokens) + 1 > self.gpu_blocks:
            raise ValueError(
                f"a request of {prompt_tokens} + {output_tokens} tokens does not fit a KV"
                f" cache of {self.kv_cache_tokens} tokens ({self.gpu_blocks} blocks of"
                f" {self.block_size})"
            )

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

    `started` got their first token. `decoded` requests got a token that was not their
    first, one step after their previous one (every request of the batch but `started`
    and `resumed`), each `token_gap` seconds after it: the inter-token latency vLLM
    observes at every step (0.0 when `decoded` is 0). `resumed` were readmitted after a
    preemption: their token came `resumed_gaps` seconds (in the same order) after their
    previous one, the time they spent evicted included.
    """

    end: float
    batch: int
    started: tuple[Request, ...]
    finished: tuple[Request, ...]
    decoded: int = 0
    token_gap: float = 0.0
    resumed: tuple[Request, ...] = ()
    resumed_gaps: tuple[float, ...] = ()


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
        "_blocks",
        "_last_end",
        "_max_batch",
        "_prefill_s",
        "_running",
        "_step_end",
        "_waiting",
        "preemptions",
        "profile",
    )

    def __init__(self, profile: ServingProfile) -> None:
        self.profile = profile
        self._alpha_s = profile.alpha_ms / 1000.0
        self._beta_s = profile.beta_ms / 1000.0
        self._prefill_s = profile.prefill_ms_per_token / 1000.0
        self._max_batch = profile.max_batch_size
        self._blocks = profile.gpu_blocks
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []  # in admission order
        self._step_end: float | None = None
        # a running request got its previous token at the end of the previous step
        self._last_end: float | None = None
        self._admitted_from = 0  # index in _running of the requests admitted by this step
        self.preemptions = 0  # vllm:num_preemptions

    def submit(self, request: Request) -> None:
        """Queue a request (FIFO); it joins the batch at the next step with room.

        ValueError if the KV cache could never hold it (`ServingProfile.check_fits`)."""
        self.profile.check_fits(request.prompt_tokens, request.output_tokens)
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

    def kv_blocks(self) -> int:
        """KV blocks the running requests hold: prompt + tokens generated so far each."""
        blocks = self.profile.blocks
        return sum(blocks(r.prompt_tokens + r.tokens_out) for r in self._running)

    def start_step(self, now: float) -> float | None:
        """Preempt if the KV cache overflows, else admit waiting requests (FIFO) up to the
        batch limit and the KV room, and begin a step at `now`.

        Only requests that arrived by `now` are admitted: a real-time driver running a
        little behind its timeline must not let a later arrival into an earlier step.
        Returns the step's duration in seconds, or None (and starts nothing) when
        nothing can run yet.
        """
        if self._step_end is not None:
            raise RuntimeError("a step is already in progress")
        running = self._running
        waiting = self._waiting
        blocks = self.profile.blocks
        capacity = self._blocks
        used = self.kv_blocks()
        preempted = False
        while used > capacity:
            victim = running.pop()  # the newest admitted
            used -= blocks(victim.prompt_tokens + victim.tokens_out)
            waiting.appendleft(victim)  # older victims end up in front of newer ones
            self.preemptions += 1
            preempted = True
        self._admitted_from = len(running)
        prefill_tokens = 0
        room = self._max_batch - len(running)
        while not preempted and room > 0 and waiting and waiting[0].arrival <= now:
            request = waiting[0]
            # a preempted request recomputes its prompt and the tokens it generated
            tokens = request.prompt_tokens + request.tokens_out
            need = blocks(tokens)
            if used + need + 1 > capacity:
                break
            waiting.popleft()
            used += need
            if request.admitted is None:
                request.admitted = now
            prefill_tokens += tokens
            running.append(request)
            room -= 1
        if not running:
            return None
        batch = len(running)
        duration = self._alpha_s + self._beta_s * batch + self._prefill_s * prefill_tokens
        self._step_end = now + duration
        return duration

    def joining(self) -> list[Request]:
        """The requests the step in progress admitted, in admission order: new ones (no
        first token yet) and ones readmitted after a preemption."""
        return self._running[self._admitted_from :] if self._step_end is not None else []

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
        admitted = running[self._admitted_from :]
        started = tuple(r for r in admitted if r.first_token is None)
        resumed = tuple(r for r in admitted if r.first_token is not None)
        resumed_gaps = tuple(end - r.last_token for r in resumed if r.last_token is not None)
        done = 0
        for request in running:
            n = request.tokens_out + 1
            request.tokens_out = n
            request.last_token = end
            if n >= request.output_tokens:
                request.finished = end
                done += 1
        for request in started:
            request.first_token = end
        decoded = batch - len(admitted)
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
            resumed=resumed,
            resumed_gaps=resumed_gaps,
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

    def abort_all(self) -> list[Request]:
        """Remove and return every request, running ones first (the replica is killed);
        a step in progress is dropped with them."""
        dropped = [*self._running, *self._waiting]
        self._running.clear()
        self._waiting.clear()
        self._step_end = None
        self._admitted_from = 0
        return dropped

    def kv_cache_usage(self) -> float:
        """KV-cache usage as a 0..1 ratio (`vllm:kv_cache_usage_perc`): the blocks held
        for the step in progress (or, between steps, for the last one) over the cache's.

        vLLM allocates a step's blocks when it schedules the step, so what it reports
        never exceeds the cache; between two steps the running requests' next tokens
        may not fit yet (the next `start_step` preempts)."""
        if self._step_end is not None:
            return self.kv_blocks() / self._blocks
        blocks = self.profile.blocks
        held = sum(blocks(r.prompt_tokens + max(r.tokens_out - 1, 0)) for r in self._running)
        return held / self._blocks

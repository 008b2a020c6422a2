"""An emulated vLLM Deployment: N OpenAI-compatible replicas, a Service-like gateway and a
control API to scale it, all in one asyncio process.

Each replica runs the continuous-batching model of `batching.ReplicaEngine` in wall time
and exports vLLM's metrics on its own port, so the adapter, Prometheus and load
generators (guidellm) see what they would see in front of real vLLM pods, at the
latencies of a chosen (alpha, beta) profile, without a GPU.

Simplifications, chosen to keep the CPU cost low next to a Python load generator:
- prompt tokens are the whitespace-separated words of the prompt (or of the chat
  messages' text), at least 1; a list of token ids counts its length;
- every request generates exactly `max_tokens` (or `max_completion_tokens`, default 16)
  tokens of the fixed text " tok", finish reason "length" (as with `ignore_eos`); one
  whose prompt and output the KV cache could never hold gets vLLM's 400 for a request
  over max_model_len (which vLLM keeps within the cache);
- streamed tokens are coalesced into one SSE event per stream every
  `stream_interval_ms` (vLLM's stream interval; 0 = one event per token), the first
  token always being sent as soon as it exists;
- the metrics are recorded when vLLM records them (see adapter/emulator/metrics.py):
  prompt tokens and TTFT at the first token, the inter-token latency at every step, the
  success counter at the finish; a request whose client goes away is only dropped. The
  names are those of the `--vllm-version` chosen (default 0.34, the newest), and
  /metrics answers in OpenMetrics to a scraper asking for it, as vLLM does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapter.emulator.batching import ReplicaEngine, Request, ServingProfile, StepOutcome
from adapter.emulator.gateway import CONTENT_TYPE, GatewayMetrics
from adapter.emulator.metrics import VllmMetrics
from adapter.vllm_metrics import DEFAULT_RELEASE, RELEASES, VllmRelease, release

log = logging.getLogger(__name__)

TOKEN_TEXT: Final = " tok"
DEFAULT_MAX_TOKENS: Final = 16
MAX_MODEL_LEN: Final = 131072
# A driver that fell further behind its step deadlines than this (a stalled event loop)
# restarts from "now" instead of producing a burst of catch-up steps.
_MAX_LAG_S: Final = 1.0
# How long closing a site waits for responses still being written.
_SHUTDOWN_TIMEOUT_S: Final = 5.0
_SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

ReplicaState = Literal["starting", "ready", "terminating"]


# --- request bodies (the OpenAI fields the emulator reads; anything else is accepted) ---


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _GenerationBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    ignore_eos: bool = False

    def output_tokens(self) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS

    def prompt_tokens(self) -> int:
        raise NotImplementedError

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionBody(_GenerationBody):
    """POST /v1/completions: one prompt (text or token ids)."""

    prompt: str | list[int] | list[str] | list[list[int]] = ""

    def prompt_tokens(self) -> int:
        prompt = self.prompt
        if isinstance(prompt, list) and len(prompt) == 1 and not isinstance(prompt[0], int):
            prompt = prompt[0]  # a batch of one prompt
        if isinstance(prompt, str):
            return max(1, len(prompt.split()))
        if prompt and all(isinstance(t, int) for t in prompt):
            return max(1, len(prompt))
        raise ValueError("only one prompt per request is emulated")


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "text"
    text: str | None = None


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[_ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return " ".join(p.text for p in self.content or () if p.text)


class ChatBody(_GenerationBody):
    """POST /v1/chat/completions: the messages' text is the prompt."""

    messages: list[_ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def output_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    def prompt_tokens(self) -> int:
        return max(1, sum(len(m.text().split()) for m in self.messages))


class _ScaleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(ge=0)


def _error(status: int, message: str, kind: str, param: str | None = None) -> web.Response:
    """An OpenAI-style error body, as vLLM's API server answers."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.json_response(body, status=status)


def max_model_len(profile: ServingProfile) -> int:
    """The longest request (prompt + output tokens) a replica serves: `MAX_MODEL_LEN`, or
    less when the KV cache cannot hold that much (vLLM will not start with a
    max_model_len its cache cannot hold; here: what `ServingProfile.check_fits` admits,
    the cache less the one block admission keeps to spare)."""
    return min(MAX_MODEL_LEN, (profile.gpu_blocks - 1) * profile.block_size)


def _too_long(prompt_tokens: int, output_tokens: int, limit: int) -> web.Response:
    """vLLM's answer to a request over max_model_len: 400, BadRequestError, parameter
    `input_tokens` (vllm-project/vllm vllm/renderers/params.py `_token_len_check` at
    1aa021e827032484a7f89194c7e528fc40655204, the message's wording too)."""
    message = (
        f"You passed {prompt_tokens} input tokens and requested {output_tokens} output"
        f" tokens. However, the model's context length is only {limit} tokens, resulting"
        f" in a maximum input length of {max(limit - output_tokens, 0)} tokens. Please"
        " reduce the length of the input prompt."
    )
    return _error(400, message, "BadRequestError", param="input_tokens")


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


# --- configuration and public views ---


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """What to emulate and where: one served model, its profile, the ports."""

    model: str
    profile: ServingProfile
    replicas: int = 1
    host: str = "127.0.0.1"
    gateway_port: int = 0
    control_port: int = 0
    stream_interval_ms: float = 50.0
    startup_delay_s: float = 0.0
    vllm_version: VllmRelease = DEFAULT_RELEASE
    # how long the gateway holds a request while no replica is ready (an llm-d router's
    # flow control); 0: answer 503 at once, as a Service with no ready endpoint
    hold_s: float = 0.0
    pool: str = "vllm-pool"  # the InferencePool named in the gateway's series

    def __post_init__(self) -> None:
        release(self.vllm_version)  # a string from elsewhere than the CLI: still checked
        if self.replicas < 0:
            raise ValueError("replicas must be >= 0")
        if self.stream_interval_ms < 0:
            raise ValueError("stream_interval_ms must be >= 0")
        if self.startup_delay_s < 0:
            raise ValueError("startup_delay_s must be >= 0")
        if self.hold_s < 0:
            raise ValueError("hold_s must be >= 0")


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """One replica as the control API reports it."""

    name: str
    url: str
    state: ReplicaState
    running: int
    waiting: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "state": self.state,
            "running": self.running,
            "waiting": self.waiting,
        }


# --- one request through the deployment ---


class _Job:
    """An HTTP request's generation, possibly moved to another replica before it starts.

    The handler waits on `wait()`; the replica's driver calls `notify()` when the
    request gets its first token or finishes (and after every step when streaming
    every token). Wake-ups may be spurious: the handler re-reads the state.
    """

    __slots__ = (
        "answered",
        "error",
        "output_tokens",
        "prompt_tokens",
        "replica",
        "request",
        "waiter",
    )

    def __init__(self, prompt_tokens: int, output_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.request: Request | None = None
        self.replica: _Replica | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.error: str | None = None
        self.answered = False  # its response went out whole: every token, 200

    @property
    def current(self) -> Request:
        if self.request is None:
            raise RuntimeError("job not submitted")
        return self.request

    def notify(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, message: str) -> None:
        self.error = message
        self.replica = None
        self.notify()

    async def wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self.waiter = waiter
        timer = loop.call_later(timeout, _resolve, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# --- one replica ---


class _Replica:
    """One vLLM pod: an engine driven in wall time, its metrics, its own HTTP port."""

    def __init__(self, deployment: EmulatedDeployment, name: str) -> None:
        config = deployment.config
        self.name = name
        self.engine = ReplicaEngine(config.profile)
        self.metrics = VllmMetrics(config.model, release=config.vllm_version)
        self.state: ReplicaState = "starting"
        self.port = 0
        self._deployment = deployment
        self._host = config.host
        self._notify_every_step = config.stream_interval_ms == 0
        self._jobs: dict[Request, _Job] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._driver: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._ready_timer: asyncio.TimerHandle | None = None
        self._closed: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def outstanding(self) -> int:
        """Requests submitted here and not finished: the gateway's balancing key."""
        return len(self._jobs)

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(
            self.name, self.url, self.state, self.engine.running, self.engine.waiting
        )

    async def open(self, startup_delay_s: float) -> None:
        deployment = self._deployment
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._runner, self.port = await _serve(app, deployment.config.host, 0)
        self._driver = asyncio.create_task(self._drive(), name=f"driver-{self.name}")
        if startup_delay_s > 0:
            self._ready_timer = asyncio.get_running_loop().call_later(
                startup_delay_s, self._become_ready
            )
        else:
            self._become_ready()

    def _become_ready(self) -> None:
        self._ready_timer = None
        if self.state == "starting":
            self.state = "ready"
            self._deployment.replica_ready()

    def submit(self, job: _Job) -> None:
        """Queue `job` here as a new request arriving now; ValueError (nothing queued) if
        the KV cache could never hold it."""
        arrival = asyncio.get_running_loop().time()
        request = Request(
            arrival=arrival,
            prompt_tokens=job.prompt_tokens,
            output_tokens=job.output_tokens,
        )
        self.engine.submit(request)
        job.request = request
        job.replica = self
        self._jobs[request] = job
        self._wake.set()

    def cancel(self, job: _Job) -> None:
        """The client went away: abort its request, as vLLM does. vLLM counts no finish
        for it: it only leaves the running or waiting gauge."""
        request = job.request
        if request is not None and self._jobs.pop(request, None) is not None:
            self.engine.cancel(request)

    def begin_termination(self) -> list[_Job]:
        """Leave the rotation; return the jobs still waiting, for another replica."""
        self.state = "terminating"
        if self._ready_timer is not None:
            self._ready_timer.cancel()
            self._ready_timer = None
        return [self._jobs.pop(r) for r in self.engine.drain_waiting()]

    async def close(self, *, abort: bool = False) -> None:
        """Finish the running requests (or fail them, with `abort`), then close the port.

        Idempotent; an abort may interrupt a graceful close already under way.
        """
        if abort:
            for job in list(self._jobs.values()):
                job.fail("the server is shutting down")
            self._jobs.clear()
            if self._driver is not None:
                self._driver.cancel()
        if self._closed is None:
            self._closed = asyncio.create_task(self._close(), name=f"close-{self.name}")
        await asyncio.shield(self._closed)

    async def _close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._driver is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
        if self._runner is not None:
            await self._runner.cleanup()

    async def _drive(self) -> None:
        """Run steps back to back while there is work, on absolute deadlines.

        Each step starts where the previous one ended (not when the loop woke up), so a
        late wake-up shortens the next wait instead of stretching the timeline: the
        emulated GPU does not slow down because the host's CPU is busy (guidellm, the
        adapter and the emulator share two cores in CI); only its tokens reach the
        clients a little late. Requests that arrived after a step's start wait for the
        next step. Beyond `_MAX_LAG_S` behind, the timeline restarts from now.
        """
        loop = asyncio.get_running_loop()
        engine = self.engine
        start: float | None = None
        while True:
            if engine.idle:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                start = None
                continue
            now = loop.time()
            if start is None or now - start > _MAX_LAG_S:
                start = now
            duration = engine.start_step(start)
            if duration is None:  # cancelled meanwhile, or arrived after `start`
                start = None
                continue
            end = start + duration
            await asyncio.sleep(max(0.0, end - loop.time()))
            self._after_step(engine.finish_step())
            start = end

    def _after_step(self, outcome: StepOutcome) -> None:
        jobs = self._jobs
        metrics = self.metrics
        metrics.record_tokens(gap_s=outcome.token_gap, tokens=outcome.decoded)
        # a request readmitted after a preemption: its token came the whole time since
        # its previous one after it, its eviction included (vLLM observes that gap)
        for gap in outcome.resumed_gaps:
            metrics.record_tokens(gap_s=gap)
        for request in outcome.started:
            metrics.record_first_token(prompt_tokens=request.prompt_tokens, ttft_s=request.ttft)
            job = jobs.get(request)
            if job is not None:
                job.notify()
        for request in outcome.finished:
            metrics.record_finish(
                prompt_tokens=request.prompt_tokens,
                output_tokens=request.tokens_out,
                queue_time_s=request.queue_time,
                e2e_s=request.e2e,
            )
            job = jobs.pop(request, None)
            if job is not None:
                job.notify()
        if self._notify_every_step:
            for job in jobs.values():
                job.notify()

    def _pick_self(self) -> _Replica | None:
        return self if self.state == "ready" else None

    async def _completions(self, http: web.Request) -> web.StreamResponse:
        return await self._deployment.generate(http, chat=False, pick=self._pick_self)

    async def _chat_completions(self, http: web.Request) -> web.StreamResponse:
        return await self._deployment.generate(http, chat=True, pick=self._pick_self)

    async def _models(self, http: web.Request) -> web.Response:
        return self._deployment.models_response()

    async def _health(self, http: web.Request) -> web.Response:
        if self.state != "ready":
            return web.Response(status=503, text=self.state)
        return web.Response(text="")

    async def _metrics(self, http: web.Request) -> web.Response:
        engine = self.engine
        self.metrics.set_gauges(
            running=engine.running,
            waiting=engine.waiting,
            kv_cache_usage=engine.kv_cache_usage(),
        )
        body, content_type = self.metrics.negotiate(http.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app` on (host, port), port 0 = a free one; returns the runner and the port."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,  # a client that disconnects aborts its request
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, int(sock.getsockname()[1])


# --- the deployment ---


class EmulatedDeployment:
    """A vLLM Deployment of N emulated replicas behind a gateway, scalable at run time.

    - gateway (`gateway_url`): the Kubernetes Service, or with `hold_s` an llm-d router;
      `/v1/*` requests go, in process, to the ready replica with the fewest outstanding
      requests (ties in rotation). With no ready replica, a request is held up to
      `hold_s` for one (then 503); `/metrics` exports the EPP's queue and running
      gauges (adapter/emulator/gateway.py);
    - control (`control_url`): `GET/PUT /replicas`, `GET /gateway` (the requests the
      gateway received, held and answered whole), `GET /health`;
    - each replica: `/v1/completions`, `/v1/chat/completions`, `/v1/models`, `/health`,
      `/metrics` on its own port.

    Scaling down removes the newest replicas: they leave the rotation at once, their
    waiting requests are sent again through the gateway (as a client retry would), their
    running requests finish, then their port closes.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._replicas: list[_Replica] = []
        self._terminating: list[_Replica] = []
        self._terminations: set[asyncio.Task[None]] = set()
        self._next_index = 0
        self._rotation = 0
        self.arrivals_total = 0  # requests the gateway received: the offered load
        self.held = 0  # requests the gateway holds now, waiting for a ready replica
        self.held_bytes = 0
        self.held_total = 0  # requests ever held
        self.gateway_running = 0  # requests the gateway dispatched and not answered yet
        self.answered_total = 0  # requests through the gateway answered whole (200)
        self._replica_ready: asyncio.Event | None = None
        self.gateway_metrics = GatewayMetrics(
            config.model,
            config.pool,
            waiting=lambda: self.held,
            waiting_bytes=lambda: self.held_bytes,
            running=lambda: self.gateway_running - self.held,
        )
        self._started = False
        self._gateway: web.AppRunner | None = None
        self._control: web.AppRunner | None = None
        self._scale_lock: asyncio.Lock | None = None
        self.gateway_port = 0
        self.control_port = 0

    # lifecycle

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("deployment already started")
        self._started = True
        self._scale_lock = asyncio.Lock()
        self._replica_ready = asyncio.Event()
        host = self.config.host
        gateway = web.Application()
        gateway.router.add_post("/v1/completions", self._gateway_completions)
        gateway.router.add_post("/v1/chat/completions", self._gateway_chat_completions)
        gateway.router.add_get("/v1/models", self._gateway_models)
        gateway.router.add_get("/health", self._gateway_health)
        gateway.router.add_get("/metrics", self._gateway_metrics)
        control = web.Application()
        control.router.add_get("/replicas", self._get_replicas)
        control.router.add_get("/gateway", self._get_gateway)
        control.router.add_put("/replicas", self._put_replicas)
        control.router.add_get("/health", self._control_health)
        self._gateway, self.gateway_port = await _serve(gateway, host, self.config.gateway_port)
        self._control, self.control_port = await _serve(control, host, self.config.control_port)
        # The initial replicas are up at once: the Deployment existed before the run.
        await self._scale(self.config.replicas, startup_delay_s=0.0)

    async def stop(self) -> None:
        """Close every port; requests still in flight are failed."""
        replicas = self._replicas + self._terminating
        self._replicas = []  # the gateway answers 503 from now on
        await asyncio.gather(*(r.close(abort=True) for r in replicas))
        await self.wait_terminated()
        for runner in (self._control, self._gateway):
            if runner is not None:
                await runner.cleanup()
        self._control = self._gateway = None

    async def __aenter__(self) -> EmulatedDeployment:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # scaling

    @property
    def desired(self) -> int:
        return len(self._replicas)

    @property
    def replicas(self) -> list[ReplicaInfo]:
        """The replicas that count toward `desired` (starting or ready), oldest first."""
        return [r.info() for r in self._replicas]

    @property
    def terminating(self) -> list[ReplicaInfo]:
        """Removed replicas still finishing their running requests."""
        return [r.info() for r in self._terminating]

    async def set_replicas(self, count: int) -> None:
        """Scale to `count` replicas; new ones get `startup_delay_s` before taking traffic."""
        if count < 0:
            raise ValueError("count must be >= 0")
        await self._scale(count, startup_delay_s=self.config.startup_delay_s)

    async def wait_terminated(self) -> None:
        """Wait until every removed replica has finished its requests and closed its port."""
        while self._terminations:
            await asyncio.gather(*self._terminations, return_exceptions=True)

    async def _scale(self, count: int, *, startup_delay_s: float) -> None:
        if self._scale_lock is None:
            raise RuntimeError("deployment not started")
        async with self._scale_lock:
            while len(self._replicas) < count:
                replica = _Replica(self, f"vllm-{self._next_index}")
                self._next_index += 1
                await replica.open(startup_delay_s)
                self._replicas.append(replica)
                log.info("replica %s serving on %s", replica.name, replica.url)
            while len(self._replicas) > count:
                self._remove(self._replicas.pop())

    def _remove(self, replica: _Replica) -> None:
        waiting = replica.begin_termination()
        self._terminating.append(replica)
        for job in waiting:
            self._dispatch_again(job)
        task = asyncio.create_task(self._terminate(replica), name=f"terminate-{replica.name}")
        self._terminations.add(task)
        task.add_done_callback(self._terminations.discard)

    async def _terminate(self, replica: _Replica) -> None:
        try:
            await replica.close()
        finally:
            self._terminating.remove(replica)
            log.info("replica %s closed", replica.name)

    def replica_ready(self) -> None:
        """A replica became ready: wake the requests held for one."""
        if self._replica_ready is not None:
            self._replica_ready.set()
            self._replica_ready = asyncio.Event()

    async def _pick_or_hold(self, size: int) -> _Replica | None:
        """A ready replica now, or, holding the request up to `hold_s`, once one is ready."""
        replica = self._pick()
        if replica is not None or self.config.hold_s == 0:
            return replica
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.hold_s
        self.held += 1
        self.held_bytes += size
        self.held_total += 1
        try:
            while replica is None and self._replica_ready is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._replica_ready.wait(), remaining)
                replica = self._pick()
            return replica
        finally:
            self.held -= 1
            self.held_bytes -= size

    def _dispatch_again(self, job: _Job) -> None:
        target = self._pick()
        if target is None:
            job.fail("no replica left to retry the request on")
        else:
            target.submit(job)

    def _pick(self) -> _Replica | None:
        """The ready replica with the fewest outstanding requests; ties in rotation."""
        ready = [r for r in self._replicas if r.state == "ready"]
        if not ready:
            return None
        n = len(ready)
        self._rotation = (self._rotation + 1) % n
        best = ready[self._rotation]
        for i in range(1, n):
            candidate = ready[(self._rotation + i) % n]
            if candidate.outstanding < best.outstanding:
                best = candidate
        return best

    # serving

    async def generate(
        self,
        http: web.Request,
        *,
        chat: bool,
        pick: Callable[[], _Replica | None],
        hold: bool = False,
    ) -> web.StreamResponse:
        """Serve one completion or chat completion on the replica `pick` chooses (through
        the gateway, `hold`: held while no replica is ready, up to `hold_s`)."""
        body: _GenerationBody
        try:
            raw = await http.read()
            body = (ChatBody if chat else CompletionBody).model_validate_json(raw)
            prompt_tokens = body.prompt_tokens()
        except (ValidationError, ValueError) as exc:
            return _error(400, str(exc), "BadRequestError")
        if body.model is not None and body.model != self.config.model:
            return _error(404, f"The model `{body.model}` does not exist.", "NotFoundError")
        replica = await self._pick_or_hold(len(raw)) if hold else pick()
        if replica is None:
            return _error(503, "no replica is ready to serve the request", "ServiceUnavailable")
        output_tokens = body.output_tokens()
        job = _Job(prompt_tokens, output_tokens)
        try:
            replica.submit(job)
        except ValueError:  # ReplicaEngine.submit: the KV cache could never hold it
            return _too_long(prompt_tokens, output_tokens, max_model_len(self.config.profile))
        try:
            if body.stream:
                return await self._stream(http, job, chat=chat, usage=body.include_usage)
            return await self._complete(job, chat=chat)
        finally:
            owner = job.replica
            if owner is not None and job.current.finished is None:
                owner.cancel(job)
            if hold and job.answered:
                self.answered_total += 1

    async def _complete(self, job: _Job, *, chat: bool) -> web.Response:
        while job.current.finished is None:
            if job.error is not None:
                return _error(503, job.error, "ServiceUnavailable")
            await job.wait(None)
        n = job.output_tokens
        job.answered = True
        text = TOKEN_TEXT * n
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": "length"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
            choice["stop_reason"] = None
        return web.json_response(
            {
                "id": _request_id(chat),
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.config.model,
                "choices": [choice],
                "usage": _usage(job),
            }
        )

    async def _stream(
        self, http: web.Request, job: _Job, *, chat: bool, usage: bool
    ) -> web.StreamResponse:
        while job.current.first_token is None:
            if job.error is not None:
                return _error(503, job.error, "ServiceUnavailable")
            await job.wait(None)
        response = web.StreamResponse(headers=_SSE_HEADERS)
        interval = self.config.stream_interval_ms / 1000 or None
        head: dict[str, Any] = {
            "id": _request_id(chat),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.config.model,
        }

        def chunk(text: str, finish_reason: str | None) -> bytes:
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish_reason}
            if chat:
                choice["delta"] = {"content": text}
            else:
                choice["text"] = text
                choice["stop_reason"] = None
            return _sse({**head, "choices": [choice]})

        sent = 0
        try:
            await response.prepare(http)
            if chat:
                role = {"index": 0, "delta": {"role": "assistant", "content": ""}}
                await response.write(_sse({**head, "choices": [{**role, "finish_reason": None}]}))
            while True:
                request = job.current
                produced = request.tokens_out
                done = request.finished is not None
                if produced > sent:
                    finish = "length" if done else None
                    await response.write(chunk(TOKEN_TEXT * (produced - sent), finish))
                    sent = produced
                if done:
                    break
                if job.error is not None:
                    return response  # shutting down: the stream ends without [DONE]
                await job.wait(interval)
            if usage:
                await response.write(_sse({**head, "choices": [], "usage": _usage(job)}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            job.answered = True
        except ConnectionError:
            pass  # the client went away; `generate` aborts the request
        return response

    def models_response(self) -> web.Response:
        model = {
            "id": self.config.model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": self.config.model,
            "parent": None,
            "max_model_len": max_model_len(self.config.profile),
        }
        return web.json_response({"object": "list", "data": [model]})

    async def _gateway_completions(self, http: web.Request) -> web.StreamResponse:
        return await self._through_gateway(http, chat=False)

    async def _gateway_chat_completions(self, http: web.Request) -> web.StreamResponse:
        return await self._through_gateway(http, chat=True)

    async def _through_gateway(self, http: web.Request, *, chat: bool) -> web.StreamResponse:
        self.arrivals_total += 1
        self.gateway_running += 1
        try:
            return await self.generate(http, chat=chat, pick=self._pick, hold=True)
        finally:
            self.gateway_running -= 1

    async def _gateway_metrics(self, http: web.Request) -> web.Response:
        body = self.gateway_metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    def _no_replica(self) -> web.Response:
        return _error(503, "no replica is ready", "ServiceUnavailable")

    async def _gateway_models(self, http: web.Request) -> web.Response:
        if not any(r.state == "ready" for r in self._replicas):
            return self._no_replica()
        return self.models_response()

    async def _gateway_health(self, http: web.Request) -> web.Response:
        if not any(r.state == "ready" for r in self._replicas):
            return self._no_replica()
        return web.Response(text="")

    # control API

    @property
    def gateway_url(self) -> str:
        return f"http://{self.config.host}:{self.gateway_port}"

    @property
    def control_url(self) -> str:
        return f"http://{self.config.host}:{self.control_port}"

    def status(self) -> dict[str, Any]:
        """The control API's view: replicas counting toward `desired`, and terminating ones."""
        return {
            "replicas": [r.to_json() for r in self.replicas],
            "terminating": [r.to_json() for r in self.terminating],
            "desired": self.desired,
            "arrivals_total": self.arrivals_total,
            "held": self.held,
            "held_total": self.held_total,
        }

    def gateway_account(self) -> dict[str, int]:
        """The gateway's own account of the requests it received: how many, how many it
        held for a replica, how many it answered whole (200, every token: a streamed one
        once its last event is written, another once its body is handed over)."""
        return {
            "arrivals_total": self.arrivals_total,
            "held_total": self.held_total,
            "answered_total": self.answered_total,
        }

    def endpoints(self) -> dict[str, Any]:
        """What the CLI prints once serving: where the gateway, control and replicas are."""
        return {
            "gateway": self.gateway_url,
            "control": self.control_url,
            "replicas": [{"name": r.name, "url": r.url} for r in self.replicas],
        }

    async def _get_replicas(self, http: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _get_gateway(self, http: web.Request) -> web.Response:
        return web.json_response(self.gateway_account())

    async def _put_replicas(self, http: web.Request) -> web.Response:
        try:
            body = _ScaleBody.model_validate_json(await http.read())
        except ValidationError as exc:
            return _error(400, str(exc), "BadRequestError")
        await self.set_replicas(body.count)
        return web.json_response(self.status())

    async def _control_health(self, http: web.Request) -> web.Response:
        return web.Response(text="")


def _request_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def _usage(job: _Job) -> dict[str, int]:
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.output_tokens,
        "total_tokens": job.prompt_tokens + job.output_tokens,
    }


# --- command line ---


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adapter.emulator",
        description="Emulate a vLLM Deployment: N OpenAI-compatible replicas with vLLM's "
        "metrics, a gateway (the Service) and a control API to scale it.",
    )
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--alpha-ms", type=float, required=True, help="decode step base time")
    parser.add_argument("--beta-ms", type=float, required=True, help="decode step time per request")
    parser.add_argument("--max-batch-size", type=int, required=True, help="vLLM max_num_seqs")
    parser.add_argument("--prefill-ms-per-token", type=float, default=0.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--gateway-port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--control-port", type=int, default=0, help="0 = a free port")
    parser.add_argument(
        "--stream-interval-ms",
        type=float,
        default=50.0,
        help="coalesce streamed tokens into one event per stream per interval; 0 = every token",
    )
    parser.add_argument(
        "--startup-delay-s",
        type=float,
        default=0.0,
        help="time before a replica added by scaling up takes traffic",
    )
    parser.add_argument(
        "--vllm-version",
        choices=RELEASES,
        default=DEFAULT_RELEASE,
        help="export the metric names of this vLLM release (the per-token latency histogram"
        " differs: 0.10 the old name, 0.11 both, 0.34 the new one)",
    )
    parser.add_argument(
        "--hold-s",
        type=float,
        default=0.0,
        help="hold a request at the gateway up to this long while no replica is ready, as an"
        " llm-d router's flow control does (0: 503 at once, as a Service)",
    )
    parser.add_argument("--pool", default="vllm-pool", help="InferencePool name in the series")
    parser.add_argument("--ready-file", type=Path, help="where to write the endpoints JSON")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    profile = ServingProfile(
        alpha_ms=args.alpha_ms,
        beta_ms=args.beta_ms,
        max_batch_size=args.max_batch_size,
        prefill_ms_per_token=args.prefill_ms_per_token,
    )
    return EmulatorConfig(
        model=args.model,
        profile=profile,
        replicas=args.replicas,
        host=args.host,
        gateway_port=args.gateway_port,
        control_port=args.control_port,
        stream_interval_ms=args.stream_interval_ms,
        startup_delay_s=args.startup_delay_s,
        vllm_version=release(args.vllm_version),
        hold_s=args.hold_s,
        pool=args.pool,
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write then rename, so a reader polling for the file never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def serve(config: EmulatorConfig, ready_file: Path | None = None) -> None:
    """Run the deployment until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    deployment = EmulatedDeployment(config)
    try:
        await deployment.start()
        line = json.dumps(deployment.endpoints())
        if ready_file is not None:
            _write_atomically(ready_file, line + "\n")
        print(line, flush=True)
        await stop.wait()
    finally:
        await deployment.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    asyncio.run(serve(config, args.ready_file))
    return 0

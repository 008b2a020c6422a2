"""The emulated vLLM Deployment over real HTTP on 127.0.0.1: OpenAI shapes, batching
latencies seen in /metrics, queueing, scaling through the control API, no replica."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from adapter.emulator.batching import ServingProfile
from adapter.emulator.server import EmulatedDeployment, EmulatorConfig, build_parser
from adapter.vllm_metrics import VllmRelease

MODEL = "unsloth/Meta-Llama-3.1-8B"
DEADLINE_S = 10.0

pytestmark = pytest.mark.integration


def deployment(
    *,
    alpha_ms: float = 1.0,
    beta_ms: float = 0.0,
    max_batch_size: int = 16,
    replicas: int = 1,
    stream_interval_ms: float = 50.0,
    startup_delay_s: float = 0.0,
    vllm_version: VllmRelease = "0.34",
) -> EmulatedDeployment:
    profile = ServingProfile(alpha_ms=alpha_ms, beta_ms=beta_ms, max_batch_size=max_batch_size)
    return EmulatedDeployment(
        EmulatorConfig(
            model=MODEL,
            profile=profile,
            replicas=replicas,
            stream_interval_ms=stream_interval_ms,
            startup_delay_s=startup_delay_s,
            vllm_version=vllm_version,
        )
    )


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` until it holds, failing after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Stream:
    """A streamed response: every SSE event and when it arrived."""

    events: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(
            c.get("text", c.get("delta", {}).get("content", "")) or ""
            for e in self.events
            for c in e["choices"]
        )

    @property
    def token_events(self) -> list[int]:
        """Indices of the events carrying generated text."""
        return [
            i
            for i, e in enumerate(self.events)
            if any(c.get("text") or c.get("delta", {}).get("content") for c in e["choices"])
        ]


async def read_stream(response: aiohttp.ClientResponse) -> Stream:
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    stream = Stream()
    async for raw in response.content:
        line = raw.strip()
        if not line:
            continue
        assert line.startswith(b"data: "), line
        data = line[len(b"data: ") :]
        assert not stream.done, "event after [DONE]"
        if data == b"[DONE]":
            stream.done = True
            continue
        stream.events.append(json.loads(data))
        stream.times.append(time.monotonic())
    return stream


async def post_stream(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], chat: bool = False
) -> Stream:
    path = "/v1/chat/completions" if chat else "/v1/completions"
    async with session.post(url + path, json={**body, "stream": True}) as response:
        return await read_stream(response)


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The replica's samples by name (labels dropped: one model, one engine), buckets aside."""
    async with session.get(url + "/metrics") as response:
        assert response.status == 200
        body = await response.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if "le" not in sample.labels:
                assert sample.labels["model_name"] == MODEL
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


async def control(session: aiohttp.ClientSession, dep: EmulatedDeployment) -> dict[str, Any]:
    async with session.get(dep.control_url + "/replicas") as response:
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


async def scale(session: aiohttp.ClientSession, dep: EmulatedDeployment, n: int) -> dict[str, Any]:
    async with session.put(dep.control_url + "/replicas", json={"count": n}) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


@pytest.mark.asyncio
async def test_openai_shapes_and_usage_on_gateway_and_replica() -> None:
    async with deployment() as dep, aiohttp.ClientSession() as session:
        replica_url = dep.replicas[0].url
        for url in (dep.gateway_url, replica_url):
            async with session.get(url + "/v1/models") as response:
                models = await response.json()
            assert [m["id"] for m in models["data"]] == [MODEL]

            body = {"model": MODEL, "prompt": "one two  three\nfour", "max_tokens": 7}
            async with session.post(url + "/v1/completions", json=body) as response:
                assert response.status == 200
                completion = await response.json()
            assert completion["object"] == "text_completion"
            assert completion["model"] == MODEL
            assert completion["choices"][0]["text"] == " tok" * 7
            assert completion["choices"][0]["finish_reason"] == "length"
            assert completion["usage"] == {
                "prompt_tokens": 4,
                "completion_tokens": 7,
                "total_tokens": 11,
            }

            chat_body = {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "hi there"}]},
                ],
                "max_completion_tokens": 3,
            }
            async with session.post(url + "/v1/chat/completions", json=chat_body) as response:
                chat = await response.json()
            assert chat["object"] == "chat.completion"
            assert chat["choices"][0]["message"] == {"role": "assistant", "content": " tok" * 3}
            assert chat["usage"]["prompt_tokens"] == 4
            assert chat["usage"]["completion_tokens"] == 3

            usage = {"stream_options": {"include_usage": True}, "ignore_eos": True}
            stream = await post_stream(session, url, {**body, **usage})
            assert stream.done and stream.text == " tok" * 7
            assert {e["object"] for e in stream.events} == {"text_completion"}
            assert stream.events[-2]["choices"][0]["finish_reason"] == "length"
            assert stream.events[-1]["choices"] == []
            assert stream.events[-1]["usage"]["completion_tokens"] == 7

            chat_stream = await post_stream(session, url, {**chat_body, **usage}, chat=True)
            assert chat_stream.done and chat_stream.text == " tok" * 3
            assert chat_stream.events[0]["choices"][0]["delta"]["role"] == "assistant"
            assert {e["object"] for e in chat_stream.events} == {"chat.completion.chunk"}
            assert chat_stream.events[-1]["usage"]["total_tokens"] == 4 + 3

            # Without max_tokens, 16 tokens; without include_usage, no usage event.
            plain = await post_stream(session, url, {"prompt": "x"})
            assert plain.text == " tok" * 16 and "usage" not in plain.events[-1]

            async with session.post(
                url + "/v1/completions", json={"model": "other", "prompt": "x"}
            ) as response:
                assert response.status == 404
                assert "other" in (await response.json())["error"]["message"]
            async with session.post(url + "/v1/completions", json={"max_tokens": 0}) as response:
                assert response.status == 400

        metrics = await scrape(session, replica_url)
        assert metrics["vllm:request_success_total"] == 2 * 5
        assert metrics["vllm:generation_tokens_total"] == 2 * (7 + 3 + 7 + 3 + 16)


@pytest.mark.asyncio
async def test_inter_token_latency_is_alpha_plus_beta_times_batch() -> None:
    alpha, beta, batch, tokens = 2.0, 0.5, 8, 50
    expected = (alpha + beta * batch) / 1000
    async with (
        deployment(alpha_ms=alpha, beta_ms=beta, stream_interval_ms=0, vllm_version="0.11") as dep,
        aiohttp.ClientSession() as session,
    ):
        streams = await asyncio.gather(
            *(
                post_stream(session, dep.gateway_url, {"prompt": "p", "max_tokens": tokens})
                for _ in range(batch)
            )
        )
        metrics = await scrape(session, dep.replicas[0].url)

    count = metrics["vllm:inter_token_latency_seconds_count"]
    itl = metrics["vllm:inter_token_latency_seconds_sum"] / count
    assert count == batch * (tokens - 1)
    # Requests that arrived a step late saw a smaller batch for a step or two.
    assert 0.85 * expected <= itl <= 1.05 * expected
    # 0.11 exports the old name beside the new one, with the same observations
    assert metrics["vllm:time_per_output_token_seconds_count"] == count
    assert metrics["vllm:time_per_output_token_seconds_sum"] == pytest.approx(count * itl)
    assert metrics["vllm:request_queue_time_seconds_sum"] >= 0  # never admitted before arrival
    for stream in streams:
        assert len(stream.token_events) == tokens  # stream interval 0: one event per token
        first, last = stream.token_events[0], stream.token_events[-1]
        seen = (stream.times[last] - stream.times[first]) / (tokens - 1)
        assert 0.7 * expected <= seen <= 1.5 * expected  # what a client measures, loosely


@pytest.mark.asyncio
async def test_stream_interval_coalesces_tokens_into_few_events() -> None:
    async with (
        deployment(alpha_ms=2.0, stream_interval_ms=50) as dep,
        aiohttp.ClientSession() as session,
    ):
        stream = await post_stream(session, dep.gateway_url, {"prompt": "p", "max_tokens": 100})

    assert stream.text == " tok" * 100
    # 200 ms of generation, one event per 50 ms after the immediate first token.
    assert 2 <= len(stream.token_events) <= 12
    assert stream.events[stream.token_events[0]]["choices"][0]["text"] == " tok"


@pytest.mark.asyncio
async def test_batch_limit_makes_requests_wait() -> None:
    async with (
        deployment(alpha_ms=3.0, max_batch_size=2) as dep,
        aiohttp.ClientSession() as session,
    ):
        url = dep.replicas[0].url
        body = {"prompt": "p", "max_tokens": 100}
        pending = [
            asyncio.create_task(session.post(dep.gateway_url + "/v1/completions", json=body))
            for _ in range(4)
        ]
        seen: dict[str, float] = {}

        async def queued() -> bool:
            seen.update(await scrape(session, url))
            return seen["vllm:num_requests_waiting"] > 0

        await eventually(queued, "num_requests_waiting > 0")
        assert seen["vllm:num_requests_running"] == 2
        # the KV blocks the two running requests hold (a few) over the default cache's
        assert 0.0 < seen["vllm:kv_cache_usage_perc"] < 0.001
        for response in await asyncio.gather(*pending):
            assert response.status == 200
            response.release()
        metrics = await scrape(session, url)

    assert metrics["vllm:request_queue_time_seconds_count"] == 4
    # Two requests waited for the first two to finish (100 steps of 3 ms each).
    assert metrics["vllm:request_queue_time_seconds_sum"] >= 2 * 0.9 * 0.3
    assert metrics["vllm:num_requests_waiting"] == 0
    assert metrics["vllm:time_to_first_token_seconds_sum"] >= 2 * 0.9 * 0.3


@pytest.mark.asyncio
async def test_scaling_up_spreads_load_and_scaling_down_drains_gracefully() -> None:
    tokens = 100
    async with (
        deployment(alpha_ms=4.0, max_batch_size=1) as dep,
        aiohttp.ClientSession() as session,
    ):
        status = await scale(session, dep, 2)
        assert status["desired"] == 2
        assert [r["name"] for r in status["replicas"]] == ["vllm-0", "vllm-1"]
        new_url = status["replicas"][1]["url"]
        assert new_url != status["replicas"][0]["url"]
        assert (await scrape(session, new_url))["vllm:request_success_total"] == 0

        # Least outstanding requests: each replica gets one running and one waiting.
        body = {"prompt": "p", "max_tokens": tokens, "stream_options": {"include_usage": True}}
        clients = [
            asyncio.create_task(post_stream(session, dep.gateway_url, body)) for _ in range(4)
        ]

        async def one_running_one_waiting_each() -> bool:
            replicas = (await control(session, dep))["replicas"]
            return all(r["running"] == 1 and r["waiting"] == 1 for r in replicas)

        await eventually(one_running_one_waiting_each, "the gateway to spread the requests")

        status = await scale(session, dep, 1)
        assert [r["name"] for r in status["replicas"]] == ["vllm-0"]
        assert [r["name"] for r in status["terminating"]] == ["vllm-1"]
        async with session.post(new_url + "/v1/completions", json=body) as response:
            assert response.status == 503  # out of the rotation, not taking new work

        # Every client sees a complete stream: vllm-1's running request finished there,
        # its waiting one was sent again through the gateway to vllm-0.
        for stream in await asyncio.gather(*clients):
            assert stream.done and stream.text == " tok" * tokens
            assert stream.events[-1]["usage"]["completion_tokens"] == tokens
        assert (await scrape(session, dep.replicas[0].url))["vllm:request_success_total"] == 3

        async def closed() -> bool:
            return not (await control(session, dep))["terminating"]

        await eventually(closed, "vllm-1 to close")
        async with aiohttp.ClientSession() as fresh:
            with pytest.raises(aiohttp.ClientConnectorError):
                await fresh.get(new_url + "/metrics")

        status = await scale(session, dep, 2)
        assert [r["name"] for r in status["replicas"]] == ["vllm-0", "vllm-2"]


@pytest.mark.asyncio
async def test_new_replica_takes_traffic_after_its_startup_delay() -> None:
    async with (
        deployment(startup_delay_s=0.5) as dep,
        aiohttp.ClientSession() as session,
    ):
        status = await scale(session, dep, 2)
        assert [r["state"] for r in status["replicas"]] == ["ready", "starting"]
        starting_url = status["replicas"][1]["url"]
        async with session.get(starting_url + "/health") as response:
            assert response.status == 503
        assert (await scrape(session, starting_url))["vllm:num_requests_running"] == 0

        async def ready() -> bool:
            return [r["state"] for r in (await control(session, dep))["replicas"]] == [
                "ready",
                "ready",
            ]

        await eventually(ready, "the new replica to become ready")
        async with session.get(starting_url + "/health") as response:
            assert response.status == 200


@pytest.mark.asyncio
async def test_no_replica_answers_503_until_scaled_up() -> None:
    async with deployment(replicas=0) as dep, aiohttp.ClientSession() as session:
        assert (await control(session, dep)) == {
            "replicas": [],
            "terminating": [],
            "desired": 0,
            "arrivals_total": 0,
            "held": 0,
            "held_total": 0,
        }
        chat = {"messages": [{"role": "user", "content": "x"}]}
        for path, body in (("/v1/completions", {"prompt": "x"}), ("/v1/chat/completions", chat)):
            async with session.post(dep.gateway_url + path, json=body) as response:
                assert response.status == 503
                error = (await response.json())["error"]
                assert error["code"] == 503 and error["message"]
        async with session.get(dep.gateway_url + "/v1/models") as response:
            assert response.status == 503
        async with session.get(dep.gateway_url + "/health") as response:
            assert response.status == 503

        await dep.set_replicas(1)

        async with session.post(
            dep.gateway_url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}
        ) as response:
            assert response.status == 200


@pytest.mark.asyncio
async def test_client_disconnect_aborts_its_request() -> None:
    async with (
        deployment(alpha_ms=5.0, max_batch_size=1, stream_interval_ms=0) as dep,
        aiohttp.ClientSession() as session,
    ):
        body = {"prompt": "p", "max_tokens": 10_000, "stream": True}
        response = await session.post(dep.gateway_url + "/v1/completions", json=body)
        assert response.status == 200
        await response.content.readline()  # the first token
        response.close()

        async def aborted() -> bool:
            replica = (await control(session, dep))["replicas"][0]
            return bool(replica["running"] == 0)

        await eventually(aborted, "the request to be aborted")
        metrics = await scrape(session, dep.replicas[0].url)
        # as in vLLM, an abort is no finish: it only left the running gauge; what the
        # request did before (prefill, tokens) stays counted
        assert metrics["vllm:request_success_total"] == 0
        assert metrics["vllm:request_generation_tokens_count"] == 0
        assert metrics["vllm:e2e_request_latency_seconds_count"] == 0
        assert metrics["vllm:prompt_tokens_total"] == 1
        assert metrics["vllm:time_to_first_token_seconds_count"] == 1
        assert metrics["vllm:generation_tokens_total"] >= 1
        assert metrics["vllm:num_requests_running"] == 0
        async with session.get(dep.replicas[0].url + "/metrics") as exposition:
            text = await exposition.text()
        reasons = {
            s.labels["finished_reason"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "vllm:request_success_total"
        }
        assert reasons == {"stop": 0.0, "length": 0.0, "abort": 0.0}


@pytest.mark.asyncio
async def test_metrics_are_recorded_when_vllm_records_them() -> None:
    """While a request streams: its prompt tokens and TTFT counted at its first token, an
    inter-token latency per later token; the success counter and the per-request
    histograms only once it finishes."""
    async with (
        deployment(alpha_ms=5.0, stream_interval_ms=0) as dep,
        aiohttp.ClientSession() as session,
    ):
        url = dep.replicas[0].url
        body = {"prompt": "four words of prompt", "max_tokens": 40, "stream": True}
        async with session.post(dep.gateway_url + "/v1/completions", json=body) as response:
            assert response.status == 200
            await response.content.readline()  # the first token's event
            first = await scrape(session, url)
            assert first["vllm:prompt_tokens_total"] == 4
            assert first["vllm:time_to_first_token_seconds_count"] == 1
            assert first["vllm:request_success_total"] == 0

            async def decoding() -> bool:
                seen = await scrape(session, url)
                return seen["vllm:inter_token_latency_seconds_count"] >= 5

            await eventually(decoding, "inter-token latencies before the finish")
            during = await scrape(session, url)
            assert during["vllm:request_success_total"] == 0
            assert during["vllm:request_prompt_tokens_count"] == 0
            assert during["vllm:e2e_request_latency_seconds_count"] == 0
            tokens = during["vllm:inter_token_latency_seconds_count"]
            assert during["vllm:generation_tokens_total"] == 1 + tokens
            assert during["vllm:inter_token_latency_seconds_sum"] / tokens == pytest.approx(
                0.005, rel=0.05
            )
            await read_stream(response)
        done = await scrape(session, url)

    assert done["vllm:request_success_total"] == 1
    assert done["vllm:inter_token_latency_seconds_count"] == 39
    assert done["vllm:generation_tokens_total"] == 40
    assert done["vllm:request_generation_tokens_sum"] == 40
    assert done["vllm:prompt_tokens_total"] == 4  # once, at the first token
    assert done["vllm:time_to_first_token_seconds_count"] == 1


def small_cache(blocks: int, block_size: int, **profile: Any) -> EmulatedDeployment:
    return EmulatedDeployment(
        EmulatorConfig(
            model=MODEL,
            profile=ServingProfile(num_gpu_blocks=blocks, block_size=block_size, **profile),
            stream_interval_ms=0,
        )
    )


@pytest.mark.asyncio
async def test_a_request_longer_than_the_kv_cache_gets_vllms_400() -> None:
    """10 blocks of 16 tokens hold a request of at most 9 x 16 = 144 tokens (admission
    keeps a block to spare): 1 + 144 is refused as vLLM refuses a request over
    max_model_len, before it reaches an engine; 1 + 143 is served."""
    async with (
        small_cache(10, 16, alpha_ms=1.0, beta_ms=0.0, max_batch_size=4) as dep,
        aiohttp.ClientSession() as session,
    ):
        for url in (dep.gateway_url, dep.replicas[0].url):
            body = {"prompt": "p", "max_tokens": 144}
            async with session.post(url + "/v1/completions", json=body) as response:
                assert response.status == 400
                error = (await response.json())["error"]
            assert error["type"] == "BadRequestError" and error["code"] == 400
            assert error["param"] == "input_tokens"
            assert "You passed 1 input tokens and requested 144 output tokens" in error["message"]
            assert "context length is only 144 tokens" in error["message"]
        async with session.get(dep.gateway_url + "/v1/models") as response:
            assert (await response.json())["data"][0]["max_model_len"] == 144
        body = {"prompt": "p", "max_tokens": 143}
        async with session.post(dep.gateway_url + "/v1/completions", json=body) as response:
            assert response.status == 200
            assert (await response.json())["usage"]["completion_tokens"] == 143
        assert [r.running + r.waiting for r in dep.replicas] == [0]  # nothing left queued
        assert dep._replicas[0].outstanding == 0  # nor counted by the gateway's balancing


@pytest.mark.asyncio
async def test_a_request_resumed_after_preemption_records_its_gap() -> None:
    """Two 40-token requests on 60 blocks of 1 token: together they outgrow the cache
    (1 + k each, 2 + 2k > 60 near k = 30), the newer one is preempted and readmitted
    when the other finishes. vLLM observes its first token after readmission as one
    inter-token latency, the eviction included: 2 x 39 gaps and 80 tokens in all, one
    gap of several 5 ms steps."""
    async with (
        small_cache(60, 1, alpha_ms=5.0, beta_ms=0.0, max_batch_size=4) as dep,
        aiohttp.ClientSession() as session,
    ):
        body = {"prompt": "p", "max_tokens": 40}
        url = dep.gateway_url + "/v1/completions"

        async def post() -> None:
            async with session.post(url, json=body) as response:
                assert response.status == 200

        await asyncio.gather(post(), post())
        async with session.get(dep.replicas[0].url + "/metrics") as response:
            text = await response.text()

    itl = "vllm:inter_token_latency_seconds"
    samples = {
        (s.name, s.labels.get("le")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[itl + "_count", None] == 2 * 39
    assert samples["vllm:generation_tokens_total", None] == 80
    assert samples[itl + "_bucket", "0.01"] == 2 * 39 - 1  # the resumed gap is longer
    assert samples[itl + "_sum", None] > (2 * 39 - 1) * 0.005 + 0.01


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    args = [
        *("--model", MODEL, "--alpha-ms", "1", "--beta-ms", "0.1", "--max-batch-size", "4"),
        *("--replicas", "2", "--ready-file", str(ready), "--vllm-version", "0.10"),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "adapter.emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once serving
        endpoints = json.loads(line)
        assert json.loads(ready.read_text()) == endpoints
        assert [r["name"] for r in endpoints["replicas"]] == ["vllm-0", "vllm-1"]
        models = requests.get(endpoints["gateway"] + "/v1/models", timeout=5).json()
        assert models["data"][0]["id"] == MODEL
        status = requests.get(endpoints["control"] + "/replicas", timeout=5).json()
        assert status["desired"] == 2
        exposition = requests.get(endpoints["replicas"][0]["url"] + "/metrics", timeout=5).text
        # 0.10's per-token latency histogram has only the old name
        assert "vllm:time_per_output_token_seconds_count{" in exposition
        assert "inter_token_latency" not in exposition

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def test_cli_accepts_the_known_vllm_versions_only(capsys: pytest.CaptureFixture[str]) -> None:
    required = ["--model", MODEL, "--alpha-ms", "1", "--beta-ms", "0", "--max-batch-size", "1"]
    parser = build_parser()
    assert parser.parse_args(required).vllm_version == "0.34"
    assert parser.parse_args([*required, "--vllm-version", "0.11"]).vllm_version == "0.11"
    with pytest.raises(SystemExit):
        parser.parse_args([*required, "--vllm-version", "0.9"])
    assert "invalid choice: '0.9'" in capsys.readouterr().err

"""The emulator's gateway as an llm-d router: requests held while no replica is ready, the
EPP's queue series, read by scraping it and through a real Prometheus. Real HTTP on
127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from adapter.collect.gateway import GatewayEndpoint, GatewayPrometheus, GatewayScrape
from adapter.collect.prometheus import PrometheusSettings, PrometheusSource
from adapter.emulator.batching import ServingProfile
from adapter.emulator.server import EmulatedDeployment, EmulatorConfig
from tests.prometheus_server import PrometheusServer, poll_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

MODEL = "unsloth/Meta-Llama-3.1-8B"
KEY = ("team-a", MODEL)


def parked_deployment(hold_s: float) -> EmulatedDeployment:
    profile = ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=16)
    return EmulatedDeployment(
        EmulatorConfig(model=MODEL, profile=profile, replicas=0, hold_s=hold_s)
    )


async def post(session: aiohttp.ClientSession, url: str) -> int:
    body = {"prompt": "a b c", "max_tokens": 2}
    async with session.post(url + "/v1/completions", json=body) as response:
        await response.read()
        return response.status


async def test_a_held_request_is_in_the_queue_series_and_served_once_a_replica_is_ready() -> None:
    async with parked_deployment(hold_s=60) as dep, aiohttp.ClientSession() as session:
        source = GatewayScrape(
            [GatewayEndpoint(url=dep.gateway_url + "/metrics", namespace="team-a")]
        )
        idle = await asyncio.to_thread(source.collect, [KEY])
        assert idle.waiting(KEY) == 0  # the queue is exported: nothing waits

        request = asyncio.create_task(post(session, dep.gateway_url))

        async def one_waiting() -> float | None:
            report = await asyncio.to_thread(source.collect, [KEY])
            return report.waiting(KEY) or None

        assert await poll_async(one_waiting, timeout_s=10, what="the held request") == 1
        report = await asyncio.to_thread(source.collect, [KEY])
        assert report.queues[KEY].queue_bytes > 0
        assert not request.done()

        await dep.set_replicas(1)
        assert await asyncio.wait_for(request, 10) == 200
        after = await asyncio.to_thread(source.collect, [KEY])
        assert (after.waiting(KEY), dep.held_total) == (0, 1)
        source.close()


async def test_a_request_held_past_the_hold_time_gets_503() -> None:
    async with parked_deployment(hold_s=0.2) as dep, aiohttp.ClientSession() as session:
        started = time.monotonic()
        assert await post(session, dep.gateway_url) == 503
        assert time.monotonic() - started >= 0.2
        assert dep.held == 0


async def test_prometheus_reads_the_queue_with_the_gateways_namespace_target_label(
    prometheus_server: PrometheusServer,
) -> None:
    async with parked_deployment(hold_s=60) as dep, aiohttp.ClientSession() as session:
        address = dep.gateway_url.removeprefix("http://")
        prometheus_server.add_target(address, {"namespace": "team-a", "job_hint": "epp"})
        source = PrometheusSource(PrometheusSettings(url=prometheus_server.url))
        gateway = GatewayPrometheus(source.instant)
        # the same model in another namespace is not confused with it: the series carry
        # the scrape target's namespace
        keys = [KEY, ("team-b", MODEL)]
        try:
            request = asyncio.create_task(post(session, dep.gateway_url))

            async def waiting() -> float | None:
                report = await asyncio.to_thread(gateway.collect, keys)
                return report.waiting(KEY) or None

            assert await poll_async(waiting, timeout_s=20, what="Prometheus to see it") == 1
            report = await asyncio.to_thread(gateway.collect, keys)
            assert report.waiting(("team-b", MODEL)) == 0
            await dep.set_replicas(1)
            assert await asyncio.wait_for(request, 10) == 200
        finally:
            prometheus_server.remove_target(address)
            source.close()

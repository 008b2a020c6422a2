"""Health follows snapshot freshness; reflection is switchable; SIGTERM sets the stop event."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from adapter.scaler import SERVICE_NAME, ServerSettings, install_signal_handlers, serve_until
from tests.test_scaler_support import NS, STALENESS_S, Box, running

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def statuses(health: Any) -> tuple[int, int]:
    """Health of the whole server and of the ExternalScaler service."""
    whole = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    scaler = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
    return whole.status, scaler.status


@pytest.mark.asyncio
async def test_health_follows_the_snapshot() -> None:
    box = Box()
    async with (
        running(box) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        assert await statuses(health) == (NOT_SERVING, NOT_SERVING)  # no snapshot yet

        box.publish({(NS, "chat"): 1})
        await server.refresh_health()
        assert await statuses(health) == (SERVING, SERVING)

        box.clock.advance(STALENESS_S - 1.0)
        await server.refresh_health()
        assert await statuses(health) == (SERVING, SERVING)  # old, not yet stale

        box.clock.advance(2.0)
        await server.refresh_health()
        assert await statuses(health) == (NOT_SERVING, NOT_SERVING)  # stale

        box.publish({(NS, "chat"): 1})
        await server.refresh_health()
        assert await statuses(health) == (SERVING, SERVING)


@pytest.mark.asyncio
async def test_health_watch_sees_the_first_snapshot_and_shutdown() -> None:
    """No explicit refresh: `notify()` (what the engine calls) updates health by itself."""
    box = Box()
    async with (
        running(box) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        )

        async def next_status() -> int:
            message = await asyncio.wait_for(watch.read(), timeout=10)
            return int(message.status)

        assert await next_status() == NOT_SERVING
        box.publish({(NS, "chat"): 1})  # calls server.notify()
        assert await next_status() == SERVING
        stopping = asyncio.ensure_future(server.stop(grace_s=30.0))
        assert await next_status() == NOT_SERVING
        watch.cancel()  # a Watch stream would otherwise hold the grace period to its end
        await asyncio.wait_for(stopping, timeout=10)


async def listed_services(port: int) -> set[str]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(timeout=10)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        response = await call.read()
        await call.done_writing()
        return {service.name for service in response.list_services_response.service}


@pytest.mark.asyncio
async def test_reflection_lists_the_service_only_when_enabled() -> None:
    box = Box()
    on = ServerSettings(address="127.0.0.1:0", reflection=True)
    async with running(box, server_settings=on) as server:
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= await listed_services(server.port)

    async with running(box) as server:  # reflection is off by default
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await listed_services(server.port)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.asyncio
async def test_sigterm_stops_the_server_gracefully() -> None:
    box = Box()
    box.publish({(NS, "chat"): 1})
    stop = asyncio.Event()
    remove = install_signal_handlers(stop)
    try:
        async with running(box) as server:
            serving = asyncio.ensure_future(serve_until(server, stop))
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(serving, timeout=10)
            assert stop.is_set()
            assert server.stopping.is_set()
    finally:
        remove()
    # The handlers are gone again: the default SIGTERM disposition is back.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

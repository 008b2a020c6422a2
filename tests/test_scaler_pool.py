"""The external scaler in worker processes (ScalerPool, `wva-adapter run`): real
processes, real gRPC over 127.0.0.1.

Snapshots here carry the real `time.monotonic()`: the workers measure ages on
CLOCK_MONOTONIC, which every process shares. Every wait polls with a deadline. Channels
use a local subchannel pool so that each one is its own TCP connection (the kernel
spreads connections, not calls, among the workers); `pool.installed()` tells which
cycle every worker acknowledged.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.cli import InputError, parse_run_settings
from adapter.emulator.metrics import MetricsServer
from adapter.engine import Snapshot
from adapter.scaler import (
    SERVICE_NAME,
    ScalerPool,
    ScalerSettings,
    ServerSettings,
    TlsFiles,
    WorkerError,
)
from adapter.scaler import pool as pool_module
from adapter.scaler.feed import (
    CompactDecision,
    CompactSnapshot,
    Stop,
    decode,
    encode,
    encode_snapshot,
    frame,
    read_frame,
)
from tests.prometheus_server import poll_async
from tests.test_fault_support import Adapter, until
from tests.test_scaler_support import NS, decision, make_pki

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DEADLINE_S = 30.0


def snapshot(
    cycle: int, desired: Mapping[tuple[str, str], int | None], age_s: float = 0.0
) -> Snapshot:
    return Snapshot(
        cycle=cycle,
        timestamp=time.time() - age_s,
        monotonic=time.monotonic() - age_s,
        duration_s=0.01,
        decisions={
            key: decision(*key, value, "" if value is not None else "metrics are warming up")
            for key, value in desired.items()
        },
    )


@asynccontextmanager
async def pool_of(
    workers: int, staleness_s: float = 45.0, **server: Any
) -> AsyncIterator[ScalerPool]:
    settings = ServerSettings(address="127.0.0.1:0", health_poll_s=0.05, **server)
    pool = ScalerPool(settings, ScalerSettings(staleness_s=staleness_s), workers=workers)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.stop(grace_s=1.0)


def connection(port: int, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """A channel with a TCP connection of its own (no shared subchannel)."""
    target, options = f"127.0.0.1:{port}", [("grpc.use_local_subchannel_pool", 1)]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


def ref(name: str, **metadata: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name=name, namespace=NS, scalerMetadata=metadata)


async def answer(channel: grpc.aio.Channel, name: str, **metadata: str) -> tuple[Any, str]:
    """(metric value, "") or (status code, details) for GetMetrics."""
    stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
    try:
        reply = await stub.GetMetrics(
            pb.GetMetricsRequest(scaledObjectRef=ref(name, **metadata)), timeout=10
        )
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return reply.metricValues[0].metricValue, ""


async def health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
    return int(reply.status)


async def acknowledged(pool: ScalerPool, cycle: int) -> None:
    """Every worker has installed `cycle`."""

    async def probe() -> bool | None:
        return True if pool.installed() == [cycle] * pool.workers else None

    await poll_async(probe, timeout_s=DEADLINE_S, what=f"every worker at cycle {cycle}")


# -- the feed ------------------------------------------------------------------------------


def test_the_compact_snapshot_keeps_what_the_scaler_reads() -> None:
    original = snapshot(7, {(NS, "chat"): 3, (NS, "idle"): 0, (NS, "new"): None})
    stream = io.BytesIO(frame(encode_snapshot(original)) + frame(encode(Stop(2.5))))
    copy = decode(read_frame(stream) or b"")
    assert isinstance(copy, CompactSnapshot)
    assert (copy.cycle, copy.monotonic) == (7, original.monotonic)
    assert copy.decisions == {
        (NS, "chat"): CompactDecision(3, "optimized"),
        (NS, "idle"): CompactDecision(0, "optimized"),
        (NS, "new"): CompactDecision(None, "metrics are warming up"),
    }
    assert decode(read_frame(stream) or b"") == Stop(2.5)
    assert read_frame(stream) is None  # end of stream: the parent is gone
    assert read_frame(io.BytesIO(frame(b"abcdef")[:-1])) is None  # cut short


def test_run_needs_at_least_one_grpc_worker() -> None:
    assert parse_run_settings(["run", "--grpc-workers", "1"], {}).grpc_workers == 1
    with pytest.raises(InputError, match="--grpc-workers=0: must be >= 1"):
        parse_run_settings(["run", "--grpc-workers", "0"], {})


# -- a pool --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_workers_serve_every_pushed_snapshot_and_judge_staleness_themselves() -> None:
    staleness = 3.0
    async with pool_of(2, staleness_s=staleness) as pool:
        channels = [connection(pool.port) for _ in range(6)]
        try:
            for channel in channels:  # before the first cycle
                assert await health(channel) == NOT_SERVING
                code, details = await answer(channel, "chat")
                assert code == grpc.StatusCode.UNAVAILABLE
                assert "no optimization result yet" in details

            pool.publish(snapshot(1, {(NS, "chat"): 3, (NS, "new"): None}))
            await acknowledged(pool, 1)
            for channel in channels:
                assert await answer(channel, "chat") == (3, "")
                assert await health(channel) == SERVING
            code, details = await answer(channels[0], "gone")
            assert (code, f"{NS}/gone not found" in details) == (grpc.StatusCode.NOT_FOUND, True)
            code, details = await answer(channels[0], "new")
            assert code == grpc.StatusCode.UNAVAILABLE and "warming up" in details
            code, details = await answer(channels[0], "chat", variantAutoscalingname="x")
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "variantAutoscalingname" in details

            # Close to the limit: served now, refused later without any new push.
            pool.publish(snapshot(2, {(NS, "chat"): 5}, age_s=staleness - 1.5))
            await acknowledged(pool, 2)
            assert await answer(channels[0], "chat") == (5, "")

            async def all_refuse() -> bool | None:
                for channel in channels:
                    code, details = await answer(channel, "chat")
                    if code != grpc.StatusCode.UNAVAILABLE or "staleness limit" not in details:
                        return None
                    if await health(channel) != NOT_SERVING:
                        return None
                return True

            await poll_async(all_refuse, timeout_s=DEADLINE_S, what="staleness seen by workers")

            pool.publish(snapshot(3, {(NS, "chat"): 2}))
            await acknowledged(pool, 3)
            for channel in channels:
                assert await answer(channel, "chat") == (2, "")
                assert await health(channel) == SERVING
        finally:
            for channel in channels:
                await channel.close()


@pytest.mark.asyncio
async def test_stream_is_active_follows_pushes_and_ends_cleanly_when_the_pool_stops() -> None:
    async with pool_of(1) as pool:
        pool.publish(snapshot(1, {(NS, "chat"): 0}))
        await acknowledged(pool, 1)
        async with connection(pool.port) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
            call = stub.StreamIsActive(ref("chat"))
            assert (await call.read()).result is False
            pool.publish(snapshot(2, {(NS, "chat"): 2}))
            assert (await call.read()).result is True
            pool.publish(snapshot(3, {(NS, "chat"): 0}))
            assert (await call.read()).result is False
            await pool.stop(grace_s=5.0)
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK


@pytest.mark.asyncio
async def test_a_worker_that_dies_is_replaced_and_fed_the_latest_snapshot() -> None:
    async with pool_of(2) as pool:
        pool.publish(snapshot(1, {(NS, "chat"): 4}))
        await acknowledged(pool, 1)
        victim = pool.pids[1]
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool | None:
            return True if pool.pids[1] != victim and pool.installed() == [1, 1] else None

        await poll_async(replaced, timeout_s=DEADLINE_S, what="a new worker at cycle 1")
        for _ in range(4):
            async with connection(pool.port) as channel:
                assert await answer(channel, "chat") == (4, "")


@pytest.mark.asyncio
async def test_serving_says_whether_a_bound_worker_is_alive_snapshot_or_not() -> None:
    """`serving()` is the adapter's /readyz: the port is served, whatever the snapshot."""
    pool = ScalerPool(ServerSettings(address="127.0.0.1:0"), workers=1)
    assert not pool.serving()  # not started: nothing bound
    await pool.start()
    try:
        assert pool.serving()  # no snapshot at all, and still serving (UNAVAILABLE per call)
        victim = pool.pids[0]
        os.kill(victim, signal.SIGKILL)

        async def down() -> bool | None:
            return True if not pool.serving() else None

        async def back() -> bool | None:
            return True if pool.serving() and pool.pids[0] != victim else None

        # the only worker is gone: not serving until its replacement has bound the port
        await poll_async(down, timeout_s=DEADLINE_S, what="serving() False with no worker")
        await poll_async(back, timeout_s=DEADLINE_S, what="serving() True with a replacement")
        async with connection(pool.port) as channel:
            code, details = await answer(channel, "chat")
            assert code == grpc.StatusCode.UNAVAILABLE and "no optimization result" in details
        # stopping: not serving from the moment the workers are told, before they exit
        stopping = asyncio.ensure_future(pool.stop(grace_s=5.0))
        await asyncio.wait_for(pool._stopping.wait(), timeout=10)
        assert not pool.serving()
        await asyncio.wait_for(stopping, timeout=DEADLINE_S)
    finally:
        await pool.stop(grace_s=1.0)
    assert not pool.serving()  # stopped


@pytest.mark.asyncio
async def test_stopping_while_a_replacement_starts_kills_the_replacement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawned: list[asyncio.subprocess.Process] = []

    async def mute() -> asyncio.subprocess.Process:
        """A replacement that never reports a port: it reads its feed forever."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdin.buffer.read()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        spawned.append(process)
        return process

    pool = ScalerPool(ServerSettings(address="127.0.0.1:0"), workers=2)
    await pool.start()
    monkeypatch.setattr(pool_module, "_spawn", mute)
    os.kill(pool.pids[1], signal.SIGKILL)

    async def starting() -> bool | None:
        return True if spawned else None

    await poll_async(starting, timeout_s=DEADLINE_S, what="a replacement being configured")
    await pool.stop(grace_s=0.5)
    # before: stop() waited out grace + margin, then left it running to serve later
    assert spawned[0].returncode is not None
    assert all(p.returncode is not None for p in spawned)


@pytest.mark.asyncio
async def test_a_supervisor_keeps_replacing_a_worker_after_an_unexpected_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_spawn = pool_module._spawn
    calls = 0

    async def flaky() -> asyncio.subprocess.Process:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("can't start new thread")  # e.g. the pod's process limit
        return await real_spawn()

    async with pool_of(2) as pool:
        pool.publish(snapshot(1, {(NS, "chat"): 3}))
        await acknowledged(pool, 1)
        monkeypatch.setattr(pool_module, "_spawn", flaky)
        victim = pool.pids[1]
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool | None:
            return True if pool.pids[1] != victim and pool.installed() == [1, 1] else None

        await poll_async(replaced, timeout_s=DEADLINE_S, what="a new worker at cycle 1")
        assert calls == 2
        assert "cannot restart scaler worker 1: can't start new thread" in caplog.text
        async with connection(pool.port) as channel:
            assert await answer(channel, "chat") == (3, "")


@pytest.mark.asyncio
async def test_a_port_taken_by_another_program_fails_the_start_with_its_address() -> None:
    with socket.socket() as taken:  # no SO_REUSEPORT: nobody can share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        pool = ScalerPool(ServerSettings(address=address), workers=2)
        with pytest.raises(WorkerError, match=f"cannot serve on {address}"):
            await pool.start()


@pytest.mark.asyncio
async def test_tls_and_reflection_reach_the_workers(tmp_path: Any) -> None:
    pki = make_pki(tmp_path)
    tls = TlsFiles(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca)
    async with pool_of(1, tls=tls, reflection=True) as pool:
        pool.publish(snapshot(1, {(NS, "chat"): 6}))
        await acknowledged(pool, 1)
        good = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.read_bytes(),
            private_key=pki.client_key.read_bytes(),
            certificate_chain=pki.client_cert.read_bytes(),
        )
        async with connection(pool.port, good) as channel:
            assert await answer(channel, "chat") == (6, "")
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo(timeout=10)
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            listed = {s.name for s in (await call.read()).list_services_response.service}
            await call.done_writing()
            assert SERVICE_NAME in listed
        anonymous = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        async with connection(pool.port, anonymous) as channel:
            code, _ = await answer(channel, "chat")
            assert code == grpc.StatusCode.UNAVAILABLE  # mutual TLS: no client certificate


# -- `wva-adapter run` -----------------------------------------------------------------------


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def workers_of(adapter: Adapter, count: int) -> list[int]:
    assert adapter.process is not None
    pid = adapter.process.pid

    def probe() -> list[int] | None:
        adapter.alive()
        found = children(pid)
        return found if len(found) == count else None

    return until(probe, timeout_s=DEADLINE_S, what=f"{count} worker processes")


def test_sigterm_stops_every_worker_and_the_adapter_exits_cleanly(
    busy_pod: MetricsServer,
) -> None:
    with Adapter(["--scrape", busy_pod.url], "--interval", "1", "--grpc-workers", "2") as adapter:
        workers = workers_of(adapter, 2)
        adapter.wait_value(2)
        adapter.sigterm()
        assert adapter.wait_exit(20) == 0, adapter.stderr
    assert not any(running(pid) for pid in workers)
    assert "Traceback" not in adapter.stderr, adapter.stderr
    for index in (0, 1):
        assert f"[scaler worker {index}]: external scaler stopped" in adapter.stderr


def test_workers_stop_when_the_adapter_is_killed(busy_pod: MetricsServer) -> None:
    with Adapter(["--scrape", busy_pod.url], "--interval", "1", "--grpc-workers", "2") as adapter:
        workers = workers_of(adapter, 2)
        adapter.wait_value(2)
        adapter.kill()  # SIGKILL: no shutdown at all in the parent
        until(
            lambda: True if not any(running(pid) for pid in workers) else None,
            timeout_s=DEADLINE_S,
            what="the orphaned workers to stop",
        )
    assert "the adapter process went away" in adapter.stderr

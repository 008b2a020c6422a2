"""ScalerService behaviour over a real loopback channel: streams, shutdown, metadata."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.scaler import (
    MetadataError,
    ScalerSettings,
    ServerSettings,
    TriggerMetadata,
    metric_name,
    variant_key,
)
from tests.test_scaler_support import NS, STALENESS_S, Box, running


def ref(name: str, namespace: str = NS, **metadata: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=metadata)


def stub(port: int) -> tuple[grpc.aio.Channel, Any]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return channel, pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]


# -- metadata -----------------------------------------------------------------------


def test_metadata_defaults_to_the_scaled_object() -> None:
    assert variant_key("chat", NS, {}) == (NS, "chat")
    assert variant_key("chat", NS, {"scalerAddress": "a:1", "enableTLS": "true"}) == (NS, "chat")
    assert variant_key(
        "so", "apps", {"variantAutoscalingName": "va", "variantAutoscalingNamespace": "ml"}
    ) == ("ml", "va")
    assert variant_key("so", "apps", {"variantAutoscalingName": "va"}) == ("apps", "va")
    assert metric_name("ml", "va") == "wva-ml-va"


@pytest.mark.parametrize(
    ("name", "namespace", "metadata", "key"),
    [
        ("chat", NS, {"variantAutoscalingname": "x"}, "variantAutoscalingname"),
        ("chat", NS, {"threshold": "5", "zzz": "1"}, "threshold"),
        ("chat", NS, {"variantAutoscalingName": ""}, "variantAutoscalingName"),
        ("chat", NS, {"variantAutoscalingName": "Bad_Name"}, "variantAutoscalingName"),
        ("chat", NS, {"variantAutoscalingNamespace": "a.b"}, "variantAutoscalingNamespace"),
        ("", NS, {}, "name"),
        ("chat", "", {}, "namespace"),
    ],
)
def test_bad_metadata_names_the_key(
    name: str, namespace: str, metadata: dict[str, str], key: str
) -> None:
    with pytest.raises(MetadataError) as caught:
        variant_key(name, namespace, metadata)
    assert caught.value.key == key
    assert key in str(caught.value)


def test_trigger_metadata_model_forbids_unknown_keys() -> None:
    parsed = TriggerMetadata.model_validate({"variantAutoscalingName": "va"})
    assert parsed.variant_autoscaling_name == "va"
    with pytest.raises(ValueError, match="typo"):
        TriggerMetadata.model_validate({"typo": "1"})


def test_settings_follow_the_cycle_interval() -> None:
    assert ScalerSettings.for_interval(15.0).staleness_s == 45.0
    assert ScalerSettings.for_interval(10.0, cycles=2).staleness_s == 20.0
    with pytest.raises(ValueError):
        ScalerSettings(staleness_s=0)


# -- RPCs -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_get_metrics_echoes_the_requested_name_and_serves_both_fields() -> None:
    box = Box()
    box.publish({(NS, "chat"): 7})
    async with running(box) as server:
        channel, client = stub(server.port)
        async with channel:
            got = await client.GetMetrics(
                pb.GetMetricsRequest(scaledObjectRef=ref("chat"), metricName="custom")
            )
            assert [
                (v.metricName, v.metricValue, v.metricValueFloat) for v in got.metricValues
            ] == [("custom", 7, 7.0)]
            got = await client.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref("chat")))
            assert got.metricValues[0].metricName == "wva-llm-d-chat"


async def next_message(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), timeout=10)


@pytest.mark.asyncio
async def test_stream_is_active_pushes_changes_and_ends_cleanly_on_shutdown() -> None:
    box = Box()
    box.publish({(NS, "chat"): 0})
    settings = ScalerSettings(staleness_s=STALENESS_S, heartbeat_s=3600.0)  # no heartbeats
    async with running(box, settings=settings) as server:
        channel, client = stub(server.port)
        async with channel:
            call = client.StreamIsActive(ref("chat"))
            assert (await next_message(call)).result is False  # sent at once
            box.publish({(NS, "chat"): 0})  # same activity: nothing is pushed ...
            box.publish({(NS, "chat"): 2})  # ... this change is
            assert (await next_message(call)).result is True
            box.publish({(NS, "chat"): 4})  # still active: no push
            box.publish({(NS, "chat"): 0})
            assert (await next_message(call)).result is False
            # Publishing from another thread (the engine's worker thread) works too.
            worker = threading.Thread(target=box.publish, args=({(NS, "chat"): 1},))
            worker.start()
            worker.join()
            assert (await next_message(call)).result is True

            await server.stop(grace_s=5.0)
            assert await next_message(call) is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK


@pytest.mark.asyncio
async def test_stream_is_active_heartbeats_and_errors_when_the_answer_goes_away() -> None:
    box = Box()
    box.publish({(NS, "chat"): 1})
    settings = ScalerSettings(staleness_s=STALENESS_S, heartbeat_s=0.05)
    async with running(box, settings=settings) as server:
        channel, client = stub(server.port)
        async with channel:
            call = client.StreamIsActive(ref("chat"))
            # No snapshot change: the same answer is repeated by the heartbeat.
            for _ in range(3):
                assert (await next_message(call)).result is True
            box.clock.advance(STALENESS_S + 1.0)
            server.notify()
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:  # heartbeats already sent may come first
                    assert (await next_message(call)).result is True
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "staleness limit" in (ended.value.details() or "")


@pytest.mark.asyncio
async def test_stream_metric_spec_sends_the_spec_then_holds_until_shutdown() -> None:
    box = Box()
    box.publish({(NS, "chat"): 1})
    async with running(box) as server:
        channel, client = stub(server.port)
        async with channel:
            call = client.StreamMetricSpec(ref("chat"))
            spec = (await next_message(call)).metricSpecs[0]
            assert (spec.metricName, spec.targetSize, spec.targetSizeFloat) == (
                "wva-llm-d-chat",
                1,
                1.0,
            )
            box.publish({(NS, "chat"): 3})  # the spec does not change: nothing more
            await server.stop(grace_s=5.0)
            assert await next_message(call) is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK


async def refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


def spec_fields(response: Any) -> list[tuple[str, int, float]]:
    return [(s.metricName, s.targetSize, s.targetSizeFloat) for s in response.metricSpecs]


@pytest.mark.asyncio
async def test_the_metric_spec_is_served_before_any_snapshot_and_the_value_is_not() -> None:
    """KEDA < 2.20 builds its HPA from the first GetMetricSpec; a refusal there left an
    HPA on CPU 80 % for good (kedacore/keda#7729). The value waits for a decision."""
    box = Box()  # no cycle has run
    async with running(box) as server:
        channel, client = stub(server.port)
        async with channel:
            spec = await client.GetMetricSpec(ref("chat"), timeout=10)
            assert spec_fields(spec) == [("wva-llm-d-chat", 1, 1.0)]
            # through the metadata keys, for a VA in another namespace
            spec = await client.GetMetricSpec(
                ref("so", "apps", variantAutoscalingName="va", variantAutoscalingNamespace="ml"),
                timeout=10,
            )
            assert spec_fields(spec) == [("wva-ml-va", 1, 1.0)]
            call = client.StreamMetricSpec(ref("chat"))
            assert spec_fields(await next_message(call)) == [("wva-llm-d-chat", 1, 1.0)]
            call.cancel()

            request = pb.GetMetricsRequest(scaledObjectRef=ref("chat"))
            code, details = await refused(client.GetMetrics(request, timeout=10))
            assert code == grpc.StatusCode.UNAVAILABLE
            assert "no optimization result yet" in details
            code, _ = await refused(client.IsActive(ref("chat"), timeout=10))
            assert code == grpc.StatusCode.UNAVAILABLE

            # bad metadata stays a refusal, snapshot or not
            code, details = await refused(
                client.GetMetricSpec(ref("chat", variantAutoscalingname="x"), timeout=10)
            )
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "variantAutoscalingname" in details


@pytest.mark.asyncio
async def test_the_metric_spec_of_a_va_no_cycle_has_seen_is_served_its_value_not_found() -> None:
    box = Box()
    box.publish({(NS, "chat"): 2})  # fresh, but without "new"
    async with running(box) as server:
        channel, client = stub(server.port)
        async with channel:
            spec = await client.GetMetricSpec(ref("new"), timeout=10)
            assert spec_fields(spec) == [("wva-llm-d-new", 1, 1.0)]
            request = pb.GetMetricsRequest(scaledObjectRef=ref("new"))
            code, details = await refused(client.GetMetrics(request, timeout=10))
            assert code == grpc.StatusCode.NOT_FOUND and f"{NS}/new not found" in details
            code, _ = await refused(client.IsActive(ref("new"), timeout=10))
            assert code == grpc.StatusCode.NOT_FOUND

            # stale: the spec still, the value UNAVAILABLE (the VA may exist by now)
            box.clock.advance(STALENESS_S + 1.0)
            spec = await client.GetMetricSpec(ref("new"), timeout=10)
            assert spec_fields(spec) == [("wva-llm-d-new", 1, 1.0)]
            code, details = await refused(client.GetMetrics(request, timeout=10))
            assert code == grpc.StatusCode.UNAVAILABLE and "staleness limit" in details


class Gate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Holds every GetMetrics call until released, so a call is in flight at stop()."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        if handler_call_details.method.endswith("/GetMetrics"):
            self.entered.set()
            await self.release.wait()
        return await continuation(handler_call_details)


@pytest.mark.asyncio
async def test_graceful_stop_lets_an_in_flight_call_finish_and_refuses_new_ones() -> None:
    box = Box()
    box.publish({(NS, "chat"): 3})
    gate = Gate()
    server_settings = ServerSettings(address="127.0.0.1:0", interceptors=(gate,), grace_s=30.0)
    async with running(box, server_settings=server_settings) as server:
        channel, client = stub(server.port)
        async with channel:
            in_flight = asyncio.ensure_future(
                client.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref("chat")), timeout=30)
            )
            await asyncio.wait_for(gate.entered.wait(), timeout=10)
            stopping = asyncio.ensure_future(server.stop())
            await asyncio.wait_for(server.stopping.wait(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.IsActive(ref("chat"), timeout=10)
            # Refused, not served: UNAVAILABLE (GOAWAY seen) or CANCELLED (stream reset).
            assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            assert not stopping.done()  # still waiting for the in-flight call
            gate.release.set()
            answer = await asyncio.wait_for(in_flight, timeout=10)
            assert answer.metricValues[0].metricValue == 3
            await asyncio.wait_for(stopping, timeout=10)

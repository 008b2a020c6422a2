"""Wire compatibility: a client built from an independently written copy of KEDA's proto.

The proto below is written from the field table of KEDA's externalscaler.proto (names,
numbers, types; the released four RPCs only), not copied from proto/externalscaler.proto.
It is compiled with grpc_tools.protoc in a temp dir and used by a client in a separate
process (two definitions of `externalscaler.*` cannot share one descriptor pool), which
calls the in-process server over loopback and prints what it got as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from grpc_tools import protoc  # type: ignore[import-untyped]

from tests.test_scaler_support import NS, STALENESS_S, Box, running

KEDA_PROTO = """
syntax = "proto3";
package externalscaler;
option go_package = ".;externalscaler";

service ExternalScaler {
  rpc IsActive(ScaledObjectRef) returns (IsActiveResponse) {}
  rpc StreamIsActive(ScaledObjectRef) returns (stream IsActiveResponse) {}
  rpc GetMetricSpec(ScaledObjectRef) returns (GetMetricSpecResponse) {}
  rpc GetMetrics(GetMetricsRequest) returns (GetMetricsResponse) {}
}

message ScaledObjectRef {
  string name = 1;
  string namespace = 2;
  map<string, string> scalerMetadata = 3;
}
message IsActiveResponse { bool result = 1; }
message GetMetricSpecResponse { repeated MetricSpec metricSpecs = 1; }
message MetricSpec {
  string metricName = 1;
  int64 targetSize = 2;
  double targetSizeFloat = 3;
}
message GetMetricsRequest {
  ScaledObjectRef scaledObjectRef = 1;
  string metricName = 2;
}
message GetMetricsResponse { repeated MetricValue metricValues = 1; }
message MetricValue {
  string metricName = 1;
  int64 metricValue = 2;
  double metricValueFloat = 3;
}
"""

CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    from google.protobuf import json_format
    import externalscaler_pb2 as pb, externalscaler_pb2_grpc as pb_grpc

    address, calls = sys.argv[1], json.loads(sys.argv[2])
    out = []
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        for rpc, request in calls:
            kind = pb.GetMetricsRequest if rpc == "GetMetrics" else pb.ScaledObjectRef
            message = json_format.ParseDict(request, kind())
            try:
                if rpc == "StreamIsActive":
                    stream = stub.StreamIsActive(message, timeout=10)
                    response = next(stream)
                    stream.cancel()
                else:
                    response = getattr(stub, rpc)(message, timeout=10)
                body = json_format.MessageToDict(
                    response, always_print_fields_with_no_presence=True
                )
                out.append({"code": "OK", "body": body})
            except grpc.RpcError as error:
                out.append({"code": error.code().name, "details": error.details()})
    print(json.dumps(out))
    """
)

RPCS = ("GetMetricSpec", "GetMetrics", "IsActive", "StreamIsActive")


@pytest.fixture(scope="module")
def keda_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keda-proto")
    (directory / "externalscaler.proto").write_text(KEDA_PROTO)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{directory}",
            f"--python_out={directory}",
            f"--grpc_python_out={directory}",
            str(directory / "externalscaler.proto"),
        ]
    )
    assert code == 0
    (directory / "client.py").write_text(CLIENT)
    return directory


async def call_all(
    client_dir: Path, port: int, ref: dict[str, Any], metric: str = ""
) -> dict[str, dict[str, Any]]:
    """Every RPC for one ScaledObjectRef, through the KEDA-proto client."""
    calls = [
        (rpc, {"scaledObjectRef": ref, "metricName": metric} if rpc == "GetMetrics" else ref)
        for rpc in RPCS
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(client_dir / "client.py"),
        f"127.0.0.1:{port}",
        json.dumps(calls),
        cwd=client_dir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return dict(zip(RPCS, json.loads(stdout), strict=True))


def spec_of(metric: str) -> dict[str, Any]:
    """The GetMetricSpec answer (as the KEDA-proto client prints it) for one metric name."""
    return {
        "code": "OK",
        "body": {
            "metricSpecs": [{"metricName": metric, "targetSize": "1", "targetSizeFloat": 1.0}]
        },
    }


def ref(name: str, namespace: str = NS, **metadata: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "scalerMetadata": {"scalerAddress": "wva-adapter.wva-system:9090", **metadata},
    }


@pytest.mark.asyncio
@pytest.mark.integration
async def test_keda_client_sees_documented_answers(keda_client: Path) -> None:
    box = Box()
    box.publish({(NS, "chat"): 3, (NS, "idle"): 0, (NS, "cold"): None})
    async with running(box) as server:
        # Solved VA, selected by the ScaledObject's own name and namespace.
        got = await call_all(keda_client, server.port, ref("chat"), metric="wva-llm-d-chat")
        assert got["GetMetricSpec"] == {
            "code": "OK",
            "body": {
                "metricSpecs": [
                    {"metricName": "wva-llm-d-chat", "targetSize": "1", "targetSizeFloat": 1.0}
                ]
            },
        }
        assert got["GetMetrics"] == {
            "code": "OK",
            "body": {
                "metricValues": [
                    {"metricName": "wva-llm-d-chat", "metricValue": "3", "metricValueFloat": 3.0}
                ]
            },
        }
        assert got["IsActive"] == {"code": "OK", "body": {"result": True}}
        assert got["StreamIsActive"] == {"code": "OK", "body": {"result": True}}

        # Solved VA, selected through the metadata keys from another ScaledObject.
        got = await call_all(
            keda_client,
            server.port,
            ref("so-chat", "apps", variantAutoscalingName="chat", variantAutoscalingNamespace=NS),
        )
        assert got["GetMetricSpec"]["body"]["metricSpecs"][0]["metricName"] == "wva-llm-d-chat"
        metric = got["GetMetrics"]["body"]["metricValues"][0]
        assert (metric["metricName"], metric["metricValue"]) == ("wva-llm-d-chat", "3")

        # A solved VA at zero is a real zero: value 0, inactive.
        got = await call_all(keda_client, server.port, ref("idle"))
        metric = got["GetMetrics"]["body"]["metricValues"][0]
        assert (metric["metricValue"], metric["metricValueFloat"]) == ("0", 0.0)
        assert got["IsActive"]["body"] == {"result": False}
        assert got["StreamIsActive"]["body"] == {"result": False}

        # Unknown VA: its spec is served (it depends only on the reference; KEDA < 2.20
        # would otherwise build an HPA on CPU), the value is NOT_FOUND naming it.
        got = await call_all(keda_client, server.port, ref("nope"))
        assert got["GetMetricSpec"] == spec_of("wva-llm-d-nope")
        for rpc in ("GetMetrics", "IsActive", "StreamIsActive"):
            assert got[rpc]["code"] == "NOT_FOUND", rpc
            assert "llm-d/nope" in got[rpc]["details"], rpc

        # Bad metadata: INVALID_ARGUMENT naming the key (a typo of ours).
        got = await call_all(keda_client, server.port, ref("chat", variantAutoscalingname="x"))
        for rpc in RPCS:
            assert got[rpc]["code"] == "INVALID_ARGUMENT", rpc
            assert "variantAutoscalingname" in got[rpc]["details"], rpc
        got = await call_all(
            keda_client, server.port, ref("chat", variantAutoscalingNamespace="Not_A_Namespace")
        )
        for rpc in RPCS:
            assert got[rpc]["code"] == "INVALID_ARGUMENT", rpc
            assert "variantAutoscalingNamespace" in got[rpc]["details"], rpc

        # Unsolved VA: UNAVAILABLE with the reason; never a value. Its spec is served.
        got = await call_all(keda_client, server.port, ref("cold"))
        for rpc in ("GetMetrics", "IsActive", "StreamIsActive"):
            assert got[rpc]["code"] == "UNAVAILABLE", rpc
            assert "llm-d/cold" in got[rpc]["details"], rpc
            assert "metrics are warming up" in got[rpc]["details"], rpc
        assert got["GetMetricSpec"]["code"] == "OK"
        assert got["GetMetricSpec"]["body"]["metricSpecs"][0]["metricName"] == "wva-llm-d-cold"

        # Stale snapshot: no value for anybody, UNAVAILABLE saying how old it is.
        box.clock.advance(STALENESS_S + 1.0)
        got = await call_all(keda_client, server.port, ref("chat"))
        for rpc in ("GetMetrics", "IsActive", "StreamIsActive"):
            assert got[rpc]["code"] == "UNAVAILABLE", rpc
            assert "46.0 s old" in got[rpc]["details"], rpc
            assert "staleness limit" in got[rpc]["details"], rpc
        # The spec does not depend on freshness, for a known VA ...
        assert got["GetMetricSpec"] == spec_of("wva-llm-d-chat")
        # ... nor an unknown one, whose value may exist by now: UNAVAILABLE, not NOT_FOUND.
        got = await call_all(keda_client, server.port, ref("nope"))
        assert got["GetMetricSpec"] == spec_of("wva-llm-d-nope")
        for rpc in ("GetMetrics", "IsActive", "StreamIsActive"):
            assert got[rpc]["code"] == "UNAVAILABLE", rpc

        # A new cycle makes the answers fresh again.
        box.publish({(NS, "chat"): 5})
        got = await call_all(keda_client, server.port, ref("chat"))
        assert got["GetMetrics"]["body"]["metricValues"][0]["metricValueFloat"] == 5.0


@pytest.mark.asyncio
@pytest.mark.integration
async def test_keda_client_before_the_first_snapshot(keda_client: Path) -> None:
    box = Box()
    async with running(box) as server:
        # The spec from the first second (KEDA builds its HPA on it), the value not yet.
        got = await call_all(keda_client, server.port, ref("chat"))
        assert got["GetMetricSpec"] == spec_of("wva-llm-d-chat")
        for rpc in ("GetMetrics", "IsActive", "StreamIsActive"):
            assert got[rpc]["code"] == "UNAVAILABLE", rpc
            assert "no optimization result yet" in got[rpc]["details"], rpc
        # Bad metadata is refused before any cycle too.
        got = await call_all(keda_client, server.port, ref("chat", variantAutoscalingname="x"))
        for rpc in RPCS:
            assert got[rpc]["code"] == "INVALID_ARGUMENT", rpc

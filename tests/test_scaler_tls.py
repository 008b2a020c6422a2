"""TLS and mutual TLS with certificates made by the openssl CLI for this test."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.scaler import ServerSettings, TlsFiles
from tests.test_scaler_support import NS, Box, Pki, make_pki, running


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def get_metrics(
    port: int,
    credentials: grpc.ChannelCredentials | None,
) -> int:
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        request = pb.GetMetricsRequest(
            scaledObjectRef=pb.ScaledObjectRef(name="chat", namespace=NS)
        )
        response = await stub.GetMetrics(request, timeout=10)
        return int(response.metricValues[0].metricValue)


@pytest.mark.asyncio
async def test_tls(pki: Pki) -> None:
    box = Box()
    box.publish({(NS, "chat"): 2})
    tls = TlsFiles(cert=pki.server_cert, key=pki.server_key)
    async with running(box, server_settings=ServerSettings("127.0.0.1:0", tls=tls)) as server:
        trusted = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        assert await get_metrics(server.port, trusted) == 2
        # A client that does not trust the server's CA is refused by its own handshake.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            untrusting = grpc.ssl_channel_credentials(
                root_certificates=(pki.ca.parent / "rogue-ca.pem").read_bytes()
            )
            await get_metrics(server.port, untrusting)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # Plaintext against a TLS port fails.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await get_metrics(server.port, None)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def client_credentials(pki: Pki, cert: Path | None, key: Path | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


@pytest.mark.asyncio
async def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: Pki) -> None:
    box = Box()
    box.publish({(NS, "chat"): 4})
    tls = TlsFiles(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca)
    async with running(box, server_settings=ServerSettings("127.0.0.1:0", tls=tls)) as server:
        good = client_credentials(pki, pki.client_cert, pki.client_key)
        assert await get_metrics(server.port, good) == 4
        for cert, key in ((None, None), (pki.rogue_cert, pki.rogue_key)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await get_metrics(server.port, client_credentials(pki, cert, key))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

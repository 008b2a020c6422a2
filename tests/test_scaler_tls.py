"""TLS and mutual TLS with certificates made by the openssl CLI for this test."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.scaler import ServerSettings, TlsError, TlsFiles
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


def served_copy(pki: Pki, directory: Path) -> TlsFiles:
    """The server's files copied where a test may replace them, as the kubelet does."""
    directory.mkdir()
    cert, key = directory / "tls.crt", directory / "tls.key"
    cert.write_bytes(pki.server_cert.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    return TlsFiles(cert=cert, key=key)


def swap_in(target: Path, content: bytes) -> None:
    """Replace a file at once (a new inode), as a Secret volume update does."""
    staged = target.with_suffix(".new")
    staged.write_bytes(content)
    os.replace(staged, target)


@pytest.mark.asyncio
async def test_a_renewed_certificate_is_served_to_new_connections(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "renewed").mkdir()
    renewed = make_pki(tmp_path / "renewed")  # another CA: tells the two certificates apart
    tls = served_copy(pki, tmp_path / "secret")
    box = Box()
    box.publish({(NS, "chat"): 5})
    async with running(box, server_settings=ServerSettings("127.0.0.1:0", tls=tls)) as server:
        old_trust = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        new_trust = grpc.ssl_channel_credentials(root_certificates=renewed.ca.read_bytes())
        assert await get_metrics(server.port, old_trust) == 5
        swap_in(tls.key, renewed.server_key.read_bytes())
        swap_in(tls.cert, renewed.server_cert.read_bytes())
        assert await get_metrics(server.port, new_trust) == 5
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await get_metrics(server.port, old_trust)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.asyncio
async def test_files_that_cannot_serve_keep_the_loaded_certificate(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = served_copy(pki, tmp_path / "secret")
    box = Box()
    box.publish({(NS, "chat"): 7})
    async with running(box, server_settings=ServerSettings("127.0.0.1:0", tls=tls)) as server:
        trusted = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        swap_in(tls.key, pki.client_key.read_bytes())  # caught halfway: a key of another pair
        for _ in range(2):
            assert await get_metrics(server.port, trusted) == 7
        warnings = [r for r in caplog.records if "cannot be used yet" in r.getMessage()]
        assert len(warnings) == 1  # once per version of the files, not per connection
        assert "do not load as a pair" in warnings[0].getMessage()


def test_tls_files_are_checked_up_front_and_named(pki: Pki, tmp_path: Path) -> None:
    empty = tmp_path / "empty-ca.pem"
    empty.write_bytes(b"")
    with pytest.raises(TlsError, match=f"TLS file {empty} holds no PEM block"):
        TlsFiles(pki.server_cert, pki.server_key, client_ca=empty).check()
    with pytest.raises(TlsError, match="do not load as a pair"):
        TlsFiles(pki.server_cert, pki.client_key).check()
    missing = tmp_path / "missing.key"
    with pytest.raises(TlsError, match=f"TLS file {missing}: No such file"):
        TlsFiles(pki.server_cert, missing).check()
    TlsFiles(pki.server_cert, pki.server_key, client_ca=pki.ca).check()  # a good set passes

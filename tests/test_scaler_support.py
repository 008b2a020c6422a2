"""Shared helpers for the external-scaler tests (no tests here).

Snapshots are built by hand; the server runs in-process on 127.0.0.1:0; time is a
ManualClock, so staleness is reached by advancing it, never by waiting.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from adapter.clock import ManualClock
from adapter.engine import Snapshot, VariantDecision
from adapter.scaler import ScalerServer, ScalerService, ScalerSettings, ServerSettings

NS = "llm-d"
STALENESS_S = 45.0


def decision(namespace: str, name: str, desired: int | None, reason: str = "") -> VariantDecision:
    return VariantDecision(
        namespace=namespace,
        name=name,
        model="meta/llama-3.1-8b",
        accelerator="H100" if desired is not None else "",
        desired_replicas=desired,
        current_replicas=1,
        reason=reason or ("optimized" if desired is not None else "no allocation"),
    )


def snapshot(
    clock: ManualClock, cycle: int, desired: Mapping[tuple[str, str], int | None]
) -> Snapshot:
    decisions = {
        key: decision(*key, value, "" if value is not None else "metrics are warming up")
        for key, value in desired.items()
    }
    return Snapshot(
        cycle=cycle,
        timestamp=clock.now(),
        monotonic=clock.monotonic(),
        duration_s=0.01,
        decisions=decisions,
    )


@dataclass
class Box:
    """Stands in for the engine: holds the latest snapshot; `publish` mimics on_snapshot."""

    clock: ManualClock = field(default_factory=ManualClock)
    latest: Snapshot | None = None
    server: ScalerServer | None = None
    cycle: int = 0

    def source(self) -> Snapshot | None:
        return self.latest

    def publish(self, desired: Mapping[tuple[str, str], int | None]) -> Snapshot:
        self.cycle += 1
        self.latest = snapshot(self.clock, self.cycle, desired)
        if self.server is not None:
            self.server.notify()
        return self.latest


@asynccontextmanager
async def running(
    box: Box,
    *,
    settings: ScalerSettings | None = None,
    server_settings: ServerSettings | None = None,
) -> AsyncIterator[ScalerServer]:
    service = ScalerService(
        box.source, box.clock, settings or ScalerSettings(staleness_s=STALENESS_S)
    )
    server = ScalerServer(service, server_settings or ServerSettings(address="127.0.0.1:0"))
    box.server = server
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=1.0)
        box.server = None


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["/usr/bin/openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # signed by another CA
    rogue_key: Path


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a
    client certificate from an unrelated CA (EC P-256 keys, generated with the openssl CLI)."""

    def key(name: str) -> None:
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name, cwd=directory)

    def ca(name: str) -> None:
        key(f"{name}.key")
        openssl(
            "req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN={name}", cwd=directory,
        )  # fmt: skip

    def leaf(name: str, issuer: str, ext: str) -> None:
        key(f"{name}.key")
        openssl(
            "req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=directory,
        )  # fmt: skip
        (directory / f"{name}.ext").write_text(ext)
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey",
            f"{issuer}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext", cwd=directory,
        )  # fmt: skip

    ca("ca")
    ca("rogue-ca")
    leaf(
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    leaf("client", "ca", "extendedKeyUsage=clientAuth\n")
    leaf("rogue", "rogue-ca", "extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        rogue_cert=directory / "rogue.pem",
        rogue_key=directory / "rogue.key",
    )

"""The grpc.aio server around ScalerService: health, reflection, TLS, graceful stop.

Health (`grpc.health.v1.Health`, for the whole server "" and for
`externalscaler.ExternalScaler`): NOT_SERVING until the first snapshot, SERVING while
the latest snapshot is within the staleness limit, NOT_SERVING once it is stale and for
good once shutdown starts. It is re-evaluated at every `notify()` and every
`health_poll_s` (real time), and on demand with `refresh_health()`.

It runs in each serving process of a `ScalerPool` (adapter/scaler/pool.py), which is how
the `run` command serves; in the engine's own process it would share the GIL with the
cycle (answers then wait behind it):

    pool = ScalerPool(ServerSettings(address="0.0.0.0:9443"), ScalerSettings.for_interval(15))
    engine = Engine(..., clock=WallClock(), on_snapshot=pool.publish)
    stop = asyncio.Event()
    remove = install_signal_handlers(stop)
    await pool.start()
    await asyncio.gather(engine.run(stop), serve_until(pool, stop))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.scaler.service import SERVICE_NAME, ScalerService

log = logging.getLogger(__name__)

HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class TlsError(ValueError):
    """A TLS file that cannot serve; the message names it."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key; with `client_ca`, mutual TLS.

    The files are re-read when they change (cert-manager renews the Secret behind them
    and the kubelet swaps the mounted files): every new connection's handshake checks
    them first, so a renewed certificate is served without a restart. Connections that
    are open keep the session they have.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate signed by it

    @property
    def paths(self) -> tuple[Path, ...]:
        return (
            (self.cert, self.key)
            if self.client_ca is None
            else (self.cert, self.key, self.client_ca)
        )

    def check(self) -> None:
        """Raise TlsError naming the file that grpc would otherwise reject as a failed bind
        (a key not matching its certificate) or accept and then fail every client with (an
        empty client CA)."""
        for path in self.paths:
            try:
                data = path.read_bytes()
            except OSError as error:
                raise TlsError(f"TLS file {path}: {error.strerror or error}") from error
            if b"-----BEGIN " not in data:
                raise TlsError(f"TLS file {path} holds no PEM block")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key, password="")
        except ssl.SSLError as error:
            raise TlsError(
                f"TLS certificate {self.cert} and key {self.key} do not load as a pair: {error}"
            ) from error
        if self.client_ca is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except ssl.SSLError as error:
                raise TlsError(f"TLS client CA {self.client_ca}: {error}") from error

    def credentials(self) -> grpc.ServerCredentials:
        """Checked credentials that follow the files (see the class)."""
        self.check()
        loaded = _LoadedTls(self)
        return grpc.dynamic_ssl_server_credentials(
            loaded.configuration(),
            loaded.renewed,
            require_client_authentication=self.client_ca is not None,
        )


class _LoadedTls:
    """The files' last loaded version, and the handshake hook that reloads them."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.version = self._version()
        self.rejected: object = ()  # the version last reported as unusable

    def _version(self) -> tuple[tuple[int, int, int], ...]:
        stats = [path.stat() for path in self.files.paths]  # follows the kubelet's links
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        files = self.files
        ca = files.client_ca.read_bytes() if files.client_ca is not None else None
        return grpc.ssl_server_certificate_configuration(
            [(files.key.read_bytes(), files.cert.read_bytes())], root_certificates=ca
        )

    def renewed(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's fetcher, before each new connection: new files, or None to keep serving
        the loaded ones. Files caught half-written or broken keep the old ones (said once
        per version); the next connection looks again."""
        version = None  # unknown while a file is missing (caught mid-swap)
        try:
            version = self._version()
            if version == self.version:
                return None
            self.files.check()
            configuration = self.configuration()
        except (OSError, TlsError) as error:
            if version != self.rejected:
                log.warning(
                    "TLS files changed but cannot be used yet, keeping the loaded ones: %s", error
                )
                self.rejected = version
            return None
        except Exception:  # grpc only logs what escapes here
            log.exception("TLS files: reload failed, keeping the loaded ones")
            return None
        self.version = version
        log.info("TLS files changed: serving the renewed certificate to new connections")
        return configuration


@dataclass(frozen=True, slots=True)
class ServerSettings:
    address: str = "0.0.0.0:9090"  # host:port; port 0 picks a free port (see ScalerServer.port)
    reflection: bool = False
    tls: TlsFiles | None = None
    grace_s: float = 5.0  # in-flight calls get this long to finish on stop
    health_poll_s: float = 1.0  # staleness re-check period for the health status
    interceptors: Sequence[grpc.aio.ServerInterceptor] = field(default_factory=tuple)
    options: Sequence[tuple[str, int | str]] = field(default_factory=tuple)


class ScalerServer:
    """Build, start and gracefully stop the external-scaler gRPC server."""

    def __init__(self, service: ScalerService, settings: ServerSettings | None = None) -> None:
        self.service = service
        self.settings = settings or ServerSettings()
        self.health = health.aio.HealthServicer()
        self.stopping = asyncio.Event()  # set once stop() begins (before in-flight calls end)
        self._server: grpc.aio.Server | None = None
        self._port = 0
        self._serving: bool | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def started(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return self._port

    async def start(self) -> int:
        """Bind, start serving, and return the bound port."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        self._loop = asyncio.get_running_loop()
        self.service.attach(self._loop)
        server = grpc.aio.server(
            interceptors=list(self.settings.interceptors), options=list(self.settings.options)
        )
        pb_grpc.add_ExternalScalerServicer_to_server(self.service, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.settings.reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
            )
        tls = self.settings.tls
        if tls is None:
            port = server.add_insecure_port(self.settings.address)
        else:
            port = server.add_secure_port(self.settings.address, tls.credentials())
        if port == 0:  # older grpcio returns 0 instead of raising
            raise RuntimeError(f"cannot bind {self.settings.address}")
        await self.refresh_health()
        await server.start()
        self._server, self._port = server, int(port)
        self._health_task = asyncio.create_task(self._watch_health(), name="scaler-health")
        log.info(
            "external scaler listening on port %d (%s%s)",
            port,
            "plaintext" if tls is None else ("mutual TLS" if tls.client_ca else "TLS"),
            ", reflection" if self.settings.reflection else "",
        )
        return self._port

    def notify(self) -> None:
        """A new snapshot was published: push stream updates, re-check health. Thread-safe."""
        self.service.notify()

    async def refresh_health(self) -> None:
        """Set the health status from the service's readiness now."""
        if self.stopping.is_set():
            return
        readiness = self.service.readiness()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if readiness.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
        if readiness.serving != self._serving:
            level = logging.INFO if readiness.serving or self._serving is None else logging.WARNING
            log.log(
                level,
                "external scaler %s: %s",
                "SERVING" if readiness.serving else "NOT_SERVING",
                readiness.reason,
            )
            self._serving = readiness.serving

    async def _watch_health(self) -> None:
        while not self.stopping.is_set():
            changed = self.service.changed()
            await self.refresh_health()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.health_poll_s):
                    await changed.wait()

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, end streams cleanly, refuse new calls, let in-flight calls finish."""
        server = self._server
        if server is None or self.stopping.is_set():
            return
        grace = self.settings.grace_s if grace_s is None else grace_s
        self.stopping.set()
        await self.health.enter_graceful_shutdown()
        self.service.close()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        log.info("external scaler stopping (grace %.1f s)", grace)
        await server.stop(grace)
        log.info("external scaler stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> ScalerServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class Serving(Protocol):
    """A ScalerServer (in this process) or a ScalerPool (in worker processes)."""

    @property
    def started(self) -> bool: ...

    async def start(self) -> int: ...

    async def stop(self, grace_s: float | None = None) -> None: ...


async def serve_until(server: Serving, stop: asyncio.Event) -> None:
    """Serve (starting the server if needed) until `stop` is set, then stop gracefully."""
    if not server.started:
        await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()


def install_signal_handlers(
    stop: asyncio.Event,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    loop: asyncio.AbstractEventLoop | None = None,
) -> Callable[[], None]:
    """Set `stop` on SIGTERM/SIGINT (Kubernetes pod termination); returns an uninstaller."""
    loop = loop or asyncio.get_running_loop()
    installed = list(signals)

    def on_signal(signum: signal.Signals) -> None:
        log.info("received %s, shutting down", signum.name)
        stop.set()

    for signum in installed:
        loop.add_signal_handler(signum, on_signal, signum)

    def remove() -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)

    return remove

"""KEDA external scaler: the gRPC face of the latest snapshot.

- `metadata`: which VariantAutoscaling a ScaledObject's trigger selects.
- `service`: the `externalscaler.ExternalScaler` servicer (reads only snapshots).
- `server`: the grpc.aio server with health, reflection, TLS and graceful stop.
- `pool`: that server in worker processes fed with every new snapshot (`feed`, `worker`),
  so that a running cycle never delays an answer.
"""

from adapter.scaler.metadata import MetadataError, TriggerMetadata, metric_name, variant_key
from adapter.scaler.pool import ScalerPool, WorkerError, default_workers
from adapter.scaler.server import (
    ScalerServer,
    ServerSettings,
    Serving,
    TlsError,
    TlsFiles,
    install_signal_handlers,
    serve_until,
)
from adapter.scaler.service import (
    SERVICE_NAME,
    Readiness,
    Refusal,
    ScalerService,
    ScalerSettings,
    ServedDecision,
    ServedSnapshot,
    SnapshotSource,
)

__all__ = [
    "SERVICE_NAME",
    "MetadataError",
    "Readiness",
    "Refusal",
    "ScalerPool",
    "ScalerServer",
    "ScalerService",
    "ScalerSettings",
    "ServedDecision",
    "ServedSnapshot",
    "ServerSettings",
    "Serving",
    "SnapshotSource",
    "TlsError",
    "TlsFiles",
    "TriggerMetadata",
    "WorkerError",
    "default_workers",
    "install_signal_handlers",
    "metric_name",
    "serve_until",
    "variant_key",
]

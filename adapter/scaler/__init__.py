"""KEDA external scaler: the gRPC face of the latest snapshot.

- `metadata`: which VariantAutoscaling a ScaledObject's trigger selects.
- `service`: the `externalscaler.ExternalScaler` servicer (reads only snapshots).
- `server`: the grpc.aio server with health, reflection, TLS and graceful stop.
"""

from adapter.scaler.metadata import MetadataError, TriggerMetadata, metric_name, variant_key
from adapter.scaler.server import (
    ScalerServer,
    ServerSettings,
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
    SnapshotSource,
)

__all__ = [
    "SERVICE_NAME",
    "MetadataError",
    "Readiness",
    "Refusal",
    "ScalerServer",
    "ScalerService",
    "ScalerSettings",
    "ServerSettings",
    "SnapshotSource",
    "TlsFiles",
    "TriggerMetadata",
    "install_signal_handlers",
    "metric_name",
    "serve_until",
    "variant_key",
]

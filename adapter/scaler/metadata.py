"""The ScaledObject trigger metadata our external scaler understands.

KEDA sends the ScaledObject's name and namespace plus the trigger's whole `metadata`
map (`scalerMetadata`). Two keys are ours:

- `variantAutoscalingName`: the VariantAutoscaling to serve (default: the ScaledObject's name);
- `variantAutoscalingNamespace`: its namespace (default: the ScaledObject's namespace).

KEDA's own connection keys (`scalerAddress`, `enableTLS`, `unsafeSsl`, and the TLS
material some docs put under `metadata`) are accepted and ignored. Any other key is
rejected: a typo such as `variantAutoscalingname` would otherwise silently fall back to
the default and select the wrong VariantAutoscaling.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

NAME_KEY = "variantAutoscalingName"
NAMESPACE_KEY = "variantAutoscalingNamespace"

# Keys KEDA itself puts into the trigger metadata for external scalers (connection / TLS).
KEDA_KEYS = frozenset(
    {
        "scalerAddress",
        "enableTLS",
        "unsafeSsl",
        "tlsCertFile",
        "caCert",
        "tlsClientCert",
        "tlsClientKey",
    }
)

# Kubernetes object names: DNS-1123 subdomain (VA names), label (namespaces).
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class MetadataError(ValueError):
    """Bad trigger metadata; `key` names the offending key (or ScaledObjectRef field)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class TriggerMetadata(BaseModel):
    """The trigger `metadata` of a ScaledObject using this scaler (unknown keys forbidden)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)

    variant_autoscaling_name: str | None = Field(default=None, alias=NAME_KEY)
    variant_autoscaling_namespace: str | None = Field(default=None, alias=NAMESPACE_KEY)
    # KEDA's connection keys: accepted, never used here.
    scaler_address: str | None = Field(default=None, alias="scalerAddress")
    enable_tls: str | None = Field(default=None, alias="enableTLS")
    unsafe_ssl: str | None = Field(default=None, alias="unsafeSsl")
    tls_cert_file: str | None = Field(default=None, alias="tlsCertFile")
    ca_cert: str | None = Field(default=None, alias="caCert", repr=False)
    tls_client_cert: str | None = Field(default=None, alias="tlsClientCert", repr=False)
    tls_client_key: str | None = Field(default=None, alias="tlsClientKey", repr=False)

    @field_validator("variant_autoscaling_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None:
            _check_name(value)
        return value

    @field_validator("variant_autoscaling_namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None:
            _check_namespace(value)
        return value


def _check_name(value: str) -> None:
    if not value or len(value) > 253 or not _SUBDOMAIN.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes object name")


def _check_namespace(value: str) -> None:
    if not value or len(value) > 63 or not _LABEL.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes namespace")


def parse_metadata(metadata: Mapping[str, str]) -> TriggerMetadata:
    """Validate the trigger metadata; raises MetadataError naming the first bad key."""
    unknown = sorted(key for key in metadata if key not in _ALLOWED)
    if unknown:
        raise MetadataError(
            unknown[0],
            f"unknown metadata key(s) {', '.join(repr(k) for k in unknown)}; "
            f"this scaler understands {NAME_KEY!r} and {NAMESPACE_KEY!r}",
        )
    try:
        return TriggerMetadata.model_validate(dict(metadata))
    except ValidationError as error:
        first = error.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "scalerMetadata"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise MetadataError(key, message) from error


_ALLOWED = frozenset({NAME_KEY, NAMESPACE_KEY}) | KEDA_KEYS


def variant_key(
    scaled_object_name: str, scaled_object_namespace: str, metadata: Mapping[str, str]
) -> tuple[str, str]:
    """(namespace, name) of the VariantAutoscaling a ScaledObjectRef selects.

    Raises MetadataError when the metadata is bad or a needed default is missing.
    Results are cached: KEDA sends the same few references over and over.
    """
    return _variant_key(
        scaled_object_name, scaled_object_namespace, tuple(sorted(metadata.items()))
    )


@lru_cache(maxsize=8192)
def _variant_key(
    so_name: str, so_namespace: str, items: tuple[tuple[str, str], ...]
) -> tuple[str, str]:
    parsed = parse_metadata(dict(items))
    name = parsed.variant_autoscaling_name
    if name is None:
        if not so_name:
            raise MetadataError("name", f"the ScaledObject name is empty and {NAME_KEY} is unset")
        try:
            _check_name(so_name)
        except ValueError as error:
            raise MetadataError("name", str(error)) from None
        name = so_name
    namespace = parsed.variant_autoscaling_namespace
    if namespace is None:
        if not so_namespace:
            raise MetadataError(
                "namespace", f"the ScaledObject namespace is empty and {NAMESPACE_KEY} is unset"
            )
        try:
            _check_namespace(so_namespace)
        except ValueError as error:
            raise MetadataError("namespace", str(error)) from None
        namespace = so_namespace
    return namespace, name


def metric_name(namespace: str, name: str) -> str:
    """The metric name served for a VariantAutoscaling: `wva-<namespace>-<name>`."""
    return f"wva-{namespace}-{name}"

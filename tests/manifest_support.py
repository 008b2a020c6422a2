"""Offline checks of the deployment manifests, shared by the manifest test modules.

`kubectl kustomize` renders (kustomize v5: components), built-in kinds are validated by
kubernetes-validate in strict mode, custom resources against our CRD's schema or, for
other projects' kinds (KEDA, cert-manager, Prometheus Operator), against the fields
their documentation lists.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from adapter.cli import parse_run_settings
from adapter.settings import RunSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KEDA = ROOT / "keda"
SAMPLES = DEPLOY / "samples"
COMPONENTS = DEPLOY / "components"
EXAMPLES = DEPLOY / "examples"
K8S_VERSION = "1.33"
ADAPTER_NS = "inferno-autoscaler-system"
KEDA_NS = "keda"  # KEDA's namespace with the kedacore/keda chart as docs/deploy.md installs it
CERT_MANAGER_NS = "cert-manager"  # cert-manager's cluster resource namespace (Helm default)

CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterIssuer",
    "ClusterTriggerAuthentication",
    "Node",
}
CUSTOM_GROUPS = {"llmd.ai", "keda.sh", "monitoring.coreos.com", "cert-manager.io"}

Doc = dict[str, Any]


# ---------------------------------------------------------------- kubectl / kustomize


def kubectl_candidates(prefix: str | None = None) -> list[str]:
    """Where kubectl is looked for, in order: the virtualenv's (pinned by `make test`),
    then PATH, then the machine's /usr/bin/kubectl."""
    found = [str(Path(prefix if prefix is not None else sys.prefix) / "bin" / "kubectl")]
    on_path = shutil.which("kubectl")
    if on_path:
        found.append(on_path)
    found.append("/usr/bin/kubectl")
    return found


def find_kubectl(prefix: str | None = None) -> str | None:
    for candidate in kubectl_candidates(prefix):
        path = Path(candidate)
        if path.is_file() and path.stat().st_mode & 0o111:
            return candidate
    return None


@functools.cache
def kubectl() -> str:
    found = find_kubectl()
    if found is None:
        pytest.fail(
            "kubectl is needed to render the manifests (`kubectl kustomize`); none found in "
            f"{', '.join(kubectl_candidates())}. Run `make test`: it installs the project's "
            "virtualenv, which carries a pinned kubectl."
        )
    return found


@functools.cache
def kustomize_version() -> tuple[int, ...]:
    """The kustomize version built into kubectl, e.g. (5, 5, 0)."""
    result = subprocess.run(
        [kubectl(), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"{kubectl()} version failed:\n{result.stderr}"
    text = json.loads(result.stdout).get("kustomizeVersion", "")
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text)
    assert match, f"{kubectl()}: no kustomize version in {result.stdout!r}"
    return tuple(int(part) for part in match.groups())


def kustomize(directory: Path) -> list[Doc]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def copy_layout(target: Path) -> Path:
    """deploy/ copied to `target/deploy`, and each example copied where docs/deploy.md
    says to put it: `target/overlays/<name>` (kustomize refuses an overlay inside its
    base). Returns `target/deploy`."""
    deploy = target / "deploy"
    shutil.copytree(DEPLOY, deploy)
    for example in example_dirs():
        shutil.copytree(example, target / "overlays" / example.name)
    return deploy


def render_component(deploy: Path, component: str, work: Path) -> list[Doc]:
    """The base with one component, through a throwaway overlay next to `deploy`."""
    overlay = work / f"with-{component}"
    overlay.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(deploy, overlay)
    (overlay / "kustomization.yaml").write_text(
        f"resources:\n  - {relative}\ncomponents:\n  - {relative}/components/{component}\n",
        encoding="utf-8",
    )
    return kustomize(overlay)


def kustomization_dirs() -> list[Path]:
    """Every folder under deploy/ that holds a kustomization.yaml."""
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def component_dirs() -> list[Path]:
    return sorted(p.parent for p in COMPONENTS.glob("*/kustomization.yaml"))


def example_dirs() -> list[Path]:
    return sorted(p.parent for p in EXAMPLES.glob("*/kustomization.yaml"))


# ---------------------------------------------------------------- loading


def load_all(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def load_one(path: Path) -> Doc:
    docs = load_all(path)
    assert len(docs) == 1, f"{path}: expected one document, found {len(docs)}"
    return docs[0]


def group(doc: Doc) -> str:
    api_version = str(doc["apiVersion"])
    return api_version.split("/")[0] if "/" in api_version else ""


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def named(docs: list[Doc], kind: str, prefix: str) -> Doc:
    """The one object of `kind` whose name is `prefix` or `prefix-<kustomize hash>`."""
    pattern = re.compile(re.escape(prefix) + r"(-[a-z0-9]{10})?")
    found = [d for d in by_kind(docs, kind) if pattern.fullmatch(d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {prefix}(-hash), found {len(found)}"
    return found[0]


def container(docs: list[Doc]) -> Doc:
    deployment = one(docs, "Deployment", "wva-adapter")
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    result: Doc = only
    return result


def settings_env(docs: list[Doc]) -> dict[str, str]:
    """The adapter's environment from its settings ConfigMap (envFrom)."""
    refs = [e["configMapRef"]["name"] for e in container(docs).get("envFrom", [])]
    assert len(refs) == 1, refs
    config_map = one(docs, "ConfigMap", refs[0])
    data: dict[str, str] = config_map["data"]
    return data


def run_settings(docs: list[Doc]) -> RunSettings:
    """What `wva-adapter run` makes of the rendered args and the settings ConfigMap."""
    return parse_run_settings(["run", *container(docs)["args"]], settings_env(docs))


def gateway_source(settings: RunSettings) -> object:
    """The gateway source `wva-adapter run` builds from these settings (None: none), past
    the checks of the sources' combination that it makes after parsing; raises
    adapter.cli.InputError where `run` would exit 2. Nothing is read or connected."""
    from adapter.cli import _gateway_source, _metrics_source

    return _gateway_source(settings, _metrics_source(settings, None))


# ---------------------------------------------------------------- validation


def kubernetes_validate() -> ModuleType:
    import kubernetes_validate as module

    result: ModuleType = module
    return result


def validate_builtin(kv: ModuleType, doc: Doc) -> None:
    try:
        kv.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as error:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        pytest.fail(f"{kind}/{name} does not validate against {K8S_VERSION}: {error.message}")


def va_schema() -> Doc:
    crd = load_one(DEPLOY / "crd-variantautoscalings.yaml")
    (version,) = crd["spec"]["versions"]
    schema: Doc = version["schema"]["openAPIV3Schema"]
    return schema


def unknown_fields(doc: Any, schema: Doc, path: str = "") -> list[str]:
    """Fields the API server would prune (or reject under strict field validation)."""
    if isinstance(doc, dict) and "properties" in schema:
        found = []
        for key, value in doc.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            elif not (path == "" and key == "metadata"):
                found += unknown_fields(value, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(doc, list) and "items" in schema:
        return [
            f
            for i, item in enumerate(doc)
            for f in unknown_fields(item, schema["items"], f"{path}[{i}]")
        ]
    return []


def schema_errors(doc: Doc, schema: Doc) -> list[str]:
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(doc)
    ]


# Fields of other projects' kinds, nested: a dict maps a field to its allowed sub-fields,
# a one-element list is a list of such items, None means "any value" (maps, scalars).

# keda.sh/v1alpha1 ScaledObject (KEDA 2.18-2.21 docs)
SCALED_OBJECT_FIELDS: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "metadata": None,
    "spec": {
        "scaleTargetRef": {
            "name": None,
            "apiVersion": None,
            "kind": None,
            "envSourceContainerName": None,
        },
        "pollingInterval": None,
        "cooldownPeriod": None,
        "initialCooldownPeriod": None,
        "idleReplicaCount": None,
        "minReplicaCount": None,
        "maxReplicaCount": None,
        "fallback": {"failureThreshold": None, "replicas": None, "behavior": None},
        "advanced": {
            "restoreToOriginalReplicaCount": None,
            "horizontalPodAutoscalerConfig": {"name": None, "behavior": None},
            "scalingModifiers": {
                "formula": None,
                "target": None,
                "activationTarget": None,
                "metricType": None,
            },
        },
        "triggers": [
            {
                "type": None,
                "name": None,
                "metadata": None,
                "authenticationRef": {"name": None, "kind": None},
                "metricType": None,
                "useCachedMetrics": None,
            }
        ],
    },
}
# keda.sh/v1alpha1 TriggerAuthentication and ClusterTriggerAuthentication (same spec)
TRIGGER_AUTHENTICATION_FIELDS: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "metadata": None,
    "spec": {
        "secretTargetRef": [{"parameter": None, "name": None, "key": None}],
        "env": [{"parameter": None, "name": None, "containerName": None}],
        "configMapTargetRef": [{"parameter": None, "name": None, "key": None}],
        "podIdentity": None,
        "hashiCorpVault": None,
        "azureKeyVault": None,
        "awsSecretManager": None,
        "gcpSecretManager": None,
        "boundServiceAccountToken": None,
    },
}
# monitoring.coreos.com/v1 PrometheusRule (Prometheus Operator API reference: RuleGroup,
# Rule); the rules themselves are checked by promtool (tests/test_alerts.py)
PROMETHEUS_RULE_FIELDS: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "metadata": None,
    "spec": {
        "groups": [
            {
                "name": None,
                "interval": None,
                "limit": None,
                "partial_response_strategy": None,
                "rules": [
                    {
                        "alert": None,
                        "record": None,
                        "expr": None,
                        "for": None,
                        "keep_firing_for": None,
                        "labels": None,
                        "annotations": None,
                    }
                ],
            }
        ]
    },
}
# monitoring.coreos.com/v1 ServiceMonitor (Prometheus Operator API reference)
SERVICE_MONITOR_FIELDS: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "metadata": None,
    "spec": {
        "selector": {"matchLabels": None, "matchExpressions": None},
        "namespaceSelector": {"any": None, "matchNames": None},
        "jobLabel": None,
        "targetLabels": None,
        "podTargetLabels": None,
        "sampleLimit": None,
        "targetLimit": None,
        "attachMetadata": None,
        "endpoints": [
            {
                "port": None,
                "targetPort": None,
                "path": None,
                "scheme": None,
                "interval": None,
                "scrapeTimeout": None,
                "honorLabels": None,
                "honorTimestamps": None,
                "tlsConfig": None,
                "bearerTokenSecret": None,
                "authorization": None,
                "basicAuth": None,
                "params": None,
                "relabelings": None,
                "metricRelabelings": None,
                "followRedirects": None,
                "enableHttp2": None,
                "filterRunning": None,
            }
        ],
    },
}
# cert-manager.io/v1 Certificate (cert-manager API reference)
CERTIFICATE_FIELDS: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "metadata": None,
    "spec": {
        "secretName": None,
        "secretTemplate": {"annotations": None, "labels": None},
        "commonName": None,
        "literalSubject": None,
        "subject": None,
        "dnsNames": None,
        "ipAddresses": None,
        "uris": None,
        "emailAddresses": None,
        "otherNames": None,
        "duration": None,
        "renewBefore": None,
        "renewBeforePercentage": None,
        "isCA": None,
        "usages": None,
        "privateKey": {"algorithm": None, "encoding": None, "size": None, "rotationPolicy": None},
        "issuerRef": {"name": None, "kind": None, "group": None},
        "keystores": None,
        "additionalOutputFormats": None,
        "encodeUsagesInRequest": None,
        "revisionHistoryLimit": None,
        "nameConstraints": None,
        "signatureAlgorithm": None,
    },
}
# cert-manager.io/v1 Issuer and ClusterIssuer
ISSUER_FIELDS: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "metadata": None,
    "spec": {
        "selfSigned": {"crlDistributionPoints": None},
        "ca": {
            "secretName": None,
            "crlDistributionPoints": None,
            "ocspServers": None,
            "issuingCertificateURL": None,
        },
        "acme": None,
        "vault": None,
        "venafi": None,
    },
}
ISSUER_TYPES = {"selfSigned", "ca", "acme", "vault", "venafi"}
# cert-manager's KeyUsage enum
KEY_USAGES = {
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
}
PRIVATE_KEY_SIZES = {"RSA": {2048, 3072, 4096, 8192}, "ECDSA": {256, 384, 521}, "Ed25519": None}
GO_DURATION = re.compile(r"(\d+(\.\d+)?(h|m|s|ms|us|ns))+")
FALLBACK_BEHAVIORS = {
    "static",
    "currentReplicas",
    "currentReplicasIfHigher",
    "currentReplicasIfLower",
    "scalingModifiers",
}
# Trigger types our ScaledObjects use -> trigger metadata KEDA requires of them. `external`
# and `external-push` (the same scaler with a StreamIsActive stream) parse the same
# metadata: kedacore/keda v2.20.2 (68a5b5028f35b22d50597c69819ab32c4e92f21a)
# pkg/scalers/external_scaler.go, externalScalerMetadata; pkg/scaling/scalers_builder.go.
TRIGGER_REQUIRED_METADATA: dict[str, set[str]] = {
    "external": {"scalerAddress"},
    "external-push": {"scalerAddress"},
}
# KEDA's default cooldownPeriod, s (ScaledObject specification)
KEDA_DEFAULT_COOLDOWN_PERIOD = 300
# KEDA's external scaler TLS parameters, and the Secret keys cert-manager writes for them
EXTERNAL_SCALER_TLS_PARAMETERS = {
    "caCert": "ca.crt",
    "tlsClientCert": "tls.crt",
    "tlsClientKey": "tls.key",
}


def fields_outside(doc: Any, allowed: Any, path: str = "") -> list[str]:
    if allowed is None:
        return []
    if isinstance(allowed, list):
        assert isinstance(doc, list), f"{path}: expected a list"
        return [
            f
            for i, item in enumerate(doc)
            for f in fields_outside(item, allowed[0], f"{path}[{i}]")
        ]
    assert isinstance(doc, dict), f"{path}: expected a mapping"
    found = []
    for key, value in doc.items():
        if key not in allowed:
            found.append(f"{path}.{key}")
        else:
            found += fields_outside(value, allowed[key], f"{path}.{key}")
    return found


def _metadata_errors(doc: Doc) -> list[str]:
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        return ["metadata.name missing"]
    if doc["kind"] in CLUSTER_SCOPED and "namespace" in meta:
        return [f"{doc['kind']} is cluster-scoped: no metadata.namespace"]
    if doc["kind"] not in CLUSTER_SCOPED and not meta.get("namespace"):
        return [f"{doc['kind']} is namespaced: metadata.namespace missing"]
    return []


def _certificate_errors(spec: Doc) -> list[str]:
    errors = []
    if not spec.get("secretName"):
        errors.append("spec.secretName missing")
    if not spec.get("issuerRef", {}).get("name"):
        errors.append("spec.issuerRef.name missing")
    if spec.get("issuerRef", {}).get("kind", "Issuer") not in ("Issuer", "ClusterIssuer"):
        errors.append("spec.issuerRef.kind: Issuer or ClusterIssuer")
    if not (spec.get("commonName") or spec.get("dnsNames") or spec.get("uris")):
        errors.append("one of commonName, dnsNames, uris is required")
    for field in ("duration", "renewBefore"):
        if field in spec and not GO_DURATION.fullmatch(str(spec[field])):
            errors.append(f"spec.{field}: {spec[field]!r} is not a Go duration")
    errors += [f"spec.usages: unknown {u!r}" for u in spec.get("usages", []) if u not in KEY_USAGES]
    key = spec.get("privateKey", {})
    algorithm = key.get("algorithm", "RSA")
    if algorithm not in PRIVATE_KEY_SIZES:
        errors.append(f"privateKey.algorithm {algorithm!r}")
    elif "size" in key and PRIVATE_KEY_SIZES[algorithm] is not None:
        sizes = PRIVATE_KEY_SIZES[algorithm]
        assert sizes is not None
        if key["size"] not in sizes:
            errors.append(f"privateKey.size {key['size']} for {algorithm}")
    if key.get("rotationPolicy", "Always") not in ("Always", "Never"):
        errors.append("privateKey.rotationPolicy: Always or Never")
    return errors


def _scaled_object_errors(spec: Doc) -> list[str]:
    """What KEDA's admission webhook and controller refuse, and what its documentation
    rules out (kedacore/keda v2.20.2, apis/keda/v1alpha1: CheckReplicaCountBoundsAreValid,
    CheckFallbackValid in scaledobject_types.go, ValidateTriggers in
    scaletriggers_types.go), for the trigger types of TRIGGER_REQUIRED_METADATA."""
    errors = []
    for field in ("pollingInterval", "cooldownPeriod", "initialCooldownPeriod"):
        value = spec.get(field, 0)
        if not (isinstance(value, int) and value >= 0):
            errors.append(f"spec.{field}: {value!r} is not a number of seconds >= 0")
    minimum, maximum = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not (isinstance(minimum, int) and isinstance(maximum, int) and 0 <= minimum <= maximum):
        errors.append(f"minReplicaCount {minimum!r} must be 0..maxReplicaCount {maximum!r}")
    if "idleReplicaCount" in spec:
        # documented: only 0 is supported, and it must be below minReplicaCount (the
        # webhook compares with the HPA's minimum, max(minReplicaCount, 1): laxer)
        idle = spec["idleReplicaCount"]
        if idle != 0 or not (isinstance(minimum, int) and idle < minimum):
            errors.append(f"idleReplicaCount {idle!r}: only 0, below minReplicaCount")
    triggers = spec.get("triggers", [])
    names = [t["name"] for t in triggers if t.get("name")]
    if len(names) != len(set(names)):
        errors.append(f"trigger names must be unique: {names}")
    for trigger in triggers:
        kind = trigger.get("type")
        if kind not in TRIGGER_REQUIRED_METADATA:
            errors.append(f"trigger type {kind!r}: no check for it in {Path(__file__).name}")
            continue
        missing = TRIGGER_REQUIRED_METADATA[kind] - set(trigger.get("metadata") or {})
        if missing:
            errors.append(f"trigger {kind}: metadata {sorted(missing)} required")
        if trigger.get("metricType", "AverageValue") not in ("AverageValue", "Value"):
            errors.append(f"trigger {kind}: metricType {trigger['metricType']!r}")
    fallback = spec.get("fallback")
    if fallback is not None:
        if not (fallback.get("failureThreshold", -1) >= 0 and fallback.get("replicas", -1) >= 0):
            errors.append("spec.fallback: failureThreshold and replicas must be >= 0")
        # the fallback replaces an AverageValue metric (not cpu or memory) by a count
        if not any(
            t.get("type") not in ("cpu", "memory")
            and t.get("metricType", "AverageValue") == "AverageValue"
            for t in triggers
        ):
            errors.append("spec.fallback needs a trigger with an AverageValue metric")
    return errors


def custom_resource_errors(doc: Doc) -> list[str]:
    """What is wrong with a custom resource, by its fields; [] when nothing is."""
    key = (group(doc), doc["kind"])
    errors = _metadata_errors(doc)
    if key == ("llmd.ai", "VariantAutoscaling"):
        schema = va_schema()
        return errors + schema_errors(doc, schema) + unknown_fields(doc, schema)
    if key == ("keda.sh", "ScaledObject"):
        errors += fields_outside(doc, SCALED_OBJECT_FIELDS)
        spec = doc["spec"]
        if not spec.get("triggers") or not spec.get("scaleTargetRef", {}).get("name"):
            errors.append("spec.triggers and spec.scaleTargetRef.name are required")
        if spec.get("fallback", {}).get("behavior", "static") not in FALLBACK_BEHAVIORS:
            errors.append("spec.fallback.behavior")
        errors += _scaled_object_errors(spec)
        for trigger in spec.get("triggers", []):
            metadata = trigger.get("metadata", {})
            errors += [
                f"metadata.{k}: not a string" for k, v in metadata.items() if not isinstance(v, str)
            ]
            if trigger.get("authenticationRef", {}).get("kind", "TriggerAuthentication") not in (
                "TriggerAuthentication",
                "ClusterTriggerAuthentication",
            ):
                errors.append("authenticationRef.kind")
        return errors
    if key in (("keda.sh", "TriggerAuthentication"), ("keda.sh", "ClusterTriggerAuthentication")):
        return errors + fields_outside(doc, TRIGGER_AUTHENTICATION_FIELDS)
    if key == ("monitoring.coreos.com", "ServiceMonitor"):
        errors += fields_outside(doc, SERVICE_MONITOR_FIELDS)
        if not doc["spec"].get("endpoints") or "selector" not in doc["spec"]:
            errors.append("spec.selector and spec.endpoints are required")
        return errors
    if key == ("monitoring.coreos.com", "PrometheusRule"):
        errors += fields_outside(doc, PROMETHEUS_RULE_FIELDS)
        for group_ in doc["spec"].get("groups") or [{}]:
            if not group_.get("name") or not group_.get("rules"):
                errors.append("spec.groups[]: name and rules are required")
            for rule in group_.get("rules", []):
                if "expr" not in rule or ("alert" in rule) == ("record" in rule):
                    errors.append(f"rule {rule}: expr and one of alert, record")
        return errors
    if key == ("cert-manager.io", "Certificate"):
        return errors + fields_outside(doc, CERTIFICATE_FIELDS) + _certificate_errors(doc["spec"])
    if key in (("cert-manager.io", "Issuer"), ("cert-manager.io", "ClusterIssuer")):
        errors += fields_outside(doc, ISSUER_FIELDS)
        kinds = set(doc["spec"]) & ISSUER_TYPES
        if len(kinds) != 1:
            errors.append(f"exactly one issuer type of {sorted(ISSUER_TYPES)}, found {kinds}")
        if "ca" in doc["spec"] and not doc["spec"]["ca"].get("secretName"):
            errors.append("spec.ca.secretName missing")
        return errors
    return [f"no check for {doc['apiVersion']} {doc['kind']}: add one in {Path(__file__).name}"]


def check_object(kv: ModuleType, doc: Doc) -> None:
    """Built-in kinds: strict schema validation; custom kinds: custom_resource_errors."""
    if group(doc) in CUSTOM_GROUPS:
        errors = custom_resource_errors(doc)
        name = doc.get("metadata", {}).get("name")
        assert errors == [], f"{doc['kind']}/{name}: {errors}"
    else:
        validate_builtin(kv, doc)

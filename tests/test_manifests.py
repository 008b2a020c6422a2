"""The deployment manifests: deploy/ (kustomize), keda/ and keda/prometheus-adapter/.

Offline checks only: `kubectl kustomize` renders, built-in kinds pass the Kubernetes
1.33 OpenAPI schemas in strict mode (kubernetes-validate), custom resources are checked
against their CRD schema (ours) or against field lists taken from KEDA's documentation.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from adapter.cli import build_parser
from adapter.model.kube import (
    ShapeError,
    VariantAutoscalingStatus,
    parse_variant_autoscaling,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KEDA = ROOT / "keda"
SAMPLES = DEPLOY / "samples"
K8S_VERSION = "1.33"
ADAPTER_NS = "inferno-autoscaler-system"

CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
CUSTOM_GROUPS = {"llmd.ai", "keda.sh", "monitoring.coreos.com"}

Doc = dict[str, Any]


def _kubectl() -> str:
    for candidate in ("/usr/bin/kubectl", shutil.which("kubectl")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("kubectl (with built-in kustomize) is needed: it ships with the machine image")


def _load_all(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _load_one(path: Path) -> Doc:
    docs = _load_all(path)
    assert len(docs) == 1, f"{path}: expected one document, found {len(docs)}"
    return docs[0]


def _kustomize(directory: Path) -> list[Doc]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _group(doc: Doc) -> str:
    api_version = str(doc["apiVersion"])
    return api_version.split("/")[0] if "/" in api_version else ""


def _by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in _by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/ copied to a temp dir; the dashboard ConfigMap gets a placeholder if absent."""
    target = tmp_path_factory.mktemp("manifests") / "deploy"
    shutil.copytree(DEPLOY, target)
    dashboard = target / "grafana-dashboard.yaml"
    if not dashboard.exists():
        dashboard.write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wva-dashboard-placeholder\n"
            "data: {}\n",
            encoding="utf-8",
        )
    return target


@pytest.fixture(scope="module")
def rendered(deploy_copy: Path) -> list[Doc]:
    return _kustomize(deploy_copy)


@pytest.fixture(scope="module")
def kv() -> ModuleType:
    import kubernetes_validate

    module: ModuleType = kubernetes_validate
    return module


@pytest.fixture(scope="module")
def va_schema() -> Doc:
    crd = _load_one(DEPLOY / "crd-variantautoscalings.yaml")
    (version,) = crd["spec"]["versions"]
    schema: Doc = version["schema"]["openAPIV3Schema"]
    return schema


def _validate_builtin(kv: ModuleType, doc: Doc) -> None:
    try:
        kv.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as error:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        pytest.fail(f"{kind}/{name} does not validate against {K8S_VERSION}: {error.message}")


# ---------------------------------------------------------------- deploy/ (kustomize)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _load_one(DEPLOY / "kustomization.yaml")
    resources = kustomization["resources"]
    assert "grafana-dashboard.yaml" in resources
    # the tutorial's ConfigMaps are referenced, not copied
    assert "samples/configmap-accelerator-unitcost.yaml" in resources
    assert "samples/configmap-serviceclass.yaml" in resources
    for entry in resources:
        if entry != "grafana-dashboard.yaml":  # written by someone else, may not exist yet
            assert (DEPLOY / entry).is_file(), entry


def test_kustomize_renders_the_expected_objects(rendered: list[Doc]) -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    expected = {
        ("Namespace", ADAPTER_NS),
        ("CustomResourceDefinition", "variantautoscalings.llmd.ai"),
        ("ServiceAccount", "wva-adapter"),
        ("ClusterRole", "wva-adapter"),
        ("ClusterRoleBinding", "wva-adapter"),
        ("Role", "wva-adapter"),
        ("RoleBinding", "wva-adapter"),
        ("Deployment", "wva-adapter"),
        ("Service", "wva-adapter"),
        ("Service", "wva-adapter-metrics"),
        ("PodDisruptionBudget", "wva-adapter"),
        ("ServiceMonitor", "wva-adapter"),
        ("ConfigMap", "accelerator-unit-costs"),
        ("ConfigMap", "service-classes-config"),
    }
    assert expected <= names, f"missing: {sorted(expected - names)}"


def test_namespaces_only_on_namespaced_objects(rendered: list[Doc]) -> None:
    for doc in rendered:
        meta = doc["metadata"]
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, f"{doc['kind']}/{meta['name']} is cluster-scoped"
        else:
            assert meta.get("namespace") == ADAPTER_NS, f"{doc['kind']}/{meta['name']}"


def test_builtin_objects_pass_strict_schema_validation(rendered: list[Doc], kv: ModuleType) -> None:
    builtin = [d for d in rendered if _group(d) not in CUSTOM_GROUPS]
    assert any(d["kind"] == "CustomResourceDefinition" for d in builtin)
    for doc in builtin:
        _validate_builtin(kv, doc)


def test_strict_validation_catches_a_typo(rendered: list[Doc], kv: ModuleType) -> None:
    """The check above is not vacuous: an unknown field in the pod spec is rejected."""
    deployment = copy.deepcopy(_one(rendered, "Deployment", "wva-adapter"))
    deployment["spec"]["template"]["spec"]["serviceAcountName"] = "typo"
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSION, strict=True)


def test_sample_configmaps_are_the_tutorials(rendered: list[Doc]) -> None:
    for filename in ("configmap-accelerator-unitcost.yaml", "configmap-serviceclass.yaml"):
        sample = _load_one(SAMPLES / filename)
        configmap = _one(rendered, "ConfigMap", sample["metadata"]["name"])
        assert configmap["data"] == sample["data"]
        assert configmap["metadata"]["namespace"] == sample["metadata"]["namespace"]


# ---------------------------------------------------------------- RBAC

# (namespace or "" for cluster-wide, apiGroup, resource) -> verbs. The adapter's code
# calls must stay inside this table; a later test compares the two.
EXPECTED_RBAC: dict[tuple[str, str, str], set[str]] = {
    ("", "llmd.ai", "variantautoscalings"): {"list", "watch"},
    ("", "llmd.ai", "variantautoscalings/status"): {"patch"},
    ("", "apps", "deployments"): {"list", "watch"},
    ("", "", "nodes"): {"list", "watch"},
    (ADAPTER_NS, "", "configmaps"): {"list", "watch"},
    (ADAPTER_NS, "coordination.k8s.io", "leases"): {"get", "create", "update"},
}
LEADER_LEASE = "wva-adapter-leader"


def rbac_table(docs: list[Doc]) -> dict[tuple[str, str, str], set[str]]:
    """Verbs per (namespace, apiGroup, resource) from the rendered ClusterRoles and Roles."""
    table: dict[tuple[str, str, str], set[str]] = {}
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        namespace = doc["metadata"].get("namespace", "") if doc["kind"] == "Role" else ""
        for rule in doc.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    key = (namespace, group, resource)
                    table.setdefault(key, set()).update(rule["verbs"])
    return table


def test_rbac_verbs_match_the_expected_table(rendered: list[Doc]) -> None:
    assert rbac_table(rendered) == EXPECTED_RBAC


def test_rbac_has_no_wildcards_and_no_replica_writes(rendered: list[Doc]) -> None:
    for doc in _by_kind(rendered, "ClusterRole") + _by_kind(rendered, "Role"):
        for rule in doc["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{doc['kind']}: wildcard in {field}"
            assert "nonResourceURLs" not in rule
            assert not ({"deployments/scale", "secrets"} & set(rule.get("resources", [])))
    # configmaps only in the adapter's namespace, never cluster-wide
    cluster_role = _one(rendered, "ClusterRole", "wva-adapter")
    assert all("configmaps" not in r["resources"] for r in cluster_role["rules"])


def test_lease_updates_are_limited_to_the_leader_lease(rendered: list[Doc]) -> None:
    role = _one(rendered, "Role", "wva-adapter")
    for rule in role["rules"]:
        if "leases" in rule["resources"] and set(rule["verbs"]) - {"create"}:
            assert rule.get("resourceNames") == [LEADER_LEASE]
    args = _container(rendered)["args"]
    assert f"--leader-election-id={LEADER_LEASE}" in args


def test_bindings_grant_the_roles_to_the_adapter_service_account(rendered: list[Doc]) -> None:
    deployment = _one(rendered, "Deployment", "wva-adapter")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    _one(rendered, "ServiceAccount", account)
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = _one(rendered, kind, "wva-adapter")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": "wva-adapter",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": ADAPTER_NS}
        ]


# ---------------------------------------------------------------- the adapter Deployment


def _container(docs: list[Doc]) -> Doc:
    deployment = _one(docs, "Deployment", "wva-adapter")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    result: Doc = container
    return result


def test_deployment_is_hardened(rendered: list[Doc]) -> None:
    deployment = _one(rendered, "Deployment", "wva-adapter")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["runAsGroup"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    security = _container(rendered)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security.get("privileged", False) is False


def test_deployment_has_probes_resources_and_ports(rendered: list[Doc]) -> None:
    container = _container(rendered)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 9090, "metrics": 8080}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert http["port"] in ports or http["port"] in ports.values()
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) >= {"cpu", "memory"}
    assert container["image"].startswith("wva-adapter:")
    assert not container["image"].endswith(":latest")


def test_deployment_passes_identity_and_run_flags(rendered: list[Doc]) -> None:
    container = _container(rendered)
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "command" not in container  # the image's ENTRYPOINT is `wva-adapter run`
    args = container["args"]
    assert any(re.fullmatch(r"--prometheus=https?://\S+", a) for a in args)
    # the Role covers ConfigMaps in the adapter's own namespace only
    assert "--config-namespace=$(POD_NAMESPACE)" in args
    assert "--pod-name=$(POD_NAME)" in args
    assert "--grpc-port=9090" in args and "--metrics-port=8080" in args


def test_deployment_args_are_accepted_by_the_run_command(rendered: list[Doc]) -> None:
    args = build_parser().parse_args(["run", *_container(rendered)["args"]])
    assert args.command == "run"
    assert (args.grpc_port, args.metrics_port) == (9090, 8080)
    assert args.leader_election and args.leader_election_id == "wva-adapter-leader"
    assert args.prometheus and args.pod_name == "$(POD_NAME)"


def test_services_and_servicemonitor_select_the_adapter(rendered: list[Doc]) -> None:
    deployment = _one(rendered, "Deployment", "wva-adapter")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    grpc = _one(rendered, "Service", "wva-adapter")
    metrics = _one(rendered, "Service", "wva-adapter-metrics")
    for service in (grpc, metrics):
        assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["port"], p["targetPort"]) for p in grpc["spec"]["ports"]] == [(9090, "grpc")]
    assert [(p["port"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [(8080, "metrics")]
    monitor = _one(rendered, "ServiceMonitor", "wva-adapter")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s
        for s in _by_kind(rendered, "Service")
        if wanted.items() <= s["metadata"]["labels"].items()
    ]
    assert selected == [metrics]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # our `namespace` label must win


def test_pod_disruption_budget_keeps_one_replica(rendered: list[Doc]) -> None:
    pdb = _one(rendered, "PodDisruptionBudget", "wva-adapter")
    deployment = _one(rendered, "Deployment", "wva-adapter")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_tls_component_mounts_the_secret(deploy_copy: Path, kv: ModuleType) -> None:
    overlay = deploy_copy.parent / "tls-overlay"
    overlay.mkdir(exist_ok=True)
    (overlay / "kustomization.yaml").write_text(
        "resources:\n  - ../deploy\ncomponents:\n  - ../deploy/components/tls\n",
        encoding="utf-8",
    )
    docs = _kustomize(overlay)
    deployment = _one(docs, "Deployment", "wva-adapter")
    _validate_builtin(kv, deployment)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "wva-adapter-tls"
    container = _container(docs)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    directory = mount["mountPath"]
    for flag, key in (("cert", "tls.crt"), ("key", "tls.key"), ("client-ca", "ca.crt")):
        assert f"--grpc-tls-{flag}-file={directory}/{key}" in container["args"]


# ---------------------------------------------------------------- the VariantAutoscaling CRD


def test_crd_names_scope_and_status_subresource() -> None:
    crd = _load_one(DEPLOY / "crd-variantautoscalings.yaml")
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "variantautoscalings.llmd.ai"
    assert spec["group"] == "llmd.ai" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "VariantAutoscaling"
    assert spec["names"]["plural"] == "variantautoscalings"
    assert spec["names"]["shortNames"] == ["va"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Model", "Accelerator", "Current", "Desired", "MetricsReady", "Age"]
    assert columns["Current"]["type"] == columns["Desired"]["type"] == "integer"
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert "MetricsAvailable" in columns["MetricsReady"]["jsonPath"]


def _schema_nodes(schema: Doc, path: str = "") -> Iterator[tuple[str, Doc]]:
    yield path or "(root)", schema
    for name, child in schema.get("properties", {}).items():
        yield from _schema_nodes(child, f"{path}.{name}")
    if "items" in schema:
        yield from _schema_nodes(schema["items"], f"{path}[]")


def test_crd_schema_is_structural(va_schema: Doc) -> None:
    """Every node has a type; no constructs a structural schema forbids."""
    for path, node in _schema_nodes(va_schema):
        assert "type" in node, f"{path}: no type"
        for forbidden in ("$ref", "additionalItems", "definitions", "dependencies"):
            assert forbidden not in node, f"{path}: {forbidden}"
    assert va_schema["properties"]["metadata"] == {"type": "object"}


def _unknown_fields(doc: Any, schema: Doc, path: str = "") -> list[str]:
    """Fields the API server would prune (or reject under strict field validation)."""
    if isinstance(doc, dict) and "properties" in schema:
        found = []
        for key, value in doc.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            elif not (path == "" and key == "metadata"):
                found += _unknown_fields(value, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(doc, list) and "items" in schema:
        return [
            f
            for i, item in enumerate(doc)
            for f in _unknown_fields(item, schema["items"], f"{path}[{i}]")
        ]
    return []


def _errors(doc: Doc, schema: Doc) -> list[str]:
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(doc)
    ]


def test_tutorial_va_validates_unchanged(va_schema: Doc) -> None:
    va = _load_one(SAMPLES / "vllm-va.yaml")
    assert va["spec"]["modelProfile"]["accelerators"][0]["atTokens"] == 512
    assert _errors(va, va_schema) == []
    assert _unknown_fields(va, va_schema) == []  # atTokens and sloClassRef are kept
    parse_variant_autoscaling(va)  # and the adapter reads the same object


def test_va_without_optional_fields_validates(va_schema: Doc) -> None:
    va = _load_one(SAMPLES / "vllm-va.yaml")
    del va["spec"]["sloClassRef"]
    del va["spec"]["modelProfile"]["accelerators"][0]["atTokens"]
    assert _errors(va, va_schema) == []


def _broken(change: str) -> Doc:
    va = _load_one(SAMPLES / "vllm-va.yaml")
    spec = va["spec"]
    profile = spec["modelProfile"]["accelerators"][0]
    if change == "negative maxBatchSize":
        profile["maxBatchSize"] = -1
    elif change == "alpha not a decimal":
        profile["alpha"] = "fast"
    elif change == "beta negative":
        profile["beta"] = "-0.044"
    elif change == "alpha a number, not a string":
        profile["alpha"] = 6.356
    elif change == "missing modelID":
        del spec["modelID"]
    elif change == "empty modelID":
        spec["modelID"] = ""
    elif change == "accCount 0":
        profile["accCount"] = 0
    elif change == "atTokens 0":
        profile["atTokens"] = 0
    elif change == "no accelerators":
        spec["modelProfile"]["accelerators"] = []
    elif change == "sloClassRef without key":
        del spec["sloClassRef"]["key"]
    else:  # pragma: no cover
        raise AssertionError(change)
    return va


BROKEN = [
    "negative maxBatchSize",
    "alpha not a decimal",
    "beta negative",
    "alpha a number, not a string",
    "missing modelID",
    "empty modelID",
    "accCount 0",
    "atTokens 0",
    "no accelerators",
    "sloClassRef without key",
]


@pytest.mark.parametrize("change", BROKEN)
def test_broken_va_is_rejected_by_the_crd(change: str, va_schema: Doc) -> None:
    assert _errors(_broken(change), va_schema) != []


@pytest.mark.parametrize("change", [c for c in BROKEN if c != "alpha a number, not a string"])
def test_broken_va_is_rejected_by_the_adapter_too(change: str) -> None:
    """The CRD and the adapter's model agree (the model also takes numbers for alpha)."""
    with pytest.raises(ShapeError):
        parse_variant_autoscaling(_broken(change))


def test_unknown_spec_field_would_be_pruned(va_schema: Doc) -> None:
    va = _load_one(SAMPLES / "vllm-va.yaml")
    va["spec"]["modelProfile"]["accelerators"][0]["maxBatch"] = 4
    assert _unknown_fields(va, va_schema) == [".spec.modelProfile.accelerators[0].maxBatch"]


STATUS = {
    "currentAlloc": {
        "accelerator": "H100",
        "numReplicas": 1,
        "maxBatch": 256,
        "variantCost": "100.00",
        "itlAverage": "8.46",
        "waitAverage": "0.00",
        "load": {"arrivalRate": "480.00", "avgLength": "512.00"},
    },
    "desiredOptimizedAlloc": {
        "lastRunTime": "2025-08-20T14:03:11Z",
        "accelerator": "H100",
        "numReplicas": 2,
    },
    "actuation": {"applied": True},
    "conditions": [
        {
            "type": "MetricsAvailable",
            "status": "True",
            "reason": "MetricsFound",
            "message": "vLLM metrics are available",
            "lastTransitionTime": "2025-08-20T14:03:11Z",
            "observedGeneration": 1,
        }
    ],
}


def test_status_written_by_the_adapter_validates(va_schema: Doc) -> None:
    status = VariantAutoscalingStatus.model_validate(STATUS).to_json()
    va = _load_one(SAMPLES / "vllm-va.yaml") | {"status": status}
    assert _errors(va, va_schema) == []
    assert _unknown_fields(va, va_schema) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("conditions.0.reason", None),  # metav1.Condition requires a reason
        ("conditions.0.status", "Maybe"),
        ("conditions.0.lastTransitionTime", None),
        ("desiredOptimizedAlloc.numReplicas", -1),
        ("desiredOptimizedAlloc.accelerator", "H"),
        ("currentAlloc.itlAverage", "NaN"),
        ("actuation.applied", None),
    ],
)
def test_bad_status_is_rejected(field: str, value: Any, va_schema: Doc) -> None:
    status: Any = copy.deepcopy(STATUS)
    *parents, last = field.split(".")
    node = status
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    va = _load_one(SAMPLES / "vllm-va.yaml") | {"status": status}
    assert _errors(va, va_schema) != []


# ---------------------------------------------------------------- keda/

# Fields of keda.sh/v1alpha1 ScaledObject (KEDA 2.18-2.21 docs), nested: a dict maps a
# field to its allowed sub-fields, None means "any value" (maps, scalars).
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
FALLBACK_BEHAVIORS = {
    "static",
    "currentReplicas",
    "currentReplicasIfHigher",
    "currentReplicasIfLower",
    "scalingModifiers",
}
EXTERNAL_SCALER_TLS_PARAMETERS = {
    "caCert": "ca.crt",
    "tlsClientCert": "tls.crt",
    "tlsClientKey": "tls.key",
}


def _fields_outside(doc: Any, allowed: Any, path: str = "") -> list[str]:
    if allowed is None:
        return []
    if isinstance(allowed, list):
        assert isinstance(doc, list), f"{path}: expected a list"
        return [
            f
            for i, item in enumerate(doc)
            for f in _fields_outside(item, allowed[0], f"{path}[{i}]")
        ]
    assert isinstance(doc, dict), f"{path}: expected a mapping"
    found = []
    for key, value in doc.items():
        if key not in allowed:
            found.append(f"{path}.{key}")
        else:
            found += _fields_outside(value, allowed[key], f"{path}.{key}")
    return found


@pytest.fixture(scope="module")
def scaled_object() -> Doc:
    return _load_one(KEDA / "scaledobject.yaml")


def test_scaledobject_uses_only_keda_fields(scaled_object: Doc) -> None:
    assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled_object["kind"] == "ScaledObject"
    assert _fields_outside(scaled_object, SCALED_OBJECT_FIELDS) == []


def test_scaledobject_targets_the_tutorials_deployment_and_va(scaled_object: Doc) -> None:
    deployment = _load_one(SAMPLES / "deployment.yaml")
    va = _load_one(SAMPLES / "vllm-va.yaml")
    assert scaled_object["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert scaled_object["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    (trigger,) = scaled_object["spec"]["triggers"]
    assert trigger["type"] == "external"
    assert trigger["metricType"] == "AverageValue"
    metadata = trigger["metadata"]
    assert metadata["variantAutoscalingName"] == va["metadata"]["name"]
    assert metadata["variantAutoscalingNamespace"] == va["metadata"]["namespace"]
    assert all(isinstance(v, str) for v in metadata.values())  # KEDA metadata is map[string]string


def test_scaledobject_scaler_address_is_the_adapter_service(
    scaled_object: Doc, rendered: list[Doc]
) -> None:
    (trigger,) = scaled_object["spec"]["triggers"]
    host, port = trigger["metadata"]["scalerAddress"].rsplit(":", 1)
    name, namespace, *rest = host.split(".")
    assert rest == ["svc", "cluster", "local"]
    service = _one(rendered, "Service", name)
    assert service["metadata"]["namespace"] == namespace
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]


def test_scaledobject_replicas_and_fallback(scaled_object: Doc) -> None:
    spec = scaled_object["spec"]
    assert spec["minReplicaCount"] == 1
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]
    assert spec["pollingInterval"] == 15
    assert spec["fallback"] == {
        "failureThreshold": 3,
        "replicas": 1,
        "behavior": "currentReplicasIfHigher",
    }
    assert spec["fallback"]["behavior"] in FALLBACK_BEHAVIORS


def _behavior_checks(behavior: Doc) -> None:
    for direction in ("scaleUp", "scaleDown"):
        assert behavior[direction]["tolerance"] in (0, "0")
        assert behavior[direction]["stabilizationWindowSeconds"] <= 60
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0


def test_scaledobject_hpa_behavior_is_a_valid_hpa_behavior(
    scaled_object: Doc, kv: ModuleType
) -> None:
    behavior = scaled_object["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    _behavior_checks(behavior)
    # KEDA copies it verbatim into the HPA it creates: it must pass the HPA schema
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa-vllm", "namespace": "vllm-test"},
        "spec": {
            "scaleTargetRef": scaled_object["spec"]["scaleTargetRef"],
            "minReplicas": 1,
            "maxReplicas": 8,
            "behavior": behavior,
        },
    }
    _validate_builtin(kv, hpa)


def test_trigger_authentication_for_tls() -> None:
    auth = _load_one(KEDA / "triggerauthentication.yaml")
    assert auth["apiVersion"] == "keda.sh/v1alpha1" and auth["kind"] == "TriggerAuthentication"
    assert _fields_outside(auth, TRIGGER_AUTHENTICATION_FIELDS) == []
    refs = auth["spec"]["secretTargetRef"]
    assert {r["parameter"]: r["key"] for r in refs} == EXTERNAL_SCALER_TLS_PARAMETERS
    assert len({r["name"] for r in refs}) == 1  # one Secret holds all three
    scaled = _load_one(KEDA / "scaledobject.yaml")
    assert auth["metadata"]["namespace"] == scaled["metadata"]["namespace"]
    # the ScaledObject's comment tells how to reference it
    assert f"name: {auth['metadata']['name']}" in (KEDA / "scaledobject.yaml").read_text()


# ---------------------------------------------------------------- keda/prometheus-adapter/


def test_prometheus_adapter_hpa_validates(kv: ModuleType) -> None:
    hpa = _load_one(KEDA / "prometheus-adapter" / "hpa.yaml")
    _validate_builtin(kv, hpa)
    va = _load_one(SAMPLES / "vllm-va.yaml")
    assert hpa["metadata"]["namespace"] == va["metadata"]["namespace"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == va["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "wva_desired_replicas"
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {
        "variant_name": va["metadata"]["name"]
    }
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    _behavior_checks(hpa["spec"]["behavior"])


def test_prometheus_adapter_rule_serves_the_hpa_metric() -> None:
    values = _load_one(KEDA / "prometheus-adapter" / "values.yaml")
    hpa = _load_one(KEDA / "prometheus-adapter" / "hpa.yaml")
    assert values["rules"]["default"] is False
    (rule,) = values["rules"]["external"]
    assert set(rule) == {"seriesQuery", "resources", "name", "metricsQuery"}
    assert rule["seriesQuery"].startswith("wva_desired_replicas{")
    assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"}}}
    metric_name = hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
    assert re.fullmatch(rule["name"]["matches"], "wva_desired_replicas")
    assert rule["name"]["as"] == metric_name
    query = rule["metricsQuery"]
    assert "<<.LabelMatchers>>" in query
    # one item per variant whatever the number of adapter replicas (the HPA sums items)
    assert re.match(r"max by \((namespace, variant_name|variant_name, namespace)\)", query)


def test_readme_explains_both_paths_and_the_apiservice() -> None:
    text = (KEDA / "README.md").read_text(encoding="utf-8")
    assert "v1beta1.external.metrics.k8s.io" in text
    for name in ("scaledobject.yaml", "triggerauthentication.yaml", "prometheus-adapter/hpa.yaml"):
        assert name in text
    assert "HPAConfigurableTolerance" in text

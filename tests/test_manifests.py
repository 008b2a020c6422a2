"""The deployment manifests: the base in deploy/ (kustomize), keda/ and keda/prometheus-adapter/.

Offline checks only: `kubectl kustomize` renders, built-in kinds pass the Kubernetes
1.33 OpenAPI schemas in strict mode (kubernetes-validate), custom resources are checked
against their CRD schema (ours) or against field lists taken from their projects'
documentation (tests/manifest_support.py). The optional components, the example
overlays and every YAML file are checked in tests/test_deploy_components.py.
"""

from __future__ import annotations

import copy
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from adapter.cli import build_parser
from adapter.model.kube import (
    ShapeError,
    VariantAutoscalingStatus,
    parse_variant_autoscaling,
)
from tests.manifest_support import (
    ADAPTER_NS,
    CLUSTER_SCOPED,
    CUSTOM_GROUPS,
    DEPLOY,
    EXTERNAL_SCALER_TLS_PARAMETERS,
    FALLBACK_BEHAVIORS,
    K8S_VERSION,
    KEDA,
    KEDA_DEFAULT_COOLDOWN_PERIOD,
    SAMPLES,
    SCALED_OBJECT_FIELDS,
    TRIGGER_AUTHENTICATION_FIELDS,
    Doc,
    by_kind,
    container,
    custom_resource_errors,
    fields_outside,
    find_kubectl,
    group,
    kubectl_candidates,
    kubernetes_validate,
    kustomize,
    kustomize_version,
    load_all,
    load_one,
    one,
    render_component,
    run_settings,
    schema_errors,
    settings_env,
    unknown_fields,
    validate_builtin,
)
from tests.manifest_support import va_schema as load_va_schema

# tests/test_rbac_code.py imports these four from here
_kustomize = kustomize
__all__ = ["ADAPTER_NS", "DEPLOY", "_kustomize", "rbac_table"]


# ---------------------------------------------------------------- kubectl


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_kubectl_is_looked_for_in_the_virtualenv_then_path_then_usr_bin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv, elsewhere = tmp_path / "venv", tmp_path / "elsewhere"
    monkeypatch.setenv("PATH", str(elsewhere / "bin"))
    assert kubectl_candidates(str(venv)) == [str(venv / "bin" / "kubectl"), "/usr/bin/kubectl"]
    on_path = _executable(elsewhere / "bin" / "kubectl")
    assert kubectl_candidates(str(venv))[1] == str(on_path)
    assert find_kubectl(str(venv)) == str(on_path)
    in_venv = _executable(venv / "bin" / "kubectl")
    assert find_kubectl(str(venv)) == str(in_venv)
    in_venv.chmod(0o644)  # not executable: skipped
    assert find_kubectl(str(venv)) == str(on_path)


def test_no_kubectl_fails_naming_make_test(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.manifest_support as support

    monkeypatch.setattr(support, "find_kubectl", lambda prefix=None: None)
    support.kubectl.cache_clear()
    try:
        with pytest.raises(pytest.fail.Exception, match="make test"):
            support.kubectl()
    finally:
        support.kubectl.cache_clear()


def test_kubectl_carries_kustomize_5_for_components() -> None:
    assert kustomize_version() >= (5, 0, 0), (
        f"kubectl's kustomize is {kustomize_version()}: components need kustomize v5 "
        "(kubectl >= 1.27); run `make test` to get the pinned kubectl in .venv"
    )


# ---------------------------------------------------------------- deploy/ (kustomize)


@pytest.fixture(scope="module")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/ copied to a temp dir (overlays are written next to it)."""
    import shutil

    target = tmp_path_factory.mktemp("manifests") / "deploy"
    shutil.copytree(DEPLOY, target)
    return target


@pytest.fixture(scope="module")
def rendered(deploy_copy: Path) -> list[Doc]:
    return kustomize(deploy_copy)


@pytest.fixture(scope="module")
def kv() -> ModuleType:
    return kubernetes_validate()


@pytest.fixture(scope="module")
def va_schema() -> Doc:
    return load_va_schema()


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_one(DEPLOY / "kustomization.yaml")
    resources = kustomization["resources"]
    assert "grafana-dashboard.yaml" in resources
    for entry in resources:
        assert (DEPLOY / entry).is_file(), entry
    # optional parts are components, not in the base
    assert not [r for r in resources if "samples/" in r or "servicemonitor" in r]
    assert "components" not in kustomization


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
        ("ConfigMap", "wva-adapter-dashboard"),
    }
    assert expected <= names, f"missing: {sorted(expected - names)}"
    settings = [n for k, n in names if k == "ConfigMap" and n.startswith("wva-adapter-settings")]
    assert len(settings) == 1 and re.fullmatch(r"wva-adapter-settings-[a-z0-9]{10}", settings[0])


def test_the_base_needs_no_crd_but_ours(rendered: list[Doc]) -> None:
    """`kubectl apply -k deploy` works on a bare cluster: no ServiceMonitor, Certificate,
    KEDA object; and it does not overwrite the ConfigMaps the tutorial (or upstream WVA)
    created."""
    custom = [(d["kind"], d["metadata"]["name"]) for d in rendered if group(d) in CUSTOM_GROUPS]
    assert custom == []
    names = {d["metadata"]["name"] for d in by_kind(rendered, "ConfigMap")}
    assert not names & {"accelerator-unit-costs", "service-classes-config"}
    dashboard = one(rendered, "ConfigMap", "wva-adapter-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"  # a sidecar's label


def test_namespaces_only_on_namespaced_objects(rendered: list[Doc]) -> None:
    for doc in rendered:
        meta = doc["metadata"]
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, f"{doc['kind']}/{meta['name']} is cluster-scoped"
        else:
            assert meta.get("namespace") == ADAPTER_NS, f"{doc['kind']}/{meta['name']}"


def test_builtin_objects_pass_strict_schema_validation(rendered: list[Doc], kv: ModuleType) -> None:
    builtin = [d for d in rendered if group(d) not in CUSTOM_GROUPS]
    assert any(d["kind"] == "CustomResourceDefinition" for d in builtin)
    for doc in builtin:
        validate_builtin(kv, doc)


def test_strict_validation_catches_a_typo(rendered: list[Doc], kv: ModuleType) -> None:
    """The check above is not vacuous: an unknown field in the pod spec is rejected."""
    deployment = copy.deepcopy(one(rendered, "Deployment", "wva-adapter"))
    deployment["spec"]["template"]["spec"]["serviceAcountName"] = "typo"
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSION, strict=True)


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
            for api_group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    key = (namespace, api_group, resource)
                    table.setdefault(key, set()).update(rule["verbs"])
    return table


def test_rbac_verbs_match_the_expected_table(rendered: list[Doc]) -> None:
    assert rbac_table(rendered) == EXPECTED_RBAC


def test_rbac_has_no_wildcards_and_no_replica_writes(rendered: list[Doc]) -> None:
    for doc in by_kind(rendered, "ClusterRole") + by_kind(rendered, "Role"):
        for rule in doc["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{doc['kind']}: wildcard in {field}"
            assert "nonResourceURLs" not in rule
            assert not ({"deployments/scale", "secrets"} & set(rule.get("resources", [])))
    # configmaps only in the adapter's namespace, never cluster-wide
    cluster_role = one(rendered, "ClusterRole", "wva-adapter")
    assert all("configmaps" not in r["resources"] for r in cluster_role["rules"])


def test_lease_updates_are_limited_to_the_leader_lease(rendered: list[Doc]) -> None:
    role = one(rendered, "Role", "wva-adapter")
    for rule in role["rules"]:
        if "leases" in rule["resources"] and set(rule["verbs"]) - {"create"}:
            assert rule.get("resourceNames") == [LEADER_LEASE]
    args = container(rendered)["args"]
    assert f"--leader-election-id={LEADER_LEASE}" in args


def test_bindings_grant_the_roles_to_the_adapter_service_account(rendered: list[Doc]) -> None:
    deployment = one(rendered, "Deployment", "wva-adapter")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    one(rendered, "ServiceAccount", account)
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one(rendered, kind, "wva-adapter")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": "wva-adapter",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": ADAPTER_NS}
        ]


# ---------------------------------------------------------------- the adapter Deployment


# ---------------------------------------------------------------- the adapter Deployment


def test_deployment_is_hardened(rendered: list[Doc]) -> None:
    deployment = one(rendered, "Deployment", "wva-adapter")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["runAsGroup"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    security = container(rendered)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security.get("privileged", False) is False


def test_deployment_has_probes_resources_and_ports(rendered: list[Doc]) -> None:
    adapter = container(rendered)
    ports = {p["name"]: p["containerPort"] for p in adapter["ports"]}
    assert ports == {"grpc": 9090, "metrics": 8080}
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        http = adapter[probe]["httpGet"]
        assert http["path"] == path
        assert http["port"] in ports or http["port"] in ports.values()
        assert http["port"] in ("metrics", 8080)  # plain HTTP even when gRPC is on mTLS
    for kind in ("requests", "limits"):
        assert set(adapter["resources"][kind]) >= {"cpu", "memory"}
    assert adapter["image"].startswith("wva-adapter:")
    assert not adapter["image"].endswith(":latest")


def _budget(probe: Doc) -> int:
    """Seconds of consecutive failures before the kubelet acts."""
    return int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))


def test_probe_timings_fit_the_adapter(rendered: list[Doc]) -> None:
    """The HTTP server starts after the first cache sync: the startupProbe must outlast
    --sync-timeout (with room for the start of the process). /healthz fails after about 3
    intervals without a cycle attempt; liveness then acts within a minute or two, and a
    stale snapshot never takes a pod out of the Service (/readyz)."""
    from adapter.settings import RunSettings

    defaults = RunSettings()
    adapter = container(rendered)
    startup, liveness = adapter["startupProbe"], adapter["livenessProbe"]
    assert _budget(startup) >= defaults.sync_timeout + 60
    assert 2 * defaults.interval <= _budget(liveness) <= 8 * defaults.interval
    assert "initialDelaySeconds" not in liveness  # the startupProbe holds it back
    for probe in (startup, liveness, adapter["readinessProbe"]):
        assert probe.get("timeoutSeconds", 1) >= 2


def test_deployment_passes_identity_and_run_flags(rendered: list[Doc]) -> None:
    adapter = container(rendered)
    env = {e["name"]: e for e in adapter["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "command" not in adapter  # the image's ENTRYPOINT is `wva-adapter run`
    args = adapter["args"]
    # the Role covers ConfigMaps in the adapter's own namespace only
    assert "--config-namespace=$(POD_NAMESPACE)" in args
    assert "--pod-name=$(POD_NAME)" in args
    assert "--grpc-port=9090" in args and "--metrics-port=8080" in args


def test_site_settings_come_from_the_settings_configmap(rendered: list[Doc]) -> None:
    """The Prometheus URL is a kustomize setting (ConfigMap wva-adapter-settings, merged
    by an overlay), never a flag in the args: a flag would win over its variable."""
    args = container(rendered)["args"]
    assert not [a for a in args if a.startswith("--prometheus")]
    settings = settings_env(rendered)
    assert re.fullmatch(r"https?://\S+", settings["WVA_PROMETHEUS"])
    assert all(name.startswith("WVA_") for name in settings)


def test_deployment_args_are_accepted_by_the_run_command(rendered: list[Doc]) -> None:
    args = run_settings(rendered)
    assert (args.grpc_port, args.metrics_port) == (9090, 8080)
    assert args.leader_election and args.leader_election_id == "wva-adapter-leader"
    assert args.pod_name == "$(POD_NAME)"
    assert args.prometheus == settings_env(rendered)["WVA_PROMETHEUS"]


def test_every_setting_is_a_run_variable(rendered: list[Doc]) -> None:
    """A misspelt variable would be ignored silently: each one must name a run flag."""
    from adapter.cli import _subcommand, env_variables

    known = set(env_variables(_subcommand(build_parser(), "run")))
    assert set(settings_env(rendered)) <= known


def test_services_select_the_adapter(rendered: list[Doc]) -> None:
    deployment = one(rendered, "Deployment", "wva-adapter")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    grpc = one(rendered, "Service", "wva-adapter")
    metrics = one(rendered, "Service", "wva-adapter-metrics")
    for service in (grpc, metrics):
        assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["port"], p["targetPort"]) for p in grpc["spec"]["ports"]] == [(9090, "grpc")]
    assert [(p["port"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [(8080, "metrics")]


def test_pod_disruption_budget_keeps_one_replica(rendered: list[Doc]) -> None:
    pdb = one(rendered, "PodDisruptionBudget", "wva-adapter")
    deployment = one(rendered, "Deployment", "wva-adapter")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_tls_component_mounts_the_secret(deploy_copy: Path, kv: ModuleType) -> None:
    docs = render_component(deploy_copy, "tls", deploy_copy.parent)
    deployment = one(docs, "Deployment", "wva-adapter")
    validate_builtin(kv, deployment)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "wva-adapter-tls"
    adapter = container(docs)
    mount = next(m for m in adapter["volumeMounts"] if m["name"] == "tls")
    directory = mount["mountPath"]
    for flag, key in (("cert", "tls.crt"), ("key", "tls.key"), ("client-ca", "ca.crt")):
        assert f"--grpc-tls-{flag}-file={directory}/{key}" in adapter["args"]
    args = run_settings(docs)
    assert args.grpc_tls_client_ca_file == f"{directory}/ca.crt"  # mutual TLS


# ---------------------------------------------------------------- the VariantAutoscaling CRD


def test_crd_names_scope_and_status_subresource() -> None:
    crd = load_one(DEPLOY / "crd-variantautoscalings.yaml")
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


def test_tutorial_va_validates_unchanged(va_schema: Doc) -> None:
    va = load_one(SAMPLES / "vllm-va.yaml")
    assert va["spec"]["modelProfile"]["accelerators"][0]["atTokens"] == 512
    assert schema_errors(va, va_schema) == []
    assert unknown_fields(va, va_schema) == []  # atTokens and sloClassRef are kept
    parse_variant_autoscaling(va)  # and the adapter reads the same object


def test_va_without_optional_fields_validates(va_schema: Doc) -> None:
    va = load_one(SAMPLES / "vllm-va.yaml")
    del va["spec"]["sloClassRef"]
    del va["spec"]["modelProfile"]["accelerators"][0]["atTokens"]
    assert schema_errors(va, va_schema) == []


def _broken(change: str) -> Doc:
    va = load_one(SAMPLES / "vllm-va.yaml")
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
    assert schema_errors(_broken(change), va_schema) != []


@pytest.mark.parametrize("change", [c for c in BROKEN if c != "alpha a number, not a string"])
def test_broken_va_is_rejected_by_the_adapter_too(change: str) -> None:
    """The CRD and the adapter's model agree (the model also takes numbers for alpha)."""
    with pytest.raises(ShapeError):
        parse_variant_autoscaling(_broken(change))


def test_unknown_spec_field_would_be_pruned(va_schema: Doc) -> None:
    va = load_one(SAMPLES / "vllm-va.yaml")
    va["spec"]["modelProfile"]["accelerators"][0]["maxBatch"] = 4
    assert unknown_fields(va, va_schema) == [".spec.modelProfile.accelerators[0].maxBatch"]


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
    va = load_one(SAMPLES / "vllm-va.yaml") | {"status": status}
    assert schema_errors(va, va_schema) == []
    assert unknown_fields(va, va_schema) == []


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
    va = load_one(SAMPLES / "vllm-va.yaml") | {"status": status}
    assert schema_errors(va, va_schema) != []


# ---------------------------------------------------------------- keda/


# ---------------------------------------------------------------- keda/


# every ScaledObject we ship: the plain one, with mTLS, and with scale to zero
SCALED_OBJECTS = ("scaledobject.yaml", "scaledobject-mtls.yaml", "scaledobject-from-zero.yaml")


@pytest.fixture(scope="module", params=SCALED_OBJECTS)
def scaled_object(request: pytest.FixtureRequest) -> Doc:
    name: str = request.param
    return load_one(KEDA / name)


def test_scaledobject_uses_only_keda_fields(scaled_object: Doc) -> None:
    assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled_object["kind"] == "ScaledObject"
    assert fields_outside(scaled_object, SCALED_OBJECT_FIELDS) == []


def test_scaledobject_targets_the_tutorials_deployment_and_va(scaled_object: Doc) -> None:
    deployment = load_one(SAMPLES / "deployment.yaml")
    va = load_one(SAMPLES / "vllm-va.yaml")
    assert scaled_object["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert scaled_object["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    (trigger,) = scaled_object["spec"]["triggers"]
    # from zero, KEDA must hear the adapter's wake-up at once: StreamIsActive, pushed
    at_zero = scaled_object["spec"].get("minReplicaCount", 0) == 0
    assert trigger["type"] == ("external-push" if at_zero else "external")
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
    service = one(rendered, "Service", name)
    assert service["metadata"]["namespace"] == namespace
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]


def test_scaledobject_replicas_and_fallback() -> None:
    spec = load_one(KEDA / "scaledobject.yaml")["spec"]
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
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    # about three pod start-ups: a replica needed again soon is kept (keda/README.md)
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 180


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
            # KEDA's HPA: minReplicaCount, or 1 when it is 0 (0 <-> 1 is KEDA's own)
            "minReplicas": max(scaled_object["spec"]["minReplicaCount"], 1),
            "maxReplicas": scaled_object["spec"]["maxReplicaCount"],
            "behavior": behavior,
        },
    }
    validate_builtin(kv, hpa)


def test_from_zero_scaledobject_is_the_plain_one_but_for_scale_to_zero() -> None:
    """Same name (it replaces the plain one), target, fallback, HPA behavior and trigger
    metadata; only what scale to zero needs differs."""
    plain = load_one(KEDA / "scaledobject.yaml")
    zero = load_one(KEDA / "scaledobject-from-zero.yaml")
    spec = zero["spec"]
    assert spec["minReplicaCount"] == 0
    assert "idleReplicaCount" not in spec  # min 0 deactivates to 0 already
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "external-push"
    # back to the plain object: what is left must be identical
    spec["minReplicaCount"] = plain["spec"]["minReplicaCount"]
    del spec["cooldownPeriod"]  # only relevant with minReplicaCount 0
    trigger["type"] = "external"
    assert zero == plain


def test_from_zero_cooldown_leaves_the_retention_to_the_adapter() -> None:
    """KEDA deactivates only after IsActive has been false for cooldownPeriod; the adapter
    has already held the idle variant for --scale-to-zero-after. The cooldown rides out
    at least one poll's false answer, and is shorter than the adapter's hold (and than
    KEDA's default), which would otherwise keep an idle GPU replica longer for nothing."""
    from adapter.settings import RunSettings

    spec = load_one(KEDA / "scaledobject-from-zero.yaml")["spec"]
    polling, cooldown = spec["pollingInterval"], spec["cooldownPeriod"]
    assert polling <= cooldown < KEDA_DEFAULT_COOLDOWN_PERIOD
    assert cooldown < RunSettings().scale_to_zero_after
    assert "idleReplicaCount" not in spec


def test_from_zero_scaledobject_names_a_variant_autoscaling_of_the_samples() -> None:
    zero = load_one(KEDA / "scaledobject-from-zero.yaml")
    samples = [d for path in sorted(SAMPLES.glob("*.yaml")) for d in load_all(path)]
    variants = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in samples
        if d["kind"] == "VariantAutoscaling"
    }
    (trigger,) = zero["spec"]["triggers"]
    metadata = trigger["metadata"]
    key = (metadata["variantAutoscalingNamespace"], metadata["variantAutoscalingName"])
    assert key in variants, f"no VariantAutoscaling {key} in deploy/samples"
    # the VA sizes the Deployment of its name, in its namespace: the one this object scales
    assert key == (zero["metadata"]["namespace"], zero["spec"]["scaleTargetRef"]["name"])
    deployments = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in samples
        if d["kind"] == "Deployment"
    }
    assert key in deployments


def test_scaledobject_checks_follow_kedas_validation() -> None:
    """tests/manifest_support.py refuses what KEDA refuses for these objects."""
    good = load_one(KEDA / "scaledobject-from-zero.yaml")
    assert custom_resource_errors(good) == []

    def broken(change: Any) -> list[str]:
        doc = copy.deepcopy(good)
        change(doc["spec"])
        return custom_resource_errors(doc)

    assert broken(lambda s: s.update(idleReplicaCount=0))  # not below minReplicaCount 0
    assert broken(lambda s: s.update(minReplicaCount=9))  # above maxReplicaCount
    assert broken(lambda s: s.update(cooldownPeriod=-1))
    assert broken(lambda s: s["triggers"][0]["metadata"].pop("scalerAddress"))
    assert broken(lambda s: s["triggers"][0].update(type="external-pull"))
    assert broken(lambda s: s["triggers"][0].update(metricType="Value"))  # no fallback then
    assert broken(lambda s: s["triggers"].append(copy.deepcopy(s["triggers"][0])))
    assert broken(lambda s: s["fallback"].update(replicas=-1))


def test_trigger_authentication_for_tls() -> None:
    auth = load_one(KEDA / "triggerauthentication.yaml")
    assert auth["apiVersion"] == "keda.sh/v1alpha1" and auth["kind"] == "TriggerAuthentication"
    assert fields_outside(auth, TRIGGER_AUTHENTICATION_FIELDS) == []
    refs = auth["spec"]["secretTargetRef"]
    assert {r["parameter"]: r["key"] for r in refs} == EXTERNAL_SCALER_TLS_PARAMETERS
    assert len({r["name"] for r in refs}) == 1  # one Secret holds all three
    scaled = load_one(KEDA / "scaledobject.yaml")
    assert auth["metadata"]["namespace"] == scaled["metadata"]["namespace"]
    # the ScaledObject's comment tells how to reference it
    assert f"name: {auth['metadata']['name']}" in (KEDA / "scaledobject.yaml").read_text()


# ---------------------------------------------------------------- keda/prometheus-adapter/


def test_prometheus_adapter_hpa_validates(kv: ModuleType) -> None:
    hpa = load_one(KEDA / "prometheus-adapter" / "hpa.yaml")
    validate_builtin(kv, hpa)
    va = load_one(SAMPLES / "vllm-va.yaml")
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
    values = load_one(KEDA / "prometheus-adapter" / "values.yaml")
    hpa = load_one(KEDA / "prometheus-adapter" / "hpa.yaml")
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

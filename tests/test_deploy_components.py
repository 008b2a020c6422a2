"""The optional kustomize components, the example overlays, and every YAML file.

Every kustomization folder under deploy/ renders (the base in place, each component on
top of the base, each example overlay where docs/deploy.md tells the user to copy it),
and every object it renders, like every YAML document under deploy/ and keda/, passes
the checks of tests/manifest_support.py. Then the parts that must agree across files:
the certificates and the Secrets the adapter and KEDA read, the NetworkPolicy and the
pods it admits, the example overlay's settings.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path
from types import ModuleType

import pytest

from adapter.collect.gateway import GatewayPrometheus
from tests.manifest_support import (
    ADAPTER_NS,
    CERT_MANAGER_NS,
    COMPONENTS,
    DEPLOY,
    EXAMPLES,
    EXTERNAL_SCALER_TLS_PARAMETERS,
    KEDA,
    KEDA_NS,
    SAMPLES,
    Doc,
    by_kind,
    check_object,
    component_dirs,
    container,
    copy_layout,
    custom_resource_errors,
    example_dirs,
    gateway_source,
    kubernetes_validate,
    kustomization_dirs,
    kustomize,
    load_all,
    load_one,
    one,
    render_component,
    run_settings,
    settings_env,
)
from tests.test_manifests import rbac_table

# YAML files that are not Kubernetes objects
NOT_MANIFESTS = {KEDA / "prometheus-adapter" / "values.yaml"}  # Helm values


@pytest.fixture(scope="module")
def kv() -> ModuleType:
    return kubernetes_validate()


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/ and the examples, laid out as docs/deploy.md says; returns the deploy copy."""
    return copy_layout(tmp_path_factory.mktemp("layout"))


@pytest.fixture(scope="module")
def renders(layout: Path) -> dict[Path, list[Doc]]:
    """kustomization folder under deploy/ -> what it renders to."""
    found: dict[Path, list[Doc]] = {}
    for directory in kustomization_dirs():
        relative = directory.relative_to(DEPLOY)
        if directory == DEPLOY:
            found[directory] = kustomize(layout)
        elif directory.parent == COMPONENTS:
            found[directory] = render_component(layout, directory.name, layout.parent / "work")
        elif directory.parent == EXAMPLES:
            found[directory] = kustomize(layout.parent / "overlays" / directory.name)
        else:  # pragma: no cover - a new kind of folder needs a rule here
            pytest.fail(f"deploy/{relative}: no rule to render it; add one in this test")
    return found


def _component(renders: dict[Path, list[Doc]], name: str) -> list[Doc]:
    return renders[COMPONENTS / name]


def _example(renders: dict[Path, list[Doc]], name: str) -> list[Doc]:
    return renders[EXAMPLES / name]


# ---------------------------------------------------------------- everything renders, validates


def test_the_expected_folders_are_there() -> None:
    names = {d.name for d in component_dirs()}
    assert names >= {
        "alerts",
        "servicemonitor",
        "sample-config",
        "tls",
        "cert-manager",
        "networkpolicy",
        "openshift",
        "scale-from-zero",
    }
    assert {d.name for d in example_dirs()} >= {"overlay", "openshift"}
    for directory in component_dirs():
        assert load_one(directory / "kustomization.yaml")["kind"] == "Component"


def test_every_kustomization_folder_renders(renders: dict[Path, list[Doc]]) -> None:
    assert set(renders) == set(kustomization_dirs())
    for directory, docs in renders.items():
        assert docs, f"{directory} renders nothing"


def test_every_rendered_object_validates(renders: dict[Path, list[Doc]], kv: ModuleType) -> None:
    distinct = {json.dumps(doc, sort_keys=True): doc for docs in renders.values() for doc in docs}
    for doc in distinct.values():  # the base's objects once, not once per render
        check_object(kv, doc)


def test_components_resources_are_files_of_their_own_folder() -> None:
    """kustomize loads no file outside a component's folder (the reason the sample
    ConfigMaps are copies): fail here with a clear message rather than in kubectl."""
    for directory in component_dirs():
        for entry in load_one(directory / "kustomization.yaml").get("resources", []):
            assert (directory / entry).is_file(), f"{directory.name}: {entry}"
            assert "/" not in entry, f"{directory.name}: {entry} is not in the folder"


def _manifest_files() -> list[Path]:
    files = sorted(
        p
        for root in (DEPLOY, KEDA)
        for p in [*root.rglob("*.yaml"), *root.rglob("*.yml")]
        if p.name != "kustomization.yaml" and p not in NOT_MANIFESTS
    )
    assert len(files) > 20
    return files


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY.parent)))
def test_every_yaml_file_validates(path: Path, kv: ModuleType) -> None:
    for doc in load_all(path):
        check_object(kv, doc)


def test_custom_resource_checks_are_not_vacuous() -> None:
    certificate = load_all(COMPONENTS / "cert-manager" / "server-certificate.yaml")[0]
    assert custom_resource_errors(certificate) == []
    typo = copy.deepcopy(certificate)
    typo["spec"]["dnsName"] = typo["spec"].pop("dnsNames")
    assert custom_resource_errors(typo) != []
    usage = copy.deepcopy(certificate)
    usage["spec"]["usages"] = ["server-auth"]
    assert custom_resource_errors(usage) != []
    cluster = load_one(KEDA / "clustertriggerauthentication.yaml")
    assert custom_resource_errors(cluster) == []
    cluster["metadata"]["namespace"] = "keda"
    assert custom_resource_errors(cluster) != []
    monitor = load_one(COMPONENTS / "servicemonitor" / "servicemonitor.yaml")
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    assert custom_resource_errors(monitor) != []
    rule = load_one(COMPONENTS / "alerts" / "prometheusrule.yaml")
    assert custom_resource_errors(rule) == []
    rule["spec"]["groups"][0]["rules"][0]["alerts"] = "typo"
    assert custom_resource_errors(rule) != []
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert custom_resource_errors(unknown) != []


# ---------------------------------------------------------------- servicemonitor, sample-config


def test_servicemonitor_selects_the_metrics_service(renders: dict[Path, list[Doc]]) -> None:
    docs = _component(renders, "servicemonitor")
    monitor = one(docs, "ServiceMonitor", "wva-adapter")
    assert monitor["metadata"]["namespace"] == ADAPTER_NS
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s for s in by_kind(docs, "Service") if wanted.items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["wva-adapter-metrics"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # our `namespace` label must win


def test_sample_config_is_the_tutorials(renders: dict[Path, list[Doc]]) -> None:
    docs = _component(renders, "sample-config")
    for filename in ("configmap-accelerator-unitcost.yaml", "configmap-serviceclass.yaml"):
        sample = load_one(SAMPLES / filename)
        copied = load_one(COMPONENTS / "sample-config" / filename)
        assert copied == sample, f"components/sample-config/{filename} differs from samples/"
        configmap = one(docs, "ConfigMap", sample["metadata"]["name"])
        assert configmap["data"] == sample["data"]
        assert configmap["metadata"]["namespace"] == ADAPTER_NS  # --config-namespace
    deployment_args = container(docs)["args"]
    assert "--config-namespace=$(POD_NAMESPACE)" in deployment_args


# ---------------------------------------------------------------- cert-manager and KEDA's mTLS


@pytest.fixture(scope="module")
def certificates(renders: dict[Path, list[Doc]]) -> dict[str, Doc]:
    docs = _component(renders, "cert-manager")
    return {d["metadata"]["name"]: d for d in by_kind(docs, "Certificate")}


def _issuer(renders: dict[Path, list[Doc]], name: str) -> Doc:
    return one(_component(renders, "cert-manager"), "ClusterIssuer", name)


def test_the_ca_is_bootstrapped_in_cert_managers_namespace(
    renders: dict[Path, list[Doc]], certificates: dict[str, Doc]
) -> None:
    ca_issuer = _issuer(renders, "wva-adapter-ca")
    ca_secret = ca_issuer["spec"]["ca"]["secretName"]
    (ca,) = [c for c in certificates.values() if c["spec"].get("isCA")]
    # a ClusterIssuer reads its Secret from cert-manager's cluster resource namespace
    assert ca["metadata"]["namespace"] == CERT_MANAGER_NS
    assert ca["spec"]["secretName"] == ca_secret
    root = ca["spec"]["issuerRef"]
    assert root["kind"] == "ClusterIssuer"
    assert "selfSigned" in _issuer(renders, root["name"])["spec"]


def test_the_server_certificate_is_the_secret_the_tls_component_mounts(
    renders: dict[Path, list[Doc]], certificates: dict[str, Doc]
) -> None:
    server = certificates["wva-adapter-server"]
    tls = _component(renders, "tls")
    volumes = one(tls, "Deployment", "wva-adapter")["spec"]["template"]["spec"]["volumes"]
    (mounted,) = [v["secret"]["secretName"] for v in volumes if "secret" in v]
    assert server["metadata"]["namespace"] == ADAPTER_NS
    assert server["spec"]["secretName"] == mounted
    assert "server auth" in server["spec"]["usages"]
    assert not server["spec"].get("isCA")
    # ca.crt of a CA-issued Secret is the issuing CA: the one that signs KEDA's certificate
    assert server["spec"]["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "ClusterIssuer",
        "name": "wva-adapter-ca",
    }
    args = container(tls)["args"]
    assert any(a.endswith("/ca.crt") and "client-ca" in a for a in args)


@pytest.mark.parametrize("scaled_object", ["scaledobject.yaml", "scaledobject-mtls.yaml"])
def test_the_server_certificate_names_the_scaler_address(
    certificates: dict[str, Doc], scaled_object: str
) -> None:
    (trigger,) = load_one(KEDA / scaled_object)["spec"]["triggers"]
    host = trigger["metadata"]["scalerAddress"].rsplit(":", 1)[0]
    assert host in certificates["wva-adapter-server"]["spec"]["dnsNames"]
    service, namespace = host.split(".")[:2]
    assert (service, namespace) == ("wva-adapter", ADAPTER_NS)
    with pytest.raises(ValueError):
        ipaddress.ip_address(host)  # a name, which the certificate can carry


def test_kedas_client_certificate_is_what_the_cluster_trigger_authentication_reads(
    certificates: dict[str, Doc],
) -> None:
    client = certificates["wva-adapter-keda-client"]
    auth = load_one(KEDA / "clustertriggerauthentication.yaml")
    assert auth["kind"] == "ClusterTriggerAuthentication"
    assert "namespace" not in auth["metadata"]
    refs = auth["spec"]["secretTargetRef"]
    assert {r["parameter"]: r["key"] for r in refs} == EXTERNAL_SCALER_TLS_PARAMETERS
    assert {r["name"] for r in refs} == {client["spec"]["secretName"]}
    # KEDA reads a ClusterTriggerAuthentication's Secrets in its cluster object namespace
    assert client["metadata"]["namespace"] == KEDA_NS
    assert "client auth" in client["spec"]["usages"]
    server = certificates["wva-adapter-server"]
    assert client["spec"]["issuerRef"] == server["spec"]["issuerRef"]  # one CA both ways


def test_the_mtls_scaledobject_is_the_plain_one_plus_authentication() -> None:
    plain = load_one(KEDA / "scaledobject.yaml")
    mtls = load_one(KEDA / "scaledobject-mtls.yaml")
    reference = mtls["spec"]["triggers"][0].pop("authenticationRef")
    assert mtls == plain
    auth = load_one(KEDA / "clustertriggerauthentication.yaml")
    assert reference == {"name": auth["metadata"]["name"], "kind": auth["kind"]}


def test_certificates_renew_before_they_expire(certificates: dict[str, Doc]) -> None:
    def hours(text: str) -> float:
        assert text.endswith("h"), text
        return float(text[:-1])

    for certificate in certificates.values():
        spec = certificate["spec"]
        if spec.get("isCA"):
            continue
        assert hours(spec["renewBefore"]) < hours(spec["duration"])
        assert spec["privateKey"]["rotationPolicy"] == "Always"


# ---------------------------------------------------------------- NetworkPolicy


def test_networkpolicy_admits_keda_to_9090_and_prometheus_to_8080(
    renders: dict[Path, list[Doc]],
) -> None:
    docs = _component(renders, "networkpolicy")
    policy = one(docs, "NetworkPolicy", "wva-adapter")
    pod_labels = one(docs, "Deployment", "wva-adapter")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress (API, Prometheus) untouched
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    rules = {}
    for rule in policy["spec"]["ingress"]:
        (port,) = rule["ports"]
        assert port["protocol"] == "TCP"
        (peer,) = rule["from"]
        rules[port["port"]] = peer
    assert set(rules) == {ports["grpc"], ports["metrics"]}
    keda = rules[ports["grpc"]]
    # both selectors in one peer: KEDA's operator pods, in KEDA's namespace (AND, not OR)
    assert keda["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": KEDA_NS}
    assert keda["podSelector"]["matchLabels"] == {"app": "keda-operator"}
    prometheus = rules[ports["metrics"]]
    assert prometheus["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }


# ---------------------------------------------------------------- OpenShift


def test_openshift_component(renders: dict[Path, list[Doc]], kv: ModuleType) -> None:
    docs = _component(renders, "openshift")
    pod = one(docs, "Deployment", "wva-adapter")["spec"]["template"]["spec"]
    adapter = container(docs)
    for security in (pod["securityContext"], adapter["securityContext"]):
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(security)  # the SCC picks
        assert security["runAsNonRoot"] is True
    args = run_settings(docs)
    assert (args.prometheus or "").startswith("https://thanos-querier.openshift-monitoring.svc")
    assert args.prometheus_token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert (args.prometheus_ca_file or "").startswith(
        "/var/run/secrets/kubernetes.io/serviceaccount/"
    )
    binding = one(docs, "ClusterRoleBinding", "wva-adapter-cluster-monitoring-view")
    assert binding["roleRef"]["name"] == "cluster-monitoring-view"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": ADAPTER_NS}
    ]


# ---------------------------------------------------------------- scale from zero


def test_every_rendered_setting_is_a_run_variable(renders: dict[Path, list[Doc]]) -> None:
    """A misspelt variable, in a component or an overlay, would be ignored silently."""
    from adapter.cli import _subcommand, build_parser, env_variables

    known = set(env_variables(_subcommand(build_parser(), "run")))
    for directory, docs in renders.items():
        unknown = set(settings_env(docs)) - known
        assert not unknown, f"{directory.relative_to(DEPLOY.parent)}: {sorted(unknown)}"


def test_scale_from_zero_reads_the_gateway_from_prometheus(
    renders: dict[Path, list[Doc]],
) -> None:
    docs, base = _component(renders, "scale-from-zero"), renders[DEPLOY]
    settings = run_settings(docs)
    assert settings.min_replicas == 0
    assert settings.gateway_prometheus and not settings.gateway
    assert settings.prometheus == settings_env(base)["WVA_PROMETHEUS"]  # the same server
    # `run` accepts the combination (it exits 2 on a gateway without --min-replicas 0,
    # or on two gateway sources) and reads the router's series from Prometheus
    assert isinstance(gateway_source(settings), GatewayPrometheus)
    assert gateway_source(run_settings(base)) is None  # the base reads no gateway
    # only settings: the Deployment is the base's but for the settings' hash suffix, and
    # the Prometheus path needs no RBAC beyond the base's
    deployment, base_deployment = (
        copy.deepcopy(one(d, "Deployment", "wva-adapter")) for d in (docs, base)
    )
    for each in (deployment, base_deployment):
        (source,) = each["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        source["configMapRef"]["name"] = "wva-adapter-settings"
    assert deployment == base_deployment
    assert rbac_table(docs) == rbac_table(base)


def test_scale_from_zero_leaves_the_timings_to_the_overlay(layout: Path) -> None:
    """An overlay sets the timings in its own settings merge (docs/deploy.md): the
    component must not set them, or its literals would win over the overlay's."""
    overlay = layout.parent / "overlays" / "scale-from-zero-timings"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(
        "resources:\n  - ../../deploy\n"
        "components:\n  - ../../deploy/components/scale-from-zero\n"
        "configMapGenerator:\n  - name: wva-adapter-settings\n    behavior: merge\n"
        "    literals:\n      - WVA_SCALE_TO_ZERO_AFTER=900\n      - WVA_WAKE_POLL=0.5\n"
        "      - WVA_PROMETHEUS=http://prometheus.example:9090\n",
        encoding="utf-8",
    )
    settings = run_settings(kustomize(overlay))
    assert (settings.scale_to_zero_after, settings.wake_poll) == (900, 0.5)
    assert settings.prometheus == "http://prometheus.example:9090"
    assert settings.min_replicas == 0 and settings.gateway_prometheus


def test_scale_from_zero_goes_with_the_from_zero_scaledobject() -> None:
    """Each side names the other: the adapter's settings alone, or the ScaledObject alone,
    does not scale from zero."""
    component = (COMPONENTS / "scale-from-zero" / "kustomization.yaml").read_text()
    assert "keda/scaledobject-from-zero.yaml" in component
    scaled_object = (KEDA / "scaledobject-from-zero.yaml").read_text()
    assert "deploy/components/scale-from-zero" in scaled_object
    for setting in ("--min-replicas 0", "--gateway-prometheus", "flowControl"):
        assert setting in scaled_object, setting


# ---------------------------------------------------------------- the example overlays


def test_example_overlay_sets_image_prometheus_and_components(
    renders: dict[Path, list[Doc]],
) -> None:
    docs = _example(renders, "overlay")
    image = container(docs)["image"]
    registry, _, rest = image.partition("/")
    assert "." in registry and rest.endswith("wva-adapter:0.1.0")  # a registry host
    settings = settings_env(docs)
    base = settings_env(renders[DEPLOY])
    assert settings["WVA_PROMETHEUS"] != base["WVA_PROMETHEUS"]
    assert run_settings(docs).prometheus == settings["WVA_PROMETHEUS"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("ServiceMonitor", "wva-adapter"),
        ("ConfigMap", "accelerator-unit-costs"),
        ("ConfigMap", "service-classes-config"),
        ("Certificate", "wva-adapter-server"),
        ("Certificate", "wva-adapter-keda-client"),
        ("NetworkPolicy", "wva-adapter"),
    } <= kinds
    assert run_settings(docs).grpc_tls_client_ca_file  # components/tls is in
    # the old settings ConfigMap is replaced, not duplicated
    assert len([n for k, n in kinds if k == "ConfigMap" and "settings" in n]) == 1


def test_example_overlays_do_not_set_a_namespace() -> None:
    """A `namespace:` in the overlay would move the Certificates out of cert-manager's
    and KEDA's namespaces."""
    for example in example_dirs():
        assert "namespace" not in load_one(example / "kustomization.yaml"), example.name


def test_openshift_example_keeps_existing_configmaps(renders: dict[Path, list[Doc]]) -> None:
    docs = _example(renders, "openshift")
    names = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    assert not names & {"accelerator-unit-costs", "service-classes-config"}
    assert container(docs)["image"].startswith("image-registry.openshift-image-registry.svc:5000/")

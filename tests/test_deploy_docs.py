"""docs/deploy.md and keda/README.md against the repository.

The deployment guide shows no manifest inline: every file it names exists, every YAML
block it might grow must be the text of a repository file, its in-page links land on a
heading, every optional component and example overlay is explained, and the steps come
in the order that keeps KEDA < 2.20 safe (the adapter Ready before any ScaledObject).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.manifest_support import (
    ADAPTER_NS,
    DEPLOY,
    KEDA,
    ROOT,
    component_dirs,
    example_dirs,
    gateway_source,
    kubectl,
    kubernetes_validate,
    kustomize,
    load_one,
    one,
    validate_builtin,
)

GUIDE = ROOT / "docs" / "deploy.md"
TOP_LEVEL = ("deploy", "keda", "docs", "adapter", "tests", "bench", "proto")
ROOT_FILES = ("Dockerfile", "Makefile", "README.md", "pyproject.toml")

# a repository path: starts with a top-level folder (not inside a URL or a longer path)
PATH = re.compile(r"(?<![\w./:-])((?:" + "|".join(TOP_LEVEL) + r")/[\w./-]*[\w/])")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def repository_paths(text: str) -> set[str]:
    found = {m.rstrip("/") for m in PATH.findall(text)}
    found |= {name for name in ROOT_FILES if re.search(rf"`{re.escape(name)}`", text)}
    return found


def yaml_blocks(text: str) -> list[str]:
    return [body for language, body in FENCE.findall(text) if language in ("yaml", "yml")]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def test_the_path_finder_finds_paths_and_skips_urls() -> None:
    text = (
        "see `deploy/components/tls` and deploy/examples/overlay/kustomization.yaml, "
        "https://github.com/kedacore/keda/issues/7729, kedacore/keda, `Dockerfile`"
    )
    assert repository_paths(text) == {
        "deploy/components/tls",
        "deploy/examples/overlay/kustomization.yaml",
        "Dockerfile",
    }


def test_every_path_in_the_guide_exists(guide: str) -> None:
    paths = repository_paths(guide)
    assert len(paths) > 20
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert missing == [], f"docs/deploy.md names files that do not exist: {missing}"


def test_the_guide_shows_no_yaml_that_is_not_a_file(guide: str) -> None:
    files = {
        p.read_text(encoding="utf-8").strip()
        for root in (ROOT / "deploy", KEDA)
        for p in root.rglob("*.yaml")
    }
    for block in yaml_blocks(guide):
        assert block.strip() in files, f"YAML in docs/deploy.md that is no file:\n{block}"


def test_yaml_blocks_are_found() -> None:
    """The check above is not vacuous."""
    text = "x\n```yaml\nkind: Pod\n```\ny\n```sh\nkubectl get pods\n```\n"
    assert yaml_blocks(text) == ["kind: Pod\n"]


def test_in_page_links_land_on_headings(guide: str) -> None:
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", guide, re.MULTILINE)}
    links = re.findall(r"\]\(#([^)]+)\)", guide)
    assert links
    assert sorted(set(links) - anchors) == []


def test_every_component_and_example_is_explained(guide: str) -> None:
    paths = repository_paths(guide)
    for directory in [*component_dirs(), *example_dirs()]:
        relative = str(directory.relative_to(ROOT))
        assert any(p.startswith(relative) for p in paths), f"{relative} not in docs/deploy.md"
    for name in (
        "clustertriggerauthentication.yaml",
        "scaledobject-from-zero.yaml",
        "scaledobject-mtls.yaml",
        "scaledobject.yaml",
        "triggerauthentication.yaml",
    ):
        assert f"keda/{name}" in paths


def test_the_guide_covers_what_a_new_user_meets(guide: str) -> None:
    for needed in (
        "helm install keda kedacore/keda",  # KEDA and how
        "kedacore/keda#7729",  # what breaks before 2.20
        "HPAConfigurableTolerance",  # Kubernetes version for the tolerance
        "docker build -t REGISTRY/wva-adapter:TAG .",  # the image
        "kustomize edit set image wva-adapter=REGISTRY/wva-adapter:TAG",
        "WVA_PROMETHEUS",  # the Prometheus URL without editing our files
        "inferno-autoscaler-controller-manager",  # the upstream controller
        "helm.sh/resource-policy=keep",  # keep the CRD through helm uninstall
        "kubectl explain va.spec",  # which CRD shape
        "tls.crt",
        "ca.crt",
        "KEDA_CLUSTER_OBJECT_NAMESPACE",
        "app: keda-operator",
        "kubectl get hpa",
        "kubectl -n vllm-test describe hpa keda-hpa-vllm",
        "get va vllm",
        "logs deployment/wva-adapter",
        "minReplicaCount: 1",
        # scale to zero and from zero (step 9)
        "deploy/components/scale-from-zero",
        "keda/scaledobject-from-zero.yaml",
        "featureGates: [flowControl]",  # the EPP's flow control, or nothing is queued
        "llm_d_epp_flow_control_queue_size",
        "inference_extension_flow_control_queue_size",
        "--gateway-prometheus",
        "--scale-to-zero-after",
        "--wake-poll",
        "cooldownPeriod",
        "external-push",
        "WVA_GATEWAY_TOKEN_FILE=/var/run/secrets/kubernetes.io/serviceaccount/token",
        "--non-resource-url=/metrics",
        "defaultRequestTTL",  # what bounds the wait of the held requests
        "woken from zero",
    ):
        assert needed in guide, needed


def _first(text: str, needle: str) -> int:
    index = text.find(needle)
    assert index >= 0, needle
    return index


@pytest.mark.parametrize("path", [GUIDE, KEDA / "README.md"], ids=lambda p: p.name)
def test_the_adapter_is_ready_before_any_scaledobject(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    ready = _first(text, "rollout status deployment/wva-adapter")
    assert ready < _first(text, "kubectl apply -f keda/scaledobject")
    assert ready < _first(text, "kubectl apply -f deploy/samples/vllm-va.yaml")


def test_keda_readme_and_scaledobject_agree_on_versions() -> None:
    readme = (KEDA / "README.md").read_text(encoding="utf-8")
    for name in ("scaledobject.yaml", "scaledobject-mtls.yaml", "scaledobject-from-zero.yaml"):
        header = (KEDA / name).read_text(encoding="utf-8").split("apiVersion:")[0]
        assert "KEDA >= 2.18" in header and "2.20" in header, name
    assert "KEDA >= 2.18" in readme and "2.20 or later is recommended" in readme
    assert "kedacore/keda#7729" in readme


def test_scale_to_zero_is_offered_only_with_the_router(guide: str) -> None:
    """Scale to zero exists (step 9), only through the llm-d router's queue: every place
    that keeps minReplicaCount 1 points there, and none says it is not offered."""
    title = "Scale to zero and from zero with the llm-d router"
    assert f"## 9. {title}\n" in guide
    link = f"(#{github_anchor('9. ' + title)})"
    assert link in _section(guide, "## 6. ")  # where the plain ScaledObject is applied
    readme = (KEDA / "README.md").read_text(encoding="utf-8")
    for name in ("scaledobject.yaml", "scaledobject-mtls.yaml"):
        text = (KEDA / name).read_text(encoding="utf-8")
        assert "0 would enable scale to zero" not in text
        comments = re.sub(r"\n\s*#\s*", " ", text)  # comment lines joined
        assert "keda/scaledobject-from-zero.yaml" in comments, name
        assert f'"{title}"' in comments, name
    for name, text in (("docs/deploy.md", guide), ("keda/README.md", readme)):
        assert "not offered yet" not in text.lower(), name
        assert "scaledobject-from-zero.yaml" in text, name


def _section(guide: str, heading: str) -> str:
    start = _first(guide, heading)
    end = guide.find("\n## ", start + 1)
    return guide[start : end if end >= 0 else len(guide)]


def test_the_log_lines_the_guide_greps_for_exist(guide: str) -> None:
    """Step 9 has the user grep the adapter's log: the phrases are the code's."""
    step = _section(guide, "## 9. Scale to zero")
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "adapter").rglob("*.py"))
    greps = re.findall(r"grep -E '([^']+)'", step)
    assert greps
    for pattern in greps:
        for phrase in pattern.split("|"):
            assert phrase in source, f"step 9 greps the log for {phrase!r}: not in adapter/"


def _direct_scrape_settings(guide: str) -> dict[str, str]:
    """The `WVA_...=...` items of step 9's direct-scrape part."""
    part = _section(guide, "### The adapter, scraping the EPP itself")
    items = dict(item.split("=", 1) for item in re.findall(r"`(WVA_[A-Z_]+=[^`]+)`", part))
    assert {"WVA_MIN_REPLICAS", "WVA_GATEWAY", "WVA_GATEWAY_TOKEN_FILE"} <= set(items)
    return items


def test_the_direct_scrape_settings_are_accepted_by_run(guide: str) -> None:
    from adapter.cli import InputError, parse_run_settings
    from adapter.collect.gateway import GatewayScrape

    # on top of the base's settings (WVA_PROMETHEUS: the vLLM series stay there)
    base = dict(item.split("=", 1) for item in _base_settings())
    environ = base | _direct_scrape_settings(guide)
    source = gateway_source(parse_run_settings(["run"], environ))
    assert isinstance(source, GatewayScrape)
    (endpoint,) = source.endpoints
    assert endpoint.namespace == "vllm-test"  # the namespace its queue is matched to
    # "leave the component out": its WVA_GATEWAY_PROMETHEUS with these is refused
    both = environ | {"WVA_GATEWAY_PROMETHEUS": "true"}
    with pytest.raises(InputError, match="one gateway source"):
        gateway_source(parse_run_settings(["run"], both))


def _base_settings() -> list[str]:
    generators = load_one(ROOT / "deploy" / "kustomization.yaml")["configMapGenerator"]
    (settings,) = [g for g in generators if g["name"] == "wva-adapter-settings"]
    literals: list[str] = settings["literals"]
    return literals


def _shell_commands(text: str) -> list[str]:
    """The commands of the sh blocks, continuation lines joined."""
    blocks = [body for language, body in FENCE.findall(text) if language == "sh"]
    return [c.strip() for b in blocks for c in b.replace("\\\n", " ").splitlines() if c.strip()]


def test_the_guides_rbac_grants_the_adapter_get_on_metrics(guide: str) -> None:
    """Step 9's `kubectl create` lines, run with --dry-run=client (offline): valid objects
    that grant the adapter's service account `get` on /metrics, and nothing more."""
    step = _section(guide, "## 9. Scale to zero")
    commands = [c for c in _shell_commands(step) if c.startswith("kubectl create cluster")]
    assert len(commands) == 2
    objects = []
    for command in commands:
        argv = [kubectl(), *shlex.split(command)[1:], "--dry-run=client", "-o", "yaml"]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={"KUBECONFIG": "/nonexistent", "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, f"{command}: {result.stderr}"
        objects.append(yaml.safe_load(result.stdout))
    kv = kubernetes_validate()
    for doc in objects:
        validate_builtin(kv, doc)
    role = one(objects, "ClusterRole")
    assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    base = kustomize(DEPLOY)
    account = one(base, "Deployment", "wva-adapter")["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["serviceAccountName"], "namespace": ADAPTER_NS}
    ]
    # and the token the adapter sends is that account's
    token = _direct_scrape_settings(guide)["WVA_GATEWAY_TOKEN_FILE"]
    assert token == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert account.get("automountServiceAccountToken", True) is True


def test_readme_links_the_guide() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    deploying = next(p for p in readme.split("\n\n") if p.startswith("Deploying:"))
    assert "(docs/deploy.md)" in deploying

"""docs/deploy.md and keda/README.md against the repository.

The deployment guide shows no manifest inline: every file it names exists, every YAML
block it might grow must be the text of a repository file, its in-page links land on a
heading, every optional component and example overlay is explained, and the steps come
in the order that keeps KEDA < 2.20 safe (the adapter Ready before any ScaledObject).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.manifest_support import KEDA, ROOT, component_dirs, example_dirs

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
    for name in ("scaledobject.yaml", "scaledobject-mtls.yaml"):
        header = (KEDA / name).read_text(encoding="utf-8").split("apiVersion:")[0]
        assert "KEDA >= 2.18" in header and "2.20" in header, name
    assert "KEDA >= 2.18" in readme and "2.20 or later is recommended" in readme
    assert "kedacore/keda#7729" in readme


def test_scale_to_zero_is_not_offered_as_working() -> None:
    text = (KEDA / "scaledobject.yaml").read_text(encoding="utf-8")
    assert "0 would enable scale to zero" not in text
    assert "Scale to zero is not offered yet" in text
    readme = (KEDA / "README.md").read_text(encoding="utf-8")
    assert "scale to zero is not offered yet" in readme


def test_readme_links_the_guide() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    deploying = next(p for p in readme.split("\n\n") if p.startswith("Deploying:"))
    assert "(docs/deploy.md)" in deploying

"""The no-cluster source: deploy/samples (the tutorial's YAML) gives the tutorial's SystemSpec."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.assemble import build_system
from adapter.collect.local import DEFAULT_SAMPLES, LocalSourceError, load_snapshot
from adapter.model.system import parse_system
from tests.kube_helpers import SAMPLES, assert_tutorial_system, tutorial_load


def test_samples_folder_is_the_default_and_gives_the_tutorial_system() -> None:
    assert DEFAULT_SAMPLES == SAMPLES
    snapshot = load_snapshot()
    assembly = build_system(snapshot, tutorial_load())
    assert assembly.problems == () and assembly.config_problems == ()
    parsed = parse_system(assembly.system)
    assert parsed.problems == ()
    assert_tutorial_system(parsed.spec)


def test_multi_document_lists_and_other_kinds(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(
        "\n---\n".join(p.read_text() for p in sorted(SAMPLES.glob("*.yaml")))
        + "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: vllm, namespace: vllm-test}\n"
    )
    (tmp_path / "list.yml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: apps/v1, kind: Deployment, metadata: {name: extra}, spec: {replicas: 2}}\n"
    )
    (tmp_path / "notes.txt").write_text("not yaml: [")
    snapshot = load_snapshot(tmp_path)
    assert set(snapshot.deployments) == {("vllm-test", "vllm"), ("default", "extra")}
    assert len(snapshot.nodes) == 4 and len(snapshot.variant_autoscalings) == 1
    parsed = parse_system(build_system(snapshot, tutorial_load()).system)
    assert_tutorial_system(parsed.spec)


def test_configmaps_of_another_namespace_are_ignored(tmp_path: Path) -> None:
    for path in SAMPLES.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    snapshot = load_snapshot(tmp_path, config_namespace="elsewhere")
    assert dict(snapshot.config_maps) == {}
    assembly = build_system(snapshot, tutorial_load())
    assert assembly.system["serverData"]["servers"] == []
    (problem,) = assembly.problems
    assert "ConfigMap elsewhere/accelerator-unit-costs not found" in problem.reason


def test_invalid_yaml_and_missing_path_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(LocalSourceError, match="nope"):
        load_snapshot(tmp_path / "nope")
    (tmp_path / "bad.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(LocalSourceError, match=r"bad\.yaml"):
        load_snapshot(tmp_path)

"""The no-cluster source: deploy/samples (the tutorial's YAML) gives the tutorial's SystemSpec."""

from __future__ import annotations

import logging
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


def _samples_and(tmp_path: Path, name: str, text: str | bytes) -> Path:
    for path in SAMPLES.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    target = tmp_path / name
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_text(text)
    return target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: [\n",
            "not valid YAML at line 5, column 2: expected <block end>, but found "
            "'<block mapping start>' (while parsing a block mapping at line 1, column 1)",
        ),
        (
            "kind: [unclosed\n",
            "not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence at line 1, column 7)",
        ),
        ("\tkind: x\n", "not valid YAML at line 1, column 1: found character '\\t'"),
        (b"kind: caf\xe9\n", "not UTF-8 text (byte 9: invalid continuation byte)"),
    ],
)
def test_a_file_that_is_not_yaml_is_named_with_the_parsers_position(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    bad = _samples_and(tmp_path, "bad.yaml", text)
    with pytest.raises(LocalSourceError) as caught:
        load_snapshot(tmp_path)
    assert str(caught.value).startswith(f"{bad}: {message}"), str(caught.value)
    assert "<unicode string>" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (
            "hello: world\nsize: 3\n",
            "document 1 is not a Kubernetes object (no kind; keys: hello, size)",
        ),
        ("just some words\n", "document 1 is not a Kubernetes object (YAML str, not a mapping)"),
        ("- a\n- b\n", "document 1 is not a Kubernetes object (YAML list, not a mapping)"),
        ("kind:\nmetadata: {name: x}\n", "(an empty kind; keys: kind, metadata)"),
        ("kind: [Node]\n", "(kind ['Node'] is not a name; keys: kind)"),
        (
            "apiVersion: v1\nkind: Node\nmetadata: {name: n}\n---\nplain: mapping\n",
            "document 2 is not a Kubernetes object (no kind; keys: plain)",
        ),
        ("apiVersion: v1\nkind: List\nitems: [{a: 1}]\n", "document 1 item 0 is not a"),
    ],
)
def test_yaml_that_is_not_a_kubernetes_object_is_ignored_with_its_file_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, what: str
) -> None:
    stray = _samples_and(tmp_path, "stray.yaml", text)
    with caplog.at_level(logging.WARNING, logger="adapter.collect.local"):
        snapshot = load_snapshot(tmp_path)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings if str(stray) in r.getMessage()], caplog.text
    (warning,) = warnings
    assert warning.getMessage().startswith(f"{stray}: "), warning.getMessage()
    assert what in warning.getMessage() and warning.getMessage().endswith("; ignored")
    assert "a None without" not in caplog.text
    # the objects of the other files are all there
    assert len(snapshot.variant_autoscalings) == 1 and len(snapshot.config_maps) == 2

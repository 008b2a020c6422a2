"""A local run follows edits: the YAML folder and the scrape targets file are re-read."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from adapter.collect.local import DEFAULT_SAMPLES, LocalFolder, LocalSourceError
from adapter.collect.scrape import TargetsFile, TargetsFileError, load_targets_file


def _touch_later(path: Path, step_ns: int) -> None:
    """Move the mtime forward: two writes in the same clock tick must still count."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + step_ns))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for item in DEFAULT_SAMPLES.iterdir():
        shutil.copy(item, tmp_path / item.name)
    return tmp_path


def test_replicas_edit_is_seen_on_the_next_snapshot(folder: Path) -> None:
    local = LocalFolder(folder)
    key = ("vllm-test", "vllm")
    assert local.snapshot().deployments[key]["spec"]["replicas"] == 1
    deployment = folder / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("replicas: 1", "replicas: 3"))
    _touch_later(deployment, 1_000_000)
    assert local.snapshot().deployments[key]["spec"]["replicas"] == 3


def test_unchanged_folder_is_not_parsed_again(folder: Path) -> None:
    local = LocalFolder(folder)
    assert local.snapshot() is local.snapshot()


def test_a_bad_save_keeps_the_last_good_objects(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = LocalFolder(folder)
    before = local.snapshot()
    broken = folder / "vllm-va.yaml"
    broken.write_text("spec: [unclosed\n")
    _touch_later(broken, 1_000_000)
    with caplog.at_level(logging.ERROR):
        after = local.snapshot()
    assert after is before
    assert local.reload_errors_total == 1
    assert "vllm-va.yaml" in caplog.text


def test_a_bad_save_is_logged_with_the_parsers_position_then_a_fix_is_taken(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = LocalFolder(folder)
    before = local.snapshot()
    deployment = folder / "deployment.yaml"
    good = deployment.read_text()
    deployment.write_text(good.replace("replicas: 1", "replicas: [3"))
    _touch_later(deployment, 1_000_000)
    with caplog.at_level(logging.INFO, logger="adapter.collect.local"):
        assert local.snapshot() is before  # the last good objects
    (error,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert error.levelno == logging.ERROR
    assert error.getMessage().startswith(
        f"keeping the previous objects: {deployment}: not valid YAML at line "
    ), error.getMessage()
    assert "column" in error.getMessage() and "a None without" not in caplog.text

    deployment.write_text(good.replace("replicas: 1", "replicas: 3"))
    _touch_later(deployment, 2_000_000)
    assert local.snapshot().deployments[("vllm-test", "vllm")]["spec"]["replicas"] == 3


def test_a_bad_folder_at_start_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("a: [\n")
    with pytest.raises(LocalSourceError, match=r"x\.yaml"):
        LocalFolder(tmp_path)


def test_targets_file_in_file_sd_format(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(
        "- targets: ['127.0.0.1:8001', '127.0.0.1:8002']\n"
        "  labels: {namespace: vllm-test}\n"
        "- targets: ['10.0.0.9:8443']\n"
        "  labels: {namespace: other, __scheme__: https, __metrics_path__: /m}\n"
    )
    targets = load_targets_file(path)
    assert [(t.url, t.namespace) for t in targets] == [
        ("http://127.0.0.1:8001/metrics", "vllm-test"),
        ("http://127.0.0.1:8002/metrics", "vllm-test"),
        ("https://10.0.0.9:8443/m", "other"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{targets: []}", "expected a list"),
        ("- labels: {namespace: a}", "group 0: expected a mapping with a 'targets' list"),
        ("- targets: ['h:1']", "group 0: no 'namespace' label"),
        ("- targets: ['h:1']\n  labels: [a]", "'labels' must be a mapping"),
        ("- targets: ['']\n  labels: {namespace: a}", "target ''"),
        ("[unclosed", "targets.yaml"),
    ],
)
def test_bad_targets_file_names_file_and_group(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(text)
    with pytest.raises(TargetsFileError, match=message.replace("[", r"\[")):
        load_targets_file(path)


def test_targets_file_follows_changes_and_survives_a_bad_write(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    path.write_text('[{"targets": ["127.0.0.1:8001"]}]')
    watched = TargetsFile(path, default_namespace="ns")
    assert [t.url for t in watched.targets()] == ["http://127.0.0.1:8001/metrics"]
    path.write_text('[{"targets": ["127.0.0.1:8001", "127.0.0.1:8002"]}]')
    _touch_later(path, 1_000_000)
    assert len(watched.targets()) == 2
    path.write_text('[{"targets": "not a list"}]')
    _touch_later(path, 2_000_000)
    assert len(watched.targets()) == 2
    assert watched.errors_total == 1
    path.write_text("[]")
    _touch_later(path, 3_000_000)
    assert watched.targets() == []

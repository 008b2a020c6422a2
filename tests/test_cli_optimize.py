"""`wva-adapter optimize` on invalid input: a message naming the field and the
server, a non-zero exit status, never a traceback; the valid rest is still solved,
exactly as if it had been alone.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapter.cli import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, main

VENV_BIN = Path(sys.executable).parent


def base_document() -> dict[str, Any]:
    """Two servers: "good" (model llama) and "bad" (model mistral), both solvable."""
    return {
        "system": {
            "acceleratorData": {
                "accelerators": [
                    {"name": "A100", "type": "NVIDIA-A100", "cost": 40},
                    {"name": "H100", "type": "NVIDIA-H100", "cost": 100},
                ]
            },
            "modelData": {
                "models": [
                    {
                        "name": model,
                        "acc": acc,
                        "alpha": alpha,
                        "beta": beta,
                        "maxBatchSize": 64,
                        "atTokens": 512,
                    }
                    for model in ("llama", "mistral")
                    for acc, alpha, beta in (("A100", 20.58, 0.41), ("H100", 6.356, 0.044))
                ]
            },
            "serviceClassData": {
                "serviceClasses": [
                    {
                        "name": "Premium",
                        "priority": 1,
                        "modelTargets": [
                            {"model": "llama", "slo-itl": 40, "slo-ttw": 1000},
                            {"model": "mistral", "slo-itl": 40, "slo-ttw": 1000},
                        ],
                    },
                    {
                        "name": "Free",
                        "priority": 5,
                        "modelTargets": [{"model": "llama", "slo-itl": 200, "slo-ttw": 5000}],
                    },
                ]
            },
            "serverData": {
                "servers": [
                    {
                        "name": "good",
                        "class": "Premium",
                        "model": "llama",
                        "currentAlloc": {
                            "accelerator": "H100",
                            "numReplicas": 1,
                            "cost": 100,
                            "load": {"arrivalRate": 900, "avgLength": 256},
                        },
                    },
                    {
                        "name": "bad",
                        "class": "Premium",
                        "model": "mistral",
                        "currentAlloc": {
                            "accelerator": "A100",
                            "numReplicas": 2,
                            "cost": 80,
                            "load": {"arrivalRate": 300, "avgLength": 128},
                        },
                    },
                ]
            },
            "optimizerData": {"optimizer": {"unlimited": False}},
            "capacityData": {
                "count": [
                    {"type": "NVIDIA-A100", "count": 20},
                    {"type": "NVIDIA-H100", "count": 20},
                ]
            },
        }
    }


def bad_server(doc: dict[str, Any]) -> dict[str, Any]:
    server: dict[str, Any] = doc["system"]["serverData"]["servers"][1]
    return server


def bad_model(doc: dict[str, Any], acc: str = "H100") -> dict[str, Any]:
    for model in doc["system"]["modelData"]["models"]:
        if model["name"] == "mistral" and model["acc"] == acc:
            return model  # type: ignore[no-any-return]
    raise AssertionError("no such model entry")


def good_alone(doc: dict[str, Any]) -> dict[str, Any]:
    alone = copy.deepcopy(doc)
    servers = alone["system"]["serverData"]["servers"]
    alone["system"]["serverData"]["servers"] = [s for s in servers if s["name"] == "good"]
    models = alone["system"]["modelData"]["models"]
    alone["system"]["modelData"]["models"] = [m for m in models if m["name"] == "llama"]
    alone["system"]["optimizerData"]["optimizer"].pop("saturationPolicy", None)
    return alone


def run(path: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["optimize", "--system", str(path), *extra], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def write(tmp_path: Path, doc: Any, name: str = "system.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc, encoding="utf-8")
    return path


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        del bad_server(doc)[key]

    return edit


def _set_server(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        bad_server(doc)[key] = value

    return edit


def _set_load(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        bad_server(doc)["currentAlloc"]["load"][key] = value

    return edit


def _set_model(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        for acc in ("A100", "H100"):
            bad_model(doc, acc)[key] = value

    return edit


def _unknown_accelerator(doc: dict[str, Any]) -> None:
    models = doc["system"]["modelData"]["models"]
    doc["system"]["modelData"]["models"] = [
        m for m in models if not (m["name"] == "mistral" and m["acc"] == "A100")
    ]
    bad_model(doc, "H100")["acc"] = "TPUv9"


def _no_target(doc: dict[str, Any]) -> None:
    bad_server(doc)["class"] = "Free"  # Free has no target for mistral


# (edit, text that must appear in the messages naming the field)
ENTRY_PROBLEMS: dict[str, tuple[Callable[[dict[str, Any]], None], list[str]]] = {
    "missing-model": (_drop("model"), ["'bad'", "model", "required field is missing"]),
    "missing-class": (_drop("class"), ["'bad'", "class", "required field is missing"]),
    "negative-alpha": (_set_model("alpha", -1.0), ["mistral/H100", "alpha", "'bad'"]),
    "nan-beta": (_set_model("beta", float("nan")), ["mistral/A100", "beta", "'bad'"]),
    "model-max-batch-zero": (_set_model("maxBatchSize", 0), ["maxBatchSize", "'bad'"]),
    "negative-rate": (_set_load("arrivalRate", -5), ["'bad'", "arrivalRate"]),
    "negative-min-replicas": (_set_server("minNumReplicas", -1), ["'bad'", "minNumReplicas"]),
    "string-rate": (_set_load("arrivalRate", "lots"), ["'bad'", "arrivalRate"]),
    "unknown-accelerator-in-model": (_unknown_accelerator, ["TPUv9", "acc", "'bad'"]),
    "class-without-target": (_no_target, ["'bad'", "model", "no SLO target", "mistral"]),
    "unknown-class": (_set_server("class", "Gold"), ["'bad'", "class", "Gold"]),
}


@pytest.mark.parametrize("case", sorted(ENTRY_PROBLEMS))
def test_invalid_entry_is_named_and_the_rest_is_solved(tmp_path: Path, case: str) -> None:
    edit, needles = ENTRY_PROBLEMS[case]
    doc = base_document()
    edit(doc)
    status, out, err = run(write(tmp_path, doc))
    assert status == EXIT_PARTIAL, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert all(line.startswith("error: ") for line in err.splitlines())
    solved = json.loads(out)["servers"]
    # the bad server is listed, unsolved, with the reason
    assert solved["bad"]["accelerator"] == ""
    assert solved["bad"]["numReplicas"] == 0
    assert solved["bad"]["reason"]
    # the good server's decision is the one it gets alone
    status_alone, out_alone, err_alone = run(write(tmp_path, good_alone(doc), "alone.json"))
    assert status_alone == EXIT_OK, err_alone
    alone = json.loads(out_alone)["servers"]["good"]
    assert solved["good"] == alone
    assert alone["accelerator"] and alone["numReplicas"] >= 1


def test_unknown_saturation_policy_is_warned_and_treated_as_none(tmp_path: Path) -> None:
    doc = base_document()
    doc["system"]["optimizerData"]["optimizer"]["saturationPolicy"] = "Generous"
    status, out, err = run(write(tmp_path, doc))
    assert status == EXIT_PARTIAL
    assert "saturationPolicy" in err and "Generous" in err and "'None'" in err
    none_doc = copy.deepcopy(doc)
    none_doc["system"]["optimizerData"]["optimizer"]["saturationPolicy"] = "None"
    status_none, out_none, _ = run(write(tmp_path, none_doc, "none.json"))
    assert status_none == EXIT_OK
    solved = json.loads(out)
    assert solved["servers"] == json.loads(out_none)["servers"]
    assert solved["problems"][0]["field"] == "optimizerData.optimizer.saturationPolicy"


def test_invalid_entry_in_log_format(tmp_path: Path) -> None:
    doc = base_document()
    bad_server(doc)["class"] = "Gold"
    status, out, err = run(write(tmp_path, doc), "--format", "log")
    assert status == EXIT_PARTIAL
    assert "error: server 'bad': class: unknown service class 'Gold'" in err
    assert "s=bad; unsolved: invalid input: class: unknown service class 'Gold'" in out
    assert "c=Premium; m=llama;" in out


def test_valid_document_exits_zero(tmp_path: Path) -> None:
    status, out, err = run(write(tmp_path, base_document()))
    assert status == EXIT_OK
    assert err == ""
    assert set(json.loads(out)["servers"]) == {"good", "bad"}


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('{"system": {"serverData": \n  {"servers": [}}', ["malformed JSON", "line 2", "column"]),
        ("", ["malformed JSON", "line 1 column 1"]),
        ("[1, 2]", ["must be a JSON object"]),
        ('"system"', ["must be a JSON object"]),
        ('{"serverData": {"servers": {"name": "x"}}}', ["serverData.servers", "expected a list"]),
        ('{"acceleratorData": [1]}', ["acceleratorData", "expected an object"]),
        ('{"optimizerData": 3}', ["optimizerData"]),
    ],
)
def test_unusable_documents_exit_2_with_a_message(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    path = write(tmp_path, text)
    status, out, err = run(path)
    assert status == EXIT_INPUT
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert str(path) in err
    for needle in needles:
        assert needle in err, (needle, err)


def test_missing_file_exits_2(tmp_path: Path) -> None:
    status, out, err = run(tmp_path / "nope.json")
    assert status == EXIT_INPUT
    assert out == ""
    assert "cannot read" in err and "nope.json" in err


def test_stdin_is_read_with_a_dash() -> None:
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO(json.dumps(base_document()))
    assert main(["optimize", "--system", "-"], out=out, err=err, stdin=stdin) == EXIT_OK
    assert json.loads(out.getvalue())["servers"]["good"]["accelerator"]


@pytest.mark.parametrize(
    "edit",
    [_set_load("arrivalRate", 1e39), _set_model("alpha", 1e39)],
    ids=["arrivalRate-1e39", "alpha-1e39"],
)
def test_values_beyond_float32_are_rejected_like_other_invalid_numbers(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    """Finite in JSON but +Inf in the reference's float32 (Go's decoder rejects it).

    Currently fails: the adapter accepts the value, numpy warns (overflow in cast,
    invalid value) and the decision carries rate=+Inf / servTime=NaN with exit 0.
    """
    doc = base_document()
    edit(doc)
    status, out, err = run(write(tmp_path, doc))
    assert status == EXIT_PARTIAL
    assert "'bad'" in err
    solved = json.loads(out)["servers"]
    assert solved["bad"]["accelerator"] == ""
    status_alone, out_alone, _ = run(write(tmp_path, good_alone(doc), "alone.json"))
    assert status_alone == EXIT_OK
    assert solved["good"] == json.loads(out_alone)["servers"]["good"]


def _subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="default")
    return subprocess.run(
        [str(VENV_BIN / "wva-adapter"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_real_process_reports_invalid_input_without_traceback(tmp_path: Path) -> None:
    doc = base_document()
    bad_server(doc)["currentAlloc"]["load"]["arrivalRate"] = -5
    partial = _subprocess("optimize", "--system", str(write(tmp_path, doc)), "--format", "log")
    assert partial.returncode == EXIT_PARTIAL
    assert "Traceback" not in partial.stderr
    assert "server 'bad'" in partial.stderr and "arrivalRate" in partial.stderr
    assert "c=Premium; m=llama;" in partial.stdout

    broken = _subprocess("optimize", "--system", str(write(tmp_path, "{", "broken.json")))
    assert broken.returncode == EXIT_INPUT
    assert "Traceback" not in broken.stderr
    assert "malformed JSON at line 1 column 2" in broken.stderr
    assert broken.stdout == ""

    missing = _subprocess("optimize", "--system", str(tmp_path / "absent.json"))
    assert missing.returncode == EXIT_INPUT
    assert "Traceback" not in missing.stderr
    assert "cannot read" in missing.stderr

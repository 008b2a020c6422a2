"""`wva-adapter optimize` reads both service-class shapes of the SystemSpec, identically.

The flat shape (`{name, model, priority, slo-*}`, one entry per (class, model)) is what
optimizer-light v0.3.0 reads and what the tutorial's controller logged; the nested shape
(`{name, priority, modelTargets: [...]}`) is the newest. The tutorial's four logged
SystemSpecs are replayed from the log lines themselves (tests/data), not from
adapter/samples, so that a difference between the two shapes cannot hide behind a
hand-converted sample.
"""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.cli import EXIT_OK, EXIT_PARTIAL, TUTORIAL_STEPS, main
from adapter.model.system import parse_system
from adapter.optimizer.solution import format_log, optimize_parsed, to_json

DATA = Path(__file__).parent / "data" / "tutorial-log-systemspecs.txt"
VENV_BIN = Path(sys.executable).parent
SPEC_PREFIX = "System data prepared for optimization: - "
SOLUTION_PREFIX = "Optimization solution - system: "
# the log prints each section's inner list/object; its outer SystemSpec key is implied
SECTIONS = {
    "count": "capacityData",
    "accelerators": "acceleratorData",
    "serviceClasses": "serviceClassData",
    "models": "modelData",
    "optimizer": "optimizerData",
    "servers": "serverData",
}
# the alloc strings of the four runs, verbatim from the tutorial's log (also in DATA)
LOGGED_ALLOCS = (
    "{acc=H100; num=1; maxBatch=512; cost=100, val=0, servTime=7.8070107, waitTime=0, rho=1}",
    "{acc=H100; num=2; maxBatch=512; cost=200, val=100, servTime=7.8093896, waitTime=0, rho=1}",
    "{acc=H100; num=2; maxBatch=512; cost=200, val=0, servTime=7.816551, waitTime=0, rho=1}",
    "{acc=H100; num=1; maxBatch=512; cost=100, val=-100, servTime=8.735201, waitTime=0, rho=1}",
)
ALLOC = re.compile(r"alloc=(\{[^}]*\})")


# ---------------------------------------------------------------- the log's dump format


class _Dump:
    """Reader for the controller's section dumps: `{ key: value, ... }`, `[ ... ]`, bare words.

    Not JSON and not quite YAML: nothing is quoted, an empty Go string is printed as
    nothing (`accelerator: ,`), and names hold ':' and '/' (`vllm:vllm-test`). Keys hold
    no ':'; a bare word ends at ',', '}' or ']'.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> Any:
        value = self._value()
        self._skip()
        assert self.pos == len(self.text), f"trailing text at {self.pos}: {self.text[self.pos :]!r}"
        return value

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def _peek(self) -> str:
        self._skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _value(self) -> Any:
        head = self._peek()
        if head == "{":
            return self._container("}", keyed=True)
        if head == "[":
            return self._container("]", keyed=False)
        return self._word()

    def _container(self, close: str, *, keyed: bool) -> Any:
        self.pos += 1  # the opening bracket
        mapping: dict[str, Any] = {}
        items: list[Any] = []
        while self._peek() != close:
            if keyed:
                colon = self.text.index(":", self.pos)
                key = self.text[self.pos : colon].strip()
                assert key and key not in mapping, f"bad or repeated key {key!r}"
                self.pos = colon + 1
                mapping[key] = self._value()
            else:
                items.append(self._value())
            if self._peek() == ",":
                self.pos += 1
            else:
                assert self._peek() == close, f"expected ',' or {close!r} at {self.pos}"
        self.pos += 1  # the closing bracket
        return mapping if keyed else items

    def _word(self) -> Any:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",}]":
            self.pos += 1
        word = self.text[start : self.pos].strip()
        if word in ("true", "false"):
            return word == "true"
        for kind in (int, float):
            try:
                return kind(word)
            except ValueError:
                pass
        return word  # "" for Go's empty string


@dataclass(frozen=True)
class Run:
    title: str
    document: dict[str, Any]  # {"system": SystemSpec}, as the log printed it (flat classes)
    solution: str  # what the controller logged after it, the text `--format log` prints


def read_runs() -> list[Run]:
    """The log's runs: six section lines, then the solution line that closes the run."""
    runs: list[Run] = []
    title = ""
    system: dict[str, Any] = {}
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.startswith("# Step"):
            title = line[2:]
        if not line.startswith("{"):
            continue
        message = json.loads(line)["msg"]
        if message.startswith(SPEC_PREFIX):
            section = _Dump(message.removeprefix(SPEC_PREFIX)).parse()
            [(inner, value)] = section.items()
            assert SECTIONS[inner] not in system, f"{inner} logged twice in one run"
            system[SECTIONS[inner]] = {inner: value}
        else:
            assert message.startswith(SOLUTION_PREFIX), message
            assert set(system) == set(SECTIONS.values()), f"incomplete run: {sorted(system)}"
            runs.append(Run(title, {"system": system}, message.removeprefix(SOLUTION_PREFIX)))
            system = {}
    assert not system, "sections after the last solution line"
    return runs


RUNS = read_runs()
RUN_IDS = [f"run{i + 1}" for i in range(len(RUNS))]


def to_nested(document: dict[str, Any]) -> dict[str, Any]:
    """The same SystemSpec with its flat service classes grouped into modelTargets."""
    nested = copy.deepcopy(document)
    section = nested.get("system", nested)["serviceClassData"]
    classes: dict[str, dict[str, Any]] = {}
    for entry in section["serviceClasses"]:
        target = {k: v for k, v in entry.items() if k not in ("name", "priority")}
        group = classes.setdefault(
            entry["name"],
            {"name": entry["name"], "priority": entry["priority"], "modelTargets": []},
        )
        assert group["priority"] == entry["priority"]
        group["modelTargets"].append(target)
    section["serviceClasses"] = list(classes.values())
    return nested


def optimize_cli(tmp_path: Path, document: Any, fmt: str, name: str) -> tuple[int, str, str]:
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    status = main(["optimize", "--system", str(path), "--format", fmt], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- (a) the logged runs


def test_the_log_holds_four_flat_runs() -> None:
    """What makes the replay meaningful: four runs, each in the flat shape."""
    assert len(RUNS) == 4
    for run in RUNS:
        classes = run.document["system"]["serviceClassData"]["serviceClasses"]
        assert all("model" in c and "modelTargets" not in c for c in classes)
        names = [c["name"] for c in classes]
        assert len(set(names)) < len(names)  # a class name repeats, once per model
        assert ("Premium", "unsloth/Meta-Llama-3.1-8B") in {
            (c["name"], c["model"]) for c in classes
        }


@pytest.mark.parametrize(("run", "alloc"), list(zip(RUNS, LOGGED_ALLOCS, strict=True)), ids=RUN_IDS)
def test_logged_systemspec_gives_logged_solution(tmp_path: Path, run: Run, alloc: str) -> None:
    status, out, err = optimize_cli(tmp_path, run.document, "log", "flat.json")
    assert (status, err) == (EXIT_OK, "")
    printed = ALLOC.findall(out)
    assert printed == ALLOC.findall(run.solution) == [alloc]
    assert out == run.solution


def test_cli_entry_point_reads_the_logged_flat_shape(tmp_path: Path) -> None:
    """The installed command, as a user runs it, on the run where the SLO forces 2 replicas."""
    run = RUNS[1]
    path = tmp_path / "flat.json"
    path.write_text(json.dumps(run.document), encoding="utf-8")
    done = subprocess.run(
        [str(VENV_BIN / "wva-adapter"), "optimize", "--system", str(path), "--format", "log"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stderr) == (EXIT_OK, "")
    assert done.stdout == run.solution
    assert ALLOC.findall(done.stdout) == [LOGGED_ALLOCS[1]]


# ---------------------------------------------------------------- (b) flat == modelTargets


@pytest.mark.parametrize("run", RUNS, ids=RUN_IDS)
def test_logged_flat_spec_and_its_nested_form_give_identical_output(
    tmp_path: Path, run: Run
) -> None:
    nested = to_nested(run.document)
    assert nested != run.document
    for fmt in ("json", "log"):
        flat_result = optimize_cli(tmp_path, run.document, fmt, "flat.json")
        nested_result = optimize_cli(tmp_path, nested, fmt, "nested.json")
        assert flat_result == nested_result
        assert flat_result[0] == EXIT_OK
    assert parse_system(run.document) == parse_system(nested)


def test_the_golden_samples_are_these_logged_specs_in_the_nested_shape() -> None:
    """adapter/samples (tests/test_tutorial_golden.py) hold the same four problems."""
    samples = resources.files("adapter") / "samples"
    for run, name in zip(RUNS, (step for step, _ in TUTORIAL_STEPS), strict=True):
        sample = json.loads((samples / name).read_text(encoding="utf-8"))
        assert sample == to_nested(run.document), name


# ---------------------------------------------------------------- (c) many classes x models

MODELS = ("llama-8b", "granite-13b", "mistral-7b")


@st.composite
def class_tables(draw: st.DrawFn) -> dict[str, Any]:
    """A nested SystemSpec: 1-4 classes, each with SLOs for a subset of 3 models."""
    classes: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 4))):
        models = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True))
        classes.append(
            {
                "name": f"class{i}",
                "priority": draw(st.integers(-1, 5)),
                "modelTargets": [
                    {
                        "model": model,
                        "slo-itl": draw(st.sampled_from([0.0, 9.0, 20.0, 40.0, 200.0])),
                        "slo-ttw": draw(st.sampled_from([0.0, 200.0, 1000.0, 5000.0])),
                        "slo-tps": draw(st.sampled_from([0.0] * 5 + [800.0])),
                    }
                    for model in models
                ],
            }
        )
    targets = [(c["name"], t["model"]) for c in classes for t in c["modelTargets"]]
    servers = [
        {
            "name": f"server{i}",
            "class": service_class,
            "model": model,
            "currentAlloc": {
                "accelerator": draw(st.sampled_from(["", "A100", "H100"])),
                "numReplicas": draw(st.integers(0, 2)),
                "load": {
                    "arrivalRate": draw(st.sampled_from([0.0, 60.0, 480.0, 961.33, 3000.0])),
                    "avgLength": draw(st.sampled_from([64, 256, 512])),
                },
            },
        }
        for i, (service_class, model) in enumerate(
            draw(st.lists(st.sampled_from(targets), min_size=1, max_size=6))
        )
    ]
    return {
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
                    "alpha": alpha * scale,
                    "beta": beta * scale,
                    "maxBatchSize": 64,
                    "atTokens": 512,
                }
                for model, scale in zip(MODELS, (1.0, 1.6, 0.9), strict=True)
                for acc, alpha, beta in (("A100", 20.58, 0.41), ("H100", 6.356, 0.044))
            ]
        },
        "serviceClassData": {"serviceClasses": classes},
        "serverData": {"servers": servers},
        # limited capacity, so that priorities decide who is served
        "optimizerData": {
            "optimizer": {
                "unlimited": draw(st.booleans()),
                "saturationPolicy": draw(st.sampled_from(["None", "PriorityExhaustive"])),
            }
        },
        "capacityData": {
            "count": [
                {"type": "NVIDIA-A100", "count": draw(st.integers(0, 6))},
                {"type": "NVIDIA-H100", "count": draw(st.integers(0, 6))},
            ]
        },
    }


def to_flat(document: dict[str, Any], order: list[int]) -> dict[str, Any]:
    """One flat entry per (class, model), in the given order of those pairs."""
    flat = copy.deepcopy(document)
    section = flat["serviceClassData"]
    entries = [
        {"name": c["name"], "model": t["model"], "priority": c["priority"]}
        | {k: v for k, v in t.items() if k != "model"}
        for c in section["serviceClasses"]
        for t in c["modelTargets"]
    ]
    section["serviceClasses"] = [entries[i] for i in order]
    return flat


def _solve(document: dict[str, Any]) -> tuple[dict[str, Any], str, list[str]]:
    parsed = parse_system(document)
    solution = optimize_parsed(parsed)
    return to_json(solution), format_log(solution), [str(p) for p in parsed.problems]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(class_tables(), st.randoms(use_true_random=False))
def test_flat_and_nested_shapes_solve_identically(document: dict[str, Any], rng: Any) -> None:
    pairs = sum(len(c["modelTargets"]) for c in document["serviceClassData"]["serviceClasses"])
    order = list(range(pairs))
    rng.shuffle(order)  # flat entries of one class need not be adjacent
    flat = to_flat(document, order)
    nested_parsed, flat_parsed = parse_system(document), parse_system(flat)
    assert nested_parsed.problems == flat_parsed.problems == ()
    by_name = {c.name: c for c in nested_parsed.spec.service_classes}
    for service_class in flat_parsed.spec.service_classes:
        expected = by_name.pop(service_class.name)
        assert service_class.priority == expected.priority
        assert sorted(service_class.model_targets, key=lambda t: t.model) == sorted(
            expected.model_targets, key=lambda t: t.model
        )
    assert not by_name
    assert _solve(flat) == _solve(document)


TABLE = [
    # (classes: name -> (priority, {model: (slo-itl, slo-ttw)})), ...
    {"Premium": (1, {"llama-8b": (9, 1000), "granite-13b": (24, 500)}),
     "Freemium": (10, {"llama-8b": (200, 2000), "mistral-7b": (150, 1500)})},
    {"Gold": (0, {"llama-8b": (20, 200)}), "Silver": (2, {"llama-8b": (40, 1000)}),
     "Bronze": (5, {"llama-8b": (80, 5000), "granite-13b": (80, 5000)})},
    {"Same": (3, {m: (30, 300) for m in MODELS}), "Other": (3, {m: (60, 600) for m in MODELS})},
]  # fmt: skip


@pytest.mark.parametrize("table", TABLE, ids=["tutorial-like", "three-tiers", "equal-priorities"])
def test_class_table_solves_identically_in_both_shapes(
    tmp_path: Path, table: dict[str, tuple[int, dict[str, tuple[int, int]]]]
) -> None:
    nested = {
        "system": {
            "acceleratorData": {
                "accelerators": [
                    {"name": "A100", "type": "NVIDIA-A100", "cost": 40},
                    {"name": "H100", "type": "NVIDIA-H100", "cost": 100},
                ]
            },
            "modelData": {
                "models": [
                    {"name": m, "acc": acc, "alpha": a, "beta": b, "maxBatchSize": 256}
                    for m in MODELS
                    for acc, a, b in (("A100", 20.58, 0.41), ("H100", 6.356, 0.044))
                ]
            },
            "serviceClassData": {
                "serviceClasses": [
                    {
                        "name": name,
                        "priority": priority,
                        "modelTargets": [
                            {"model": m, "slo-itl": itl, "slo-ttw": ttw, "slo-tps": 0}
                            for m, (itl, ttw) in targets.items()
                        ],
                    }
                    for name, (priority, targets) in table.items()
                ]
            },
            "serverData": {
                "servers": [
                    {
                        "name": f"{name}-{m}",
                        "class": name,
                        "model": m,
                        "currentAlloc": {"load": {"arrivalRate": 900, "avgLength": 512}},
                    }
                    for name, (_, targets) in table.items()
                    for m in targets
                ]
            },
            "optimizerData": {"optimizer": {"unlimited": False}},
            "capacityData": {"count": [{"type": "NVIDIA-H100", "count": 5}]},
        }
    }
    pairs = sum(len(targets) for _, targets in table.values())
    flat = {"system": to_flat(nested["system"], list(range(pairs))[::-1])}
    nested_json = optimize_cli(tmp_path, nested, "json", "nested.json")
    assert nested_json == optimize_cli(tmp_path, flat, "json", "flat.json")
    assert optimize_cli(tmp_path, nested, "log", "n.json") == optimize_cli(
        tmp_path, flat, "log", "f.json"
    )
    status, out, _ = nested_json
    assert status == EXIT_OK
    servers = json.loads(out)["servers"]
    assert len(servers) == pairs and any(s["numReplicas"] > 0 for s in servers.values())


# ---------------------------------------------------------------- (d) errors


def _tutorial_flat() -> dict[str, Any]:
    return copy.deepcopy(RUNS[1].document)


def _classes(document: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = document["system"]["serviceClassData"]["serviceClasses"]
    return entries


def _with_other_server(document: dict[str, Any]) -> dict[str, Any]:
    """Add a Freemium server for the same model, so one class can be refused alone."""
    _classes(document).append(
        {
            "name": "Freemium",
            "model": "unsloth/Meta-Llama-3.1-8B",
            "priority": 10,
            "slo-itl": 40,
            "slo-ttw": 5000,
            "slo-tps": 0,
        }
    )
    servers = document["system"]["serverData"]["servers"]
    other = copy.deepcopy(servers[0])
    other["name"], other["class"] = "free:vllm-test", "Freemium"
    other["currentAlloc"]["load"]["arrivalRate"] = 300
    servers.append(other)
    return document


def test_conflicting_priorities_refuse_the_class_and_name_it(tmp_path: Path) -> None:
    document = _with_other_server(_tutorial_flat())
    alone = copy.deepcopy(document)
    alone["system"]["serverData"]["servers"].pop(0)  # the Premium server
    _classes(document)[4]["priority"] = 2  # Premium/unsloth: 2, its other entries: 1

    status, out, err = optimize_cli(tmp_path, document, "json", "conflict.json")
    assert status == EXIT_PARTIAL
    assert (
        "error: serviceClass 'Premium': serviceClassData.serviceClasses[4].priority: priority 2 "
        "differs from priority 1 in serviceClassData.serviceClasses[2]: the entries of one "
        "class must agree; the class is not used\n"
    ) in err
    assert (
        "error: server 'vllm:vllm-test': class: service class 'Premium' is not used: "
        "its entries give different priorities\n"
    ) in err
    servers = json.loads(out)["servers"]
    assert servers["vllm:vllm-test"]["accelerator"] == ""
    assert servers["vllm:vllm-test"]["numReplicas"] == 0
    # the other class is solved as if the refused one's server had not been there
    expected = json.loads(optimize_cli(tmp_path, alone, "json", "alone.json")[1])["servers"]
    assert servers["free:vllm-test"] == expected["free:vllm-test"]
    assert servers["free:vllm-test"]["numReplicas"] >= 1


def test_a_missing_priority_is_a_conflict_too_and_said_so() -> None:
    document = _tutorial_flat()
    del _classes(document)[3]["priority"]
    problems = [str(p) for p in parse_system(document).problems]
    assert problems[0] == (
        "serviceClass 'Premium': serviceClassData.serviceClasses[3].priority: priority 0 "
        "(not given) differs from priority 1 in serviceClassData.serviceClasses[2]: the "
        "entries of one class must agree; the class is not used"
    )
    assert parse_system(document).rejected_servers == ("vllm:vllm-test",)


def test_priorities_are_compared_as_the_solver_uses_them() -> None:
    """A negative priority counts as 0 in either shape, so -1 and 0 agree."""
    document = _tutorial_flat()
    for entry, priority in zip(_classes(document)[2:], (0, -1, 0), strict=True):
        entry["priority"] = priority
    parsed = parse_system(document)
    assert parsed.problems == ()
    [premium] = [c for c in parsed.spec.service_classes if c.name == "Premium"]
    assert (premium.priority, len(premium.model_targets)) == (0, 3)


@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_duplicate_class_model_pair_keeps_the_first(tmp_path: Path, shape: str) -> None:
    clean = _tutorial_flat()
    document = _tutorial_flat()
    # a later Premium/unsloth target with a tighter ITL, which would change the answer
    _classes(document).append(_classes(document)[4] | {"slo-itl": 7})
    tighter = _tutorial_flat()
    _classes(tighter)[4]["slo-itl"] = 7
    if shape == "nested":  # the repeated pair lands in Premium's modelTargets
        document, clean, tighter = to_nested(document), to_nested(clean), to_nested(tighter)
        field = "serviceClassData.serviceClasses[1].modelTargets[3].model"
    else:
        field = "serviceClassData.serviceClasses[5].model"

    status, out, err = optimize_cli(tmp_path, document, "log", "duplicate.json")
    assert status == EXIT_PARTIAL
    assert err == (
        f"error: serviceClass 'Premium/unsloth/Meta-Llama-3.1-8B': {field}: "
        "duplicate entry; the first one is used\n"
    )
    assert out == RUNS[1].solution == optimize_cli(tmp_path, clean, "log", "clean.json")[1]
    assert out != optimize_cli(tmp_path, tighter, "log", "tighter.json")[1]


def test_an_entry_in_both_shapes_is_refused() -> None:
    document = _tutorial_flat()
    _classes(document)[4]["modelTargets"] = [{"model": "other", "slo-itl": 50}]
    parsed = parse_system(document)
    assert str(parsed.problems[0]) == (
        "serviceClass 'Premium': serviceClassData.serviceClasses[4].modelTargets: give either "
        "modelTargets or model and slo-* fields, not both"
    )
    assert parsed.rejected_servers == ("vllm:vllm-test",)


def test_a_flat_entry_without_model_is_not_read_as_an_empty_class() -> None:
    document = _tutorial_flat()
    del _classes(document)[4]["model"]
    problems = [str(p) for p in parse_system(document).problems]
    assert problems[0] == (
        "serviceClass 'Premium': serviceClassData.serviceClasses[4].model: required field is "
        "missing"
    )


def test_shapes_mix_across_classes_but_a_nested_class_is_whole(tmp_path: Path) -> None:
    flat = _tutorial_flat()
    nested = to_nested(flat)
    mixed = copy.deepcopy(flat)
    # Freemium nested, Premium flat: unambiguous, same answer
    _classes(mixed)[:2] = [_classes(nested)[0]]
    assert optimize_cli(tmp_path, mixed, "log", "mixed.json") == (EXIT_OK, RUNS[1].solution, "")
    assert parse_system(mixed) == parse_system(flat)
    # a Premium nested entry after Premium's flat entries is a duplicate class
    _classes(mixed).append(_classes(nested)[1] | {"priority": 7})
    status, out, err = optimize_cli(tmp_path, mixed, "log", "mixed2.json")
    assert status == EXIT_PARTIAL
    assert err == "error: serviceClass 'Premium': name: duplicate entry; the first one is used\n"
    assert out == RUNS[1].solution

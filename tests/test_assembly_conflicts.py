"""Objects that disagree: the outcome never depends on names or listing order.

Two VAs declaring different profiles for one model and accelerator, and a class name
defined under two keys of `service-classes-config`, used to be settled by which object
sorted first: the loser was left unsolved, or a model lost its class. Every test here
runs with the newcomer sorted first (`aa`) and last (`zz`), and with the objects listed
in sorted and in reversed order, and checks that every object solvable without the
newcomer still is, with the same decision.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from adapter.assemble import Assembly, build_system
from adapter.collect.metrics import LoadReport, ModelLoad
from adapter.model.kube import ClusterSnapshot
from adapter.model.system import parse_system
from adapter.optimizer import optimize_parsed
from adapter.optimizer.allocation import Allocation
from tests.kube_helpers import MODEL
from tests.test_assemble import (
    OTHER_SERVER,
    VLLM_SERVER,
    Objects,
    base_objects,
    served_loads,
    servers_by_name,
)

NAMES = ["aa", "zz"]  # the newcomer sorts before / after the tutorial's objects
ORDERS = ["sorted", "reversed"]  # how the snapshot lists the objects
CLASSES = "service-classes-config"
SOURCE = f"ConfigMap inferno-autoscaler-system/{CLASSES}"


def listed(objects: Objects, order: str) -> ClusterSnapshot:
    """The snapshot with VAs and ConfigMap keys listed in `order`."""
    reverse = order == "reversed"
    cms = copy.deepcopy(objects["cms"])
    for cm in cms.values():
        cm["data"] = dict(sorted(cm["data"].items(), reverse=reverse))
    return ClusterSnapshot(
        variant_autoscalings=dict(sorted(objects["vas"].items(), reverse=reverse)),
        config_maps=cms,
        nodes=objects["nodes"],
        deployments=objects["deps"],
    )


def allocations(assembly: Assembly) -> dict[str, Allocation | None]:
    """Every server's decision, as the optimizer makes it from the assembly."""
    solution = optimize_parsed(parse_system(assembly.system))
    return {decision.name: decision.allocation for decision in solution.servers}


# ---------------------------------------------------------------- profiles


def add_twin(objects: Objects, namespace: str, alpha: str) -> str:
    """A VA of the tutorial's model on H100 in `namespace`, with its own alpha."""
    twin = copy.deepcopy(objects["vas"][("vllm-test", "vllm")])
    twin["metadata"].update(name="twin", namespace=namespace)
    twin["spec"]["modelProfile"]["accelerators"][0]["alpha"] = alpha
    objects["vas"][(namespace, "twin")] = twin
    objects["deps"][(namespace, "twin")] = {
        "metadata": {"name": "twin", "namespace": namespace},
        "spec": {"replicas": 1},
    }
    return f"twin:{namespace}"


def twin_loads(namespace: str) -> LoadReport:
    """The tutorial's load in both namespaces."""
    report = served_loads()
    same = report.loads[("vllm-test", MODEL)]
    twin = ModelLoad(namespace, MODEL, 480.0, 128.0, 512.0, running=32.0, waiting=0.0)
    assert (same.arrival_rate_rpm, same.avg_output_tokens) == (480.0, 512.0)
    return LoadReport({**report.loads, (namespace, MODEL): twin})


def models_of(assembly: Assembly) -> dict[tuple[str, str], float]:
    return {(m["name"], m["acc"]): m["alpha"] for m in assembly.system["modelData"]["models"]}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("namespace", NAMES)
def test_two_profiles_for_one_model_and_accelerator_each_keep_their_own(
    namespace: str, order: str
) -> None:
    """Each VA is sized on its own profile, filed under `<model>@<namespace>/<name>`, and
    decided as when it is alone; no problem is reported, since neither VA is wrong."""
    objects = base_objects()
    twin = add_twin(objects, namespace, "7.0")
    assembly = build_system(listed(objects, order), twin_loads(namespace))
    assert assembly.problems == ()
    assert models_of(assembly) == {
        (f"{MODEL}@vllm-test/vllm", "H100"): 6.356,
        (f"{MODEL}@{namespace}/twin", "H100"): 7.0,
        ("llama0-7b", "A100"): 20.58,
    }
    servers = servers_by_name(assembly.system)
    assert servers[VLLM_SERVER]["model"] == f"{MODEL}@vllm-test/vllm"
    assert servers[twin]["model"] == f"{MODEL}@{namespace}/twin"
    premium = next(
        c for c in assembly.system["serviceClassData"]["serviceClasses"] if c["name"] == "Premium"
    )
    own = {t["model"]: (t["slo-itl"], t["slo-ttw"]) for t in premium["modelTargets"]}
    assert own[f"{MODEL}@{namespace}/twin"] == own[f"{MODEL}@vllm-test/vllm"] == (9, 1000)

    decided = allocations(assembly)
    alone = allocations(build_system(listed(base_objects(), order), served_loads()))
    assert decided[VLLM_SERVER] is not None
    assert decided[VLLM_SERVER] == alone[VLLM_SERVER]
    assert decided[OTHER_SERVER] == alone[OTHER_SERVER]
    # the twin alone: its own profile, no tutorial VA
    objects = base_objects()
    add_twin(objects, namespace, "7.0")
    del objects["vas"][("vllm-test", "vllm")]
    twin_alone = allocations(build_system(listed(objects, order), twin_loads(namespace)))
    twin_decided, vllm_decided = decided[twin], decided[VLLM_SERVER]
    assert twin_decided is not None and vllm_decided is not None
    assert twin_decided == twin_alone[twin]
    # a slower profile takes less per replica: the twin was not sized on the tutorial's
    assert twin_decided.max_rate_per_replica < vllm_decided.max_rate_per_replica


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("namespace", NAMES)
def test_the_same_profile_twice_is_shared_under_the_plain_model_name(
    namespace: str, order: str
) -> None:
    """The reference's document when nothing disagrees: one entry, the model's name."""
    objects = base_objects()
    twin = add_twin(objects, namespace, "6.356")
    assembly = build_system(listed(objects, order), twin_loads(namespace))
    assert assembly.problems == ()
    assert models_of(assembly) == {(MODEL, "H100"): 6.356, ("llama0-7b", "A100"): 20.58}
    servers = servers_by_name(assembly.system)
    assert servers[VLLM_SERVER]["model"] == servers[twin]["model"] == MODEL
    decided = allocations(assembly)
    assert decided[VLLM_SERVER] is not None and decided[VLLM_SERVER] == decided[twin]


def test_the_result_is_the_same_whatever_the_names_and_order() -> None:
    """The tutorial VA's server entry and decision, over every name and listing order."""
    seen = set()
    for namespace in NAMES:
        for order in ORDERS:
            objects = base_objects()
            add_twin(objects, namespace, "7.0")
            assembly = build_system(listed(objects, order), twin_loads(namespace))
            entry = servers_by_name(assembly.system)[VLLM_SERVER]
            seen.add((repr(entry), allocations(assembly)[VLLM_SERVER]))
    assert len(seen) == 1


# ---------------------------------------------------------------- service classes


def classes_of(objects: Objects) -> dict[str, Any]:
    data: dict[str, Any] = objects["cms"][CLASSES]["data"]
    return data


def premium_elsewhere(key: str, priority: int, targets: str) -> Objects:
    """The tutorial's objects with `key` also defining class Premium."""
    objects = base_objects()
    classes_of(objects)[key] = f"name: Premium\npriority: {priority}\ndata:\n{targets}"
    return objects


def target(model: str, tpot: float, ttft: float) -> str:
    return f"  - {{model: {model}, slo-tpot: {tpot:g}, slo-ttft: {ttft:g}}}\n"


def premium_targets(assembly: Assembly) -> tuple[int, dict[str, tuple[float, float]]]:
    (premium,) = [
        c for c in assembly.system["serviceClassData"]["serviceClasses"] if c["name"] == "Premium"
    ]
    targets = {t["model"]: (t["slo-itl"], t["slo-ttw"]) for t in premium["modelTargets"]}
    return premium["priority"], targets


def baseline() -> Assembly:
    return build_system(listed(base_objects(), "sorted"), served_loads())


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("key", ["aa.yaml", "zz.yaml"])
def test_a_class_under_a_second_key_is_merged_and_takes_no_model_away(
    key: str, order: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another key naming Premium for another model: both keys' models are served, and
    nothing is reported (they do not disagree)."""
    objects = premium_elsewhere(key, 1, target("granite-34b", 30, 800))
    with caplog.at_level(logging.WARNING):
        assembly = build_system(listed(objects, order), served_loads())
    assert assembly.problems == () and assembly.config_problems == ()
    priority, targets = premium_targets(assembly)
    assert priority == 1
    assert targets[MODEL] == (9, 1000) and targets["granite-34b"] == (30, 800)
    assert len(targets) == 4
    assert assembly.slo[VLLM_SERVER] == baseline().slo[VLLM_SERVER]
    assert allocations(assembly)[VLLM_SERVER] == allocations(baseline())[VLLM_SERVER]
    assert not caplog.records


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("key", ["aa.yaml", "zz.yaml"])
@pytest.mark.parametrize(
    ("tpot", "ttft", "used"),
    [(20, 400, (9, 400)), (8, 5000, (8, 1000)), (30, 3000, (9, 1000))],
    ids=["stricter-ttft", "stricter-itl", "looser"],
)
def test_two_targets_for_one_model_give_the_stricter_of_each_reported_on_both_keys(
    key: str, order: str, tpot: float, ttft: float, used: tuple[float, float]
) -> None:
    """The stricter target keeps both keys' promises; the disagreement is a problem of
    each key, naming the other; the tutorial VA is still solved."""
    objects = premium_elsewhere(key, 1, target(MODEL, tpot, ttft))
    assembly = build_system(listed(objects, order), served_loads())
    assert assembly.problems == ()
    assert premium_targets(assembly)[1][MODEL] == used
    choice = assembly.slo[VLLM_SERVER]
    assert (choice.class_name, choice.slo_itl, choice.slo_ttw) == ("Premium", *used)
    # the keys the target comes from: a looser key gives nothing
    both = ", ".join(sorted([key, "premium.yaml"]))
    assert choice.key == ("premium.yaml" if used == (9, 1000) else both)
    problems = {p.key: str(p) for p in assembly.config_problems}
    assert set(problems) == {key, "premium.yaml"}
    stricter = f"the stricter of each is used: slo-tpot {used[0]:g}, slo-ttft {used[1]:g}"
    assert problems[key] == (
        f"{SOURCE} key {key!r}: data: class 'Premium' gives model {MODEL!r} slo-tpot"
        f" {tpot:g}, slo-ttft {ttft:g} here and slo-tpot 9, slo-ttft 1000 under key"
        f" 'premium.yaml'; {stricter}"
    )
    assert f"under key {key!r}; {stricter}" in problems["premium.yaml"]
    decided = allocations(assembly)[VLLM_SERVER]
    assert decided is not None
    if used == (9, 1000):
        assert decided == allocations(baseline())[VLLM_SERVER]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("key", ["aa.yaml", "zz.yaml"])
def test_two_priorities_give_the_most_important_reported_on_both_keys(key: str, order: str) -> None:
    objects = premium_elsewhere(key, 5, "")
    assembly = build_system(listed(objects, order), served_loads())
    assert premium_targets(assembly)[0] == 1
    problems = {p.key: str(p) for p in assembly.config_problems}
    assert problems == {
        key: f"{SOURCE} key {key!r}: priority: class 'Premium' has priority 5 here and 1"
        " under key 'premium.yaml'; the most important, 1, is used",
        "premium.yaml": f"{SOURCE} key 'premium.yaml': priority: class 'Premium' has"
        f" priority 1 here and 5 under key {key!r}; the most important, 1, is used",
    }
    assert allocations(assembly)[VLLM_SERVER] == allocations(baseline())[VLLM_SERVER]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("key", ["aa.yaml", "zz.yaml"])
def test_a_sloclassref_to_either_key_finds_the_merged_class(key: str, order: str) -> None:
    """The key a VA refers to names the class; its targets are the merged ones, the
    optimizer's: the status never shows an SLO the VA was not sized on."""
    objects = premium_elsewhere(key, 1, target(MODEL, 8, 1000))
    for ref in (key, "premium.yaml"):
        objects["vas"][("vllm-test", "vllm")]["spec"]["sloClassRef"] = {
            "name": CLASSES,
            "key": ref,
        }
        choice = build_system(listed(objects, order), served_loads()).slo[VLLM_SERVER]
        assert (choice.class_name, choice.slo_itl, choice.via) == ("Premium", 8, "sloClassRef")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", ["Aaa", "Zzz"])
@pytest.mark.parametrize(("tpot", "wins"), [(12, "Premium"), (6, "")], ids=["looser", "stricter"])
def test_two_classes_of_one_priority_listing_a_model_the_stricter_wins_whatever_its_name(
    name: str, order: str, tpot: float, wins: str
) -> None:
    """Found by model, equal priorities: the class with the stricter target, not the
    class whose name sorts first."""
    objects = base_objects()
    classes_of(objects)[f"{name.lower()}.yaml"] = (
        f"name: {name}\npriority: 1\ndata:\n{target(MODEL, tpot, 1000)}"
    )
    choice = build_system(listed(objects, order), served_loads()).slo[VLLM_SERVER]
    assert choice.class_name == (wins or name)
    assert choice.slo_itl == min(tpot, 9)

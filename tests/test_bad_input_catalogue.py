"""One catalogue of bad inputs, across every way input reaches the adapter.

Each case names the object and field its message must name (`names`) and a few words of
the message (`says`), and checks that nothing else changes:

- `va` / `config`: a VariantAutoscaling, ConfigMap entry or Deployment of a cluster of
  three VAs (`catalogue_objects`): the tutorial's, `team-b/other` on A100 and a rival on
  the same A100 GPUs, in a less important class, with only the GPUs it needs (limited
  mode: an object that wrongly took GPUs would leave the rival without). Every VA's
  decision in the real engine's snapshot equals a run without the bad input (`without`).
  `va`: `team-b/other` is left out with the message; `config`: only config problems.
- `grpc`: a GetMetrics request over real loopback gRPC, served from the real engine's
  snapshot of that cluster; the status code and details, and every VA's GetMetrics
  answer is the engine's decision, the same before and after.
- `optimize`: `wva-adapter optimize` on a SystemSpec file; exit status, the message, no
  traceback, and every other server's decision equals a run without the bad input.
- `run` / `env`: `wva-adapter run` flags and `WVA_*` variables; exit 2 with one line
  naming the flag or variable, no traceback, nothing started.

The cases are new ones: the tables of test_assemble.py, test_cli_optimize.py and
test_scaler_service.py already cover the others, and their helpers are reused here.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapter._proto import externalscaler_pb2 as pb
from adapter.assemble import build_system
from adapter.cli import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, build_parser, main
from adapter.clock import ManualClock
from adapter.collect.metrics import LoadKey, LoadReport, ModelLoad
from adapter.engine import Engine, Snapshot
from tests.kube_helpers import MODEL, SAMPLES
from tests.test_assemble import (
    OTHER,
    OTHER_SERVER,
    Objects,
    base_objects,
    served_loads,
    servers_by_name,
    snapshot_of,
)
from tests.test_cli_optimize import bad_model, bad_server, base_document, write
from tests.test_scaler_service import ref, stub
from tests.test_scaler_support import Box, running

Edit = Callable[[Any], None]


@dataclass(frozen=True)
class Bad:
    id: str
    kind: str  # va | config | grpc | optimize | run | env
    names: str  # the object / field the message must name
    says: str  # words of the expected message
    edit: Any = None  # va/config/optimize: edit(doc); grpc: a ScaledObjectRef; run: argv
    code: Any = EXIT_INPUT  # grpc: the status code; optimize/run/env: the exit status
    env: dict[str, str] = field(default_factory=dict)
    # va/config/optimize: the edit leaving the bad input out (None: va, `team-b/other`
    # dropped; config and optimize, the unedited input)
    without: Edit | None = None
    problems: int = 1  # config: how many config problems it makes (a conflict: one a key)


# ---------------------------------------------------------------- the cluster

GOOD_NS = "vllm-test"  # the tutorial VA's namespace
RIVAL: LoadKey = ("team-c", "rival")
RIVAL_MODEL = "ibm/granite-8b"
RIVAL_GPUS = 2  # what the rival needs at its load: the A100s `team-b/other` takes first


def catalogue_objects() -> Objects:
    """The tutorial VA, `team-b/other` (Freemium, priority 10, on A100) and a rival in a
    less important class (Batch, priority 20) on the same A100 GPUs, under a cost entry
    of its own (so the cost cases of 'A100' leave it alone). The nodes have only the
    A100s the rival needs: with `other` served first it gets none, without `other` all."""
    objects = base_objects()
    objects["vas"][RIVAL] = {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {
            "name": RIVAL[1],
            "namespace": RIVAL[0],
            "labels": {"inference.optimization/acceleratorName": "A100-reserved"},
        },
        "spec": {
            "modelID": RIVAL_MODEL,
            "modelProfile": {
                "accelerators": [
                    {"acc": "A100-reserved", "accCount": 1, "alpha": "15", "beta": "0.3",
                     "maxBatchSize": 64}
                ]
            },
        },
    }  # fmt: skip
    objects["deps"][RIVAL] = {"metadata": {"name": RIVAL[1], "namespace": RIVAL[0]}}
    _costs(objects)["A100-reserved"] = '{"device": "NVIDIA-A100-PCIE-80GB", "cost": "30"}'
    _classes(objects)["batch.yaml"] = (
        f"name: Batch\npriority: 20\ndata:\n  - {{model: {RIVAL_MODEL}, slo-tpot: 50,"
        " slo-ttft: 2000}\n"
    )
    objects["nodes"]["a100-0"] = {
        "kind": "Node",
        "metadata": {
            "name": "a100-0",
            "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-PCIE-80GB"},
        },
        "status": {"allocatable": {"nvidia.com/gpu": str(RIVAL_GPUS)}},
    }
    return objects


class FixedLoads:
    """A metrics source answering the same report at every cycle."""

    def __init__(self, report: LoadReport) -> None:
        self.report = report

    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        return self.report


def catalogue_loads() -> LoadReport:
    """served_loads(), and 600 requests/minute for the rival (2 replicas)."""
    rival = ModelLoad(RIVAL[0], RIVAL_MODEL, 600.0, 128.0, 256.0, running=10.0, waiting=0.0)
    return LoadReport({**served_loads().loads, (RIVAL[0], RIVAL_MODEL): rival})


def cycle(objects: Objects) -> tuple[Snapshot, ManualClock]:
    """One cycle of the real engine (limited mode, the default) over `objects`."""
    cluster, clock = snapshot_of(objects), ManualClock()
    engine = Engine(cluster=lambda: cluster, metrics=FixedLoads(catalogue_loads()), clock=clock)
    return engine.run_cycle(), clock


def test_the_catalogue_cluster_makes_the_rival_depend_on_team_b_other() -> None:
    """What makes the comparisons sharp: `other` takes the A100s before the rival."""
    served = cycle(catalogue_objects())[0].decisions
    assert (served[GOOD_NS, "vllm"].desired_replicas, served[OTHER].desired_replicas) == (1, 1)
    assert served[RIVAL].reason == "accelerator capacity exhausted"
    objects = catalogue_objects()
    del objects["vas"][OTHER]
    alone = cycle(objects)[0].decisions[RIVAL]
    assert (alone.desired_replicas, alone.accelerator) == (RIVAL_GPUS, "A100-reserved")


# ---------------------------------------------------------------- edits of the cluster


def _va(o: Objects) -> dict[str, Any]:
    va: dict[str, Any] = o["vas"][OTHER]
    return va


def _spec(o: Objects) -> dict[str, Any]:
    spec: dict[str, Any] = _va(o)["spec"]
    return spec


def spec_update(**fields: Any) -> Edit:
    def edit(o: Objects) -> None:
        _spec(o).update(fields)

    return edit


def _acc(o: Objects) -> dict[str, Any]:
    entry: dict[str, Any] = _va(o)["spec"]["modelProfile"]["accelerators"][0]
    return entry


def _costs(o: Objects) -> dict[str, Any]:
    data: dict[str, Any] = o["cms"]["accelerator-unit-costs"]["data"]
    return data


def _classes(o: Objects) -> dict[str, Any]:
    data: dict[str, Any] = o["cms"]["service-classes-config"]["data"]
    return data


def put(where: Callable[[Objects], dict[str, Any]], key: str, value: Any) -> Edit:
    def edit(o: Objects) -> None:
        where(o)[key] = value

    return edit


def drop(where: Callable[[Objects], dict[Any, Any]], key: Any) -> Edit:
    def edit(o: Objects) -> None:
        del where(o)[key]

    return edit


def replace_va(value: Any) -> Edit:
    def edit(o: Objects) -> None:
        o["vas"][OTHER] = value

    return edit


FREEMIUM = "name: Freemium\npriority: 10\ndata:\n"
LLAMA0 = "  - {model: llama0-7b, slo-tpot: 150, slo-ttft: 1500}\n"


def freemium(text: str) -> Edit:
    return put(_classes, "freemium.yaml", text)


# ---------------------------------------------------------------- edits of a SystemSpec


def _system(doc: dict[str, Any]) -> dict[str, Any]:
    system: dict[str, Any] = doc["system"]
    return system


def add_entry(section: str, inner: str, entry: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        _system(doc)[section][inner].append(entry)

    return edit


def set_bad_server(path: tuple[str, ...], value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        target = bad_server(doc)
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


def set_bad_model(key: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        for acc in ("A100", "H100"):
            bad_model(doc, acc)[key] = value

    return edit


def set_section(section: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        _system(doc)[section] = value

    return edit


def so(name: str, namespace: str = GOOD_NS, **metadata: str) -> pb.ScaledObjectRef:
    return ref(name, namespace, **metadata)


def drop_bad_server(doc: dict[str, Any]) -> None:
    """The document without server "bad" and the model it runs (mistral)."""
    system = _system(doc)
    servers = system["serverData"]["servers"]
    system["serverData"]["servers"] = [s for s in servers if s["name"] != "bad"]
    models = system["modelData"]["models"]
    system["modelData"]["models"] = [m for m in models if m["name"] != "mistral"]


def premium_under(key: str, text: str) -> Edit:
    return put(_classes, key, f"name: Premium\n{text}")


LOCAL = ["run", "--local", str(SAMPLES), "--scrape", "http://127.0.0.1:9/metrics"]
NO_FREEMIUM = drop(_classes, "freemium.yaml")
NO_A100 = drop(_costs, "A100")
NO_DEPLOYMENT = drop(lambda o: o["deps"], OTHER)
TUTORIAL_LOOSER = f"  - {{model: {MODEL}, slo-tpot: 20, slo-ttft: 2000}}\n"


CATALOGUE: list[Bad] = [
    # -- VariantAutoscaling (the other VA is left out; every other decision is unchanged)
    Bad("va-name-empty", "va", "metadata.name", "at least 1 character",
        put(lambda o: _va(o)["metadata"], "name", "")),
    Bad("va-spec-missing", "va", "spec", "required field is missing",
        drop(_va, "spec")),
    Bad("va-profile-is-a-list", "va", "spec.modelProfile", "valid dictionary",
        put(lambda o: _va(o)["spec"], "modelProfile", [])),
    Bad("va-acc-empty", "va", "spec.modelProfile.accelerators[0].acc", "at least 1 character",
        put(_acc, "acc", "")),
    Bad("va-at-tokens-zero", "va", "accelerators[0].atTokens", "greater than or equal to 1",
        put(_acc, "atTokens", 0)),
    Bad("va-alpha-boolean", "va", "accelerators[0].alpha", "not a boolean",
        put(_acc, "alpha", True)),
    Bad("va-alpha-infinite", "va", "accelerators[0].alpha", "non-negative finite",
        put(_acc, "alpha", float("inf"))),
    Bad("va-max-batch-fraction", "va", "accelerators[0].maxBatchSize", "valid integer",
        put(_acc, "maxBatchSize", 1.5)),
    Bad("va-label-not-a-string", "va", "metadata.labels", "valid string",
        put(lambda o: _va(o)["metadata"]["labels"], "team", 5)),
    Bad("va-slo-ref-key-empty", "va", "spec.sloClassRef.key", "at least 1 character",
        put(lambda o: _va(o)["spec"], "sloClassRef",
            {"name": "service-classes-config", "key": ""})),
    Bad("va-status-condition-status", "va", "status.conditions[0].status", "'True'",
        put(_va, "status", {"conditions": [{"type": "Ready", "status": "Maybe"}]})),
    Bad("va-not-an-object", "va", "VariantAutoscaling team-b/other", "valid dictionary",
        replace_va(["not", "an", "object"])),
    # -- the newer upstream shape's fields (tests/test_va_shapes.py has them first and last)
    Bad("va-target-another-kind", "va", "spec.scaleTargetRef", "LeaderWorkerSet 'other' is"
        " not supported", put(_spec, "scaleTargetRef",
                              {"apiVersion": "leaderworkerset.x-k8s.io/v1",
                               "kind": "LeaderWorkerSet", "name": "other"})),
    Bad("va-target-deployment-missing", "va", "Deployment team-b/ghost (spec.scaleTargetRef)",
        "not found", put(_spec, "scaleTargetRef", {"kind": "Deployment", "name": "ghost"})),
    Bad("va-min-above-max-replicas", "va", "spec", "minReplicas 5 is above maxReplicas 2",
        spec_update(minReplicas=5, maxReplicas=2)),
    Bad("va-max-replicas-zero", "va", "spec.maxReplicas", "greater than or equal to 1",
        put(_spec, "maxReplicas", 0)),
    Bad("va-variant-cost-word", "va", "spec.variantCost", "'ten' is not a decimal",
        put(_spec, "variantCost", "ten")),
    Bad("va-no-model-profile", "va", "spec.modelProfile", "sizing needs the decode profile",
        drop(_spec, "modelProfile")),
    Bad("deployment-replicas-string", "va", "Deployment team-b/other", "spec.replicas",
        put(lambda o: o["deps"][OTHER]["spec"], "replicas", "three"), without=NO_DEPLOYMENT),
    Bad("deployment-ready-boolean", "va", "Deployment team-b/other", "status.readyReplicas",
        put(lambda o: o["deps"][OTHER], "status", {"readyReplicas": True}),
        without=NO_DEPLOYMENT),
    # -- ConfigMaps
    Bad("cost-negative", "va", "accelerator-unit-costs key 'A100'", "non-negative finite",
        put(_costs, "A100", '{"device": "NVIDIA-A100-PCIE-80GB", "cost": -40}'),
        without=NO_A100),
    Bad("cost-entry-a-list", "va", "accelerator-unit-costs key 'A100'", "expected a JSON object",
        put(_costs, "A100", "[40]"), without=NO_A100),
    Bad("class-data-not-a-list", "va", "service-classes-config key 'freemium.yaml': data",
        "expected a list", freemium(FREEMIUM.replace("data:\n", "data: 5\n")),
        without=NO_FREEMIUM),
    Bad("class-priority-word", "va", "key 'freemium.yaml': priority", "valid integer",
        freemium(FREEMIUM.replace("10", "high") + LLAMA0), without=NO_FREEMIUM),
    Bad("class-slo-ttft-negative", "va", "key 'freemium.yaml': data[0].slo-ttft",
        "non-negative", freemium(FREEMIUM + LLAMA0.replace("1500", "-1")),
        without=freemium(FREEMIUM)),
    Bad("class-item-without-model", "va", "key 'freemium.yaml': data[0].model",
        "required field is missing", freemium(FREEMIUM + "  - {slo-tpot: 1, slo-ttft: 1}\n"),
        without=freemium(FREEMIUM)),
    Bad("class-key-is-a-list", "va", "key 'freemium.yaml'", "expected a YAML mapping",
        freemium("- Freemium\n- 10\n"), without=NO_FREEMIUM),
    Bad("class-duplicate-model", "config", "key 'freemium.yaml': data[1].model",
        "duplicate model 'llama0-7b'", freemium(FREEMIUM + LLAMA0 + LLAMA0),
        without=freemium(FREEMIUM + LLAMA0)),
    # a class defined under a second key, sorted first and last: merged, the disagreement
    # reported on both keys, no model loses its class
    Bad("class-priority-conflict-first", "config", "key 'aa.yaml': priority",
        "class 'Premium' has priority 3 here and 1 under key 'premium.yaml'",
        premium_under("aa.yaml", "priority: 3\n"), problems=2),
    Bad("class-priority-conflict-last", "config", "key 'zz.yaml': priority",
        "class 'Premium' has priority 3 here and 1 under key 'premium.yaml'",
        premium_under("zz.yaml", "priority: 3\n"), problems=2),
    Bad("class-target-conflict-first", "config", "key 'aa.yaml': data",
        "the stricter of each is used: slo-tpot 9, slo-ttft 1000",
        premium_under("aa.yaml", "priority: 1\ndata:\n" + TUTORIAL_LOOSER), problems=2),
    Bad("class-target-conflict-last", "config", "key 'zz.yaml': data",
        "the stricter of each is used: slo-tpot 9, slo-ttft 1000",
        premium_under("zz.yaml", "priority: 1\ndata:\n" + TUTORIAL_LOOSER), problems=2),
    Bad("cost-extra-entry-broken", "config", "accelerator-unit-costs key 'TPU'",
        "invalid JSON", put(_costs, "TPU", '{"device": ')),
    # -- gRPC GetMetrics (ScaledObject trigger metadata); every VA keeps its answer
    Bad("grpc-name-too-long", "grpc", "variantAutoscalingName", "not a valid Kubernetes object",
        so("vllm", variantAutoscalingName="a" * 254), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-namespace-too-long", "grpc", "variantAutoscalingNamespace",
        "not a valid Kubernetes namespace",
        so("vllm", variantAutoscalingNamespace="n" * 64), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-key-capitalised", "grpc", "VariantAutoscalingName", "unknown metadata key",
        so("vllm", VariantAutoscalingName="vllm"), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-scaledobject-name-uppercase", "grpc", "name", "'Vllm' is not a valid",
        so("Vllm"), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-scaledobject-namespace-uppercase", "grpc", "namespace",
        "'VLLM-TEST' is not a valid", so("vllm", "VLLM-TEST"), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-name-trailing-dash", "grpc", "variantAutoscalingName", "'vllm-' is not a valid",
        so("vllm", variantAutoscalingName="vllm-"), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-name-non-ascii", "grpc", "variantAutoscalingName", "is not a valid",
        so("vllm", variantAutoscalingName="vllmä"), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-unknown-va", "grpc", f"VariantAutoscaling {GOOD_NS}/ghost", "not found",
        so("ghost"), grpc.StatusCode.NOT_FOUND),
    Bad("grpc-unsolved-va", "grpc", "VariantAutoscaling team-c/rival",
        "has no decision: accelerator capacity exhausted",
        so(RIVAL[1], RIVAL[0]), grpc.StatusCode.UNAVAILABLE),
    # -- wva-adapter optimize (every other server's decision is unchanged)
    Bad("optimize-accelerator-cost-negative", "optimize",
        "accelerator 'TPU': acceleratorData.accelerators[2].cost", "greater than or equal to 0",
        add_entry("acceleratorData", "accelerators", {"name": "TPU", "type": "T", "cost": -1}),
        EXIT_PARTIAL),
    Bad("optimize-capacity-negative", "optimize", "capacityData.count[2].count",
        "greater than or equal to 0",
        add_entry("capacityData", "count", {"type": "NVIDIA-TPU", "count": -1}), EXIT_PARTIAL),
    Bad("optimize-class-without-name", "optimize",
        "serviceClass '#2': serviceClassData.serviceClasses[2].name", "required field",
        add_entry("serviceClassData", "serviceClasses", {"priority": 3}), EXIT_PARTIAL),
    Bad("optimize-replicas-word", "optimize", "server 'bad'", "currentAlloc.numReplicas",
        set_bad_server(("currentAlloc", "numReplicas"), "two"), EXIT_PARTIAL,
        without=drop_bad_server),
    Bad("optimize-min-replicas-fraction", "optimize", "server 'bad'", "minNumReplicas",
        set_bad_server(("minNumReplicas",), 1.5), EXIT_PARTIAL, without=drop_bad_server),
    Bad("optimize-at-tokens-zero", "optimize", "mistral/H100", "atTokens",
        set_bad_model("atTokens", 0), EXIT_PARTIAL, without=drop_bad_server),
    Bad("optimize-models-not-a-list", "optimize", "modelData.models", "expected a list",
        set_section("modelData", {"models": "llama"}), EXIT_INPUT),
    Bad("optimize-server-section-a-list", "optimize", "serverData", "expected an object",
        set_section("serverData", []), EXIT_INPUT),
    # -- wva-adapter run flags (exit 2, one line, nothing started)
    Bad("run-interval-negative", "run", "--interval", "> 0", [*LOCAL, "--interval", "-1"]),
    Bad("run-interval-nan", "run", "--interval", "finite", [*LOCAL, "--interval", "nan"]),
    Bad("run-grpc-port-high", "run", "--grpc-port", "0..65535", [*LOCAL, "--grpc-port", "70000"]),
    Bad("run-metrics-port-negative", "run", "--metrics-port", "0..65535",
        [*LOCAL, "--metrics-port=-1"]),
    Bad("run-min-replicas-negative", "run", "--min-replicas", ">= 0",
        [*LOCAL, "--min-replicas=-1"]),
    Bad("run-staleness-zero", "run", "--staleness", "> 0", [*LOCAL, "--staleness", "0"]),
    Bad("run-cycles-zero", "run", "--cycles", ">= 1", [*LOCAL, "--cycles", "0"]),
    Bad("run-grace-negative", "run", "--grace-period", ">= 0",
        [*LOCAL, "--grace-period=-0.5"]),
    Bad("run-sync-timeout-infinite", "run", "--sync-timeout", "finite",
        [*LOCAL, "--sync-timeout", "inf"]),
    Bad("run-tls-key-alone", "run", "--grpc-tls-cert-file", "give both",
        [*LOCAL, "--grpc-tls-key-file", "/nonexistent.key"]),
    Bad("run-tls-cert-missing", "run", "TLS file /nonexistent.crt", "No such file",
        [*LOCAL, "--grpc-tls-cert-file", "/nonexistent.crt", "--grpc-tls-key-file",
         "/nonexistent.key"]),
    Bad("run-scrape-file-missing", "run", "--scrape-file /nonexistent/targets.json",
        "No such file", ["run", "--local", str(SAMPLES), "--scrape-file",
                         "/nonexistent/targets.json"]),
    Bad("run-scrape-window-negative", "run", "--scrape-window", ">= 0",
        [*LOCAL, "--scrape-window=-2"]),
    Bad("run-scrape-file-and-scrape", "run", "--scrape-file", "exactly one metrics source",
        [*LOCAL, "--scrape-file", "/nonexistent/targets.json"]),
    Bad("run-gateway-without-min-replicas-0", "run", "--min-replicas 0", "wakes variants at zero",
        [*LOCAL, "--gateway", "http://127.0.0.1:9/metrics"]),
    Bad("run-gateway-two-sources", "run", "--gateway", "give one gateway source",
        [*LOCAL, "--min-replicas", "0", "--gateway", "http://127.0.0.1:9/metrics",
         "--gateway-prometheus"]),
    Bad("run-gateway-prometheus-without-prometheus", "run", "--gateway-prometheus",
        "give --prometheus URL", [*LOCAL, "--min-replicas", "0", "--gateway-prometheus"]),
    Bad("run-gateway-not-a-url", "run", "--gateway", "not an http(s) URL",
        [*LOCAL, "--min-replicas", "0", "--gateway", "ns=epp:9090/metrics"]),
    Bad("run-scale-to-zero-after-negative", "run", "--scale-to-zero-after", ">= 0",
        [*LOCAL, "--scale-to-zero-after=-1"]),
    Bad("run-wake-poll-zero", "run", "--wake-poll", "> 0", [*LOCAL, "--wake-poll", "0"]),
    Bad("demo-time-factor-zero", "run", "--time-factor", "finite number > 0",
        ["demo", "--time-factor", "0"]),
    # -- environment settings (exit 2, one line naming the variable)
    Bad("env-interval-word", "env", "WVA_INTERVAL", "expected a number", LOCAL, EXIT_INPUT,
        {"WVA_INTERVAL": "fast"}),
    Bad("env-grpc-port-high", "env", "WVA_GRPC_PORT", "0..65535", LOCAL, EXIT_INPUT,
        {"WVA_GRPC_PORT": "70000"}),
    Bad("env-min-replicas-negative", "env", "WVA_MIN_REPLICAS", ">= 0", LOCAL, EXIT_INPUT,
        {"WVA_MIN_REPLICAS": "-1"}),
    Bad("env-leader-election-maybe", "env", "WVA_LEADER_ELECTION", "expected true or false",
        LOCAL, EXIT_INPUT, {"WVA_LEADER_ELECTION": "maybe"}),
    Bad("env-saturation-policy-unknown", "env", "WVA_SATURATION_POLICY", "expected one of",
        LOCAL, EXIT_INPUT, {"WVA_SATURATION_POLICY": "Greedy"}),
    Bad("env-cycles-fraction", "env", "WVA_CYCLES", "whole number", LOCAL, EXIT_INPUT,
        {"WVA_CYCLES": "2.5"}),
    Bad("env-staleness-zero", "env", "WVA_STALENESS", "> 0", LOCAL, EXIT_INPUT,
        {"WVA_STALENESS": "0"}),
    Bad("env-bad-even-with-flag", "env", "WVA_INTERVAL", "expected a number",
        [*LOCAL, "--interval", "5"], EXIT_INPUT, {"WVA_INTERVAL": "fast"}),
    Bad("env-prometheus-and-scrape", "env", "--prometheus", "exactly one metrics source",
        LOCAL, EXIT_INPUT, {"WVA_PROMETHEUS": "http://127.0.0.1:9"}),
]  # fmt: skip


# ---------------------------------------------------------------- checkers


def _drop_other(o: Objects) -> None:
    del o["vas"][OTHER]


def check_cluster(case: Bad) -> None:
    """Every VA's decision but the bad one's is what it is without the bad input; the
    message names the object and field."""
    without = catalogue_objects()
    (case.without or (_drop_other if case.kind == "va" else _unchanged))(without)
    objects = catalogue_objects()
    case.edit(objects)
    expected, bad = cycle(without)[0], cycle(objects)[0]
    others = [key for key in expected.decisions if key != OTHER or case.kind == "config"]
    assert others, expected.decisions
    for key in others:
        assert bad.decisions[key] == expected.decisions[key], key
    assembly = build_system(snapshot_of(objects), catalogue_loads())
    if case.kind == "va":
        assert not bad.decisions[OTHER].solved
        assert OTHER_SERVER not in servers_by_name(assembly.system)
        (message,) = [str(p) for p in assembly.problems if (p.namespace, p.name) == OTHER]
        assert message.startswith("VariantAutoscaling team-b/other: "), message
    else:
        assert set(bad.decisions) == set(expected.decisions)
        new = [p for p in bad.config_problems if p not in expected.config_problems]
        assert len(new) == case.problems, new
        message = next((m for m in new if case.names in m), "; ".join(new))
    assert case.names in message, message
    assert case.says in message, message


def _unchanged(_: Any) -> None:
    pass


async def _answers(client: Any, snapshot: Snapshot) -> dict[tuple[str, str], Any]:
    """Every VA's GetMetrics answer: its values, or the refusal's code and details."""
    out: dict[tuple[str, str], Any] = {}
    for namespace, name in sorted(snapshot.decisions):
        request = pb.GetMetricsRequest(scaledObjectRef=so(name, namespace))
        try:
            answer = await client.GetMetrics(request)
        except grpc.aio.AioRpcError as error:
            out[namespace, name] = (error.code(), error.details())
        else:
            out[namespace, name] = [(v.metricName, v.metricValue) for v in answer.metricValues]
    return out


async def _grpc(case: Bad) -> None:
    snapshot, clock = cycle(catalogue_objects())
    box = Box(clock=clock, latest=snapshot)
    async with running(box) as server:
        channel, client = stub(server.port)
        async with channel:
            before = await _answers(client, snapshot)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=case.edit))
            after = await _answers(client, snapshot)
    assert refused.value.code() == case.code
    details = refused.value.details() or ""
    assert case.names in details and case.says in details, details
    assert after == before
    for (namespace, name), decision in snapshot.decisions.items():
        if decision.solved:
            metric = f"wva-{namespace}-{name}"
            assert before[namespace, name] == [(metric, decision.desired_replicas)]
        else:
            assert before[namespace, name][0] == grpc.StatusCode.UNAVAILABLE
    assert sum(d.solved for d in snapshot.decisions.values()) == 2


def _optimize(doc: dict[str, Any], tmp_path: Path, name: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["optimize", "--system", str(write(tmp_path, doc, name))], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def check_optimize(case: Bad, tmp_path: Path) -> None:
    without, doc = base_document(), base_document()
    (case.without or _unchanged)(without)
    case.edit(doc)
    status, out, text = _optimize(doc, tmp_path, "bad.json")
    assert status == case.code, text
    assert "Traceback" not in text
    lines = text.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), text
    assert any(case.names in line and case.says in line for line in lines), text
    if status == EXIT_INPUT:
        assert out == "" and len(lines) == 1
        return
    expected_status, expected, _ = _optimize(without, tmp_path, "without.json")
    assert expected_status == EXIT_OK
    servers, expected_servers = json.loads(out)["servers"], json.loads(expected)["servers"]
    assert expected_servers and all(s["numReplicas"] > 0 for s in expected_servers.values())
    for name, decision in expected_servers.items():
        assert servers[name] == decision, name


def check_run(case: Bad) -> None:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(case.edit), out=out, err=err, environ=case.env)
    text = err.getvalue()
    assert status == case.code == EXIT_INPUT, text
    assert "Traceback" not in text
    assert text.count("\n") == 1 and text.startswith("error: "), text
    assert case.names in text and case.says in text, text
    assert out.getvalue() == ""


def test_the_catalogue_is_large_and_covers_every_kind() -> None:
    assert len(CATALOGUE) >= 30
    assert len({c.id for c in CATALOGUE}) == len(CATALOGUE)
    kinds = {c.kind for c in CATALOGUE}
    assert kinds == {"va", "config", "grpc", "optimize", "run", "env"}


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_bad_input(case: Bad, tmp_path: Path) -> None:
    if case.kind in ("va", "config"):
        check_cluster(case)
    elif case.kind == "grpc":
        asyncio.run(_grpc(case))
    elif case.kind == "optimize":
        check_optimize(case, tmp_path)
    else:
        check_run(case)


# ---------------------------------------------------------------- the variables when valid


def _parsed(argv: list[str], environ: dict[str, str]) -> Any:
    from adapter.cli import parse_command_line

    args = parse_command_line(argv, environ)
    return args.settings if args.command == "run" else args


def test_valid_variables_set_run_flags_and_flags_win() -> None:
    environ = {
        "WVA_PROMETHEUS": "http://127.0.0.1:9090",
        "WVA_INTERVAL": "7.5",
        "WVA_GRPC_PORT": "0",
        "WVA_MIN_REPLICAS": "0",
        "WVA_LEADER_ELECTION": "true",
        "WVA_UNLIMITED": "off",
        "WVA_NAMESPACE": "team-a, team-b",
        "WVA_SATURATION_POLICY": "RoundRobin",
        "WVA_KUBECONFIG": "",  # empty: unset
    }
    args = _parsed(["run"], environ)
    assert args.prometheus == "http://127.0.0.1:9090"
    assert (args.interval, args.grpc_port, args.min_replicas) == (7.5, 0, 0)
    assert args.leader_election is True and args.unlimited is False
    assert args.namespace == ("team-a", "team-b")
    assert args.saturation_policy == "RoundRobin" and args.kubeconfig is None
    flags = _parsed(["run", "--interval", "2", "--namespace", "ml", "--grpc-port=9999"], environ)
    assert (flags.interval, flags.namespace, flags.grpc_port) == (2.0, ("ml",), 9999)
    assert flags.prometheus == "http://127.0.0.1:9090"  # still from the environment
    # other commands ignore the variables, even invalid ones
    assert _parsed(["demo"], {"WVA_INTERVAL": "fast"}).command == "demo"


def test_help_lists_every_run_flag_as_a_variable() -> None:
    parser = build_parser()
    run = next(a for a in parser._actions if a.dest == "command").choices["run"]  # type: ignore[index]
    epilog = run.format_help()
    for action in run._actions:
        longs = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
        if longs:
            variable = "WVA_" + longs[0][2:].upper().replace("-", "_")
            assert variable in epilog and longs[0] in epilog
    assert "WVA_LEADER_ELECTION" in epilog and "a flag on the command line wins" in epilog


def test_a_real_process_reports_a_bad_variable_in_one_line() -> None:
    env = dict(os.environ, WVA_GRPC_PORT="70000", PYTHONWARNINGS="default")
    result = subprocess.run(
        [sys.executable, "-m", "adapter.cli", *LOCAL],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == EXIT_INPUT
    assert result.stderr == (
        "error: WVA_GRPC_PORT='70000': must be a port number 0..65535 (0: any free port)\n"
    )
    assert result.stdout == ""


def test_catalogue_edits_do_not_leak_into_the_shared_baselines() -> None:
    """Every edit changes the copy it is given and nothing else: the cluster and document
    builders return fresh copies, so no case (nor its `without`) sees another's edits."""
    cluster, document = repr(catalogue_objects()), json.dumps(base_document())
    for case in CATALOGUE:
        if case.kind in ("va", "config", "optimize"):
            fresh = base_document() if case.kind == "optimize" else catalogue_objects()
            case.edit(fresh)
            assert repr(fresh) != (document if case.kind == "optimize" else cluster), case.id
            if case.without is not None:
                case.without(base_document() if case.kind == "optimize" else catalogue_objects())
    assert repr(catalogue_objects()) == cluster
    assert json.dumps(base_document()) == document

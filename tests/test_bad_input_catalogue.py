"""One catalogue of bad inputs, across every way input reaches the adapter.

Each case names the object and field its message must name (`names`) and a few words of
the message (`says`), and checks that nothing else changes:

- `va` / `config`: a VariantAutoscaling, ConfigMap entry or Deployment next to the
  tutorial's VA; the tutorial VA's optimizer decision is identical to the baseline.
  `va`: the other VA is left out with the message; `config`: only a config problem,
  the other VA is still assembled.
- `grpc`: a GetMetrics request over real loopback gRPC; the status code and details,
  and another VA's GetMetrics answer is the same before and after.
- `optimize`: `wva-adapter optimize` on a SystemSpec file; exit status, the message, no
  traceback, and the good server's decision equals the baseline's.
- `run` / `env`: `wva-adapter run` flags and `WVA_*` variables; exit 2 with one line
  naming the flag or variable, no traceback, nothing started.

The cases are new ones: the tables of test_assemble.py, test_cli_optimize.py and
test_scaler_service.py already cover the others, and their helpers are reused here.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapter._proto import externalscaler_pb2 as pb
from adapter.assemble import Assembly, build_system
from adapter.cli import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, build_parser, main
from adapter.model.system import parse_system
from adapter.optimizer import optimize_parsed
from adapter.optimizer.allocation import Allocation
from tests.kube_helpers import SAMPLES
from tests.test_assemble import (
    OTHER,
    OTHER_SERVER,
    VLLM_SERVER,
    Objects,
    base_objects,
    served_loads,
    servers_by_name,
    snapshot_of,
)
from tests.test_cli_optimize import bad_model, bad_server, base_document, write
from tests.test_scaler_service import ref, stub
from tests.test_scaler_support import NS, Box, running

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


# ---------------------------------------------------------------- edits of the cluster


def _va(o: Objects) -> dict[str, Any]:
    va: dict[str, Any] = o["vas"][OTHER]
    return va


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


def drop(where: Callable[[Objects], dict[str, Any]], key: str) -> Edit:
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


def so(name: str, namespace: str = NS, **metadata: str) -> pb.ScaledObjectRef:
    return ref(name, namespace, **metadata)


LOCAL = ["run", "--local", str(SAMPLES), "--scrape", "http://127.0.0.1:9/metrics"]


CATALOGUE: list[Bad] = [
    # -- VariantAutoscaling (the other VA is left out; the tutorial VA is unchanged)
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
    Bad("deployment-replicas-string", "va", "Deployment team-b/other", "spec.replicas",
        put(lambda o: o["deps"][OTHER]["spec"], "replicas", "three")),
    Bad("deployment-ready-boolean", "va", "Deployment team-b/other", "status.readyReplicas",
        put(lambda o: o["deps"][OTHER], "status", {"readyReplicas": True})),
    # -- ConfigMaps
    Bad("cost-negative", "va", "accelerator-unit-costs key 'A100'", "non-negative finite",
        put(_costs, "A100", '{"device": "NVIDIA-A100-PCIE-80GB", "cost": -40}')),
    Bad("cost-entry-a-list", "va", "accelerator-unit-costs key 'A100'", "expected a JSON object",
        put(_costs, "A100", "[40]")),
    Bad("class-data-not-a-list", "va", "service-classes-config key 'freemium.yaml': data",
        "expected a list", freemium(FREEMIUM.replace("data:\n", "data: 5\n"))),
    Bad("class-priority-word", "va", "key 'freemium.yaml': priority", "valid integer",
        freemium(FREEMIUM.replace("10", "high") + LLAMA0)),
    Bad("class-slo-ttft-negative", "va", "key 'freemium.yaml': data[0].slo-ttft",
        "non-negative", freemium(FREEMIUM + LLAMA0.replace("1500", "-1"))),
    Bad("class-item-without-model", "va", "key 'freemium.yaml': data[0].model",
        "required field is missing", freemium(FREEMIUM + "  - {slo-tpot: 1, slo-ttft: 1}\n")),
    Bad("class-key-is-a-list", "va", "key 'freemium.yaml'", "expected a YAML mapping",
        freemium("- Freemium\n- 10\n")),
    Bad("class-duplicate-model", "config", "key 'freemium.yaml': data[1].model",
        "duplicate model 'llama0-7b'", freemium(FREEMIUM + LLAMA0 + LLAMA0)),
    Bad("class-name-taken", "config", "key 'zz.yaml': name",
        "class 'Premium' is already defined by key 'premium.yaml'",
        put(_classes, "zz.yaml", "name: Premium\npriority: 3\n")),
    Bad("cost-extra-entry-broken", "config", "accelerator-unit-costs key 'TPU'",
        "invalid JSON", put(_costs, "TPU", '{"device": ')),
    # -- gRPC GetMetrics (ScaledObject trigger metadata); "chat" keeps its answer
    Bad("grpc-name-too-long", "grpc", "variantAutoscalingName", "not a valid Kubernetes object",
        so("chat", variantAutoscalingName="a" * 254), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-namespace-too-long", "grpc", "variantAutoscalingNamespace",
        "not a valid Kubernetes namespace",
        so("chat", variantAutoscalingNamespace="n" * 64), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-key-capitalised", "grpc", "VariantAutoscalingName", "unknown metadata key",
        so("chat", VariantAutoscalingName="chat"), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-scaledobject-name-uppercase", "grpc", "name", "'Chat' is not a valid",
        so("Chat"), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-scaledobject-namespace-uppercase", "grpc", "namespace", "'LLM-D' is not a valid",
        so("chat", "LLM-D"), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-name-trailing-dash", "grpc", "variantAutoscalingName", "'chat-' is not a valid",
        so("chat", variantAutoscalingName="chat-"), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-name-non-ascii", "grpc", "variantAutoscalingName", "is not a valid",
        so("chat", variantAutoscalingName="chät"), grpc.StatusCode.INVALID_ARGUMENT),
    Bad("grpc-unknown-va", "grpc", f"VariantAutoscaling {NS}/ghost", "not found",
        so("ghost"), grpc.StatusCode.NOT_FOUND),
    Bad("grpc-unsolved-va", "grpc", f"VariantAutoscaling {NS}/unsolved", "has no decision",
        so("unsolved"), grpc.StatusCode.UNAVAILABLE),
    # -- wva-adapter optimize (the good server's decision is unchanged)
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
        set_bad_server(("currentAlloc", "numReplicas"), "two"), EXIT_PARTIAL),
    Bad("optimize-min-replicas-fraction", "optimize", "server 'bad'", "minNumReplicas",
        set_bad_server(("minNumReplicas",), 1.5), EXIT_PARTIAL),
    Bad("optimize-at-tokens-zero", "optimize", "mistral/H100", "atTokens",
        set_bad_model("atTokens", 0), EXIT_PARTIAL),
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


@cache
def _baseline() -> tuple[Assembly, Allocation | None]:
    assembly = build_system(snapshot_of(base_objects()), served_loads())
    assert assembly.problems == () and assembly.config_problems == ()
    allocation = optimize_parsed(parse_system(assembly.system)).decision(VLLM_SERVER).allocation
    assert allocation is not None
    return assembly, allocation


def check_cluster(case: Bad) -> None:
    baseline, allocation = _baseline()
    objects = base_objects()
    case.edit(objects)
    assembly = build_system(snapshot_of(objects), served_loads())
    servers = servers_by_name(assembly.system)
    assert servers[VLLM_SERVER] == servers_by_name(baseline.system)[VLLM_SERVER]
    decided = optimize_parsed(parse_system(assembly.system)).decision(VLLM_SERVER)
    assert decided.allocation == allocation
    if case.kind == "va":
        assert OTHER_SERVER not in servers
        (problem,) = assembly.problems
        message = str(problem)
        assert message.startswith("VariantAutoscaling team-b/other: "), message
    else:
        assert OTHER_SERVER in servers and assembly.problems == ()
        messages = [str(p) for p in assembly.config_problems]
        assert len(messages) == 1, messages
        message = messages[0]
    assert case.names in message, message
    assert case.says in message, message


async def _grpc(case: Bad) -> None:
    box = Box()
    box.publish({(NS, "chat"): 3, (NS, "unsolved"): None})
    good = pb.GetMetricsRequest(scaledObjectRef=so("chat"))
    async with running(box) as server:
        channel, client = stub(server.port)
        async with channel:
            before = await client.GetMetrics(good)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=case.edit))
            after = await client.GetMetrics(good)
    assert refused.value.code() == case.code
    details = refused.value.details() or ""
    assert case.names in details and case.says in details, details
    assert after == before
    assert [(v.metricName, v.metricValue) for v in after.metricValues] == [("wva-llm-d-chat", 3)]


@cache
def _optimize_baseline() -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO(json.dumps(base_document()))
    assert main(["optimize", "--system", "-"], out=out, err=err, stdin=stdin) == EXIT_OK
    good: dict[str, Any] = json.loads(out.getvalue())["servers"]["good"]
    return good


def check_optimize(case: Bad, tmp_path: Path) -> None:
    doc = base_document()
    case.edit(doc)
    out, err = io.StringIO(), io.StringIO()
    status = main(["optimize", "--system", str(write(tmp_path, doc))], out=out, err=err)
    text = err.getvalue()
    assert status == case.code, text
    assert "Traceback" not in text
    lines = text.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), text
    assert any(case.names in line and case.says in line for line in lines), text
    if status == EXIT_INPUT:
        assert out.getvalue() == "" and len(lines) == 1
    else:
        assert json.loads(out.getvalue())["servers"]["good"] == _optimize_baseline()


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
    from adapter.cli import parse_run_settings

    return parse_run_settings(argv, environ)


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
    assert args.namespace == ["team-a", "team-b"]
    assert args.saturation_policy == "RoundRobin" and args.kubeconfig is None
    flags = _parsed(["run", "--interval", "2", "--namespace", "ml", "--grpc-port=9999"], environ)
    assert (flags.interval, flags.namespace, flags.grpc_port) == (2.0, ["ml"], 9999)
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
    """The cluster and document builders return fresh copies for every case."""
    first, second = base_objects(), base_objects()
    CATALOGUE[0].edit(first)
    assert first != second == base_objects()
    doc = copy.deepcopy(base_document())
    assert doc == base_document()

"""Shared test helpers: the tutorial's objects and the SystemSpec the reference built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from adapter.collect.metrics import LoadReport, ModelLoad
from adapter.model.system import SystemSpec

SAMPLES = Path(__file__).resolve().parents[1] / "deploy" / "samples"
MODEL = "unsloth/Meta-Llama-3.1-8B"


def sample_objects() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))
    return docs


def tutorial_load() -> LoadReport:
    """guidellm-job-1: 8 req/s = 480 req/min, 512 output tokens; ITL as the first log line.

    The in-flight gauges as the pods report them (about 4 s per request at 8 req/s): a
    load without them is unknown, never idle."""
    load = ModelLoad(
        "vllm-test",
        MODEL,
        arrival_rate_rpm=480.0,
        avg_output_tokens=512.0,
        running=32.0,
        waiting=0.0,
    )
    return LoadReport({("vllm-test", MODEL): load})


def assert_tutorial_system(spec: SystemSpec) -> None:
    """The SystemSpec the tutorial's log prints (servers, H100 profile, Premium SLO, 31 GPUs)."""
    assert [(c.type, c.count) for c in spec.capacity] == [("NVIDIA-H100-80GB-HBM3", 31)]
    accelerators = {a.name: (a.type, a.multiplicity, a.cost) for a in spec.accelerators}
    assert accelerators == {
        "A100": ("NVIDIA-A100-PCIE-80GB", 1, 40.0),
        "MI300X": ("AMD-MI300X-192GB", 1, 65.0),
        "G2": ("Intel-Gaudi-2-96GB", 1, 23.0),
        "H100": ("NVIDIA-H100-80GB-HBM3", 1, 100.0),
    }
    classes = {c.name: c for c in spec.service_classes}
    assert {n: c.priority for n, c in classes.items()} == {"Premium": 1, "Freemium": 10}
    target = classes["Premium"].target_for(MODEL)
    assert target is not None
    assert (target.slo_itl, target.slo_ttw, target.slo_tps) == (9, 1000, 0)
    assert len(classes["Premium"].model_targets) == 3
    assert len(classes["Freemium"].model_targets) == 2
    (h100,) = [m for m in spec.models if m.acc == "H100"]
    assert (h100.name, h100.acc_count, h100.alpha, h100.beta) == (MODEL, 1, 6.356, 0.044)
    assert (h100.max_batch_size, h100.at_tokens) == (512, 512)
    (server,) = spec.servers
    assert server.name == "vllm:vllm-test"
    assert (server.service_class, server.model) == ("Premium", MODEL)
    assert server.keep_accelerator is True
    assert (server.min_num_replicas, server.max_batch_size) == (1, 512)
    alloc = server.current_alloc
    assert (alloc.accelerator, alloc.num_replicas, alloc.max_batch, alloc.cost) == (
        "H100",
        1,
        256,
        100.0,
    )
    assert (alloc.load.arrival_rate, alloc.load.avg_length) == (480.0, 512)
    assert spec.optimizer.unlimited is False
    assert spec.optimizer.saturation_policy == "None"

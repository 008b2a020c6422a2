"""The tutorial's four logged optimizer decisions, reproduced character for character.

Inputs are the SystemSpec the reference controller printed before each run; the
expected strings are copied from its log lines.
"""

from __future__ import annotations

import io
from importlib import resources

import pytest

from adapter.cli import main

LOGGED = {
    "tutorial-1-start.json": (
        "c=Premium; m=unsloth/Meta-Llama-3.1-8B; rate=480; tk=512; sol=1, "
        "alloc={acc=H100; num=1; maxBatch=512; cost=100, val=0, servTime=7.8070107, "
        "waitTime=0, rho=1}; slo-itl=9, slo-ttw=1000, slo-tps=0 ",
        "name=NVIDIA-H100-80GB-HBM3, count=1, limit=31, cost=100 ",
        "totalCost=100 ",
    ),
    "tutorial-2-second-stream.json": (
        "c=Premium; m=unsloth/Meta-Llama-3.1-8B; rate=961.33; tk=512; sol=1, "
        "alloc={acc=H100; num=2; maxBatch=512; cost=200, val=100, servTime=7.8093896, "
        "waitTime=0, rho=1}; slo-itl=9, slo-ttw=1000, slo-tps=0 ",
        "name=NVIDIA-H100-80GB-HBM3, count=2, limit=31, cost=200 ",
        "totalCost=200 ",
    ),
    "tutorial-3-scaled.json": (
        "c=Premium; m=unsloth/Meta-Llama-3.1-8B; rate=965.33; tk=512; sol=1, "
        "alloc={acc=H100; num=2; maxBatch=512; cost=200, val=0, servTime=7.816551, "
        "waitTime=0, rho=1}; slo-itl=9, slo-ttw=1000, slo-tps=0 ",
        "name=NVIDIA-H100-80GB-HBM3, count=2, limit=31, cost=200 ",
        "totalCost=200 ",
    ),
    "tutorial-4-second-stream-stopped.json": (
        "c=Premium; m=unsloth/Meta-Llama-3.1-8B; rate=712; tk=512; sol=1, "
        "alloc={acc=H100; num=1; maxBatch=512; cost=100, val=-100, servTime=8.735201, "
        "waitTime=0, rho=1}; slo-itl=9, slo-ttw=1000, slo-tps=0 ",
        "name=NVIDIA-H100-80GB-HBM3, count=1, limit=31, cost=100 ",
        "totalCost=100 ",
    ),
}


def _sample(name: str) -> str:
    return str(resources.files("adapter") / "samples" / name)


@pytest.mark.parametrize("filename", sorted(LOGGED))
def test_log_format_reproduces_logged_solution(filename: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    status = main(["optimize", "--system", _sample(filename), "--format", "log"], out=out, err=err)
    assert status == 0, err.getvalue()
    solution_line, usage_line, total_line = LOGGED[filename]
    assert out.getvalue() == (
        f"Solution: \n{solution_line}\nAllocationByType: \n{usage_line}\n{total_line}\n"
    )


def test_json_format_carries_the_same_decision() -> None:
    import json

    out = io.StringIO()
    assert main(["optimize", "--system", _sample("tutorial-2-second-stream.json")], out=out) == 0
    server = json.loads(out.getvalue())["servers"]["vllm:vllm-test"]
    assert server["accelerator"] == "H100"
    assert server["numReplicas"] == 2
    assert server["servTime"] == pytest.approx(7.8093896, rel=1e-7)
    # ITL binds: 769.41 requests/minute per H100 replica
    assert server["maxArrvRatePerReplica"] * 60_000 == pytest.approx(769.4129, rel=1e-6)

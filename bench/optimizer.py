"""Optimizer benchmark: a full optimization of N servers x 4 accelerator candidates.

Generates a SystemSpec like the reference's benchmark (each server its own model with
random profiles on 4 accelerators, maxBatch 256..512, request lengths 64..2048 tokens,
three service classes with mixed ITL/TTFT SLOs, ample capacity, limited greedy
solver, keepAccelerator off) and times:
- cold: a fresh SizingCache, so every candidate is sized from scratch;
- warm: the same system again with the cache filled (a steady-state cycle);
- warm-new-load: the cache filled, then every arrival rate changed by up to +-20 %
  (per-replica capacities are reused, the load-dependent statistics are not).
Validation (dict -> SystemSpec) is timed separately and included in `cold_total`.

Usage: python bench/optimizer.py [--smoke] [--sizes 1,10,100,1000,10000] [--repeat 3]
Writes bench/results/optimizer.json (or optimizer-smoke.json with --smoke).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapter.model.system import parse_system
from adapter.optimizer import SizingCache, optimize

ACCELERATORS = (
    ("A100", "NVIDIA-A100-PCIE-80GB", 40.0),
    ("H100", "NVIDIA-H100-80GB-HBM3", 100.0),
    ("MI300X", "AMD-MI300X-192GB", 65.0),
    ("G2", "Intel-Gaudi-2-96GB", 23.0),
)
CLASSES = (
    ("Premium", 1, (20.0, 60.0), (300.0, 1500.0)),
    ("Standard", 5, (40.0, 120.0), (1000.0, 4000.0)),
    ("Batch", 10, (80.0, 250.0), (3000.0, 10000.0)),
)


def make_system(servers: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    models, server_specs = [], []
    targets: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in CLASSES}
    for i in range(servers):
        model = f"model-{i}"
        tokens = rng.randint(64, 2048)
        base_alpha = rng.uniform(4.0, 12.0)
        base_beta = 10 ** rng.uniform(-2.0, -0.8)
        for j, (acc, _type, _cost) in enumerate(ACCELERATORS):
            speed = (1.0, 0.6, 0.8, 1.4)[j]
            models.append(
                {
                    "name": model,
                    "acc": acc,
                    "accCount": 1,
                    "alpha": round(base_alpha * speed * rng.uniform(0.9, 1.1), 3),
                    "beta": round(base_beta * speed * rng.uniform(0.9, 1.1), 4),
                    "maxBatchSize": rng.randint(256, 512),
                    "atTokens": tokens,  # so N = maxBatchSize, 256..512
                }
            )
        for name, _prio, itl_range, ttw_range in CLASSES:
            targets[name].append(
                {
                    "model": model,
                    "slo-itl": round(rng.uniform(*itl_range), 1),
                    "slo-ttw": round(rng.uniform(*ttw_range), 0),
                    "slo-tps": 0,
                }
            )
        server_specs.append(
            {
                "name": f"server-{i}",
                "class": rng.choice(CLASSES)[0],
                "model": model,
                "keepAccelerator": False,
                "minNumReplicas": 1,
                "maxBatchSize": 0,
                "currentAlloc": {
                    "accelerator": rng.choice(ACCELERATORS)[0],
                    "numReplicas": rng.randint(1, 4),
                    "cost": 100,
                    "load": {
                        "arrivalRate": round(10 ** rng.uniform(1, 3.5), 2),
                        "avgLength": tokens,
                    },
                },
            }
        )
    return {
        "acceleratorData": {
            "accelerators": [
                {"name": a, "type": t, "multiplicity": 1, "cost": c} for a, t, c in ACCELERATORS
            ]
        },
        "modelData": {"models": models},
        "serviceClassData": {
            "serviceClasses": [
                {"name": n, "priority": p, "modelTargets": targets[n]} for n, p, *_ in CLASSES
            ]
        },
        "serverData": {"servers": server_specs},
        "optimizerData": {"optimizer": {"unlimited": False, "saturationPolicy": "None"}},
        "capacityData": {"count": [{"type": t, "count": 1_000_000} for _a, t, _c in ACCELERATORS]},
    }


def perturb(document: dict[str, Any], seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    copy: dict[str, Any] = json.loads(json.dumps(document))
    for server in copy["serverData"]["servers"]:
        load = server["currentAlloc"]["load"]
        load["arrivalRate"] = round(load["arrivalRate"] * rng.uniform(0.8, 1.2), 2)
    return copy


def _timed(action: Callable[[], object]) -> float:
    gc.collect()  # start each measurement from a clean heap, GC stays enabled during it
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(size: int, repeat: int) -> dict[str, Any]:
    document = make_system(size, seed=size)
    changed = perturb(document, seed=size + 1)
    parse_times, cold, warm, warm_new = [], [], [], []
    for _ in range(repeat):
        parse_times.append(_timed(lambda: parse_system(document)))
        parsed = parse_system(document)
        assert not parsed.problems, parsed.problems[:3]
        spec_changed = parse_system(changed).spec
        cache = SizingCache()
        cold.append(_timed(lambda: optimize(parsed.spec, cache)))  # noqa: B023
        for _ in range(3):  # steady state: the same inputs again
            warm.append(_timed(lambda: optimize(parsed.spec, cache)))  # noqa: B023
        # new load on every server: capacities are reused, statistics are not
        warm_new.append(_timed(lambda: optimize(spec_changed, cache)))  # noqa: B023
    solution = optimize(parse_system(document).spec)
    allocated = sum(1 for s in solution.servers if s.allocation is not None)
    return {
        "servers": size,
        "candidates": size * len(ACCELERATORS),
        "allocated": allocated,
        "parse_s": statistics.median(parse_times),
        "cold_s": statistics.median(cold),
        "cold_total_s": statistics.median(parse_times) + statistics.median(cold),
        "warm_s": statistics.median(warm),
        "warm_new_load_s": statistics.median(warm_new),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI mode: N <= 100, one repeat")
    parser.add_argument("--sizes", default="1,10,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    repeat = args.repeat
    if args.smoke:
        sizes = [s for s in sizes if s <= 100]
        repeat = 1
    rows = []
    print(
        f"{'servers':>8} {'cands':>7} {'parse s':>9} {'cold s':>9} "
        f"{'warm s':>9} {'warm+load s':>12}"
    )
    for size in sizes:
        row = run(size, repeat if size < 10000 else 1)
        rows.append(row)
        print(
            f"{row['servers']:>8} {row['candidates']:>7} {row['parse_s']:>9.4f} "
            f"{row['cold_s']:>9.4f} {row['warm_s']:>9.4f} {row['warm_new_load_s']:>12.4f}",
            flush=True,
        )
    result = {
        "benchmark": "optimizer",
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
        },
        "statistic": "median" if repeat > 1 else "single run",
        "repeat": repeat,
        "results": rows,
    }
    out = (
        Path(__file__).parent
        / "results"
        / ("optimizer-smoke.json" if args.smoke else "optimizer.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

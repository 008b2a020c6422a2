"""What the simulation benches share: their runs across processes, and their results
written under bench/results as `<stem>.md` and `<stem>.json` (`-smoke` before the
extension for a smoke run)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

RESULTS = Path(__file__).resolve().parent / "results"

W = TypeVar("W")
R = TypeVar("R")


def run_parallel(run: Callable[[W], R], work: Iterable[W], jobs: int) -> tuple[list[R], float]:
    """`run` over `work` in `jobs` processes (at least one), in order, and the wall time."""
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(run, work))
    return results, time.monotonic() - started


def write_results(stem: str, smoke: bool, markdown: str, rows: object) -> str:
    """Write the table and the rows (JSON); the markdown file's path, as printed."""
    suffix = "-smoke" if smoke else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}{suffix}.md").write_text(markdown, "utf-8")
    (RESULTS / f"{stem}{suffix}.json").write_text(json.dumps(rows, indent=2) + "\n", "utf-8")
    return f"bench/results/{stem}{suffix}.md"

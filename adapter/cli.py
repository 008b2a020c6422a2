"""`wva-adapter`: the command line.

Errors in the user's input end with a one-line message naming the object and field,
and a non-zero exit status; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib import resources
from typing import Any, TextIO

from adapter.model.system import SystemFormatError, parse_system
from adapter.optimizer.goformat import go_float32
from adapter.optimizer.solution import format_log, optimize_parsed, to_json

EXIT_OK = 0
EXIT_PARTIAL = 1  # some entries were invalid; the rest was solved
EXIT_INPUT = 2  # the input could not be used at all

TUTORIAL_STEPS = (
    ("tutorial-1-start.json", "job-1 starts: 8 req/s"),
    ("tutorial-2-second-stream.json", "job-2 joins: 16 req/s, ITL SLO violated"),
    ("tutorial-3-scaled.json", "both jobs, 2 replicas"),
    ("tutorial-4-second-stream-stopped.json", "job-2 stops"),
)


class InputError(Exception):
    """The user's input cannot be used; the message says what to fix."""


def _read_json(path: str, stdin: TextIO) -> Any:
    try:
        if path == "-":
            text = stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from error


def cmd_optimize(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    document = _read_json(args.system, stdin)
    try:
        parsed = parse_system(document)
    except SystemFormatError as error:
        raise InputError(f"{args.system}: {error}") from error
    for problem in parsed.problems:
        print(f"error: {problem}", file=err)
    solution = optimize_parsed(parsed)
    if args.format == "log":
        out.write(format_log(solution))
    else:
        json.dump(to_json(solution), out, indent=2)
        out.write("\n")
    return EXIT_PARTIAL if parsed.problems else EXIT_OK


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """The tutorial's scenario through the optimizer, step by step, as a table."""
    del args, err, stdin
    samples = resources.files("adapter") / "samples"
    header = (
        f"{'step':<42} {'rate':>8} {'current':>7} {'desired':>7} {'ITL ms':>9} "
        f"{'wait ms':>8} {'max rpm/replica':>15} {'cost':>6}"
    )
    out.write(
        "Tutorial scenario (unsloth/Meta-Llama-3.1-8B on H100, Premium: ITL 9 ms, TTFT 1 s)\n"
    )
    out.write(header + "\n" + "-" * len(header) + "\n")
    for filename, label in TUTORIAL_STEPS:
        document = json.loads((samples / filename).read_text(encoding="utf-8"))
        parsed = parse_system(document)
        solution = optimize_parsed(parsed)
        server = parsed.spec.servers[0]
        decision = solution.decision(server.name)
        allocation = decision.allocation
        if allocation is None:
            out.write(f"{label:<42} {'':>8} no allocation: {decision.reason}\n")
            continue
        out.write(
            f"{label:<42} {go_float32(decision.arrival_rate):>8} "
            f"{server.current_alloc.num_replicas:>7} {allocation.num_replicas:>7} "
            f"{go_float32(allocation.serv_time):>9} {go_float32(allocation.wait_time):>8} "
            f"{float(allocation.max_rpm):>15.2f} {go_float32(allocation.cost):>6}\n"
        )
    out.write(
        "\nrate: requests/minute; ITL and wait: predicted per replica at the desired count.\n"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wva-adapter",
        description="SLO-aware replica recommendations for vLLM variants (KEDA / HPA).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    optimize = commands.add_parser(
        "optimize", help="solve one optimizer-light SystemSpec JSON document"
    )
    optimize.add_argument("--system", required=True, help="SystemSpec JSON file, or - for stdin")
    optimize.add_argument("--format", choices=("json", "log"), default="json")
    optimize.set_defaults(handler=cmd_optimize)

    demo = commands.add_parser("demo", help="run the tutorial's scenario locally")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    stdin = stdin if stdin is not None else sys.stdin
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args, out, err, stdin)
    except InputError as error:
        print(f"error: {error}", file=err)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())

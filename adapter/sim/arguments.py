"""The arguments of `wva-adapter simulate`, light enough for `wva-adapter --help`.

Standard library and `adapter.defaults` only: `adapter.sim.command` runs the command,
and is imported only when it runs (tests/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
import re

from adapter.defaults import DEFAULT_RETENTION_S, DEFAULT_SAMPLES
from adapter.defaults import SIM_POLICIES as POLICIES

TRACES = ("step", "step-saturating", "ramp", "diurnal", "bursty", "noisy", "flash", "accelerating")
DEFAULT_DURATION_S = 3600.0
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


class SimulateInputError(ValueError):
    """An argument or input file the simulation cannot use; the message says which."""


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `30m`, `2h` or `1h30m`."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise SimulateInputError(f"{text!r} is not a duration like 3600, 90s, 30m, 2h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600.0 + minutes * 60.0 + seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trace",
        default="step",
        metavar="SHAPE|FILE.csv",
        help=f"{', '.join(TRACES)}, or a CSV of 'time_s,rate_rps' lines (default step)",
    )
    parser.add_argument(
        "--duration",
        type=_duration_arg,
        help="virtual run length: 3600, 90s, 30m, 2h (default 1h; a CSV's last time)",
    )
    parser.add_argument(
        "--policies",
        help=f"comma-separated, from {', '.join(POLICIES)} (default all; with --min-replicas"
        " 0, ours, which alone scales from zero)",
    )
    parser.add_argument("--seed", type=int, default=1, help="arrivals and bursts (default 1)")
    parser.add_argument(
        "--phase",
        type=float,
        default=0.0,
        help="each policy's first decision, as a fraction in [0, 1) of its cycle (default 0)",
    )
    parser.add_argument(
        "--hpa-phase",
        type=_duration_arg,
        help="ours: the HPA's sync after each adapter cycle, e.g. 7.5 (default half a cycle)",
    )
    parser.add_argument(
        "--startup-delay",
        type=_duration_arg,
        default=60.0,
        help="a new replica's time to ready, e.g. 60 or 2m (default 60 s)",
    )
    parser.add_argument(
        "--samples",
        default=str(DEFAULT_SAMPLES),
        metavar="DIR",
        help="VariantAutoscaling, ConfigMaps, Nodes, Deployment as YAML (default deploy/samples)",
    )
    parser.add_argument("--variant", metavar="NS/NAME", help="the VA to run (default: the only)")
    parser.add_argument(
        "--min-replicas",
        type=int,
        default=1,
        help="0: ours scales to zero and wakes on the gateway's queue (ours only; the"
        " gateway holds requests while no replica is ready), and is compared with the same"
        " run held at 1 replica (default 1)",
    )
    parser.add_argument(
        "--scale-to-zero-after",
        type=_duration_arg,
        default=DEFAULT_RETENTION_S,
        help="with --min-replicas 0: ours' time without traffic before zero"
        f" (default {DEFAULT_RETENTION_S:g} s)",
    )
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=512)
    parser.add_argument(
        "--token-spread",
        type=float,
        default=0.0,
        help="token counts uniform within +-this fraction of the means (default 0)",
    )
    parser.add_argument(
        "--true-alpha-ms",
        type=float,
        metavar="A",
        help="the simulated GPUs' step time alpha, ms (default: the VA's; the adapter and"
        " the policies still read the VA's profile)",
    )
    parser.add_argument(
        "--true-beta-ms",
        type=float,
        metavar="B",
        help="the simulated GPUs' step time per running request, ms (default: the VA's)",
    )
    parser.add_argument(
        "--true-prefill-ms-per-token",
        type=float,
        metavar="P",
        help="the simulated GPUs' prefill time per prompt token, ms (default: the VA's, 0)",
    )
    parser.add_argument(
        "--true-max-batch",
        type=int,
        metavar="N",
        help="the pods' vLLM --max-num-seqs (default: the VA's maxBatchSize, which the"
        " adapter and the policies still read; with --min-replicas 0 the SLO batch, as"
        " docs/deploy.md sets it for scale from zero)",
    )
    parser.add_argument(
        "--kv-cache-tokens",
        type=int,
        metavar="N",
        help="each pod's KV cache in tokens, in blocks of 16 (default 432000: 27000 blocks,"
        " more than a full batch of the default requests holds)",
    )
    parser.add_argument(
        "--termination-grace",
        type=_duration_arg,
        default=30.0,
        help="a removed pod's running requests are killed after this, e.g. 30 or 2m"
        " (default 30 s, Kubernetes' terminationGracePeriodSeconds)",
    )
    parser.add_argument(
        "--no-hpa-configurable-tolerance",
        dest="hpa_configurable_tolerance",
        action="store_false",
        help="the cluster lacks HPAConfigurableTolerance: ours' HPA applies the default"
        " 10 %% tolerance instead of keda/scaledobject.yaml's 0",
    )
    parser.add_argument(
        "--no-profile-learning",
        dest="profile_learning",
        action="store_false",
        help="ours sizes with the VA's declared profile only, as `run --no-profile-learning`",
    )
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write the plot (PNG)")
    parser.add_argument(
        "--stepwise",
        action="store_true",
        help="simulate every decode step with ReplicaEngine (slow; same results)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every adapter cycle")


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except SimulateInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from error

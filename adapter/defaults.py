"""Names and defaults that the command line shows, importable at no cost.

`wva-adapter --help` builds every subcommand's parser; the values it shows live here,
and the modules they belong to import them from here, so that building the parser
loads no pydantic, YAML, numpy or simulator (tests/test_cli_imports.py). Standard
library only.
"""

from __future__ import annotations

from pathlib import Path

# adapter.settings: `wva-adapter run`'s flags can also be set by WVA_<FLAG> variables
ENV_PREFIX = "WVA_"

# adapter.model.kube: where the accelerator-unit-costs and service-classes-config
# ConfigMaps (and the leader-election Lease) live by default
DEFAULT_CONFIG_NAMESPACE = "inferno-autoscaler-system"

# adapter.model.system: the optimizer's saturation policies (its `SaturationPolicy`)
SATURATION_POLICIES: tuple[str, ...] = (
    "None",
    "PriorityExhaustive",
    "PriorityRoundRobin",
    "RoundRobin",
)

# adapter.collect.local: the tutorial's objects as YAML (a source checkout's deploy/samples)
DEFAULT_SAMPLES = Path(__file__).resolve().parents[1] / "deploy" / "samples"

# adapter.zero: with --min-replicas 0, how long a variant sees no traffic before it goes
# to zero (--scale-to-zero-after). KEDA's own default cooldownPeriod, what a KEDA user's
# scale to zero waits by default; WVA's enforcer held idle variants 10 minutes. Measured
# in bench/results/from-zero.md: on traces with idle gaps 300 s takes 0.47-0.56 x the
# GPU-hours of one replica held throughout, 600 s 0.58-0.64 x, for more cold starts where
# traffic pauses 5-10 minutes (TTFT 85 against 93 % of requests on `lulls`)
DEFAULT_RETENTION_S = 300.0

# adapter.sim.policies: the policies `wva-adapter simulate` compares (a label may add a
# knob: `ours@0.995`, `keda-queue@2`)
SIM_POLICIES: tuple[str, ...] = (
    "ours",
    "wva-tutorial",
    "keda-queue",
    "clairvoyant",
    "causal-floor",
    "llmd-saturation",
    "llmd-slo",
    "wva-saturation",
)

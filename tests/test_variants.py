"""Several variants of one model (adapter/variants.py): an H100 and an A100 Deployment of
the tutorial's model in one namespace share its load, split cheapest first within the
GPUs each kind has, through the real Engine. Every case runs with the A100 variant's
name sorted before and after the H100 one, and the VAs listed in both orders."""

from __future__ import annotations

import copy
from collections.abc import Collection

import pytest

from adapter.assemble import AssemblySettings
from adapter.clock import ManualClock
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadKey, LoadReport, ModelLoad
from adapter.engine import Engine, Snapshot
from adapter.learning import ProfileLearning
from adapter.model.kube import ClusterSnapshot
from adapter.sim.pool import A100_DEVICE, A100_PROFILE, add_variant
from adapter.variants import Offer, split
from tests.kube_helpers import MODEL, SAMPLES

NS = "vllm-test"
H100 = (NS, "vllm")
# the A100 variant: slower than the H100, cheaper per request (adapter/sim/pool.py)


def two_variants(
    a100_name: str, a100_gpus: int, order: str, a100_max: int | None = None
) -> ClusterSnapshot:
    base = add_variant(
        load_snapshot(SAMPLES), H100, a100_name, A100_PROFILE, a100_gpus, A100_DEVICE
    )
    vas = dict(base.variant_autoscalings)
    if a100_max is not None:  # the newer upstream shape's bound
        a100 = copy.deepcopy(dict(vas[(NS, a100_name)]))
        a100["spec"]["maxReplicas"] = a100_max
        vas[(NS, a100_name)] = a100
    return ClusterSnapshot(
        variant_autoscalings=dict(sorted(vas.items(), reverse=order == "reversed")),
        config_maps=base.config_maps,
        nodes=base.nodes,
        deployments=base.deployments,
        config_namespace=base.config_namespace,
    )


class PoolLoad:
    """The model's load as the pods of both Deployments report it: one series."""

    def __init__(self, rpm: float) -> None:
        self.rpm = rpm

    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        load = ModelLoad(
            NS, MODEL, self.rpm, 128.0, 512.0, itl_ms=8.0, running=40.0, waiting=0.0, decoding=40.0
        )
        return LoadReport({(NS, MODEL): load})


def decide(
    a100_name: str, a100_gpus: int, rpm: float, order: str, a100_max: int | None = None
) -> Snapshot:
    cluster = two_variants(a100_name, a100_gpus, order, a100_max)
    engine = Engine(
        cluster=lambda: cluster,
        metrics=PoolLoad(rpm),
        clock=ManualClock(),
        settings=AssemblySettings(min_num_replicas=0),
    )
    return engine.run_cycle()


CASES = [(name, order) for name in ("aaa-a100", "zzz-a100") for order in ("sorted", "reversed")]


@pytest.mark.parametrize(("a100_name", "order"), CASES)
def test_the_cheap_variant_is_filled_first_and_the_other_is_not_used(
    a100_name: str, order: str
) -> None:
    decisions = decide(a100_name, a100_gpus=8, rpm=480.0, order=order).decisions
    a100, h100 = decisions[(NS, a100_name)], decisions[H100]
    assert a100.accelerator == "A100" and h100.accelerator == "H100"
    assert (a100.desired_replicas, h100.desired_replicas) == (2, 0)
    assert a100.load is not None and a100.load.arrival_rate_rpm == 480.0
    assert h100.load is not None and h100.load.arrival_rate_rpm == 0.0


@pytest.mark.parametrize(("a100_name", "order"), CASES)
def test_when_the_cheap_kinds_gpus_run_out_the_other_takes_the_rest(
    a100_name: str, order: str
) -> None:
    decisions = decide(a100_name, a100_gpus=2, rpm=960.0, order=order).decisions
    a100, h100 = decisions[(NS, a100_name)], decisions[H100]
    assert a100.desired_replicas == 2  # the two A100s there are
    assert h100.desired_replicas == 1 and h100.load is not None
    assert 0 < h100.load.arrival_rate_rpm < 960.0
    assert a100.load is not None
    assert a100.load.arrival_rate_rpm + h100.load.arrival_rate_rpm == pytest.approx(960.0)


@pytest.mark.parametrize(("a100_name", "order"), CASES)
def test_the_other_carries_everything_when_a_mix_would_cost_more(
    a100_name: str, order: str
) -> None:
    # one A100 takes 5 req/s of 8; mixed, the H100 pods run at the A100's SLO batch (the
    # router evens the batch out), and the A100 plus an H100 cost 140 against 100 for
    # the H100 alone, which carries the 8 req/s on one replica
    decisions = decide(a100_name, a100_gpus=1, rpm=480.0, order=order).decisions
    a100, h100 = decisions[(NS, a100_name)], decisions[H100]
    assert (a100.desired_replicas, h100.desired_replicas) == (0, 1)
    assert h100.load is not None and h100.load.arrival_rate_rpm == 480.0


@pytest.mark.parametrize(("a100_name", "order"), CASES)
def test_a_cheap_variant_at_its_max_replicas_leaves_the_rest_to_the_other(
    a100_name: str, order: str
) -> None:
    decisions = decide(a100_name, 8, 960.0, order, a100_max=2).decisions
    a100, h100 = decisions[(NS, a100_name)], decisions[H100]
    assert (a100.desired_replicas, h100.desired_replicas) == (2, 1)
    assert a100.load is not None and h100.load is not None
    assert 0 < h100.load.arrival_rate_rpm < 960.0


@pytest.mark.parametrize(("a100_name", "order"), CASES)
def test_without_a100s_the_h100_variant_serves_everything(a100_name: str, order: str) -> None:
    decisions = decide(a100_name, a100_gpus=0, rpm=480.0, order=order).decisions
    assert decisions[H100].desired_replicas == 1
    assert decisions[(NS, a100_name)].desired_replicas == 0


def test_the_split_is_cheapest_per_request_first_within_the_room_each_has() -> None:
    inf = float("inf")
    offers = [
        Offer("h100", cost_per_rpm=0.2, room_rpm=inf),
        Offer("a100", cost_per_rpm=0.16, room_rpm=500.0),
        Offer("pricey", cost_per_rpm=1.0, room_rpm=inf),
    ]
    servers = ["a100", "h100", "pricey", "unsized"]
    assert split(400.0, offers, servers) == {
        "a100": 400.0,
        "h100": 0.0,
        "pricey": 0.0,
        "unsized": 0.0,
    }
    assert split(700.0, offers, servers) == {
        "a100": 500.0,
        "h100": 200.0,
        "pricey": 0.0,
        "unsized": 0.0,
    }
    # nobody has room: the cheapest is asked for the rest
    full = [Offer("a100", 0.16, 250.0), Offer("h100", 0.2, 0.0)]
    assert split(600.0, full, ["a100", "h100"]) == {"a100": 600.0, "h100": 0.0}
    assert split(0.0, offers, servers) == dict.fromkeys(servers, 0.0)


def test_variants_sharing_a_models_series_learn_no_profile_from_it() -> None:
    """Their pods' ITL is a mix of both kinds: no fit is made from it."""
    cluster = two_variants("aaa-a100", 8, "sorted")
    learning = ProfileLearning(cycle_s=15.0)
    clock = ManualClock()
    engine = Engine(
        cluster=lambda: cluster,
        metrics=PoolLoad(480.0),
        clock=clock,
        settings=AssemblySettings(min_num_replicas=0),
        learning=learning,
    )
    for _ in range(3):
        decisions = engine.run_cycle().decisions
        clock.advance(15.0)
    for decision in decisions.values():
        assert decision.profile is not None and decision.profile.learned is None

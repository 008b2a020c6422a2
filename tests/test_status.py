"""VA status writes and Lease leader election, through the official client and the fake API."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest
from kubernetes import client

from adapter.clock import ManualClock
from adapter.engine import Snapshot, VariantDecision, VariantKey
from adapter.leader import LeaderElector, LeaderSettings
from adapter.model.kube import ACCELERATOR_LABEL, GROUP, PLURAL, VERSION, VariantAutoscalingStatus
from adapter.status import StatusSettings, StatusWriter, merge_patch
from tests.fakes.kube_api import FakeKubeAPI
from tests.test_exporter import decisions

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
LEASE_NS = "wva-system"


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=T0)


def manifest(namespace: str, name: str, accelerator: str | None) -> dict[str, Any]:
    labels = {ACCELERATOR_LABEL: accelerator} if accelerator else {}
    return {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"modelID": f"model-of-{name}", "modelProfile": {"accelerators": []}},
    }


@pytest.fixture
def vas(custom: client.CustomObjectsApi) -> None:
    for ns, name, acc in (
        ("llm", "granite-h100", "H100"),
        ("llm", "cold-start", "A100"),
        ("llm", "llama-a100", "A100"),
        ("other", "broken", None),
    ):
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest(ns, name, acc))


def listed(custom: client.CustomObjectsApi) -> Mapping[VariantKey, Mapping[str, Any]]:
    """What a KubeCache snapshot would give: every VA by (namespace, name)."""
    body: Any = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in body["items"]}


def get(custom: client.CustomObjectsApi, ns: str, name: str) -> dict[str, Any]:
    found: Any = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return dict(found)


def snap(clock: ManualClock, cycle: int, found: Mapping[VariantKey, VariantDecision]) -> Snapshot:
    return Snapshot(cycle, clock.now(), clock.monotonic(), 0.01, MappingProxyType(dict(found)))


def status_writes(fake: FakeKubeAPI) -> list[str]:
    return [r.path for r in fake.requests if r.method in ("PATCH", "PUT")]


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any]:
    (found,) = [c for c in obj["status"]["conditions"] if c["type"] == type_]
    return dict(found)


def writer(custom: client.CustomObjectsApi, clock: ManualClock, **kw: Any) -> StatusWriter:
    return StatusWriter(custom, lambda: listed(custom), clock, **kw)


# ---------------------------------------------------------------- status


@pytest.mark.usefixtures("vas")
def test_writes_status_via_subresource_with_conditions(
    fake: FakeKubeAPI, custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    before = {key: copy.deepcopy(obj) for key, obj in listed(custom).items()}
    report = writer(custom, clock).sync(snap(clock, 1, decisions()))
    assert sorted(report.written) == sorted(decisions())
    assert (report.unchanged, report.errors, report.conflicts) == (0, 0, 0)
    assert sorted(status_writes(fake)) == sorted(
        f"/apis/llmd.ai/v1alpha1/namespaces/{ns}/variantautoscalings/{name}/status"
        for ns, name in decisions()
    )

    granite = get(custom, "llm", "granite-h100")
    assert granite["spec"] == before[("llm", "granite-h100")]["spec"]
    assert granite["metadata"]["generation"] == 1
    VariantAutoscalingStatus.model_validate(granite["status"])  # the CRD's shape
    status = granite["status"]
    assert status["currentAlloc"] == {
        "accelerator": "H100",
        "numReplicas": 2,
        "maxBatch": 256,
        "variantCost": "200.00",  # 300 for 3 replicas -> 100 each, 2 current
        "itlAverage": "12.50",
        "waitAverage": "40.00",
        "load": {"arrivalRate": "120.00", "avgLength": "256"},
    }
    assert status["desiredOptimizedAlloc"] == {
        "lastRunTime": "2023-11-14T22:13:20Z",
        "accelerator": "H100",
        "numReplicas": 3,
    }
    assert status["actuation"] == {"applied": False}
    assert [c["type"] for c in status["conditions"]] == ["MetricsAvailable", "OptimizationReady"]
    metrics = condition(granite, "MetricsAvailable")
    assert (metrics["status"], metrics["reason"], metrics["observedGeneration"]) == (
        "True",
        "MetricsFound",
        1,
    )
    assert metrics["lastTransitionTime"] == "2023-11-14T22:13:20Z"
    ready = condition(granite, "OptimizationReady")
    assert (ready["status"], ready["reason"]) == ("True", "OptimizationSucceeded")
    assert ready["message"] == "desired 3 replica(s) of H100"

    llama = get(custom, "llm", "llama-a100")
    VariantAutoscalingStatus.model_validate(llama["status"])
    assert "desiredOptimizedAlloc" not in llama["status"]  # never a made-up 0
    assert llama["status"]["currentAlloc"]["numReplicas"] == 1
    assert "variantCost" not in llama["status"]["currentAlloc"]  # unit cost unknown
    assert llama["status"]["currentAlloc"]["itlAverage"] == "0"  # not reported
    assert condition(llama, "MetricsAvailable")["reason"] == "MetricsFound"
    failed = condition(llama, "OptimizationReady")
    assert (failed["status"], failed["reason"]) == ("False", "OptimizationFailed")
    assert failed["message"].startswith("Infeasible: A100: ITL target")

    broken = get(custom, "other", "broken")
    VariantAutoscalingStatus.model_validate(broken["status"])
    assert set(broken["status"]) == {"actuation", "conditions"}
    assert condition(broken, "MetricsAvailable")["reason"] == "MetricsMissing"
    invalid = condition(broken, "OptimizationReady")
    assert (invalid["status"], invalid["reason"]) == ("False", "InvalidConfiguration")
    assert "acceleratorName" in invalid["message"]


@pytest.mark.usefixtures("vas")
def test_no_write_when_unchanged_and_transition_times_kept(
    fake: FakeKubeAPI, custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    status = writer(custom, clock)
    status.sync(snap(clock, 1, decisions()))
    writes = len(status_writes(fake))

    clock.advance(30)
    report = status.sync(snap(clock, 2, decisions()))  # same decisions, new cycle
    assert report.written == [] and report.unchanged == 4
    assert len(status_writes(fake)) == writes

    # the recommendation moves: one write; conditions that stayed True keep their time
    clock.advance(30)
    moved = dict(decisions())
    granite = moved[("llm", "granite-h100")]
    moved[("llm", "granite-h100")] = replace(granite, desired_replicas=4, cost=400.0)
    report = status.sync(snap(clock, 3, moved))
    assert report.written == [("llm", "granite-h100")]
    obj = get(custom, "llm", "granite-h100")
    assert obj["status"]["desiredOptimizedAlloc"] == {
        "lastRunTime": "2023-11-14T22:14:20Z",
        "accelerator": "H100",
        "numReplicas": 4,
    }
    ready = condition(obj, "OptimizationReady")
    assert ready["message"] == "desired 4 replica(s) of H100"
    assert ready["lastTransitionTime"] == "2023-11-14T22:13:20Z"

    # solved -> unsolved: the old recommendation stays, the condition flips with a new time
    clock.advance(30)
    unsolved = dict(moved)
    unsolved[("llm", "granite-h100")] = replace(
        granite, desired_replicas=None, reason="accelerator capacity exhausted"
    )
    status.sync(snap(clock, 4, unsolved))
    obj = get(custom, "llm", "granite-h100")
    assert obj["status"]["desiredOptimizedAlloc"]["numReplicas"] == 4
    assert obj["status"]["desiredOptimizedAlloc"]["lastRunTime"] == "2023-11-14T22:14:20Z"
    ready = condition(obj, "OptimizationReady")
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "False",
        "OptimizationFailed",
        "2023-11-14T22:14:50Z",
    )
    assert condition(obj, "MetricsAvailable")["lastTransitionTime"] == "2023-11-14T22:13:20Z"


@pytest.mark.usefixtures("vas")
def test_cache_lag_does_not_cause_a_second_write(
    fake: FakeKubeAPI, custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    stale_view = listed(custom)  # the cache has not seen our write yet
    status = StatusWriter(custom, lambda: stale_view, clock)
    assert len(status.sync(snap(clock, 1, decisions())).written) == 4
    writes = len(status_writes(fake))
    clock.advance(15)
    report = status.sync(snap(clock, 2, decisions()))
    assert report.written == [] and report.unchanged == 4
    assert len(status_writes(fake)) == writes


@pytest.mark.usefixtures("vas")
def test_generation_other_conditions_actuation_and_conflicts(
    fake: FakeKubeAPI, custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    foreign = {
        "type": "TargetResolved",
        "status": "True",
        "reason": "TargetFound",
        "message": "found",
        "lastTransitionTime": "2023-01-01T00:00:00Z",
    }
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "llm",
        PLURAL,
        "granite-h100",
        {"status": {"actuation": {"applied": True}, "conditions": [foreign]}},
    )
    status = writer(custom, clock)
    status.sync(snap(clock, 1, decisions()))
    obj = get(custom, "llm", "granite-h100")
    assert obj["status"]["actuation"] == {"applied": False}
    assert obj["status"]["conditions"][0] == foreign
    assert [c["type"] for c in obj["status"]["conditions"]] == [
        "TargetResolved",
        "MetricsAvailable",
        "OptimizationReady",
    ]

    # a spec change bumps the generation: the conditions follow
    obj["spec"]["modelID"] = "changed"
    custom.replace_namespaced_custom_object(GROUP, VERSION, "llm", PLURAL, "granite-h100", obj)
    report = status.sync(snap(clock, 2, decisions()))
    assert report.written == [("llm", "granite-h100")]
    obj = get(custom, "llm", "granite-h100")
    assert condition(obj, "OptimizationReady")["observedGeneration"] == 2

    # computed from an old read while the object changed: 409, nothing overwritten
    old_view = listed(custom)
    obj["metadata"]["labels"]["touched"] = "yes"
    custom.replace_namespaced_custom_object(GROUP, VERSION, "llm", PLURAL, "granite-h100", obj)
    moved = dict(decisions())
    moved[("llm", "granite-h100")] = replace(moved[("llm", "granite-h100")], desired_replicas=5)
    racing = StatusWriter(custom, lambda: old_view, clock)
    report = racing.sync(snap(clock, 3, moved))
    assert report.conflicts == 1 and report.errors == 0 and racing.errors_total == 0
    assert get(custom, "llm", "granite-h100")["status"]["desiredOptimizedAlloc"]["numReplicas"] == 3
    assert writer(custom, clock).sync(snap(clock, 3, moved)).written == [("llm", "granite-h100")]
    assert get(custom, "llm", "granite-h100")["status"]["desiredOptimizedAlloc"]["numReplicas"] == 5


@pytest.mark.usefixtures("vas")
def test_stale_snapshot_turns_conditions_false_and_keeps_allocations(
    custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    status = writer(custom, clock, settings=StatusSettings(max_age_s=60))
    first = snap(clock, 1, decisions())
    status.sync(first)
    before = get(custom, "llm", "granite-h100")["status"]
    clock.advance(61)
    report = status.sync(first)
    assert len(report.written) == 4
    after = get(custom, "llm", "granite-h100")["status"]
    assert after["currentAlloc"] == before["currentAlloc"]
    assert after["desiredOptimizedAlloc"] == before["desiredOptimizedAlloc"]
    obj = get(custom, "llm", "granite-h100")
    metrics, ready = condition(obj, "MetricsAvailable"), condition(obj, "OptimizationReady")
    assert (metrics["status"], metrics["reason"]) == ("False", "MetricsMissing")
    assert (ready["status"], ready["reason"]) == ("False", "OptimizationFailed")
    assert "in the last 60s" in ready["message"]
    assert status.sync(first).unchanged == 4  # stays quiet while stale


@pytest.mark.usefixtures("vas")
def test_deleted_or_unknown_variants_are_skipped(
    custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    custom.delete_namespaced_custom_object(GROUP, VERSION, "llm", PLURAL, "cold-start")
    extra = dict(decisions())
    extra[("llm", "ghost")] = replace(extra[("llm", "granite-h100")], name="ghost")
    report = writer(custom, clock).sync(snap(clock, 1, extra))
    assert sorted(report.written) == sorted(k for k in decisions() if k != ("llm", "cold-start"))


@pytest.mark.usefixtures("vas")
def test_api_errors_are_counted(
    fake: FakeKubeAPI, custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    fake.fail_next(1, 500, match=lambda method, _path: method == "PATCH")
    status = writer(custom, clock)
    report = status.sync(snap(clock, 1, decisions()))
    assert (report.errors, len(report.written), status.errors_total) == (1, 3, 1)
    assert len(status.sync(snap(clock, 2, decisions())).written) == 1  # healed next pass


def test_merge_patch_removes_and_replaces() -> None:
    old = {"a": {"x": 1, "y": 2}, "b": [1], "c": 3}
    new = {"a": {"x": 1}, "b": [1, 2], "c": 3}
    assert merge_patch(old, new) == {"a": {"y": None}, "b": [1, 2]}
    assert merge_patch(new, new) is None


class SlowWrites(client.CustomObjectsApi):
    """Every status write takes `seconds` on the clock: a long pass over many VAs."""

    def __init__(self, api: client.ApiClient, clock: ManualClock, seconds: float) -> None:
        super().__init__(api)
        self._clock, self._seconds = clock, seconds

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> Any:
        result = super().patch_namespaced_custom_object_status(*args, **kwargs)
        self._clock.advance(self._seconds)
        return result


@pytest.mark.usefixtures("vas")
def test_a_pass_that_outlasts_the_renew_deadline_stops_writing(
    fake: FakeKubeAPI, api: client.ApiClient, custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    a = elector(api, clock, "adapter-a")
    assert a.step()  # leader until the renew deadline, 10 s from now, unless it renews
    slow = StatusWriter(
        SlowWrites(api, clock, 5.0), lambda: listed(custom), clock, is_leader=lambda: a.is_leader
    )
    report = slow.sync(snap(clock, 1, decisions()))
    assert report.written == [("llm", "cold-start"), ("llm", "granite-h100")]  # at 0 s, 5 s
    assert report.stopped == "lost the leadership"  # at 10 s, before the third write
    assert len(status_writes(fake)) == 2

    assert a.step()  # renewed: the next pass writes the rest
    report = slow.sync(snap(clock, 2, decisions()))
    assert report.written == [("llm", "llama-a100"), ("other", "broken")]
    assert report.stopped == "" and report.unchanged == 2


@pytest.mark.usefixtures("vas")
def test_conditions_turn_false_when_no_cycle_succeeds_after_a_start(
    fake: FakeKubeAPI, custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    """A new leader whose cycles all fail (Prometheus down during a rollout) must not leave
    the previous leader's True conditions in place: after `max_age_s`, they turn False."""
    writer(custom, clock).sync(snap(clock, 1, decisions()))  # the previous leader's last pass
    before = get(custom, "llm", "granite-h100")["status"]
    assert condition(get(custom, "llm", "granite-h100"), "MetricsAvailable")["status"] == "True"
    writes = len(status_writes(fake))

    clock.advance(100)
    started = clock.monotonic()
    stop = asyncio.Event()

    def no_cycle_yet() -> Snapshot | None:
        if clock.monotonic() - started >= 70:
            stop.set()
        return None

    restarted = writer(custom, clock, settings=StatusSettings(max_age_s=60, interval_s=5))
    asyncio.run(asyncio.wait_for(restarted.run(no_cycle_yet, stop), timeout=30))

    assert len(status_writes(fake)) == writes + 4  # each VA once, none before 60 s
    for ns, name in decisions():
        obj = get(custom, ns, name)
        metrics, ready = condition(obj, "MetricsAvailable"), condition(obj, "OptimizationReady")
        assert (metrics["status"], metrics["reason"]) == ("False", "MetricsMissing")
        assert (ready["status"], ready["reason"]) == ("False", "OptimizationFailed")
        assert "no successful optimization cycle in the last 60s" in ready["message"]
    granite = get(custom, "llm", "granite-h100")
    for type_ in ("MetricsAvailable", "OptimizationReady"):  # start + 65 s: the first pass
        assert condition(granite, type_)["lastTransitionTime"] == "2023-11-14T22:16:05Z"
    after = granite["status"]
    assert after["desiredOptimizedAlloc"] == before["desiredOptimizedAlloc"]
    assert after["currentAlloc"] == before["currentAlloc"]


@pytest.mark.usefixtures("vas")
def test_run_writes_the_last_snapshot_after_stop(
    fake: FakeKubeAPI, custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    """`run --cycles 1`: the one cycle ends and stops everything before the writer's next
    pass; the final pass writes it."""
    latest: Snapshot | None = None
    stop = asyncio.Event()

    def provider() -> Snapshot | None:
        nonlocal latest
        current = latest
        if current is None:  # the cycle publishes, and `run` stops
            latest = snap(clock, 1, decisions())
            stop.set()
        return current

    status = writer(custom, clock, settings=StatusSettings(interval_s=5))
    asyncio.run(asyncio.wait_for(status.run(provider, stop), timeout=30))
    assert len(status_writes(fake)) == 4
    obj = get(custom, "llm", "granite-h100")
    assert obj["status"]["desiredOptimizedAlloc"]["numReplicas"] == 3
    assert condition(obj, "OptimizationReady")["status"] == "True"


# ---------------------------------------------------------------- leader election


def leader_settings(identity: str) -> LeaderSettings:
    return LeaderSettings(
        namespace=LEASE_NS,
        identity=identity,
        lease_duration_s=15,
        renew_deadline_s=10,
        retry_period_s=2,
    )


def elector(api: client.ApiClient, clock: ManualClock, identity: str) -> LeaderElector:
    return LeaderElector(client.CoordinationV1Api(api), leader_settings(identity), clock)


def lease(api: client.ApiClient) -> client.V1LeaseSpec:
    found = client.CoordinationV1Api(api).read_namespaced_lease("wva-adapter-leader", LEASE_NS)
    spec = found.spec
    assert spec is not None
    return spec


def test_leader_acquires_renews_loses_to_expiry_and_releases(
    api: client.ApiClient, clock: ManualClock
) -> None:
    a, b = elector(api, clock, "adapter-a"), elector(api, clock, "adapter-b")
    assert a.step() is True and a.is_leader
    spec = lease(api)
    assert (spec.holder_identity, spec.lease_duration_seconds, spec.lease_transitions) == (
        "adapter-a",
        15,
        0,
    )
    assert b.step() is False and b.holder == "adapter-a"

    # renewals keep the lease, even long past one lease duration
    for _ in range(10):
        clock.advance(2)
        assert a.step() and not b.step()
    renewed = lease(api)
    assert renewed.renew_time is not None and spec.renew_time is not None
    assert renewed.renew_time > spec.renew_time
    assert renewed.acquire_time == spec.acquire_time

    # a stops renewing (crashed): it stops counting itself leader at the renew deadline,
    # b takes over only once b has seen the record unchanged for a whole lease duration
    clock.advance(9.9)
    assert a.is_leader
    clock.advance(0.2)
    assert not a.is_leader
    assert not b.step()
    clock.advance(5)  # 15.1 s after b last saw the record change
    assert b.step() and b.is_leader
    spec = lease(api)
    assert (spec.holder_identity, spec.lease_transitions) == ("adapter-b", 1)
    assert not a.step() and a.holder == "adapter-b"

    # release on shutdown: a takes over at once, without waiting for expiry
    assert b.release() and not b.is_leader
    assert lease(api).holder_identity == ""
    assert a.step() and a.is_leader
    assert lease(api).lease_transitions == 2
    assert not b.release()  # not holding: nothing to do


def test_leader_steps_down_when_renewals_fail(
    fake: FakeKubeAPI, api: client.ApiClient, clock: ManualClock
) -> None:
    a = elector(api, clock, "adapter-a")
    assert a.step()
    fake.fail_next(100, 500, match=lambda _m, path: "/leases" in path)
    for _ in range(4):
        clock.advance(2)
        assert a.step()  # still within the renew deadline
    clock.advance(2)
    assert not a.step() and not a.is_leader
    assert a.errors_total == 5


def test_conflicting_replace_loses_quietly(
    fake: FakeKubeAPI, api: client.ApiClient, clock: ManualClock
) -> None:
    a, b = elector(api, clock, "adapter-a"), elector(api, clock, "adapter-b")
    assert a.step() and a.release()
    fake.fail_next(1, 409, match=lambda method, path: method == "PUT" and "/leases" in path)
    assert not b.step() and b.errors_total == 0
    assert b.step() and lease(api).holder_identity == "adapter-b"


class SlowReads(client.CoordinationV1Api):
    """Lease reads that can be made slow: see `next_read_takes`."""

    def __init__(self, api: client.ApiClient, clock: ManualClock) -> None:
        super().__init__(api)
        self._clock = clock
        self._delay: tuple[float, Callable[[], object]] | None = None

    def next_read_takes(self, seconds: float, meanwhile: Callable[[], object] = bool) -> None:
        """The next read takes `seconds` on the clock; `meanwhile` runs before it is
        answered, so the answer reflects it."""
        self._delay = (seconds, meanwhile)

    def read_namespaced_lease(self, *args: Any, **kwargs: Any) -> Any:
        if self._delay is not None:
            (seconds, meanwhile), self._delay = self._delay, None
            self._clock.advance(seconds)
            meanwhile()
        return super().read_namespaced_lease(*args, **kwargs)


def slow_elector(
    api: client.ApiClient, clock: ManualClock, identity: str
) -> tuple[LeaderElector, SlowReads]:
    reads = SlowReads(api, clock)
    return LeaderElector(reads, leader_settings(identity), clock), reads


def test_a_slow_read_does_not_back_date_the_holders_renewal(
    api: client.ApiClient, clock: ManualClock
) -> None:
    a = elector(api, clock, "adapter-a")
    assert a.step()  # t=0
    b, reads = slow_elector(api, clock, "adapter-b")
    reads.next_read_takes(6.0, meanwhile=a.step)  # a renews at t=6; the read returns that
    assert not b.step()
    # a renews no more: it leads until t=16; b saw the record at t=6, so it waits to t=21
    clock.advance(9)
    assert a.is_leader and not b.step()  # t=15: a read stamped t=0 let b take it here
    clock.advance(1)
    assert not a.is_leader
    clock.advance(4.9)
    assert not b.step()  # t=20.9
    clock.advance(0.1)
    assert b.step() and lease(api).holder_identity == "adapter-b"  # t=21


def test_the_holders_deadline_counts_from_before_its_requests(
    api: client.ApiClient, clock: ManualClock
) -> None:
    a, reads = slow_elector(api, clock, "adapter-a")
    assert a.step()
    reads.next_read_takes(3.0)  # the renewal's read: t=0 -> 3
    assert a.step()
    clock.advance(6.9)
    assert a.is_leader  # t=9.9
    clock.advance(0.1)
    assert not a.is_leader  # t=10: 10 s after the renewal began, not after it returned


def test_only_the_leader_writes_status(
    fake: FakeKubeAPI, api: client.ApiClient, custom: client.CustomObjectsApi, clock: ManualClock
) -> None:
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "llm", PLURAL, manifest("llm", "granite-h100", "H100")
    )
    one = {("llm", "granite-h100"): decisions()[("llm", "granite-h100")]}
    a, b = elector(api, clock, "adapter-a"), elector(api, clock, "adapter-b")
    writer_a = writer(custom, clock, is_leader=lambda: a.is_leader)
    writer_b = writer(custom, clock, is_leader=lambda: b.is_leader)
    assert a.step() and not b.step()

    assert writer_b.sync(snap(clock, 1, one)).skipped == "not the leader"
    assert not [p for p in status_writes(fake) if p.endswith("/status")]
    assert writer_a.sync(snap(clock, 1, one)).written == [("llm", "granite-h100")]

    a.release()
    assert b.step()
    moved = {k: replace(v, desired_replicas=7) for k, v in one.items()}
    assert writer_a.sync(snap(clock, 2, moved)).skipped == "not the leader"
    assert writer_b.sync(snap(clock, 2, moved)).written == [("llm", "granite-h100")]
    assert get(custom, "llm", "granite-h100")["status"]["desiredOptimizedAlloc"]["numReplicas"] == 7


def test_run_loops_with_the_clock_and_releases_on_stop(
    api: client.ApiClient, clock: ManualClock
) -> None:
    seen: list[bool] = []

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def changed(leading: bool) -> None:  # called from the worker thread
            seen.append(leading)
            loop.call_soon_threadsafe(stop.set)

        a = LeaderElector(
            client.CoordinationV1Api(api),
            LeaderSettings(namespace=LEASE_NS, identity="adapter-a"),
            clock,
            on_change=changed,
        )
        await asyncio.wait_for(a.run(stop), timeout=30)

    asyncio.run(main())
    assert seen == [True, False]  # gained, then given up by release()
    assert lease(api).holder_identity == ""
    assert clock.monotonic() == 2.0  # one retry period of virtual time


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="renew_deadline_s"):
        LeaderSettings(namespace="x", identity="a", lease_duration_s=10, renew_deadline_s=10)
    with pytest.raises(ValueError, match="identity"):
        LeaderSettings(namespace="x", identity="")

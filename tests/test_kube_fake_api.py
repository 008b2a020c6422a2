"""The fake API server answers the official client as a real one would (for what it emulates)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from adapter.model.kube import GROUP, PLURAL, VERSION
from tests.fakes.kube_api import FakeKubeAPI


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(event_window=3) as server:
        yield server


@pytest.fixture
def custom(fake: FakeKubeAPI) -> Iterator[client.CustomObjectsApi]:
    config = client.Configuration()
    config.host = fake.url
    with client.ApiClient(config) as api:
        yield client.CustomObjectsApi(api)


def va(name: str, tier: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {"name": name, "labels": {"tier": tier}},
        "spec": {"modelID": "m"},
    }


def test_crud_selectors_status_and_errors(custom: Any) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va("a", "gold"))
    assert created["metadata"]["namespace"] == "ns" and created["metadata"]["generation"] == 1
    custom.create_namespaced_custom_object(GROUP, VERSION, "ns2", PLURAL, va("b", "tin"))
    gold = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector="tier=gold")
    assert [i["metadata"]["name"] for i in gold["items"]] == ["a"]
    assert len(custom.list_namespaced_custom_object(GROUP, VERSION, "ns2", PLURAL)["items"]) == 1
    with pytest.raises(client.ApiException) as conflict:
        custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va("a", "gold"))
    assert conflict.value.status == 409
    assert json.loads(conflict.value.body or "{}")["reason"] == "AlreadyExists"
    with pytest.raises(client.ApiException) as missing:
        custom.get_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, "zzz")
    assert (
        missing.value.status == 404 and json.loads(missing.value.body or "{}")["kind"] == "Status"
    )
    # the main endpoint ignores status; /status changes only status
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "ns", PLURAL, "a", {"spec": {"modelID": "n"}, "status": {"x": 1}}
    )
    assert patched["metadata"]["generation"] == 2 and "status" not in patched
    patched = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "ns", PLURAL, "a", {"spec": {"modelID": "o"}, "status": {"x": 2}}
    )
    assert patched["status"] == {"x": 2} and patched["spec"] == {"modelID": "n"}
    assert patched["metadata"]["generation"] == 2


def test_watch_from_a_version_and_410_outside_the_window(fake: FakeKubeAPI, custom: Any) -> None:
    first = custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va("a", "x"))
    rv = first["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va("b", "x"))

    def watch(since: str) -> list[dict[str, Any]]:
        resp = custom.list_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            watch=True,
            resource_version=since,
            timeout_seconds=1,
            _preload_content=False,
        )
        try:
            return [json.loads(line) for line in resp.data.splitlines() if line.strip()]
        finally:
            resp.release_conn()

    events = watch(rv)  # ends by itself after timeoutSeconds
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]
    for name in ("c", "d", "e"):  # the window holds 3 events: rv's successors are gone
        custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va(name, "x"))
    (error,) = watch(rv)
    assert error["type"] == "ERROR"
    assert (error["object"]["code"], error["object"]["reason"]) == (410, "Expired")


def test_injected_failures(fake: FakeKubeAPI, custom: Any) -> None:
    fake.fail_next(2, 500)
    for _ in range(2):
        with pytest.raises(client.ApiException) as failed:
            custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        assert failed.value.status == 500
    assert custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"] == []

"""The fake API server answers the official client as a real one would (for what it emulates)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
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


def names(items: list[dict[str, Any]]) -> list[str]:
    return [i["metadata"]["name"] for i in items]


def test_lists_paginate_as_one_consistent_snapshot(fake: FakeKubeAPI, custom: Any) -> None:
    for name in ("a", "b", "c", "d", "e"):
        custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va(name, "x"))
    first = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=2)
    assert names(first["items"]) == ["a", "b"]
    meta = first["metadata"]
    assert meta["continue"] and meta["remainingItemCount"] == 3
    # a change between pages is not seen: every page is the first page's snapshot
    custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va("aa", "x"))
    custom.delete_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, "e")
    second = custom.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, limit=2, _continue=meta["continue"]
    )
    assert names(second["items"]) == ["c", "d"]
    third = custom.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, limit=2, _continue=second["metadata"]["continue"]
    )
    assert names(third["items"]) == ["e"] and "continue" not in third["metadata"]
    versions = {p["metadata"]["resourceVersion"] for p in (first, second, third)}
    assert versions == {meta["resourceVersion"]}
    # no limit: everything, as it is now
    everything = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert names(everything["items"]) == ["a", "aa", "b", "c", "d"]
    assert "continue" not in everything["metadata"]


def test_an_expired_continue_token_is_410_expired(fake: FakeKubeAPI, custom: Any) -> None:
    for name in ("a", "b", "c"):
        custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va(name, "x"))
    token = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)["metadata"][
        "continue"
    ]
    fake.expire_continue_tokens()
    with pytest.raises(client.ApiException) as expired:
        custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1, _continue=token)
    assert expired.value.status == 410
    assert json.loads(expired.value.body or "{}")["reason"] == "Expired"
    # the next n continue requests, whatever their token
    token = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)["metadata"][
        "continue"
    ]
    fake.expire_continue_next(1)
    with pytest.raises(client.ApiException) as again:
        custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1, _continue=token)
    assert again.value.status == 410
    fresh = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
    rest = custom.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, limit=5, _continue=fresh["metadata"]["continue"]
    )
    assert names(fresh["items"]) + names(rest["items"]) == ["a", "b", "c"]


def first_events(response: Any, count: int) -> list[dict[str, Any]]:
    """The first `count` events of a streamed watch (one chunk per event), then close it."""
    events: list[dict[str, Any]] = []
    buffer = b""
    try:
        for chunk in response.stream(amt=None, decode_content=False):
            buffer += chunk
            while b"\n" in buffer and len(events) < count:
                line, buffer = buffer.split(b"\n", 1)
                events.append(json.loads(line))
            if len(events) >= count:
                break
    finally:
        response.close()
        response.release_conn()
    return events


def test_bookmarks_only_when_asked_at_the_latest_resource_version(
    fake: FakeKubeAPI, custom: Any
) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va("a", "x"))
    rv = created["metadata"]["resourceVersion"]
    fake.apply({"kind": "Node", "metadata": {"name": "n1"}})  # moves the server's version on
    latest = str(fake.store.last_rv)
    assert int(latest) > int(rv)

    def watch(bookmarks: bool) -> Any:
        return custom.list_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=bookmarks,
            timeout_seconds=30,
            _preload_content=False,
        )

    asked = watch(True)
    fake.send_bookmarks()
    (bookmark,) = first_events(asked, 1)
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["kind"] == "VariantAutoscaling"
    assert bookmark["object"]["metadata"] == {"resourceVersion": latest}

    not_asked = watch(False)
    fake.send_bookmarks()
    custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va("b", "x"))
    (event,) = first_events(not_asked, 1)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "b")


def test_events_come_before_the_bookmark_that_covers_them(fake: FakeKubeAPI, custom: Any) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va("a", "x"))
    stream = custom.list_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        watch=True,
        resource_version=created["metadata"]["resourceVersion"],
        allow_watch_bookmarks=True,
        timeout_seconds=30,
        _preload_content=False,
    )
    with fake.store.cond:  # both at once: the watch wakes to an event and a bookmark
        b = fake.apply(va("b", "x"))
        fake.send_bookmarks()
    added, bookmark = first_events(stream, 2)
    assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "b")
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["resourceVersion"] == b["metadata"]["resourceVersion"]


@pytest.mark.parametrize("status", [None, 503])
def test_an_outage_refuses_or_fails_every_request_then_ends_with_the_objects_kept(
    fake: FakeKubeAPI, custom: Any, status: int | None
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, "ns", PLURAL, va("a", "x"))
    url = fake.url
    fake.go_down(status)
    if status is None:
        with pytest.raises(urllib3.exceptions.MaxRetryError) as refused:
            custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        assert isinstance(refused.value.reason, urllib3.exceptions.NewConnectionError)
    else:
        with pytest.raises(client.ApiException) as failed:
            custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        assert failed.value.status == 503
        assert json.loads(failed.value.body or "{}")["reason"] == "ServiceUnavailable"
    fake.apply(va("b", "x") | {"metadata": {"name": "b", "namespace": "ns"}})  # meanwhile
    fake.come_back()
    assert fake.url == url
    assert names(custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]) == ["a", "b"]

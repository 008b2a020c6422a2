"""An in-memory fake Kubernetes API server for tests (stdlib only, one thread per request).

It speaks the real REST paths and JSON, so the official `kubernetes` client talks to it
unchanged. What it emulates:

- core/v1 `configmaps` (namespaced) and `nodes` (cluster-scoped), apps/v1 `deployments`,
  `llmd.ai/v1alpha1` `variantautoscalings`, `coordination.k8s.io/v1` `leases` (namespaced,
  for leader election); list per namespace and across namespaces
  (`labelSelector`: `k=v`, `k==v`, `k!=v`, `k`, `!k`), get, create (201), replace (PUT,
  409 on a stale `metadata.resourceVersion`), JSON merge-patch (strategic merge is treated
  as merge-patch), delete, and a `/status` subresource for deployments and
  variantautoscalings (writes there change only `status`; the main endpoint ignores
  `status`; `metadata.generation` bumps when `spec` changes).
- list pagination: `limit` returns that many items (in key order) and a
  `metadata.continue` token with `remainingItemCount`; a `continue` request returns the
  next page of the *same* list (every page carries the first page's resourceVersion,
  objects changed meanwhile are not seen, as etcd's snapshot read gives). A token the
  server no longer serves gets, like the real server, 410 with reason `Expired`:
  `compact()` and `expire_continue_tokens()` expire every token issued so far,
  `expire_continue_next(n)` the next n continue requests.
- watch (`watch=true`) with `resourceVersion` and `timeoutSeconds`, streamed as chunked
  JSON lines, ended normally (terminating chunk) at the timeout. Without a
  resourceVersion (or "0") it first sends the current objects as ADDED. The server keeps
  a bounded window of events (`event_window`); a watch from a resourceVersion older than
  the window gets, like the real server, HTTP 200 and a single ERROR event whose object
  is a Status with code 410, reason `Expired`.
- BOOKMARK events, only to watches that ask `allowWatchBookmarks=true`: an object of the
  watched kind carrying only `metadata.resourceVersion`, the server's latest (every
  event up to it has been sent first). Sent when a test calls `send_bookmarks()`, and
  every `bookmark_interval` seconds of a watch if set (the real server sends them about
  once a minute and promises no interval; the default here is never on its own, so
  tests decide when they arrive).
- 404 / 409 / 410 / 500 / 503 answers carry a `Status` body.

Fault injection for reliability tests: `fail_next(n, status=500, match=...)` fails the
next n matching requests (`clear_faults()` cancels what is left); `hang_next(n,
match=...)` holds them unanswered until released (client timeouts); `drop_watches()`
cuts every open watch stream mid-chunk (the client sees a broken connection);
`compact()` forgets the event window so that any resume gets 410; `go_down()` is an
outage: connections refused (the listening socket closed, every open connection cut) or,
with `go_down(status=503)`, every request answered with that status and every watch cut;
`come_back()` ends it on the same address with the same objects (watches resume from
their resourceVersion, as after an API server restart with etcd intact). `requests`
logs every request (method, path, query) for assertions.

Not emulated: authentication/authorization, discovery (`/api`, `/apis`), OpenAPI, field
selectors, server-side apply, strategic-merge list semantics, JSON patch, `/scale`,
admission and CRD schema validation, defaulting (e.g. Deployment `spec.replicas`), owner
references and garbage collection, resourceVersion semantics on list (`resourceVersion`,
`resourceVersionMatch`: every list is a fresh read), the inconsistent continuation a
real server offers with its 410 (the token in the Status' metadata), `sendInitialEvents`
and its initial-events-end BOOKMARK, watch events for objects that stop matching a label
selector after a change, Retry-After headers and API priority and fairness (429), and a
hung etcd behind a live server (an outage here is the whole server).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Resource:
    group_version: str  # "v1", "apps/v1", "llmd.ai/v1alpha1"
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool


RESOURCES: dict[tuple[str, str], Resource] = {
    (r.group_version, r.plural): r
    for r in (
        Resource("v1", "configmaps", "ConfigMap", True, False),
        Resource("v1", "nodes", "Node", False, False),
        Resource("apps/v1", "deployments", "Deployment", True, True),
        Resource("llmd.ai/v1alpha1", "variantautoscalings", "VariantAutoscaling", True, True),
        Resource("coordination.k8s.io/v1", "leases", "Lease", True, False),
    )
}
KIND_TO_RESOURCE: dict[str, Resource] = {r.kind: r for r in RESOURCES.values()}

ObjKey = tuple[str, str, str, str]  # (group_version, plural, namespace, name)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _labels_match(obj: dict[str, Any], selector: str | None) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            ok = labels.get(key.strip()) != value.strip()
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            ok = labels.get(key.strip()) == value.strip()
        elif term.startswith("!"):
            ok = term[1:] not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


@dataclass
class Event:
    rv: int
    resource: Resource
    type: str
    obj: dict[str, Any]


@dataclass
class _Fault:
    remaining: int
    status: int
    match: Callable[[str, str], bool]
    watch: bool | None = None  # only watch requests (True), only others (False), or both

    def takes(self, method: str, path: str, query: dict[str, str]) -> bool:
        is_watch = query.get("watch") in ("true", "1")
        return (
            self.remaining > 0
            and (self.watch is None or self.watch == is_watch)
            and self.match(method, path)
        )


@dataclass
class _ListRest:
    scope: tuple[str, str, str | None, str | None]  # group_version, plural, namespace, selector
    rv: int
    items: list[dict[str, Any]]


MAX_LIST_RESTS = 256


def _encode_token(rest_id: int, rv: int, first: dict[str, Any]) -> str:
    """An opaque continue token, shaped like the real server's (base64 JSON)."""
    meta = first.get("metadata") or {}
    start = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start, "id": rest_id})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_token(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["id"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "BadRequest", f"invalid continue token {token!r}") from None


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]


class Store:
    """Objects, the resourceVersion counter and the retained event window, under one lock."""

    def __init__(self, event_window: int = 1000) -> None:
        self.cond = threading.Condition()
        self.objects: dict[ObjKey, dict[str, Any]] = {}
        self.events: list[Event] = []
        self.event_window = event_window
        self._rv = itertools.count(1)
        self.last_rv = 0
        # watches from a resourceVersion below this cannot be served (410)
        self.oldest_servable_rv = 0
        self.watch_generation = 0  # bumped by drop_watches()
        self.bookmark_generation = 0  # bumped by send_bookmarks()
        self.closing = False
        # the rest of each paginated list, by continue-token id (what etcd's snapshot
        # read would give); bounded, the oldest forgotten first
        self.list_rests: dict[int, _ListRest] = {}
        self._list_ids = itertools.count(1)
        self.expire_continues = 0  # the next n continue requests get 410

    def _next_rv(self) -> int:
        self.last_rv = next(self._rv)
        return self.last_rv

    def _emit(self, resource: Resource, type_: str, obj: dict[str, Any]) -> None:
        self.events.append(Event(self.last_rv, resource, type_, copy.deepcopy(obj)))
        excess = len(self.events) - self.event_window
        if excess > 0:
            self.oldest_servable_rv = self.events[excess - 1].rv
            del self.events[:excess]
        self.cond.notify_all()

    def compact(self) -> None:
        with self.cond:
            self.events.clear()
            self.oldest_servable_rv = self.last_rv
            self.list_rests.clear()

    def page(
        self,
        resource: Resource,
        namespace: str | None,
        selector: str | None,
        limit: int | None,
        token: str | None,
    ) -> tuple[list[dict[str, Any]], int, str, int]:
        """One page of a list: (items, the list's resourceVersion, continue token or "",
        items remaining after it); ApiError 410 for a token no longer served."""
        scope = (resource.group_version, resource.plural, namespace, selector)
        with self.cond:
            if token is None:
                items, rv = self.list(resource, namespace, selector)
            else:
                rest_id = _decode_token(token)
                rest = self.list_rests.pop(rest_id, None)
                if self.expire_continues > 0:
                    self.expire_continues -= 1
                    rest = None
                if rest is None:
                    raise ApiError(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.",
                    )
                if rest.scope != scope:
                    raise ApiError(400, "BadRequest", "continue token of another list")
                items, rv = rest.items, rest.rv
            if limit is None or len(items) <= limit:
                return items, rv, "", 0
            page, left = items[:limit], items[limit:]
            rest_id = next(self._list_ids)
            self.list_rests[rest_id] = _ListRest(scope, rv, left)
            while len(self.list_rests) > MAX_LIST_RESTS:
                del self.list_rests[next(iter(self.list_rests))]
            return page, rv, _encode_token(rest_id, rv, left[0]), len(left)

    def events_after(
        self, since: int, resource: Resource, namespace: str | None, selector: str | None
    ) -> tuple[list[dict[str, Any]], int]:
        """Watch events newer than `since` for this resource; call with `cond` held."""
        found: list[dict[str, Any]] = []
        for event in self.events:
            if event.rv <= since:
                continue
            since = event.rv
            meta = event.obj.get("metadata") or {}
            if (
                event.resource is resource
                and (namespace is None or meta.get("namespace") == namespace)
                and _labels_match(event.obj, selector)
            ):
                found.append({"type": event.type, "object": event.obj})
        return found, since

    # ------------------------------------------------------------ object operations

    def create(self, resource: Resource, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if resource.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match")
            meta["namespace"] = namespace
        else:
            namespace = ""
            meta.pop("namespace", None)
        obj.setdefault("apiVersion", resource.group_version)
        obj.setdefault("kind", resource.kind)
        key = (resource.group_version, resource.plural, namespace, name)
        with self.cond:
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
            meta["uid"] = str(uuid.uuid4())
            meta["generation"] = 1
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["resourceVersion"] = str(self._next_rv())
            self.objects[key] = obj
            self._emit(resource, "ADDED", obj)
            return copy.deepcopy(obj)

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        with self.cond:
            found = self.objects.get((resource.group_version, resource.plural, namespace, name))
            if found is None:
                raise ApiError(404, "NotFound", f'{resource.plural} "{name}" not found')
            return copy.deepcopy(found)

    def list(
        self, resource: Resource, namespace: str | None, selector: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        with self.cond:
            items = [
                copy.deepcopy(obj)
                for (gv, plural, ns, _), obj in sorted(self.objects.items())
                if gv == resource.group_version
                and plural == resource.plural
                and (namespace is None or ns == namespace)
                and _labels_match(obj, selector)
            ]
            return items, self.last_rv

    def update(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        subresource: str | None = None,
        expect_rv: str | None = None,
    ) -> dict[str, Any]:
        """Apply `change` to a copy of the object, keeping spec/status apart as a real server."""
        with self.cond:
            key = (resource.group_version, resource.plural, namespace, name)
            current = self.objects.get(key)
            if current is None:
                raise ApiError(404, "NotFound", f'{resource.plural} "{name}" not found')
            if expect_rv and expect_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource.plural} "{name}": the object '
                    "has been modified; please apply your changes to the latest version",
                )
            proposed = change(copy.deepcopy(current))
            updated = copy.deepcopy(current)
            if subresource == "status":
                if proposed.get("status") is None:
                    updated.pop("status", None)
                else:
                    updated["status"] = proposed["status"]
            else:
                for part, value in proposed.items():
                    if part in ("metadata", "status", "apiVersion", "kind"):
                        continue
                    updated[part] = value
                for part in [p for p in current if p not in proposed]:
                    if part not in ("metadata", "status", "apiVersion", "kind"):
                        updated.pop(part)
                if not resource.status_subresource and "status" in proposed:
                    updated["status"] = proposed["status"]
                meta = proposed.get("metadata") or {}
                for field_name in ("labels", "annotations"):
                    if field_name in meta:
                        updated["metadata"][field_name] = meta[field_name]
                if updated.get("spec") != current.get("spec"):
                    updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            updated["metadata"]["resourceVersion"] = str(self._next_rv())
            self.objects[key] = updated
            self._emit(resource, "MODIFIED", updated)
            return copy.deepcopy(updated)

    def delete(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        with self.cond:
            key = (resource.group_version, resource.plural, namespace, name)
            current = self.objects.pop(key, None)
            if current is None:
                raise ApiError(404, "NotFound", f'{resource.plural} "{name}" not found')
            current["metadata"]["resourceVersion"] = str(self._next_rv())
            self._emit(resource, "DELETED", current)
            return copy.deepcopy(current)


def _positive_int(raw: str | None) -> int | None:
    """A list's `limit`: a positive integer, or None (0, absent: everything)."""
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid limit {raw!r}") from None
    return value if value > 0 else None


def _bookmark(resource: Resource, rv: int) -> dict[str, Any]:
    """A BOOKMARK event: an object of the watched kind with only its resourceVersion."""
    return {
        "type": "BOOKMARK",
        "object": {
            "kind": resource.kind,
            "apiVersion": resource.group_version,
            "metadata": {"resourceVersion": str(rv)},
        },
    }


def _parse_path(path: str) -> tuple[Resource, str | None, str | None, str | None]:
    """-> (resource, namespace or None for all, name, subresource); ApiError 404 if unknown."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        gv, rest = parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3 or (gv, rest[0]) not in RESOURCES:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    resource = RESOURCES[(gv, rest[0])]
    if resource.namespaced != (namespace is not None) and len(rest) > 1:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and not (sub == "status" and resource.status_subresource):
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return resource, namespace, name, sub


class FakeKubeAPI:
    """Start with `with FakeKubeAPI() as api:`; point a client at `api.url`."""

    def __init__(self, event_window: int = 1000, bookmark_interval: float | None = None) -> None:
        self.store = Store(event_window)
        self.bookmark_interval = bookmark_interval
        self.requests: list[RequestRecord] = []
        self._faults: list[_Fault] = []
        self._hangs: list[tuple[_Fault, threading.Event]] = []
        self._lock = threading.Condition()  # notified when a watch opens
        self._watch_sockets: set[socket.socket] = set()
        self._connections: set[socket.socket] = set()
        self._down = False
        self._down_status: int | None = None
        self._server = self._serve(("127.0.0.1", 0))
        self._thread = self._serving_thread()

    def _serve(self, address: tuple[str, int]) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(address, self._handler_class())
        server.daemon_threads = True
        return server

    def _serving_thread(self) -> threading.Thread:
        return threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-kube-api", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for _fault, gate in self._hangs:
                gate.set()
        with self.store.cond:
            self.store.closing = True
            self.store.cond.notify_all()
        self.drop_watches()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._cut_connections()

    # ------------------------------------------------------------ outages

    def go_down(self, status: int | None = None) -> None:
        """An API server outage until `come_back()`. `status` None: connections are refused
        (the listening socket is closed and every open connection cut, so the client's
        pooled keep-alive connections fail too); else every request gets `status` with a
        Status body and every watch is cut."""
        with self._lock:
            if self._down:
                raise RuntimeError("the fake API server is already down")
            self._down, self._down_status = True, status
        if status is None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
        self._cut_connections()

    def come_back(self) -> None:
        """End the outage: the same address, the same objects and event window."""
        with self._lock:
            if not self._down:
                raise RuntimeError("the fake API server is not down")
            refused = self._down_status is None
            self._down, self._down_status = False, None
        if refused:
            host, port = self._server.server_address[:2]
            self._server = self._serve((str(host), int(port)))
            self._thread = self._serving_thread()
            self._thread.start()

    def _cut_connections(self) -> None:
        self.drop_watches()
        with self._lock:
            sockets = list(self._connections)
            self._connections.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ test helpers

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create (or replace the spec/data of) an object given as a manifest with `kind`."""
        resource = KIND_TO_RESOURCE[obj["kind"]]
        namespace = (obj.get("metadata") or {}).get("namespace") or (
            "default" if resource.namespaced else ""
        )
        try:
            return self.store.create(resource, namespace, obj)
        except ApiError as error:
            if error.code != 409:
                raise
        name = obj["metadata"]["name"]
        return self.store.update(resource, namespace, name, lambda _cur: copy.deepcopy(obj))

    def fail_next(
        self,
        count: int,
        status: int = 500,
        match: Callable[[str, str], bool] | None = None,
        *,
        watch: bool | None = None,
    ) -> None:
        """Answer the next `count` requests for which match(method, path) holds with
        `status`; `watch` True: only watch requests, False: only the others (lists)."""
        with self._lock:
            self._faults.append(_Fault(count, status, match or (lambda _m, _p: True), watch))

    def hang_next(
        self,
        count: int,
        match: Callable[[str, str], bool] | None = None,
        *,
        watch: bool | None = None,
    ) -> threading.Event:
        """Hold the next `count` matching requests unanswered until the returned event is
        set (or the server stops): a hung API server, for client timeouts."""
        gate = threading.Event()
        with self._lock:
            fault = _Fault(count, 0, match or (lambda _m, _p: True), watch)
            self._hangs.append((fault, gate))
        return gate

    def drop_watches(self) -> int:
        """Cut every open watch stream without the terminating chunk; returns how many."""
        with self._lock:
            sockets = list(self._watch_sockets)
            self._watch_sockets.clear()
        with self.store.cond:
            self.store.watch_generation += 1
            self.store.cond.notify_all()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(sockets)

    def compact(self) -> None:
        """Forget all retained events: every watch resume from now on gets 410 Expired, and
        so does every continue token issued so far."""
        self.store.compact()

    def expire_continue_tokens(self) -> None:
        """Every continue token issued so far gets 410 Expired."""
        with self.store.cond:
            self.store.list_rests.clear()

    def expire_continue_next(self, count: int) -> None:
        """The next `count` continue requests get 410 Expired (their list's snapshot was
        compacted away between two pages)."""
        with self.store.cond:
            self.store.expire_continues += count

    def send_bookmarks(self) -> None:
        """Every open watch that asked for BOOKMARKs gets one now, at the latest
        resourceVersion (after any event it has not been sent yet)."""
        with self.store.cond:
            self.store.bookmark_generation += 1
            self.store.cond.notify_all()

    def clear_faults(self) -> None:
        """Cancel what is left of every `fail_next`."""
        with self._lock:
            self._faults.clear()

    def open_watches(self) -> int:
        with self._lock:
            return len(self._watch_sockets)

    def wait_open_watches(self, count: int, timeout: float) -> bool:
        """Until at least `count` watch streams are open on the server side: a client's
        reflector says it watches once its request is sent, before the server has it."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._watch_sockets) >= count, timeout)

    def requests_matching(
        self, method: str, path_part: str, **query: str
    ) -> Iterator[RequestRecord]:
        with self._lock:
            records = list(self.requests)
        for record in records:
            if (
                record.method == method
                and path_part in record.path
                and all(record.query.get(k) == v for k, v in query.items())
            ):
                yield record

    def _take_hang(self, method: str, path: str, query: dict[str, str]) -> threading.Event | None:
        with self._lock:
            for fault, gate in self._hangs:
                if fault.takes(method, path, query):
                    fault.remaining -= 1
                    return gate
        return None

    def _take_fault(self, method: str, path: str, query: dict[str, str]) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault.takes(method, path, query):
                    fault.remaining -= 1
                    return fault.status
        return None

    # ------------------------------------------------------------ HTTP

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # keep-alive + Nagle would add ~40 ms a request

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with api._lock:
                    api._connections.add(self.connection)

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with api._lock:
                        api._connections.discard(self.connection)

            def _send_json(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    return json.loads(raw or b"null")
                except json.JSONDecodeError as error:
                    raise ApiError(400, "BadRequest", f"invalid JSON body: {error}") from None

            def _dispatch(self) -> None:
                split = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(split.query).items()}
                with api._lock:
                    api.requests.append(RequestRecord(self.command, split.path, query))
                    down, down_status = api._down, api._down_status
                if down and down_status is None:
                    self.close_connection = True  # refused: this connection is being cut
                    return
                try:
                    if down_status is not None:
                        reasons = {500: "InternalError", 503: "ServiceUnavailable"}
                        raise ApiError(down_status, reasons.get(down_status, "Outage"), "outage")
                    body = self._body() if self.command in ("POST", "PUT", "PATCH") else None
                    gate = api._take_hang(self.command, split.path, query)
                    if gate is not None:
                        while not gate.wait(0.05) and not api.store.closing:
                            pass
                    injected = api._take_fault(self.command, split.path, query)
                    if injected is not None:
                        reasons = {410: "Expired", 500: "InternalError", 503: "ServiceUnavailable"}
                        raise ApiError(injected, reasons.get(injected, "InjectedFault"), "injected")
                    if split.path in ("/version", "/version/"):
                        self._send_json(
                            200, {"major": "1", "minor": "33", "gitVersion": "v1.33-fake"}
                        )
                        return
                    self._handle(split.path, query, body)
                except ApiError as error:
                    self._send_json(
                        error.code, status_body(error.code, error.reason, error.message)
                    )

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

            def _handle(self, path: str, query: dict[str, str], body: Any) -> None:
                resource, namespace, name, sub = _parse_path(path)
                store = api.store
                if self.command == "GET" and name is None:
                    selector = query.get("labelSelector")
                    if query.get("watch") in ("true", "1"):
                        self._watch(resource, namespace, selector, query)
                        return
                    limit = _positive_int(query.get("limit"))
                    items, rv, token, remaining = store.page(
                        resource, namespace, selector, limit, query.get("continue") or None
                    )
                    meta: dict[str, Any] = {"resourceVersion": str(rv)}
                    if token:
                        meta["continue"] = token
                        meta["remainingItemCount"] = remaining
                    self._send_json(
                        200,
                        {
                            "kind": f"{resource.kind}List",
                            "apiVersion": resource.group_version,
                            "metadata": meta,
                            "items": items,
                        },
                    )
                    return
                if self.command == "POST" and name is None:
                    if not isinstance(body, dict):
                        raise ApiError(400, "BadRequest", "body must be an object")
                    self._send_json(201, store.create(resource, namespace or "", body))
                    return
                if name is None:
                    raise ApiError(405, "MethodNotAllowed", f"{self.command} on a collection")
                ns = namespace or ""
                if self.command == "GET":
                    obj = store.get(resource, ns, name)
                    self._send_json(200, obj)
                elif self.command == "DELETE":
                    self._send_json(200, store.delete(resource, ns, name))
                elif self.command == "PUT":
                    if not isinstance(body, dict):
                        raise ApiError(400, "BadRequest", "body must be an object")
                    expect = (body.get("metadata") or {}).get("resourceVersion")
                    obj = store.update(resource, ns, name, lambda _c: body, sub, expect)
                    self._send_json(200, obj)
                elif self.command == "PATCH":
                    kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                    if kind not in (
                        "application/merge-patch+json",
                        "application/strategic-merge-patch+json",
                    ):
                        raise ApiError(415, "UnsupportedMediaType", f"unsupported patch {kind}")
                    if not isinstance(body, dict):
                        raise ApiError(400, "BadRequest", "a merge patch must be an object")
                    expect = (body.get("metadata") or {}).get("resourceVersion")
                    obj = store.update(
                        resource, ns, name, lambda cur: _merge_patch(cur, body), sub, expect
                    )
                    self._send_json(200, obj)
                else:
                    raise ApiError(405, "MethodNotAllowed", self.command)

            def _chunk(self, payload: dict[str, Any]) -> None:
                data = (json.dumps(payload) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(
                self,
                resource: Resource,
                namespace: str | None,
                selector: str | None,
                query: dict[str, str],
            ) -> None:
                store = api.store
                raw_rv = query.get("resourceVersion") or "0"
                try:
                    since = int(raw_rv)
                except ValueError:
                    raise ApiError(
                        400, "BadRequest", f"invalid resourceVersion {raw_rv!r}"
                    ) from None
                timeout = float(query.get("timeoutSeconds") or 1800)
                deadline = time.monotonic() + timeout
                bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
                interval = api.bookmark_interval if bookmarks else None
                next_bookmark = time.monotonic() + interval if interval else float("inf")
                # before the client can see the answer: a drop or a bookmark asked for once
                # it has its headers must reach this watch
                with store.cond:
                    generation = store.watch_generation
                    bookmarked = store.bookmark_generation
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.close_connection = True
                with api._lock:
                    api._watch_sockets.add(self.connection)
                    api._lock.notify_all()
                try:
                    with store.cond:
                        if since and since < store.oldest_servable_rv:
                            expired = status_body(
                                410,
                                "Expired",
                                f"too old resource version: {since} ({store.oldest_servable_rv})",
                            )
                            pending: list[dict[str, Any]] = [{"type": "ERROR", "object": expired}]
                            deadline = 0.0
                        elif not since:
                            items, since = store.list(resource, namespace, selector)
                            pending = [{"type": "ADDED", "object": obj} for obj in items]
                        else:
                            pending = []
                    while True:
                        for event in pending:
                            self._chunk(event)
                        with store.cond:
                            pending = []
                            while not pending:
                                if store.closing or store.watch_generation != generation:
                                    return  # dropped: no terminating chunk
                                now = time.monotonic()
                                left = deadline - now
                                if left <= 0:
                                    break
                                found, since = store.events_after(
                                    since, resource, namespace, selector
                                )
                                pending.extend(found)
                                asked = bookmarks and store.bookmark_generation != bookmarked
                                if asked or now >= next_bookmark:
                                    bookmarked = store.bookmark_generation
                                    if now >= next_bookmark and interval:
                                        next_bookmark = now + interval
                                    since = max(since, store.last_rv)
                                    pending.append(_bookmark(resource, since))
                                if not pending:
                                    store.cond.wait(min(left, next_bookmark - now))
                        if not pending:
                            break
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    # ended cleanly: like the API server, the connection stays open for the
                    # next request (closing it unannounced lets a pooled client reuse a dead
                    # socket)
                    self.close_connection = False
                except OSError:
                    pass
                finally:
                    with api._lock:
                        api._watch_sockets.discard(self.connection)

        return Handler

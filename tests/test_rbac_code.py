"""The Kubernetes API calls in adapter/ against the RBAC rendered from deploy/.

The calls are found in the source: every attribute named like a method of the official
client's `*Api` classes (`list_node`, `patch_namespaced_custom_object_status`, ...).
`CALLS` maps each to the (group, resource, verb) it needs and where: `cluster` calls may
touch any namespace (ClusterRole), `adapter-ns` calls only the adapter's own namespace
(the config and Lease namespace, `--config-namespace=$(POD_NAMESPACE)`). A list call whose
module also watches (`watch=True`) needs `watch` as well.

Then: every call is granted, and every granted verb is used by some call. Events are
exempt from the second check (`UNUSED_ALLOWED`): granted for future use, no code emits
them yet.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import kubernetes.client
import pytest

from adapter.model.kube import GROUP, PLURAL
from tests.test_manifests import ADAPTER_NS, DEPLOY, _kustomize, rbac_table

ADAPTER = Path(__file__).resolve().parent.parent / "adapter"

CLUSTER, ADAPTER_NAMESPACE = "cluster", "adapter-ns"

Need = tuple[str, str, str, str]  # (scope, apiGroup, resource, verb)

# client method -> what it needs; a call not listed here fails test_every_call_is_mapped
CALLS: dict[str, Need] = {
    "list_cluster_custom_object": (CLUSTER, GROUP, PLURAL, "list"),
    "list_namespaced_custom_object": (CLUSTER, GROUP, PLURAL, "list"),  # any --namespace
    "get_namespaced_custom_object": (CLUSTER, GROUP, PLURAL, "get"),
    "patch_namespaced_custom_object_status": (CLUSTER, GROUP, f"{PLURAL}/status", "patch"),
    "replace_namespaced_custom_object_status": (CLUSTER, GROUP, f"{PLURAL}/status", "update"),
    "get_namespaced_custom_object_status": (CLUSTER, GROUP, f"{PLURAL}/status", "get"),
    "list_deployment_for_all_namespaces": (CLUSTER, "apps", "deployments", "list"),
    "list_namespaced_deployment": (CLUSTER, "apps", "deployments", "list"),
    "read_namespaced_deployment": (CLUSTER, "apps", "deployments", "get"),
    "list_node": (CLUSTER, "", "nodes", "list"),
    "read_node": (CLUSTER, "", "nodes", "get"),
    "list_namespaced_config_map": (ADAPTER_NAMESPACE, "", "configmaps", "list"),
    "read_namespaced_config_map": (ADAPTER_NAMESPACE, "", "configmaps", "get"),
    "read_namespaced_lease": (ADAPTER_NAMESPACE, "coordination.k8s.io", "leases", "get"),
    "create_namespaced_lease": (ADAPTER_NAMESPACE, "coordination.k8s.io", "leases", "create"),
    "replace_namespaced_lease": (ADAPTER_NAMESPACE, "coordination.k8s.io", "leases", "update"),
    "patch_namespaced_lease": (ADAPTER_NAMESPACE, "coordination.k8s.io", "leases", "patch"),
    "create_namespaced_event": (CLUSTER, "", "events", "create"),
    "patch_namespaced_event": (CLUSTER, "", "events", "patch"),
}

# granted but not (yet) called: none, least privilege
UNUSED_ALLOWED: set[tuple[str, str, str]] = set()


VERB_METHOD = re.compile(r"^(list|read|get|create|patch|replace|delete|connect)_\w+$")


@dataclass(frozen=True)
class Call:
    method: str
    where: str  # path:line


@cache
def client_methods() -> frozenset[str]:
    """The API-call methods (`list_...`, `patch_...`) of every `kubernetes.client.*Api` class."""
    names: set[str] = set()
    for attr in dir(kubernetes.client):
        cls = getattr(kubernetes.client, attr)
        if attr.endswith("Api") and inspect.isclass(cls):
            names.update(m for m in dir(cls) if VERB_METHOD.match(m))
    # discovery calls, which every authenticated user may make
    return frozenset(names - {"get_api_resources", "get_code", "get_api_group", "get_api_versions"})


@cache
def code_calls() -> tuple[tuple[Call, ...], frozenset[str]]:
    """The client methods adapter/ refers to, and the modules that watch (`watch=True`)."""
    methods = client_methods()
    calls: list[Call] = []
    watching: set[str] = set()
    for path in sorted(ADAPTER.rglob("*.py")):
        if "_proto" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        relative = str(path.relative_to(ADAPTER.parent))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in methods:
                calls.append(Call(node.attr, f"{relative}:{node.lineno}"))
            if (
                isinstance(node, ast.keyword)
                and node.arg == "watch"
                and isinstance(node.value, ast.Constant)
                and node.value.value is True
            ):
                watching.add(relative)
    return tuple(calls), frozenset(watching)


def needs() -> dict[Need, list[str]]:
    """(scope, group, resource, verb) -> the call sites needing it (list+watch included)."""
    calls, watching = code_calls()
    found: dict[Need, list[str]] = {}
    for call in calls:
        need = CALLS[call.method]
        found.setdefault(need, []).append(call.where)
        if need[3] == "list" and call.where.split(":")[0] in watching:
            found.setdefault((*need[:3], "watch"), []).append(call.where)
    return found


@pytest.fixture(scope="module")
def granted() -> dict[tuple[str, str, str], set[str]]:
    """Verbs per (namespace, group, resource) of `kubectl kustomize deploy`."""
    return rbac_table(_kustomize(DEPLOY))


def test_the_scan_finds_the_known_calls() -> None:
    calls, watching = code_calls()
    methods = {c.method for c in calls}
    assert {
        "list_cluster_custom_object",
        "list_node",
        "list_namespaced_config_map",
        "patch_namespaced_custom_object_status",
        "read_namespaced_lease",
        "create_namespaced_lease",
        "replace_namespaced_lease",
    } <= methods
    assert "adapter/collect/kube.py" in watching


def test_every_call_is_mapped() -> None:
    calls, _ = code_calls()
    unmapped = sorted({f"{c.method} ({c.where})" for c in calls if c.method not in CALLS})
    assert unmapped == [], "add these Kubernetes client calls to CALLS"


def _allows(granted: dict[tuple[str, str, str], set[str]], need: Need) -> bool:
    scope, group, resource, verb = need
    namespaces = [""] if scope == CLUSTER else ["", ADAPTER_NS]
    return any(verb in granted.get((ns, group, resource), set()) for ns in namespaces)


def test_every_call_is_granted(granted: dict[tuple[str, str, str], set[str]]) -> None:
    missing = sorted(
        f"{verb} {resource}{'.' + group if group else ''} ({scope}) for {', '.join(sites)}"
        for (scope, group, resource, verb), sites in needs().items()
        if not _allows(granted, (scope, group, resource, verb))
    )
    assert missing == []


def test_every_granted_verb_is_used(granted: dict[tuple[str, str, str], set[str]]) -> None:
    used: dict[tuple[str, str], set[str]] = {}
    for scope, group, resource, verb in needs():
        del scope
        used.setdefault((group, resource), set()).add(verb)
    unused = sorted(
        f"{verb} {resource}{'.' + group if group else ''}"
        f"{' in ' + namespace if namespace else ' (cluster-wide)'}"
        for (namespace, group, resource), verbs in granted.items()
        if (namespace, group, resource) not in UNUSED_ALLOWED
        for verb in verbs - used.get((group, resource), set())
    )
    assert not unused, "granted in deploy/rbac.yaml but never called by adapter/: " + "; ".join(
        unused
    )

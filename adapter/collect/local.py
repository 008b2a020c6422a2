"""A ClusterSnapshot from YAML files, for running with no cluster (`run --local DIR`).

Reads every `*.yaml` / `*.yml` file of a folder (or one file), multi-document and
`kind: List` allowed, and picks VariantAutoscalings, the two ConfigMaps (in the config
namespace, or with no namespace), Nodes and Deployments by `kind`. Other kinds are
ignored. A file that is not valid YAML (or not UTF-8) is an error naming the file and
the parser's line, column and problem: a local run should fail loudly rather than
quietly optimize a partial system. A document that parses but is not a Kubernetes
object (no `kind`: a plain mapping, a list, a string) is skipped with a warning naming
the file and the document, so a stray file is seen for what it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from adapter.defaults import DEFAULT_SAMPLES as DEFAULT_SAMPLES
from adapter.model.kube import (
    ACCELERATOR_COSTS_CONFIGMAP,
    DEFAULT_CONFIG_NAMESPACE,
    GROUP,
    KIND,
    SERVICE_CLASSES_CONFIGMAP,
    ClusterSnapshot,
    ObjectKey,
    slim_object,
)

log = logging.getLogger(__name__)


class LocalSourceError(ValueError):
    """A file under the local folder cannot be read as YAML."""


def _yaml_problem(file: Path, error: yaml.YAMLError) -> str:
    """`FILE: not valid YAML at line L, column C: problem (context at ...)`.

    PyYAML's own text names the stream `<unicode string>` (it parsed a string) and
    spreads over several lines with snippets; the file and the position are what help.
    """
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f"{file}: not valid YAML: {error}"
    mark = error.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    context = ""
    if error.context:
        context = f" ({error.context}"
        if error.context_mark is not None:
            context_at = error.context_mark
            context += f" at line {context_at.line + 1}, column {context_at.column + 1}"
        context += ")"
    return f"{file}: not valid YAML at {where}: {error.problem or 'unreadable'}{context}"


def _kubernetes_object(file: Path, where: str, doc: object) -> Mapping[str, Any] | None:
    """`doc` if it looks like a Kubernetes object (a mapping with a `kind`), else None,
    said with the file and the document: valid YAML that is something else (a plain
    mapping, a list, a string) is a stray or broken file, not an object without a name."""
    if doc is None:  # an empty document: `---` twice, a trailing separator
        return None
    if not isinstance(doc, Mapping):
        log.warning(
            "%s: %s is not a Kubernetes object (YAML %s, not a mapping); ignored",
            file,
            where,
            type(doc).__name__,
        )
        return None
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        log.warning(
            "%s: %s is not a Kubernetes object (%s; keys: %s); ignored",
            file,
            where,
            _kind_problem(doc),
            ", ".join(sorted(str(key) for key in doc)[:5]) or "none",
        )
        return None
    return doc


def _kind_problem(doc: Mapping[str, Any]) -> str:
    if "kind" not in doc:
        return "no kind"
    kind = doc["kind"]
    return "an empty kind" if kind in (None, "") else f"kind {kind!r} is not a name"


def _documents(path: Path) -> Iterator[tuple[Path, Mapping[str, Any]]]:
    files = (
        sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if path.is_dir()
        else [path]
    )
    for file in files:
        try:
            docs = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
        except OSError as error:
            raise LocalSourceError(f"{file}: cannot read: {error.strerror or error}") from error
        except UnicodeDecodeError as error:
            raise LocalSourceError(
                f"{file}: not UTF-8 text (byte {error.start}: {error.reason})"
            ) from error
        except yaml.YAMLError as error:
            raise LocalSourceError(_yaml_problem(file, error)) from error
        for number, raw in enumerate(docs, start=1):
            doc = _kubernetes_object(file, f"document {number}", raw)
            if doc is None:
                continue
            if str(doc["kind"]).endswith("List"):
                items = doc.get("items") or []
                if not isinstance(items, list):
                    log.warning(
                        "%s: document %d: a %s whose items are not a list; ignored",
                        file,
                        number,
                        doc["kind"],
                    )
                    continue
                for index, item in enumerate(items):
                    found = _kubernetes_object(file, f"document {number} item {index}", item)
                    if found is not None:
                        yield file, found
            else:
                yield file, doc


def load_snapshot(
    path: str | Path = DEFAULT_SAMPLES, config_namespace: str = DEFAULT_CONFIG_NAMESPACE
) -> ClusterSnapshot:
    """Build the snapshot the Kubernetes cache would give for these objects."""
    root = Path(path)
    if not root.exists():
        raise LocalSourceError(f"{root}: no such file or directory")
    vas: dict[ObjectKey, Mapping[str, Any]] = {}
    config_maps: dict[str, Mapping[str, Any]] = {}
    nodes: dict[str, Mapping[str, Any]] = {}
    deployments: dict[ObjectKey, Mapping[str, Any]] = {}
    for file, doc in _documents(root):
        kind = doc.get("kind")
        raw_meta = doc.get("metadata")
        meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
        name = str(meta.get("name") or "")
        namespace = str(meta.get("namespace") or "")
        if not name:
            log.warning("%s: a %s without metadata.name is ignored", file, kind)
            continue
        api_version = str(doc.get("apiVersion") or "")
        if kind == KIND and api_version.startswith(f"{GROUP}/"):
            key = (namespace or "default", name)
            vas[key] = slim_object(KIND, _with_namespace(doc, key[0]))
        elif kind == "Deployment":
            key = (namespace or "default", name)
            deployments[key] = slim_object("Deployment", _with_namespace(doc, key[0]))
        elif kind == "Node":
            nodes[name] = slim_object("Node", doc)
        elif kind == "ConfigMap" and name in (
            ACCELERATOR_COSTS_CONFIGMAP,
            SERVICE_CLASSES_CONFIGMAP,
        ):
            if namespace in ("", config_namespace):
                config_maps[name] = slim_object("ConfigMap", doc)
            else:
                log.info(
                    "%s: ConfigMap %s/%s is not in %s; ignored",
                    file,
                    namespace,
                    name,
                    config_namespace,
                )
        else:
            log.debug("%s: %s %s ignored", file, kind, name)
    return ClusterSnapshot(
        variant_autoscalings=MappingProxyType(dict(sorted(vas.items()))),
        config_maps=MappingProxyType(dict(sorted(config_maps.items()))),
        nodes=MappingProxyType(dict(sorted(nodes.items()))),
        deployments=MappingProxyType(dict(sorted(deployments.items()))),
        config_namespace=config_namespace,
    )


def _with_namespace(doc: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """kubectl puts objects without a namespace into `default`; do the same."""
    meta = dict(doc.get("metadata") or {})
    meta["namespace"] = namespace
    return {**doc, "metadata": meta}


Fingerprint = tuple[tuple[str, int, int], ...]


class LocalFolder:
    """The snapshot of a folder of YAML, reloaded when a file changes.

    Lets a local run follow edits (a Deployment's replicas set by a test harness or by
    hand) the way the watch cache follows the API server. A reload that fails keeps the
    last good snapshot and logs the file at fault: one bad save must not make every
    variant disappear. The first load raises instead, so a bad start fails loudly.
    """

    def __init__(self, path: str | Path, config_namespace: str = DEFAULT_CONFIG_NAMESPACE) -> None:
        self.path = Path(path)
        self.config_namespace = config_namespace
        self.reload_errors_total = 0
        self._fingerprint = self._stat()
        self._snapshot = load_snapshot(self.path, config_namespace)

    def _stat(self) -> Fingerprint:
        try:
            files = (
                sorted(p for p in self.path.iterdir() if p.suffix in (".yaml", ".yml"))
                if self.path.is_dir()
                else [self.path]
            )
            stats = [(str(p), p.stat()) for p in files]
        except OSError:
            return ()  # vanished: the next load reports it
        return tuple((name, st.st_mtime_ns, st.st_size) for name, st in stats)

    def snapshot(self) -> ClusterSnapshot:
        fingerprint = self._stat()
        if fingerprint != self._fingerprint:
            try:
                self._snapshot = load_snapshot(self.path, self.config_namespace)
            except LocalSourceError as error:
                self.reload_errors_total += 1
                log.error("keeping the previous objects: %s", error)
            else:
                log.info("%s changed: objects reloaded", self.path)
            self._fingerprint = fingerprint
        return self._snapshot

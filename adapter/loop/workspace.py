"""The files the adapter reads in the closed loop: the objects folder and the targets file.

The adapter runs as in a cluster without Prometheus (`run --local DIR --scrape-file F`),
and both inputs are rewritten as the loop's "cluster" changes: the Deployment's
replicas when KEDA scales, the scrape targets when pods come and go. Writes are atomic
(temporary file, then rename) so the adapter never reads half a file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from adapter.collect.local import DEFAULT_SAMPLES

DEPLOYMENT_FILE = "deployment.yaml"
VA_FILE = "vllm-va.yaml"
SERVICE_CLASSES_FILE = "configmap-serviceclass.yaml"


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


class Workspace:
    """A copy of deploy/samples scaled by `time_factor`, plus the targets file."""

    def __init__(self, root: Path, *, time_factor: float = 1.0) -> None:
        self.root = root
        self.objects = root / "objects"
        self.targets_file = root / "targets.json"
        self.objects.mkdir(parents=True, exist_ok=True)
        for sample in DEFAULT_SAMPLES.iterdir():
            if sample.suffix in (".yaml", ".yml"):
                shutil.copy(sample, self.objects / sample.name)
        self._deployment: dict[str, Any] = yaml.safe_load(
            (self.objects / DEPLOYMENT_FILE).read_text(encoding="utf-8")
        )
        va = yaml.safe_load((self.objects / VA_FILE).read_text(encoding="utf-8"))
        self.namespace: str = va["metadata"]["namespace"]
        self.va_name: str = va["metadata"]["name"]
        self.model: str = va["spec"]["modelID"]
        accelerator = va["spec"]["modelProfile"]["accelerators"][0]
        self.alpha_ms = float(accelerator["alpha"]) * time_factor
        self.beta_ms = float(accelerator["beta"]) * time_factor
        self.max_batch_size = int(accelerator["maxBatchSize"])
        accelerator["alpha"] = f"{self.alpha_ms:g}"
        accelerator["beta"] = f"{self.beta_ms:g}"
        _write_atomically(self.objects / VA_FILE, yaml.safe_dump(va, sort_keys=False))
        self.slo_itl_ms, self.slo_ttft_ms = self._scale_slos(time_factor)
        self.write_targets(())

    def _scale_slos(self, factor: float) -> tuple[float, float]:
        """Scale every SLO of the service classes; return the model's (ITL, TTFT) in ms."""
        path = self.objects / SERVICE_CLASSES_FILE
        config_map = yaml.safe_load(path.read_text(encoding="utf-8"))
        found: tuple[float, float] | None = None
        for key, text in config_map["data"].items():
            service_class = yaml.safe_load(text)
            for entry in service_class.get("data", []):
                for slo in ("slo-tpot", "slo-ttft"):
                    if slo in entry:
                        entry[slo] = float(entry[slo]) * factor
                if entry.get("model") == self.model and found is None:
                    found = (float(entry["slo-tpot"]), float(entry["slo-ttft"]))
            config_map["data"][key] = yaml.safe_dump(service_class, sort_keys=False)
        if found is None:
            raise ValueError(f"{path}: no service class names model {self.model}")
        _write_atomically(path, yaml.safe_dump(config_map, sort_keys=False))
        return found

    def write_replicas(self, replicas: int, ready: int | None = None) -> None:
        """What the HPA does to the Deployment, spec.replicas, and what the kubelet
        reports of its pods, status.readyReplicas: the emulator's replicas that serve
        (`ready`; default all). A replica still starting is not ready: the adapter
        learns its profile per ready replica."""
        self._deployment["spec"]["replicas"] = replicas
        self._deployment["status"] = {
            "replicas": replicas,
            "readyReplicas": replicas if ready is None else ready,
        }
        _write_atomically(
            self.objects / DEPLOYMENT_FILE, yaml.safe_dump(self._deployment, sort_keys=False)
        )

    def write_targets(self, urls: Iterable[str]) -> None:
        """The pods' metrics endpoints, in Prometheus file_sd format."""
        addresses = [url.split("://", 1)[-1].split("/", 1)[0] for url in urls]
        groups: list[Mapping[str, Any]] = (
            [{"targets": addresses, "labels": {"namespace": self.namespace}}] if addresses else []
        )
        _write_atomically(self.targets_file, json.dumps(groups))

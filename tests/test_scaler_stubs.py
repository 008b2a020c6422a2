"""The committed stubs in adapter/_proto are exactly what proto/generate.py produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("externalscaler_pb2.py", "externalscaler_pb2.pyi", "externalscaler_pb2_grpc.py")


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / name).read_text()
        committed = (ROOT / "adapter" / "_proto" / name).read_text()
        assert committed == fresh, f"adapter/_proto/{name} is stale: run python proto/generate.py"


def test_generated_grpc_module_imports_its_messages_relatively() -> None:
    source = (ROOT / "adapter" / "_proto" / "externalscaler_pb2_grpc.py").read_text()
    assert "from . import externalscaler_pb2 as externalscaler__pb2\n" in source
    assert "\nimport externalscaler_pb2" not in source

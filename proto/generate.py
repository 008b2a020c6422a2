"""Regenerate the committed Python stubs for proto/externalscaler.proto.

Usage: python proto/generate.py [--out DIR]   (default DIR: adapter/_proto)

Runs `python -m grpc_tools.protoc -I proto --python_out --pyi_out --grpc_python_out`
and then post-processes the output in two small steps:
1. protoc's gRPC plugin writes a top-level `import externalscaler_pb2 as externalscaler__pb2`,
   which only works when the output directory is on sys.path; it is rewritten to the
   package-relative `from . import externalscaler_pb2 as externalscaler__pb2`.
2. `# mypy: ignore-errors` is put on the first line of `externalscaler_pb2_grpc.py` and
   `externalscaler_pb2.pyi`: mypy follows imports into them from strictly checked code
   and the generated code is neither annotated nor strict-clean.
Nothing else is changed.

The generated code hard-checks the runtime versions (`GRPC_GENERATED_VERSION` in the
`_grpc` module, `ValidateProtobufRuntimeVersion` in `_pb2`), so regenerating with a newer
grpcio-tools raises the minimum grpcio/protobuf the package needs (see pyproject.toml).
tests/test_scaler_stubs.py regenerates into a temporary directory and fails on any drift.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO = "externalscaler.proto"
DEFAULT_OUT = ROOT / "adapter" / "_proto"
GENERATED = ("externalscaler_pb2.py", "externalscaler_pb2.pyi", "externalscaler_pb2_grpc.py")

TOP_LEVEL_IMPORT = "import externalscaler_pb2 as externalscaler__pb2\n"
RELATIVE_IMPORT = "from . import externalscaler_pb2 as externalscaler__pb2\n"


def make_relative(source: str) -> str:
    """Rewrite the generated top-level import of the messages module (exactly once)."""
    count = source.count(TOP_LEVEL_IMPORT)
    if count != 1:
        raise RuntimeError(f"expected one {TOP_LEVEL_IMPORT.strip()!r} line, found {count}")
    return source.replace(TOP_LEVEL_IMPORT, RELATIVE_IMPORT)


MYPY_IGNORE = "# mypy: ignore-errors\n"


def generate(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_DIR / PROTO),
    ]
    subprocess.run(command, check=True)
    grpc_module = out_dir / "externalscaler_pb2_grpc.py"
    grpc_module.write_text(MYPY_IGNORE + make_relative(grpc_module.read_text()))
    stub = out_dir / "externalscaler_pb2.pyi"
    stub.write_text(MYPY_IGNORE + stub.read_text())
    return [out_dir / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

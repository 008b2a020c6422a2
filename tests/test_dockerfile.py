"""The Dockerfile, checked by parsing it (no Docker engine here)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adapter.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|cc|make|build-essential|python3?-dev|libc6?-dev|pip\s+wheel|"
    r"python\s+-m\s+build|apt-get\s+install|apk\s+add)\b"
)


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, args = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            image = re.sub(
                r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), words[0]
            )
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {instruction.line}: only ARG before FROM"
            key, _, value = instruction.args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_parser_reads_continuations_and_stages() -> None:
    text = (
        "# c\nARG IMG=python:3.11.9-slim\nFROM ${IMG} AS b\nRUN a \\\n  # skipped\n  && b\n"
        "FROM $IMG\nUSER 1:1\n"
    )
    args, parsed = parse_dockerfile(text)
    assert args == {"IMG": "python:3.11.9-slim"}
    assert [(s.image, s.name) for s in parsed] == [
        ("python:3.11.9-slim", "b"),
        ("python:3.11.9-slim", None),
    ]
    assert parsed[0].instructions[0].args == "a  && b"


def test_is_multi_stage(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert stages[0].name, "the builder stage is named so the final stage can use it"


def test_base_images_are_pinned(stages: list[Stage]) -> None:
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in names:
            continue
        assert "$" not in stage.image, f"unresolved {stage.image}"
        repository, _, tag = stage.image.partition("@")[0].partition(":")
        assert tag and tag != "latest", f"{stage.image}: give an explicit tag"
        # python:3.11.N-slim-bookworm: patch release and Debian release both fixed
        assert repository in ("python", "docker.io/library/python")
        assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), stage.image
        digest = stage.image.partition("@")[2]
        assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)


def test_builder_builds_a_wheel(stages: list[Stage]) -> None:
    builder = stages[0]
    runs = " ".join(i.args for i in builder.all("RUN"))
    assert re.search(r"pip\s+wheel|python\s+-m\s+build", runs)


def test_final_stage_runs_as_numeric_non_root(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage sets no USER"
    user, _, group = users[-1].args.partition(":")
    assert user.isdigit() and int(user) > 0, "numeric UID, so runAsNonRoot can check it"
    assert not group or (group.isdigit() and int(group) > 0)
    # nothing runs as root after USER
    last_user_line = users[-1].line
    assert all(i.line < last_user_line for i in final.all("RUN"))


def test_final_stage_has_no_build_tools_or_pip_cache(final: Stage) -> None:
    for instruction in final.all("RUN"):
        assert not BUILD_TOOLS.search(instruction.args), instruction.args
        if re.search(r"pip\s+install", instruction.args):
            assert "--no-cache-dir" in instruction.args
            # only the builder's wheels: nothing fetched or compiled here
            assert "--no-index" in instruction.args
    for instruction in final.all("COPY") + final.all("ADD"):
        assert not re.search(r"\b(src|adapter|pyproject\.toml)\b", instruction.args), (
            "sources belong in the builder stage"
        )


def test_entrypoint_is_the_run_command(final: Stage) -> None:
    (entrypoint,) = final.all("ENTRYPOINT")
    command = json.loads(entrypoint.args)  # exec form: signals reach the adapter
    assert command == ["wva-adapter", "run"]
    assert not final.all("CMD")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert scripts[command[0]] == "adapter.cli:main"
    assert build_parser().parse_args([command[1]]).command == "run"


def test_exposes_grpc_and_metrics_ports(final: Stage) -> None:
    ports = {p.split("/")[0] for i in final.all("EXPOSE") for p in shlex.split(i.args)}
    assert ports == {"9090", "8080"}


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    result = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            matched = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            matched = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if matched:
            result = not negate
    return result


def test_dockerignore_keeps_the_build_context_small(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_x.py",
        "bench/x.py",
        "adapter/__pycache__/cli.cpython-311.pyc",
    ):
        assert _ignored(path, patterns), path
    # everything the builder copies from the context is in it
    for instruction in stages[0].all("COPY"):
        if "--from" in instruction.args:
            continue
        *sources, _ = shlex.split(instruction.args)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
    assert not _ignored("adapter/cli.py", patterns)

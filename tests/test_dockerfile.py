"""The image: the Dockerfile lints clean, runs as a numeric non-root user, and builds.

No Docker engine runs here, so the build stage is exercised as written: its COPY sources are
copied to a temporary /src, and its RUN command runs through `sh -c` on this machine with the
VENV and WHEELS args pointed at temporary directories. The daemon installed that way must
start: `--version` and `check-config` with the config file the runtime stage ships.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamstop import __version__

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
BASE_IMAGE = "python:3.11-slim"
TOKEN = "dockerfile-test-T0ken"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword in upper case, arguments as written."""

    keyword: str
    args: str


def parse_stages(text: str) -> list[list[Instruction]]:
    """The Dockerfile's instructions grouped by stage, each stage starting with its FROM."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def args_of(stage: list[Instruction], keyword: str) -> list[str]:
    """The arguments of every instruction of one kind in a stage."""
    return [instruction.args for instruction in stage if instruction.keyword == keyword]


def assignments(stage: list[Instruction], keyword: str) -> dict[str, str]:
    """KEY=value pairs declared by the stage's ENV or ARG instructions (quotes removed)."""
    pairs: dict[str, str] = {}
    for args in args_of(stage, keyword):
        for key, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)', args):
            pairs[key] = value.strip('"')
    return pairs


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_stages(DOCKERFILE.read_text())


def test_hadolint_reports_no_errors_or_warnings() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_both_stages_build_on_the_slim_python_image(stages: list[list[Instruction]]) -> None:
    assert len(stages) == 2
    assert [stage[0].args.split()[0] for stage in stages] == [BASE_IMAGE, BASE_IMAGE]


def test_runtime_runs_as_a_numeric_non_root_user(stages: list[list[Instruction]]) -> None:
    users = args_of(stages[-1], "USER")
    assert users, "the runtime stage must set USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"USER {users[-1]} must be numeric so runAsNonRoot can verify it"
    assert int(match.group(1)) != 0


def test_entrypoint_and_cmd_are_exec_form(stages: list[list[Instruction]]) -> None:
    runtime = stages[-1]
    assert json.loads(args_of(runtime, "ENTRYPOINT")[-1]) == ["streamstop"]
    assert json.loads(args_of(runtime, "CMD")[-1]) == ["run"]
    assert args_of(runtime, "EXPOSE") == ["9090"]


def test_runtime_ships_the_default_config_where_streamstop_config_points(
    stages: list[list[Instruction]],
) -> None:
    runtime = stages[-1]
    config_path = assignments(runtime, "ENV")["STREAMSTOP_CONFIG"]
    assert config_path == "/etc/streamstop/streamstop.toml"
    assert f"config/streamstop.toml {config_path}" in args_of(runtime, "COPY")


def test_runtime_copies_the_virtualenv_the_build_stage_made(
    stages: list[list[Instruction]],
) -> None:
    venv = assignments(stages[0], "ARG")["VENV"]
    assert f"--from=build {venv} {venv}" in args_of(stages[-1], "COPY")
    assert assignments(stages[-1], "ENV")["PATH"].startswith(f"{venv}/bin:")


def test_no_secret_is_baked_into_the_image(stages: list[list[Instruction]]) -> None:
    for stage in stages:
        names = set(assignments(stage, "ENV")) | set(assignments(stage, "ARG"))
        assert not [name for name in names if re.search("TOKEN|PASSWORD|SECRET", name)]


def test_build_context_holds_only_what_the_dockerfile_copies(
    stages: list[list[Instruction]],
) -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", ".dockerignore must start by excluding everything"
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    sources = {
        source.rstrip("/")
        for stage in stages
        for args in args_of(stage, "COPY")
        if not args.startswith("--from")
        for source in args.split()[:-1]
    }
    assert sources <= included


def _stage_sources_into(stage: list[Instruction], src: Path) -> None:
    """Do the stage's COPY instructions, with the container's WORKDIR mapped to `src`."""
    for args in args_of(stage, "COPY"):
        *sources, dest = args.split()
        # Docker's rule: several sources, or a dest ending in "/", means "into this directory".
        into_dir = len(sources) > 1 or dest.endswith("/")
        for source in sources:
            origin = REPO / source
            if origin.is_dir():
                shutil.copytree(
                    origin, src / dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
                continue
            target = src / dest / origin.name if into_dir else src / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)


@pytest.mark.slow
def test_build_stage_commands_install_a_daemon_that_starts(
    stages: list[list[Instruction]], tmp_path: Path
) -> None:
    build = stages[0]
    assert args_of(build, "WORKDIR") == ["/src"]
    src = tmp_path / "src"
    src.mkdir()
    _stage_sources_into(build, src)
    venv, wheels = tmp_path / "venv", tmp_path / "wheels"
    # `pip` and `python` resolve as in the image: the interpreter running the tests.
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        **assignments(build, "ENV"),
        "VENV": str(venv),
        "WHEELS": str(wheels),
    }
    for command in args_of(build, "RUN"):
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=480,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    streamstop = venv / "bin" / "streamstop"
    version = subprocess.run(
        [str(streamstop), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert version.stdout.strip() == f"streamstop {__version__}"

    run_env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STREAMSTOP_CONFIG": str(REPO / "config" / "streamstop.toml"),
        "STREAMSTOP_API__TOKEN": TOKEN,
    }
    checked = subprocess.run(
        ["streamstop", "check-config"],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    effective = json.loads(checked.stdout)
    assert effective["api"]["token"] == "***"
    assert TOKEN not in checked.stdout + checked.stderr

"""The image: the Dockerfile lints clean, runs as a numeric non-root user, and builds.

No Docker engine runs here, so the build stage is exercised as written: its COPY sources are
copied to a temporary /src, and its RUN command runs through `sh -c` on this machine with the
VENV, BUILD_VENV and WHEELS args pointed at temporary directories. The daemon installed that
way must start (`--version` and `check-config` with the config file the runtime stage ships)
and hold exactly the locked packages, its wheel built by the locked build backend.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from locked import REQUIREMENTS, locked_pins
from packaging.utils import canonicalize_name

from streamstop import __version__

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
# A tag for development builds, or the same tag pinned by digest (the release step's form).
BASE_IMAGE = re.compile(r"python:3\.11-slim(@sha256:[0-9a-f]{64})?")
TOKEN = "dockerfile-test-T0ken"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword in upper case, arguments as written."""

    keyword: str
    args: str


def parse_stages(text: str) -> list[list[Instruction]]:
    """The Dockerfile's instructions grouped by stage, each stage starting with its FROM.

    The ARGs before the first FROM (global build args) form a stage of their own, first.
    """
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
    stages: list[list[Instruction]] = [[]]
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
    """KEY=value pairs declared by the stage's ENV, ARG or LABEL instructions (unquoted)."""
    pairs: dict[str, str] = {}
    for args in args_of(stage, keyword):
        for key, value in re.findall(r'([A-Za-z_][A-Za-z0-9_.-]*)=("[^"]*"|\S*)', args):
            pairs[key] = value.strip('"')
    return pairs


@pytest.fixture(scope="module")
def global_args() -> dict[str, str]:
    return assignments(parse_stages(DOCKERFILE.read_text())[0], "ARG")


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_stages(DOCKERFILE.read_text())[1:]


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


def test_both_stages_build_on_the_slim_python_image_named_once(
    global_args: dict[str, str], stages: list[list[Instruction]]
) -> None:
    assert BASE_IMAGE.fullmatch(global_args["BASE_IMAGE"]), global_args["BASE_IMAGE"]
    assert len(stages) == 2
    assert [stage[0].args.split()[0] for stage in stages] == ["${BASE_IMAGE}"] * 2


def test_runtime_labels_the_base_it_was_built_on(stages: list[list[Instruction]]) -> None:
    runtime = stages[-1]
    # Without re-declaring the global ARG inside the stage, the label would be empty.
    assert "BASE_IMAGE" in args_of(runtime, "ARG")
    labels = assignments(runtime, "LABEL")
    assert labels["org.opencontainers.image.base.name"] == "${BASE_IMAGE}"


def _pip_commands(stage: list[Instruction]) -> list[list[str]]:
    """Every `pip` invocation of the stage's RUN commands, as argument lists."""
    commands = [shlex.split(part) for args in args_of(stage, "RUN") for part in args.split("&&")]
    return [argv for argv in commands if argv and Path(argv[0]).name == "pip"]


def test_every_package_comes_hash_checked_from_the_lock_exports(
    stages: list[list[Instruction]],
) -> None:
    pips = _pip_commands(stages[0])
    installs = [argv for argv in pips if argv[1] == "install"]
    assert installs, "the build stage installs nothing with pip?"
    for argv in installs:
        if "--no-index" in argv:
            # Only our own wheel, built just before, may come from outside the lock.
            assert argv[-1].endswith("streamstop-*.whl"), argv
            assert "--no-deps" in argv, argv
            continue
        assert "-r" in argv, f"not from a locked requirements file: {argv}"
        requirements = argv[argv.index("-r") + 1]
        assert requirements.startswith("requirements/"), argv
        assert {"--require-hashes", "--only-binary"} <= set(argv), argv
        assert (REPO / requirements).is_file()
    wheels = [argv for argv in pips if argv[1] == "wheel"]
    assert wheels, "the build stage builds no wheel?"
    assert all("--no-build-isolation" in argv for argv in wheels), wheels


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


def installed_packages(venv: Path) -> set[tuple[str, str]]:
    """(name, version) of every package in `venv` but the installer itself."""
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {
        (canonicalize_name(package["name"]), package["version"])
        for package in json.loads(listed.stdout)
        if package["name"] not in {"pip", "setuptools"}
    }


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
    # `python` resolves as in the image: the interpreter running the tests.
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        **assignments(build, "ENV"),
        "VENV": str(venv),
        "BUILD_VENV": str(tmp_path / "build-venv"),
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
    assert installed_packages(venv) == locked_pins(REQUIREMENTS / "runtime.txt") | {
        ("streamstop", __version__)
    }
    # The wheel says which backend built it: the locked one, not the newest on PyPI.
    (wheel,) = wheels.glob("streamstop-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        generator = re.search(
            r"^Generator: (\S+) (\S+)$",
            archive.read(f"streamstop-{__version__}.dist-info/WHEEL").decode(),
            re.MULTILINE,
        )
    assert generator
    assert (generator.group(1), generator.group(2)) in locked_pins(REQUIREMENTS / "build.txt")

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


FAKE_DOCKER = """#!/bin/sh
# Records each call; answers the digest lookup with $FAKE_DIGEST.
printf '%s\\n' "$*" >>"$DOCKER_CALLS"
if [ "$1" = buildx ]; then printf '%s\\n' "$FAKE_DIGEST"; fi
"""


def release(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, list[str]]:
    """Run scripts/release-image.sh with a `docker` that records its calls instead."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    calls = tmp_path / "docker-calls"
    done = subprocess.run(
        [str(REPO / "scripts" / "release-image.sh"), *args],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "DOCKER_CALLS": str(calls), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return done.returncode, done.stderr, calls.read_text().splitlines() if calls.exists() else []


def test_release_builds_on_the_base_tag_pinned_by_the_digest_it_looked_up(
    global_args: dict[str, str], tmp_path: Path
) -> None:
    digest = "sha256:" + "ab" * 32
    status, stderr, calls = release(tmp_path, "example/streamstop:1.0", FAKE_DIGEST=digest)
    assert status == 0, stderr
    base = global_args["BASE_IMAGE"].split("@")[0]
    lookup, build = calls
    assert lookup.startswith(f"buildx imagetools inspect {base} ")
    assert build == (
        f"build --build-arg BASE_IMAGE={base}@{digest} --tag example/streamstop:1.0 {REPO}"
    )


@pytest.mark.parametrize(
    ("answer", "env"),
    [
        ("python:3.11-slim", {}),  # a tag is not a digest
        ("", {"BASE_DIGEST": "sha256:abc"}),  # too short
    ],
)
def test_release_refuses_to_build_without_a_digest(
    tmp_path: Path, answer: str, env: dict[str, str]
) -> None:
    status, stderr, calls = release(tmp_path, "example/streamstop:1.0", FAKE_DIGEST=answer, **env)
    assert status == 1
    assert "not a sha256 digest" in stderr
    assert not [call for call in calls if call.startswith("build ")]

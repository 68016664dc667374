"""The locked supply chain: the lock matches pyproject.toml, `make lock` re-locks, `make sbom`
describes the locked runtime.

The lock checks run `scripts/lock.sh` on a copy of the lock's inputs in a temporary
directory, so a test can break the copy without touching the repository. uv is the pinned one
the Makefile installs in .tools.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from locked import REQUIREMENTS, locked_pins
from packaging.utils import canonicalize_name

from streamstop import __version__

REPO = Path(__file__).resolve().parent.parent
UV = REPO / ".tools" / "bin" / "uv"
# What `uv lock` reads (it builds the project's metadata: the version is dynamic, in
# __init__.py, and hatchling wants the readme) and the scripts under test.
LOCK_INPUTS = (
    "pyproject.toml",
    "README.md",
    "uv.lock",
    "requirements",
    "streamstop/__init__.py",
    "scripts/lock.sh",
    "scripts/lock_diff.py",
)


def run_lock_sh(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(project / "scripts" / "lock.sh"), *args],
        env={**os.environ, "UV": str(UV)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what the lock is made from and checked against."""
    for name in LOCK_INPUTS:
        source, target = REPO / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return tmp_path


def add_dev_dependency(project: Path, requirement: str) -> None:
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    anchor = "dev = [\n"
    assert anchor in text
    pyproject.write_text(text.replace(anchor, f'{anchor}    "{requirement}",\n', 1))


def locked_versions(lock: Path) -> dict[str, str]:
    return {p["name"]: p.get("version", "") for p in tomllib.loads(lock.read_text())["package"]}


def test_the_repository_lock_matches_pyproject(project: Path) -> None:
    done = run_lock_sh(project, "check")
    assert done.returncode == 0, done.stderr


def test_a_dependency_added_without_relocking_fails_the_check_by_name(project: Path) -> None:
    add_dev_dependency(project, "multidict>=6")
    done = run_lock_sh(project, "check")
    assert done.returncode == 1
    assert "multidict (extra dev): in pyproject.toml, not in uv.lock" in done.stderr
    assert "run `make lock`" in done.stderr


def test_a_hand_edited_export_fails_the_check(project: Path) -> None:
    runtime = project / "requirements" / "runtime.txt"
    text = runtime.read_text()
    (orjson,) = [line for line in text.splitlines() if line.startswith("orjson==")]
    runtime.write_text(text.replace(orjson, "orjson==3.9.0 \\"))
    done = run_lock_sh(project, "check")
    assert done.returncode == 1
    assert "requirements/runtime.txt not what uv.lock says" in done.stderr


def test_relocking_adds_the_new_dependency_and_keeps_every_other_pin(project: Path) -> None:
    before = locked_versions(project / "uv.lock")
    # Already locked as a dependency of a dependency: re-locking must not move its version.
    assert "multidict" in before
    add_dev_dependency(project, "multidict>=6")
    updated = run_lock_sh(project, "update")
    assert updated.returncode == 0, updated.stderr
    assert locked_versions(project / "uv.lock") == before
    lock = tomllib.loads((project / "uv.lock").read_text())
    (root,) = [p for p in lock["package"] if p["name"] == "streamstop"]
    assert {"name": "multidict", "marker": "extra == 'dev'", "specifier": ">=6"} in root[
        "metadata"
    ]["requires-dist"]
    checked = run_lock_sh(project, "check")
    assert checked.returncode == 0, checked.stderr


def test_the_build_group_repeats_the_build_system_requirements() -> None:
    # The image builds its wheel from the `build` group's export, without build isolation:
    # a requirement added to [build-system] alone would be missing there.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["dependency-groups"]["build"] == pyproject["build-system"]["requires"]


def test_sbom_is_valid_cyclonedx_listing_every_locked_runtime_package(tmp_path: Path) -> None:
    out = tmp_path / "sbom.cdx.json"
    done = subprocess.run(
        [str(REPO / "scripts" / "sbom.sh"), str(out)],
        env={**os.environ, "UV": str(UV)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    sbom = json.loads(text)
    assert sbom["bomFormat"] == "CycloneDX"
    root = sbom["metadata"]["component"]
    assert (root["name"], root["version"], root["type"]) == (
        "streamstop",
        __version__,
        "application",
    )
    components = {(canonicalize_name(c["name"]), c["version"]) for c in sbom["components"]}
    assert components == locked_pins(REQUIREMENTS / "runtime.txt")
    for component in sbom["components"]:
        assert (
            component["purl"]
            == f"pkg:pypi/{canonicalize_name(component['name'])}@{component['version']}"
        )
    # The root depends on what pyproject.toml asks for: the graph starts where the image does.
    (root_deps,) = [d for d in sbom["dependencies"] if d["ref"] == root["bom-ref"]]
    assert {ref.split("==")[0].lower().replace("_", "-") for ref in root_deps["dependsOn"]} >= {
        "aiokafka",
        "aiohttp",
        "pydantic",
    }

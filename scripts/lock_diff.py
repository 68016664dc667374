"""Name the requirements on which pyproject.toml and uv.lock disagree, for `lock.sh check`.

uv decides whether the lock is stale; this only explains it in a line per dependency.
uv.lock records the requirements it was locked from (the project's `[package.metadata]`),
so comparing them with pyproject.toml needs neither uv nor the network.
Usage: python3 scripts/lock_diff.py [PROJECT_DIR]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

# (where, name): where is "dependencies", "extra NAME" or "group NAME".
Requirement = tuple[str, str]


def normalized(name: str) -> str:
    """PEP 503 name normalization, as uv.lock writes names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_of(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return normalized(match.group(1)) if match else requirement


def declared(pyproject: dict[str, Any]) -> set[Requirement]:
    """The requirements pyproject.toml declares."""
    project = pyproject.get("project", {})
    found = {("dependencies", _name_of(r)) for r in project.get("dependencies", [])}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        found |= {(f"extra {extra}", _name_of(r)) for r in requirements}
    for group, requirements in pyproject.get("dependency-groups", {}).items():
        # Skips `{include-group = ...}` tables: the included group is compared on its own.
        found |= {(f"group {group}", _name_of(r)) for r in requirements if isinstance(r, str)}
    return found


def locked(lock: dict[str, Any], project_name: str) -> set[Requirement]:
    """The requirements uv.lock was resolved from."""
    root = next((p for p in lock.get("package", []) if p["name"] == normalized(project_name)), None)
    if root is None:
        return set()
    metadata = root.get("metadata", {})
    found: set[Requirement] = set()
    for entry in metadata.get("requires-dist", []):
        extra = re.search(r"extra == '([^']+)'", entry.get("marker", ""))
        found.add((f"extra {extra.group(1)}" if extra else "dependencies", entry["name"]))
    for group, entries in metadata.get("requires-dev", {}).items():
        found |= {(f"group {group}", entry["name"]) for entry in entries}
    return found


def explain(project_dir: Path) -> list[str]:
    """One line per requirement found on one side only; a generic line if names all match."""
    pyproject = tomllib.loads((project_dir / "pyproject.toml").read_text())
    lock_file = project_dir / "uv.lock"
    if not lock_file.exists():
        return ["there is no uv.lock"]
    try:
        lock = tomllib.loads(lock_file.read_text())
    except tomllib.TOMLDecodeError as e:
        return [f"uv.lock is not valid TOML (a merge conflict left in it?): {e}"]
    ours = declared(pyproject)
    theirs = locked(lock, pyproject["project"]["name"])
    lines = [
        f"{name} ({where}): in pyproject.toml, not in uv.lock"
        for where, name in sorted(ours - theirs, key=lambda r: (r[1], r[0]))
    ]
    lines += [
        f"{name} ({where}): in uv.lock, not in pyproject.toml"
        for where, name in sorted(theirs - ours, key=lambda r: (r[1], r[0]))
    ]
    return lines or ["a version range, marker or the Python requirement changed"]


def main() -> None:
    """Print the explanation lines for the project in argv[1] (default: the current dir)."""
    project_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    for line in explain(project_dir):
        print(f"  {line}")


if __name__ == "__main__":
    main()

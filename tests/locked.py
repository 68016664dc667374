"""What the lock pins, read from the hashed requirements files exported from uv.lock."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements"


def locked_pins(requirements: Path) -> set[tuple[str, str]]:
    """(name, version) of each `name==version` line of an exported requirements file that
    applies to this machine (its environment marker, if any, holds here)."""
    pins: set[tuple[str, str]] = set()
    for line in requirements.read_text().splitlines():
        if not line or line[0] in " #":
            continue
        requirement = Requirement(line.rstrip(" \\"))
        if requirement.marker is None or requirement.marker.evaluate():
            (specifier,) = requirement.specifier
            pins.add((canonicalize_name(requirement.name), specifier.version))
    return pins

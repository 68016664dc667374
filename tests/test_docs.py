"""The docs a user follows: complete, in the repository, and in step with the code.

The configuration reference must list exactly the keys the daemon accepts, with their
defaults; every relative link in the README and docs/ must land on a file (and heading)
inside the repository, so nothing points to a document a user does not have.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from markdown import anchors, links

from streamstop.config import Settings

REPO = Path(__file__).resolve().parent.parent
CONFIGURATION = REPO / "docs" / "configuration.md"
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *REPO.glob("helm/*/README.md")])
# A reference row: | section.key | default | meaning |
_ROW = re.compile(r"^\| ([a-z_]+\.[a-z_]+) \| ([^|]*) \|", re.M)


def _model_defaults() -> dict[str, Any]:
    settings = Settings()
    return {
        f"{section}.{key}": getattr(getattr(settings, section), key)
        for section, field in Settings.model_fields.items()
        for key in getattr(field.annotation, "model_fields", {})
    }


def _documented() -> dict[str, str]:
    return dict(_ROW.findall(CONFIGURATION.read_text()))


def test_configuration_reference_lists_exactly_the_daemon_keys() -> None:
    assert sorted(_documented()) == sorted(_model_defaults())


@pytest.mark.parametrize("key", sorted(_model_defaults()))
def test_configuration_reference_shows_each_default(key: str) -> None:
    shown = _documented().get(key, "")
    default = _model_defaults()[key]
    value = getattr(default, "get_secret_value", lambda: default)()
    if value in ("", None):
        assert shown.startswith("empty"), f"{key}: {shown}"
        return
    literal = re.match(r"`([^`]*)`", shown)
    assert literal is not None, f"{key}: {shown}"
    text = literal[1]
    if isinstance(value, bool):
        assert text == str(value).lower(), key
        return
    assert (float(text) if isinstance(value, int | float) else text) == value, key


def _lands(page: Path, target: str) -> bool:
    """True when a link from `page` reaches a file, and heading, inside the repository."""
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.is_relative_to(REPO) or not resolved.exists():
        return False
    return not anchor or resolved.suffix != ".md" or anchor in anchors(resolved.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_links_land_inside_the_repository(page: Path) -> None:
    # A URL (scheme:...) points to the project's site, not a file a user must have.
    relative = [target for target in links(page.read_text()) if not re.match(r"[a-z]+:", target)]

    assert [target for target in relative if not _lands(page, target)] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_no_page_sends_the_reader_to_a_document_outside_the_repository(page: Path) -> None:
    text = page.read_text()
    assert "SPEC" not in text
    assert "/work/" not in text


def _code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), re.M | re.S)


def _kafka_acls_grants(script: str) -> set[tuple[str, str, str]]:
    """(resource type, name, operation) granted by the guide's `$ACL ...` lines."""
    grants = set()
    for line in script.replace("\\\n", " ").splitlines():
        if not line.startswith("$ACL "):
            continue
        options = re.findall(r"--([a-z-]+)(?: ([^-\s]\S*))?", line)
        operations = [value for option, value in options if option == "operation"]
        resources = [
            (kind, name or "kafka-cluster") for kind, name in options if kind != "operation"
        ]
        grants |= {(kind, name, op) for kind, name in resources for op in operations}
    return grants


def test_strimzi_user_grants_the_same_acls_as_the_kafka_acls_commands() -> None:
    guide = REPO / "docs" / "cluster.md"
    (script,) = [block for block in _code_blocks(guide, "sh") if "$ACL " in block]
    (user,) = [
        yaml.safe_load(block) for block in _code_blocks(guide, "yaml") if "KafkaUser" in block
    ]
    strimzi = {
        (acl["resource"]["type"], acl["resource"].get("name", "kafka-cluster"), operation)
        for acl in user["spec"]["authorization"]["acls"]
        for operation in acl["operations"]
    }

    assert strimzi == _kafka_acls_grants(script)
    assert ("topic", "message-cancel-requests", "Read") in strimzi
    assert ("topic", "message-stop-results", "Write") in strimzi
    assert ("cluster", "kafka-cluster", "IdempotentWrite") in strimzi

"""Reading the project's Markdown as GitHub renders it: heading anchors and links."""

from __future__ import annotations

import re

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^ *```")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `#` in a shell block is no heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to `-`."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a page."""
    return {github_anchor(line.lstrip("#")) for line in prose_lines(text) if line[:1] == "#"}


def links(text: str) -> list[str]:
    """Every Markdown link target outside code blocks."""
    return [target for line in prose_lines(text) for target in _LINK.findall(line)]

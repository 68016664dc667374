"""Log lines: JSON, secrets masked, and third-party repeats held back."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import orjson
import pytest

from streamstop.logs import RepeatFilter, configure


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_flood_of_one_message_becomes_one_line_per_window_with_a_count() -> None:
    clock = Clock()
    repeats = RepeatFilter(window_s=10, clock=clock)
    passed = []
    for step in range(3000):  # 1,000 lines a second for 30 s, two nodes alternating
        clock.now = step / 100
        line = record("Unable connect to node with id %s", step % 2)
        if repeats.filter(line):
            passed.append(line)
    assert len(passed) == 3  # t = 0, 10, 20
    assert not hasattr(passed[0], "repeated")
    assert [line.repeated for line in passed[1:]] == [999, 999]  # type: ignore[attr-defined]


def test_different_messages_are_not_held_back() -> None:
    repeats = RepeatFilter(window_s=10, clock=Clock())
    assert repeats.filter(record("a"))
    assert repeats.filter(record("b"))
    assert repeats.filter(record("a", name="aiohttp"))
    assert not repeats.filter(record("a"))


def test_the_count_reaches_the_json_line() -> None:
    code = (
        "import logging\n"
        "from streamstop import logs\n"
        "logs.configure()\n"
        "(repeats,) = [f for f in logging.getLogger().handlers[0].filters\n"
        "             if isinstance(f, logs.RepeatFilter)]\n"
        "now = [0.0]\n"
        "repeats._clock = lambda: now[0]\n"
        "log = logging.getLogger('aiokafka')\n"
        "for _ in range(3): log.error('Unable to update metadata from %s', [1])\n"
        "now[0] = 60.0\n"
        "log.error('Unable to update metadata from %s', [1])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [line["event"] for line in lines] == ["Unable to update metadata from [1]"] * 2
    assert "repeated" not in lines[0]
    assert lines[1]["repeated"] == 2
    assert lines[1]["logger"] == "aiokafka"


def test_retried_coordinator_lookups_are_not_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError

    configure("info")
    aiokafka_log = logging.getLogger("aiokafka.consumer.group_coordinator")
    aiokafka_log.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    aiokafka_log.error("Group Coordinator Request failed: %s", GroupAuthorizationFailedError())
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # The retried one is held back (aiokafka logs at warning and up); the fatal one stays.
    assert [line["level"] for line in lines] == ["error"]
    assert "GroupAuthorizationFailed" in lines[0]["event"]

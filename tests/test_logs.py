"""Log lines: JSON, secrets masked, and third-party repeats held back."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import orjson
import pytest

from streamstop.logs import RepeatFilter, masked_url


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


def test_retried_coordinator_lookups_are_not_errors() -> None:
    code = (
        "import logging\n"
        "from aiokafka.errors import GroupAuthorizationFailedError as Fatal\n"
        "from aiokafka.errors import GroupCoordinatorNotAvailableError as Retried\n"
        "from streamstop import logs\n"
        "logs.configure('info')\n"
        "log = logging.getLogger('aiokafka.consumer.group_coordinator')\n"
        "log.error('Group Coordinator Request failed: %s', Retried())\n"
        "log.error('Group Coordinator Request failed: %s', Fatal())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    # The retried one is held back (aiokafka logs at warning and up); the fatal one stays.
    assert [line["level"] for line in lines] == ["error"]
    assert "GroupAuthorizationFailed" in lines[0]["event"]


# A token may hold `"` and `\` (printable ASCII): JSON escapes both, which once hid it
# from a mask applied to the rendered line.
ESCAPED_TOKEN = 'abc"def\\ghi-T0KEN'


def _lines_of(code: str, fmt: str = "json") -> str:
    prelude = (
        "import logging, structlog\n"
        "from streamstop import logs\n"
        f"logs.configure(fmt={fmt!r})\n"
        f"token = {ESCAPED_TOKEN!r}\n"
        "logs.register_secret(token)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, check=True
    ).stdout


def _assert_masked(out: str) -> None:
    assert out.count("***") >= 1, out
    for leak in ("abc", "def", "ghi"):
        assert leak not in out, out


def test_a_token_with_quotes_and_backslashes_is_masked_in_structlog_lines() -> None:
    out = _lines_of(
        "log = structlog.get_logger('t')\n"
        "log.error('api_error', reason=f'Authorization: Basic {token}', items=[token],"
        " nested={'a': (token,)}, obj=Exception(token))\n"
    )
    [line] = out.splitlines()
    event = orjson.loads(line)
    assert event["reason"] == "Authorization: Basic ***"
    assert event["items"] == ["***"]
    assert event["nested"] == {"a": ["***"]}
    _assert_masked(out)


def test_a_token_with_quotes_and_backslashes_is_masked_in_stdlib_lines() -> None:
    out = _lines_of(
        "log = logging.getLogger('aiohttp.client')\n"
        "log.warning('sent %s', {'Authorization': 'Basic ' + token})\n"
        "try:\n"
        "    raise ValueError(token)\n"
        "except ValueError:\n"
        "    log.exception('failed with %r', token)\n"
    )
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        orjson.loads(line)
    _assert_masked(out)


def test_a_token_with_quotes_and_backslashes_is_masked_in_console_lines() -> None:
    out = _lines_of(
        "structlog.get_logger('t').error('api_error', reason=token, quoted=repr(token))\n"
        "logging.getLogger('aiokafka').error('token %r', token)\n",
        fmt="console",
    )
    assert len(out.splitlines()) == 2
    _assert_masked(out)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example/stop", "https://api.example/stop"),
        ("https://api.example/stop?key=s3cret&x=1", "https://api.example/stop?key=***&x=***"),
        ("https://api.example/stop?s3cret#frag", "https://api.example/stop?***#***"),
        ("http://user:p%40ss@proxy:3128", "http://user:***@proxy:3128"),
        ("http://proxy.example:3128", "http://proxy.example:3128"),
        ("http://[::1", "***"),
    ],
)
def test_masked_url_hides_passwords_and_query_values(url: str, shown: str) -> None:
    assert masked_url(url) == shown

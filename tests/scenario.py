"""Shared pieces of the daemon's integration tests: input corpus, config, checks."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from contract import check_dlq_record, check_result_record
from daemon_proc import TEST_TOKEN, running_daemon, wait_for, write_config
from fakeapi_proc import running_fake_api
from kafkahelp import Message, Position, check_records_of, consume_all, lag, produce

from streamstop.core.decode import Decoded, decode_value
from streamstop.core.resolution import resolution_for_code
from streamstop.fakeapi.rules import code_for

MAX_SIZE = 500


def corpus(count: int, seed: int) -> list[Message]:
    """Cancel events with duplicates, upper case, bare text, ~5% invalid, and headers."""
    rng = random.Random(seed)
    seen: list[str] = []
    messages: list[Message] = []
    for i in range(count):
        roll = rng.random()
        headers = [("traceparent", f"00-{i:032x}-{i:016x}-01".encode())]
        if roll < 0.05:
            value = rng.choice([b"", b"nope", b'{"uuid": 1}', b"\xff", b'{"messageUuid": "x"}'])
            messages.append(Message(value, key=f"k{i}".encode(), headers=headers))
            continue
        if roll < 0.15 and seen:
            u = rng.choice(seen)
        else:
            u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            seen.append(u)
        if roll < 0.25:
            value = f"  {u.upper()}\n".encode()
        else:
            value = orjson.dumps({"messageUuid": u, "requestId": f"r{i}"})
        messages.append(Message(value, key=f"k{i}".encode(), headers=headers))
    return messages


def config_for(
    tmp_path: Path, bootstrap: str, topics: dict[str, str], api_url: str, **extra: Any
) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "input_topic": topics["input"],
            "output_topic": topics["output"],
            "dlq_topic": topics.get("dlq", ""),
            "group_id": topics["group"],
        },
        "batch": {"max_size": MAX_SIZE, "max_wait_ms": 100, "max_pending": 20000},
        "api": {"url": api_url, "token": TEST_TOKEN, "timeout_s": 5},
        "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 1000, "deadline_s": 120},
        "observability": {"http_port": 0},
        "lifecycle": {"shutdown_timeout_s": 20, "revoke_timeout_s": 10},
    }
    for key, value in extra.items():
        section, name = key.split("__")
        sections.setdefault(section, {})[name] = value
    return write_config(tmp_path / "streamstop.toml", sections)


def topics_for(make_topic: Any, dlq: bool = True) -> dict[str, str]:
    """Fresh input, output (and DLQ) topics and group name. Every record read back from
    the output and DLQ topics with `consume_all` is checked against the event schemas."""
    topics = {"input": make_topic(6, "in"), "output": make_topic(6, "out")}
    check_records_of(topics["output"], check_result_record)
    if dlq:
        topics["dlq"] = make_topic(3, "dlq")
        check_records_of(topics["dlq"], check_dlq_record)
    topics["group"] = f"g-{uuid.uuid4().hex[:8]}"
    return topics


def expected_result(message: Message) -> Expectation:
    decoded = decode_value(message.value)
    if not isinstance(decoded, Decoded):
        return "invalid", None, None
    code = code_for(decoded.uuid)
    return resolution_for_code(code, 0).status, code, decoded.uuid


Expectation = tuple[str, int | None, str | None]


def check_results(
    messages: list[Message],
    positions: Sequence[Sequence[int]],
    results: list[Any],
    topic: str,
    expect: Callable[[Message], Expectation] | None = None,
) -> Counter[tuple[int, int]]:
    """Every input record has a correct result; returns results per input position.
    (Each result's shape, key and headers are checked against the schemas when it is read.)"""
    by_source: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for record in results:
        value = orjson.loads(record.value)
        assert value["source"]["topic"] == topic
        key = (value["source"]["partition"], value["source"]["offset"])
        by_source.setdefault(key, []).append(value)
    for message, position in zip(messages, positions, strict=True):
        got = by_source.get((position[0], position[1]))
        assert got, f"no result for record at {position}"
        status, code, uuid_ = (expect or expected_result)(message)
        for value in got:
            assert value["status"] == status, (value, message)
            assert value["code"] == code
            assert value["messageUuid"] == uuid_
    return Counter({k: len(v) for k, v in by_source.items()})


def check_requests(received: list[dict[str, Any]]) -> None:
    for request in received:
        assert len(request["uuids"]) <= MAX_SIZE
        assert len(set(request["uuids"])) == len(request["uuids"])


def wait_committed(bootstrap: str, topics: dict[str, str], timeout_s: float, what: str) -> None:
    """Poll until the group has committed every input record."""
    wait_for(lambda: lag(bootstrap, topics["group"], topics["input"]) == 0, timeout_s, what)


class Run(NamedTuple):
    """Where the input records landed, and the results read back."""

    positions: list[Position]
    results: list[Any]


def run_once_each(
    bootstrap: str, topics: dict[str, str], messages: list[Message], tmp_path: Path, **config: Any
) -> Run:
    """Produce `messages`, run the fake API and the daemon until every record is committed
    (the daemon never exits meanwhile), and check each record got exactly one result."""
    positions = produce(bootstrap, topics["input"], messages)
    with running_fake_api("--token", TEST_TOKEN) as api:
        path = config_for(tmp_path, bootstrap, topics, api.url, **config)
        with running_daemon(path, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_committed(bootstrap, topics, 120, "every record committed")
            assert daemon.proc.poll() is None
            assert daemon.get("/livez")[0] == 200
            assert TEST_TOKEN not in daemon.raw_log()
    results = consume_all(bootstrap, topics["output"], len(messages), timeout_s=60)
    per_record = check_results(messages, positions, results, topics["input"])
    assert set(per_record.values()) == {1}
    return Run(positions, results)

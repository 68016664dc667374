"""`streamstop redrive` run as a process against a real broker (and, for the outage, a real
daemon and fake API): what it chooses, what it sends, how it stops and resumes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from cli_proc import streamstop
from contract import INPUT_EVENT, INPUT_HEADERS, headers_view, problem
from daemon_proc import TEST_TOKEN, running_daemon, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import (
    Message,
    check_records_of,
    committed_offsets,
    consume_all,
    end_offsets,
    produce,
    publish_aborted,
)
from redrivehelp import result_message, source_of
from scenario import config_for, topics_for, wait_committed

from streamstop.core.results import Status

pytestmark = pytest.mark.kafka

NO_API = "http://127.0.0.1:9/api/v1/message/stop"  # redrive never calls the API
REDRIVE_OF = "streamstop-redrive-of"
HOUR_MS = 3_600_000


def check_request_record(record: Any) -> None:
    """A record `streamstop redrive` publishes: keyed by the uuid, a cancel request as the
    input schemas say, naming the record it redrives."""
    where = f"request at {record.topic}/{record.partition}/{record.offset}"
    value = orjson.loads(record.value)
    assert problem(INPUT_EVENT, value) is None, where
    assert problem(INPUT_HEADERS, headers_view(record.headers)) is None, where
    assert set(value) <= {"messageUuid", "requestId"}, where
    assert record.key == value["messageUuid"].encode(), where
    assert [name for name, _ in record.headers].count(REDRIVE_OF) == 1, where


def redriven(bootstrap: str, topic: str, expected: int) -> list[Any]:
    """The requests redrive published to `topic` (each checked), sorted by position."""
    records = consume_all(bootstrap, topic, expected, timeout_s=60)
    return [r for r in records if REDRIVE_OF in dict(r.headers)]


def redrive_of(record: Any) -> str:
    return bytes(dict(record.headers)[REDRIVE_OF]).decode()


def redrive(config: Path, *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """`streamstop redrive ARGS --config CONFIG`, as a process."""
    return streamstop("redrive", *args, "--config", str(config), timeout_s=timeout_s)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def synthetic(make_topic: Any, tmp_path: Path, bootstrap: str, partitions: int = 6) -> Any:
    """Fresh topics (the output one checked against the schemas), a config, no daemon."""
    topics = topics_for(make_topic, dlq=False)
    if partitions != 6:
        topics["output"] = make_topic(partitions, "out")
    check_records_of(topics["input"], check_request_record)
    return topics, config_for(tmp_path, bootstrap, topics, NO_API)


def test_an_outage_fails_a_batch_and_redrive_brings_every_one_to_stopped(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    # Uuids ending in a digit: the fake API stops them (200) once it is back.
    uuids = [str(uuid.uuid4())[:-1] + str(i % 10) for i in range(300)]
    request_ids = [None if i % 3 == 0 else f"r{i}" for i in range(300)]
    traces = [f"00-{i:032x}-{i:016x}-01".encode() for i in range(300)]
    messages = [
        Message(
            u.encode() if r is None else orjson.dumps({"messageUuid": u, "requestId": r}),
            headers=[("traceparent", t), ("x-team", b"b")],
        )
        for u, r, t in zip(uuids, request_ids, traces, strict=True)
    ]
    with running_fake_api("--token", TEST_TOKEN, "--outage") as api:
        config = config_for(
            tmp_path,
            kafka_bootstrap,
            topics,
            api.url,
            retry__deadline_s=2,
            retry__max_backoff_ms=200,
        )
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            positions = produce(kafka_bootstrap, topics["input"], messages)
            wait_committed(kafka_bootstrap, topics, 120, "every record answered")
            first = consume_all(kafka_bootstrap, topics["output"], len(messages))
            assert Counter(orjson.loads(r.value)["status"] for r in first) == {"failed": 300}
            answered = [r["status"] for r in api.received()]
            assert answered, "the outage was met"
            assert set(answered) == {503}

            api.set(outage=False)
            api.reset()
            done = redrive(config, "--status", "failed")
            summary = ok(done)
            assert "published 300 to" in summary
            assert "\r" not in done.stderr  # not a terminal: plain lines

            wait_for(
                lambda: sum(end_offsets(kafka_bootstrap, topics["output"]).values()) >= 600,
                120,
                "a second result for every record",
            )
            wait_committed(kafka_bootstrap, topics, 120, "the daemon committed the redrives")
            assert daemon.proc.poll() is None
        results = consume_all(kafka_bootstrap, topics["output"], 600)
        stopped_by_api = {u for r in api.received() if r["status"] == 200 for u in r["uuids"]}

    originals = {
        f"{topics['input']}/{p}/{o}": what
        for (p, o), what in zip(
            positions, zip(uuids, request_ids, traces, strict=True), strict=True
        )
    }
    second = [r for r in results if REDRIVE_OF in dict(r.headers)]
    assert len(second) == 300
    assert {redrive_of(r) for r in second} == set(originals)
    for record in second:
        value = orjson.loads(record.value)
        uuid_, request_id, trace = originals[redrive_of(record)]
        assert (value["status"], value["messageUuid"], value["requestId"]) == (
            "stopped",
            uuid_,
            request_id,
        )
        assert dict(record.headers)["traceparent"] == trace
        assert dict(record.headers)["x-team"] == b"b"
    assert set(uuids) <= stopped_by_api
    requests = redriven(kafka_bootstrap, topics["input"], 600)
    assert sorted(redrive_of(r) for r in requests) == sorted(originals)


def test_dry_run_sends_nothing_and_saves_nothing_and_draws_a_bar_on_a_terminal(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics, config = synthetic(make_topic, tmp_path, kafka_bootstrap)
    statuses = [Status.FAILED, Status.EXPIRED, Status.STOPPED, Status.STOP_UNCERTAIN]
    messages = [
        result_message(s, str(uuid.uuid4()), (topics["input"], 0, i))
        for i, s in enumerate(statuses * 50)
    ]
    produce(kafka_bootstrap, topics["output"], messages)
    group = f"{topics['group']}-redrive"

    done, terminal = run_on_a_terminal(
        config, "--status", "failed", "--status", "expired", "--dry-run"
    )

    assert done == 0, terminal
    assert "would publish 100 to" in terminal
    assert "chosen 100 (expired 50, failed 50)" in terminal
    listed = re.findall(r"^ {4}([0-9a-f-]{36}) (failed|expired), result of ", terminal, re.M)
    assert len(listed) == 10
    assert "... and 90 more" in terminal
    assert re.search(r"\r *\d+% \|[# ]+\| [\d,]+/[\d,]+  ETA", terminal), terminal
    assert sum(end_offsets(kafka_bootstrap, topics["input"]).values()) == 0
    assert committed_offsets(kafka_bootstrap, group, topics["output"]) == {}


def run_on_a_terminal(config: Path, *args: str) -> tuple[int, str]:
    """Run redrive with stdout and stderr on a pseudo-terminal; its exit code and output."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSTOP_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamstop", "redrive", *args, "--config", str(config)],
        stdout=terminal,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    output = bytearray()
    with contextlib.suppress(OSError):  # EIO once the process closed the terminal
        while chunk := os.read(controller, 65536):
            output += chunk
    os.close(controller)
    return proc.wait(60), output.decode().replace("\r\n", "\n")


def test_status_window_and_partition_choose_exactly_and_each_record_goes_once(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics, config = synthetic(make_topic, tmp_path, kafka_bootstrap)
    now = int(time.time() * 1000)
    old, mid, recent = now - 3 * HOUR_MS, now - 90 * 60_000, now - 30 * 60_000
    made: dict[str, tuple[str, int, int]] = {}

    def result(
        name: str, status: Status, partition: int, at: int, source: str | None = None
    ) -> Message:
        where = made.setdefault(source or name, (topics["input"], len(made), 100 + len(made)))
        return result_message(
            status,
            str(uuid.uuid4()),
            where,
            request_id=name,
            headers=[("x-name", name.encode())],
            partition=partition,
            timestamp_ms=at,
        )

    produce(
        kafka_bootstrap,
        topics["output"],
        [
            result("A", Status.FAILED, 0, old),
            result("B", Status.EXPIRED, 1, old),
            result("C", Status.FAILED, 0, mid),
            result("D", Status.STOP_UNCERTAIN, 2, mid),
            result("E", Status.UNKNOWN_CODE, 3, mid),
            result("F", Status.STOPPED, 0, mid),
            result("G", Status.INVALID, 1, mid),
            result("K", Status.ALREADY_SENT, 4, mid),
            result("L", Status.NOT_FOUND, 5, mid),
            result("C2", Status.FAILED, 0, mid, source="C"),  # at-least-once: C again
            result("H", Status.FAILED, 2, recent),
            Message(b"not a result", partition=4, timestamp_ms=mid),
        ],
    )
    aborted = result("X", Status.FAILED, 5, mid)
    publish_aborted(kafka_bootstrap, topics["output"], aborted.key or b"", aborted.value or b"", 5)
    seen: set[tuple[int, int]] = set()

    def sent_by(*args: str) -> list[str]:
        """Run redrive; the names of the records its new requests redrive."""
        ok(redrive(config, *args))
        records = redriven(kafka_bootstrap, topics["input"], len(seen))
        new = [r for r in records if (r.partition, r.offset) not in seen]
        seen.update((r.partition, r.offset) for r in new)
        names = {"/".join(map(str, where)): name for name, where in made.items()}
        return sorted(names[redrive_of(r)] for r in new)

    window = ("--since", "2h", "--until", "1h")
    assert sent_by("--status", "failed", *window) == ["C"]
    assert sent_by("--status", "failed", *window) == [], "the same flags never send twice"
    produce(kafka_bootstrap, topics["output"], [result("M", Status.FAILED, 1, mid)])
    assert sent_by("--status", "failed", *window) == ["M"], "only what came since"

    assert sent_by("--status", "failed", "--partition", "2") == ["H"]
    every = [
        arg
        for s in ("failed", "expired", "stop_uncertain", "unknown_code")
        for arg in ("--status", s)
    ]
    last = redrive(config, *every, "--since", "2026-01-01T00:00:00Z")
    assert "records were not results, skipped" in ok(last)
    assert "1 further results of the same records, skipped" in last.stdout
    records = redriven(kafka_bootstrap, topics["input"], len(seen))
    new = [r for r in records if (r.partition, r.offset) not in seen]
    names = {"/".join(map(str, where)): name for name, where in made.items()}
    assert sorted(names[redrive_of(r)] for r in new) == ["A", "B", "C", "D", "E", "H", "M"]
    for record in new:  # the value and headers of the result, carried over
        name = names[redrive_of(record)]
        assert orjson.loads(record.value)["requestId"] == name
        assert dict(record.headers)["x-name"] == name.encode()


def test_ctrl_c_then_the_same_command_publishes_each_record_exactly_once(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics, config = synthetic(make_topic, tmp_path, kafka_bootstrap, partitions=1)
    count, early = 80_000, 500
    sources = [(topics["input"], i % 6, i) for i in range(count)]
    statuses = [Status.FAILED, Status.STOPPED]
    messages = [
        result_message(statuses[i % 2], str(uuid.uuid4()), sources[i], partition=0)
        for i in range(count)
    ]
    # Second results of the first records, at the very end: found only after the restart.
    repeated = [m for m in messages[: 2 * early] if b'"failed"' in (m.value or b"")]
    produce(kafka_bootstrap, topics["output"], messages + repeated)
    chosen = count // 2
    log = tmp_path / "progress.log"

    with log.open("w") as stderr, running_redrive(config, stderr, "--status", "failed") as proc:
        wait_for(lambda: published_so_far(log) >= chosen // 5, 120, "a fifth published")
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + log.read_text()
    assert "interrupted" in stdout
    assert "progress saved" in stdout
    first = redriven(kafka_bootstrap, topics["input"], chosen // 5)
    # The interruption landed mid-run: after the early records, well before the end.
    assert {redrive_of(r) for r in first} >= {source_of(m) for m in repeated}
    assert len(first) < chosen

    refused = redrive(config, "--status", "expired")
    assert refused.returncode == 2
    assert "is unfinished" in refused.stderr
    assert f"streamstop redrive --status failed --config {config}" in refused.stderr

    resumed = ok(redrive(config, "--status", "failed"))
    every = redriven(kafka_bootstrap, topics["input"], chosen)
    sent = Counter(redrive_of(r) for r in every)
    assert max(sent.values()) == 1
    assert len(every) == chosen
    assert set(sent) == {source_of(m) for m in messages if b'"failed"' in (m.value or b"")}
    assert "(resumed)" in resumed
    assert f"and {len(first):,} before" in resumed
    assert f"{early:,} further results of the same records, skipped" in resumed
    lines = log.read_text().splitlines()
    assert all(line.startswith("streamstop redrive: ") for line in lines)


def published_so_far(log: Path) -> int:
    """The latest published count in redrive's plain progress lines."""
    counts = re.findall(r"([\d,]+) published", log.read_text())
    return int(counts[-1].replace(",", "")) if counts else 0


def test_a_second_redrive_in_the_group_is_refused_and_one_joining_stops_it(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics, config = synthetic(make_topic, tmp_path, kafka_bootstrap, partitions=1)
    count = 150_000  # several seconds of work: a member joining lands mid-run
    messages = [
        result_message(Status.FAILED, str(uuid.uuid4()), (topics["input"], 0, i), partition=0)
        for i in range(count)
    ]
    produce(kafka_bootstrap, topics["output"], messages)
    group = f"{topics['group']}-redrive"

    with member_of(kafka_bootstrap, group, topics["output"]):
        busy = redrive(config, "--status", "failed")
    assert busy.returncode == 4, busy.stderr
    assert f"another streamstop redrive is running in consumer group {group}" in busy.stderr
    assert sum(end_offsets(kafka_bootstrap, topics["input"]).values()) == 0

    log = tmp_path / "progress.log"
    with log.open("w") as stderr, running_redrive(config, stderr, "--status", "failed") as proc:
        wait_for(lambda: published_so_far(log) > 0, 120, "publishing began")
        with member_of(kafka_bootstrap, group, topics["output"]):
            stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 4, stdout + log.read_text()
    assert "stopped: another member took over its consumer group" in stdout
    first = redriven(kafka_bootstrap, topics["input"], 1)
    assert 0 < len(first) < count, "stopped mid-run"
    assert f"progress saved: {len(first)}" in stdout.replace(",", "")

    resumed = ok(redrive(config, "--status", "failed"))
    assert "(resumed)" in resumed
    every = redriven(kafka_bootstrap, topics["input"], count)
    assert len(every) == count
    assert len({redrive_of(r) for r in every}) == count


@contextlib.contextmanager
def running_redrive(config: Path, stderr: Any, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`streamstop redrive ARGS` with plain progress lines every 0.1 s on `stderr`;
    killed by pid if it is still running at the end."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamstop",
            "redrive",
            *args,
            "--config",
            str(config),
            "--progress-every",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def member_of(bootstrap: str, group: str, topic: str) -> Iterator[None]:
    """A consumer that has joined `group` (subscribed to `topic`) while the block runs."""
    ready, leave = asyncio.Event(), asyncio.Event()
    loop = asyncio.new_event_loop()

    async def member() -> None:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
            ready.set()
            while not leave.is_set():
                await consumer.getmany(timeout_ms=100)
        finally:
            await consumer.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(member(),))
    thread.start()
    try:
        wait_for(ready.is_set, 60, "the member joined")
        yield
    finally:
        loop.call_soon_threadsafe(leave.set)
        thread.join(60)
        loop.close()


def test_refusals_name_what_to_fix(kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    topics, config = synthetic(make_topic, tmp_path, kafka_bootstrap)

    out_of_range = redrive(config, "--status", "failed", "--partition", "6")
    missing = config_for(tmp_path, kafka_bootstrap, {**topics, "input": "no-such-topic"}, NO_API)
    no_topic = redrive(missing, "--status", "failed")

    assert out_of_range.returncode == 2
    assert f"--partition 6: the output topic {topics['output']} has partitions 0 to 5" in (
        out_of_range.stderr
    )
    assert no_topic.returncode == 2
    assert "the input topic no-such-topic (kafka.input_topic) does not exist" in no_topic.stderr

"""Rebalances, many of them: work of a revoked partition ends with its revoke budget, so
memory and requests stay bounded and nothing is published twice or lost."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from daemon_proc import TEST_TOKEN, Daemon, running_daemon, sampled, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import Message, blocking, committed_offsets, consume_all, produce
from scenario import check_results, config_for, topics_for, wait_committed

pytestmark = pytest.mark.kafka


def rss_mb(daemon: Daemon) -> float:
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@blocking
async def join_and_leave(bootstrap: str, group: str, topic: str, joined: threading.Event) -> None:
    """A plain consumer joins the group (a rebalance), holds its share without reading
    it until `joined` is cleared, then leaves (another rebalance)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            assert time.monotonic() < deadline, "the extra member never got partitions"
            await consumer.getmany(timeout_ms=100, max_records=1)  # joins; nothing kept
            consumer.pause(*consumer.assignment())
        joined.set()
        while joined.is_set():
            await consumer.getmany(timeout_ms=100)
    finally:
        await consumer.stop()


@contextmanager
def extra_member(bootstrap: str, group: str, topic: str) -> Iterator[None]:
    joined = threading.Event()
    member = threading.Thread(target=join_and_leave, args=(bootstrap, group, topic, joined))
    member.start()
    try:
        assert joined.wait(90), "the extra member joined"
        yield
    finally:
        joined.clear()
        member.join(60)


def revoked(daemon: Daemon, times: int) -> Callable[[], bool]:
    return lambda: len(daemon.events("partitions_revoked")) >= times


def test_work_of_revoked_partitions_ends_with_their_revoke_budget(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    messages = [Message(str(uuid.uuid4()).encode()) for _ in range(6_000)]
    max_pending, max_size = 1_000, 100
    with running_fake_api("--token", TEST_TOKEN, "--outage") as api:
        config = config_for(
            tmp_path,
            kafka_bootstrap,
            topics,
            api.url,
            batch__max_pending=max_pending,
            batch__max_size=max_size,
            lifecycle__revoke_timeout_s=2,
            retry__max_backoff_ms=500,
        )
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            positions = produce(kafka_bootstrap, topics["input"], messages)
            wait_for(lambda: daemon.metric("streamstop_pending_records") > 0, 60, "work taken in")
            peaks = {"batches": 0.0, "pending": 0.0, "rss": 0.0}

            def sample() -> None:
                peaks["batches"] = max(
                    peaks["batches"], daemon.metric("streamstop_batches_in_flight")
                )
                peaks["pending"] = max(
                    peaks["pending"], daemon.metric("streamstop_pending_records")
                )
                peaks["rss"] = max(peaks["rss"], rss_mb(daemon))

            for cycle in range(5):  # each cycle is two rebalances: a member joins, leaves
                with extra_member(kafka_bootstrap, topics["group"], topics["input"]):
                    wait_for(revoked(daemon, 2 * cycle + 1), 60, "the daemon gives partitions up")
                    for _ in sampled(2):
                        sample()
                wait_for(revoked(daemon, 2 * cycle + 2), 60, "the daemon gets them back")
                wait_for(lambda: daemon.metric("streamstop_pending_records") > 0, 60, "work again")
                for _ in sampled(2):
                    sample()
            revokes = daemon.events("partitions_revoked")
            assert len(revokes) >= 10
            assert sum(line["dropped_records"] for line in revokes) > 0
            assert daemon.metric("streamstop_results_total") == 0  # the API never answered
            assert committed_offsets(kafka_bootstrap, topics["group"], topics["input"]) == {}
            print(f"peaks over 10 rebalances: {peaks}")
            # Memory and requests stay bounded: batches of the revoked partitions did not
            # pile up behind the ones of each new assignment.
            assert peaks["batches"] <= 2 * max_pending / max_size
            assert peaks["pending"] <= max_pending
            assert peaks["rss"] < 250
            api.set(outage=False)
            wait_committed(kafka_bootstrap, topics, 120, "every record once the API is back")
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=60)
    per_record = check_results(messages, positions, results, topics["input"])
    # Nothing of a revoked partition was published after its revoke budget: no record
    # got a second result from work that outlived its partition.
    assert set(per_record.values()) == {1}


def committed_total(bootstrap: str, topics: dict[str, str]) -> int:
    return sum(committed_offsets(bootstrap, topics["group"], topics["input"]).values())


def test_a_member_restarting_in_a_loop_never_stops_progress_nor_loses_a_record(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    produced: list[tuple[Message, Any]] = []
    stop_producing = threading.Event()

    def produce_continuously() -> None:
        while not stop_producing.is_set():
            chunk = [Message(str(uuid.uuid4()).encode()) for _ in range(200)]
            produced.extend(
                zip(chunk, produce(kafka_bootstrap, topics["input"], chunk), strict=True)
            )
            stop_producing.wait(1.0)

    producer = threading.Thread(target=produce_continuously)
    with running_fake_api("--token", TEST_TOKEN, "--latency-ms", "50") as api:
        config = config_for(
            tmp_path, kafka_bootstrap, topics, api.url, lifecycle__revoke_timeout_s=5
        )
        with (
            running_daemon(config, tmp_path / "a.log") as first,
            running_daemon(config, tmp_path / "b.log") as second,
        ):
            first.wait_ready()
            second.wait_ready()
            producer.start()
            try:
                began = time.monotonic()
                restarts = 0
                while time.monotonic() - began < 300:
                    before = committed_total(kafka_bootstrap, topics)
                    cycle_ends = began + 30 * (restarts + 1)
                    with running_daemon(config, tmp_path / f"c{restarts}.log") as third:
                        third.wait_ready()
                        wait_for(lambda: third.events("partitions_assigned"), 60, "joined")
                        # A rebalance every 30 s: the third member leaves at the cycle's end.
                        for _ in sampled(max(0.0, cycle_ends - time.monotonic()), 1.0):
                            assert first.proc.poll() is None
                            assert second.proc.poll() is None
                    restarts += 1
                    after = committed_total(kafka_bootstrap, topics)
                    assert after > before, f"no progress during restart {restarts}"
            finally:
                stop_producing.set()
                producer.join(60)
            wait_committed(kafka_bootstrap, topics, 180, "everything produced")
        messages = [message for message, _ in produced]
        positions = [position for _, position in produced]
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=120)
    per_record = check_results(messages, positions, results, topics["input"])
    assert len(per_record) == len(messages)
    duplicates = sum(per_record.values()) - len(per_record)
    print(f"records={len(messages)} restarts={restarts} duplicates={duplicates}")

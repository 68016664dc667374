"""The real-broker harness: aiokafka 0.14 against Kafka 4.1.1, and the test helpers on top."""

from __future__ import annotations

import socket
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from daemon_proc import wait_for
from kafkahelp import (
    KafkaBroker,
    MakeTopic,
    Message,
    Position,
    commit_offsets,
    commit_offsets_async,
    committed_offsets,
    committed_offsets_async,
    consume_all,
    consume_all_async,
    end_offsets,
    end_offsets_async,
    lag,
    lag_async,
    produce,
    produce_async,
    unique_name,
)

pytestmark = pytest.mark.kafka


def test_records_round_trip_with_keys_values_and_headers(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=3)
    messages = [
        Message(b'{"messageUuid": "a"}', key=b"k1", headers=[("traceparent", b"00-ab-cd-01")]),
        Message(None, key=b"tombstone"),
        Message(b"", headers=[("h", b"1"), ("h", b"2")]),
        Message(b"pinned", partition=2, timestamp_ms=1_600_000_000_000),
    ]
    expected = [*messages, Message(b"plain bytes"), Message("plain text \u00e9".encode())]

    positions = produce(kafka_bootstrap, topic, [*messages, b"plain bytes", "plain text \u00e9"])
    received = consume_all(kafka_bootstrap, topic, expected=len(expected), timeout_s=20)

    by_position = {Position(r.partition, r.offset): r for r in received}
    assert sorted(by_position) == sorted(positions)
    for message, position in zip(expected, positions, strict=True):
        record = by_position[position]
        assert (record.key, record.value) == (message.key, message.value)
        assert list(record.headers) == list(message.headers)
    assert positions[3].partition == 2
    assert by_position[positions[3]].timestamp == 1_600_000_000_000


def test_keyed_records_keep_their_partition_and_order(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = make_topic()
    positions = produce(
        kafka_bootstrap, topic, [Message(b"%d" % i, key=b"same") for i in range(20)]
    )

    assert len({p.partition for p in positions}) == 1
    assert [p.offset for p in positions] == list(range(20))


def test_consume_all_includes_records_beyond_expected(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    """So a test expecting N results also sees duplicates without waiting for a timeout."""
    topic = make_topic()
    produce(kafka_bootstrap, topic, [b"x"] * 12)

    assert len(consume_all(kafka_bootstrap, topic, expected=5, timeout_s=20)) == 12


def test_fifty_thousand_records_produce_and_read_back_quickly(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = make_topic()
    started = time.monotonic()
    produce(kafka_bootstrap, topic, [b'{"messageUuid": "%036d"}' % i for i in range(50_000)])
    produce_s = time.monotonic() - started

    # Round-robin: 50,000 = 6 * 8,333 + 2.
    assert end_offsets(kafka_bootstrap, topic) == {p: 8334 if p < 2 else 8333 for p in range(6)}
    assert len(consume_all(kafka_bootstrap, topic, expected=50_000, timeout_s=60)) == 50_000
    # Typically well under a second; the bound only catches a per-record slow path.
    assert produce_s < 10


async def test_group_commits_read_back_as_offsets_and_lag(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic, group = make_topic(), unique_name("g-commits")
    await produce_async(kafka_bootstrap, topic, [b"v%d" % i for i in range(30)])
    assert await lag_async(kafka_bootstrap, group, topic) == 30

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 30 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            seen += sum(len(batch) for batch in batches.values())
        await consumer.commit()
    finally:
        await consumer.stop()

    assert seen == 30
    ends = await end_offsets_async(kafka_bootstrap, topic)
    assert await committed_offsets_async(kafka_bootstrap, group, topic) == ends
    assert await lag_async(kafka_bootstrap, group, topic) == 0


async def test_partial_commit_counts_uncommitted_partitions_from_the_beginning(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic, group = make_topic(partitions=2), unique_name("g-partial")
    await produce_async(kafka_bootstrap, topic, [b"v"] * 10)  # 5 per partition

    await commit_offsets_async(kafka_bootstrap, group, topic, {0: 3})

    assert await committed_offsets_async(kafka_bootstrap, group, topic) == {0: 3}
    assert await lag_async(kafka_bootstrap, group, topic) == 2 + 5


async def test_transactions_commit_results_and_offsets_atomically(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    """What `exactly_once` relies on: aborted results stay invisible to read_committed."""
    source, results, group = (
        make_topic(partitions=1),
        make_topic(partitions=1),
        unique_name("g-txn"),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("txn")
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(results, b"aborted", partition=0)
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(results, b"committed", partition=0)
            await producer.send_offsets_to_transaction({TopicPartition(source, 0): 7}, group)
    finally:
        await producer.stop()

    visible = await consume_all_async(
        kafka_bootstrap, results, expected=1, timeout_s=20, isolation_level="read_committed"
    )
    everything = await consume_all_async(kafka_bootstrap, results, expected=2, timeout_s=20)
    assert [r.value for r in visible] == [b"committed"]
    assert [r.value for r in everything] == [b"aborted", b"committed"]
    wait_for(
        lambda: committed_offsets(kafka_bootstrap, group, source) == {0: 7},
        timeout_s=10,
        what="the transaction's offsets",
    )


def test_up_on_a_running_broker_only_reports_its_address(kafka_broker: KafkaBroker) -> None:
    if kafka_broker.state_dir is None:
        pytest.skip("external broker (KAFKA_BOOTSTRAP)")
    pid = (kafka_broker.state_dir / "pid").read_text()

    assert KafkaBroker.start_in(kafka_broker.state_dir) == kafka_broker
    assert (kafka_broker.state_dir / "pid").read_text() == pid


def test_restarted_broker_keeps_its_address_records_and_offsets(
    kafka_broker: KafkaBroker, make_topic: MakeTopic
) -> None:
    if kafka_broker.state_dir is None:
        pytest.skip("external broker (KAFKA_BOOTSTRAP)")
    bootstrap = kafka_broker.bootstrap
    topic = make_topic()
    produce(bootstrap, topic, [b"r%d" % i for i in range(12)])
    group, committed = unique_name("g-restart"), {0: 1, 3: 2}
    commit_offsets(bootstrap, group, topic, committed)

    kafka_broker.stop()
    assert not _accepts_connections(bootstrap)
    kafka_broker.start()

    assert len(consume_all(bootstrap, topic, expected=12, timeout_s=30)) == 12
    # The coordinator reloads the offsets topic after a restart: poll, it may answer {} first.
    wait_for(
        lambda: committed_offsets(bootstrap, group, topic) == committed,
        30,
        "committed offsets to be readable again",
    )
    assert lag(bootstrap, group, topic) == 12 - 3


def _accepts_connections(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True

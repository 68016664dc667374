"""Permanent Kafka faults: no crash loop, no wait that is an exit, no blind alert.

Each test runs the real daemon against the real broker: a topic that refuses what it is
sent, a broker or topic not there yet, a compacted topic, a topic that loses records to
retention during a hold.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from daemon_proc import TEST_TOKEN, Daemon, running_daemon, sampled, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import (
    KafkaBroker,
    Message,
    commit_offsets,
    consume_all,
    create_topic,
    delete_records_before,
    kafka_sh,
    produce,
    topics_on,
    unique_name,
)
from scenario import check_results, config_for, corpus, run_once_each, topics_for, wait_committed

pytestmark = pytest.mark.kafka

SMALL_LIMIT = {"max.message.bytes": "65536"}


def error_lines(daemon: Daemon) -> list[dict[str, Any]]:
    return [line for line in daemon.lines() if line.get("level") in ("error", "critical")]


def header(record: Any, name: str) -> bytes | None:
    return dict(record.headers).get(name)


def test_an_output_topic_with_a_small_message_limit_gets_every_result(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    # A common per-topic setting: every record batch the producer would build by its own
    # limit is too large for this topic.
    topics = topics_for(make_topic, dlq=False)
    topics["output"] = make_topic(6, "out", SMALL_LIMIT)
    messages = [
        Message(orjson.dumps({"messageUuid": str(uuid.uuid4()), "requestId": f"r{i}"}))
        for i in range(3_000)
    ]
    run_once_each(kafka_bootstrap, topics, messages, tmp_path, batch__max_size=3000)


@pytest.mark.parametrize("limit", [None, 65_536])
def test_a_result_too_large_for_its_topic_goes_without_its_copied_headers(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, limit: int | None
) -> None:
    # A valid cancel carrying a 100 KB header between 200 good ones: with the default
    # limit its result keeps the header; over a 64 KiB topic limit it goes without it.
    topics = topics_for(make_topic, dlq=False)
    if limit is not None:
        topics["output"] = make_topic(6, "out", {"max.message.bytes": str(limit)})
    good = [Message(str(uuid.uuid4()).encode(), partition=0) for _ in range(200)]
    big_uuid = str(uuid.uuid4())
    big_headers = [("traceparent", b"00-abc-def-01"), ("blob", b"x" * 100_000)]
    big = Message(big_uuid.encode(), headers=big_headers, partition=0)
    messages = [*good[:100], big, *good[100:]]
    _, results = run_once_each(kafka_bootstrap, topics, messages, tmp_path)
    (cut,) = [r for r in results if r.key == big_uuid.encode()]
    if limit is None:
        assert dict(cut.headers) == dict(big_headers)
    else:
        assert dict(cut.headers) == {"streamstop-truncated": b"headers"}
    others = [r for r in results if r.key != big_uuid.encode()]
    assert all(header(r, "streamstop-truncated") is None for r in others)


def test_a_dlq_copy_too_large_for_its_topic_is_cut_to_fit(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    topics["dlq"] = make_topic(1, "dlq", SMALL_LIMIT)
    good = [Message(str(uuid.uuid4()).encode(), partition=0) for _ in range(200)]
    poison = Message(b"not a uuid " * 30_000, headers=[("blob", b"y" * 100_000)], partition=0)
    messages = [*good[:100], poison, *good[100:]]
    positions, _ = run_once_each(kafka_bootstrap, topics, messages, tmp_path)
    (copy,) = consume_all(kafka_bootstrap, topics["dlq"], 1, timeout_s=30)
    assert header(copy, "streamstop-truncated") == b"true"
    assert header(copy, "streamstop-source") == f"{topics['input']}/0/{positions[100][1]}".encode()
    assert copy.value is not None
    assert copy.value == (b"not a uuid " * 30_000)[: len(copy.value)]


@pytest.mark.parametrize("role", ["output", "dlq"])
def test_a_compacted_output_or_dlq_topic_is_a_configuration_error(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, role: str
) -> None:
    topics = topics_for(make_topic)
    topics[role] = make_topic(1, role, {"cleanup.policy": "compact"})
    config = config_for(tmp_path, kafka_bootstrap, topics, "http://127.0.0.1:9/stop")
    with running_daemon(config, tmp_path / "d.log") as daemon:
        assert daemon.wait_exit(60) == 2
    (problem,) = [line["problem"] for line in daemon.events("config_error")]
    assert f"kafka.{role}_topic" in problem
    assert topics[role] in problem
    assert "compact" in problem


def hold_reason(daemon: Daemon) -> str:
    status, body = daemon.get("/readyz")
    assert status == 503, body
    reason: str = orjson.loads(body)["reason"]
    return reason


def test_kafka_not_up_yet_is_a_hold_that_ends_when_it_comes(
    kafka_broker: KafkaBroker, make_topic: Any, tmp_path: Path
) -> None:
    if kafka_broker.state_dir is None:
        pytest.skip("needs a broker this session can stop and start")
    topics = topics_for(make_topic, dlq=False)
    messages = [Message(str(uuid.uuid4()).encode()) for _ in range(100)]
    positions = produce(kafka_broker.bootstrap, topics["input"], messages)
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, kafka_broker.bootstrap, topics, api.url)
        kafka_broker.stop()
        try:
            with running_daemon(config, tmp_path / "d.log") as daemon:
                daemon.wait_port()
                wait_for(lambda: daemon.events("kafka_unavailable"), 60, "the hold")
                for _ in sampled(5):
                    assert daemon.proc.poll() is None
                    assert kafka_broker.bootstrap in hold_reason(daemon)
                assert len(daemon.events("kafka_unavailable")) == 1  # one line, not a storm
                kafka_broker.start()
                wait_committed(kafka_broker.bootstrap, topics, 120, "recovery without a restart")
                assert daemon.ready()
        finally:
            kafka_broker.start()
        results = consume_all(kafka_broker.bootstrap, topics["output"], len(messages), 60)
    check_results(messages, positions, results, topics["input"])


@pytest.mark.parametrize("missing", ["input", "output"])
def test_a_missing_topic_is_a_hold_that_ends_when_it_is_created(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, missing: str
) -> None:
    topics = topics_for(make_topic, dlq=False)
    topics[missing] = unique_name(f"later-{missing}")
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url)
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_port()
            wait_for(lambda: daemon.events("kafka_unavailable"), 60, "the hold")
            (line,) = daemon.events("kafka_unavailable")
            assert topics[missing] in line["problem"]
            assert topics[missing] in hold_reason(daemon)
            create_topic(kafka_bootstrap, topics[missing], 6)
            messages = [Message(str(uuid.uuid4()).encode()) for _ in range(100)]
            positions = produce(kafka_bootstrap, topics["input"], messages)
            wait_committed(kafka_bootstrap, topics, 120, "recovery once the topic exists")
            assert daemon.ready()
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), 60)
    check_results(messages, positions, results, topics["input"])


@pytest.mark.parametrize("stage", ["unreachable", "topic missing"])
def test_sigterm_during_a_start_up_hold_exits_within_a_second(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, stage: str
) -> None:
    topics = topics_for(make_topic, dlq=False)
    bootstrap = kafka_bootstrap
    if stage == "unreachable":
        bootstrap = "127.0.0.1:9"  # discard port: nothing listens
    else:
        topics["input"] = unique_name("never")
    config = config_for(tmp_path, bootstrap, topics, "http://127.0.0.1:9/stop")
    with running_daemon(config, tmp_path / "d.log") as daemon:
        daemon.wait_port()
        wait_for(lambda: daemon.events("kafka_unavailable"), 60, "the hold")
        began = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(10) == 0
        took = time.monotonic() - began
    print(f"{stage}: exited {took:.2f}s after SIGTERM")
    assert took < 1.5  # a second, plus process exit on a loaded box


def test_a_misspelt_topic_is_never_created_on_a_broker_that_auto_creates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_EXTRA_PROPERTIES", "auto.create.topics.enable=true")
    state = tmp_path / "auto-create-broker"
    broker = KafkaBroker.start_in(state)
    try:
        topics = {"input": unique_name("in"), "output": unique_name("out")}
        topics["group"] = unique_name("g")
        create_topic(broker.bootstrap, topics["output"], 1)
        config = config_for(tmp_path, broker.bootstrap, topics, "http://127.0.0.1:9/stop")
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_port()
            wait_for(lambda: daemon.events("kafka_unavailable"), 60, "the hold")
            for _ in sampled(3):
                assert topics["input"] in hold_reason(daemon)
        assert topics["input"] not in list_topics(broker.bootstrap)
    finally:
        kafka_sh("down", state)


def list_topics(bootstrap: str) -> list[str]:
    from kafkahelp import blocking

    async def names() -> list[str]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    return blocking(names)()


def test_a_healthy_start_on_a_fresh_cluster_logs_nothing_at_error_level(tmp_path: Path) -> None:
    # A fresh cluster creates __consumer_offsets on the first group request: until then
    # the group coordinator is "not available", which aiokafka logs at error level.
    state = tmp_path / "fresh-broker"
    broker = KafkaBroker.start_in(state)
    try:
        with topics_on(broker.bootstrap) as make_topic:
            topics = topics_for(make_topic)
            run_once_each(broker.bootstrap, topics, corpus(500, seed=21), tmp_path)
        lines = [json.loads(line) for line in (tmp_path / "d.log").read_text().splitlines()]
        assert [line for line in lines if line["level"] in ("error", "critical")] == []
    finally:
        kafka_sh("down", state)


def test_records_deleted_by_retention_during_a_hold_are_counted_and_alerted(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    # A hold longer than the input topic's retention: the records behind the committed
    # offset are gone when the partition is read again. The reset must be seen.
    retention = {"retention.ms": "1000", "segment.ms": "200", "file.delete.delay.ms": "100"}
    topics = topics_for(make_topic, dlq=False)
    topics["input"] = make_topic(1, "in", retention)
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url)
        with running_daemon(config, tmp_path / "a.log") as daemon:
            daemon.wait_ready()
            produce(kafka_bootstrap, topics["input"], [str(uuid.uuid4()) for _ in range(10)])
            wait_committed(kafka_bootstrap, topics, 60, "the first records")
            api.set(status_override=401)  # a hold: nothing more is committed
            lost = produce(kafka_bootstrap, topics["input"], [str(uuid.uuid4()) for _ in range(10)])
            wait_for(lambda: daemon.events("api_configuration_error"), 60, "the hold")
            # Later records roll the segment of the held ones, which retention deletes.
            wait_for(
                lambda: (
                    produce(kafka_bootstrap, topics["input"], [str(uuid.uuid4())])
                    and beginning_offset(kafka_bootstrap, topics["input"]) > lost[-1].offset
                ),
                60,
                "retention deletes the held records",
                interval_s=0.5,
            )
        api.set(status_override=None)
        with running_daemon(config, tmp_path / "b.log") as daemon:
            daemon.wait_ready()
            wait_for(lambda: daemon.events("offset_reset"), 60, "the reset is logged")
            wait_committed(kafka_bootstrap, topics, 60, "what is left is processed")
            (line,) = daemon.events("offset_reset")
            assert line["level"] == "error"
            assert line["partition"] == f"{topics['input']}/0"
            resets = {"topic": topics["input"], "partition": "0"}
            assert daemon.metric("streamstop_offset_resets_total", resets) == 1


def beginning_offset(bootstrap: str, topic: str) -> int:
    from kafkahelp import blocking

    async def first() -> int:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            return int((await consumer.beginning_offsets([tp]))[tp])
        finally:
            await consumer.stop()

    return blocking(first)()


@pytest.mark.parametrize("reset", ["earliest", "latest"])
def test_records_deleted_below_the_committed_offset_are_counted_and_the_rest_processed(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, reset: str
) -> None:
    # The group committed offset 0; records 0-4 were deleted (as retention would during
    # a hold), 5-9 still exist and still need their results, whatever
    # kafka.auto_offset_reset (where a *new* group starts) says.
    topics = topics_for(make_topic, dlq=False)
    topics["input"] = make_topic(1, "in")
    messages = [Message(str(uuid.uuid4()).encode()) for _ in range(10)]
    positions = produce(kafka_bootstrap, topics["input"], messages)
    commit_offsets(kafka_bootstrap, topics["group"], topics["input"], {0: 0})
    delete_records_before(kafka_bootstrap, topics["input"], 0, 5)
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(
            tmp_path, kafka_bootstrap, topics, api.url, kafka__auto_offset_reset=reset
        )
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_committed(kafka_bootstrap, topics, 60, "what is left is processed")
            (line,) = daemon.events("offset_reset")
            assert (line["level"], line["offset"], line["cause"]) == ("error", 0, "records deleted")
            resets = {"topic": topics["input"], "partition": "0"}
            assert daemon.metric("streamstop_offset_resets_total", resets) == 1
        results = consume_all(kafka_bootstrap, topics["output"], 5, timeout_s=30)
    check_results(messages[5:], positions[5:], results, topics["input"])
    assert len(results) == 5


def test_a_huge_key_or_streamstop_header_never_stops_the_daemon(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    # What the smaller forms cannot drop was a crash loop: a DLQ copy's key, and an input
    # header that happens to be named like streamstop's own.
    topics = topics_for(make_topic, dlq=False)
    topics["output"] = make_topic(6, "out", SMALL_LIMIT)
    topics["dlq"] = make_topic(1, "dlq", SMALL_LIMIT)
    good = [Message(str(uuid.uuid4()).encode(), partition=0) for _ in range(100)]
    keyed = Message(b"not a uuid", key=b"k" * 70_000, partition=0)
    named_uuid = str(uuid.uuid4())
    named = Message(named_uuid.encode(), headers=[("streamstop-x", b"h" * 70_000)], partition=0)
    messages = [*good[:50], keyed, named, *good[50:]]
    _, results = run_once_each(kafka_bootstrap, topics, messages, tmp_path)
    (copy,) = consume_all(kafka_bootstrap, topics["dlq"], 1, timeout_s=30)
    assert copy.key is None
    assert header(copy, "streamstop-truncated") == b"true"
    (result,) = [r for r in results if r.key == named_uuid.encode()]
    assert dict(result.headers) == {"streamstop-truncated": b"headers,requestId"}

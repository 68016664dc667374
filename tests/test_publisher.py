"""The publisher against a fake of its I/O edge (the producer): what it sends, how it
sizes record batches to each topic's limit, and how it rides out Kafka's refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    TopicAuthorizationFailedError,
)
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from streamstop.core.fit import Kind, record_size
from streamstop.metrics import Metrics
from streamstop.publisher import OutMessage, Publisher
from streamstop.topics import TopicLimits, describe_topics

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


@dataclass
class Cluster:
    partitions: dict[str, int]

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.partitions.get(topic)
        return None if count is None else set(range(count))


@dataclass
class Sent:
    topic: str
    partition: int
    size: int
    records: list[Record]


@dataclass
class FakeProducer:
    """Accepts batches like aiokafka's producer; `refuse` decides per batch whether the
    broker refuses it (an exception) or acknowledges it (None)."""

    cluster: Cluster
    refuse: Callable[[Sent], BaseException | None] = lambda _: None
    start_error: BaseException | None = None
    sent: list[Sent] = field(default_factory=list)
    started: bool = False
    stopped: bool = False

    @property
    def client(self) -> Any:
        return self

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return self.cluster.partitions_for_topic(topic) or set()

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        raw = bytes(batch._build())
        records = [(r.key, r.value, list(r.headers)) for r in DefaultRecordBatch(raw)]
        sent = Sent(topic, partition, len(raw), records)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        error = self.refuse(sent)
        if error is None:
            self.sent.append(sent)
            future.set_result(None)
        else:
            future.set_exception(error)
        return future


@dataclass
class Limits:
    limits: dict[str, int]
    on_topic: dict[str, int] = field(default_factory=dict)  # what a refresh would read
    refreshed: list[str] = field(default_factory=list)

    def max_message_bytes(self, topic: str) -> int:
        return self.limits[topic]

    async def refused(self, topic: str, batch_bytes: int) -> None:
        self.refreshed.append(topic)
        self.limits[topic] = self.on_topic.get(topic, self.limits[topic])


@dataclass
class Owner:
    revoked: bool = False


def publisher_with(
    limits: dict[str, int] | Any,
    refuse: Callable[[Sent], BaseException | None] = lambda _: None,
    start_errors: Iterator[BaseException | None] | None = None,
) -> tuple[Publisher, list[FakeProducer], Any]:
    """A publisher over fake producers (the n-th one's start fails with the n-th of
    `start_errors`, None for a good start); `limits` is a dict for the fake `Limits`,
    or a real one."""
    cluster = Cluster({"out": 3, "dlq": 1})
    producers: list[FakeProducer] = []

    def make() -> FakeProducer:
        producers.append(FakeProducer(cluster, refuse, next(start_errors or iter(()), None)))
        return producers[-1]

    known = Limits(dict(limits)) if isinstance(limits, dict) else limits
    return Publisher(make, known, Metrics()), producers, known


def result(i: int, headers: list[tuple[str, bytes]] | None = None) -> OutMessage:
    key = f"{i:08x}-0000-4000-8000-000000000000".encode()
    value = b'{"schemaVersion":1,"requestId":"r%d","status":"stopped"}' % i
    return OutMessage(
        "out", key, value, headers or [("traceparent", b"00-1-2-01")], Kind.RESULT, None
    )


def keys(records: Iterable[Record]) -> list[bytes]:
    return sorted(key or b"" for key, _, _ in records)


def delivered(producers: list[FakeProducer]) -> list[Record]:
    return [record for producer in producers for sent in producer.sent for record in sent.records]


async def test_record_batches_never_exceed_the_topic_limit() -> None:
    publisher, producers, _ = publisher_with({"out": 65_536})
    await publisher.start()
    messages = [result(i) for i in range(3_000)]
    await publisher.publish(messages)
    (producer,) = producers
    assert all(sent.size <= 65_536 for sent in producer.sent)
    assert len(producer.sent) > 3  # more than one batch per partition was needed
    assert keys(delivered(producers)) == keys((m.key, m.value, []) for m in messages)


async def test_a_result_too_large_goes_without_its_copied_headers() -> None:
    publisher, producers, _ = publisher_with({"out": 65_536})
    await publisher.start()
    big = [
        ("traceparent", b"00-1-2-01"),
        ("blob", b"x" * 100_000),
        ("streamstop-redrive-of", b"t/0/1"),
    ]
    await publisher.publish([result(1), result(2, big), result(3)])
    records = {key: (value, headers) for key, value, headers in delivered(producers)}
    value, headers = records[result(2).key]
    assert headers == [("streamstop-redrive-of", b"t/0/1"), ("streamstop-truncated", b"headers")]
    assert value == result(2).value
    assert records[result(1).key][1] == [("traceparent", b"00-1-2-01")]


async def test_a_result_too_large_even_without_headers_loses_its_request_id() -> None:
    publisher, producers, _ = publisher_with({"out": 4_096})
    await publisher.start()
    message = result(1)._replace(value=b'{"requestId":"%s","status":"stopped"}' % (b"r" * 8_000))
    await publisher.publish([message])
    ((_, value, headers),) = delivered(producers)
    assert value == b'{"requestId":null,"status":"stopped"}'
    assert headers == [("streamstop-truncated", b"headers,requestId")]


async def test_a_dlq_copy_is_cut_to_fit_value_first() -> None:
    publisher, producers, _ = publisher_with({"out": 1_048_588, "dlq": 65_536})
    await publisher.start()
    copied = [("traceparent", b"t" * 100), ("streamstop-error", b"not JSON nor a bare uuid")]
    copy = OutMessage("dlq", b"k", b"v" * 500_000, copied, Kind.DLQ, None)
    huge_headers = [("blob", b"h" * 70_000), ("streamstop-source", b"in/0/7")]
    headers_only = OutMessage("dlq", b"k", b"v" * 10, huge_headers, Kind.DLQ, None)
    await publisher.publish([copy, headers_only])
    (first, second) = delivered(producers)
    assert 0 < len(first[1] or b"") < 65_536
    assert first[2] == [*copied, ("streamstop-truncated", b"true")]
    assert record_size(*first) <= 65_536
    assert second[1] == b""
    assert second[2] == [("streamstop-source", b"in/0/7"), ("streamstop-truncated", b"true")]


async def test_a_refusal_as_too_large_rereads_the_limit_and_replaces_the_producer() -> None:
    # The operator lowered the topic's limit after start: the first batches are refused,
    # which leaves the idempotent producer's sequence broken for that partition.
    def refuse(sent: Sent) -> BaseException | None:
        return MessageSizeTooLargeError() if sent.size > 4_000 else None

    publisher, producers, limits = publisher_with({"out": 1_048_588}, refuse)
    limits.on_topic["out"] = 4_000
    await publisher.start()
    messages = [result(i) for i in range(500)]
    await asyncio.wait_for(publisher.publish(messages), 30)
    assert "out" in limits.refreshed
    assert len(producers) == 2
    assert producers[0].stopped
    assert producers[1].started
    assert keys(delivered(producers)) == keys((m.key, m.value, []) for m in messages)


async def test_a_broken_sequence_replaces_the_producer() -> None:
    failures = iter([OutOfOrderSequenceNumber()])
    publisher, producers, _ = publisher_with({"out": 1_048_588}, lambda _: next(failures, None))
    await publisher.start()
    await asyncio.wait_for(publisher.publish([result(1)]), 30)
    assert len(producers) == 2
    assert delivered(producers)[0][0] == result(1).key


async def test_authorization_errors_are_held_and_retried_until_they_clear() -> None:
    refusals = iter([TopicAuthorizationFailedError("out")] * 3)
    publisher, producers, _ = publisher_with({"out": 1_048_588}, lambda _: next(refusals, None))
    await publisher.start()
    seen: list[str | None] = []

    async def watch() -> None:
        while True:
            seen.append(publisher.refused)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(publisher.publish([result(1)]), 30)
    watcher.cancel()
    assert any(reason and "TopicAuthorizationFailed" in reason for reason in seen)
    assert publisher.refused is None
    assert len(delivered(producers)) == 1


async def test_messages_of_a_revoked_partition_are_given_up() -> None:
    owner = Owner()
    publisher, producers, _ = publisher_with({"out": 1_048_588}, lambda _: KafkaConnectionError())
    await publisher.start()
    publishing = asyncio.create_task(publisher.publish([result(1)._replace(owner=owner)]))
    await asyncio.sleep(0.5)
    assert not publishing.done()  # retried for as long as Kafka refuses
    owner.revoked = True
    await asyncio.wait_for(publishing, 10)
    assert delivered(producers) == []


@pytest.mark.parametrize("count", [2, 1])
async def test_a_topic_recreated_with_fewer_partitions_is_followed(count: int) -> None:
    publisher, producers, _ = publisher_with({"out": 1_048_588})
    await publisher.start()
    await publisher.publish([result(i) for i in range(30)])
    assert {sent.partition for sent in producers[0].sent} == {0, 1, 2}
    before = len(producers[0].sent)
    producers[0].cluster.partitions["out"] = count
    await publisher.publish([result(i) for i in range(30, 60)])
    assert {sent.partition for sent in producers[0].sent[before:]} == set(range(count))


async def test_messages_of_a_partition_revoked_before_they_go_out_are_never_sent() -> None:
    publisher, producers, _ = publisher_with({"out": 1_048_588})
    await publisher.start()
    await publisher.publish([result(1)._replace(owner=Owner(revoked=True)), result(2)])
    assert keys(delivered(producers)) == [result(2).key]


async def test_a_replacement_producer_that_cannot_start_is_a_hold_not_a_crash() -> None:
    failures = iter([OutOfOrderSequenceNumber()])
    down = KafkaConnectionError("Unable to bootstrap")
    publisher, producers, _ = publisher_with(
        {"out": 1_048_588},
        lambda _: next(failures, None),
        iter([None, down, down, None]),  # the first start, two failed replacements
    )
    await publisher.start()
    reasons: list[str | None] = []

    async def watch() -> None:
        while True:
            reasons.append(publisher.refused)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(publisher.publish([result(1), result(2)]), 30)
    watcher.cancel()
    assert len(producers) == 4
    assert any(reason and "cannot start a producer" in reason for reason in reasons)
    assert publisher.refused is None
    assert keys(delivered(producers)) == keys((m.key, m.value, []) for m in [result(1), result(2)])
    # Nothing was sent through a producer that had not started.
    assert all(producer.started or not producer.sent for producer in producers)


async def test_a_record_that_cannot_be_cut_small_enough_is_a_hold_not_a_crash() -> None:
    publisher, producers, limits = publisher_with({"out": 100})  # below any result
    await publisher.start()
    publishing = asyncio.create_task(publisher.publish([result(1)]))
    await asyncio.sleep(0.5)
    assert not publishing.done()
    assert publisher.refused is not None
    assert "DoesNotFit" in publisher.refused
    limits.on_topic["out"] = 1_048_588  # the operator raises the topic's limit
    await asyncio.wait_for(publishing, 30)
    assert publisher.refused is None
    assert keys(delivered(producers)) == [result(1).key]


@dataclass
class UnreadableConfigsAdmin:
    """An admin client that sees the topic but may not read its configuration."""

    async def describe_topics(self) -> list[dict[str, Any]]:
        partitions = [{"partition": p, "replicas": [1], "leader": 1} for p in range(3)]
        return [{"topic": "out", "error_code": 0, "partitions": partitions}]

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        denied = {"resource_name": "out", "error_code": 29, "config_entries": []}
        return [SimpleNamespace(to_object=lambda: {"resources": [denied]})]


async def test_a_lowered_limit_that_cannot_be_read_is_found_by_halving() -> None:
    # No DescribeConfigs permission: the limit is Kafka's default, but the topic takes
    # 16 KiB at most. Batches halve until Kafka takes them; every message goes out.
    topics = await describe_topics(UnreadableConfigsAdmin(), ["out"])
    limits = TopicLimits(UnreadableConfigsAdmin(), topics)

    def refuse(sent: Sent) -> BaseException | None:
        return MessageSizeTooLargeError() if sent.size > 16_384 else None

    publisher, producers, _ = publisher_with(limits, refuse)
    await publisher.start()
    messages = [result(i, [("traceparent", b"t" * 200)]) for i in range(3_000)]
    await asyncio.wait_for(publisher.publish(messages), 60)
    assert keys(delivered(producers)) == keys((m.key, m.value, []) for m in messages)
    assert limits.max_message_bytes("out") <= 16_384

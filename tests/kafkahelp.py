"""Helpers for tests against the real Kafka broker: topics, produce, read back, offsets, lag.

Each helper comes in two forms: ``name_async`` for async tests and a blocking ``name`` for
sync tests. The blocking form runs the coroutine on its own event loop in a worker thread,
so it also works inside an async test (blocking that test's loop while it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, ParamSpec, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code
from aiokafka.partitioner import DefaultPartitioner

KAFKA_SH = Path(__file__).resolve().parent.parent / "scripts" / "kafka.sh"
# Below the broker's message.max.bytes (1 MiB) with room for the batch header.
_BATCH_BYTES = 512 * 1024
_TOPIC_READY_TIMEOUT_S = 30.0
_COORDINATOR_TIMEOUT_S = 30.0
_POLL_INTERVAL_S = 0.1
# Checks `consume_all` runs on every record it reads from a topic (see `check_records_of`).
_RECORD_CHECKS: dict[str, Callable[[ConsumerRecord], object]] = {}

P = ParamSpec("P")
R = TypeVar("R")
Headers = Sequence[tuple[str, bytes]]
IsolationLevel = Literal["read_uncommitted", "read_committed"]


@dataclass(frozen=True, slots=True)
class Message:
    """One record to produce.

    Without `partition`, a keyed record goes where Kafka's default partitioner puts it
    (as any real producer would) and an unkeyed one goes round-robin by list position.
    `timestamp_ms` (epoch milliseconds) defaults to now; set it to make old records.
    """

    value: bytes | None
    key: bytes | None = None
    headers: Headers = ()
    partition: int | None = None
    timestamp_ms: int | None = None


class Position(NamedTuple):
    """Where a produced record landed."""

    partition: int
    offset: int


class MakeTopic(Protocol):
    """The `make_topic` fixture: creates a fresh topic, returns its name, deletes it later."""

    def __call__(
        self, partitions: int = 6, name_prefix: str = "t", configs: dict[str, str] | None = None
    ) -> str: ...


def check_records_of(topic: str, check: Callable[[ConsumerRecord], object]) -> None:
    """Have `consume_all` run `check` (which raises to fail) on every record it reads from
    `topic`: a topic's contract is then checked by every test that reads it."""
    _RECORD_CHECKS[topic] = check


@contextlib.contextmanager
def topics_on(bootstrap: str, replication_factor: int = 1) -> Iterator[MakeTopic]:
    """A `MakeTopic` for the broker (or cluster) at `bootstrap`, its topics replicated
    `replication_factor` times; they are deleted at the end."""
    created: list[str] = []

    def make(
        partitions: int = 6, name_prefix: str = "t", configs: dict[str, str] | None = None
    ) -> str:
        topic = unique_name(name_prefix)
        create_topic(bootstrap, topic, partitions, configs, replication_factor)
        created.append(topic)
        return topic

    try:
        yield make
    finally:
        if created:
            delete_topics(bootstrap, created)


def unique_name(prefix: str) -> str:
    """A fresh topic, group or transactional id, so runs sharing a broker never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def kafka_sh(*args: str | Path, env: Mapping[str, str] | None = None) -> str:
    """Run scripts/kafka.sh with `args` (and `env` added to the environment) and return
    its stdout, stripped.

    Raises RuntimeError carrying the script's stderr (e.g. the broker's errors) on failure.
    """
    done = subprocess.run(
        [str(KAFKA_SH), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise RuntimeError(f"kafka.sh {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stdout.strip()


@dataclass(frozen=True)
class KafkaBroker:
    """The broker tests run against.

    `state_dir` is None for an external broker (KAFKA_BOOTSTRAP), which tests must not
    stop. A broker started here keeps its address and data across `stop()` / `start()`,
    so tests can take it away and bring it back.
    """

    bootstrap: str
    state_dir: Path | None

    @classmethod
    def start_in(cls, state_dir: Path) -> KafkaBroker:
        """Start (or find running) the broker whose state lives in `state_dir`."""
        return cls(kafka_sh("up", state_dir), state_dir)

    def start(self) -> None:
        """Start this broker again (same address, same data); no-op if it is running."""
        kafka_sh("up", self._own_state_dir())

    def stop(self) -> None:
        """Stop this broker (SIGTERM, SIGKILL after 30 s) and wait until it has exited."""
        kafka_sh("down", self._own_state_dir())

    def kill(self) -> None:
        """SIGKILL this broker, as a crash would, and wait until it has exited."""
        kafka_sh("kill", self._own_state_dir())

    def _own_state_dir(self) -> Path:
        if self.state_dir is None:
            raise RuntimeError("an external broker (KAFKA_BOOTSTRAP) is not started by tests")
        return self.state_dir


@dataclass(frozen=True)
class KafkaCluster:
    """A KRaft cluster started by tests (`scripts/kafka.sh cluster-up`): node ids 1..N,
    each a broker and a controller voter, internal topics replicated N times."""

    bootstrap: str  # every node's address, comma separated
    state_dir: Path

    @classmethod
    def start_in(cls, state_dir: Path, nodes: int) -> KafkaCluster:
        """Start (or find running) the cluster of `nodes` nodes whose state lives in `state_dir`."""
        return cls(kafka_sh("cluster-up", state_dir, str(nodes)), state_dir)

    def node(self, node_id: int) -> KafkaBroker:
        """Node `node_id` alone, to take it away (`stop`, `kill`) and bring it back."""
        state_dir = self.state_dir / f"node{node_id}"
        return KafkaBroker(kafka_sh("bootstrap", state_dir), state_dir)


def blocking(coro_fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """The blocking form of `coro_fn`, usable from sync tests and from async ones."""

    @functools.wraps(coro_fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        # A worker thread gets its own event loop, so an already running loop is no obstacle.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(lambda: asyncio.run(coro_fn(*args, **kwargs))).result()

    return run


@asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@asynccontextmanager
async def _consumer(bootstrap: str, **options: Any) -> AsyncIterator[Any]:
    # Without a group_id in `options` the consumer belongs to no group.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _topic_partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    # The admin client's metadata is fresh; a consumer's may predate the topic.
    async with _admin(bootstrap) as admin:
        described = await admin.describe_topics([topic])
    (entry,) = described
    if entry["error_code"] != 0:
        raise for_code(entry["error_code"])(f"topic {topic!r}")
    return [TopicPartition(topic, p) for p in sorted(x["partition"] for x in entry["partitions"])]


def _raise_topic_errors(results: list[Any]) -> None:
    for topic, code, *_ in results:
        if code != 0:
            raise for_code(code)(f"topic {topic!r}")


async def create_topic_async(
    bootstrap: str,
    topic: str,
    partitions: int = 6,
    configs: dict[str, str] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create `topic` (with topic `configs`) and return once every partition has a
    leader, i.e. it is usable."""
    async with _admin(bootstrap) as admin:
        created = await admin.create_topics(
            [NewTopic(topic, partitions, replication_factor, topic_configs=configs or {})]
        )
        _raise_topic_errors(created.topic_errors)
        deadline = time.monotonic() + _TOPIC_READY_TIMEOUT_S
        while not _has_leaders(await admin.describe_topics([topic]), partitions):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {topic!r} has no leaders after creation")
            await asyncio.sleep(_POLL_INTERVAL_S)


def _has_leaders(described: list[Any], partitions: int) -> bool:
    return any(
        t["error_code"] == 0
        and len(t["partitions"]) == partitions
        and all(p["leader"] >= 0 for p in t["partitions"])
        for t in described
    )


async def delete_topics_async(bootstrap: str, topics: Sequence[str]) -> None:
    """Delete `topics` (they must exist); the broker finishes the deletion asynchronously."""
    async with _admin(bootstrap) as admin:
        deleted = await admin.delete_topics(list(topics))
        _raise_topic_errors(deleted.topic_error_codes)


_PLACEHOLDER_KEY = "QQQQ"


async def produce_bad_header_async(
    bootstrap: str,
    topic: str,
    partition: int,
    values: Sequence[bytes],
    bad: int = 0,
    bad_key: bytes = b"\xff\xfe\xfd\xfc",
) -> list[Position]:
    """Produce `values` as one record batch in which record `bad` has a header key that
    is not UTF-8, as a librdkafka client can write (the Java client and aiokafka cannot):
    built with a placeholder key, patched, its CRC-32C recomputed. Returns where each
    record landed."""
    from aiokafka.record.util import calc_crc32c

    assert len(bad_key) == len(_PLACEHOLDER_KEY)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        for index, value in enumerate(values):
            key = _PLACEHOLDER_KEY if index == bad else "ok-h"
            batch.append(timestamp=None, key=None, value=value, headers=[(key, b"v")])
        raw = bytearray(batch._builder.build())
        at = raw.index(_PLACEHOLDER_KEY.encode())
        raw[at : at + len(bad_key)] = bad_key
        # v2 batch: the CRC at bytes 17..20 covers everything from the attributes (21) on.
        raw[17:21] = calc_crc32c(bytes(raw[21:])).to_bytes(4, "big")
        batch._buffer = bytes(raw)
        batch.close()
        metadata = await (await producer.send_batch(batch, topic, partition=partition))
        return [Position(partition, metadata.offset + i) for i in range(len(values))]
    finally:
        await producer.stop()


async def produce_async(
    bootstrap: str,
    topic: str,
    messages: Iterable[Message | bytes | str],
    compression_type: str | None = None,
) -> list[Position]:
    """Produce `messages` to `topic` (acks=all, idempotent, compressed with
    `compression_type` if given) and return where each landed.

    Bytes and str (UTF-8) are unkeyed values. Records are appended to per-partition
    batches directly, which is several times faster than one `send()` per record.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        max_batch_size=_BATCH_BYTES,
        compression_type=compression_type,
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        batches = _Batches(producer, topic)
        for index, item in enumerate(messages):
            message = item if isinstance(item, Message) else Message(_as_bytes(item))
            await batches.add(index, message, _choose_partition(message, index, partitions))
        return await batches.flush()
    finally:
        await producer.stop()


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _choose_partition(message: Message, index: int, partitions: list[int]) -> int:
    if message.partition is not None:
        return message.partition
    if message.key is not None:
        return int(DefaultPartitioner()(message.key, partitions, partitions))
    return partitions[index % len(partitions)]


class _Batches:
    """Open record batches per partition; remembers which input index each record was."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._open: dict[int, tuple[Any, list[int]]] = {}
        self._sent: list[tuple[asyncio.Future[Any], list[int]]] = []

    async def add(self, index: int, message: Message, partition: int) -> None:
        if partition in self._open and not self._append(partition, message, index):
            await self._send(partition)
        if partition not in self._open:
            self._open[partition] = (self._producer.create_batch(), [])
            if not self._append(partition, message, index):
                raise ValueError(f"message {index} does not fit in a {_BATCH_BYTES}-byte batch")

    def _append(self, partition: int, message: Message, index: int) -> bool:
        batch, indices = self._open[partition]
        appended = batch.append(
            key=message.key,
            value=message.value,
            timestamp=message.timestamp_ms,
            headers=list(message.headers),
        )
        if appended is None:
            return False
        indices.append(index)
        return True

    async def _send(self, partition: int) -> None:
        batch, indices = self._open.pop(partition)
        future = await self._producer.send_batch(batch, self._topic, partition=partition)
        self._sent.append((future, indices))

    async def flush(self) -> list[Position]:
        """Send the open batches, wait for all acks, return positions in input order."""
        for partition in list(self._open):
            await self._send(partition)
        positions: dict[int, Position] = {}
        for future, indices in self._sent:
            meta = await future
            for offset_in_batch, index in enumerate(indices):
                positions[index] = Position(meta.partition, meta.offset + offset_in_batch)
        return [positions[i] for i in range(len(positions))]


async def publish_aborted_async(
    bootstrap: str, topic: str, key: bytes, value: bytes, partition: int | None = None
) -> None:
    """Write one record in a transaction that is then aborted (read_committed never sees it)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=unique_name("aborted")
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, value, key=key, partition=partition)
        await producer.abort_transaction()
    finally:
        await producer.stop()


async def consume_all_async(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 30.0,
    *,
    isolation_level: IsolationLevel = "read_uncommitted",
) -> list[ConsumerRecord]:
    """Read `topic` from the beginning, without a consumer group, sorted by (partition, offset).

    Returns once at least `expected` records arrived and everything already in the topic
    at that moment is read (so duplicates beyond `expected` show up without waiting), or
    with what arrived so far when `timeout_s` passes: assert on the result. Each record
    passes the topic's check first, if one is registered (`check_records_of`).
    """
    async with _consumer(bootstrap, isolation_level=isolation_level) as consumer:
        tps = await _topic_partitions(bootstrap, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord] = []
        ends: dict[TopicPartition, int] | None = None
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if ends is None and len(records) >= expected:
                ends = await consumer.end_offsets(tps)
            if ends is not None and await _reached(consumer, ends):
                break
            fetched = await consumer.getmany(*tps, timeout_ms=int(min(left, 0.5) * 1000))
            for batch in fetched.values():
                records.extend(batch)
    check = _RECORD_CHECKS.get(topic)
    if check is not None:
        for record in records:
            check(record)
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def _reached(consumer: Any, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def end_offsets_async(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset to be written, per partition of `topic`."""
    async with _consumer(bootstrap) as consumer:
        tps = await _topic_partitions(bootstrap, topic)
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}


async def stable_offsets_async(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """(last stable offset, high watermark) per partition of `topic`. The first is below
    the second while a transaction that wrote to the partition is open."""
    async with _consumer(bootstrap, isolation_level="read_committed") as committed:
        tps = await _topic_partitions(bootstrap, topic)
        stable = await committed.end_offsets(tps)
    async with _consumer(bootstrap) as uncommitted:
        high = await uncommitted.end_offsets(tps)
    return {tp.partition: (stable[tp], high[tp]) for tp in tps}


async def group_protocol_async(bootstrap: str, group: str) -> str:
    """The partition assignment strategy the consumer group runs with now ("" between
    generations)."""
    async with _admin(bootstrap) as admin:
        (response,) = await admin.describe_consumer_groups([group])
    (described,) = response.to_object()["groups"]
    return str(described["protocol"])


async def committed_offsets_async(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Offsets `group` has committed on `topic`, per partition; uncommitted ones are absent.

    Offsets committed in a transaction appear a moment after the commit returns: poll.
    """
    async with _admin(bootstrap) as admin:
        committed = await _until_coordinator(lambda: admin.list_consumer_group_offsets(group))
    return {
        tp.partition: meta.offset
        for tp, meta in committed.items()
        if tp.topic == topic and meta.offset >= 0
    }


async def _until_coordinator(call: Callable[[], Awaitable[R]]) -> R:
    """`call()`, again while it fails for a retriable reason (the admin client won't
    retry): the first group request of a fresh broker creates __consumer_offsets, and
    the coordinator is "not available" until then; so is a coordinator that moves."""
    deadline = time.monotonic() + _COORDINATOR_TIMEOUT_S
    while True:
        try:
            return await call()
        except KafkaError as error:
            if not error.retriable or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(_POLL_INTERVAL_S)


# FindCoordinator's key type for a transactional id (0 is a consumer group).
_TRANSACTION_COORDINATOR = 1


async def transaction_coordinators_async(
    bootstrap: str, transactional_ids: Sequence[str]
) -> dict[str, int]:
    """The node id of the broker coordinating each of `transactional_ids` now."""
    coordinators: dict[str, int] = {}
    async with _admin(bootstrap) as admin:
        for transactional_id in transactional_ids:
            find = functools.partial(
                admin.find_coordinator, transactional_id, _TRANSACTION_COORDINATOR
            )
            coordinators[transactional_id] = int(await _until_coordinator(find))
    return coordinators


async def commit_offsets_async(
    bootstrap: str, group: str, topic: str, offsets: dict[int, int]
) -> None:
    """Commit `offsets` (partition -> next offset to read) for `group`, as a consumer would."""
    tps = {TopicPartition(topic, partition): offset for partition, offset in offsets.items()}
    async with _consumer(bootstrap, group_id=group) as consumer:
        consumer.assign(list(tps))
        await consumer.commit(tps)


async def lag_async(bootstrap: str, group: str, topic: str) -> int:
    """Records of `topic` not yet committed by `group`, summed over partitions.

    A partition the group never committed counts from its beginning, as for a group
    that starts at `earliest` (streamstop's default).
    """
    committed = await committed_offsets_async(bootstrap, group, topic)
    async with _consumer(bootstrap) as consumer:
        tps = await _topic_partitions(bootstrap, topic)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
    return sum(ends[tp] - committed.get(tp.partition, begins[tp]) for tp in tps)


# Kafka's resource and pattern types (org.apache.kafka.common.resource).
TOPIC, TRANSACTIONAL_ID = 2, 5
LITERAL, PREFIXED = 3, 4
_ANY_HOST = "*"


async def change_acls_async(
    bootstrap: str,
    name: str,
    acls: Sequence[tuple[str, int, int]],
    *,
    create: bool,
    resource: tuple[int, int] = (TOPIC, LITERAL),
) -> None:
    """Create (or delete) ACLs on `name` (a literal topic unless `resource` says which
    resource and pattern type): (principal, operation, permission) each, with Kafka's
    codes for operation and permission (org.apache.kafka.common.acl)."""
    from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest

    kind = CreateAclsRequest if create else DeleteAclsRequest
    async with _admin(bootstrap) as admin:
        for principal, operation, permission in acls:
            request = kind(
                resource[0],
                name,
                resource[1],
                principal,
                _ANY_HOST,
                operation,
                permission,
            )
            response = await admin._send_request(request)
            results = response.creation_responses if create else response.filter_responses
            for code, message, *_ in results:
                if code != 0:
                    raise for_code(code)(message)


async def delete_records_before_async(
    bootstrap: str, topic: str, partition: int, offset: int
) -> None:
    """Delete the records of `topic`/`partition` below `offset`, as retention would."""
    from aiokafka.admin import RecordsToDelete

    async with _admin(bootstrap) as admin:
        await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(offset)})


create_topic = blocking(create_topic_async)
delete_records_before = blocking(delete_records_before_async)
delete_topics = blocking(delete_topics_async)
produce = blocking(produce_async)
produce_bad_header = blocking(produce_bad_header_async)
publish_aborted = blocking(publish_aborted_async)
consume_all = blocking(consume_all_async)
end_offsets = blocking(end_offsets_async)
stable_offsets = blocking(stable_offsets_async)
group_protocol = blocking(group_protocol_async)
committed_offsets = blocking(committed_offsets_async)
transaction_coordinators = blocking(transaction_coordinators_async)
commit_offsets = blocking(commit_offsets_async)
lag = blocking(lag_async)
change_acls = blocking(change_acls_async)

"""Publishing results and DLQ copies to Kafka: every message acknowledged, or abandoned
with its revoked partition; never one that Kafka would refuse.

Messages go out as record batches built here, one partition at a time, each sized to its
topic's effective `max.message.bytes` (`send_batch` and `create_batch` would size them by
the producer-wide limit), and a record that would not fit is cut first (`core/fit.py`).
Failures are retried for as long as they last: a produce outage, even an authorization
error, is a hold (readiness false for authorization), never an exit. If Kafka refuses a
batch as too large anyway (the limit was lowered at runtime), the limit is read again and
the producer replaced: aiokafka's idempotent producer cannot recover the partition's
sequence numbers after such a refusal.

Under `exactly_once` each input partition has a Publisher of its own around its
transactional producer (`transactions.py`): the same batches, marked transactional,
submitted inside the partition's transaction and acknowledged before it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import structlog
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    IllegalOperation,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.producer.message_accumulator import BatchBuilder

from streamstop.core.fit import DoesNotFit, Kind, fit
from streamstop.core.partition import partition_for_key
from streamstop.metrics import Metrics

log = structlog.get_logger("streamstop.publisher")

RETRY_PAUSE_S = (0.2, 5.0)
ENQUEUE_TIMEOUT_S = 30.0
# Acks are awaited in turns of this length, to notice messages whose partition is gone.
ACK_TURN_S = 1.0
LOG_EVERY_S = 30.0
MAX_BATCH_BYTES = 256 * 1024
REFUSED_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
_BROKEN_SEQUENCE = (*REFUSED_TOO_LARGE, OutOfOrderSequenceNumber)
# Refusals that last until someone acts (an ACL, a topic's limit): the pod is not ready.
REFUSED_FOR_GOOD = (
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    DoesNotFit,
)


class Owner(Protocol):
    """The input partition a message belongs to."""

    @property
    def revoked(self) -> bool: ...


class OutMessage(NamedTuple):
    """One message to produce, for a record of `owner` (None: belongs to no partition)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    kind: Kind
    owner: Owner | None


class Limits(Protocol):
    """Each topic's effective `max.message.bytes`."""

    def max_message_bytes(self, topic: str) -> int: ...

    async def refused(self, topic: str, batch_bytes: int) -> None:
        """Kafka refused a batch of `batch_bytes` as too large for `topic`."""


Sent = tuple[list[OutMessage], int, "asyncio.Future[Any]"]


class Failure(NamedTuple):
    """A message Kafka did not take, why, and the size of the batch it was in."""

    message: OutMessage
    error: BaseException
    batch_bytes: int


class Publisher:
    """Sends messages through one idempotent producer (acks=all), replaced when Kafka
    leaves it unable to go on; or through a transactional one (`transactional`), whose
    failures are its owner's to handle."""

    def __init__(
        self,
        make_producer: Callable[[], Any],
        limits: Limits,
        metrics: Metrics,
        *,
        transactional: bool = False,
    ) -> None:
        self._make_producer = make_producer
        self._producer: Any = None
        self._limits = limits
        self._metrics = metrics
        self._transactional = transactional
        self._round_robin = 0
        self._replacing: asyncio.Task[None] | None = None
        self._usable = asyncio.Event()  # a started producer is in place
        self.refused: str | None = None  # why Kafka refuses what we send, while it does
        self._logged: dict[str, float] = {}  # when each kind of failure was last logged

    async def start(self) -> None:
        """Start a new producer (a failed start leaves its state: never retry one)."""
        self._producer = await self._started_producer()
        self._usable.set()

    async def stop(self) -> None:
        """Flush and stop the producer (and a replacement being started)."""
        if self._replacing is not None:
            self._replacing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replacing
        if self._producer is not None:
            await self._producer.stop()

    @property
    def producer(self) -> Any:
        """The started producer (for its transactions)."""
        return self._producer

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Return once Kafka acknowledged every message whose owner is not revoked.
        Retries for as long as it takes (shutdown cancels)."""
        todo = list(messages)
        if any(owner is not None and owner.revoked for owner in {m.owner for m in todo}):
            todo = [message for message in todo if not _abandoned(message)]
        attempt = 0
        while todo:
            await self._usable.wait()  # not while a producer is being replaced
            failed = await self._send_all(todo)
            todo = [failure.message for failure in failed if not _abandoned(failure.message)]
            if not todo:
                break
            attempt += 1
            await self._after_failure(failed)
            if self._every("publish"):  # one line per outage, not per publish
                event = "publish_refused" if self.refused else "publish_retry"
                level = log.error if self.refused else log.warning
                level(event, messages=len(todo), attempt=attempt, error=repr(failed[0].error))
            low, high = RETRY_PAUSE_S
            await asyncio.sleep(random.uniform(low, min(high, low * 2**attempt)))
        if self.refused is not None:
            self.refused = None
            self._logged.pop("publish", None)
            log.info("publish_accepted")

    async def _after_failure(self, failed: list[Failure]) -> None:
        await self.note_failures(failed)
        if any(isinstance(failure.error, _BROKEN_SEQUENCE) for failure in failed):
            await self._replace_producer()

    async def note_failures(self, failed: list[Failure]) -> None:
        """What refused messages say: Kafka refuses them for good (`refused`), or a
        topic's limit was lowered (read again, so the next attempt fits)."""
        errors = [failure.error for failure in failed]
        refused = next((e for e in errors if isinstance(e, REFUSED_FOR_GOOD)), None)
        self.refused = None if refused is None else repr(refused)
        too_large = {
            failure.message.topic: failure.batch_bytes
            for failure in failed
            if isinstance(failure.error, (*REFUSED_TOO_LARGE, DoesNotFit))
        }
        for topic, batch_bytes in too_large.items():
            await self._limits.refused(topic, batch_bytes)
            if self._every(f"limit {topic}"):
                limit = self._limits.max_message_bytes(topic)
                log.warning("topic_limit_refreshed", topic=topic, max_message_bytes=limit)

    def _every(self, what: str) -> bool:
        """True at most once per LOG_EVERY_S for `what`: a log line, not a storm."""
        now = time.monotonic()
        if now - self._logged.get(what, float("-inf")) < LOG_EVERY_S:
            return False
        self._logged[what] = now
        return True

    async def _replace_producer(self) -> None:
        """A new producer (a new producer id): the old one's sequence for a partition is
        broken once the broker refused a batch. One replacement at a time; publishes
        wait for it rather than use a producer that is not started."""
        if self._replacing is None or self._replacing.done():
            self._usable.clear()
            self._replacing = asyncio.create_task(self._replace())
        await asyncio.shield(self._replacing)

    async def _replace(self) -> None:
        if self._every("replace"):
            log.warning("producer_replaced", reason="the broker refused a batch")
        try:
            await asyncio.wait_for(self._producer.stop(), ENQUEUE_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:
            log.warning("producer_stop_failed", error=repr(exc))
        self._producer = await self._started_producer()
        self._usable.set()

    async def _started_producer(self) -> Any:
        """A new producer, started; retried while Kafka cannot start one (a hold)."""
        delay, longest = RETRY_PAUSE_S
        while True:
            producer = self._make_producer()
            try:
                await producer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                if self._producer is None:
                    raise  # at start-up the daemon's own hold takes over
                self.refused = f"cannot start a producer: {exc!r}"
                if self._every("start"):
                    log.error("producer_start_failed", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
                continue
            self.refused = None
            return producer

    async def _send_all(self, messages: list[OutMessage]) -> list[Failure]:
        """Submit every message, then wait for every ack. Returns the messages that
        failed, with why."""
        sent, failed = await self.submit(messages)
        return failed + await self.acks(sent)

    async def submit(self, messages: Sequence[OutMessage]) -> tuple[list[Sent], list[Failure]]:
        """Build record batches per partition (no per-record `send()`) and queue them,
        without waiting for acks. Returns what was queued, and what could not be (with
        why)."""
        producer = self._producer
        groups: dict[tuple[str, int], list[OutMessage]] = {}
        failed: list[Failure] = []
        counts: dict[str, int | KafkaError] = {}
        for topic in {message.topic for message in messages}:
            try:
                counts[topic] = await self._partition_count(producer, topic)
            except KafkaError as exc:
                counts[topic] = exc
        for message in messages:
            count = counts[message.topic]
            if isinstance(count, KafkaError):
                failed.append(Failure(message, count, 0))
                continue
            if message.key is None:
                self._round_robin += 1
                partition = self._round_robin % count
            else:
                partition = partition_for_key(message.key, count)
            groups.setdefault((message.topic, partition), []).append(message)
        sent: list[Sent] = []
        for (topic, partition), group in groups.items():
            limit = self._limits.max_message_bytes(topic)
            for chunk, batch in self._batches(group, limit, failed):
                try:
                    future = await self._enqueue(producer, batch, topic, partition)
                except KafkaError as exc:
                    failed.extend(Failure(message, exc, batch.size()) for message in chunk)
                    continue
                sent.append((chunk, batch.size(), future))
        return sent, failed

    async def acks(self, sent: list[Sent]) -> list[Failure]:
        """Wait for the acks; messages of revoked partitions are not waited for."""
        failed: list[Failure] = []
        waiting = {future: (chunk, size) for chunk, size, future in sent}
        while waiting:
            done, _ = await asyncio.wait(waiting, timeout=ACK_TURN_S)
            for future in done:
                chunk, size = waiting.pop(future)
                error = future.exception()
                if error is None:
                    continue
                if not isinstance(error, KafkaError | asyncio.TimeoutError):
                    raise error
                failed.extend(Failure(message, error, size) for message in chunk)
            if all(_abandoned(m) for chunk, _ in waiting.values() for m in chunk):
                break  # aiokafka delivers them or not; nobody waits for them any more
        return failed

    def _batches(
        self, group: list[OutMessage], limit: int, unfit: list[Failure]
    ) -> Iterator[tuple[list[OutMessage], BatchBuilder]]:
        """Split one partition's messages into record batches of at most `limit` bytes.
        A batch takes its first record whatever its size, so only a first record can
        overflow: then it is cut to fit and its batch started again (one that cannot be
        cut small enough goes to `unfit`: the topic's limit is below any record)."""
        size = min(limit, MAX_BATCH_BYTES)
        batch = BatchBuilder(size, 0, is_transactional=self._transactional)
        chunk: list[OutMessage] = []
        for message in group:
            appended = batch.append(
                timestamp=None, key=message.key, value=message.value, headers=list(message.headers)
            )
            if appended is None:
                # Full (and closed by aiokafka): this message opens the next one.
                yield chunk, batch
                batch, chunk = BatchBuilder(size, 0, is_transactional=self._transactional), []
                appended = batch.append(
                    timestamp=None,
                    key=message.key,
                    value=message.value,
                    headers=list(message.headers),
                )
            if not chunk and batch.size() > limit:
                try:
                    message = fitted(message, limit)
                except DoesNotFit as exc:
                    unfit.append(Failure(message, exc, limit + 1))
                    batch = BatchBuilder(size, 0, is_transactional=self._transactional)
                    continue
                batch = BatchBuilder(size, 0, is_transactional=self._transactional)
                batch.append(
                    timestamp=None,
                    key=message.key,
                    value=message.value,
                    headers=list(message.headers),
                )
            chunk.append(message)
        # Closed batches are sent at once: nothing else will be added to them, so
        # waiting out the producer's linger_ms would only add latency.
        batch.close()
        if chunk:
            yield chunk, batch

    async def _enqueue(
        self, producer: Any, batch: BatchBuilder, topic: str, partition: int
    ) -> asyncio.Future[Any]:
        """Queue a batch for its partition. aiokafka allows one queued batch per partition
        and its wait loop subtracts the elapsed time once per turn, so under contention it
        raises KafkaTimeoutError long before its timeout: keep waiting for our own."""
        deadline = time.monotonic() + ENQUEUE_TIMEOUT_S
        while True:
            try:
                future: asyncio.Future[Any] = await producer.send_batch(
                    batch, topic, partition=partition
                )
                return future
            except KafkaTimeoutError:
                if time.monotonic() >= deadline:
                    raise
            except (IllegalOperation, AssertionError):
                # aiokafka checks (or asserts) that the transaction is open: a step that
                # failed meanwhile (a refused partition) ended it; that failure is this batch's.
                ended = transaction_error(producer) if self._transactional else None
                if ended is None:
                    raise
                raise ended from None

    @staticmethod
    async def _partition_count(producer: Any, topic: str) -> int:
        """The topic's partition count as the producer's metadata knows it now: a topic
        recreated with fewer partitions is followed, not cached forever."""
        known = producer.client.cluster.partitions_for_topic(topic)
        if known:
            return len(known)
        return len(await producer.partitions_for(topic))


def transaction_error(producer: Any) -> KafkaError | None:
    """Why a transactional producer's open transaction failed, if it did (it can only be
    aborted then); retrieved, so asyncio does not log it as never retrieved."""
    ended = producer._txn_manager.wait_for_transaction_end()
    if ended is None or not ended.done() or ended.cancelled():
        return None
    error = ended.exception()
    return error if isinstance(error, KafkaError) else None


def _abandoned(message: OutMessage) -> bool:
    return message.owner is not None and message.owner.revoked


def fitted(message: OutMessage, limit: int) -> OutMessage:
    """`message` cut to fit in `limit` bytes (unchanged when it fits)."""
    key, value, headers = fit(message.kind, message.key, message.value, message.headers, limit)
    if headers is message.headers and value is message.value:
        return message
    return message._replace(key=key, value=value, headers=headers)

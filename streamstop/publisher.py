"""Publishing results and DLQ copies: send a whole group, then wait for every ack.

A group is acknowledged as a whole or not at all; sends that fail are retried until
`give_up_s`, then `PublishError` tells the daemon to stop without committing them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import structlog
from aiokafka.errors import KafkaError, KafkaTimeoutError

from streamstop.core.partition import partition_for_key

log = structlog.get_logger("streamstop.publisher")

RETRY_PAUSE_S = (0.2, 5.0)
ENQUEUE_TIMEOUT_S = 30.0


class OutMessage(NamedTuple):
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]]


class PublishError(Exception):
    """Kafka did not acknowledge a message within the give-up budget."""


class Publisher:
    """Sends messages through one idempotent producer (acks=all)."""

    def __init__(self, producer: Any, give_up_s: float) -> None:
        self._producer = producer
        self._give_up_s = give_up_s
        self._partitions: dict[str, int] = {}
        self._round_robin = 0

    async def prepare(self, topics: Iterable[str]) -> None:
        """Learn each topic's partitions before the first result is due: a missing output
        topic stops the daemon at start-up with its name, and the first batch does not
        pay for the metadata round trip."""
        for topic in topics:
            try:
                await self._partition_count(topic)
            except KafkaError as exc:
                raise PublishError(f"topic {topic!r} is not available: {exc!r}") from None

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Return once Kafka acknowledged every message; raise PublishError otherwise."""
        todo = list(messages)
        deadline = time.monotonic() + self._give_up_s
        attempt = 0
        while todo:
            try:
                # aiokafka's idempotent producer never expires a batch by itself: bound it.
                failed = await asyncio.wait_for(
                    self._send_all(todo), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                raise PublishError(
                    f"{len(todo)} messages not acknowledged within {self._give_up_s:.0f}s"
                ) from None
            if not failed:
                return
            attempt += 1
            todo = [message for message, _ in failed]
            error = failed[0][1]
            if time.monotonic() >= deadline:
                raise PublishError(f"{len(todo)} messages not acknowledged: {error!r}")
            log.warning("publish_retry", messages=len(todo), attempt=attempt, error=repr(error))
            low, high = RETRY_PAUSE_S
            await asyncio.sleep(random.uniform(low, min(high, low * 2**attempt)))

    async def _send_all(self, messages: list[OutMessage]) -> list[tuple[OutMessage, BaseException]]:
        """Build one record batch per partition (no per-record `send()`), submit them all,
        then wait for every ack. Returns the messages that failed, with why."""
        counts = {
            topic: await self._partition_count(topic) for topic in {m.topic for m in messages}
        }
        groups: dict[tuple[str, int], list[OutMessage]] = {}
        for message in messages:
            count = counts[message.topic]
            if message.key is None:
                self._round_robin += 1
                partition = self._round_robin % count
            else:
                partition = partition_for_key(message.key, count)
            groups.setdefault((message.topic, partition), []).append(message)
        sent: list[tuple[list[OutMessage], asyncio.Future[Any]]] = []
        failed: list[tuple[OutMessage, BaseException]] = []
        for (topic, partition), group in groups.items():
            for chunk, batch in self._batches(group):
                try:
                    future = await self._enqueue(batch, topic, partition)
                except KafkaError as exc:
                    failed.extend((message, exc) for message in chunk)
                    continue
                sent.append((chunk, future))
        outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        for (chunk, _), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, KafkaError | asyncio.TimeoutError):
                    raise outcome
                failed.extend((message, outcome) for message in chunk)
        return failed

    def _batches(self, group: list[OutMessage]) -> Iterator[tuple[list[OutMessage], Any]]:
        """Split one partition's messages into record batches of the producer's size."""
        batch = self._producer.create_batch()
        start = 0
        for index, message in enumerate(group):
            if (
                batch.append(
                    timestamp=None,
                    key=message.key,
                    value=message.value,
                    headers=list(message.headers),
                )
                is None
            ):
                # Full (and closed by aiokafka). The first record of a batch is always
                # accepted, however large.
                yield group[start:index], batch
                batch = self._producer.create_batch()
                start = index
                batch.append(
                    timestamp=None,
                    key=message.key,
                    value=message.value,
                    headers=list(message.headers),
                )
        # Closed batches are sent at once: nothing else will be added to them, so
        # waiting out the producer's linger_ms would only add latency.
        batch.close()
        yield group[start:], batch

    async def _enqueue(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        """Queue a batch for its partition. aiokafka allows one queued batch per partition
        and its wait loop subtracts the elapsed time once per turn, so under contention it
        raises KafkaTimeoutError long before its timeout: keep waiting for our own."""
        deadline = time.monotonic() + ENQUEUE_TIMEOUT_S
        while True:
            try:
                future: asyncio.Future[Any] = await self._producer.send_batch(
                    batch, topic, partition=partition
                )
                return future
            except KafkaTimeoutError:
                if time.monotonic() >= deadline:
                    raise

    async def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            count = len(await self._producer.partitions_for(topic))
            self._partitions[topic] = count
        return count

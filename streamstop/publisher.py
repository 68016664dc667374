"""Publishing results and DLQ copies: send a whole group, then wait for every ack.

A group is acknowledged as a whole or not at all; sends that fail are retried until
`give_up_s`, then `PublishError` tells the daemon to stop without committing them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka.errors import KafkaError

from streamstop.logs import get_logger

log = get_logger(__name__)

RETRY_PAUSE_S = (0.2, 5.0)


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

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Return once Kafka acknowledged every message; raise PublishError otherwise."""
        todo = list(messages)
        deadline = time.monotonic() + self._give_up_s
        attempt = 0
        while todo:
            failed = await self._send_all(todo)
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
        futures: list[asyncio.Future[Any]] = []
        failed: list[tuple[OutMessage, BaseException]] = []
        sent: list[OutMessage] = []
        send = self._producer.send
        for message in messages:
            try:
                futures.append(
                    await send(
                        message.topic,
                        value=message.value,
                        key=message.key,
                        headers=list(message.headers),
                    )
                )
                sent.append(message)
            except KafkaError as exc:
                failed.append((message, exc))
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for message, outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, KafkaError | asyncio.TimeoutError):
                    raise outcome
                failed.append((message, outcome))
        return failed

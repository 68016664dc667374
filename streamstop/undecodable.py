"""Finding a record aiokafka cannot decode, so it ends `invalid` instead of stopping the
partition (a header key that is not UTF-8, as some librdkafka producers can write).

aiokafka raises on the whole poll and drops its records. The search rewinds every
consuming partition to just after the records already taken in, reads forward in chunks
and then one record at a time to find the unreadable offsets, takes in the records before
them and has them answered `invalid` without their content. aiokafka decodes a whole
record batch before it skips to the fetch position, so one bad record makes every offset
of its batch unreadable: all of them are answered.

The search awaits Kafka many times; a rebalance in between makes its offsets stale, so it
is abandoned as soon as a partition it works on is no longer consuming (its positions
come from that partition's own state, never from a newer assignment).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka import TopicPartition

from streamstop.partitions import Partition

log = structlog.get_logger("streamstop.undecodable")

PROBE_TIMEOUT_S = 5.0
FIND_CHUNK = 500
MAX_RECORDS_PER_POLL = 5_000  # what a failed poll could have read of one partition
MAX_MISSES = 3


class SearchAbandoned(Exception):
    """A partition of the search stopped consuming (revoked, or reassigned) under it."""


class NotFound(Exception):
    """Polls keep failing on a record the search cannot find, or cannot read past."""


class UndecodableSearch:
    """Finds and answers the records a failed poll could not decode."""

    def __init__(
        self,
        consumer: Any,
        take: Callable[[dict[TopicPartition, list[Any]]], None],
        answer: Callable[[Partition, int, int], None],
    ) -> None:
        self._consumer = consumer
        self._take = take  # takes in records that read fine
        self._answer = answer  # answers offsets [first, end) of a partition `invalid`
        self._misses = 0

    def reset(self) -> None:
        """A poll succeeded: the last failure was dealt with."""
        self._misses = 0

    async def run(self, parts: list[Partition], paused: bool) -> None:
        """After a poll failed to decode: rewind `parts` (every consuming partition),
        then find the culprit and answer it. Raises SearchAbandoned on a rebalance, and
        NotFound when a poll keeps failing on a record that cannot be found."""
        consumer = self._consumer
        self._misses += 1
        if self._misses > MAX_MISSES:
            raise NotFound("polls keep failing on a record that cannot be found")
        for part in parts:
            # The failed poll moved positions past records it never returned.
            assert part.position is not None, "a consuming partition knows its position"
            consumer.seek(part.tp, part.position)
        if paused:
            consumer.resume(*(part.tp for part in parts))  # probing needs them fetched
        try:
            for part in parts:
                if await self._search(part):
                    self._misses = 0
                    return
            log.warning("undecodable_record_not_found")
        finally:
            if paused:
                consumer.pause(*(part.tp for part in parts if part.consuming))

    async def _search(self, part: Partition) -> bool:
        start = part.position
        assert start is not None
        found = await self._find(part, start)
        if found is None:
            return False
        first, end = found
        await self._take_before(part, start, first)
        self._answer(part, first, end)
        self._consumer.seek(part.tp, end)
        part.position = end
        return True

    async def _find(self, part: Partition, start: int) -> tuple[int, int] | None:
        """The offsets [first, end) of the partition (from `start`) that aiokafka cannot
        read, or None when the records the failed poll could have read all decode.
        Records read while looking are read again afterwards (the caller seeks)."""
        # In chunks, then one record at a time from the failing chunk.
        low = await self._failing_read(part, start, FIND_CHUNK, MAX_RECORDS_PER_POLL)
        if low is not None:
            low = await self._failing_read(part, low, 1, FIND_CHUNK)
        if low is None:
            self._consumer.seek(part.tp, start)
            return None
        first = low
        # The first offset past `first` that reads again (offsets may have gaps): grow
        # the step, then bisect.
        step = 1
        while await self._failing_read(part, low + step, 1, 1) is not None:
            low, step = low + step, step * 2
        high = low + step
        while high - low > 1:
            middle = (low + high) // 2
            if await self._failing_read(part, middle, 1, 1) is None:
                high = middle
            else:
                low = middle
        return first, high

    async def _take_before(self, part: Partition, start: int, stop: int) -> None:
        """Take in the records from `start` up to `stop`, where the unreadable offsets
        begin (every record before it decodes)."""
        consumer = self._consumer
        tp = part.tp
        consumer.seek(tp, start)
        chunk = FIND_CHUNK
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while (position := await self._position(part)) < stop:
            if time.monotonic() > deadline:
                raise NotFound(f"records of {part.name} before offset {stop} cannot be read")
            try:
                fetched = await consumer.getmany(
                    tp, timeout_ms=100, max_records=min(chunk, stop - position)
                )
            except ValueError:
                _check(part)
                if chunk == 1:
                    return  # only gaps were left before the unreadable offsets
                # Offsets had gaps, so the chunk reached the unreadable ones and the
                # failed read dropped its records: go back, one record at a time.
                consumer.seek(tp, position)
                chunk = 1
                continue
            _check(part)
            if fetched:
                self._take(fetched)
                deadline = time.monotonic() + PROBE_TIMEOUT_S

    async def _failing_read(
        self, part: Partition, offset: int, chunk: int, limit: int
    ) -> int | None:
        """Read up to `limit` records from `offset`, `chunk` at a time. None if they all
        decode (or the partition ends); else the offset the failing read started from
        (the culprit is among its records)."""
        consumer = self._consumer
        tp = part.tp
        consumer.seek(tp, offset)
        after = offset
        read = 0
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while read < limit and time.monotonic() < deadline:
            try:
                fetched = await consumer.getmany(
                    tp, timeout_ms=100, max_records=min(chunk, limit - read)
                )
            except ValueError:
                _check(part)
                return after
            _check(part)
            records = fetched.get(tp)
            if records:
                read += len(records)
                after = records[-1].offset + 1
                deadline = time.monotonic() + PROBE_TIMEOUT_S
            elif await self._position(part) >= (consumer.highwater(tp) or 0):
                return None  # read to the end
        return None

    async def _position(self, part: Partition) -> int:
        position: int = await self._consumer.position(part.tp)
        _check(part)
        return position


def _check(part: Partition) -> None:
    if not part.consuming:
        raise SearchAbandoned(part.name)

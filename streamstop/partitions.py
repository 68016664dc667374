"""The life of an assigned input partition, and the work that belongs to it.

    POSITIONING ──▶ CONSUMING ──▶ DRAINING ──▶ REVOKED
         └────────────────────────────┘

A partition is new for every assignment. It starts POSITIONING (paused: where the group
starts on it is not known yet), consumes once its position is known, drains when a
rebalance or shutdown takes it away, and is REVOKED at the end of its drain budget. Its
offset tracker and its records' share of in-flight batches belong to it: revoking it
takes its unfinished records out of every batch, so no work of a partition outlives its
revoke budget, and work finishing afterwards updates an orphan that is never committed.

Under `exactly_once` a partition also has a sink (`transactions.py`): its results wait
there, decided, until a transaction commits them with the partition's offsets. A record is
then done when its result is decided; it is committed with its transaction.

This module decides which records count, which may be committed and which work ends;
it never talks to Kafka.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from aiokafka import TopicPartition

from streamstop.core.batcher import Batch
from streamstop.core.offsets import OffsetTracker

if TYPE_CHECKING:
    from streamstop.writer import Decided


class Phase(enum.Enum):
    """Where an assigned partition is in its life."""

    POSITIONING = "positioning"
    CONSUMING = "consuming"
    DRAINING = "draining"
    REVOKED = "revoked"


# Read once per record (revoked, records_done): Python 3.11 looks an enum member up on its class
# through EnumType.__getattr__, ~150 ns each time; a module global is a plain lookup.
_CONSUMING, _DRAINING, _REVOKED = Phase.CONSUMING, Phase.DRAINING, Phase.REVOKED


class Sink(Protocol):
    """Where a partition's results wait for their transaction (`exactly_once`)."""

    @property
    def held(self) -> int:
        """Results decided and not committed yet."""

    def hold(self, decided: Decided) -> None:
        """A record's result is decided: it waits here for a transaction."""


class Partition:
    """One assigned input partition: its phase, position and offset tracker."""

    __slots__ = ("committed", "phase", "position", "sink", "tp", "tracker")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.tracker = OffsetTracker()
        self.phase = Phase.POSITIONING
        self.position: int | None = None  # the next offset to take in
        self.committed: int | None = None  # the group's committed offset (or start)
        self.sink: Sink | None = None  # exactly_once only

    @property
    def name(self) -> str:
        return f"{self.tp.topic}/{self.tp.partition}"

    @property
    def consuming(self) -> bool:
        """Records fetched for it are taken in."""
        return self.phase is _CONSUMING

    @property
    def revoked(self) -> bool:
        """Gone: nothing of it is published or committed any more."""
        return self.phase is _REVOKED

    def positioned(self, offset: int) -> None:
        """Its starting offset is known: it consumes from there."""
        if self.phase is Phase.POSITIONING:
            self.position = offset
            self.committed = offset
            self.phase = Phase.CONSUMING

    def took(self, offset: int) -> None:
        """A record at `offset` was taken in."""
        self.tracker.add(offset)
        self.position = offset + 1

    def finish(self, offset: int) -> None:
        """The record at `offset` is done: its results are acknowledged (under
        `exactly_once`: decided, and waiting in the sink for their transaction)."""
        if self.phase is _CONSUMING or self.phase is _DRAINING:
            self.tracker.done(offset)

    @property
    def uncommitted(self) -> int:
        """Records a restart would process again: from the first unfinished one on (under
        `exactly_once`: every record whose result is not committed yet)."""
        if self.sink is None:
            return self.tracker.window
        return self.tracker.pending + self.sink.held

    @property
    def unfinished(self) -> int:
        """Records taken in whose results are not acknowledged (committed) yet; none once
        revoked (what it had left is its next owner's)."""
        if self.phase is _REVOKED:
            return 0
        if self.sink is None:
            return self.tracker.pending
        return self.tracker.pending + self.sink.held


class Received(NamedTuple):
    """When a poll's records were taken in: epoch seconds, and as a result shows it."""

    at: float
    text: str


class Pending:
    """What a taken-in record keeps until its result is acknowledged: never the value."""

    __slots__ = ("headers", "offset", "part", "received", "request_id")

    def __init__(
        self,
        part: Partition,
        offset: int,
        headers: Sequence[tuple[str, bytes]],
        request_id: str | None,
        received: Received,
    ) -> None:
        self.part = part
        self.offset = offset
        self.headers = headers
        self.request_id = request_id
        self.received = received


class InFlight(Protocol):
    """A batch being resolved: records of several partitions wait in it."""

    @property
    def batch(self) -> Batch[Pending]: ...

    def abandon(self, uuids: list[str]) -> None:
        """No record waits for `uuids` any more: stop working on them."""


class Assignment:
    """Every partition assigned to this member, and the batches in flight."""

    def __init__(self) -> None:
        self.parts: dict[TopicPartition, Partition] = {}
        self.in_flight: set[InFlight] = set()
        # Set whenever records finish: drains wait on it.
        self.progress = asyncio.Event()
        self.joined = False

    def assign(self, tps: Iterable[TopicPartition]) -> list[Partition]:
        """A new generation's partitions, each POSITIONING."""
        parts = [Partition(tp) for tp in tps]
        for part in parts:
            self.parts[part.tp] = part
        self.joined = True
        return parts

    def positioning(self) -> list[Partition]:
        return [part for part in self.parts.values() if part.phase is Phase.POSITIONING]

    def consuming(self) -> list[TopicPartition]:
        return [part.tp for part in self.parts.values() if part.consuming]

    def begin_drain(self, tps: Iterable[TopicPartition]) -> list[Partition]:
        """Partitions being taken away: they take in no more records."""
        parts = [self.parts[tp] for tp in tps if tp in self.parts]
        for part in parts:
            part.phase = Phase.DRAINING
        return parts

    def revoke(self, parts: Sequence[Partition]) -> int:
        """End `parts`: their unfinished records leave every in-flight batch (they stay
        uncommitted, for the next owner) and the partitions are forgotten. Returns how
        many records left."""
        gone = set(parts)
        for part in parts:
            part.phase = Phase.REVOKED
            self.parts.pop(part.tp, None)
        records = 0
        for work in list(self.in_flight):
            removed, orphaned = work.batch.remove_records(lambda rec: rec.part in gone)
            records += removed
            if orphaned:
                work.abandon(orphaned)
        self.progress.set()
        return records

    def restart(self, part: Partition, position: int) -> Partition:
        """A new life for `part` from `position` (its log went back under it): its
        unfinished work is dropped like a revoked partition's, the new one consumes."""
        self.revoke([part])
        (fresh,) = self.assign([part.tp])
        fresh.positioned(position)
        return fresh

    def records_done(self, recs: Iterable[Pending]) -> None:
        """Records whose results are acknowledged (a revoked partition's are ignored:
        its tracker is an orphan)."""
        for rec in recs:
            part = rec.part
            if part.phase is _CONSUMING or part.phase is _DRAINING:
                part.tracker.done(rec.offset)
        self.progress.set()

    def uncommitted(self) -> int:
        """Consumed records the commit points hold back, over every partition: from each
        one's first unfinished record on, finished ones after it too. This is what
        `batch.max_pending` caps: what a restart would process again. (A record stuck in
        retries therefore pauses the consumer once the window behind it is full, until
        `retry.deadline_s` ends it.)"""
        return sum(part.uncommitted for part in self.parts.values())

    def unfinished(self, parts: Iterable[Partition]) -> int:
        """Records of `parts` taken in whose results are not acknowledged (committed)."""
        return sum(part.unfinished for part in parts)

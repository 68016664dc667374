"""Accumulation of uuids into stop API batches, bounded by size and by time.

A batch holds at most `max_size` distinct uuids; a uuid asked for by several records is
sent once and its result goes to every one of them (the waiters). The caller passes the
clock in and sends what `add`, `take_due` or `flush` hand back.

Batches hold up to `batch.max_pending` records between them, so a uuid with one waiter
(nearly all of them) keeps it bare, not in a list of one: that list would be the
largest object per pending record.

Never: more than `max_size` distinct uuids in a batch, a batch due later than
`max_wait_s` after its first record, or a record lost between batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
_NONE: Any = object()  # no record waits for the uuid


class _Several(list[T]):
    """The records waiting for a uuid asked for more than once."""

    __slots__ = ()


class Batch(Generic[T]):
    """One request's worth of uuids and the records waiting for each."""

    __slots__ = ("_records", "opened_at", "record_count", "uuids")

    def __init__(self, opened_at: float = 0.0) -> None:
        self.uuids: list[str] = []  # distinct, in the order they came in
        self._records: dict[str, T | _Several[T]] = {}
        self.opened_at = opened_at
        self.record_count = 0  # records waiting (added, not released nor removed)

    def records_for(self, uuid: str) -> Sequence[T]:
        """The records waiting for `uuid`, oldest first (none once released)."""
        held = self._records.get(uuid, _NONE)
        if held is _NONE:
            return ()
        if type(held) is _Several:
            return held
        return (cast(T, held),)

    def release(self, uuid: str) -> None:
        """Forget the records waiting for `uuid` (their results are out)."""
        held = self._records.pop(uuid, _NONE)
        if held is not _NONE:
            self.record_count -= len(held) if type(held) is _Several else 1

    def add(self, uuid: str, record: T) -> bool:
        """Add a record asking for `uuid`; True when the uuid is new to the batch."""
        self.record_count += 1
        records = self._records
        held = records.get(uuid, _NONE)
        if held is _NONE:
            records[uuid] = record
            self.uuids.append(uuid)
            return True
        if type(held) is _Several:
            held.append(record)
        else:
            records[uuid] = _Several((held, record))
        return False

    def remove_records(self, predicate: Callable[[T], bool]) -> tuple[int, list[str]]:
        """Remove the waiting records matching `predicate` (say, of a revoked partition).
        Returns how many went, and the uuids no record waits for any more."""
        removed = 0
        orphaned: list[str] = []
        records = self._records
        for uuid in list(records):
            waiting = self.records_for(uuid)
            kept = [record for record in waiting if not predicate(record)]
            if len(kept) == len(waiting):
                continue
            removed += len(waiting) - len(kept)
            if not kept:
                del records[uuid]
                orphaned.append(uuid)
            else:
                records[uuid] = kept[0] if len(kept) == 1 else _Several(kept)
        self.record_count -= removed
        return removed, orphaned


class Batcher(Generic[T]):
    """Builds batches of distinct uuids: full at `max_size`, due `max_wait_s` after the
    first record went in."""

    __slots__ = ("_max_size", "_max_wait_s", "_open")

    def __init__(self, max_size: int, max_wait_s: float) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._open: Batch[T] | None = None

    def add(self, uuid: str, record: T, now: float) -> Batch[T] | None:
        """Add a record asking for `uuid`; returns the batch when it just became full."""
        batch = self._open
        if batch is None:
            batch = self._open = Batch(opened_at=now)
        if not batch.add(uuid, record) or len(batch.uuids) < self._max_size:
            return None
        self._open = None
        return batch

    def take_due(self, now: float) -> Batch[T] | None:
        """The open batch if its wait time is over, else None."""
        batch = self._open
        if batch is None or now < batch.opened_at + self._max_wait_s:
            return None
        self._open = None
        return batch

    def flush(self) -> Batch[T] | None:
        """The open batch whatever its age (shutdown, revoke), or None when empty."""
        batch = self._open
        self._open = None
        return batch

    def deadline(self) -> float | None:
        """When the open batch becomes due; None when nothing is buffered."""
        batch = self._open
        return None if batch is None else batch.opened_at + self._max_wait_s

"""Accumulation of uuids into stop API batches, bounded by size and by time.

A batch holds at most `max_size` distinct uuids; a uuid asked for by several records is
sent once and its result goes to every one of them (the waiters). The caller passes the
clock in and sends what `add`, `take_due` or `flush` hand back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Batch(Generic[T]):
    """One request's worth of uuids and the records waiting for each."""

    uuids: list[str] = field(default_factory=list)
    waiters: dict[str, list[T]] = field(default_factory=dict)
    opened_at: float = 0.0
    records: int = 0


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

    def add(self, uuid: str, ref: T, now: float) -> Batch[T] | None:
        """Add a record asking for `uuid`; returns the batch when it just became full."""
        batch = self._open
        if batch is None:
            batch = self._open = Batch(opened_at=now)
        batch.records += 1
        refs = batch.waiters.get(uuid)
        if refs is not None:
            refs.append(ref)
            return None
        batch.waiters[uuid] = [ref]
        batch.uuids.append(uuid)
        if len(batch.uuids) < self._max_size:
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

    def drop(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove the buffered records matching `predicate` (say, of revoked partitions)
        and the uuids no record waits for any more; returns the removed records."""
        batch = self._open
        if batch is None:
            return []
        removed: list[T] = []
        kept: dict[str, list[T]] = {}
        for uuid, refs in batch.waiters.items():
            stay: list[T] = []
            for ref in refs:
                if predicate(ref):
                    removed.append(ref)
                else:
                    stay.append(ref)
            if stay:
                kept[uuid] = stay
        if not removed:
            return removed
        if not kept:
            self._open = None
            return removed
        # The batch keeps its opened_at: the remaining records have waited that long.
        batch.waiters = kept
        batch.uuids = list(kept)
        batch.records -= len(removed)
        return removed

    def __len__(self) -> int:
        """Records buffered in the open batch."""
        batch = self._open
        return 0 if batch is None else batch.records

"""Which results of one partition may go into its next transaction (`exactly_once`).

A transaction commits a partition's results together with the input offset that covers
them, the next offset to read. That offset may not pass a record still without a result,
or a restart would skip it; and a result may not go in without an offset past its own
record, or a restart would answer it twice. So results go in record order, and only those
of records before the partition's first unresolved one: the rest are held back until it is
resolved. An aborted transaction gives its results back for the next one; a committed one
lets them go.

Pure: the first unresolved offset is given (the partition's offset tracker knows it).
"""

from __future__ import annotations

import heapq
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class Released(NamedTuple, Generic[T]):
    """Results moved into the open transaction, and the input offset it now commits."""

    items: list[T]
    offset: int


class Holdback(Generic[T]):
    """One partition's decided results, from their decision until their transaction
    commits. Offsets are unique: one result (with its DLQ copy) per input record."""

    __slots__ = ("_committed", "_heap", "_offset", "_open")

    def __init__(self) -> None:
        self._heap: list[tuple[int, T]] = []  # decided, not in a transaction yet
        self._open: list[tuple[int, T]] = []  # released into the open transaction
        self._offset: int | None = None  # what the open transaction commits
        self._committed: int | None = None  # what the last committed transaction did

    def add(self, offset: int, item: T) -> None:
        """The result of the record at `offset` is decided."""
        heapq.heappush(self._heap, (offset, item))

    def release(self, unresolved: int | None, limit: int) -> Released[T] | None:
        """Move up to `limit` results of records before `unresolved` into the open
        transaction, in record order, and say which offset it commits now. `unresolved`
        is the partition's first record without a result (the next offset to read when
        every record has one; None when nothing was resolved past the last commit).
        Returns None when the open transaction would commit nothing new."""
        if unresolved is None:
            return None
        heap = self._heap
        items: list[T] = []
        while heap and heap[0][0] < unresolved and len(items) < limit:
            entry = heapq.heappop(heap)
            self._open.append(entry)
            items.append(entry[1])
        # Stopped by `limit`: everything before the next waiting result went in.
        offset = heap[0][0] if heap and heap[0][0] < unresolved else unresolved
        last = self._committed if self._offset is None else self._offset
        if not items and last is not None and offset <= last:
            return None
        self._offset = offset
        return Released(items, offset)

    def committed(self) -> Released[T]:
        """The open transaction committed: its results are let go. Returns them, with the
        offset it committed."""
        offset = self.offset
        items = [item for _, item in self._open]
        self._open.clear()
        self._offset = None
        self._committed = offset
        return Released(items, offset)

    def aborted(self) -> None:
        """The open transaction aborted: its results wait for the next one."""
        for entry in self._open:
            heapq.heappush(self._heap, entry)
        self._open.clear()
        self._offset = None

    def clear(self) -> list[T]:
        """Everything held, let go (the partition is gone)."""
        items = [item for _, item in self._open] + [item for _, item in self._heap]
        self._open.clear()
        self._heap.clear()
        self._offset = None
        return items

    @property
    def is_open(self) -> bool:
        """A transaction is open: something was released since the last commit or abort."""
        return self._offset is not None

    @property
    def offset(self) -> int:
        """The input offset the open transaction commits."""
        if self._offset is None:
            raise RuntimeError("no transaction is open")
        return self._offset

    @property
    def in_transaction(self) -> int:
        """Results in the open transaction."""
        return len(self._open)

    def __len__(self) -> int:
        """Results decided and not yet committed, in the open transaction or not."""
        return len(self._heap) + len(self._open)

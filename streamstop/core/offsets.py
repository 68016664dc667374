"""Which offset of one partition is safe to commit (SPEC "Delivery guarantees").

Records finish out of order (batches resolve independently), so the commit point is the
first record not yet done, never past it. Consumed offsets can have gaps (transaction
markers, compaction), so the tracker follows the records it saw, not offset + 1.
"""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    """Consumed-but-uncommitted records of one partition, in consume order."""

    __slots__ = ("_committed", "_last", "_order", "_pending")

    def __init__(self) -> None:
        self._order: deque[int] = deque()  # consumed offsets; the head is never done
        self._pending: set[int] = set()
        self._last: int | None = None
        self._committed: int | None = None

    def add(self, offset: int) -> None:
        """Track a consumed record; offsets must strictly increase."""
        last = self._last
        if last is not None and offset <= last:
            raise ValueError(f"offset {offset} not after the last consumed offset {last}")
        if self._committed is None:
            # Committing where consumption started is no progress: the baseline.
            self._committed = offset
        self._last = offset
        self._order.append(offset)
        self._pending.add(offset)

    def done(self, offset: int) -> None:
        """Mark a consumed record fully done (its results are acknowledged)."""
        pending = self._pending
        if offset not in pending:
            raise KeyError(f"offset {offset} is not pending (unknown or already done)")
        pending.remove(offset)
        order = self._order
        while order and order[0] not in pending:
            order.popleft()

    def commit_point(self) -> int | None:
        """The next offset to read, to commit now; None when it has not moved past the
        last committed one."""
        if self._last is None:
            return None
        point = self._order[0] if self._order else self._last + 1
        committed = self._committed
        if committed is not None and point <= committed:
            return None
        return point

    def mark_committed(self, offset: int) -> None:
        """Record a successful commit of `offset`; refuses to go backwards."""
        committed = self._committed
        if committed is not None and offset < committed:
            raise ValueError(f"commit {offset} is behind the committed offset {committed}")
        self._committed = offset

    @property
    def pending(self) -> int:
        """Records consumed but not done."""
        return len(self._pending)

"""Which offset of one partition is safe to commit (SPEC "Delivery guarantees").

Records finish out of order (batches resolve independently), so the commit point is the
first record not yet done, never past it. Consumed offsets can have gaps (transaction
markers, compaction), so the tracker follows the records it saw, not offset + 1.

A tracker holds every record from the first unfinished one on (its window, which
`batch.max_pending` caps over all partitions), so it is kept compact: 9 bytes per record
(the offset in an array, a done flag in a bytearray) rather than the ~100 of a set of
int objects, which never shrinks as records finish.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left


class OffsetTracker:
    """Consumed-but-uncommitted records of one partition, in consume order."""

    __slots__ = ("_committed", "_done", "_head", "_last", "_offsets", "_pending")

    def __init__(self) -> None:
        self._offsets = array("q")  # consumed offsets, increasing
        self._done = bytearray()  # 1 where the offset at the same index is done
        self._head = 0  # index of the first record not done (len when all are)
        self._pending = 0
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
        self._offsets.append(offset)
        self._done.append(0)
        self._pending += 1

    def done(self, offset: int) -> None:
        """Mark a consumed record fully done (its results are acknowledged)."""
        index = self._index(offset)
        done = self._done
        if index is None or done[index]:
            raise KeyError(f"offset {offset} is not pending (unknown or already done)")
        done[index] = 1
        self._pending -= 1
        if index != self._head:
            return
        head = done.find(0, index)
        if head < 0:  # everything consumed is done
            del self._offsets[:], done[:]
            self._head = 0
        elif head * 2 >= len(done):  # drop the finished front, amortised O(1) a record
            del self._offsets[:head], done[:head]
            self._head = 0
        else:
            self._head = head

    def skip_to(self, offset: int) -> None:
        """Records below `offset` no longer exist (deleted before they were consumed):
        once the records taken in are done, the commit point moves to `offset`, past
        the gap, even when no record after it was consumed yet."""
        last = self._last
        if last is None or offset > last + 1:
            self._last = offset - 1
        if self._committed is None:
            # Whatever was committed lies below the gap: anything from `offset` on is
            # progress (and a record taken in next does not become the baseline).
            self._committed = offset - 1

    def _index(self, offset: int) -> int | None:
        """Where `offset` is among the records not known done, or None."""
        offsets = self._offsets
        head = self._head
        if head >= len(offsets):
            return None
        # Exact when offsets have no gaps (the usual case), else past the right index.
        guess = head + offset - offsets[head]
        if head <= guess < len(offsets) and offsets[guess] == offset:
            return guess
        index = bisect_left(offsets, offset, head)
        return index if index < len(offsets) and offsets[index] == offset else None

    def commit_point(self) -> int | None:
        """The next offset to read, to commit now; None when it has not moved past the
        last committed one."""
        if self._last is None:
            return None
        offsets = self._offsets
        point = offsets[self._head] if self._head < len(offsets) else self._last + 1
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
        return self._pending

    @property
    def window(self) -> int:
        """Records from the first unfinished one to the last consumed, done or not: what
        the commit point holds back, and what a restart would read again."""
        return len(self._offsets) - self._head

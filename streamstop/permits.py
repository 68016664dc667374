"""A semaphore whose waiters are served by priority, not by arrival.

The pipeline hands out its slice permits (results built and not yet acknowledged) by
batch age, in the order batches were sent: of the batches answered at about the same
time, the oldest finishes before a younger one goes on, so its records are committed
sooner and its bookkeeping (the uuids, the answers) is let go at once, instead of every
answered batch trickling out slice by slice, round robin.

Never: lose a permit, whether its holder finishes, fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class PrioritySemaphore:
    """`permits` permits; when none is free, the waiter with the lowest `priority` (ties:
    the first to ask) gets the next one released."""

    __slots__ = ("_free", "_order", "_waiting")

    def __init__(self, permits: int) -> None:
        if permits < 1:
            raise ValueError("permits must be at least 1")
        self._free = permits
        # Invariant: someone waits only while no permit is free.
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self._free > 0:
            self._free -= 1
            return
        entry = (priority, next(self._order), asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiting, entry)
        try:
            await entry[2]
        except asyncio.CancelledError:
            if not entry[2].cancelled():
                self.release()  # granted as we were cancelled: pass it on
            elif entry in self._waiting:  # not granted: leave the queue
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            raise

    def release(self) -> None:
        waiting = self._waiting
        while waiting:
            granted = heapq.heappop(waiting)[2]
            if not granted.done():  # else cancelled, its task not yet told
                granted.set_result(None)
                return
        self._free += 1

    @property
    def waiting(self) -> int:
        """Waiters not yet granted a permit."""
        return len(self._waiting)

"""Circuit breaker for an API that rejects everything.

One bad uuid makes a request fail with 400 and is found by bisection: within its batch, a
run of at most about log2(batch size) + 2 rejected requests, then an accepted one. A much
longer run in one batch with no accepted request means the API (or our request) is
broken, which is a configuration problem: failing every uuid one by one would turn the
backlog into junk.

Runs are counted per batch: batches bisect concurrently, and their rejections interleaved
would add up to a run that no single bisection made. Any accepted request ends every run.

Never: open on the rejections bisection explains (one bad uuid), or stay open after an
accepted request.
"""

from __future__ import annotations

import math

EXTRA_REJECTIONS = 8


class RejectionBreaker:
    """Counts each batch's whole-request rejections since the API last accepted a request;
    opens when one batch's run goes past what bisection explains, closes on any accepted
    request."""

    __slots__ = ("_open", "_runs", "accepted", "opened", "threshold")

    def __init__(self, max_batch_size: int) -> None:
        self.threshold = math.ceil(math.log2(max(1, max_batch_size))) + EXTRA_REJECTIONS
        self._runs: dict[str, int] = {}
        self._open = False
        self.opened = 0  # times it went from closed to open
        self.accepted = 0  # requests the API accepted so far

    def on_rejected(self, batch: str) -> None:
        """A request of `batch` was rejected as a whole (400/413/422)."""
        run = self._runs.get(batch, 0) + 1
        self._runs[batch] = run
        if run >= self.threshold:
            self.trip()

    def trip(self) -> None:
        """Open now: rejections are past what bad uuids explain."""
        if not self._open:
            self._open = True
            self.opened += 1

    def on_accepted(self) -> None:
        """A request got a per-item answer: the API works, and every run so far is
        explained by bad uuids. All runs start again."""
        self._runs.clear()
        self._open = False
        self.accepted += 1

    def forget(self, batch: str) -> None:
        """`batch` is resolved: drop its run."""
        self._runs.pop(batch, None)

    @property
    def open(self) -> bool:
        """True when rejections must be treated as a configuration error."""
        return self._open

"""Circuit breaker for an API that rejects everything.

One bad uuid makes a request fail with 400 and is found by bisection: a run of at most
about log2(batch size) + 2 rejected requests, then an accepted one. A much longer run with
no accepted request in between means the API (or our request) is broken, which is a
configuration problem: failing every uuid one by one would turn the backlog into junk.
"""

from __future__ import annotations

import math

EXTRA_REJECTIONS = 8


class RejectionBreaker:
    """Counts consecutive whole-request rejections; opens past what bisection explains."""

    __slots__ = ("consecutive", "threshold")

    def __init__(self, max_batch_size: int) -> None:
        self.threshold = math.ceil(math.log2(max(1, max_batch_size))) + EXTRA_REJECTIONS
        self.consecutive = 0

    def on_rejected(self) -> None:
        """A request was rejected as a whole (400/413/422)."""
        self.consecutive += 1

    def on_accepted(self) -> None:
        """A request got a per-item answer: the API works."""
        self.consecutive = 0

    @property
    def open(self) -> bool:
        """True when rejections must be treated as a configuration error."""
        return self.consecutive >= self.threshold

"""A run of failures of one kind (commits, end-offset requests): one log line per
LOG_EVERY_S instead of one per attempt, and a readiness problem once it lasts.

Never: a line per attempt, or a problem that outlives the next success.
"""

from __future__ import annotations

import time

LOG_EVERY_S = 30.0
PROBLEM_AFTER_S = 30.0


class Failing:
    """A run of failures of one kind: logged at most once per LOG_EVERY_S, and a
    problem (for readiness) once it lasts PROBLEM_AFTER_S."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._since: float | None = None
        self._logged = float("-inf")
        self._last = ""

    def failed(self, why: str) -> bool:
        """A failure; True when it should be logged."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        self._last = why
        if now - self._logged < LOG_EVERY_S:
            return False
        self._logged = now
        return True

    def succeeded(self) -> None:
        self._since = None
        self._logged = float("-inf")

    @property
    def problem(self) -> str | None:
        if self._since is None or time.monotonic() - self._since < PROBLEM_AFTER_S:
            return None
        return f"{self._what} since {time.monotonic() - self._since:.0f} s: {self._last}"

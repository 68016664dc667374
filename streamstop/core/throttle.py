"""Shared pacing of stop API requests: one clock that every request waits for.

It combines the rate cap (`api.max_requests_per_second`), the API's "slow down" answers
(429/503 and Retry-After, which hold back every request, not only the one that got it),
a run of transient failures, and slow probing while the API reports a configuration
error. Pure: the caller passes the time in and sleeps until `next_start`.

Never: start requests faster than the rate cap, or before a Retry-After has passed.
"""

from __future__ import annotations

from collections.abc import Callable

from streamstop.core.backoff import full_jitter_s

FAILURE_RUN = 3


class Throttle:
    """When the next stop API request may start."""

    __slots__ = (
        "_initial_ms",
        "_last_start",
        "_max_ms",
        "_min_interval_s",
        "_not_before",
        "_rand",
        "config_failures",
        "failures",
    )

    def __init__(
        self,
        *,
        initial_backoff_ms: int,
        max_backoff_ms: int,
        max_requests_per_second: float,
        rand: Callable[[], float],
    ) -> None:
        self._initial_ms = initial_backoff_ms
        self._max_ms = max_backoff_ms
        self._min_interval_s = 1.0 / max_requests_per_second if max_requests_per_second else 0.0
        self._rand = rand
        self._not_before = 0.0
        self._last_start = float("-inf")
        self.failures = 0
        self.config_failures = 0

    def next_start(self, now: float) -> float:
        """The earliest time a request may start."""
        return max(now, self._not_before, self._last_start + self._min_interval_s)

    def on_start(self, now: float) -> None:
        """A request starts now (takes a slot of the rate cap)."""
        self._last_start = now

    def on_success(self) -> None:
        """The API answered a request properly."""
        self.failures = 0
        self.config_failures = 0

    def on_transient(self, now: float, retry_after_s: float | None, slow_down: bool) -> None:
        """A transient failure; `slow_down` for 429/503. Holds back every request when the
        API asked for it, or after a run of failures. A Retry-After (already capped at
        `retry.max_retry_after_s` by the interpretation) is a minimum wait."""
        self.failures += 1
        wait = 0.0
        if slow_down or self.failures >= FAILURE_RUN:
            wait = full_jitter_s(self.failures, self._initial_ms, self._max_ms, self._rand)
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        self._not_before = max(self._not_before, now + wait)

    def on_config_error(self, now: float) -> float:
        """A configuration error: probe again after a growing, capped delay (no jitter:
        one request probes at a time). Returns the delay."""
        self.config_failures += 1
        exponent = min(self.config_failures, 30)
        delay = min(self._max_ms, self._initial_ms << exponent) / 1000.0
        self._not_before = max(self._not_before, now + delay)
        return delay

"""How one batch of uuids is resolved through the stop API (SPEC "Stop API usage").

Decides what the next request of a batch holds and what each answer means for its uuids:
retries with full-jitter backoff until `retry.deadline_s`, bisection of requests the API
rejects as a whole, and when the shared breaker's evidence says a rejection is the API's
fault rather than the uuid's. Pure: the caller sends the requests, passes the clock in,
publishes the resolutions and sleeps the waits it is given.

It must never fail a uuid while the API is in a configuration error (the deadline clock
stops then) or while the breaker is open, and never send a uuid that already has its
resolution.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from streamstop.core.backoff import full_jitter_s
from streamstop.core.breaker import RejectionBreaker
from streamstop.core.results import Resolution, Status

STATUS_BY_CODE = {
    200: Status.STOPPED,
    202: Status.STOP_UNCERTAIN,
    403: Status.ALREADY_SENT,
    404: Status.NOT_FOUND,
}


class Cause(enum.StrEnum):
    """Why uuids are tried again (the `reason` label of the retries metric)."""

    CONNECTION = "connection"
    TOO_LARGE = "too_large"
    MISSING = "missing"
    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    MALFORMED = "malformed"
    OTHER = "other"
    SPLIT = "split"


@dataclass(frozen=True, slots=True)
class Answered:
    """The API answered per item: codes for some uuids, the rest missing."""

    codes: Mapping[str, int]
    missing: list[str]


@dataclass(frozen=True, slots=True)
class Transient:
    """No usable answer this time (connection, 5xx, 429, a malformed body). `sent` is
    False when no request went out (the API's wait would have passed the deadline)."""

    cause: Cause
    reason: str
    sent: bool = True


@dataclass(frozen=True, slots=True)
class Rejected:
    """The API rejected the whole request (400/413/422): split it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Held:
    """The API cannot be used as configured (401/403, wrong URL, unreadable token):
    nothing fails, everything waits. `sent` is False when no request went out."""

    reason: str
    sent: bool = True


Outcome = Answered | Transient | Rejected | Held


class RetryPolicy(Protocol):
    """The `retry.*` settings a resolution follows (`config.RetrySettings` is one):
    backoff bounds in milliseconds, the deadline in seconds."""

    @property
    def initial_backoff_ms(self) -> int: ...

    @property
    def max_backoff_ms(self) -> int: ...

    @property
    def deadline_s(self) -> float: ...


@dataclass(slots=True)
class Step:
    """What an answer asks of the caller: publish `resolved`, count `retried` uuids
    under `cause`, wait `wait_s` before the batch's next request, and enter the
    configuration-error hold with `hold` as the reason when set."""

    resolved: dict[str, Resolution] = field(default_factory=dict)
    cause: Cause | None = None
    retried: int = 0
    wait_s: float = 0.0
    hold: str | None = None


class BatchResolution:
    """One batch's uuids until each has exactly one resolution. Requests of a batch go
    one at a time: `next_unit` says what to send, `record` what its outcome means."""

    __slots__ = (
        "_accepted_before",
        "_attempts",
        "_batch_id",
        "_breaker",
        "_dropped",
        "_held",
        "_held_before",
        "_last_reason",
        "_policy",
        "_rand",
        "_rejected",
        "_stack",
        "_started",
        "_unit",
    )

    def __init__(
        self,
        uuids: list[str],
        batch_id: str,
        breaker: RejectionBreaker,
        policy: RetryPolicy,
        rand: Callable[[], float],
    ) -> None:
        self._batch_id = batch_id
        self._breaker = breaker
        self._policy = policy
        self._rand = rand
        self._attempts = dict.fromkeys(uuids, 0)
        self._stack: list[list[str]] = []
        self._unit: list[str] = uuids  # the request being worked on (sent again on retry)
        # Single uuids the API rejected while the breaker was closed: the reason, and how
        # often the breaker had opened by then. Final unless the breaker opened since (the
        # broken API may have been at fault), or unless the API accepted nothing at all
        # since this batch's first rejection.
        self._rejected: dict[str, tuple[str, int]] = {}
        self._held: list[str] = []  # single uuids rejected while the breaker was open
        self._accepted_before: int | None = None  # accepted requests at the first rejection
        self._dropped: set[str] = set()
        self._last_reason = ""
        self._started: float | None = None
        self._held_before = 0.0

    def next_unit(self, shutting_down: bool) -> list[str] | None:
        """The uuids of the next request, or None when every uuid is resolved (or, during
        shutdown, when only retries are left: no retry starts then)."""
        while True:
            self._unit = self._live(self._unit)
            if self._unit:
                if shutting_down and self._attempts[self._unit[0]] > 0:
                    return None
                return self._unit
            if not self._stack:
                return None
            self._unit = self._stack.pop()
            self._last_reason = ""

    def record(self, unit: list[str], outcome: Outcome, now: float, held_s: float) -> Step:
        """What the outcome of the request for `unit` (from `next_unit`) means. `now` is
        the monotonic clock, `held_s` the total time spent in configuration-error holds
        so far, which the deadline clock does not count."""
        step = Step()
        if not isinstance(outcome, Transient | Held) or outcome.sent:
            self._count_attempt(unit, now, held_s)
        if isinstance(outcome, Answered):
            self._breaker.on_accepted()
            attempts = self._attempts
            dropped = self._dropped
            step.resolved = (
                {
                    uuid: resolution_for_code(code, attempts[uuid])
                    for uuid, code in outcome.codes.items()
                    if uuid not in dropped
                }
                if dropped
                else {
                    uuid: resolution_for_code(code, attempts[uuid])
                    for uuid, code in outcome.codes.items()
                }
            )
            self._unit = outcome.missing
            if self._unit:
                self._retry(step, Cause.MISSING, "missing from the response", now, held_s)
        elif isinstance(outcome, Transient):
            self._retry(step, outcome.cause, outcome.reason, now, held_s)
        elif isinstance(outcome, Rejected):
            self._split(self._live(unit), outcome.reason, step)
        else:
            step.hold = outcome.reason  # the same unit again, paced as a configuration error
        if not self._unit and not self._stack:
            self._settle(step)
        return step

    def drop(self, uuids: Iterable[str]) -> None:
        """Nobody waits for these uuids any more (their partition was revoked): never
        send them again, never resolve them."""
        self._dropped.update(uuids)
        for uuid in self._dropped:
            self._rejected.pop(uuid, None)
        self._held = [uuid for uuid in self._held if uuid not in self._dropped]

    def unresolved(self) -> int:
        """Uuids without a resolution (shutdown leaves some)."""
        waiting = len(self._unit) + sum(len(unit) for unit in self._stack)
        return waiting + len(self._rejected) + len(self._held)

    def time_left(self, now: float, held_s: float) -> float | None:
        """Seconds until the retry deadline (holds excluded); None before the first
        attempt, when the clock has not started."""
        if self._started is None:
            return None
        return self._policy.deadline_s - self._elapsed(now, held_s)

    def _count_attempt(self, unit: list[str], now: float, held_s: float) -> None:
        if self._started is None:
            self._started = now
            self._held_before = held_s
        attempts = self._attempts
        for uuid in unit:
            attempts[uuid] += 1

    def _retry(self, step: Step, cause: Cause, reason: str, now: float, held_s: float) -> None:
        self._last_reason = reason or self._last_reason
        unit = self._unit = self._live(self._unit)
        if not unit:
            return
        if self._elapsed(now, held_s) >= self._policy.deadline_s:
            why = f"retry deadline passed: {self._last_reason}"
            step.resolved.update(self._failed(unit, why))
            self._unit = []
            return
        step.cause, step.retried = cause, len(unit)
        policy = self._policy
        step.wait_s = full_jitter_s(
            self._attempts[unit[0]], policy.initial_backoff_ms, policy.max_backoff_ms, self._rand
        )

    def _split(self, unit: list[str], reason: str, step: Step) -> None:
        breaker = self._breaker
        if self._accepted_before is None:
            self._accepted_before = breaker.accepted
        breaker.on_rejected(self._batch_id)
        if breaker.open:
            # Past what bad uuids explain: hold everything (nothing fails), one probe at
            # a time; bisection goes on, as only an accepted request can show the API
            # works again.
            step.hold = f"API rejects every request ({reason})"
        self._unit = []
        if not unit:
            return
        if len(unit) > 1:
            half = len(unit) // 2
            self._stack.extend((unit[half:], unit[:half]))
            step.cause, step.retried = Cause.SPLIT, len(unit)
        elif breaker.open:
            self._held.append(unit[0])
        else:
            self._rejected[unit[0]] = (reason, breaker.opened)

    def _settle(self, step: Step) -> None:
        """Every unit is done: decide the single uuids the API rejected."""
        breaker = self._breaker
        rejected = self._rejected
        if rejected and not breaker.open and breaker.accepted == self._accepted_before:
            # Nothing accepted since this batch's rejections began: no evidence the API
            # works. Hold them and pace retries as a configuration error.
            breaker.trip()
            step.hold = f"API accepts no request ({next(iter(rejected.values()))[0]})"
        if breaker.open:
            doubtful, final = [*self._held, *rejected], {}
        else:
            opened = breaker.opened
            doubtful = [*self._held, *(u for u, (_, seen) in rejected.items() if seen < opened)]
            final = {u: why for u, (why, seen) in rejected.items() if seen == opened}
        self._held, self._rejected = [], {}  # _accepted_before stays: evidence may come later
        attempts = self._attempts
        step.resolved.update(
            (uuid, Resolution(Status.FAILED, None, why, attempts[uuid]))
            for uuid, why in final.items()
        )
        # Rejected while (or just before) the API rejected everything: not these uuids'
        # fault. Ask again one uuid per request, so they cannot add up to a run that
        # reopens the breaker.
        self._stack.extend([uuid] for uuid in reversed(doubtful))

    def _live(self, unit: list[str]) -> list[str]:
        dropped = self._dropped
        return [uuid for uuid in unit if uuid not in dropped] if dropped else unit

    def _elapsed(self, now: float, held_s: float) -> float:
        """Seconds since the batch's first attempt, configuration-error holds excluded."""
        if self._started is None:
            return 0.0
        return now - self._started - (held_s - self._held_before)

    def _failed(self, unit: list[str], reason: str) -> dict[str, Resolution]:
        attempts = self._attempts
        return {uuid: Resolution(Status.FAILED, None, reason, attempts[uuid]) for uuid in unit}


@functools.lru_cache(maxsize=1024)
def resolution_for_code(code: int, attempts: int) -> Resolution:
    """The resolution for a per-item API code. Resolutions are immutable and few distinct
    ones exist (code x attempt count), so a 10,000-item answer builds a handful."""
    status = STATUS_BY_CODE.get(code)
    if status is None:
        return Resolution(Status.UNKNOWN_CODE, code, f"unknown per-item code {code}", attempts)
    return Resolution(status, code, None, attempts)

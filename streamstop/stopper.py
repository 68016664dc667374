"""Sending batches to the stop API: the I/O loop around `core/resolution.py`.

`Stopper.start` turns a batch's uuids into a `BatchRun`, an async iterator of resolutions
that the result writer publishes as they come, so partial progress is committed early.
Every decision (what to send next, what an answer means, bisection, deadlines) is the
pure core's; this module waits for its turn, sends, classifies the response, and keeps
the state shared by every batch: the request slots, the throttle, the breaker and the
configuration-error hold. It never publishes and never touches Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, NamedTuple

import structlog

from streamstop.core.breaker import RejectionBreaker
from streamstop.core.interpret import Kind
from streamstop.core.resolution import (
    Answered,
    BatchResolution,
    Cause,
    Held,
    Outcome,
    Rejected,
    RetryPolicy,
    Transient,
)
from streamstop.core.results import Resolution
from streamstop.core.throttle import Throttle
from streamstop.interpreter import Interpreter
from streamstop.logs import mask_secrets
from streamstop.metrics import Metrics
from streamstop.stopclient import ApiConfigError, ResponseTooLarge, StopClient, TransportError

if TYPE_CHECKING:
    from streamstop.tracing.otlp import RecordsOf, Tracing

log = structlog.get_logger("streamstop.stopper")

Answers = dict[str, Resolution]


class Attempt(NamedTuple):
    """One request's outcome, and the HTTP status it came with (None: no answer)."""

    outcome: Outcome
    status: int | None


class Stopper:
    """Sends batches to the stop API; shared state across every batch in flight."""

    def __init__(
        self,
        client: StopClient,
        interpreter: Interpreter,
        *,
        max_in_flight: int,
        max_batch_size: int,
        max_requests_per_second: float,
        policy: RetryPolicy,
        metrics: Metrics,
        tracing: Tracing | None = None,
    ) -> None:
        self._client = client
        self._tracing = tracing
        self._interpreter = interpreter
        self._slots = asyncio.Semaphore(max_in_flight)
        self._probe = asyncio.Lock()
        self._policy = policy
        self._metrics = metrics
        self._rand = random.Random().random
        self.throttle = Throttle(
            initial_backoff_ms=policy.initial_backoff_ms,
            max_backoff_ms=policy.max_backoff_ms,
            max_requests_per_second=max_requests_per_second,
            rand=self._rand,
        )
        self.breaker = RejectionBreaker(max_batch_size)
        self._shutdown = asyncio.Event()
        # Time spent in the configuration-error hold: deadline clocks stop meanwhile.
        self._held_s = 0.0
        self._held_since: float | None = None

    def begin_shutdown(self) -> None:
        """Shutdown began: waits end now and no retry starts."""
        self._shutdown.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown.is_set()

    @property
    def holding(self) -> bool:
        """True while the API answers with a configuration error (or the breaker is open)."""
        return self._held_since is not None

    def start(
        self, uuids: list[str], batch_id: str, records_of: RecordsOf | None = None
    ) -> BatchRun:
        """The requests for one batch, to iterate for its resolutions. `records_of` gives
        the records waiting for a uuid: their trace contexts are linked from the spans."""
        resolution = BatchResolution(uuids, batch_id, self.breaker, self._policy, self._rand)
        return BatchRun(self, resolution, batch_id, records_of)

    async def _attempt(self, unit: list[str], run: BatchRun, deadline: float | None) -> Attempt:
        """One HTTP request for `unit`, once the throttle lets it start (a span, traced)."""
        await self._slots.acquire()
        try:
            refused = await self._wait_turn(deadline)
        except BaseException:
            self._slots.release()
            raise
        if refused is not None:
            self._slots.release()
            return Attempt(refused, None)
        run.requests += 1
        if self._tracing is None:
            return await self._request(unit, run.batch_id)
        with self._tracing.request(run.batch_id, unit, run.requests, run.records_of) as answered:
            attempt = await self._request(unit, run.batch_id)
            answered(attempt.outcome, attempt.status)
        return attempt

    async def _request(self, unit: list[str], batch_id: str) -> Attempt:
        """Send `unit` holding a request slot (released once the answer is in), then
        interpret the answer."""
        try:
            self._metrics.in_flight.inc()
            self._metrics.batch_size.observe(len(unit))
            began = time.monotonic()
            try:
                response = await self._client.post(unit, batch_id)
            except ResponseTooLarge as exc:
                self._metrics.api_requests.labels(outcome="too_large").inc()
                self.throttle.on_transient(time.monotonic(), None, slow_down=False)
                log.warning("api_answer_too_large", batch_id=batch_id, error=str(exc))
                return Attempt(Transient(Cause.TOO_LARGE, str(exc)), None)
            except TransportError as exc:
                self._metrics.api_requests.labels(outcome="connection_error").inc()
                self.throttle.on_transient(time.monotonic(), None, slow_down=False)
                log.warning("api_transport_error", batch_id=batch_id, error=str(exc))
                return Attempt(Transient(Cause.CONNECTION, f"connection error: {exc}"), None)
            except ApiConfigError as exc:
                # The API cannot be used as configured (an unreadable token, a certificate
                # that does not verify, a name that does not resolve): no request reached
                # it. Wait for the fix like for a 401, without marking anything failed.
                return Attempt(Held(str(exc), sent=False), None)
            finally:
                self._metrics.in_flight.dec()
                self._metrics.api_latency.observe(time.monotonic() - began)
        finally:
            self._slots.release()
        # Outside the request slot: a large answer is parsed away from the event loop.
        verdict = await self._interpreter.interpret(response, unit, time.time(), mask_secrets)
        if verdict.malformed_items:
            log.warning("api_malformed_items", batch_id=batch_id, items=verdict.malformed_items)
        status = response.status
        self._metrics.api_requests.labels(outcome=_OUTCOMES[verdict.kind]).inc()
        if verdict.kind is Kind.ITEMS:
            self._leave_hold(time.monotonic())
            self.throttle.on_success()
            return Attempt(Answered(verdict.codes, verdict.missing), status)
        if verdict.kind is Kind.RETRY:
            self.throttle.on_transient(
                time.monotonic(), verdict.retry_after_s, slow_down=status in (429, 503)
            )
            log.warning(
                "api_transient_error",
                batch_id=batch_id,
                status=status,
                reason=verdict.reason,
                retry_after_s=verdict.retry_after_s,
            )
            return Attempt(Transient(_cause(status), verdict.reason), status)
        if verdict.kind is Kind.SPLIT:
            return Attempt(Rejected(verdict.reason), status)
        return Attempt(Held(verdict.reason), status)

    async def _wait_turn(self, deadline: float | None) -> Transient | None:
        """Wait until the shared throttle lets a request start; while the API reports a
        configuration error only one request probes at a time. Returns why no request
        may start instead: shutdown began, or the wait would pass the batch's deadline."""
        async with self._probe if self.holding else contextlib.nullcontext():
            while True:
                now = time.monotonic()
                start = self.throttle.next_start(now)
                if start <= now:
                    self.throttle.on_start(now)
                    return None
                if deadline is not None and start >= deadline:
                    # The API's wait ends past the retry deadline: wait for the deadline
                    # only; the uuids then end `failed` without another request.
                    if await self._sleep(deadline - now):
                        return _SHUTTING_DOWN
                    return _PAST_DEADLINE
                if await self._sleep(start - now):
                    return _SHUTTING_DOWN

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, cut short by shutdown; True when shutdown cut it short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._shutdown.wait(), seconds)
        return self._shutdown.is_set()

    def _after(self, attempt: Attempt, step_hold: str | None, batch_id: str, size: int) -> None:
        """Shared state after an answer: the hold, and pacing of rejections."""
        if step_hold is not None:
            now = time.monotonic()
            if self._held_since is None:
                self._held_since = now
                self._metrics.config_error.set(1)
            delay = self.throttle.on_config_error(now)
            log.error(
                "api_configuration_error",
                batch_id=batch_id,
                status=attempt.status,
                reason=step_hold,
                next_probe_s=round(delay, 3),
            )
        elif isinstance(attempt.outcome, Rejected):
            self.throttle.on_success()
            log.info(
                "api_rejected_request", batch_id=batch_id, size=size, reason=attempt.outcome.reason
            )

    def _leave_hold(self, now: float) -> None:
        if self._held_since is not None:
            self._held_s += now - self._held_since
            self._held_since = None
            self._metrics.config_error.set(0)
            log.info("api_configuration_error_cleared")

    def held_s(self, now: float) -> float:
        """Total seconds spent in the configuration-error hold so far."""
        ongoing = now - self._held_since if self._held_since is not None else 0.0
        return self._held_s + ongoing


class BatchRun:
    """One batch's requests; iterate it for resolutions as they are decided."""

    def __init__(
        self,
        stopper: Stopper,
        resolution: BatchResolution,
        batch_id: str,
        records_of: RecordsOf | None = None,
    ) -> None:
        self._stopper = stopper
        self._resolution = resolution
        self.batch_id = batch_id
        self.records_of = records_of
        self.requests = 0  # sent so far

    def drop(self, uuids: Iterable[str]) -> None:
        """Nobody waits for `uuids` any more: never send nor resolve them."""
        self._resolution.drop(uuids)

    def unresolved(self) -> int:
        """Uuids left without a resolution (shutdown leaves some)."""
        return self._resolution.unresolved()

    async def __aiter__(self) -> AsyncIterator[Answers]:
        stopper = self._stopper
        resolution = self._resolution
        metrics = stopper._metrics
        batch_id = self.batch_id
        try:
            while (unit := resolution.next_unit(stopper.shutting_down)) is not None:
                attempt = await stopper._attempt(unit, self, self._deadline())
                if attempt.outcome is _SHUTTING_DOWN:
                    return
                now = time.monotonic()
                step = resolution.record(unit, attempt.outcome, now, stopper.held_s(now))
                stopper._after(attempt, step.hold, batch_id, len(unit))
                if step.cause is not None:
                    metrics.retries.labels(reason=step.cause).inc(step.retried)
                if step.resolved:
                    yield step.resolved
                if step.wait_s and await stopper._sleep(step.wait_s):
                    return
        finally:
            stopper.breaker.forget(batch_id)

    def _deadline(self) -> float | None:
        now = time.monotonic()
        left = self._resolution.time_left(now, self._stopper.held_s(now))
        return None if left is None else now + left


_SHUTTING_DOWN = Transient(Cause.OTHER, "shutting down", sent=False)
_PAST_DEADLINE = Transient(Cause.THROTTLED, "the API asked to wait past the deadline", sent=False)
_OUTCOMES = {
    Kind.ITEMS: "ok",
    Kind.RETRY: "retry",
    Kind.SPLIT: "split",
    Kind.CONFIG_ERROR: "config_error",
}


def _cause(status: int) -> Cause:
    if status == 429:
        return Cause.THROTTLED
    if 500 <= status < 600:
        return Cause.SERVER_ERROR
    if 200 <= status < 300:
        return Cause.MALFORMED
    return Cause.OTHER

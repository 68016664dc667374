"""Resolving a batch of uuids through the stop API: retries, splitting, shared back-off.

`Stopper.resolve` drives one batch until every uuid has a final answer (a per-item code,
or `failed`) and hands answers to `publish` as they arrive, so partial progress is
committed early. Decisions come from the pure core (interpret, throttle, breaker,
backoff); this module only waits, sends and counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from streamstop.core.backoff import full_jitter_s
from streamstop.core.breaker import RejectionBreaker
from streamstop.core.interpret import Kind, interpret_response, status_for_code
from streamstop.core.results import Status
from streamstop.core.throttle import Throttle
from streamstop.logs import mask_secrets
from streamstop.metrics import Metrics
from streamstop.stopclient import ApiConfigError, StopClient, TransportError

log = structlog.get_logger("streamstop.stopper")


@dataclass(frozen=True, slots=True)
class Resolution:
    """The final answer for one uuid."""

    status: Status
    code: int | None
    error: str | None
    attempts: int


Publish = Callable[[dict[str, Resolution]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`retry.*` settings in seconds."""

    initial_backoff_ms: int
    max_backoff_ms: int
    deadline_s: float


class Stopper:
    """Sends batches to the stop API; shared state across every batch in flight."""

    def __init__(
        self,
        client: StopClient,
        *,
        max_in_flight: int,
        max_batch_size: int,
        max_requests_per_second: float,
        policy: RetryPolicy,
        metrics: Metrics,
    ) -> None:
        self._client = client
        self._slots = asyncio.Semaphore(max_in_flight)
        self._probe = asyncio.Lock()
        self._policy = policy
        self._metrics = metrics
        self._rand = random.Random()
        self.throttle = Throttle(
            initial_backoff_ms=policy.initial_backoff_ms,
            max_backoff_ms=policy.max_backoff_ms,
            max_requests_per_second=max_requests_per_second,
            rand=self._rand.random,
        )
        self.breaker = RejectionBreaker(max_batch_size)
        self._stopped = asyncio.Event()
        # Total seconds spent in configuration-error state: deadline clocks stop meanwhile.
        self._config_error_s = 0.0
        self._config_error_since: float | None = None

    def stop(self) -> None:
        """Shutdown began: batches waiting to retry wake up now (and start no retry)."""
        self._stopped.set()

    @property
    def config_error(self) -> bool:
        """True while the API answers with a configuration error (or the breaker is open)."""
        return self._config_error_since is not None

    async def resolve(
        self, uuids: list[str], batch_id: str, publish: Publish, stopping: Callable[[], bool]
    ) -> list[str]:
        """Resolve `uuids`, publishing answers as they come. Returns the uuids left without
        an answer because the daemon is stopping (their records stay uncommitted)."""
        try:
            return await self._resolve(uuids, batch_id, publish, stopping)
        finally:
            self.breaker.forget(batch_id)

    async def _resolve(
        self, uuids: list[str], batch_id: str, publish: Publish, stopping: Callable[[], bool]
    ) -> list[str]:
        bound = log.bind(batch_id=batch_id)
        state = _BatchState(dict.fromkeys(uuids, 0))
        attempts = state.attempts
        stack: list[list[str]] = [uuids]
        # Single uuids the API rejected while the breaker was closed: the reason, and how
        # often the breaker had opened by then. Their rejection is final unless the
        # breaker opened since (it may have been the broken API's doing), or unless the
        # API accepted nothing at all since this batch's first rejection: a batch too
        # small to open the breaker would otherwise fail every uuid to a broken API.
        rejected: dict[str, tuple[str, int]] = {}
        held: list[str] = []  # single uuids rejected while the breaker was open
        accepted_before: int | None = None  # accepted requests at the first rejection
        while stack:
            unit = stack.pop()
            last_reason = ""
            while unit:
                if stopping() and attempts[unit[0]] > 0:
                    return [*unit, *(uuid for part in stack for uuid in part), *rejected, *held]
                kind, reason, answers, unit = await self._attempt(unit, batch_id, state)
                if answers:
                    await publish(answers)
                if not unit:
                    break
                last_reason = reason or last_reason
                if kind is Kind.SPLIT:
                    if accepted_before is None:
                        accepted_before = self.breaker.accepted
                    # Bisect even while the breaker is open (one probe at a time then):
                    # only a request that gets accepted can show the API works again.
                    if len(unit) > 1:
                        half = len(unit) // 2
                        stack.extend((unit[half:], unit[:half]))
                        self._metrics.retries.labels(reason="split").inc(len(unit))
                    elif self.breaker.open:
                        held.append(unit[0])
                    else:
                        rejected[unit[0]] = (reason, self.breaker.opened)
                    break
                if kind is not Kind.CONFIG_ERROR and self._elapsed(state) >= (
                    self._policy.deadline_s
                ):
                    bound.warning("retry_deadline_passed", uuids=len(unit), reason=last_reason)
                    await publish(
                        self._failed(unit, attempts, f"retry deadline passed: {last_reason}")
                    )
                    break
                if kind is not Kind.CONFIG_ERROR:
                    self._metrics.retries.labels(reason=_retry_reason(kind, reason)).inc(len(unit))
                    delay = full_jitter_s(
                        attempts[unit[0]],
                        self._policy.initial_backoff_ms,
                        self._policy.max_backoff_ms,
                        self._rand.random,
                    )
                    # Cut short by shutdown: the retry would not start anyway.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopped.wait(), delay)
            if stack:
                continue
            if (
                rejected
                and not self.breaker.open
                and (accepted_before is None or self.breaker.accepted == accepted_before)
            ):
                # Nothing accepted since this batch's rejections began: no evidence the
                # API works. Hold them and pace retries as a configuration error.
                self.breaker.trip()
                self._configuration_error(
                    time.monotonic(),
                    batch_id,
                    None,
                    f"API accepts no request ({next(iter(rejected.values()))[0]})",
                    [],
                )
            if self.breaker.open:
                doubtful, final = [*held, *rejected], {}
            else:
                opened = self.breaker.opened
                doubtful = [*held, *(u for u, (_, seen) in rejected.items() if seen < opened)]
                final = {u: why for u, (why, seen) in rejected.items() if seen == opened}
            held, rejected = [], {}  # accepted_before stays: evidence may come later
            if final:
                await publish(
                    {
                        uuid: Resolution(Status.FAILED, None, reason, attempts[uuid])
                        for uuid, reason in final.items()
                    }
                )
            if doubtful:
                # Rejected while (or just before) the API rejected everything: not these
                # uuids' fault. Ask again, one uuid per request (so they cannot add up to
                # a run that reopens the breaker), paced as a configuration error while
                # it lasts.
                stack.extend([uuid] for uuid in reversed(doubtful))
        return []

    def _elapsed(self, state: _BatchState) -> float:
        """Seconds since the batch's first attempt, configuration-error time excluded."""
        now = time.monotonic()
        return now - state.started - (self._config_error_total(now) - state.paused_before)

    async def _attempt(
        self, unit: list[str], batch_id: str, state: _BatchState
    ) -> tuple[Kind, str, dict[str, Resolution], list[str]]:
        """One HTTP attempt for `unit`: (kind, reason, final answers, uuids still open)."""
        attempts = state.attempts
        async with self._slots:
            await self._wait_turn()
            if state.started == _NOT_STARTED:
                state.started = time.monotonic()
                state.paused_before = self._config_error_total(state.started)
            for uuid in unit:
                attempts[uuid] += 1
            self._metrics.in_flight.inc()
            self._metrics.batch_size.observe(len(unit))
            began = time.monotonic()
            try:
                response = await self._client.post(unit, batch_id)
            except TransportError as exc:
                self._metrics.api_requests.labels(outcome="connection_error").inc()
                self.throttle.on_transient(time.monotonic(), None, slow_down=False)
                log.warning("api_transport_error", batch_id=batch_id, error=str(exc))
                return Kind.RETRY, f"connection error: {exc}", {}, unit
            except ApiConfigError as exc:
                # No request went out: the token itself is unusable. Wait for a fixed
                # Secret like for a 401, without marking anything failed.
                return self._configuration_error(time.monotonic(), batch_id, None, str(exc), unit)
            finally:
                self._metrics.in_flight.dec()
                self._metrics.api_latency.observe(time.monotonic() - began)
            verdict = interpret_response(
                response.status,
                response.headers,
                response.body,
                unit,
                time.time(),
                redact=mask_secrets,
            )
        now = time.monotonic()
        kind = verdict.kind
        self._metrics.api_requests.labels(outcome=_OUTCOMES[kind]).inc()
        if kind is Kind.ITEMS:
            self._leave_config_error(now)
            self.throttle.on_success()
            self.breaker.on_accepted()
            answers = {
                uuid: _resolution(code, attempts[uuid]) for uuid, code in verdict.codes.items()
            }
            return kind, "missing from the response", answers, verdict.missing
        if kind is Kind.RETRY:
            self.throttle.on_transient(
                now, verdict.retry_after_s, slow_down=response.status in (429, 503)
            )
            log.warning(
                "api_transient_error",
                batch_id=batch_id,
                status=response.status,
                reason=verdict.reason,
                retry_after_s=verdict.retry_after_s,
            )
            return kind, verdict.reason, {}, unit
        if kind is Kind.SPLIT:
            self.breaker.on_rejected(batch_id)
            if self.breaker.open:
                # Past what bad uuids explain: hold everything (nothing fails), readiness
                # false, one probe at a time; the caller keeps bisecting.
                self._configuration_error(
                    now,
                    batch_id,
                    response.status,
                    f"API rejects every request ({verdict.reason})",
                    unit,
                )
                return kind, verdict.reason, {}, unit
            self.throttle.on_success()
            log.info(
                "api_rejected_request", batch_id=batch_id, size=len(unit), reason=verdict.reason
            )
            return kind, verdict.reason, {}, unit
        return self._configuration_error(now, batch_id, response.status, verdict.reason, unit)

    def _configuration_error(
        self, now: float, batch_id: str, status: int | None, reason: str, unit: list[str]
    ) -> tuple[Kind, str, dict[str, Resolution], list[str]]:
        self._enter_config_error(now)
        delay = self.throttle.on_config_error(now)
        log.error(
            "api_configuration_error",
            batch_id=batch_id,
            status=status,
            reason=reason,
            next_probe_s=round(delay, 3),
        )
        return Kind.CONFIG_ERROR, reason, {}, unit

    async def _wait_turn(self) -> None:
        """Wait until the shared throttle lets a request start; while the API reports a
        configuration error only one request probes at a time."""
        async with self._probe if self.config_error else _NO_LOCK:
            while True:
                now = time.monotonic()
                start = self.throttle.next_start(now)
                if start <= now:
                    self.throttle.on_start(now)
                    return
                await asyncio.sleep(start - now)

    def _enter_config_error(self, now: float) -> None:
        if self._config_error_since is None:
            self._config_error_since = now
            self._metrics.config_error.set(1)

    def _leave_config_error(self, now: float) -> None:
        if self._config_error_since is not None:
            self._config_error_s += now - self._config_error_since
            self._config_error_since = None
            self._metrics.config_error.set(0)
            log.info("api_configuration_error_cleared")

    def _config_error_total(self, now: float) -> float:
        ongoing = now - self._config_error_since if self._config_error_since is not None else 0
        return self._config_error_s + ongoing

    @staticmethod
    def _failed(unit: list[str], attempts: dict[str, int], reason: str) -> dict[str, Resolution]:
        return {uuid: Resolution(Status.FAILED, None, reason, attempts[uuid]) for uuid in unit}


_NOT_STARTED = -1.0


@dataclass(slots=True)
class _BatchState:
    attempts: dict[str, int]
    started: float = _NOT_STARTED
    paused_before: float = 0.0


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *_: object) -> None:
        return None


_NO_LOCK = _NoLock()
_OUTCOMES = {
    Kind.ITEMS: "ok",
    Kind.RETRY: "retry",
    Kind.SPLIT: "split",
    Kind.CONFIG_ERROR: "config_error",
}


_KNOWN = {code: Status(status_for_code(code)) for code in (200, 202, 403, 404)}


@functools.lru_cache(maxsize=1024)
def _resolution(code: int, attempts: int) -> Resolution:
    """The answer for a per-item code. Answers are immutable and few distinct ones
    exist (code x attempt count), so a 10,000-uuid response builds a handful, not 10,000."""
    status = _KNOWN.get(code)
    if status is None:
        return Resolution(Status.UNKNOWN_CODE, code, f"unknown per-item code {code}", attempts)
    return Resolution(status, code, None, attempts)


def _retry_reason(kind: Kind, reason: str) -> str:
    if reason.startswith("connection error"):
        return "connection"
    if reason == "missing from the response":
        return "missing"
    if reason.startswith("HTTP 429"):
        return "throttled"
    if reason.startswith("HTTP 5"):
        return "server_error"
    return "malformed" if kind is Kind.RETRY else "other"

"""Resolving a batch: exactly one resolution per uuid, bisection, the breaker, deadlines.

Driven against a model of the API with a fake clock: each test plays the stopper's loop
(`next_unit`, send, `record`, wait) without I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from streamstop.config.models import RetrySettings
from streamstop.core.breaker import RejectionBreaker
from streamstop.core.resolution import (
    Answered,
    BatchResolution,
    Cause,
    Held,
    Outcome,
    Rejected,
    Transient,
    resolution_for_code,
)
from streamstop.core.results import Resolution, Status

POLICY = RetrySettings(initial_backoff_ms=200, max_backoff_ms=30_000, deadline_s=600.0)
REQUEST_S = 0.05  # model time each request takes
HOLD_S = 5.0  # model time between probes during a configuration error


def code_of(uuid: str) -> int:
    return (200, 202, 403, 404, 409)[int(uuid[-1], 16) % 5]


@dataclass
class Run:
    """Everything a drive of one batch produced."""

    resolutions: dict[str, list[Resolution]] = field(default_factory=dict)
    requests: list[list[str]] = field(default_factory=list)
    holds: list[str] = field(default_factory=list)
    failed_while_held: list[str] = field(default_factory=list)


Api = Callable[[list[str], int], Outcome]


def drive(
    uuids: list[str],
    api: Api,
    *,
    breaker: RejectionBreaker | None = None,
    policy: RetrySettings = POLICY,
    max_requests: int = 5_000,
) -> Run:
    """Play the stopper's loop for one batch; `api(unit, request_number)` answers."""
    breaker = breaker or RejectionBreaker(len(uuids))
    resolution = BatchResolution(uuids, "batch-1", breaker, policy, random.Random(7).random)
    run = Run()
    now, held_s, holding = 0.0, 0.0, False
    while (unit := resolution.next_unit(shutting_down=False)) is not None:
        assert len(run.requests) < max_requests, "the batch never ends"
        run.requests.append(list(unit))
        outcome = api(unit, len(run.requests))
        now += REQUEST_S
        step = resolution.record(unit, outcome, now, held_s)
        for uuid, res in step.resolved.items():
            run.resolutions.setdefault(uuid, []).append(res)
            if res.status is Status.FAILED and (holding or breaker.open):
                run.failed_while_held.append(uuid)
        holding = isinstance(outcome, Held) or step.hold is not None
        if isinstance(outcome, Answered):
            holding = False
        if step.hold is not None:
            run.holds.append(step.hold)
        if holding:
            now += HOLD_S
            held_s += HOLD_S
        now += step.wait_s
    return run


def answering(bad: frozenset[str] = frozenset()) -> Api:
    """An API that answers every uuid, but rejects (400) any request holding a bad one."""

    def api(unit: list[str], _: int) -> Outcome:
        if bad.intersection(unit):
            return Rejected("HTTP 400: bad uuid")
        return Answered({uuid: code_of(uuid) for uuid in unit}, [])

    return api


def uuids_of(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


def test_a_good_answer_resolves_every_uuid_with_its_code_in_one_request() -> None:
    uuids = uuids_of(50)
    run = drive(uuids, answering())
    assert len(run.requests) == 1
    assert {u: r[0].code for u, r in run.resolutions.items()} == {u: code_of(u) for u in uuids}
    assert all(r[0].attempts == 1 for r in run.resolutions.values())


@settings(max_examples=60, deadline=None)
@given(size=st.integers(2, 10_000), bad_at=st.integers(0, 9_999))
def test_one_rejected_uuid_costs_a_logarithmic_number_of_requests(size: int, bad_at: int) -> None:
    uuids = uuids_of(size, seed=size)
    bad = uuids[bad_at % size]
    run = drive(uuids, answering(frozenset({bad})))
    assert len(run.requests) <= 2 * math.ceil(math.log2(size)) + 2
    ((res,),) = [run.resolutions[bad]]
    assert (res.status, res.error) == (Status.FAILED, "HTTP 400: bad uuid")
    assert 2 <= res.attempts <= math.ceil(math.log2(size)) + 1
    assert all(len(r) == 1 for r in run.resolutions.values())
    assert set(run.resolutions) == set(uuids)
    assert not run.holds


@dataclass
class FlakyApi:
    """An API that fails transiently, leaves items out, rejects bad uuids and holds
    (401) for a stretch of requests, all drawn from `seed`."""

    seed: int
    bad: frozenset[str]
    transient_rate: float
    missing_rate: float
    hold_from: int
    hold_until: int
    sent: set[str] = field(default_factory=set)

    def __call__(self, unit: list[str], number: int) -> Outcome:
        rng = random.Random(self.seed * 100_003 + number)
        if self.hold_from <= number < self.hold_until:
            return Held("HTTP 401", sent=rng.random() < 0.8)
        if rng.random() < self.transient_rate:
            return Transient(Cause.SERVER_ERROR, "HTTP 503")
        if self.bad.intersection(unit):
            return Rejected("HTTP 422: bad uuid")
        answered = {u: code_of(u) for u in unit if rng.random() >= self.missing_rate}
        return Answered(answered, [u for u in unit if u not in answered])


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 300),
    seed=st.integers(0, 10_000),
    bad_count=st.integers(0, 3),
    transient_rate=st.sampled_from([0.0, 0.2, 0.6, 1.0]),
    missing_rate=st.sampled_from([0.0, 0.1, 0.5]),
    hold=st.tuples(st.integers(1, 20), st.integers(0, 30)),
)
def test_every_uuid_ends_with_exactly_one_resolution_and_is_never_sent_after_it(
    size: int,
    seed: int,
    bad_count: int,
    transient_rate: float,
    missing_rate: float,
    hold: tuple[int, int],
) -> None:
    uuids = uuids_of(size, seed)
    # At least one good uuid: a batch of only bad uuids, with no other batch to show the
    # API works, is held as a configuration error for good (the breaker's rule).
    bad = frozenset(random.Random(seed).sample(uuids, min(bad_count, size - 1)))
    api = FlakyApi(seed, bad, transient_rate, missing_rate, hold[0], hold[0] + hold[1])
    resolved: set[str] = set()

    def watching(unit: list[str], number: int) -> Outcome:
        # Only unanswered uuids are sent again.
        assert not resolved.intersection(unit)
        return api(unit, number)

    breaker = RejectionBreaker(size)
    resolution = BatchResolution(uuids, "b", breaker, POLICY, random.Random(seed).random)
    resolutions: dict[str, list[Resolution]] = {}
    now = held_s = 0.0
    requests = 0
    while (unit := resolution.next_unit(shutting_down=False)) is not None:
        requests += 1
        assert requests < 5_000, "the batch never ends"
        outcome = watching(unit, requests)
        now += REQUEST_S
        step = resolution.record(unit, outcome, now, held_s)
        for uuid, res in step.resolved.items():
            resolutions.setdefault(uuid, []).append(res)
            resolved.add(uuid)
            # Nothing fails while the API holds or the breaker is open.
            assert not (res.status is Status.FAILED and breaker.open)
            assert not (res.status is Status.FAILED and isinstance(outcome, Held))
        if isinstance(outcome, Held) or (step.hold and not isinstance(outcome, Answered)):
            now += HOLD_S
            held_s += HOLD_S
        now += step.wait_s
    assert set(resolutions) == set(uuids)
    assert all(len(found) == 1 for found in resolutions.values())
    for uuid, (res,) in resolutions.items():
        if res.status is Status.FAILED:
            assert uuid in bad or transient_rate > 0 or missing_rate > 0
        else:
            assert res.code == code_of(uuid)
            assert uuid not in bad


def test_an_api_rejecting_everything_fails_nothing_and_recovers() -> None:
    uuids = uuids_of(1_000)

    def api(unit: list[str], number: int) -> Outcome:
        if number <= 400:
            return Rejected("HTTP 400: everything is wrong")
        return Answered({uuid: code_of(uuid) for uuid in unit}, [])

    run = drive(uuids, api)
    assert any(hold.startswith("API rejects every request") for hold in run.holds)
    assert not run.failed_while_held
    assert all(res.status is not Status.FAILED for (res,) in run.resolutions.values())
    assert set(run.resolutions) == set(uuids)


def test_a_batch_too_small_to_open_the_breaker_holds_when_nothing_is_accepted() -> None:
    uuids = uuids_of(2)

    def api(unit: list[str], number: int) -> Outcome:
        if number <= 6:
            return Rejected("HTTP 400: no")
        return Answered({uuid: code_of(uuid) for uuid in unit}, [])

    run = drive(uuids, api)
    assert any(hold.startswith("API accepts no request") for hold in run.holds)
    assert [res.status for (res,) in run.resolutions.values()] != [Status.FAILED] * 2
    assert all(res.code == code_of(u) for u, (res,) in run.resolutions.items())


def test_transient_failures_end_failed_at_the_deadline_not_before() -> None:
    policy = RetrySettings(initial_backoff_ms=100, max_backoff_ms=1_000, deadline_s=30.0)
    uuids = uuids_of(3)
    down = Transient(Cause.CONNECTION, "connection error: x")
    run = drive(uuids, lambda unit, n: down, policy=policy)
    (res,) = run.resolutions[uuids[0]]
    assert res.status is Status.FAILED
    assert res.error == "retry deadline passed: connection error: x"
    assert res.attempts == len(run.requests) > 5


def test_the_deadline_clock_stops_while_the_api_holds() -> None:
    policy = RetrySettings(initial_backoff_ms=100, max_backoff_ms=1_000, deadline_s=30.0)
    uuids = uuids_of(3)

    def api(unit: list[str], number: int) -> Outcome:
        # 200 probes of 5 s each (far past the deadline) answered 401, then an answer.
        if number == 1:
            return Transient(Cause.SERVER_ERROR, "HTTP 503")
        if number <= 200:
            return Held("HTTP 401")
        return Answered({uuid: code_of(uuid) for uuid in unit}, [])

    run = drive(uuids, api, policy=policy)
    assert all(res.code == code_of(u) for u, (res,) in run.resolutions.items())


def test_an_unsent_request_is_not_an_attempt() -> None:
    uuids = uuids_of(2)

    def api(unit: list[str], number: int) -> Outcome:
        if number <= 3:
            return Held("api.token_file: /x is empty", sent=False)
        return Answered({uuid: code_of(uuid) for uuid in unit}, [])

    run = drive(uuids, api)
    assert [res.attempts for (res,) in run.resolutions.values()] == [1, 1]


def test_missing_uuids_are_sent_again_alone() -> None:
    uuids = uuids_of(10)
    first_missing = uuids[3:5]

    def api(unit: list[str], number: int) -> Outcome:
        if number == 1:
            return Answered({u: code_of(u) for u in unit if u not in first_missing}, first_missing)
        return Answered({u: code_of(u) for u in unit}, [])

    run = drive(uuids, api)
    assert run.requests[1] == first_missing
    assert run.resolutions[uuids[3]][0].attempts == 2
    assert run.resolutions[uuids[0]][0].attempts == 1


def test_shutdown_sends_first_attempts_but_starts_no_retry() -> None:
    uuids = uuids_of(4)
    resolution = BatchResolution(uuids, "b", RejectionBreaker(4), POLICY, random.Random(1).random)
    unit = resolution.next_unit(shutting_down=True)
    assert unit == uuids  # never sent yet: the first attempt still goes out
    resolution.record(unit, Transient(Cause.SERVER_ERROR, "HTTP 500"), 1.0, 0.0)
    assert resolution.next_unit(shutting_down=True) is None
    assert resolution.unresolved() == 4


def test_dropped_uuids_are_never_sent_nor_resolved() -> None:
    uuids = uuids_of(6)
    resolution = BatchResolution(uuids, "b", RejectionBreaker(6), POLICY, random.Random(1).random)
    unit = resolution.next_unit(shutting_down=False)
    assert unit is not None
    resolution.drop(uuids[:3])  # revoked while the request was out
    step = resolution.record(unit, Transient(Cause.SERVER_ERROR, "HTTP 500"), 1.0, 0.0)
    assert step.retried == 3
    assert resolution.next_unit(shutting_down=False) == uuids[3:]
    step = resolution.record(uuids[3:], Answered({u: 200 for u in uuids}, []), 2.0, 0.0)
    assert set(step.resolved) == set(uuids[3:])
    assert resolution.next_unit(shutting_down=False) is None


def test_unknown_codes_keep_their_code_with_a_reason() -> None:
    assert resolution_for_code(409, 2) == Resolution(
        Status.UNKNOWN_CODE, 409, "unknown per-item code 409", 2
    )
    assert resolution_for_code(202, 1).status is Status.STOP_UNCERTAIN


def test_each_documented_code_has_its_status() -> None:
    statuses = [resolution_for_code(code, 1).status for code in (200, 202, 403, 404, 500, 0)]
    assert statuses == [
        Status.STOPPED,
        Status.STOP_UNCERTAIN,
        Status.ALREADY_SENT,
        Status.NOT_FOUND,
        Status.UNKNOWN_CODE,
        Status.UNKNOWN_CODE,
    ]

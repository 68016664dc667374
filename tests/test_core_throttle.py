"""Shared pacing and the rejection breaker: pure decisions, checked with an injected clock."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from streamstop.core.breaker import RejectionBreaker
from streamstop.core.throttle import FAILURE_RUN, Throttle


def throttle(rps: float = 0.0, rand: float = 0.5) -> Throttle:
    return Throttle(
        initial_backoff_ms=200,
        max_backoff_ms=30_000,
        max_requests_per_second=rps,
        rand=lambda: rand,
    )


@given(st.floats(0.5, 500), st.lists(st.floats(0, 0.01), min_size=2, max_size=200))
def test_rate_cap_is_never_exceeded(rps: float, gaps: list[float]) -> None:
    pacer = throttle(rps)
    now = 0.0
    starts = []
    for gap in gaps:
        now = pacer.next_start(now + gap)
        pacer.on_start(now)
        starts.append(now)
    assert all(b - a >= 1 / rps - 1e-9 for a, b in itertools.pairwise(starts))


def test_retry_after_holds_back_every_request() -> None:
    pacer = throttle()
    pacer.on_transient(10.0, retry_after_s=7.0, slow_down=True)
    assert pacer.next_start(10.0) >= 17.0
    assert pacer.next_start(12.0) >= 17.0  # any other request, too
    pacer.on_success()
    assert pacer.next_start(20.0) == 20.0


def test_one_stray_failure_does_not_slow_everyone() -> None:
    pacer = throttle()
    pacer.on_transient(5.0, retry_after_s=None, slow_down=False)
    assert pacer.next_start(5.0) == 5.0


def test_a_run_of_failures_backs_off_everyone() -> None:
    pacer = throttle(rand=0.99)
    for _ in range(FAILURE_RUN):
        pacer.on_transient(5.0, retry_after_s=None, slow_down=False)
    assert pacer.next_start(5.0) > 5.0


def test_configuration_errors_probe_slowly_and_recover() -> None:
    pacer = throttle()
    delays = [pacer.on_config_error(0.0) for _ in range(12)]
    assert pacer.next_start(0.0) == 30.0
    assert delays == sorted(delays)
    assert delays[-1] == 30.0  # capped at retry.max_backoff_ms
    pacer.on_success()
    assert pacer.on_config_error(100.0) == delays[0]  # a new episode starts short again


@given(st.integers(1, 10_000))
def test_bisecting_one_bad_uuid_never_opens_the_breaker(size: int) -> None:
    breaker = RejectionBreaker(size)
    depth = max(1, size - 1).bit_length()
    for _ in range(depth + 2):  # the whole request, each half on the way down, a neighbour
        breaker.on_rejected("a")
    assert not breaker.open


def test_an_api_rejecting_everything_opens_the_breaker() -> None:
    breaker = RejectionBreaker(10_000)
    for _ in range(100):
        breaker.on_rejected("a")
    breaker.on_rejected("b")
    assert breaker.open
    breaker.on_accepted()  # any batch's accepted request: the API works
    assert not breaker.open
    for _ in range(breaker.threshold - 1):  # every run starts again from zero
        breaker.on_rejected("a")
    assert not breaker.open


@given(st.lists(st.sampled_from("abcd"), max_size=200), st.integers(1, 10_000))
def test_concurrent_bisections_do_not_add_up(order: list[str], size: int) -> None:
    # Four batches bisecting at once, interleaved in any order: only a run within one
    # batch counts, so the breaker opens exactly when one batch's own run is long enough.
    breaker = RejectionBreaker(size)
    for batch in order:
        breaker.on_rejected(batch)
    longest = max((order.count(batch) for batch in "abcd"), default=0)
    assert breaker.open == (longest >= breaker.threshold)
    was_open = breaker.open
    for batch in "abcd":
        breaker.forget(batch)  # resolved: its run no longer counts
    for _ in range(breaker.threshold - 1):
        breaker.on_rejected("a")
    assert breaker.open == was_open

"""Retry backoff: full jitter within the exponential cap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamstop.core.backoff import full_jitter_s


def test_the_cap_doubles_per_attempt_up_to_the_maximum() -> None:
    almost_one = 1.0 - 2**-53
    caps = [full_jitter_s(n, 200, 30_000, lambda: almost_one) for n in range(1, 10)]
    assert caps == pytest.approx([0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0])
    assert full_jitter_s(3, 200, 30_000, lambda: 0.0) == 0.0
    assert full_jitter_s(3, 200, 30_000, lambda: 0.5) == pytest.approx(0.8)


def test_huge_attempt_counts_stay_at_the_maximum() -> None:
    assert full_jitter_s(10**12, 200, 30_000, lambda: 0.5) == pytest.approx(15.0)


def test_zero_backoff_and_bad_attempts() -> None:
    assert full_jitter_s(5, 0, 30_000, lambda: 0.9) == 0.0
    assert full_jitter_s(5, 200, 0, lambda: 0.9) == 0.0
    with pytest.raises(ValueError, match="attempt"):
        full_jitter_s(-1, 200, 30_000, lambda: 0.5)


@given(
    st.integers(0, 300),
    st.integers(1, 10**6),
    st.integers(1, 10**7),
    st.floats(0.0, 1.0, exclude_max=True),
)
def test_the_wait_is_uniform_within_the_documented_cap(
    attempt: int, initial_ms: int, max_ms: int, draw: float
) -> None:
    cap_s = min(max_ms, initial_ms * 2**attempt) / 1000
    wait = full_jitter_s(attempt, initial_ms, max_ms, lambda: draw)
    assert 0.0 <= wait <= cap_s
    assert wait == pytest.approx(draw * cap_s)

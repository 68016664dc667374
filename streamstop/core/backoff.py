"""Retry backoff: full jitter, capped (SPEC "Stop API usage").

Never: a negative or unbounded wait.
"""

from __future__ import annotations

from collections.abc import Callable


def full_jitter_s(attempt: int, initial_ms: int, max_ms: int, rand: Callable[[], float]) -> float:
    """Seconds to wait before attempt n+1 after `attempt` = n attempts:
    uniform(0, min(max_ms, initial_ms * 2**n)) / 1000, drawn with `rand()` in [0, 1)."""
    if attempt < 0:
        raise ValueError("attempt must not be negative")
    if initial_ms <= 0 or max_ms <= 0:
        return 0.0
    # Past max_ms's bit length, initial_ms * 2**n (initial_ms >= 1) exceeds max_ms: no need
    # to build a huge integer for a large n.
    cap_ms = max_ms if attempt >= max_ms.bit_length() else min(max_ms, initial_ms << attempt)
    return rand() * cap_ms / 1000.0

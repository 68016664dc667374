"""Slice permits: the oldest batch is served first, and no permit is ever lost."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamstop.permits import PrioritySemaphore


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiters_are_served_by_priority_then_by_arrival() -> None:
    permits = PrioritySemaphore(1)
    await permits.acquire(0)
    served: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await permits.acquire(priority)
        served.append(name)

    tasks = [
        asyncio.create_task(wait(name, priority))
        for name, priority in [("young", 9), ("old", 1), ("older", 0), ("old-again", 1)]
    ]
    await settle()
    assert served == []
    assert permits.waiting == 4
    for _ in tasks:
        permits.release()
        await settle()
    assert served == ["older", "old", "old-again", "young"]
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_gives_up_its_place_or_its_permit() -> None:
    permits = PrioritySemaphore(1)
    await permits.acquire(0)
    waiting = asyncio.create_task(permits.acquire(0))
    behind = asyncio.create_task(permits.acquire(5))
    await settle()
    waiting.cancel()  # cancelled while queued
    await settle()
    assert permits.waiting == 1
    permits.release()
    await asyncio.wait_for(behind, 1)
    # Granted, then cancelled before it ran: the permit goes back.
    granted = asyncio.create_task(permits.acquire(0))
    await settle()
    permits.release()
    granted.cancel()
    with pytest.raises(asyncio.CancelledError):
        await granted
    await asyncio.wait_for(permits.acquire(0), 1)


def test_permits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PrioritySemaphore(0)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 3),
    st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=25),
)
def test_every_permit_comes_back_whatever_is_cancelled(
    size: int, workers: list[tuple[int, bool]]
) -> None:
    async def scenario() -> None:
        permits = PrioritySemaphore(size)
        holding = 0
        most = 0

        async def work(priority: int) -> None:
            nonlocal holding, most
            await permits.acquire(priority)
            holding += 1
            most = max(most, holding)
            try:
                await asyncio.sleep(0)
            finally:
                holding -= 1
                permits.release()

        tasks = [asyncio.create_task(work(priority)) for priority, _ in workers]
        await asyncio.sleep(0)
        for task, (_, cancel) in zip(tasks, workers, strict=True):
            if cancel:
                task.cancel()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert most <= size
        # All permits are free again: `size` acquisitions succeed without waiting.
        for _ in range(size):
            await asyncio.wait_for(permits.acquire(0), 1)
        assert permits.waiting == 0

    asyncio.run(scenario())

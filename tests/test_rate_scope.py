"""`api.rate_scope = "group"`: each member's throttle takes the share of its partitions, so
the shares together never start more requests than the group's budget."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.errors import KafkaConnectionError
from hypothesis import given
from hypothesis import strategies as st

from streamstop.config import Settings
from streamstop.core.throttle import Throttle
from streamstop.ratebudget import RateShare
from streamstop.topics import describe_topics


def throttle(rps: float) -> Throttle:
    return Throttle(
        initial_backoff_ms=200, max_backoff_ms=30_000, max_requests_per_second=rps, rand=lambda: 0.5
    )


def greedy_starts(pacer: Throttle, begin: float, end: float) -> list[float]:
    """Every request start of a member that always has a request waiting: it sleeps until
    `next_start` and starts once that is not in the future (as the stopper does)."""
    starts: list[float] = []
    now = begin
    while now < end:
        start = pacer.next_start(now)
        if start > now:
            now = start
            continue
        pacer.on_start(now)
        starts.append(now)
    return starts


def busiest_second(starts: list[float]) -> int:
    """The most starts within any 1-second window (half-open, as the simulator counts)."""
    starts = sorted(starts)
    best, first = 0, 0
    for last, at in enumerate(starts):
        while starts[first] <= at - 1.0 + 1e-9:
            first += 1
        best = max(best, last - first + 1)
    return best


@st.composite
def assignments(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A partition count and how many partitions each member holds (all assigned)."""
    partitions = draw(st.integers(1, 48))
    members = draw(st.integers(1, min(partitions, 12)))
    cuts = (
        sorted(
            draw(
                st.lists(
                    st.integers(1, partitions - 1),
                    min_size=members - 1,
                    max_size=members - 1,
                    unique=True,
                )
            )
        )
        if members > 1
        else []
    )
    bounds = [0, *cuts, partitions]
    return partitions, [b - a for a, b in itertools.pairwise(bounds)]


@given(st.integers(1, 200), assignments())
def test_the_shares_together_stay_within_the_budget(
    budget: int, split: tuple[int, list[int]]
) -> None:
    partitions, held = split
    starts: list[float] = []
    for count in held:
        pacer = throttle(budget)
        pacer.set_share(count / partitions)
        starts.extend(greedy_starts(pacer, 0.0, 5.0))
    # Each member's starts sit on its own grid of 1/rate: a 1-second window holds at most
    # ceil(rate) of them, so at most one more than its share per member.
    assert busiest_second(starts) <= budget + len(held) - 1
    # ... and the budget is used: every member sends at its share all along.
    assert len(starts) >= 5.0 * budget - len(held)


def test_without_partitions_a_member_starts_nothing_until_it_gets_some() -> None:
    pacer = throttle(20)
    pacer.set_share(0.0)
    assert greedy_starts(pacer, 0.0, 10.0) == []
    assert pacer.next_start(3.0) > 3.0
    pacer.set_share(0.5)
    assert pacer.next_start(3.0) == 3.0  # its first request goes at once
    assert greedy_starts(pacer, 3.0, 4.0) == pytest.approx([3.0 + i / 10 for i in range(10)])


def test_a_share_changes_the_pace_from_the_last_start_on() -> None:
    pacer = throttle(20)
    pacer.on_start(1.0)
    assert pacer.next_start(1.0) == pytest.approx(1.05)  # the whole budget: 20/s
    pacer.set_share(1 / 4)
    assert pacer.next_start(1.0) == pytest.approx(1.2)  # 5/s


def test_a_retry_after_still_holds_the_member_whatever_its_share() -> None:
    pacer = throttle(20)
    pacer.set_share(0.0)
    pacer.on_transient(0.0, retry_after_s=30.0, slow_down=True)
    pacer.set_share(1.0)
    assert pacer.next_start(1.0) >= 30.0


def test_without_a_cap_shares_change_nothing() -> None:
    pacer = throttle(0)
    pacer.set_share(0.0)
    pacer.on_start(1.0)
    assert pacer.next_start(1.0) == 1.0


def test_rate_scope_defaults_to_group_and_takes_pod() -> None:
    assert Settings().api.rate_scope == "group"
    assert Settings.model_validate({"api": {"rate_scope": "POD"}}).api.rate_scope == "pod"
    with pytest.raises(ValueError, match="rate_scope"):
        Settings.model_validate({"api": {"rate_scope": "cluster"}})


def tps(topic: str, *partitions: int) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in partitions}


def pace_of(pacer: Throttle) -> float:
    """Seconds between two requests the throttle lets start."""
    pacer.on_start(100.0)
    return pacer.next_start(100.0) - 100.0


async def test_a_member_takes_the_share_of_its_partitions_and_follows_added_ones(
    kafka_bootstrap: str, make_topic: Any
) -> None:
    topic = make_topic(6, "in")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        pacer = throttle(20)
        share = RateShare(pacer, admin, topic, budget=20, scope="group", partitions=6)
        assert pacer.next_start(0.0) > 0.0  # joined, nothing assigned yet: nothing starts
        await share.assigned(tps(topic, 0, 1))
        assert pace_of(pacer) == pytest.approx(1 / (20 * 2 / 6))
        await admin.create_partitions({topic: NewPartitions(total_count=12)})
        deadline = time.monotonic() + 30
        while (await describe_topics(admin, [topic]))[topic].partitions != 12:
            assert time.monotonic() < deadline, "the new partitions never showed"
            await asyncio.sleep(0.1)  # metadata follows the change a moment later
        await share.assigned(tps(topic, 0, 1))  # the rebalance that follows
        assert pace_of(pacer) == pytest.approx(1 / (20 * 2 / 12))
        await share.assigned(set())
        assert pacer.next_start(200.0) > 200.0
    finally:
        await admin.close()


class _Unreachable:
    async def describe_topics(self) -> Any:
        raise KafkaConnectionError("broker gone")


async def test_when_kafka_cannot_say_the_last_partition_count_known_is_used() -> None:
    pacer = throttle(20)
    share = RateShare(pacer, _Unreachable(), "in", budget=20, scope="group", partitions=6)
    await share.assigned(tps("in", 0, 1, 2))
    assert pace_of(pacer) == pytest.approx(1 / 10)
    # Never a share larger than the partitions prove: here at least 10 exist.
    await share.assigned(tps("in", 9))
    assert pace_of(pacer) == pytest.approx(1 / 2)


async def test_with_pod_scope_every_member_has_the_whole_budget() -> None:
    pacer = throttle(20)
    share = RateShare(pacer, _Unreachable(), "in", budget=20, scope="pod", partitions=6)
    assert pace_of(pacer) == pytest.approx(1 / 20)
    await share.assigned(tps("in", 0))
    assert pace_of(pacer) == pytest.approx(1 / 20)

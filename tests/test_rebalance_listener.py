"""The rebalance listener's ordering on assignment, without a broker."""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import Any

from aiokafka import TopicPartition

from streamstop.metrics import Metrics
from streamstop.partitions import Assignment, Partition
from streamstop.rebalance import RebalanceListener


class Consumer:
    """What the listener asks of the consumer on assignment."""

    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)


async def test_new_partitions_are_known_and_paused_before_the_rate_share_is_worked_out() -> None:
    # Working out the rate share describes the input topic (seconds when Kafka is slow);
    # aiokafka may fetch the new partitions meanwhile. Records of a partition the pipeline
    # does not know yet are skipped while the consumer's position moves past them: they
    # would never get a result. So the partitions are taken in and paused first.
    tps = {TopicPartition("in", 0), TopicPartition("in", 1)}
    consumer = Consumer()
    assignment = Assignment()
    seen: list[tuple[set[TopicPartition], set[TopicPartition]]] = []

    async def rate_share(assigned: Set[TopicPartition]) -> None:
        seen.append((set(consumer.paused), set(assignment.parts)))

    async def drain(parts: Sequence[Partition], deadline: float) -> bool:
        return True

    positioned: list[list[Partition]] = []
    committer: Any = None  # not used on assignment
    listener = RebalanceListener(
        consumer,
        assignment,
        committer,
        Metrics(),
        drain=drain,
        position=positioned.append,
        revoke_timeout_s=1.0,
        rate_share=rate_share,
    )
    await listener.on_partitions_assigned(tps)
    assert seen == [(tps, tps)]
    assert {part.tp for parts in positioned for part in parts} == tps

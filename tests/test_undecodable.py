"""The search for records aiokafka cannot decode, against a fake consumer: it finds the
unreadable offsets, and it is abandoned when a rebalance changes the partition under it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest
from aiokafka import TopicPartition

from streamstop.partitions import Assignment, Partition
from streamstop.undecodable import SearchAbandoned, UndecodableSearch

TP = TopicPartition("in", 0)


class Record(NamedTuple):
    offset: int


@dataclass
class FakeConsumer:
    """One partition of `size` records; reading any offset in `bad` fails the whole read,
    as aiokafka does. `on_read` runs before each read (to rebalance mid-search)."""

    size: int
    bad: range
    on_read: Callable[[int], None] = lambda _: None
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    seeks: list[tuple[int, int]] = field(default_factory=list)  # (read number, offset)
    reads: int = 0

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((self.reads, offset))
        self.positions[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        pass

    def resume(self, *tps: TopicPartition) -> None:
        pass

    def highwater(self, tp: TopicPartition) -> int:
        return self.size

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def getmany(self, tp: TopicPartition, timeout_ms: int, max_records: int) -> Any:
        self.reads += 1
        self.on_read(self.reads)
        start = self.positions[tp]
        end = min(self.size, start + max_records)
        if any(offset in self.bad for offset in range(start, end)):
            self.positions[tp] = end  # the failed read moved the position anyway
            raise ValueError("cannot decode header key")
        self.positions[tp] = end
        return {tp: [Record(offset) for offset in range(start, end)]} if end > start else {}


def consuming_partition(assignment: Assignment, position: int) -> Partition:
    (part,) = assignment.assign([TP])
    part.positioned(position)
    return part


async def test_the_unreadable_offsets_are_found_and_the_rest_taken_in() -> None:
    assignment = Assignment()
    part = consuming_partition(assignment, 100)
    consumer = FakeConsumer(size=3_000, bad=range(1_234, 1_240))
    taken: list[int] = []
    answered: list[tuple[int, int]] = []

    def take(fetched: dict[TopicPartition, list[Any]]) -> None:
        records = fetched[TP]
        taken.extend(record.offset for record in records)
        part.position = records[-1].offset + 1

    search = UndecodableSearch(consumer, take, lambda p, first, end: answered.append((first, end)))
    await search.run([part], paused=False)
    assert answered == [(1_234, 1_240)]
    assert taken == list(range(100, 1_234))
    assert part.position == 1_240
    assert consumer.positions[TP] == 1_240


@pytest.mark.parametrize("rebalance_at", [1, 3, 8, 15])
async def test_a_rebalance_during_the_search_abandons_it(rebalance_at: int) -> None:
    assignment = Assignment()
    part = consuming_partition(assignment, 100)
    successor: list[Partition] = []

    def rebalance(read: int) -> None:
        # The partition is revoked and assigned again (a new lifecycle) mid-search.
        if read == rebalance_at:
            drained = assignment.begin_drain([TP])
            assignment.revoke(drained)
            successor.extend(assignment.assign([TP]))

    consumer = FakeConsumer(size=3_000, bad=range(1_234, 1_240), on_read=rebalance)
    answered: list[tuple[int, int]] = []
    search = UndecodableSearch(consumer, lambda _: None, lambda p, f, e: answered.append((f, e)))
    with pytest.raises(SearchAbandoned):
        await search.run([part], paused=False)
    assert successor
    assert answered == []
    # Nothing was sought for the partition after its lifecycle changed: the new owner's
    # position comes from the group's committed offset, not from a stale search.
    assert [offset for read, offset in consumer.seeks if read >= rebalance_at] == []

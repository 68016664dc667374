"""Batching: size and time bounds, one send per uuid, no record lost."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from streamstop.core.batcher import Batch, Batcher

T = TypeVar("T")


@dataclass(frozen=True)
class Ref:
    seq: int
    uuid: str
    partition: int


def waiting(batch: Batch[T]) -> list[tuple[str, list[T]]]:
    """Every uuid of the batch with records still waiting for it, in request order."""
    return [
        (uuid, list(batch.records_for(uuid))) for uuid in batch.uuids if batch.records_for(uuid)
    ]


def test_a_batch_is_handed_back_when_it_reaches_max_size() -> None:
    batcher: Batcher[int] = Batcher(max_size=2, max_wait_s=1.0)
    assert batcher.add("a", 1, now=10.0) is None
    assert batcher.add("a", 2, now=10.1) is None
    full = batcher.add("b", 3, now=10.2)
    assert full is not None
    assert full.uuids == ["a", "b"]
    assert waiting(full) == [("a", [1, 2]), ("b", [3])]
    assert (full.opened_at, full.record_count) == (10.0, 3)
    assert batcher.deadline() is None
    assert batcher.flush() is None


def test_a_batch_is_due_max_wait_after_its_first_record() -> None:
    batcher: Batcher[int] = Batcher(max_size=100, max_wait_s=0.5)
    assert batcher.take_due(0.0) is None
    batcher.add("a", 1, now=10.0)
    batcher.add("b", 2, now=10.4)
    assert batcher.deadline() == 10.5
    assert batcher.take_due(10.49) is None
    due = batcher.take_due(10.5)
    assert due is not None
    assert due.uuids == ["a", "b"]
    assert batcher.take_due(100.0) is None
    batcher.add("c", 3, now=11.0)
    assert batcher.deadline() == 11.5


def test_removing_a_partitions_records_orphans_uuids_nobody_waits_for() -> None:
    batcher: Batcher[Ref] = Batcher(max_size=10, max_wait_s=1.0)
    refs = [Ref(0, "a", 0), Ref(1, "b", 1), Ref(2, "a", 1), Ref(3, "c", 0), Ref(4, "d", 1)]
    for ref in refs:
        batcher.add(ref.uuid, ref, now=float(ref.seq))
    batch = batcher.flush()
    assert batch is not None
    removed, orphaned = batch.remove_records(lambda ref: ref.partition == 1)
    assert (removed, orphaned) == (3, ["b", "d"])
    assert batch.record_count == 2
    assert waiting(batch) == [("a", [refs[0]]), ("c", [refs[3]])]
    assert batch.uuids == ["a", "b", "c", "d"]  # the request's uuids, unchanged
    assert batch.remove_records(lambda ref: ref.partition == 1) == (0, [])


def test_released_uuids_have_no_records_left() -> None:
    batcher: Batcher[int] = Batcher(max_size=10, max_wait_s=1.0)
    for ref, uuid in enumerate(["a", "b", "a", "a"]):
        batcher.add(uuid, ref, now=0.0)
    batch = batcher.flush()
    assert batch is not None
    assert list(batch.records_for("a")) == [0, 2, 3]
    assert list(batch.records_for("b")) == [1]
    batch.release("a")
    assert list(batch.records_for("a")) == []
    assert waiting(batch) == [("b", [1])]
    assert batch.record_count == 1
    batch.release("a")  # twice: nothing more to forget
    assert batch.record_count == 1
    assert batch.uuids == ["a", "b"]  # the request's uuids, unchanged


def on_partition(partition: int) -> Callable[[Ref], bool]:
    return lambda ref: ref.partition == partition


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 12), st.integers(0, 2)),
        st.tuples(st.just("wait"), st.floats(0.0, 0.3), st.just(0)),
        st.tuples(st.just("flush"), st.just(0.0), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=400)
@given(st.integers(1, 5), st.floats(0.0, 0.5), operations)
def test_batches_keep_every_bound_and_lose_nothing(
    max_size: int, max_wait_s: float, ops: list[tuple[str, float, int]]
) -> None:
    batcher: Batcher[Ref] = Batcher(max_size, max_wait_s)
    now = 0.0
    added: list[Ref] = []
    out: list[Ref] = []
    batches: list[Batch[Ref]] = []
    first_record_at: float | None = None

    def emitted(batch: Batch[Ref] | None) -> None:
        nonlocal first_record_at
        if batch is not None:
            batches.append(batch)
            first_record_at = None

    for op, arg, partition in ops:
        if op == "add":
            ref = Ref(len(added), f"u{int(arg)}", partition)
            added.append(ref)
            if first_record_at is None:
                first_record_at = now
            emitted(batcher.add(ref.uuid, ref, now))
        elif op == "wait":
            now += arg
            due = batcher.take_due(now)
            if due is not None:
                assert now >= due.opened_at + max_wait_s
            emitted(due)
        else:
            emitted(batcher.flush())
        deadline = batcher.deadline()
        assert (deadline is None) == (first_record_at is None)
        if deadline is not None:
            # Never later than max_wait after the oldest record still buffered.
            assert first_record_at is not None
            assert deadline <= first_record_at + max_wait_s
            if op == "wait":
                assert now < deadline  # otherwise take_due would have returned it
    emitted(batcher.flush())

    for batch in batches:
        assert 1 <= len(batch.uuids) <= max_size
        assert len(set(batch.uuids)) == len(batch.uuids)
        held = dict(waiting(batch))
        assert list(held) == batch.uuids
        assert batch.record_count == sum(len(refs) for refs in held.values())
        for uuid, refs in held.items():
            assert all(ref.uuid == uuid for ref in refs)
            assert refs == sorted(refs, key=lambda ref: ref.seq)
        gone = on_partition(batch.uuids.__len__() % 3)
        removed, orphaned = batch.remove_records(gone)
        assert removed == sum(1 for refs in held.values() for ref in refs if gone(ref))
        assert orphaned == [u for u, refs in held.items() if all(gone(ref) for ref in refs)]
        out.extend(ref for refs in held.values() for ref in refs)
    assert sorted(out, key=lambda ref: ref.seq) == added

"""streamstop's per-record path in one process, without the network: for instruction counts
and quick A/B runs of hot-path changes (`make bench` is the real measurement).

HOTPATH_RECORDS cancel events (default 100,000, the bench's shape: `{"messageUuid",
"requestId"}`, no headers) are written as record batches over 6 partitions, exactly as a
fetch returns them. A fake consumer hands them out through aiokafka's own record path
(`PartitionRecords` -> `ConsumerRecord`, CRCs checked), in polls like `getmany`'s; the real
`Pipeline.consume` loop takes them in, real batches go to the real `Stopper` (its HTTP edge
replaced by an answer of code 200 per uuid, as the fake API at 0 ms gives), whose answers
go through the real `Interpreter`, `ResultWriter` and `Publisher` into record batches that a
fake producer builds (`_build`, as aiokafka's sender does) and acknowledges at once. What
is left out: aiokafka's network and protocol code, aiohttp, the committer's commits.

Prints CPU µs per record (process time of the replay alone) and the cyclic GC's share and
collections. Wall and CPU time swing on a shared box; instruction counts do not. With
`--callgrind`, under callgrind, only the replay is counted (a tiny C helper, compiled with
`cc` against valgrind's `callgrind.h`, switches the instrumentation on and off):

    valgrind --tool=callgrind --instr-atstart=no python benchmarks/hotpath.py \
        --records 20000 --callgrind      # instructions/record = the dump's totals / 20,000

Usage: hotpath.py [--records N] [--rounds R] [--callgrind]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import itertools
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import uvloop
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from streamstop import app
from streamstop.config import load_settings
from streamstop.interpreter import Interpreter
from streamstop.metrics import Metrics
from streamstop.partitions import Assignment
from streamstop.pipeline import Pipeline
from streamstop.publisher import Publisher
from streamstop.stopclient import Response
from streamstop.stopper import Stopper
from streamstop.writer import ResultWriter

PARTITIONS = 6
TOPIC = "hotpath-in"
OUTPUT = "hotpath-out"
MAX_BATCH_BYTES = 1024 * 1024  # what the bench's producer writes per record batch
TOKEN = "hotpath-token"


def record_batches(count: int) -> dict[int, list[bytes]]:
    """Each partition's records as record batches of up to 1 MiB (partitions in turn,
    like an unkeyed producer), as the broker stores and serves them."""
    values = (
        orjson.dumps({"messageUuid": str(uuid.UUID(int=i + 1, version=4)), "requestId": f"b{i}"})
        for i in range(count)
    )
    by_partition: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    for index, value in enumerate(values):
        # A copy: orjson's bytes keep its whole working buffer.
        by_partition[index % PARTITIONS].append(bytes(memoryview(value)))
    batches: dict[int, list[bytes]] = {}
    now_ms = int(time.time() * 1000)
    for partition in range(PARTITIONS):
        raw: list[bytes] = []
        base = 0
        builder = _builder()
        delta = 0
        for value in by_partition[partition]:
            if builder.append(delta, now_ms, None, value, []) is None:
                raw.append(_based(builder.build(), base))
                base += delta
                builder, delta = _builder(), 0
                builder.append(delta, now_ms, None, value, [])
            delta += 1
        raw.append(_based(builder.build(), base))
        batches[partition] = raw
    return batches


def _builder() -> Any:
    return DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, MAX_BATCH_BYTES)


def _based(built: bytearray, base_offset: int) -> bytes:
    """A built batch at `base_offset` (the broker assigns it; the CRC does not cover it)."""
    built[0:8] = base_offset.to_bytes(8, "big")
    return bytes(built)


class FakeConsumer:
    """Hands out the records like `getmany`: up to `max_records` records a poll,
    partition after partition."""

    def __init__(self, batches: dict[int, list[bytes]]) -> None:
        self._queues = {
            TopicPartition(TOPIC, p): iter(self._records(TopicPartition(TOPIC, p), raw))
            for p, raw in batches.items()
        }
        self._buffered: dict[TopicPartition, list[Any]] = {}
        self._paused: set[TopicPartition] = set()

    @staticmethod
    def _records(tp: TopicPartition, batches: list[bytes]) -> Iterator[Any]:
        for raw in batches:
            yield from PartitionRecords(
                tp, MemoryRecords(raw), [], 0, None, None, True, READ_UNCOMMITTED
            )

    def assignment(self) -> set[TopicPartition]:
        return set(self._queues)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        fetched: dict[TopicPartition, list[Any]] = {}
        room = max_records
        for tp, source in self._queues.items():
            if tp in self._paused or room <= 0:
                continue
            records = list(itertools.islice(source, room))
            if records:
                fetched[tp] = records
                room -= len(records)
        if not fetched:
            # Nothing left (or everything paused): let the batch tasks run.
            await asyncio.sleep(min(timeout_ms, 5) / 1000)
        else:
            await asyncio.sleep(0)
        return fetched


class FakeClient:
    """The stop API at 0 ms: code 200 for every uuid, in the documented shape."""

    async def post(self, uuids: list[str], request_id: str) -> Response:
        items = b",".join(b'{"messageUuid":"%s","code":200}' % u.encode() for u in uuids)
        await asyncio.sleep(0)
        return Response(200, {}, b'{"errors":false,"items":[' + items + b"]}")


class FakeProducer:
    """Builds each record batch (as aiokafka's sender does) and acknowledges it."""

    def __init__(self, expected: int) -> None:
        self.records = 0
        self._expected = expected
        self.all_acknowledged = asyncio.Event()

    @property
    def client(self) -> Any:
        return self

    @property
    def cluster(self) -> Any:
        return self

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        batch._build()
        self.records += batch.record_count()
        if self.records >= self._expected:
            self.all_acknowledged.set()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class Limits:
    """Every topic takes 1 MiB; nothing is ever refused."""

    def max_message_bytes(self, topic: str) -> int:
        return 1024 * 1024

    async def refused(self, topic: str, batch_bytes: int) -> None:
        pass

    async def refresh(self, topic: str) -> None:  # the publisher of trees before a060ba3
        pass


async def replay(batches: dict[int, list[bytes]], count: int) -> None:
    """Every record through the pipeline until each one is done."""
    settings = load_settings(None, {"streamstop_api__token": TOKEN})
    metrics = Metrics()
    producer = FakeProducer(count)
    publisher = Publisher(lambda: producer, Limits(), metrics)
    await publisher.start()
    assignment = Assignment()
    for part in assignment.assign(TopicPartition(TOPIC, p) for p in range(PARTITIONS)):
        part.positioned(0)
    writer = ResultWriter(
        publisher, assignment, metrics, output_topic=OUTPUT, dlq_topic=settings.kafka.dlq_topic
    )
    stopper = Stopper(
        FakeClient(),  # type: ignore[arg-type]
        Interpreter(max_retry_after_s=settings.retry.max_retry_after_s),
        max_in_flight=settings.batch.max_in_flight,
        max_batch_size=settings.batch.max_size,
        max_requests_per_second=0,
        policy=settings.retry,
        metrics=metrics,
    )
    pipeline = Pipeline(settings, FakeConsumer(batches), assignment, stopper, writer, metrics)
    consuming = asyncio.create_task(pipeline.consume())
    await producer.all_acknowledged.wait()
    drained = await pipeline.drain_all(time.monotonic() + 60)
    consuming.cancel()
    await asyncio.gather(consuming, return_exceptions=True)
    await pipeline.cancel_tasks()
    assert pipeline.fatal is None, pipeline.fatal
    assert drained
    assert producer.records == count, f"{producer.records} results for {count} records"
    assert assignment.uncommitted() == 0


class GcClock:
    """CPU time spent in cyclic collections, and how many of each generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._began
            self.collections[info["generation"]] += 1


CALLGRIND_HELPER = """#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("replay"); }
"""


@contextlib.contextmanager
def callgrind_counting() -> Iterator[None]:
    """Callgrind counts instructions inside the block only (its client requests are a
    no-op when not run under valgrind)."""
    with tempfile.TemporaryDirectory() as tmp:
        source, library = Path(tmp) / "helper.c", Path(tmp) / "helper.so"
        source.write_text(CALLGRIND_HELPER)
        subprocess.run(["cc", "-shared", "-fPIC", "-o", library, source], check=True)
        helper = ctypes.CDLL(str(library))
        helper.start()
        try:
            yield
        finally:
            helper.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--callgrind", action="store_true", help="count the replay only")
    args = parser.parse_args()
    batches = record_batches(args.records)
    gc.collect()
    gc.freeze()  # as the daemon does after start-up
    thresholds = getattr(app, "GC_THRESHOLDS", None)  # (an older tree has none)
    if thresholds is not None:
        gc.set_threshold(*thresholds)
    for _ in range(args.rounds):
        clock = GcClock()
        gc.callbacks.append(clock)
        counting = callgrind_counting() if args.callgrind else contextlib.nullcontext()
        began = time.process_time()
        with counting:
            uvloop.run(replay(batches, args.records))
        cpu = time.process_time() - began
        gc.callbacks.remove(clock)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{args.records:,} records: {cpu * 1e6 / args.records:.2f} CPU µs/record, "
            f"GC {clock.seconds / cpu:.0%} ({'/'.join(map(str, clock.collections))} "
            f"collections), peak RSS {peak:.0f} MB",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What aiokafka's per-record objects cost: one set of record batches, read several ways.

Pre-produces READPATH_RECORDS cancel events (default 200,000) over 6 partitions, then reads
the partitions' log segments (the record batches exactly as the broker serves them in a
fetch response) and measures CPU µs per record for:

- `consumer path`: aiokafka's own `PartitionRecords`, which `getmany` drains: each
  `DefaultRecord` wrapped in a `ConsumerRecord` dataclass, headers copied to a tuple;
- `DefaultRecordBatch`: the same batches iterated directly, keeping the C `DefaultRecord`
  objects (what a lower-level read path in streamstop would hand on);
- `getmany`: a real `AIOKafkaConsumer` (no group) reading the topic over the network, for
  the whole consumer cost the two above are a part of;
- `decode_value`: streamstop's own per-record decode of the same values, for scale.

Each figure is the best of READPATH_ROUNDS rounds (default 5): on a shared box the least
disturbed round is the closest to the code's own cost. A measurement, not a feature.

Usage: readpath.py BOOTSTRAP [KAFKA_STATE_DIR]  (default: .run/kafka, `make kafka-up`'s)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.record.memory_records import MemoryRecords
from bench import BROKER_TIME, PARTITIONS, REPO, records
from kafkahelp import create_topic, produce, unique_name

from streamstop.core.decode import decode_value

RECORDS = int(os.environ.get("READPATH_RECORDS", "200000"))
ROUNDS = int(os.environ.get("READPATH_ROUNDS", "5"))
CHUNK = 5_000  # streamstop's records per poll: each chunk is dropped before the next


def segments(state_dir: Path, topic: str) -> dict[int, bytes]:
    """Each partition's log, as the concatenated record batches the broker stores."""
    logs = {}
    for partition in range(PARTITIONS):
        files = sorted((state_dir / "data" / f"{topic}-{partition}").glob("*.log"))
        logs[partition] = b"".join(path.read_bytes() for path in files)
    return logs


def consumer_path(topic: str, partition: int, raw: bytes) -> Iterable[Any]:
    """The records `getmany` would return, built by aiokafka's own code (CRCs checked,
    as the consumer does by default)."""
    tp = TopicPartition(topic, partition)
    # A generator like `direct_path` (the same small overhead on both sides).
    yield from PartitionRecords(tp, MemoryRecords(raw), [], 0, None, None, True, READ_UNCOMMITTED)


def direct_path(topic: str, partition: int, raw: bytes) -> Iterable[Any]:
    """The same batches' `DefaultRecord`s, CRCs checked, no wrapper objects."""
    batches = MemoryRecords(raw)
    while batches.has_next():
        batch = batches.next_batch()
        if not batch.validate_crc():
            raise ValueError(f"bad CRC in {topic}/{partition}")
        yield from batch


def per_record_us(
    read: Callable[[str, int, bytes], Iterable[Any]], topic: str, logs: dict[int, bytes]
) -> float:
    """Best-of-ROUNDS CPU µs per record to read every partition in CHUNK-record polls."""
    best = float("inf")
    for _ in range(ROUNDS):
        count = 0
        began = time.process_time()
        for partition, raw in logs.items():
            source = iter(read(topic, partition, raw))
            while chunk := list(itertools.islice(source, CHUNK)):
                count += len(chunk)
        best = min(best, (time.process_time() - began) / count * 1e6)
    assert count == RECORDS, f"read {count} records, expected {RECORDS}"
    return best


def decode_us(topic: str, logs: dict[int, bytes]) -> float:
    values = [record.value for raw in logs.values() for record in direct_path(topic, 0, raw)]
    best = float("inf")
    for _ in range(ROUNDS):
        began = time.process_time()
        for value in values:
            decode_value(value)
        best = min(best, (time.process_time() - began) / len(values) * 1e6)
    return best


async def getmany_us(bootstrap: str, topic: str) -> float:
    """Best-of-ROUNDS CPU µs per record of a consumer reading the topic from the start."""
    best = float("inf")
    for _ in range(ROUNDS):
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            count = 0
            began = time.process_time()
            while count < RECORDS:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=CHUNK)
                count += sum(len(batch) for batch in fetched.values())
            best = min(best, (time.process_time() - began) / count * 1e6)
        finally:
            await consumer.stop()
    return best


def main() -> int:
    bootstrap = sys.argv[1]
    state_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / ".run" / "kafka"
    topic = unique_name("readpath")
    create_topic(bootstrap, topic, PARTITIONS, BROKER_TIME)
    produce(bootstrap, topic, records(RECORDS))
    logs = segments(state_dir, topic)
    consumer = per_record_us(consumer_path, topic, logs)
    direct = per_record_us(direct_path, topic, logs)
    network = asyncio.run(getmany_us(bootstrap, topic))
    decode = decode_us(topic, logs)
    print(f"{RECORDS:,} records, {sum(map(len, logs.values())):,} bytes of record batches")
    print("| read path | CPU µs/record |\n|---|---|")
    print(f"| getmany (network, protocol, consumer path) | {network:.2f} |")
    print(f"| consumer path (PartitionRecords -> ConsumerRecord) | {consumer:.2f} |")
    print(f"| DefaultRecordBatch directly (DefaultRecord) | {direct:.2f} |")
    print(f"| saved by the direct path | {consumer - direct:.2f} |")
    print(f"| streamstop decode_value, for scale | {decode:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

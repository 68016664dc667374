"""The ceiling: the least an aiokafka-based design must do, with no HTTP at all.

Consume the input in a group, produce one result-sized event per record through an
idempotent producer (send all of a poll, then wait for the acks), commit, until every
record present at start is committed. Run as its own process by `bench.py`.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def main(bootstrap: str, topic: str, output: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    ends = await consumer.end_offsets(partitions)
    done: dict[TopicPartition, int] = {}
    try:
        while any(done.get(tp, 0) < end for tp, end in ends.items()):
            fetched = await consumer.getmany(timeout_ms=100, max_records=10_000)
            futures = []
            offsets: dict[TopicPartition, int] = {}
            for tp, records in fetched.items():
                for record in records:
                    value = orjson.dumps(
                        {
                            "schemaVersion": 1,
                            "messageUuid": "2a28d557-22a1-4be6-8908-1481723043dd",
                            "status": "stopped",
                            "code": 200,
                            "error": None,
                            "requestId": None,
                            "source": {
                                "topic": tp.topic,
                                "partition": tp.partition,
                                "offset": record.offset,
                            },
                            "batchId": "8c0e6a52-8f0d-4c8e-9d59-2b1c1d3e4f50",
                            "attempts": 1,
                            "receivedAt": "2026-01-02T03:04:05.678Z",
                            "completedAt": "2026-01-02T03:04:05.912Z",
                        }
                    )
                    futures.append(
                        await producer.send(
                            output, value, key=record.key, headers=list(record.headers)
                        )
                    )
                offsets[tp] = records[-1].offset + 1
            await asyncio.gather(*futures)
            if offsets:
                await consumer.commit(offsets)
                done.update(offsets)
    finally:
        await consumer.stop()
        await producer.stop()


def peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    started = time.monotonic()
    asyncio.run(main(*sys.argv[1:5]))
    # For the harness: rusage of a child counts the parent's pages it shared before exec.
    print(f"peak_rss_mb={peak_rss_mb():.1f}", flush=True)

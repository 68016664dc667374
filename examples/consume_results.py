"""A minimal downstream consumer of streamstop's results (aiokafka).

    python examples/consume_results.py --bootstrap HOST:PORT [--topic TOPIC] [--group GROUP]

Reads the output topic with isolation.level=read_committed: under streamstop's
exactly-once delivery that is what makes it one result per input record (results of
aborted transactions are skipped), and it costs nothing otherwise. Under at-least-once
(the default) an input record processed again after a crash gets a second result with
the same `source`, so results are handled once per source (topic, partition, offset).
Offsets are committed after the results are handled. Prints each new result as one JSON
line on stdout; SIGINT or SIGTERM stops it, with a summary on stderr. Needs only
`aiokafka`. The fields are in `schemas/result-event.schema.json`; ignore the ones you do
not know (fields may be added without a schemaVersion change).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer

Source = tuple[str, int, int]


class Deduplicator:
    """Remembers which input records already had a result handled.

    In memory for the example; a real service keeps the source as a unique key in the
    store it writes results to, so that a duplicate arriving after a restart is caught too.
    """

    def __init__(self) -> None:
        self._seen: set[Source] = set()
        self.duplicates = 0

    def first_time(self, result: dict[str, Any]) -> bool:
        """True for the first result of its input record."""
        source = result["source"]
        key = (source["topic"], source["partition"], source["offset"])
        if key in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(key)
        return True


def handle(result: dict[str, Any]) -> None:
    """Your business logic; here, print the result."""
    print(json.dumps(result), flush=True)


async def consume(bootstrap: str, topic: str, group: str, stop: asyncio.Event) -> int:
    """Handle new results until `stop` is set; returns how many were handled."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    dedup = Deduplicator()
    handled = 0
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    result = json.loads(record.value)
                    # Built for version 1: stop (uncommitted) rather than misread a newer one.
                    if result["schemaVersion"] != 1:
                        raise SystemExit(f"unsupported schemaVersion {result['schemaVersion']}")
                    if dedup.first_time(result):
                        handle(result)
                        handled += 1
            if batches:
                await consumer.commit()  # after handling: a crash redelivers, never skips
    finally:
        await consumer.stop()
        print(f"handled {handled} results, skipped {dedup.duplicates} duplicates", file=sys.stderr)
    return handled


async def run(bootstrap: str, topic: str, group: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await consume(bootstrap, topic, group, stop)


def main() -> int:
    parser = argparse.ArgumentParser(description="Read streamstop's results.")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic", default="message-stop-results", help="kafka.output_topic")
    parser.add_argument("--group", default="stop-results-reader", help="your consumer group")
    args = parser.parse_args()
    asyncio.run(run(args.bootstrap, args.topic, args.group))
    return 0


if __name__ == "__main__":
    sys.exit(main())

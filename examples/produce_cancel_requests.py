"""A minimal upstream producer: ask streamstop to stop outgoing messages (aiokafka).

    python examples/produce_cancel_requests.py --bootstrap HOST:PORT [--topic TOPIC] UUID...
    some-command | python examples/produce_cancel_requests.py --bootstrap HOST:PORT

Each uuid (arguments, else stdin, one a line) becomes one record on the input topic, as
`schemas/input-event.schema.json` describes: key the uuid, value
`{"messageUuid": ..., "requestId": ...}` in UTF-8 JSON. Malformed uuids are refused here,
before anything is sent, instead of coming back as `invalid` results. The producer is
idempotent with acks=all, so a retried send is not written twice. Prints one line per
record: uuid, requestId, partition, offset (the result's `source` will name them).
Needs only `aiokafka`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid

from aiokafka import AIOKafkaProducer

# The input schema's uuid: dashed, any case; no braces, no urn:uuid: prefix.
UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


async def produce(bootstrap: str, topic: str, uuids: list[str]) -> None:
    """Send one cancel request per uuid and wait until Kafka has acknowledged them all."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        sent = []
        for message_uuid in uuids:
            # Your own correlation id; streamstop echoes it into the result.
            request_id = uuid.uuid4().hex
            value = {"messageUuid": message_uuid.lower(), "requestId": request_id}
            future = await producer.send(
                topic, json.dumps(value).encode(), key=message_uuid.lower().encode()
            )
            sent.append((message_uuid.lower(), request_id, future))
        for message_uuid, request_id, future in sent:
            metadata = await future
            print(message_uuid, request_id, metadata.partition, metadata.offset, flush=True)
    finally:
        await producer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Ask streamstop to stop messages.")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic", default="message-cancel-requests", help="kafka.input_topic")
    parser.add_argument("uuids", nargs="*", help="message uuids (default: read stdin)")
    args = parser.parse_args()
    uuids = args.uuids or [line.strip() for line in sys.stdin if line.strip()]
    malformed = [u for u in uuids if not UUID.fullmatch(u)]
    if malformed:
        print(f"not a uuid, nothing sent: {', '.join(malformed)}", file=sys.stderr)
        return 2
    asyncio.run(produce(args.bootstrap, args.topic, uuids))
    return 0


if __name__ == "__main__":
    sys.exit(main())

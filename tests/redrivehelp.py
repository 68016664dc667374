"""Result events made as the daemon makes them, for the `streamstop redrive` tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from kafkahelp import Message

from streamstop.core.results import Resolution, Status, build_result, format_timestamp

_CODES = {
    Status.STOPPED: 200,
    Status.STOP_UNCERTAIN: 202,
    Status.ALREADY_SENT: 403,
    Status.NOT_FOUND: 404,
    Status.UNKNOWN_CODE: 409,
}
_NEVER_SENT = {Status.INVALID, Status.EXPIRED}


def result_value(
    status: Status,
    uuid: str | None,
    source: tuple[str, int, int],
    request_id: str | None = None,
) -> bytes:
    """The value of a result with `status` for the input record at `source`."""
    error = None if status in _CODES and status is not Status.UNKNOWN_CODE else "a reason"
    attempts = 0 if status in _NEVER_SENT else 1
    topic, partition, offset = source
    return build_result(
        uuid=None if status is Status.INVALID else uuid,
        resolution=Resolution(status, _CODES.get(status), error, attempts),
        request_id=request_id,
        topic=topic,
        partition=partition,
        offset=offset,
        batch_id=None if status in _NEVER_SENT else "b-1",
        received_at=format_timestamp(0.0),
        completed_at=format_timestamp(0.0),
    )


def result_message(
    status: Status,
    uuid: str,
    source: tuple[str, int, int],
    *,
    request_id: str | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
    partition: int | None = None,
    timestamp_ms: int | None = None,
) -> Message:
    """A result record as the daemon publishes it: keyed by the uuid (null for invalid)."""
    value = result_value(status, uuid, source, request_id)
    key = None if status is Status.INVALID else uuid.encode()
    return Message(value, key, headers, partition=partition, timestamp_ms=timestamp_ms)


def source_of(record: Any) -> str:
    """`topic/partition/offset` of the input record a result answers (a record read
    from Kafka, or a `Message` to produce)."""
    source = orjson.loads(record.value)["source"]
    return f"{source['topic']}/{source['partition']}/{source['offset']}"

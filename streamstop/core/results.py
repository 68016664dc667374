"""The result event published for each input record (SPEC "Result events").

Every field is always present (null, never omitted), so consumers can rely on the schema.
Built once per record: one dict and one orjson dump.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from functools import lru_cache

import orjson

SCHEMA_VERSION = 1
_MILLIS_SUFFIX = tuple(f".{ms:03d}Z" for ms in range(1000))


class Status(enum.StrEnum):
    """The outcome of one input record."""

    STOPPED = "stopped"
    STOP_UNCERTAIN = "stop_uncertain"
    ALREADY_SENT = "already_sent"
    NOT_FOUND = "not_found"
    UNKNOWN_CODE = "unknown_code"
    INVALID = "invalid"
    EXPIRED = "expired"
    FAILED = "failed"


def format_timestamp(epoch_s: float) -> str:
    """`2026-01-02T03:04:05.678Z`: UTC with milliseconds, truncated like `datetime`."""
    # Round to microseconds first, as datetime.fromtimestamp does, then truncate.
    millis = round(epoch_s * 1_000_000) // 1000
    return _second_prefix(millis // 1000) + _MILLIS_SUFFIX[millis % 1000]


@lru_cache(maxsize=256)
def _second_prefix(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


@dataclass(frozen=True, slots=True)
class Resolution:
    """The final answer for one record's uuid: what its result says."""

    status: Status
    code: int | None
    error: str | None
    attempts: int


def build_result(
    *,
    uuid: str | None,
    resolution: Resolution,
    request_id: str | None,
    topic: str,
    partition: int,
    offset: int,
    batch_id: str | None,
    received_at: str,
    completed_at: str,
) -> bytes:
    """The JSON value of the result event for one input record. The two times come
    already formatted (`format_timestamp`): a poll's records share one receive time and a
    response's results one completion time, so each is formatted once, not per record."""
    # orjson hands back its 4 KiB working buffer as the bytes object; results wait in
    # memory until Kafka acknowledges them, so keep an exact-size copy (10x less memory).
    return bytes(
        memoryview(
            orjson.dumps(
                {
                    "schemaVersion": SCHEMA_VERSION,
                    "messageUuid": uuid,
                    "status": resolution.status,
                    "code": resolution.code,
                    "error": resolution.error,
                    "requestId": request_id,
                    "source": {"topic": topic, "partition": partition, "offset": offset},
                    "batchId": batch_id,
                    "attempts": resolution.attempts,
                    "receivedAt": received_at,
                    "completedAt": completed_at,
                }
            )
        )
    )

"""Making a record fit its topic's `max.message.bytes` (SPEC "Delivery guarantees").

Kafka refuses a record batch over the topic's limit for good, and aiokafka's idempotent
producer does not recover the partition's sequence afterwards, so nothing that would be
refused may be sent. A result too large for its topic goes without the input headers it
copied (its own `streamstop-*` headers stay) and says so in `streamstop-truncated:
headers`; if that is not enough (a huge `requestId`), the `requestId` goes too. A DLQ copy
is cut to fit: its value first, then the copied headers, marked `streamstop-truncated:
true`. Pure: sizes are aiokafka's own upper bound for a one-record batch.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import orjson
from aiokafka.record.default_records import DefaultRecordBatchBuilder

Headers = Sequence[tuple[str, bytes]]
TRUNCATED = "streamstop-truncated"
OWN_PREFIX = "streamstop-"


# What a one-record batch without headers adds to its key and value at most: the batch
# header (61), the record's overhead (21), two length varints (5 each), a header count (1).
BARE_RECORD_OVERHEAD = 93


class Kind(enum.Enum):
    """How a record that does not fit may be cut."""

    RESULT = "result"
    DLQ = "dlq"


class DoesNotFit(ValueError):
    """Nothing left to cut: the topic's limit is below any record streamstop writes."""


def record_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """An upper bound of the size of a record batch holding only this record."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def fit(
    kind: Kind, key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """(key, value, headers) of the record, cut to fit in `limit` bytes when it does not.
    Raises DoesNotFit when even the smallest form does not."""
    if record_size(key, value, list(headers)) <= limit:
        return key, value, headers
    if kind is Kind.RESULT:
        return _fit_result(key, value, headers, limit)
    return _fit_dlq_copy(key, value, headers, limit)


def _own(headers: Headers) -> list[tuple[str, bytes]]:
    return [(name, data) for name, data in headers if name.startswith(OWN_PREFIX)]


def _fit_result(
    key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> tuple[bytes | None, bytes | None, Headers]:
    kept = [*_own(headers), (TRUNCATED, b"headers")]
    if record_size(key, value, kept) <= limit:
        return key, value, kept
    if value is not None:
        result = orjson.loads(value)
        result["requestId"] = None
        value = orjson.dumps(result)
        kept[-1] = (TRUNCATED, b"headers,requestId")
        if record_size(key, value, kept) <= limit:
            return key, value, kept
    raise DoesNotFit(f"a result does not fit in {limit} bytes even without its headers")


def _fit_dlq_copy(
    key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> tuple[bytes | None, bytes | None, Headers]:
    marked = [*(h for h in headers if h[0] != TRUNCATED), (TRUNCATED, b"true")]
    if value:
        # The value shrinks first, to what the rest leaves room for.
        # (4: the value's length prefix grows from one byte to at most five.)
        room = limit - record_size(key, b"", marked) - 4
        if room > 0:
            return key, value[:room], marked
        value = b""
    marked = [*_own(marked)]
    if record_size(key, value, marked) <= limit:
        return key, value, marked
    raise DoesNotFit(f"a DLQ copy does not fit in {limit} bytes even without its content")

"""Making a record fit its topic's `max.message.bytes` (SPEC "Delivery guarantees").

Kafka refuses a record batch over the topic's limit for good, and aiokafka's idempotent
producer does not recover the partition's sequence afterwards, so nothing that would be
refused may be sent. A result too large for its topic goes without the input headers it
copied (its own `streamstop-*` headers stay) and says so in `streamstop-truncated:
headers`; if that is not enough (a huge `requestId`), the `requestId` goes too, and at the
last any input header at all. A DLQ copy is cut to fit: its value first, then the copied
headers, at the last its key, marked `streamstop-truncated: true`. The smallest forms fit
any topic streamstop accepts at start (`max.message.bytes` of 1024 or more). Pure: sizes
are aiokafka's own upper bound for a one-record batch.

Never: return a record still too large; never cut what a smaller form keeps.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import orjson
from aiokafka.record.default_records import DefaultRecordBatchBuilder

Headers = Sequence[tuple[str, bytes]]
TRUNCATED = "streamstop-truncated"
OWN_PREFIX = "streamstop-"


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
    """Smaller and smaller forms: without copied headers; then without `requestId` too;
    then without any input header at all (even a `streamstop-*` one an input carried)."""
    kept = [*_own(headers), (TRUNCATED, b"headers")]
    if record_size(key, value, kept) <= limit:
        return key, value, kept
    if value is not None:
        result = orjson.loads(value)
        result["requestId"] = None
        value = orjson.dumps(result)
    marker = (TRUNCATED, b"headers,requestId")
    for headers_left in ([*_own(headers), marker], [marker]):
        if record_size(key, value, headers_left) <= limit:
            return key, value, headers_left
    raise DoesNotFit(f"a result does not fit in {limit} bytes even without its headers")


def _fit_dlq_copy(
    key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """The value cut first, then the copied headers; at the last the key and any
    `streamstop-*` header the input carried: only the copy's own reason and source stay
    (they come last, added by the writer)."""
    marked = [*(h for h in headers if h[0] != TRUNCATED), (TRUNCATED, b"true")]
    if value:
        # The value shrinks first, to what the rest leaves room for.
        # (4: the value's length prefix grows from one byte to at most five.)
        room = limit - record_size(key, b"", marked) - 4
        if room > 0:
            return key, value[:room], marked
        value = b""
    smallest = [*_last_of(headers, "streamstop-error", "streamstop-source"), (TRUNCATED, b"true")]
    for key_left, headers_left in ((key, [*_own(marked)]), (key, smallest), (None, smallest)):
        if record_size(key_left, value, headers_left) <= limit:
            return key_left, value, headers_left
    raise DoesNotFit(f"a DLQ copy does not fit in {limit} bytes even without its content")


def _last_of(headers: Headers, *names: str) -> list[tuple[str, bytes]]:
    """The last header of each name (the writer's own, added after the copied ones)."""
    found = {name: data for name, data in headers if name in names}
    return [(name, found[name]) for name in names if name in found]

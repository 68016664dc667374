"""Which results `streamstop redrive` sends again, and the request it sends for each.

A result is chosen by its status and its Kafka timestamp. A source record (the input
record a result answers) is sent again at most once per run, however many results it has
(at-least-once can leave two). The new request is keyed by the uuid; its value holds the
uuid and the `requestId`; its headers are the result's copied ones (never streamstop's own,
which describe the old result) plus `streamstop-redrive-of`, naming the first record of
the chain: a result that answers a redriven request passes its `streamstop-redrive-of` on.
Pure: no I/O; the time is given.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streamstop.core.fit import OWN_PREFIX, record_size
from streamstop.core.results import SCHEMA_VERSION, Status

REDRIVE_OF = "streamstop-redrive-of"
# What may be sent again: the API never gave a final answer for these.
REDRIVABLE = (Status.FAILED, Status.EXPIRED, Status.STOP_UNCERTAIN, Status.UNKNOWN_CODE)
_NOT_REDRIVABLE = {
    Status.STOPPED: "the API stopped the message",
    Status.ALREADY_SENT: "the message was already sent, too late to stop",
    Status.NOT_FOUND: "the API has no such message",
    Status.INVALID: "the input had no usable uuid: fix it at its producer "
    "(docs/operations.md, 'Re-processing the DLQ')",
}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MILLISECOND = datetime.timedelta(milliseconds=1)
_SOURCE = re.compile(r"[a-zA-Z0-9._-]{1,249}/(0|[1-9][0-9]*)/(0|[1-9][0-9]*)")
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_S = (86_400, 3_600, 60, 1)


def parse_status(text: str) -> Status:
    """A `--status` value; raises ValueError saying why one cannot be redriven."""
    try:
        status = Status(text.strip().lower())
    except ValueError:
        raise ValueError(f"unknown status; choose from {_names(REDRIVABLE)}") from None
    if status not in REDRIVABLE:
        raise ValueError(
            f"{status} results are not sent again ({_NOT_REDRIVABLE[status]}); "
            f"redrive takes {_names(REDRIVABLE)}"
        )
    return status


def _names(statuses: Sequence[Status]) -> str:
    return ", ".join(status.value for status in statuses)


def parse_moment(text: str, now_ms: int) -> int:
    """A `--since`/`--until` value as epoch milliseconds: an ISO 8601 time with its zone
    (`2026-01-02T03:04:05Z`, `...+01:00`) or a duration before now (`90s`, `15m`, `2h`,
    `1d`, `1h30m`). Raises ValueError saying what is accepted."""
    text = text.strip()
    duration = _DURATION.fullmatch(text.lower())
    if text and duration is not None:
        counts = zip(duration.groups(), _UNIT_S, strict=True)
        seconds = sum(int(n) * unit for n, unit in counts if n)
        return now_ms - seconds * 1000
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "not a time: give an ISO 8601 time with its zone (2026-01-02T03:04:05Z) or a "
            "duration before now (90s, 15m, 2h, 1d, 1h30m)"
        ) from None
    if moment.tzinfo is None:
        text += "" if "T" in text else "T00:00"
        raise ValueError(f"add a time zone: {text}Z for UTC, or an offset such as {text}+01:00")
    return (moment - _EPOCH) // _MILLISECOND


@dataclass(frozen=True, slots=True)
class Selection:
    """Which results to send again: statuses, and a window `[since, until)` of their Kafka
    timestamps (epoch ms; None is open)."""

    statuses: frozenset[Status]
    since_ms: int | None = None
    until_ms: int | None = None

    def takes(self, status: Status, timestamp_ms: int) -> bool:
        """Whether a result with `status` written at `timestamp_ms` is chosen."""
        if status not in self.statuses:
            return False
        if self.since_ms is not None and timestamp_ms < self.since_ms:
            return False
        return self.until_ms is None or timestamp_ms < self.until_ms


@dataclass(frozen=True, slots=True)
class Source:
    """An input record: what a result's `source` names."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class Chosen:
    """A result chosen to be sent again, with what its request needs."""

    uuid: str
    status: Status
    request_id: str | None
    source: Source
    origin: str  # the first record of the chain (`streamstop-redrive-of`)
    headers: tuple[tuple[str, bytes | None], ...]  # the result's copied headers


class Skipped(enum.Enum):
    """Why a record of the output topic is not sent again."""

    UNREADABLE = "not a version-1 result event"
    NOT_CHOSEN = "not chosen"


Headers = Sequence[tuple[str, bytes | None]]


def choose(
    value: bytes | None, headers: Headers, timestamp_ms: int, selection: Selection
) -> Chosen | Skipped:
    """What to do with one record of the output topic."""
    result = _read_result(value)
    if result is None:
        return Skipped.UNREADABLE
    if not selection.takes(result.status, timestamp_ms):
        return Skipped.NOT_CHOSEN
    if result.uuid is None:  # only `invalid` has none, and it is never chosen
        return Skipped.UNREADABLE
    return Chosen(
        uuid=result.uuid,
        status=result.status,
        request_id=result.request_id,
        source=result.source,
        origin=_origin(headers) or str(result.source),
        headers=tuple((name, data) for name, data in headers if not name.startswith(OWN_PREFIX)),
    )


@dataclass(frozen=True, slots=True)
class _Result:
    status: Status
    uuid: str | None
    request_id: str | None
    source: Source


def _read_result(value: bytes | None) -> _Result | None:
    try:
        document: Any = orjson.loads(value or b"")
        if document.get("schemaVersion") != SCHEMA_VERSION:
            return None
        source = document["source"]
        where = Source(source["topic"], source["partition"], source["offset"])
        status = Status(document["status"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    uuid, request_id = document.get("messageUuid"), document.get("requestId")
    valid = (
        isinstance(where.topic, str)
        and all(type(n) is int and n >= 0 for n in (where.partition, where.offset))
        and (uuid is None or isinstance(uuid, str))
    )
    if not valid:
        return None
    return _Result(status, uuid, request_id if isinstance(request_id, str) else None, where)


def _origin(headers: Headers) -> str | None:
    """The result's `streamstop-redrive-of` (its request was itself a redrive), if usable."""
    for name, data in reversed(headers):
        if name == REDRIVE_OF and data is not None:
            text = data.decode("utf-8", "replace")
            return text if _SOURCE.fullmatch(text) else None
    return None


class SeenSources:
    """Source records already sent again in this run (set of offsets per topic and
    partition: about 80 bytes per record)."""

    def __init__(self) -> None:
        self._offsets: dict[tuple[str, int], set[int]] = {}

    def first_time(self, source: Source) -> bool:
        """Record `source`; False when it was recorded before."""
        offsets = self._offsets.setdefault((source.topic, source.partition), set())
        if source.offset in offsets:
            return False
        offsets.add(source.offset)
        return True


@dataclass(frozen=True, slots=True)
class Request:
    """The record re-published to the input topic."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes | None]]
    cut: bool = False  # sent without the copied headers: they did not fit the topic


def request_for(chosen: Chosen, max_bytes: int) -> Request:
    """The cancel request to publish for `chosen`, fitting in `max_bytes` (the input
    topic's `max.message.bytes`): when the copied headers do not fit, it goes without them
    (`streamstop-redrive-of` stays). A null `requestId` is left out, as the input schema
    wants a string."""
    document: dict[str, str] = {"messageUuid": chosen.uuid}
    if chosen.request_id is not None:
        document["requestId"] = chosen.request_id
    key, value = chosen.uuid.encode(), orjson.dumps(document)
    redrive_of: tuple[str, bytes | None] = (REDRIVE_OF, chosen.origin.encode())
    headers = [*chosen.headers, redrive_of]
    if record_size(key, value, headers) <= max_bytes:
        return Request(key, value, headers)
    return Request(key, value, [redrive_of], cut=True)

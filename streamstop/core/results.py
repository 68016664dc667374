"""The result event published for each input record (SPEC "Result events").

Every field is always present (null, never omitted), so consumers can rely on the schema.
Built once per record, from fragments encoded once per resolution, partition and slice.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from functools import lru_cache

import orjson

SCHEMA_VERSION = 1
_MILLIS_SUFFIX = tuple(f".{ms:03d}Z" for ms in range(1000))
_HEAD = b'{"schemaVersion":%d,"messageUuid":' % SCHEMA_VERSION


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
    # `,"status":…,"code":…,"error":…,"requestId":` as the result carries it: resolutions
    # are few and shared by many records, so each is encoded once, not per record.
    fields: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = b',"status":%b,"code":%b,"error":%b,"requestId":' % (
            orjson.dumps(self.status),
            orjson.dumps(self.code),
            orjson.dumps(self.error),
        )
        object.__setattr__(self, "fields", encoded)


class ResultValues:
    """The JSON values of the result events that share a batch and a completion time
    (the results of one published slice).

    A value is `orjson.dumps` of the result's fields in SPEC order, byte for byte; per
    record only the uuid, `requestId` and offset are encoded, the rest are fragments
    made once: the resolution's fields, the source partition's, and the tail shared by
    records with the same attempts and receive time. Values are built exact-size
    (orjson would hand back its 4 KiB working buffer, held until Kafka acknowledges)."""

    __slots__ = ("_batch_id", "_completed_at", "_sources", "_tails")

    def __init__(self, batch_id: str | None, completed_at: str) -> None:
        self._batch_id = orjson.dumps(batch_id)
        self._completed_at = orjson.dumps(completed_at)
        self._sources: dict[tuple[str, int], bytes] = {}
        self._tails: dict[tuple[str, int], bytes] = {}

    def value(
        self,
        uuid: str | None,
        resolution: Resolution,
        request_id: str | None,
        source: tuple[str, int],
        offset: int,
        received_at: str,
    ) -> bytes:
        """The result value for the record at `offset` of `source` (topic, partition),
        received at `received_at` (`format_timestamp`)."""
        prefix = self._sources.get(source)
        if prefix is None:
            prefix = self._sources[source] = _source_fields(*source)
        tail = self._tails.get((received_at, resolution.attempts))
        if tail is None:
            tail = self._tail(received_at, resolution.attempts)
        return b"".join(
            (
                _HEAD,
                orjson.dumps(uuid),
                resolution.fields,
                orjson.dumps(request_id),
                prefix,
                b"%d" % offset,
                tail,
            )
        )

    def _tail(self, received_at: str, attempts: int) -> bytes:
        tail = b'},"batchId":%b,"attempts":%d,"receivedAt":%b,"completedAt":%b}' % (
            self._batch_id,
            attempts,
            orjson.dumps(received_at),
            self._completed_at,
        )
        self._tails[received_at, attempts] = tail
        return tail


def _source_fields(topic: str, partition: int) -> bytes:
    return b',"source":{"topic":%b,"partition":%d,"offset":' % (orjson.dumps(topic), partition)


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
    """The JSON value of the result event for one input record (`ResultValues` builds
    many that share a batch and a completion time)."""
    values = ResultValues(batch_id, completed_at)
    return values.value(uuid, resolution, request_id, (topic, partition), offset, received_at)

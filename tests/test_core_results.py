"""Result events: every SPEC field, always present, timestamps in the documented format."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streamstop.core.results import (
    Resolution,
    ResultValues,
    Status,
    build_result,
    format_timestamp,
)

FIELDS = [
    "schemaVersion",
    "messageUuid",
    "status",
    "code",
    "error",
    "requestId",
    "source",
    "batchId",
    "attempts",
    "receivedAt",
    "completedAt",
]
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def test_a_stopped_result_carries_every_field() -> None:
    value = build_result(
        uuid="2a28d557-22a1-4be6-8908-1481723043dd",
        resolution=Resolution(Status.STOPPED, 200, None, 2),
        request_id="req-1",
        topic="message-cancel-requests",
        partition=3,
        offset=42,
        batch_id="b-7",
        received_at=format_timestamp(1_767_323_045.678),
        completed_at=format_timestamp(1_767_323_046.5),
    )
    assert orjson.loads(value) == {
        "schemaVersion": 1,
        "messageUuid": "2a28d557-22a1-4be6-8908-1481723043dd",
        "status": "stopped",
        "code": 200,
        "error": None,
        "requestId": "req-1",
        "source": {"topic": "message-cancel-requests", "partition": 3, "offset": 42},
        "batchId": "b-7",
        "attempts": 2,
        "receivedAt": "2026-01-02T03:04:05.678Z",
        "completedAt": "2026-01-02T03:04:06.500Z",
    }


def test_an_invalid_result_keeps_its_nulls() -> None:
    value = build_result(
        uuid=None,
        resolution=Resolution(Status.INVALID, None, "not UTF-8", 0),
        request_id=None,
        topic="in",
        partition=0,
        offset=0,
        batch_id=None,
        received_at=format_timestamp(0.0),
        completed_at=format_timestamp(0.0),
    )
    assert b'"messageUuid":null' in value
    decoded = orjson.loads(value)
    assert list(decoded) == FIELDS
    assert decoded["status"] == "invalid"
    assert decoded["receivedAt"] == "1970-01-01T00:00:00.000Z"


@given(
    uuid=st.none() | st.uuids().map(str),
    status=st.sampled_from(Status),
    code=st.none() | st.integers(-(2**31), 2**31),
    error=st.none() | st.text(max_size=20),
    request_id=st.none() | st.text(max_size=20),
    batch_id=st.none() | st.text(max_size=10),
    received_at=st.floats(0, 4e9),
)
def test_every_field_is_always_present(
    uuid: str | None,
    status: Status,
    code: int | None,
    error: str | None,
    request_id: str | None,
    batch_id: str | None,
    received_at: float,
) -> None:
    value = build_result(
        uuid=uuid,
        resolution=Resolution(status, code, error, 1),
        request_id=request_id,
        topic="in",
        partition=1,
        offset=9,
        batch_id=batch_id,
        received_at=format_timestamp(received_at),
        completed_at=format_timestamp(received_at + 0.25),
    )
    decoded = orjson.loads(value)
    assert list(decoded) == FIELDS
    assert (decoded["messageUuid"], decoded["status"], decoded["code"]) == (uuid, status, code)
    assert (decoded["error"], decoded["requestId"], decoded["batchId"]) == (
        error,
        request_id,
        batch_id,
    )
    assert TIMESTAMP.fullmatch(decoded["receivedAt"])
    assert TIMESTAMP.fullmatch(decoded["completedAt"])


@given(st.floats(0, 4e9))
def test_timestamps_match_datetime_to_the_millisecond(epoch_s: float) -> None:
    expected = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    assert format_timestamp(epoch_s) == expected.replace("+00:00", "Z")


def test_statuses_are_the_spec_strings() -> None:
    assert sorted(Status) == sorted(
        [
            "stopped",
            "stop_uncertain",
            "already_sent",
            "not_found",
            "unknown_code",
            "invalid",
            "expired",
            "failed",
        ]
    )


def test_a_result_held_in_memory_costs_about_its_size() -> None:
    """Pending results wait for Kafka's ack; each must not pin a 4 KiB encoder buffer."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [
            build_result(
                uuid="2a28d557-22a1-4be6-8908-1481723043dd",
                resolution=Resolution(Status.STOPPED, 200, None, 1),
                request_id=f"r{i}",
                topic="in",
                partition=1,
                offset=i,
                batch_id="b",
                received_at=format_timestamp(1.0),
                completed_at=format_timestamp(2.0),
            )
            for i in range(2000)
        ]
        per_result = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    finally:
        tracemalloc.stop()
    assert per_result < 2 * max(len(value) for value in held)


def reference(
    uuid: str | None,
    resolution: Resolution,
    request_id: str | None,
    source: tuple[str, int],
    offset: int,
    batch_id: str | None,
    received_at: str,
    completed_at: str,
) -> bytes:
    """A result as one orjson dump of its fields in SPEC order: what the fragments in
    `ResultValues` must add up to, byte for byte."""
    return orjson.dumps(
        {
            "schemaVersion": 1,
            "messageUuid": uuid,
            "status": resolution.status,
            "code": resolution.code,
            "error": resolution.error,
            "requestId": request_id,
            "source": {"topic": source[0], "partition": source[1], "offset": offset},
            "batchId": batch_id,
            "attempts": resolution.attempts,
            "receivedAt": received_at,
            "completedAt": completed_at,
        }
    )


resolutions = st.builds(
    Resolution,
    st.sampled_from(Status),
    st.none() | st.integers(-(2**63), 2**63 - 1),
    st.none() | st.text(max_size=30),
    st.integers(0, 10_000),
)
records = st.tuples(
    st.none() | st.uuids().map(str) | st.text(max_size=40),
    resolutions,
    st.none() | st.text(max_size=30),
    st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 2**31 - 1)),
    st.integers(0, 2**63 - 1),
    st.text(max_size=30) | st.floats(0, 4e9).map(format_timestamp),
)


@given(
    batch_id=st.none() | st.text(max_size=20),
    completed_at=st.text(max_size=30) | st.floats(0, 4e9).map(format_timestamp),
    slice_records=st.lists(records, max_size=30),
)
def test_a_slice_of_results_is_each_result_encoded_alone(
    batch_id: str | None,
    completed_at: str,
    slice_records: list[tuple[str | None, Resolution, str | None, tuple[str, int], int, str]],
) -> None:
    """Fragments shared by records (a resolution's, a partition's, a receive time's)
    never leak into a record they do not belong to, whatever the text in them."""
    values = ResultValues(batch_id, completed_at)
    for uuid, resolution, request_id, source, offset, received_at in slice_records:
        expected = reference(
            uuid, resolution, request_id, source, offset, batch_id, received_at, completed_at
        )
        assert values.value(uuid, resolution, request_id, source, offset, received_at) == expected


def test_records_of_one_slice_share_its_fragments_and_keep_their_own_fields() -> None:
    values = ResultValues("b-1", format_timestamp(2.0))
    stopped, failed = (
        Resolution(Status.STOPPED, 200, None, 1),
        Resolution(Status.FAILED, None, 'HTTP 400: "bad"', 3),
    )
    first, second = format_timestamp(1.0), format_timestamp(1.5)
    cases = [
        ("2a28d557-22a1-4be6-8908-1481723043dd", stopped, "r-1", ("in", 0), 7, first),
        ("2a28d557-22a1-4be6-8908-1481723043de", failed, None, ("in", 1), 8, first),
        ("2a28d557-22a1-4be6-8908-1481723043df", stopped, 'r\n"3', ("other", 0), 9, second),
        ("2a28d557-22a1-4be6-8908-1481723043dd", failed, "é", ("in", 0), 10, second),
    ]
    for uuid, resolution, request_id, source, offset, received in cases:
        decoded = orjson.loads(values.value(uuid, resolution, request_id, source, offset, received))
        assert (decoded["messageUuid"], decoded["status"], decoded["attempts"]) == (
            uuid,
            resolution.status,
            resolution.attempts,
        )
        assert (decoded["requestId"], decoded["receivedAt"]) == (request_id, received)
        assert decoded["source"] == {"topic": source[0], "partition": source[1], "offset": offset}
        assert (decoded["batchId"], decoded["completedAt"]) == ("b-1", "1970-01-01T00:00:02.000Z")

"""Records cut to fit a topic's max.message.bytes: whatever the input carried, what is
returned fits any limit streamstop accepts (1024 bytes or more), and nothing is cut that
a smaller form would have kept."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamstop.core.fit import TRUNCATED, Kind, fit, record_size
from streamstop.core.results import Resolution, Status, build_result, format_timestamp
from streamstop.core.topicrules import MIN_RECORD_BYTES

NAMES = st.sampled_from(["traceparent", "x", "streamstop-redrive-of", "streamstop-trace"])
HEADERS = st.lists(st.tuples(NAMES, st.binary(max_size=120_000)), max_size=4)
LIMITS = st.integers(MIN_RECORD_BYTES, 1_048_588)


def result_value(request_id: str | None, topic: str) -> bytes:
    return build_result(
        uuid="2a28d557-22a1-4be6-8908-1481723043dd",
        resolution=Resolution(Status.FAILED, None, "e" * 200, 3),
        request_id=request_id,
        topic=topic,
        partition=99,
        offset=2**62,
        batch_id="8c0e4b2f-9a7d-4e0c-b1a2-3c4d5e6f7a8b",
        received_at=format_timestamp(0.0),
        completed_at=format_timestamp(0.0),
    )


@settings(max_examples=300, deadline=None)
@given(
    request_id=st.none() | st.text(max_size=70_000),
    topic=st.text("abc", min_size=1, max_size=249),
    headers=HEADERS,
    limit=LIMITS,
)
def test_a_result_always_fits_and_keeps_what_it_can(
    request_id: str | None, topic: str, headers: list[tuple[str, bytes]], limit: int
) -> None:
    key = b"2a28d557-22a1-4be6-8908-1481723043dd"
    value = result_value(request_id, topic)
    new_key, new_value, new_headers = fit(Kind.RESULT, key, value, headers, limit)
    assert record_size(new_key, new_value, list(new_headers)) <= limit
    assert new_key == key
    if record_size(key, value, headers) <= limit:
        assert (new_value, list(new_headers)) == (value, headers)
        return
    cut = dict(new_headers)[TRUNCATED]
    assert cut in (b"headers", b"headers,requestId")
    shown = orjson.loads(new_value or b"{}")
    assert shown["requestId"] == (request_id if cut == b"headers" else None)
    # Only what a smaller form drops is gone: every other field is as it was.
    assert {k: v for k, v in shown.items() if k != "requestId"} == {
        k: v for k, v in orjson.loads(value).items() if k != "requestId"
    }


@settings(max_examples=300, deadline=None)
@given(
    key=st.none() | st.binary(max_size=100_000),
    value=st.none() | st.binary(max_size=600_000),
    headers=HEADERS,
    limit=LIMITS,
)
def test_a_dlq_copy_always_fits_value_first(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], limit: int
) -> None:
    own = [("streamstop-error", b"not JSON nor a bare uuid"), ("streamstop-source", b"in/0/7")]
    copied = [*headers, *own]
    new_key, new_value, new_headers = fit(Kind.DLQ, key, value, copied, limit)
    assert record_size(new_key, new_value, list(new_headers)) <= limit
    if record_size(key, value, copied) <= limit:
        assert (new_key, new_value, list(new_headers)) == (key, value, copied)
        return
    kept = dict(new_headers)
    assert kept[TRUNCATED] == b"true"
    assert kept["streamstop-error"] == own[0][1]
    assert kept["streamstop-source"] == own[1][1]
    if value is not None:
        assert value.startswith(new_value or b"")
    if new_value:  # the value was only cut, nothing else
        assert new_key == key
        assert list(new_headers) == [*copied, (TRUNCATED, b"true")]
    if new_key is None and key is not None:
        assert list(new_headers) == [*own, (TRUNCATED, b"true")]

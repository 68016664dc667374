"""Input values: what is a valid stop request and what is invalid input (SPEC "Input events")."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamstop.core.decode import MAX_VALUE_BYTES, Decoded, Invalid, decode_value

UUID = "2a28d557-22a1-4be6-8908-1481723043dd"
OTHER = "811c27e3-3bc4-406a-9fcd-44435a8208da"
LOWER_UUID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")


def reason(value: bytes | None) -> str:
    decoded = decode_value(value)
    assert isinstance(decoded, Invalid), decoded
    return decoded.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"messageUuid": "%s"}' % UUID.encode(), Decoded(UUID, None)),
        (b'{"uuid": "%s", "requestId": "r-1"}' % UUID.encode(), Decoded(UUID, "r-1")),
        (b'{"messageUuid": "%s"}' % UUID.upper().encode(), Decoded(UUID, None)),
        (
            b'{"uuid": "%s", "messageUuid": "%s"}' % (OTHER.encode(), UUID.encode()),
            Decoded(UUID, None),
        ),
        (b'{"messageUuid": "%s", "requestId": 7}' % UUID.encode(), Decoded(UUID, None)),
        (b'{"messageUuid": "%s", "requestId": null}' % UUID.encode(), Decoded(UUID, None)),
        (b'{"messageUuid": "%s", "requestId": ["x"]}' % UUID.encode(), Decoded(UUID, None)),
        (b'{"messageUuid": "%s", "other": {"a": [1]}}' % UUID.encode(), Decoded(UUID, None)),
        (b'  \n{"messageUuid": "%s"}\n' % UUID.encode(), Decoded(UUID, None)),
        (UUID.encode(), Decoded(UUID, None)),
        (b" \t%s\r\n" % UUID.upper().encode(), Decoded(UUID, None)),
        (("\u00a0" + UUID + "\u2003").encode(), Decoded(UUID, None)),
    ],
)
def test_valid_values_give_the_lower_case_uuid_and_request_id(
    value: bytes, expected: Decoded
) -> None:
    assert decode_value(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null value"),
        (b"", "empty value"),
        (b"  \n\t", "empty value"),
        (b"\xff\xfe" + UUID.encode(), "not UTF-8"),
        (b'{"messageUuid": "\xed\xa0\x80"}', "not UTF-8"),
        (b"hello", "not JSON nor a bare uuid"),
        (b'{"messageUuid": "%s"' % UUID.encode(), "not JSON nor a bare uuid"),
        (b'{"messageUuid": "%s"} trailing' % UUID.encode(), "not JSON nor a bare uuid"),
        (b'"%s"' % UUID.encode(), "JSON value is not an object"),
        (b'["%s"]' % UUID.encode(), "JSON value is not an object"),
        (b"null", "JSON value is not an object"),
        (b"42", "JSON value is not an object"),
        (b"{}", "no messageUuid or uuid field"),
        (b'{"requestId": "r"}', "no messageUuid or uuid field"),
        (b'{"messageUuid": null, "uuid": "%s"}' % UUID.encode(), "messageUuid is not a string"),
        (b'{"messageUuid": 12}', "messageUuid is not a string"),
        (b'{"uuid": ["%s"]}' % UUID.encode(), "uuid is not a string"),
        (b'{"messageUuid": ""}', "malformed uuid"),
        (b'{"messageUuid": "{%s}"}' % UUID.encode(), "malformed uuid"),
        (b'{"messageUuid": "urn:uuid:%s"}' % UUID.encode(), "malformed uuid"),
        (b'{"messageUuid": "%s"}' % UUID.replace("-", "").encode(), "malformed uuid"),
        (b'{"messageUuid": "%s\\n"}' % UUID.encode(), "malformed uuid"),
        (b'{"messageUuid": " %s"}' % UUID.encode(), "malformed uuid"),
        (b'{"messageUuid": "%sa"}' % UUID.encode(), "malformed uuid"),
        (b'{"messageUuid": "%s"}' % UUID.replace("a", "g").encode(), "malformed uuid"),
        (b"{%s}" % UUID.encode(), "not JSON nor a bare uuid"),
        (b"urn:uuid:%s" % UUID.encode(), "not JSON nor a bare uuid"),
        (UUID.replace("-", "").encode(), "not JSON nor a bare uuid"),
        (b"%s %s" % (UUID.encode(), OTHER.encode()), "not JSON nor a bare uuid"),
        # Unicode look-alikes of hex digits (fullwidth "1", Kelvin sign) are not hex.
        (("\uff11" + UUID[1:]).encode(), "not JSON nor a bare uuid"),
        ('{"messageUuid": "%s"}' % ("\u212a" + UUID[1:]), "malformed uuid"),
    ],
)
def test_invalid_values_get_a_reason(value: bytes | str | None, expected: str) -> None:
    raw = value.encode() if isinstance(value, str) else value
    assert reason(raw) == expected


def padded(size: int) -> bytes:
    head = b'{"messageUuid": "%s", "pad": "' % UUID.encode()
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_the_64_kib_limit_is_inclusive() -> None:
    assert len(padded(MAX_VALUE_BYTES)) == MAX_VALUE_BYTES
    assert decode_value(padded(MAX_VALUE_BYTES)) == Decoded(UUID, None)
    assert reason(padded(MAX_VALUE_BYTES + 1)) == "value over 64 KiB"
    assert reason(b" " * MAX_VALUE_BYTES + UUID.encode()) == "value over 64 KiB"


@pytest.mark.parametrize(
    "value",
    [
        b"[" * 30_000,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b'{"messageUuid": "%s", "x": %s}' % (UUID.encode(), b"[" * 2_000 + b"]" * 2_000),
    ],
)
def test_deep_nesting_is_invalid_not_a_crash(value: bytes) -> None:
    assert reason(value) == "not JSON nor a bare uuid"


def test_huge_numbers_do_not_crash() -> None:
    assert reason(b'{"messageUuid": 1e999}') == "not JSON nor a bare uuid"
    big = b'{"messageUuid": "%s", "requestId": %s}' % (UUID.encode(), b"9" * 400)
    assert isinstance(decode_value(big), Decoded | Invalid)


@given(st.binary(max_size=300))
def test_any_bytes_decode_without_raising(value: bytes) -> None:
    decoded = decode_value(value)
    if isinstance(decoded, Decoded):
        assert LOWER_UUID.fullmatch(decoded.uuid)
    else:
        assert decoded.reason


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(
    uuid=st.uuids().map(str),
    upper=st.booleans(),
    key=st.sampled_from(["messageUuid", "uuid"]),
    request_id=json_values,
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_json_objects_decode_to_their_uuid_and_string_request_id(
    uuid: str, upper: bool, key: str, request_id: object, extra: dict[str, object]
) -> None:
    body = {k: v for k, v in extra.items() if k not in ("messageUuid", "uuid", "requestId")}
    body[key] = uuid.upper() if upper else uuid
    body["requestId"] = request_id
    decoded = decode_value(orjson.dumps(body))
    expected_id = request_id if isinstance(request_id, str) else None
    assert decoded == Decoded(uuid, expected_id)


@given(st.binary(max_size=40), st.uuids().map(str), st.binary(max_size=40))
def test_garbage_around_a_uuid_is_never_taken_for_it(
    before: bytes, uuid: str, after: bytes
) -> None:
    value = before + uuid.encode() + after
    decoded = decode_value(value)
    if isinstance(decoded, Decoded) and decoded.uuid == uuid:
        # Only whitespace (or a JSON wrapper naming the field) may surround it.
        text = value.decode("utf-8")
        assert text.strip() == uuid or isinstance(orjson.loads(value), dict)

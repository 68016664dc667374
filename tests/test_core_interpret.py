"""What a stop API response means for each requested uuid."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from streamstop.core.interpret import (
    DEFAULT_MAX_RETRY_AFTER_S,
    Interpretation,
    Kind,
    interpret_response,
    parse_retry_after,
)

A = "2a28d557-22a1-4be6-8908-1481723043dd"
B = "811c27e3-3bc4-406a-9fcd-44435a8208da"
C = "cc46e6b6-2d77-4457-aa81-c17a027721d3"
NOW = 1_767_323_045.0  # 2026-01-02T03:04:05Z


def items_body(*items: tuple[str, object], errors: object = True) -> bytes:
    return orjson.dumps(
        {"errors": errors, "items": [{"messageUuid": u, "code": c} for u, c in items]}
    )


def interpret(status: int, body: bytes, requested: list[str], **headers: str) -> Interpretation:
    return interpret_response(status, headers, body, requested, NOW)


def test_the_documented_answer_gives_each_uuid_its_code() -> None:
    body = items_body((A, 200), (B, 403), (C, 404), ("063464ec-a34f-4558-90c5-984395000001", 202))
    verdict = interpret(200, body, [A, B, C])
    assert verdict.kind is Kind.ITEMS
    assert verdict.codes == {A: 200, B: 403, C: 404}
    assert verdict.missing == []


def test_uuids_match_case_insensitively_and_the_first_item_wins() -> None:
    body = items_body((A.upper(), 202), (A, 200), (B.upper(), 404))
    verdict = interpret(201, body, [A, B.upper()])
    assert verdict.codes == {A: 202, B: 404}


def test_the_first_of_two_items_for_one_uuid_wins() -> None:
    verdict = interpret(200, items_body((A, 202), (B, 404), (A, 200)), [A, B])
    assert list(verdict.codes.items()) == [(A, 202), (B, 404)]
    assert verdict.missing == []


def test_uuids_missing_from_the_answer_are_retried() -> None:
    verdict = interpret(200, items_body((B, 200)), [A, B, C, A])
    assert verdict.kind is Kind.ITEMS
    assert verdict.missing == [A, C]
    assert verdict.codes == {B: 200}


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps({"items": [{"messageUuid": A, "code": 200}]}),
        items_body((A, 200), errors=False),
        orjson.dumps({"errors": False, "items": [{"messageUuid": A, "code": 200, "x": 1}], "y": 2}),
        items_body((A, 999)),
    ],
)
def test_documented_shape_variants_are_accepted(body: bytes) -> None:
    assert interpret(200, body, [A]).kind is Kind.ITEMS


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b"[]",
        orjson.dumps({"errors": False}),
        orjson.dumps({"items": {"messageUuid": A, "code": 200}}),
        items_body((A, 200), errors="yes"),
    ],
)
def test_a_2xx_body_not_of_the_documented_shape_is_retried(body: bytes) -> None:
    verdict = interpret(200, body, [A, B])
    assert verdict.kind is Kind.RETRY
    assert verdict.reason == "HTTP 200 with a body not of the documented shape"


@pytest.mark.parametrize(
    "bad_item",
    [
        [C, 200],
        C,
        None,
        {"messageUuid": C},
        {"code": 200},
        {"messageUuid": C, "code": True},
        {"messageUuid": C, "code": "200"},
        {"messageUuid": C, "code": 200.0},
        {"messageUuid": C, "code": None},
        {"messageUuid": None, "code": 200},
        {"messageUuid": 7, "code": 200},
        {"messageUuid": [C], "code": 200},
    ],
)
def test_a_malformed_item_affects_only_that_item(bad_item: object) -> None:
    # One broken item among 10,000 must not send the other 9,999 round again.
    body = orjson.dumps(
        {
            "errors": False,
            "items": [
                {"messageUuid": A, "code": 200},
                bad_item,
                {"messageUuid": B, "code": 404},
            ],
        }
    )
    verdict = interpret(200, body, [A, B, C])
    assert verdict.kind is Kind.ITEMS
    assert verdict.codes == {A: 200, B: 404}
    assert verdict.missing == [C]
    assert verdict.malformed_items == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retried(status: int) -> None:
    verdict = interpret(status, b"<html>busy</html>", [A])
    assert (verdict.kind, verdict.reason) == (Kind.RETRY, f"HTTP {status}")


@pytest.mark.parametrize("status", [100, 301, 302, 304, 401, 403, 404, 405, 409, 451, 600])
def test_other_statuses_are_configuration_errors(status: int) -> None:
    verdict = interpret(status, b'{"message": "Basic c2VjcmV0 is wrong"}', [A, B])
    assert (verdict.kind, verdict.reason) == (Kind.CONFIG_ERROR, f"HTTP {status}")


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (400, b'{"message": "invalid uuid x"}', "HTTP 400: invalid uuid x"),
        (413, b'{"error": "too many uuids", "message": 5}', "HTTP 413: too many uuids"),
        (422, b'{"detail": "bad\\n\\tinput\\u0007\\u202e!"}', "HTTP 422: bad input !"),
        (400, b"Bad request:\r\n uuid\x00 missing ", "HTTP 400: Bad request: uuid missing"),
        (400, b'{"message": "  "}', 'HTTP 400: {"message": " "}'),
        (400, b"", "HTTP 400"),
        (400, b"\xff\xfe oops", "HTTP 400: \ufffd\ufffd oops"),
    ],
)
def test_rejected_requests_are_split_with_the_apis_reason(
    status: int, body: bytes, reason: str
) -> None:
    verdict = interpret(status, body, [A])
    assert (verdict.kind, verdict.reason) == (Kind.SPLIT, reason)


def test_a_long_rejection_message_is_truncated() -> None:
    verdict = interpret(400, orjson.dumps({"message": "x" * 10_000}), [A])
    assert verdict.reason.startswith("HTTP 400: xxx")
    assert len(verdict.reason) <= len("HTTP 400: ") + 200
    huge_html = b"<html>" + b"y" * 1_000_000 + b"</html>"
    assert len(interpret(413, huge_html, [A]).reason) <= len("HTTP 413: ") + 200


SECRET = "s3cr3t-T0ken-value"


def mask(text: str) -> str:
    return text.replace(SECRET, "***")


@pytest.mark.parametrize("lead", [0, 150, 190, 199, 5_000, 65_530])
@pytest.mark.parametrize("as_json", [True, False])
def test_a_quoted_secret_never_reaches_the_reason(lead: int, as_json: bool) -> None:
    # A gateway quoting our Authorization anywhere in its message, including where the
    # 200-character reason (or the scan of a non-JSON body) cuts it: no part of the
    # secret may survive, as reasons end up in result events.
    text = "x" * lead + f" Authorization: Basic {SECRET} " + "y" * 70_000
    body = orjson.dumps({"message": text}) if as_json else text.encode()
    verdict = interpret_response(400, {}, body, [A], NOW, redact=mask)
    assert verdict.kind is Kind.SPLIT
    assert not any(SECRET[:n] in verdict.reason for n in range(4, len(SECRET) + 1))


def test_retry_after_is_read_in_seconds_or_as_an_http_date() -> None:
    in_90s = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert interpret(429, b"", [A], **{"Retry-After": "120"}).retry_after_s == 120.0
    assert interpret(503, b"", [A], **{"retry-after": " 7 "}).retry_after_s == 7.0
    assert interpret(503, b"", [A], **{"RETRY-AFTER": in_90s}).retry_after_s == 90.0
    multi = CIMultiDict({"Retry-After": "3"})
    assert interpret_response(429, multi, b"", [A], NOW).retry_after_s == 3.0
    assert interpret(200, items_body((A, 200)), [A], **{"Retry-After": "1"}).retry_after_s == 1.0
    assert interpret(429, b"", [A]).retry_after_s is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("1.5", 1.5),
        ("99999999999999999999999", DEFAULT_MAX_RETRY_AFTER_S),
        ("Fri, 02 Jan 2026 03:04:15 GMT", 10.0),
        ("Friday, 02-Jan-26 03:04:15 GMT", 10.0),
        ("Fri Jan  2 03:04:15 2026", 10.0),
        ("Fri, 02 Jan 2026 03:04:15 -0000", 10.0),
        ("Thu, 01 Jan 2026 00:00:00 GMT", 0.0),
        ("Sat, 02 Jan 2100 00:00:00 GMT", DEFAULT_MAX_RETRY_AFTER_S),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_the_default_cap_on_retry_after_is_five_minutes() -> None:
    # A far-future HTTP-date used to hold every request for an hour.
    assert DEFAULT_MAX_RETRY_AFTER_S == 300.0


@pytest.mark.parametrize(
    "value", ["Fri, 01 Jan 2100 00:00:00 GMT", "Fri, 02 Jan 2026 03:34:05 GMT", "1800", "45.5"]
)
@pytest.mark.parametrize("cap", [1.0, 45.0, 1200.0])
def test_retry_after_is_capped_at_the_configured_maximum(value: str, cap: float) -> None:
    verdict = interpret_response(429, {"Retry-After": value}, b"", [A], NOW, max_retry_after_s=cap)
    assert verdict.retry_after_s == min(cap, 1800.0 if ":" in value else float(value))


@given(st.text(max_size=40), st.floats(0.001, 1e6))
def test_any_retry_after_parses_without_raising(value: str, cap: float) -> None:
    seconds = parse_retry_after(value, NOW, cap)
    assert seconds is None or 0.0 <= seconds <= cap


def per_item(
    items: list[object], requested: list[str]
) -> tuple[list[tuple[str, int]], list[str], int]:
    """The documented reading of an answer, one item at a time: codes in answer order
    (first item wins, case-insensitive, keyed by the requested string when it is lower
    case), missing in request order, malformed items counted."""
    wanted: dict[str, str] = {}
    for asked in requested:
        wanted.setdefault(asked.lower(), asked if asked == asked.lower() else asked.lower())
    codes: dict[str, int] = {}
    malformed = 0
    for item in items:
        if not isinstance(item, dict):
            malformed += 1
            continue
        uuid, code = item.get("messageUuid"), item.get("code")
        if type(uuid) is not str or type(code) is not int:
            malformed += 1
            continue
        key = wanted.get(uuid.lower())
        if key is not None:
            codes.setdefault(key, code)
    return list(codes.items()), [a for a in wanted.values() if a not in codes], malformed


POOL = [A, B, C, A.upper(), "063464ec-a34f-4558-90c5-984395000001"]
answer_items = st.one_of(
    st.builds(
        lambda u, c: {"messageUuid": u, "code": c},
        st.sampled_from(POOL),
        st.sampled_from([200, 202, 403, 404, 409]),
    ),
    st.sampled_from(
        [
            None,
            7,
            "x",
            [A],
            {"messageUuid": A},
            {"code": 200},
            {"messageUuid": A, "code": True},
            {"messageUuid": A, "code": 200.0},
            {"messageUuid": [A], "code": 200},
            {"messageUuid": 5, "code": 200},
            {"messageUuid": B, "code": 200, "extra": 1},
        ]
    ),
)


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from(POOL), min_size=1, max_size=6),
    st.lists(answer_items, max_size=8),
    st.booleans(),
)
def test_every_answer_reads_as_its_items_one_by_one(
    requested: list[str], items: list[object], exact: bool
) -> None:
    if exact:  # the usual answer: each requested uuid once, in some order
        items = [{"messageUuid": u, "code": 200} for u in reversed(dict.fromkeys(requested))]
    verdict = interpret(200, orjson.dumps({"errors": False, "items": items}), requested)
    codes, missing, malformed = per_item(items, requested)
    assert list(verdict.codes.items()) == codes
    assert (verdict.missing, verdict.malformed_items) == (missing, malformed)
    if all(asked == asked.lower() for asked in requested):
        # Keyed by the request's own strings (the parsed answer is not kept alive).
        assert all(any(key is asked for asked in requested) for key in verdict.codes)

"""The published JSON Schemas (`schemas/`) agree with the code that produces and reads events.

Results built by `core/results.build_result` for every status match the result schema, and
the schema lists exactly the fields the builder emits: a field changed on one side only
fails here. Input events generated from the input schema are accepted by
`core/decode.decode_value`; mutated ones are rejected by the schema and decoded `Invalid`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from contract import (
    DLQ_HEADERS,
    INPUT_EVENT,
    INPUT_HEADERS,
    RESULT_EVENT,
    RESULT_HEADERS,
    SCHEMAS,
    load_schema,
    problem,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

from streamstop.core.decode import MAX_VALUE_BYTES, Decoded, Invalid, decode_value
from streamstop.core.resolution import resolution_for_code
from streamstop.core.results import (
    SCHEMA_VERSION,
    Resolution,
    Status,
    build_result,
    format_timestamp,
)

SCHEMA_FILES = sorted(p.name for p in SCHEMAS.glob("*.json"))
UUID = "2a28d557-22a1-4be6-8908-1481723043dd"
SPEC_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# I-JSON (RFC 7493), which the input schema asks for: integers beyond this lose precision.
I_JSON_MAX_INT = 2**53 - 1


def test_the_schema_files_are_the_documented_set() -> None:
    documented = {INPUT_EVENT, INPUT_HEADERS, RESULT_EVENT, RESULT_HEADERS, DLQ_HEADERS}
    assert set(SCHEMA_FILES) == documented


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_each_schema_is_draft_2020_12_with_a_versioned_id(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    stem = name.removesuffix(".schema.json")
    assert schema["$id"] == f"urn:streamstop:schema:{stem}:v{SCHEMA_VERSION}"


def _examples(node: Any, pointer: str = "") -> list[tuple[str, Any]]:
    """Every `examples` entry in a schema, with the pointer of the schema it belongs to."""
    if not isinstance(node, dict):
        return []
    found = [(pointer, example) for example in node.get("examples", [])]
    for key, child in node.get("$defs", {}).items():
        found += _examples(child, f"{pointer}/$defs/{key}")
    return found


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_example_in_a_schema_matches_it(name: str) -> None:
    examples = _examples(load_schema(name))
    assert examples
    for pointer, example in examples:
        assert problem(name, example, pointer) is None, (pointer, example)


# One realistic result per status: the code and the fields the daemon sets with it.
SENT = {"batch_id": "8c0e4b2f9a7d4e0c", "attempts": 2}
NEVER_SENT = {"batch_id": None, "attempts": 0}
RESULTS: dict[Status, dict[str, Any]] = {
    resolution_for_code(200, 2).status: {"code": 200, "error": None, **SENT},
    resolution_for_code(202, 2).status: {"code": 202, "error": None, **SENT},
    resolution_for_code(403, 2).status: {"code": 403, "error": None, **SENT},
    resolution_for_code(404, 2).status: {"code": 404, "error": None, **SENT},
    resolution_for_code(409, 2).status: {"code": 409, "error": "unknown per-item code 409", **SENT},
    Status.FAILED: {"code": None, "error": "HTTP 400: uuid rejected", **SENT},
    Status.EXPIRED: {"code": None, "error": "older than batch.max_record_age_s", **NEVER_SENT},
    Status.INVALID: {"uuid": None, "code": None, "error": "malformed uuid", **NEVER_SENT},
}


def built(status: Status, **changes: Any) -> dict[str, Any]:
    """A result of `status` as the daemon builds it, with `changes` to its arguments."""
    arguments: dict[str, Any] = {
        "uuid": UUID,
        "status": status,
        "request_id": "r-1",
        "topic": "message-cancel-requests",
        "partition": 3,
        "offset": 1207,
        "received_at": format_timestamp(1_767_323_045.678),
        "completed_at": format_timestamp(1_767_323_045.912),
        **RESULTS[status],
        **changes,
    }
    resolution = Resolution(
        arguments.pop("status"),
        arguments.pop("code"),
        arguments.pop("error"),
        arguments.pop("attempts"),
    )
    value: dict[str, Any] = json.loads(build_result(resolution=resolution, **arguments))
    return value


def test_the_result_table_covers_every_status() -> None:
    assert set(RESULTS) == set(Status)


@pytest.mark.parametrize("status", list(Status))
def test_a_built_result_of_each_status_matches_the_schema(status: Status) -> None:
    assert problem(RESULT_EVENT, built(status)) is None
    assert problem(RESULT_EVENT, built(status, request_id=None)) is None


@pytest.mark.parametrize("status", list(Status))
def test_the_schema_lists_exactly_the_fields_the_builder_emits(status: Status) -> None:
    schema = load_schema(RESULT_EVENT)
    value = built(status)
    assert set(value) == set(schema["properties"]) == set(schema["required"])
    source = schema["properties"]["source"]
    assert set(value["source"]) == set(source["properties"]) == set(source["required"])


def test_the_schema_knows_every_status_and_the_schema_version() -> None:
    properties = load_schema(RESULT_EVENT)["properties"]
    assert properties["status"]["enum"] == [s.value for s in Status]
    assert properties["schemaVersion"]["const"] == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("status", "field", "value"),
    [
        (Status.STOPPED, "status", "cancelled"),
        (Status.STOPPED, "code", 201),
        (Status.STOPPED, "error", "unexpected"),
        (Status.STOPPED, "messageUuid", None),
        (Status.STOPPED, "messageUuid", UUID.upper()),
        (Status.STOPPED, "messageUuid", "{" + UUID + "}"),
        (Status.STOPPED, "messageUuid", UUID + "\n"),
        (Status.STOPPED, "attempts", 0),
        (Status.STOPPED, "batchId", None),
        (Status.STOPPED, "schemaVersion", 2),
        (Status.STOPPED, "receivedAt", "2026-01-02T03:04:05Z"),
        (Status.STOPPED, "receivedAt", "2026-01-02T03:04:05.678+00:00"),
        (Status.STOPPED, "completedAt", "2026-01-02 03:04:05.678Z"),
        (Status.STOPPED, "completedAt", "2026-13-02T03:04:05.678Z"),
        (Status.STOPPED, "source", {"topic": "t", "partition": 0}),
        (Status.STOPPED, "source", {"topic": "t", "partition": 0, "offset": -1}),
        (Status.STOPPED, "source", {"topic": "a/b", "partition": 0, "offset": 1}),
        (Status.UNKNOWN_CODE, "code", 404),
        (Status.UNKNOWN_CODE, "error", None),
        (Status.INVALID, "messageUuid", UUID),
        (Status.INVALID, "attempts", 1),
        (Status.EXPIRED, "batchId", "b-1"),
        (Status.FAILED, "code", 400),
    ],
)
def test_the_result_schema_rejects_what_the_contract_rules_out(
    status: Status, field: str, value: Any
) -> None:
    result = built(status)
    assert problem(RESULT_EVENT, result) is None
    assert problem(RESULT_EVENT, {**result, field: value}) is not None


@pytest.mark.parametrize("field", ["code", "error", "requestId", "batchId"])
def test_a_result_missing_a_field_is_rejected(field: str) -> None:
    result = built(Status.STOPPED)
    del result[field]
    assert problem(RESULT_EVENT, result) is not None


@pytest.mark.parametrize(
    ("name", "headers", "valid"),
    [
        (DLQ_HEADERS, {"streamstop-error": "malformed uuid", "streamstop-source": "in/0/7"}, True),
        (DLQ_HEADERS, {"streamstop-error": "x", "streamstop-source": "in/0/7", "a": None}, True),
        (DLQ_HEADERS, {"streamstop-error": "malformed uuid"}, False),
        (DLQ_HEADERS, {"streamstop-error": "", "streamstop-source": "in/0/7"}, False),
        (DLQ_HEADERS, {"streamstop-error": "x", "streamstop-source": "in/0"}, False),
        (DLQ_HEADERS, {"streamstop-error": "x", "streamstop-source": "in/-1/7"}, False),
        (
            DLQ_HEADERS,
            {"streamstop-error": "x", "streamstop-source": "in/0/7", "streamstop-truncated": "1"},
            False,
        ),
        (RESULT_HEADERS, {"traceparent": "00-ab-cd-01", "x-team": "billing"}, True),
        (RESULT_HEADERS, {"streamstop-redrive-of": "in/2/40", "x-team": "billing"}, True),
        (RESULT_HEADERS, {"streamstop-redrive-of": "in/2"}, False),
        (
            RESULT_HEADERS,
            {"streamstop-truncated": "headers", "streamstop-redrive-of": "i/0/1"},
            True,
        ),
        (RESULT_HEADERS, {"streamstop-truncated": "headers", "x-team": "billing"}, False),
        (RESULT_HEADERS, {"streamstop-truncated": "true"}, False),
        (INPUT_HEADERS, {"traceparent": "00-ab-cd-01", "streamstop-redrive-of": "in/0/1"}, True),
        (INPUT_HEADERS, {"streamstop-error": "set by a producer"}, False),
    ],
)
def test_header_schemas(name: str, headers: dict[str, str | None], valid: bool) -> None:
    assert (problem(name, headers) is None) is valid


def _is_i_json(value: Any) -> bool:
    """No lone surrogates (not encodable as UTF-8) and no integer beyond I-JSON's range."""
    if isinstance(value, dict):
        return all(_is_i_json(k) and _is_i_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_is_i_json, value))
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= I_JSON_MAX_INT
    return True


def encoded(event: Any) -> bytes:
    """The value a producer writes: the event as UTF-8 JSON."""
    return json.dumps(event, ensure_ascii=False).encode()


input_events = from_schema(load_schema(INPUT_EVENT)).filter(_is_i_json)
# Drawing from a schema is slow (regexes, arbitrary extra fields: ~70 ms an event on a
# loaded box); that is the price of generating from the contract itself, not a test smell.
from_the_schema = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@from_the_schema
@given(input_events)
def test_every_event_the_input_schema_allows_is_decoded(event: dict[str, Any]) -> None:
    value = encoded(event)
    assume(len(value) <= MAX_VALUE_BYTES)
    uuid = event["messageUuid"] if "messageUuid" in event else event["uuid"]
    request_id = event.get("requestId")
    assert decode_value(value) == Decoded(uuid.lower(), request_id)


@from_the_schema
@given(from_schema(load_schema(INPUT_EVENT)["$defs"]["bareUuidText"]))
def test_every_bare_uuid_text_the_input_schema_allows_is_decoded(text: str) -> None:
    assert decode_value(text.encode()) == Decoded(text.strip().lower(), None)


def _corrupt(uuid: str, how: str, data: st.DataObject) -> Any:
    """`uuid` made unacceptable in one of the ways producers get it wrong."""
    if how == "character":
        at = data.draw(st.integers(0, len(uuid) - 1), label="at")
        replacement = data.draw(st.characters(codec="utf-8"), label="replacement")
        return uuid[:at] + replacement + uuid[at + 1 :]
    if how == "length":
        cut = data.draw(st.integers(0, len(uuid) - 1), label="cut")
        return data.draw(st.sampled_from([uuid[:cut], uuid + uuid[cut]]), label="resized")
    return {
        "braces": "{" + uuid + "}",
        "urn": "urn:uuid:" + uuid,
        "undashed": uuid.replace("-", ""),
        "padded": f" {uuid}\n",
        "number": 12345,
        "null": None,
        "list": [uuid],
        "object": {"uuid": uuid},
    }[how]


UUID_CORRUPTIONS = [
    "character",
    "length",
    "braces",
    "urn",
    "undashed",
    "padded",
    "number",
    "null",
    "list",
    "object",
]


@from_the_schema
@given(input_events, st.sampled_from([*UUID_CORRUPTIONS, "no uuid", "array", "string"]), st.data())
def test_a_mutated_event_is_rejected_by_the_schema_and_decoded_invalid(
    event: dict[str, Any], how: str, data: st.DataObject
) -> None:
    field = "messageUuid" if "messageUuid" in event else "uuid"  # the one the decoder reads
    mutated: Any
    if how == "no uuid":
        mutated = {k: v for k, v in event.items() if k not in ("messageUuid", "uuid")}
    elif how == "array":
        mutated = [event]
    elif how == "string":
        mutated = event[field]  # a JSON string, not the bare text form
    else:
        mutated = {**event, field: _corrupt(event[field], how, data)}
        assume(not (isinstance(mutated[field], str) and SPEC_UUID.fullmatch(mutated[field])))
    value = encoded(mutated)
    assume(len(value) <= MAX_VALUE_BYTES)
    assert problem(INPUT_EVENT, mutated) is not None
    assert isinstance(decode_value(value), Invalid)


@from_the_schema
@given(input_events, st.data())
def test_a_cut_event_is_decoded_invalid(event: dict[str, Any], data: st.DataObject) -> None:
    value = encoded(event)
    cut = data.draw(st.integers(0, len(value) - 1), label="cut")
    assert isinstance(decode_value(value[:cut]), Invalid)

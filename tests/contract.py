"""The event contract (`schemas/*.schema.json`) as checks on the records tests read.

The JSON Schemas are the source of truth: every result and DLQ copy an integration test
reads is validated against them (`scenario.topics_for` registers its topics with
`kafkahelp.check_records_of`), so the schemas and the daemon cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
INPUT_EVENT = "input-event.schema.json"
INPUT_HEADERS = "input-headers.schema.json"
RESULT_EVENT = "result-event.schema.json"
RESULT_HEADERS = "result-headers.schema.json"
DLQ_HEADERS = "dlq-headers.schema.json"

Headers = Iterable[tuple[str, bytes | None]]


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema file `schemas/<name>`."""
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return schema


@functools.cache
def registry() -> Registry[Any]:
    """Every schema file, by its `$id`, so a `$ref` to an `$id` (fragment included) resolves."""
    resources = [Resource.from_contents(load_schema(p.name)) for p in SCHEMAS.glob("*.json")]
    return Registry().with_resources((r.id() or "", r) for r in resources)


@functools.cache
def validator(name: str, pointer: str = "") -> Draft202012Validator:
    """A validator for the schema file `name`, or for its part at JSON `pointer`
    (for example `/$defs/bareUuidText`)."""
    schema = {"$ref": f"{load_schema(name)['$id']}#{pointer}"} if pointer else load_schema(name)
    return Draft202012Validator(schema, registry=registry())


def problem(name: str, instance: Any, pointer: str = "") -> str | None:
    """Why `instance` does not match the schema (the most relevant error), or None."""
    error = best_match(validator(name, pointer).iter_errors(instance))
    return None if error is None else f"{error.message} (at {error.json_path})"


def headers_view(headers: Headers) -> dict[str, str | None]:
    """Kafka headers as the header schemas see them: name to UTF-8 value, last one wins."""
    return {
        name: None if value is None else value.decode("utf-8", "replace") for name, value in headers
    }


def check_result_record(record: Any) -> dict[str, Any]:
    """Fail unless a record of the output topic is a result event as the schemas say:
    value, key and headers. Returns the parsed value."""
    where = f"result at {record.topic}/{record.partition}/{record.offset}"
    value: dict[str, Any] = orjson.loads(record.value)
    _require(RESULT_EVENT, value, where)
    _require(RESULT_HEADERS, headers_view(record.headers), f"headers of {where}")
    # Unknown fields are allowed to consumers; streamstop must emit exactly the documented.
    assert set(value) == set(load_schema(RESULT_EVENT)["properties"]), where
    source_fields = load_schema(RESULT_EVENT)["properties"]["source"]["properties"]
    assert set(value["source"]) == set(source_fields), where
    uuid = value["messageUuid"]
    assert record.key == (None if uuid is None else uuid.encode()), f"key of {where}"
    return value


def check_dlq_record(record: Any) -> None:
    """Fail unless a record of the DLQ topic has the documented headers."""
    where = f"headers of the DLQ copy at {record.topic}/{record.partition}/{record.offset}"
    _require(DLQ_HEADERS, headers_view(record.headers), where)


def _require(name: str, instance: Any, where: str) -> None:
    why = problem(name, instance)
    assert why is None, f"{where} does not match schemas/{name}: {why}\n{instance!r}"

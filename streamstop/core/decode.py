"""Decoding of input record values into a message uuid (SPEC "Input events").

A value is a JSON object carrying `messageUuid` (alias `uuid`) and an optional `requestId`,
or the bare uuid as plain text. Anything else is invalid input with a short reason. This
runs once per consumed record, so the common case (a JSON object) costs one orjson parse,
one dict lookup and one regex match, and invalid outcomes are preallocated constants.

Never: raise, whatever the bytes; never accept a uuid the SPEC's pattern does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

MAX_VALUE_BYTES = 64 * 1024

# Explicit ASCII classes (no IGNORECASE: it would let Unicode look-alikes such as the
# Kelvin sign match); fullmatch so that a trailing newline is not accepted as `$` would.
_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_OPEN_BRACE = ord("{")


@dataclass(frozen=True, slots=True)
class Decoded:
    """A valid input: the lower-case uuid and the `requestId` to echo (or None)."""

    uuid: str
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Invalid:
    """Invalid input, with a short human reason for the result and the DLQ copy."""

    reason: str


NULL_VALUE = Invalid("null value")
EMPTY_VALUE = Invalid("empty value")
TOO_LARGE = Invalid("value over 64 KiB")
NOT_UTF8 = Invalid("not UTF-8")
NOT_JSON = Invalid("not JSON nor a bare uuid")
NOT_OBJECT = Invalid("JSON value is not an object")
NO_UUID = Invalid("no messageUuid or uuid field")
MESSAGE_UUID_NOT_STRING = Invalid("messageUuid is not a string")
UUID_NOT_STRING = Invalid("uuid is not a string")
MALFORMED_UUID = Invalid("malformed uuid")


def decode_value(value: bytes | None) -> Decoded | Invalid:
    """Decode one input record value; never raises, whatever the bytes."""
    if value is None:
        return NULL_VALUE
    size = len(value)
    if size == 0:
        return EMPTY_VALUE
    if size > MAX_VALUE_BYTES:
        return TOO_LARGE
    if value[0] == _OPEN_BRACE:
        return _decode_json(value)
    return _decode_text(value)


def _decode_text(value: bytes) -> Decoded | Invalid:
    """A value not starting with `{`: a bare uuid, or JSON after all (leading space)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8
    stripped = text.strip()
    if not stripped:
        return EMPTY_VALUE
    if _UUID.fullmatch(stripped):
        return Decoded(stripped.lower(), None)
    return _decode_json(value)


def _decode_json(value: bytes) -> Decoded | Invalid:
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        # orjson also rejects bad UTF-8 and depth/number limits; name the likelier cause.
        return _unparseable(value)
    if type(parsed) is not dict:
        return NOT_OBJECT
    return _from_object(parsed)


def _unparseable(value: bytes) -> Invalid:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8
    return NOT_JSON


def _from_object(obj: dict[str, Any]) -> Decoded | Invalid:
    # A present `messageUuid` key wins even when its value is unusable: the producer said
    # which field it meant, so `uuid` is not a silent fallback.
    if "messageUuid" in obj:
        raw = obj["messageUuid"]
        not_string = MESSAGE_UUID_NOT_STRING
    elif "uuid" in obj:
        raw = obj["uuid"]
        not_string = UUID_NOT_STRING
    else:
        return NO_UUID
    if type(raw) is not str:
        return not_string
    if _UUID.fullmatch(raw) is None:
        return MALFORMED_UUID
    request_id = obj.get("requestId")
    return Decoded(raw.lower(), request_id if type(request_id) is str else None)

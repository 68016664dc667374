"""The simulator's answer to a well-formed stop request: per-uuid codes, deduplication.

Pure functions, so tests (and the daemon's tests) can predict every answer from the uuid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import orjson

MAX_UUIDS = 10_000

_IS_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}").fullmatch
# Both cases as keys: a lookup is cheaper than lower-casing 10,000 uuids per request.
_CODE_BY_LAST_DIGIT = {
    **dict.fromkeys("0123456789", 200),
    **dict.fromkeys("abAB", 202),
    **dict.fromkeys("cC", 403),
    **dict.fromkeys("deDE", 404),
    **dict.fromkeys("fF", 409),
}
# Codes the vendor documents as successful; anything else sets `errors`.
_SUCCESS_CODES = frozenset({200, 202})


class BadBody(Exception):
    """The request body is not `{"uuids": [str, ...]}`; the message says why."""

    def __init__(self, reason: str, sent: list[object]) -> None:
        super().__init__(reason)
        # What the request carried, so a rejected request is still recorded as sent.
        self.sent = sent


def code_for(uuid: str) -> int:
    """The per-item code the simulator answers for `uuid`, chosen by its last hex digit.

    0-9 -> 200, a-b -> 202, c -> 403, d-e -> 404, f -> 409 (a code the vendor does not
    document). A string that is not a dashed uuid is answered 404, as the vendor does not
    validate uuids. Tests use this to predict the answer for any uuid.
    """
    return _CODE_BY_LAST_DIGIT[uuid[-1]] if _IS_UUID(uuid) else 404


def parse_body(body: bytes) -> list[str]:
    """The uuids of a stop request body; raises `BadBody` when it is not the documented shape.

    An empty array is refused too: the vendor documents `uuids` as required.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadBody("body is not valid JSON", []) from None
    uuids = document.get("uuids") if isinstance(document, dict) else None
    if not isinstance(uuids, list):
        raise BadBody("body must be a JSON object with a 'uuids' array", [])
    if not uuids:
        raise BadBody("'uuids' must not be empty", uuids)
    if not all(isinstance(uuid, str) for uuid in uuids):
        raise BadBody("'uuids' must contain only strings", uuids)
    return uuids


def distinct(uuids: Iterable[str]) -> dict[str, str]:
    """Lower-case uuid -> the first spelling sent, in request order (case-insensitive dedupe)."""
    seen: dict[str, str] = {}
    for uuid in uuids:
        seen.setdefault(uuid.lower(), uuid)
    return seen


def stop_items(
    uuids: Mapping[str, str],
    *,
    uppercase: bool,
    stopped: set[str],
    repeat_code: int | None = None,
) -> list[dict[str, object]]:
    """One `{"messageUuid", "code"}` item per uuid (lower-case -> as sent, see `distinct`),
    echoing it as sent (or upper-cased).

    `stopped` holds the lower-case uuids answered 200 or 202 so far and grows with this
    answer; one of them asked for again gets `repeat_code`, or, when that is None, the
    same code again (an idempotent stop).
    """
    items: list[dict[str, object]] = []
    for lowered, uuid in uuids.items():
        code = code_for(uuid)
        if lowered in stopped:
            code = code if repeat_code is None else repeat_code
        elif code in _SUCCESS_CODES:
            stopped.add(lowered)
        items.append({"messageUuid": uuid.upper() if uppercase else uuid, "code": code})
    return items


def has_errors(items: Iterable[dict[str, object]]) -> bool:
    """The response's `errors` flag: true when any item's code is not 200 or 202."""
    return any(item["code"] not in _SUCCESS_CODES for item in items)

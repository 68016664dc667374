"""What a stop API response means for each uuid of the request (SPEC "Stop API usage").

The vendor documents one shape (a 2xx with `items` of `{messageUuid, code}`) and leaves
the rest unsaid, so anything else is classified defensively: transient (retry), a request
the API rejects (split it), or our configuration being wrong (stop and alert). Pure: the
caller passes the status, headers, body and wall-clock time in.

Never: let one malformed item change what the others say, or quote a secret in a reason.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

# `retry.max_retry_after_s`'s default: a stale stop is worth little, and an absurd header
# must not hold every request back for long.
DEFAULT_MAX_RETRY_AFTER_S = 300.0
MAX_MESSAGE_CHARS = 200

_RETRY_STATUSES = frozenset({408, 429})
_SPLIT_STATUSES = frozenset({400, 413, 422})
_MESSAGE_KEYS = ("message", "error", "detail")
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Control and bidi/format characters could forge or garble a log line; whitespace collapses.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\s]+")
# Bytes read from a body for a human message: enough for MAX_MESSAGE_CHARS of any script.
MESSAGE_SCAN_BYTES = 64 * 1024  # of a non-JSON body, enough for any page's first words


class Kind(enum.Enum):
    """The request-level meaning of a response."""

    ITEMS = "items"
    RETRY = "retry"
    SPLIT = "split"
    CONFIG_ERROR = "config_error"


@dataclass(frozen=True, slots=True)
class Interpretation:
    """A response classified: per-item codes for ITEMS, else a reason for the request."""

    kind: Kind
    codes: dict[str, int]
    missing: list[str]
    reason: str
    retry_after_s: float | None
    # Items of an ITEMS answer skipped as not `{"messageUuid": str, "code": int}`.
    malformed_items: int = 0


def _as_is(text: str) -> str:
    return text


def interpret_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    requested: Sequence[str],
    now_epoch: float,
    redact: Callable[[str], str] = _as_is,
    max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
) -> Interpretation:
    """Classify a stop API response to a request for `requested` uuids. `redact` cleans
    the API's own words before they are shortened into a reason: reasons end up in
    results, and a gateway may quote our request (and its Authorization) back.
    A Retry-After is capped at `max_retry_after_s` (`retry.max_retry_after_s`)."""
    retry_after_s = parse_retry_after(_header(headers, "retry-after"), now_epoch, max_retry_after_s)
    if 200 <= status < 300:
        parsed = _parse_items(body, requested)
        if parsed is None:
            reason = f"HTTP {status} with a body not of the documented shape"
            return Interpretation(Kind.RETRY, {}, [], reason, retry_after_s)
        codes, missing, malformed = parsed
        return Interpretation(Kind.ITEMS, codes, missing, "", retry_after_s, malformed)
    if status in _RETRY_STATUSES or 500 <= status < 600:
        return Interpretation(Kind.RETRY, {}, [], f"HTTP {status}", retry_after_s)
    if status in _SPLIT_STATUSES:
        message = _api_message(body, redact)
        reason = f"HTTP {status}: {message}" if message else f"HTTP {status}"
        return Interpretation(Kind.SPLIT, {}, [], reason, retry_after_s)
    # Its body is left out on purpose: an echoing proxy could carry our Authorization.
    return Interpretation(Kind.CONFIG_ERROR, {}, [], f"HTTP {status}", retry_after_s)


def parse_retry_after(
    value: str | None, now_epoch: float, max_s: float = DEFAULT_MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), clamped
    to [0, max_s]; None when absent or unparseable."""
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return min(float(value), max_s)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000" means UTC with no claim about local time
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now_epoch
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), max_s)


def _header(headers: Mapping[str, str], lower_name: str) -> str | None:
    # Works for a case-insensitive multidict (direct hit) and a plain dict of any case.
    value = headers.get(lower_name)
    if value is not None:
        return value
    for name, candidate in headers.items():
        if name.lower() == lower_name:
            return candidate
    return None


def _parse_items(
    body: bytes, requested: Sequence[str]
) -> tuple[dict[str, int], list[str], int] | None:
    """Per-item codes for the requested uuids, the requested uuids left unanswered, and
    the number of malformed items skipped; None when the body is not of the documented
    shape. A malformed item says nothing reliable about any uuid, so it is skipped alone:
    the uuid it was meant for is left missing (and retried), the rest of the answer holds."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    items = doc.get("items")
    if type(items) is not list or type(doc.get("errors", False)) is not bool:
        return None
    # Lower-case uuid -> the string to key answers by: the requested object itself when it
    # is already lower case, so answers held until their results are published share the
    # request's strings instead of keeping the parsed response alive (~15 MB at a full
    # pipeline).
    wanted: dict[str, str] = {}
    for asked in requested:
        lowered = asked.lower()
        wanted.setdefault(lowered, asked if asked == lowered else lowered)
    codes: dict[str, int] = {}
    malformed = 0
    for item in items:
        if type(item) is not dict:
            malformed += 1
            continue
        uuid = item.get("messageUuid")
        code = item.get("code")
        if type(uuid) is not str or type(code) is not int:
            malformed += 1
            continue
        key = wanted.get(uuid)
        if key is None:
            key = wanted.get(uuid.lower())
            if key is None:
                continue
        if key not in codes:
            codes[key] = code
    missing = [asked for asked in wanted.values() if asked not in codes]
    return codes, missing, malformed


def _api_message(body: bytes, redact: Callable[[str], str]) -> str:
    """The API's own words for a rejection: a JSON message field, else the body text."""
    text = _json_message(body)
    if text is None:
        text = body[:MESSAGE_SCAN_BYTES].decode("utf-8", "replace")
        if len(body) > MESSAGE_SCAN_BYTES:
            # The cut may have split a word (or a secret): drop the last one.
            words = text.rsplit(None, 1)
            text = words[0] if len(words) == 2 else ""
    # Redact the whole text before anything shortens it: a cut secret is unrecognisable.
    text = _UNPRINTABLE.sub(" ", redact(text)).strip()
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1].rstrip() + "…"
    return text


def _json_message(body: bytes) -> str | None:
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    for key in _MESSAGE_KEYS:
        value = doc.get(key)
        if type(value) is str and value.strip():
            return value
    return None

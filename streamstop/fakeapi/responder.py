"""What the simulator answers to one stop request: the order in which faults, checks and
the normal answer apply. Pure (the random source is passed in), so a seed replays a run.

Order, first match wins:
1. `status_override`: that status, small JSON body.
2. Gateway faults, before the application sees the request: `outage` (503),
   `error_rate` (500/502/503), both with an HTML gateway page; `throttle_rate` (429 with
   Retry-After).
3. Application checks: Authorization (401), Content-Type (415), `reject_all` (400), body
   shape (400), more than 10,000 uuids (413), `reject_uuid` (400).
4. The normal answer, possibly with items missing (at random or `missing_uuid`), a
   malformed body, malformed items, upper-case uuids, a uuid stopped before answered
   `repeat_stop_code`, padding to a huge size, gzip encoding.
"""

from __future__ import annotations

import hmac
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import orjson

from streamstop.fakeapi.bodies import encode_answer
from streamstop.fakeapi.rules import (
    MAX_UUIDS,
    BadBody,
    distinct,
    has_errors,
    parse_body,
    stop_items,
)
from streamstop.fakeapi.switches import Switches

JSON = "application/json"
HTML = "text/html"
GATEWAY_STATUSES = (500, 502, 503)
_NO_BODY_STATUSES = frozenset({204, 205, 304})
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class StopRequest:
    """The parts of an HTTP request the answer depends on."""

    authorization: str | None
    content_type: str
    # None when the body was too large to read.
    body: bytes | None


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to send, and what to record about the request."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    sent: Sequence[object] = ()


def respond(
    request: StopRequest, switches: Switches, rng: random.Random, stopped: set[str]
) -> Reply:
    """Decide the answer to `request` under `switches`, drawing random choices from `rng`;
    `stopped` (lower-case uuids answered 200 or 202 so far) grows with the answer."""
    sent, problem, uuids = _read(request.body)
    reply = _answer(request, switches, rng, stopped, problem, uuids)
    delay_s = switches.latency_ms / 1000
    if switches.latency_jitter_ms:
        delay_s += rng.uniform(0, switches.latency_jitter_ms) / 1000
    return replace(reply, delay_s=delay_s, sent=sent)


def _read(body: bytes | None) -> tuple[Sequence[object], Reply | None, list[str]]:
    """(uuids as sent, the error reply if the body is unusable, the valid uuids)."""
    if body is None:
        return [], _message(413, "request body too large"), []
    try:
        uuids = parse_body(body)
    except BadBody as exc:
        return exc.sent, _message(400, str(exc)), []
    if len(uuids) > MAX_UUIDS:
        return uuids, _message(413, f"at most {MAX_UUIDS} uuids are allowed"), []
    return uuids, None, uuids


def _answer(
    request: StopRequest,
    switches: Switches,
    rng: random.Random,
    stopped: set[str],
    problem: Reply | None,
    uuids: list[str],
) -> Reply:
    if switches.status_override is not None:
        return _message(switches.status_override, f"status override {switches.status_override}")
    if switches.outage:
        return _gateway_page(503)
    if switches.error_rate and rng.random() < switches.error_rate:
        return _gateway_page(rng.choice(GATEWAY_STATUSES))
    if switches.throttle_rate and rng.random() < switches.throttle_rate:
        retry_after = switches.retry_after_date or str(switches.retry_after_s)
        return _message(429, "too many requests", {"Retry-After": retry_after})
    if not _authorized(request.authorization, switches.token.get_secret_value()):
        return _message(401, "unauthorized")
    if request.content_type.lower() != JSON:
        return _message(415, "Content-Type must be application/json")
    if switches.reject_all:
        return _message(400, "request rejected")
    if problem is not None:
        return problem
    unique = distinct(uuids)
    for rejected in switches.reject_uuid:
        if rejected.lower() in unique:
            message = f"invalid uuid {unique[rejected.lower()]}"
            if switches.echo_authorization:
                message += f" (request: Authorization: {request.authorization})"
            return _message(400, message)
    return _stopped(unique, switches, rng, stopped)


def _authorized(header: str | None, token: str) -> bool:
    # Constant-time, so the simulator does not teach clients a timing oracle.
    return header is not None and hmac.compare_digest(header.encode(), f"Basic {token}".encode())


def _stopped(
    uuids: dict[str, str], switches: Switches, rng: random.Random, stopped: set[str]
) -> Reply:
    malformed = bool(switches.malformed_rate) and rng.random() < switches.malformed_rate
    for lost in switches.missing_uuid:
        uuids.pop(lost.lower(), None)
    items = stop_items(
        uuids,
        uppercase=switches.uppercase_items,
        stopped=stopped,
        repeat_code=switches.repeat_stop_code,
    )
    if switches.missing_rate:
        items = [item for item in items if rng.random() >= switches.missing_rate]
    errors = has_errors(items)
    if malformed:
        body, content_type = rng.choice(_MALFORMED)(items, errors)
        return Reply(200, body, content_type)
    if switches.malformed_item_rate:
        rate = switches.malformed_item_rate
        items = [_malformed_item(item, rng) if rng.random() < rate else item for item in items]
    body = encode_answer(errors, items, pad_mb=switches.huge_body_mb, gzip=switches.gzip_answers)
    headers = {"Content-Encoding": "gzip"} if switches.gzip_answers else {}
    return Reply(200, body, JSON, headers)


def _malformed_item(item: dict[str, object], rng: random.Random) -> dict[str, object]:
    """`item` made malformed: its uuid null or its code a string, half each."""
    if rng.random() < 0.5:
        return {**item, "messageUuid": None}
    return {**item, "code": str(item["code"])}


def _message(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    if status in _NO_BODY_STATUSES:
        return Reply(status, headers=headers or {})
    return Reply(status, orjson.dumps({"message": message}), JSON, headers or {})


def _gateway_page(status: int) -> Reply:
    title = f"{status} {_REASONS[status]}"
    page = (
        f"<html><head><title>{title}</title></head><body>"
        f"<center><h1>{title}</h1></center><hr><center>nginx</center></body></html>"
    )
    return Reply(status, page.encode(), HTML)


# Bodies a broken vendor or proxy might send with a 2xx; each is not the documented shape.
_Malformer = Callable[[list[dict[str, object]], bool], tuple[bytes, str]]


def _html_page(items: list[dict[str, object]], errors: bool) -> tuple[bytes, str]:
    return b"<html><body><h1>Maintenance</h1></body></html>", HTML


def _truncated_json(items: list[dict[str, object]], errors: bool) -> tuple[bytes, str]:
    body = orjson.dumps({"errors": errors, "items": items})
    return body[: len(body) // 2], JSON


def _items_not_a_list(items: list[dict[str, object]], errors: bool) -> tuple[bytes, str]:
    return orjson.dumps({"errors": errors, "items": {"count": len(items)}}), JSON


def _items_missing(items: list[dict[str, object]], errors: bool) -> tuple[bytes, str]:
    return orjson.dumps({"errors": errors}), JSON


def _wrong_types(items: list[dict[str, object]], errors: bool) -> tuple[bytes, str]:
    # The flag as a string too, so the body is wrong even when no item is left.
    shown = [{**item, "code": str(item["code"])} for item in items]
    return orjson.dumps({"errors": str(errors).lower(), "items": shown}), JSON


_MALFORMED: tuple[_Malformer, ...] = (
    _html_page,
    _truncated_json,
    _items_not_a_list,
    _items_missing,
    _wrong_types,
)

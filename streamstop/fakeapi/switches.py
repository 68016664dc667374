"""The simulator's fault switches: one typed model behind both the CLI flags and
`POST /_fake/config`, so a flag and its runtime twin cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)

Rate = Annotated[float, Field(ge=0.0, le=1.0)]


def _http_date(value: str) -> str:
    if value:
        try:
            parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            raise ValueError("must be an HTTP-date, e.g. 'Fri, 01 Jan 2100 00:00:00 GMT'") from None
    return value


class Switches(BaseModel):
    """Behaviour of the simulator; every field is a `--long-option` and a config key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr = Field(
        default=SecretStr("test-token"),
        description="expected token in 'Authorization: Basic TOKEN' (default test-token)",
    )
    latency_ms: float = Field(
        default=0.0,
        ge=0,
        description="time from a stop request's arrival to its answer (own work included)",
    )
    latency_jitter_ms: float = Field(default=0.0, ge=0, description="extra random delay, 0..this")
    error_rate: Rate = Field(
        default=0.0, description="fraction answered 500/502/503 with an HTML page"
    )
    throttle_rate: Rate = Field(default=0.0, description="fraction answered 429 with Retry-After")
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After seconds sent with a 429")
    retry_after_date: Annotated[str, AfterValidator(_http_date)] = Field(
        default="",
        description="send this HTTP-date as a 429's Retry-After instead of retry_after_s, "
        "e.g. 'Fri, 01 Jan 2100 00:00:00 GMT' (far future)",
    )
    missing_rate: Rate = Field(
        default=0.0, description="fraction of items left out of a good answer"
    )
    malformed_rate: Rate = Field(
        default=0.0, description="fraction of good answers whose body is not the documented shape"
    )
    malformed_item_rate: Rate = Field(
        default=0.0,
        description="fraction of a good answer's items made malformed: a null messageUuid "
        "or the code as a string (half each)",
    )
    huge_body_mb: int = Field(
        default=0,
        ge=0,
        le=16_384,
        description="pad every good answer with this many MiB of items for a uuid nobody asked for",
    )
    gzip_answers: bool = Field(
        default=False,
        description="send good answers with Content-Encoding: gzip; with --huge-body-mb, a "
        "gzip bomb (1 GiB of JSON is about 1 MB on the wire)",
    )
    repeat_stop_code: int | None = Field(
        default=None,
        ge=100,
        le=999,
        description="per-item code for a uuid an earlier answer already stopped (200 or 202); "
        "default: the same code again, as an idempotent API would",
    )
    reject_uuid: tuple[str, ...] = Field(
        default=(), description="a request containing this uuid gets 400 (repeatable)"
    )
    missing_uuid: tuple[str, ...] = Field(
        default=(), description="this uuid is always left out of a good answer (repeatable)"
    )
    reject_all: bool = Field(default=False, description="answer every stop request 400")
    echo_authorization: bool = Field(
        default=False,
        description="quote the request's Authorization header in 400 messages, like a "
        "careless gateway",
    )
    outage: bool = Field(default=False, description="answer every stop request 503")
    uppercase_items: bool = Field(default=False, description="echo uuids upper-case in items")
    status_override: int | None = Field(
        default=None, ge=200, le=599, description="answer every stop request with this status"
    )
    seed: int = Field(default=0, description="seed of the random choices behind the rates")


class SwitchError(ValueError):
    """Changes that do not validate; one line per problem, never echoing a value."""


def with_changes(current: Switches, changes: Mapping[str, object]) -> Switches:
    """`current` with `changes` (snake_case switch names) applied, validated as a whole.

    Raises `SwitchError` naming each bad key; the current switches stay as they were.
    """
    try:
        return Switches.model_validate({**dict(current), **changes})
    except ValidationError as exc:
        # Built from location and message only: pydantic's own text repeats the input,
        # which could be the token.
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
        raise SwitchError("; ".join(problems)) from None


def public_view(switches: Switches) -> dict[str, object]:
    """The switches as JSON-ready data, the token masked."""
    return switches.model_dump(mode="json")

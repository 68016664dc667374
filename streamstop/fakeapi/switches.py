"""The simulator's fault switches: one typed model behind both the CLI flags and
`POST /_fake/config`, so a flag and its runtime twin cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

Rate = Annotated[float, Field(ge=0.0, le=1.0)]


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
    missing_rate: Rate = Field(
        default=0.0, description="fraction of items left out of a good answer"
    )
    malformed_rate: Rate = Field(
        default=0.0, description="fraction of good answers whose body is not the documented shape"
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

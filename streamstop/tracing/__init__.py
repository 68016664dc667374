"""Optional OpenTelemetry tracing (`observability.tracing`): the switch.

Nothing here imports OpenTelemetry: with tracing `off` the SDK (an optional extra,
`streamstop[tracing]`) is never loaded, and the shell holds None instead of a `Tracing`.
With `otlp`, `otlp.py` makes the spans and exports them over OTLP/HTTP, configured by the
standard `OTEL_*` variables (endpoint, headers, sampler, batch sizes, service name).

Never: import OpenTelemetry while tracing is off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from streamstop.config import ConfigError

if TYPE_CHECKING:
    from streamstop.tracing.otlp import Tracing


class Carrier(Protocol):
    """Something that came with Kafka headers: an input record's `Pending`."""

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def start_tracing(mode: str) -> Tracing | None:
    """The tracing `observability.tracing` asks for, started; None when `off`. Raises
    ConfigError when `otlp` is asked for and cannot work as configured."""
    if mode == "off":
        return None
    try:
        from streamstop.tracing import otlp
    except ImportError as exc:
        raise ConfigError(
            [
                'observability.tracing: "otlp" needs the OpenTelemetry SDK, which is not '
                f"installed ({exc.name} is missing): pip install 'streamstop[tracing]'"
            ]
        ) from None
    return otlp.Tracing.from_environment()

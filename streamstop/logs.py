"""Logging: every line the process writes is one structlog JSON object (or console text).

Standard-library loggers (aiokafka, aiohttp) are routed through the same renderer, and
registered secrets are masked in the final line, whatever put them there.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

_secrets: set[str] = set()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Mask `value` wherever it would appear in a log line from now on."""
    if value and len(value) >= 4:
        _secrets.add(value)


def mask_secrets(line: str) -> str:
    """Replace every registered secret in `line` by a mask."""
    for secret in _secrets:
        if secret in line:
            line = line.replace(secret, MASK)
    return line


def _orjson_dumps(event: EventDict, **_: Any) -> str:
    return mask_secrets(orjson.dumps(event, default=repr).decode())


def _masked_console(renderer: structlog.dev.ConsoleRenderer) -> Any:
    def render(logger: WrappedLogger, name: str, event: EventDict) -> str:
        return mask_secrets(renderer(logger, name, event))

    return render


def configure(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog and the standard library once, at start-up."""
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper,
    ]
    renderer: Processor
    if fmt == "console":
        renderer = _masked_console(structlog.dev.ConsoleRenderer(colors=False))
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    # Tracebacks as data, without local variables: locals can hold the token.
    exc_processor: Processor = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            exc_processor if fmt == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exc_processor if fmt == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # aiokafka is chatty at info about every (re)connect; keep warnings and up unless debugging.
    if numeric > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(max(numeric, logging.WARNING))
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.captureWarnings(True)

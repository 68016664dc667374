"""Logging: every line the process writes is one structlog JSON object (or console text).

Standard-library loggers (aiokafka, aiohttp) are routed through the same renderer, and
registered secrets are masked in the final line, whatever put them there.
"""

from __future__ import annotations

import logging
import sys
import time
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


REPEAT_WINDOW_S = 10.0
MAX_REPEAT_KEYS = 1000  # distinct (logger, level, template) remembered before a reset


class RepeatFilter(logging.Filter):
    """Lets one line per logger and message template through per window; the next one
    after the window carries `repeated`, the count held back meanwhile.

    aiokafka logs a connection failure on every turn of its retry loops, thousands of
    lines a second while a broker is down (its producer retries metadata without a
    pause), which would drown the lines that matter and the log pipeline with them.
    """

    def __init__(self, window_s: float = REPEAT_WINDOW_S, clock: Any = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))  # msg may be any object
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.repeated = last[1]
        if len(self._seen) > MAX_REPEAT_KEYS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return True


# aiokafka logs these at error level, yet on a healthy start the group coordinator is not
# known for a moment (a fresh cluster creates __consumer_offsets on the first group
# request): they retry on their own, so they are information, not faults.
_RETRIED_LOOKUPS = ("Group Coordinator Request failed", "FindCoordinator Request failed")


class RetriedLookupFilter(logging.Filter):
    """Downgrades aiokafka's retried coordinator lookups from error to info."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not str(record.msg).startswith(_RETRIED_LOOKUPS):
            return True
        error = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if not getattr(error, "retriable", False):
            return True
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


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
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(allow=["repeated"]),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exc_processor if fmt == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(RetriedLookupFilter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # aiokafka is chatty at info about every (re)connect; keep warnings and up unless debugging.
    if numeric > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(max(numeric, logging.WARNING))
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.captureWarnings(True)

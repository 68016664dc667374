"""Logging: every line the process writes is one structlog JSON object (or console text).

Standard-library loggers (aiokafka, aiohttp) are routed through the same renderer.
Registered secrets are masked in every value before rendering (so escaping cannot hide a
`"` or `\\` in a secret from the mask) and again in the final line, in each written form a
secret can take there, whatever put it there.

Never: write a line that is not JSON (in json format), or one holding a registered secret.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

MASK = "***"
_secrets: set[str] = set()
# Every written form of every secret, longest first so a longer form is masked whole.
_forms: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Mask `value` wherever it would appear in a log line from now on."""
    global _forms
    if value and len(value) >= 4 and value not in _secrets:
        _secrets.add(value)
        _forms = tuple(sorted({*_forms, *_written_forms(value)}, key=len, reverse=True))


def _written_forms(secret: str) -> set[str]:
    """`secret` as it reads inside a JSON string, a repr, and a repr inside JSON."""
    as_json = orjson.dumps(secret).decode()[1:-1]
    as_repr = repr(secret)[1:-1]
    return {secret, as_json, as_repr, orjson.dumps(as_repr).decode()[1:-1]}


def mask_secrets(line: str) -> str:
    """Replace every registered secret in `line`, in any written form, by a mask."""
    for form in _forms:
        if form in line:
            line = line.replace(form, MASK)
    return line


def masked_url(url: str) -> str:
    """`url` for display: a password in it and the values of its query string masked."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return MASK
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
    pairs = (pair.partition("=") for pair in parts.query.split("&")) if parts.query else ()
    query = "&".join(f"{name}={MASK}" if equals else MASK for name, equals, _ in pairs)
    fragment = MASK if parts.fragment else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return value


def _mask_values(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    """Mask secrets in every string of the event, before a renderer escapes them."""
    return _masked(event)  # type: ignore[no-any-return]


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
            _mask_values,
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
            _mask_values,
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

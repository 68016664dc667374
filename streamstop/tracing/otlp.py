"""streamstop's spans, exported over OTLP/HTTP (imported only with tracing on).

- One span per stop API request (`stop-api request`, CLIENT): batch id, uuids sent, the
  batch's request number, outcome and HTTP status, with links to the trace contexts of the
  input records it answers (the first `MAX_LINKS`).
- One span per result of an input record that carries a `traceparent` (`process <topic>`,
  CONSUMER): a child of the input's span, from when the record was consumed to when its
  result was decided. The result's `traceparent` (and `tracestate`) is that span's: a
  consumer of the result continues the upstream trace through streamstop. Results of
  records without a valid `traceparent` keep their copied headers.
- One span per publish (`publish`, PRODUCER) until Kafka acknowledged it, linked to the
  first `MAX_LINKS` results' spans.
Log lines written inside a request or publish span carry its `trace_id` and `span_id`.
Sampling follows `OTEL_TRACES_SAMPLER` (by default the input's own sampling decision).

Never: block the event loop on the exporter, or change a result of an input without a
valid trace context.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from streamstop import __version__
from streamstop.config import ConfigError
from streamstop.core.resolution import Answered, Held, Outcome, Rejected
from streamstop.logs import register_secret
from streamstop.metrics import Metrics
from streamstop.partitions import Pending
from streamstop.publisher import Limits, OutMessage, Publisher
from streamstop.tracing import Carrier

MAX_LINKS = 128
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
_PROPAGATOR = TraceContextTextMapPropagator()
RecordsOf = Callable[[str], Sequence[Carrier]]
Headers = Sequence[tuple[str, bytes]]


class _HeaderGetter(Getter[Headers]):
    """Reads W3C trace context from Kafka headers (a list of (key, bytes))."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        values = [value.decode("latin-1") for name, value in carrier if name == key]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _HeaderGetter()


def parent_of(headers: Headers) -> SpanContext | None:
    """The trace context in `headers` (`traceparent`, `tracestate`), if a valid one."""
    for name, _ in headers:
        if name == TRACEPARENT:
            break
    else:
        return None  # the common untraced record: no parsing
    context = trace.get_current_span(_PROPAGATOR.extract(headers, getter=_GETTER))
    span_context = context.get_span_context()
    return span_context if span_context.is_valid else None


class Tracing:
    """Makes streamstop's spans; one per process."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self.tracer = provider.get_tracer("streamstop", __version__)

    @classmethod
    def from_environment(cls) -> Tracing:
        """Spans batched to the OTLP/HTTP endpoint that the `OTEL_*` variables name."""
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol != "http/protobuf":
            raise ConfigError(
                [
                    f"observability.tracing: OTLP protocol {protocol!r} is not supported "
                    "(OTEL_EXPORTER_OTLP_PROTOCOL): streamstop exports http/protobuf, "
                    "to port 4318 of a collector"
                ]
            )
        for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
            # Often an API key of a tracing backend: never in a log line.
            for pair in os.environ.get(variable, "").split(","):
                register_secret(pair.partition("=")[2].strip())
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=_resource())
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    async def shutdown(self) -> None:
        """Export what is left and stop (the exporter blocks: off the event loop)."""
        await asyncio.to_thread(self._provider.shutdown)

    @contextlib.contextmanager
    def request(
        self, batch_id: str, unit: Sequence[str], number: int, records_of: RecordsOf | None
    ) -> Iterator[Callable[[Outcome, int | None], None]]:
        """A span around one stop API request; call what it yields with the outcome."""
        span = self.tracer.start_span(
            "stop-api request",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "streamstop.batch_id": batch_id,
                "streamstop.batch.size": len(unit),
                "streamstop.attempt": number,
            },
            links=_links(_request_parents(unit, records_of)) if records_of else (),
        )

        def answered(outcome: Outcome, status: int | None) -> None:
            name = _outcome_name(outcome)
            span.set_attribute("streamstop.outcome", name)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if name != "ok":
                span.set_status(Status(StatusCode.ERROR, name))

        with trace.use_span(span, end_on_exit=True), _log_ids(span.get_span_context()):
            yield answered

    def results(
        self, messages: list[OutMessage], recs: Sequence[Pending], batch_id: str | None
    ) -> None:
        """For each traced input record, a span child of its trace context, and that span's
        `traceparent` (and `tracestate`) on its result instead of the copied ones.
        `messages[i]` is the result of `recs[i]`; rewritten in place."""
        tracer = self.tracer
        decided = time.time_ns()
        for index, rec in enumerate(recs):
            parent = parent_of(rec.headers)
            if parent is None:
                continue
            part = rec.part.tp
            span = tracer.start_span(
                f"process {part.topic}",
                context=trace.set_span_in_context(trace.NonRecordingSpan(parent)),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": part.topic,
                    "messaging.destination.partition.id": str(part.partition),
                    "messaging.kafka.offset": rec.offset,
                    "streamstop.batch_id": batch_id or "",
                },
                start_time=int(rec.received.at * 1e9),
            )
            span.end(end_time=decided)
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
            message = messages[index]
            messages[index] = message._replace(headers=_with_context(message.headers, carrier))

    def publisher(
        self, make_producer: Callable[[], Any], limits: Limits, metrics: Metrics
    ) -> Publisher:
        """A publisher whose every `publish` is a span."""
        return TracedPublisher(self, make_producer, limits, metrics)


class TracedPublisher(Publisher):
    """`Publisher` with one span per publish, until Kafka acknowledged it."""

    def __init__(
        self, tracing: Tracing, make_producer: Callable[[], Any], limits: Limits, metrics: Metrics
    ) -> None:
        super().__init__(make_producer, limits, metrics)
        self._tracer = tracing.tracer

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        topics = sorted({message.topic for message in messages})
        span = self._tracer.start_span(
            "publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": ",".join(topics),
                "messaging.batch.message_count": len(messages),
            },
            links=_links(parent_of(message.headers) for message in messages),
        )
        with trace.use_span(span, end_on_exit=True), _log_ids(span.get_span_context()):
            await super().publish(messages)


def _request_parents(unit: Sequence[str], records_of: RecordsOf) -> Iterator[SpanContext | None]:
    for uuid in unit:
        for rec in records_of(uuid):
            yield parent_of(rec.headers)


def _links(parents: Iterable[SpanContext | None]) -> list[Link]:
    """Links to the first MAX_LINKS valid contexts of `parents`."""
    links: list[Link] = []
    for parent in parents:
        if parent is not None:
            links.append(Link(parent))
            if len(links) == MAX_LINKS:
                break
    return links


def _with_context(headers: Headers, carrier: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """`headers` with the trace context of `carrier` instead of the copied one."""
    kept = [(name, value) for name, value in headers if name not in _TRACE_HEADERS]
    return kept + [(name, value.encode()) for name, value in carrier.items()]


def _outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, Answered):
        return "ok"
    if isinstance(outcome, Rejected):
        return "split"
    if isinstance(outcome, Held):
        return "config_error"
    return str(outcome.cause)


@contextlib.contextmanager
def _log_ids(context: SpanContext) -> Iterator[None]:
    """Log lines written meanwhile carry the span's ids."""
    with structlog.contextvars.bound_contextvars(
        trace_id=trace.format_trace_id(context.trace_id),
        span_id=trace.format_span_id(context.span_id),
    ):
        yield


def _resource() -> Resource:
    """OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, else service.name `streamstop`."""
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "streamstop"}))
    return resource

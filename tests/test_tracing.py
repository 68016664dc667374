"""Tracing (`observability.tracing`): the spans and headers streamstop makes, read back
from the SDK's in-memory exporter; and with tracing off, OpenTelemetry is never loaded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog
from aiokafka import TopicPartition
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from test_stopper import FakeClient, items

from streamstop.config import ConfigError
from streamstop.config.models import RetrySettings
from streamstop.core.fit import Kind
from streamstop.interpreter import Interpreter
from streamstop.metrics import Metrics
from streamstop.partitions import Partition, Pending, Received
from streamstop.publisher import OutMessage
from streamstop.stopclient import Response
from streamstop.stopper import Stopper
from streamstop.tracing import start_tracing
from streamstop.tracing.otlp import MAX_LINKS, Tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{TRACE}-{SPAN}-01".encode()


@pytest.fixture
def exported() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider), exporter
    provider.shutdown()


PART = Partition(TopicPartition("cancels", 3))
RECEIVED = Received(1_700_000_000.25, "2023-11-14T22:13:20.250Z")


def record(offset: int, headers: list[tuple[str, bytes]]) -> Pending:
    return Pending(PART, offset, headers, None, RECEIVED)


def result_of(rec: Pending) -> OutMessage:
    return OutMessage("results", b"k", b"{}", rec.headers, Kind.RESULT, rec.part)


def header(message: OutMessage, name: str) -> list[bytes]:
    return [value for key, value in message.headers if key == name]


def test_a_result_continues_its_input_trace_as_a_child_span(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    recs = [
        record(7, [("traceparent", SAMPLED), ("tracestate", b"vendor=1"), ("x-app", b"a")]),
        record(8, [("x-app", b"untraced")]),
        record(9, [("traceparent", b"00-not-a-trace-context-01")]),
    ]
    messages = [result_of(rec) for rec in recs]
    tracing.results(messages, recs, "batch-1")

    (span,) = exporter.get_finished_spans()
    context = span.get_span_context()
    assert context is not None
    assert span.parent is not None
    assert f"{context.trace_id:032x}" == TRACE  # the upstream trace goes on
    assert f"{span.parent.span_id:016x}" == SPAN  # a child of the input's span
    assert span.kind is SpanKind.CONSUMER
    assert span.name == "process cancels"
    assert span.start_time == int(RECEIVED.at * 1e9)  # from when it was consumed
    assert dict(span.attributes or {}).items() >= {
        ("messaging.kafka.offset", 7),
        ("messaging.destination.partition.id", "3"),
        ("streamstop.batch_id", "batch-1"),
    }
    # The result's traceparent is that span's, replacing the copied one; the rest stays.
    assert header(messages[0], "traceparent") == [f"00-{TRACE}-{context.span_id:016x}-01".encode()]
    assert header(messages[0], "tracestate") == [b"vendor=1"]
    assert header(messages[0], "x-app") == [b"a"]
    # Untraced or unreadable contexts: the copied headers, untouched.
    assert messages[1].headers is recs[1].headers
    assert messages[2].headers is recs[2].headers


def test_an_unsampled_input_gets_a_child_context_and_no_exported_span(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    rec = record(1, [("traceparent", f"00-{TRACE}-{SPAN}-00".encode())])
    messages = [result_of(rec)]
    tracing.results(messages, [rec], None)
    assert exporter.get_finished_spans() == ()  # the upstream chose not to sample
    (traceparent,) = header(messages[0], "traceparent")
    version, trace_id, span_id, flags = traceparent.decode().split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "00")
    assert span_id != SPAN


def traced_records(count: int) -> dict[str, list[Pending]]:
    return {
        f"{i:08x}-0000-4000-8000-000000000000": [
            record(i, [("traceparent", f"00-{i + 1:032x}-{i + 1:016x}-01".encode())])
        ]
        for i in range(count)
    }


def stopper_for(client: FakeClient, tracing: Tracing) -> Stopper:
    return Stopper(
        client,  # type: ignore[arg-type]
        Interpreter(max_retry_after_s=300),
        max_in_flight=2,
        max_batch_size=10_000,
        max_requests_per_second=0,
        policy=RetrySettings(initial_backoff_ms=10, max_backoff_ms=50),
        metrics=Metrics(),
        tracing=tracing,
    )


def span_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def test_each_api_request_is_a_span_linked_to_its_inputs(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    waiting = traced_records(200)
    uuids = list(waiting)
    seen: list[dict[str, object]] = []

    def answer(sent: list[str], number: int) -> Response:
        seen.append(structlog.contextvars.get_contextvars())  # what log lines now carry
        if number == 1:
            return Response(429, {"Retry-After": "0"}, b"slow down")
        return items(sent)

    stopper = stopper_for(FakeClient(answer), tracing)
    run = stopper.start(uuids, "batch-7", lambda uuid: waiting.get(uuid, []))
    answered = [answers async for answers in run]
    assert sum(map(len, answered)) == len(uuids)

    first, second = span_named(exporter, "stop-api request")
    assert first.kind is SpanKind.CLIENT
    attributes = dict(first.attributes or {})
    assert attributes == {
        "http.request.method": "POST",
        "streamstop.batch_id": "batch-7",
        "streamstop.batch.size": 200,
        "streamstop.attempt": 1,
        "streamstop.outcome": "throttled",
        "http.response.status_code": 429,
    }
    assert first.status.status_code is StatusCode.ERROR
    assert dict(second.attributes or {})["streamstop.attempt"] == 2
    assert dict(second.attributes or {})["streamstop.outcome"] == "ok"
    # Links: the first 128 input records' contexts, in order; never all 200.
    assert len(first.links) == MAX_LINKS
    assert [link.context.trace_id for link in first.links] == list(range(1, MAX_LINKS + 1))
    # Log lines written during each request carry that request span's ids.
    for span, context in zip((first, second), seen, strict=True):
        span_context = span.get_span_context()
        assert span_context is not None
        assert context["trace_id"] == f"{span_context.trace_id:032x}"
        assert context["span_id"] == f"{span_context.span_id:016x}"
    assert "trace_id" not in structlog.contextvars.get_contextvars()


def test_an_otlp_protocol_other_than_http_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigError, match="'grpc' is not supported"):
        start_tracing("otlp")


def python_without_opentelemetry(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import OpenTelemetry, as if not installed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text('import sys\nsys.modules["opentelemetry"] = None\n')
    return {**os.environ, "PYTHONPATH": str(site)}


def test_with_tracing_off_opentelemetry_is_never_imported(tmp_path: Path) -> None:
    probe = textwrap.dedent(
        """
        import sys
        import streamstop.app, streamstop.cli, streamstop.tracing
        from streamstop.tracing import start_tracing
        assert start_tracing("off") is None
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_asking_for_tracing_without_the_sdk_says_what_to_install(tmp_path: Path) -> None:
    config = tmp_path / "streamstop.toml"
    config.write_text(
        '[api]\ntoken = "t0k3n-x"\n[observability]\ntracing = "otlp"\nhttp_port = 0\n'
    )
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamstop", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=python_without_opentelemetry(tmp_path),
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert time.monotonic() - began < 30  # at once, before waiting for any Kafka
    (line,) = [orjson.loads(x) for x in done.stdout.splitlines() if "config_error" in x]
    assert "pip install 'streamstop[tracing]'" in line["problem"]

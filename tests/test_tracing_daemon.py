"""The daemon with tracing on, exporting to a real OpenTelemetry Collector (its OTLP
receiver, forwarding as OTLP/JSON to a sink here), and with tracing off on a Python where
OpenTelemetry is not importable at all."""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from daemon_proc import TEST_TOKEN, running_daemon, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import Message, consume_all, produce
from scenario import config_for, topics_for, wait_committed
from test_tracing import python_without_opentelemetry

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parent.parent
SPAN_KIND = {"client": 3, "producer": 4, "consumer": 5}


class Sink(http.server.ThreadingHTTPServer):
    """Receives what the collector exports (OTLP/HTTP, JSON) and keeps every span."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [span for span in self.spans if span["name"] == name]


class _SinkHandler(http.server.BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            for resource in body.get("resourceSpans", []):
                service = attributes(resource["resource"])["service.name"]
                for scope in resource.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        self.server.spans.append({**span, "service": service})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def attributes(item: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON attributes as a plain dict (int values come as strings)."""
    values: dict[str, Any] = {}
    for attribute in item.get("attributes", []):
        ((kind, value),) = attribute["value"].items()
        values[attribute["key"]] = int(value) if kind == "intValue" else value
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_collector(tmp_path: Path, sink: Sink) -> Iterator[str]:
    """The OpenTelemetry Collector (scripts/otelcol.sh builds it once), receiving OTLP/HTTP
    on a free port and exporting to `sink`; yields its endpoint, stops it by pid."""
    binary = subprocess.run(
        [str(REPO / "scripts" / "otelcol.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    config = tmp_path / "otelcol.yaml"
    config.write_text(
        f"""
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  otlphttp:
    endpoint: {sink.url}
    encoding: json
    compression: none
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"""
    )
    log = (tmp_path / "otelcol.log").open("wb")
    proc = subprocess.Popen([binary, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:

        def listening() -> bool:
            assert proc.poll() is None, (tmp_path / "otelcol.log").read_text()
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 60, "the collector's OTLP receiver")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def traceparent(trace_id: str, span_id: str) -> bytes:
    return f"00-{trace_id}-{span_id}-01".encode()


def header(record: Any, name: str) -> list[bytes]:
    return [value for key, value in record.headers if key == name]


def test_a_cancel_is_followed_from_its_input_through_streamstop_to_its_result(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    inputs: dict[int, tuple[str, str]] = {}  # record index -> (trace id, span id)
    messages = []
    for index in range(300):
        value = str(uuid.uuid4()).encode()
        if index % 4:  # every partition gets traced records, some also untraced ones
            ids = (uuid.uuid4().hex, uuid.uuid4().hex[:16])
            inputs[index] = ids
            messages.append(Message(value, headers=[("traceparent", traceparent(*ids))]))
        else:
            messages.append(Message(value, headers=[("x-untraced", b"1")]))
    sink = Sink()
    serving = threading.Thread(target=sink.serve_forever, daemon=True)
    serving.start()
    try:
        with (
            running_collector(tmp_path, sink) as endpoint,
            running_fake_api(
                "--token", TEST_TOKEN, "--throttle-rate", "0.5", "--retry-after-s", "0"
            ) as api,
        ):
            config = config_for(
                tmp_path,
                kafka_bootstrap,
                topics,
                api.url,
                observability__tracing="otlp",
                batch__max_size=20,  # several requests, some of them throttled
            )
            env = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_SERVICE_NAME": "streamstop-under-test",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
            with running_daemon(config, tmp_path / "d.log", env) as daemon:
                daemon.wait_ready()
                positions = produce(kafka_bootstrap, topics["input"], messages)
                wait_committed(kafka_bootstrap, topics, 120, "every record")
                # A 429 happened inside a request span: its log line names that trace.
                throttled = wait_for(
                    lambda: daemon.events("api_transient_error"), 30, "a throttled request"
                )
                wait_for(
                    lambda: len(sink.named(f"process {topics['input']}")) >= len(inputs),
                    60,
                    "every traced record's span at the sink",
                )
    finally:
        sink.shutdown()
        sink.server_close()

    results = consume_all(kafka_bootstrap, topics["output"], len(messages))
    source = {(p.partition, p.offset): index for index, p in enumerate(positions)}
    processed = {span["spanId"]: span for span in sink.named(f"process {topics['input']}")}
    requests = sink.named("stop-api request")
    batches: set[str] = set()
    for result in results:
        value = orjson.loads(result.value)
        index = source[value["source"]["partition"], value["source"]["offset"]]
        batches.add(value["batchId"])
        if index not in inputs:
            assert header(result, "traceparent") == []  # nothing to continue
            assert header(result, "x-untraced") == [b"1"]
            continue
        trace_id, parent_span = inputs[index]
        (context,) = header(result, "traceparent")
        _, result_trace, result_span, flags = context.decode().split("-")
        assert (result_trace, flags) == (trace_id, "01")
        # The result's context is a span the collector received: a child of the input's.
        span = processed[result_span]
        assert (span["traceId"], span["parentSpanId"]) == (trace_id, parent_span)
        assert span["kind"] == SPAN_KIND["consumer"]
        assert span["service"] == "streamstop-under-test"
        assert attributes(span)["streamstop.batch_id"] == value["batchId"]

    # One span per API request, for every batch, linked to its traced inputs' contexts.
    assert {attributes(span)["streamstop.batch_id"] for span in requests} == batches
    input_traces = {trace_id for trace_id, _ in inputs.values()}
    for span in requests:
        assert span["kind"] == SPAN_KIND["client"]
        links = span.get("links", [])
        assert 0 < len(links) <= 128, attributes(span)
        assert {link["traceId"] for link in links} <= input_traces
    outcomes = {attributes(span)["streamstop.outcome"] for span in requests}
    assert outcomes == {"ok", "throttled"}
    request_traces = {span["traceId"] for span in requests}
    assert all(line["trace_id"] in request_traces for line in throttled)
    # A span per publish, linked to the results' spans it carried.
    publishes = sink.named("publish")
    assert publishes
    assert all(span["kind"] == SPAN_KIND["producer"] for span in publishes)
    linked = {link["spanId"] for span in publishes for link in span.get("links", [])}
    assert linked == set(processed)


def test_with_tracing_off_the_daemon_needs_no_opentelemetry(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    messages = [
        Message(
            str(uuid.uuid4()).encode(), headers=[("traceparent", traceparent("ab" * 16, "cd" * 8))]
        )
        for _ in range(100)
    ]
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url)
        env = python_without_opentelemetry(tmp_path)
        with running_daemon(config, tmp_path / "d.log", env) as daemon:
            daemon.wait_ready()
            produce(kafka_bootstrap, topics["input"], messages)
            wait_committed(kafka_bootstrap, topics, 120, "every record")
    results = consume_all(kafka_bootstrap, topics["output"], len(messages))
    assert len(results) == len(messages)
    # Off: the input's traceparent is copied as it came.
    assert {tuple(header(result, "traceparent")) for result in results} == {
        (traceparent("ab" * 16, "cd" * 8),)
    }

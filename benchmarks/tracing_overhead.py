"""Micro-benchmark: the result writer's cost per slice of 1,000 results, tracing off and on.

    .venv/bin/python benchmarks/tracing_overhead.py            # this tree, off and on
    PYTHONPATH=/path/to/other/tree .venv/bin/python benchmarks/tracing_overhead.py --off

`--off` measures only tracing off, and works on a tree without tracing (to compare the
writer before and after), whether its writer takes `(uuid, resolution, records waiting)` rows
or one `(uuid, resolution, record)` row per record. With
tracing on every input carries a sampled `traceparent` (100 % sampling): the event loop's
cost (building results, their spans and headers) is measured with the batch span processor
exporting nowhere, and the exporter thread's cost (encoding the spans as OTLP protobuf)
separately. Each figure is the best of several runs, in µs per record.
"""

from __future__ import annotations

import argparse
import inspect
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import TopicPartition

from streamstop.core.results import Resolution, Status
from streamstop.metrics import Metrics
from streamstop.partitions import Assignment, Partition, Pending, Received
from streamstop.writer import ResultWriter

SLICE = 1000
ROUNDS = 200
REPEATS = 7


def chunk() -> list[tuple[str | None, Resolution, Sequence[Pending]]]:
    part = Partition(TopicPartition("cancel-requests", 0))
    received = Received(time.time(), "2026-01-02T03:04:05.678Z")
    answered = Resolution(Status.STOPPED, 200, None, 1)
    rows: list[tuple[str | None, Resolution, Sequence[Pending]]] = []
    for offset in range(SLICE):
        context = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode()
        headers = [("traceparent", context), ("x-origin", b"orders")]
        rec = Pending(part, offset, headers, f"r{offset}", received)
        rows.append((str(uuid.uuid4()), answered, (rec,)))
    return rows


def writer(tracing: Any) -> ResultWriter:
    extra = {"tracing": tracing} if tracing is not None else {}
    publisher: Any = None  # never called: only `_results` runs
    return ResultWriter(
        publisher, Assignment(), Metrics(), output_topic="results", dlq_topic="", **extra
    )


def best_us_per_record(run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        began = time.perf_counter()
        for _ in range(ROUNDS):
            run()
        best = min(best, time.perf_counter() - began)
    return best / (ROUNDS * SLICE) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--off", action="store_true", help="measure tracing off only")
    args = parser.parse_args()
    rows = chunk()
    off = writer(None)
    try:
        off._results(iter(rows[:1]), "b")
        shaped: Sequence[Any] = rows
    except AttributeError:  # a tree whose writer takes one row per record
        shaped = [(uuid, resolution, recs[0]) for uuid, resolution, recs in rows]
    cost = best_us_per_record(lambda: off._results(iter(shaped), "b"))
    print(f"tracing off: {cost:.2f} µs/record")
    if args.off or "tracing" not in inspect.signature(ResultWriter).parameters:
        return

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from streamstop.tracing.otlp import Tracing

    class Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Nowhere(), max_queue_size=1 << 20))
    on = writer(Tracing(provider))
    loop_cost = best_us_per_record(lambda: on._results(iter(rows), "b"))
    print(f"tracing on, event loop: {loop_cost:.2f} µs/record")
    provider.shutdown()

    kept = InMemorySpanExporter()
    memory = TracerProvider()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    memory.add_span_processor(SimpleSpanProcessor(kept))
    writer(Tracing(memory))._results(iter(rows), "b")
    spans = kept.get_finished_spans()
    encode = best_us_per_record(lambda: encode_spans(spans).SerializeToString())
    print(f"tracing on, exporter thread (OTLP encoding): {encode:.2f} µs/record")


if __name__ == "__main__":
    main()

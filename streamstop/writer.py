"""Result events and DLQ copies: built from resolutions, published, their records done.

Every result, whether the API answered it or it was answered locally (invalid, expired,
undecodable), is built by the one builder in `core/results.py` here, published through
the publisher, and only then are its records done (so their offsets may be committed).
Results leave in slices of `PUBLISH_SLICE` uuids, oldest batch first, with at most
`MAX_SLICES_IN_FLIGHT` slices built and not yet acknowledged over every batch: that bounds
their memory whatever the number of batches answered at once. Records of a revoked
partition get no result from here. This module never commits and never calls the API.

Under `exactly_once` (`TransactionalWriter`) nothing is published here: each record's
decision (and DLQ copy) waits in its partition's sink, and its result is built when a
transaction takes it (so a result held back behind an unresolved record costs little
memory), keeping the time it was decided.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import structlog

from streamstop.core.batcher import Batch
from streamstop.core.fit import Kind
from streamstop.core.results import Resolution, ResultValues, Status, format_timestamp
from streamstop.metrics import Metrics
from streamstop.partitions import Assignment, Partition, Pending, Phase
from streamstop.permits import PrioritySemaphore
from streamstop.publisher import OutMessage, Publisher

if TYPE_CHECKING:
    from streamstop.tracing.otlp import Tracing

log = structlog.get_logger("streamstop.writer")

PUBLISH_SLICE = 1000  # uuids turned into results and sent at a time
MAX_SLICES_IN_FLIGHT = 4
DLQ_MAX_VALUE_BYTES = 512 * 1024


# One OutMessage per result, made as a tuple: a NamedTuple's own `__new__` is a Python
# function, as costly as building the result's value.
_message = cast(
    Callable[
        [tuple[str, bytes | None, bytes, Sequence[tuple[str, bytes]], Kind, Partition]], OutMessage
    ],
    functools.partial(tuple.__new__, OutMessage),
)


class LocalAnswer(NamedTuple):
    """A record answered without the API: invalid, expired or undecodable input, with
    the DLQ copy of an invalid one when the DLQ is on (never the whole raw record)."""

    rec: Pending
    uuid: str | None
    resolution: Resolution
    dlq: OutMessage | None


class Undecodable(NamedTuple):
    """Stands in for a record aiokafka could not decode, for its DLQ copy."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = b""
    headers: Sequence[tuple[str, bytes]] = ()


class Results(NamedTuple):
    """Messages ready to publish, the records they finish, their count by status."""

    messages: list[OutMessage]
    recs: list[Pending]
    statuses: collections.Counter[str]


class ResultWriter:
    """Publishes results (and DLQ copies) and marks their records done."""

    def __init__(
        self,
        publisher: Publisher | None,
        assignment: Assignment,
        metrics: Metrics,
        *,
        output_topic: str,
        dlq_topic: str,
        tracing: Tracing | None = None,
    ) -> None:
        self._publisher = publisher
        self._tracing = tracing
        self._assignment = assignment
        self._metrics = metrics
        self._output = output_topic
        self._dlq = dlq_topic
        # Oldest batch (by dispatch) first: batches answered together finish one after
        # the other, not all at the end, each holding its bookkeeping until then.
        self._slices = PrioritySemaphore(MAX_SLICES_IN_FLIGHT)
        self.held_bytes = 0  # of DLQ copies built and not yet acknowledged

    async def write_answers(
        self, answers: dict[str, Resolution], batch: Batch[Pending], batch_id: str, seq: int
    ) -> None:
        """Publish the results of `answers` for every record of `batch` waiting for them,
        slice by slice in request order, so the oldest records reach Kafka first. The
        next slice is built while the previous one is on its way."""
        items = iter(answers.items())
        async with asyncio.TaskGroup() as group:
            previous: asyncio.Task[None] | None = None
            while chunk := list(itertools.islice(items, PUBLISH_SLICE)):
                await self._slices.acquire(seq)
                try:
                    waiting = ((u, res, batch.records_for(u)) for u, res in chunk)
                    results = self._results(waiting, batch_id)
                except BaseException:
                    self._slices.release()
                    raise
                sending = group.create_task(self._publish(results, batch, chunk))
                # Released however the task ends, even cancelled before it started.
                sending.add_done_callback(self._release_slice)
                if previous is not None:
                    await asyncio.wait([previous])  # its failure is the group's to raise
                previous = sending

    async def write_local(self, answers: Sequence[LocalAnswer]) -> None:
        """Publish the results (and DLQ copies) of records answered without the API."""
        results = self._results(((a.uuid, a.resolution, (a.rec,)) for a in answers), None)
        copies = [a.dlq for a in answers if a.dlq is not None and not a.rec.part.revoked]
        results.messages.extend(copies)
        try:
            await self._publish(results, None, ())
        finally:
            self.held_bytes -= sum(_size(answer.dlq) for answer in answers)
        self._metrics.invalid_records.inc(results.statuses[Status.INVALID])
        self._metrics.dlq_records.inc(len(copies))

    def dlq_copy(self, raw: Any, reason: str, part: Partition) -> OutMessage | None:
        """The DLQ copy of an invalid record (None when the DLQ is off): the record as it
        came (a null value stays null), its headers plus why and where from; a value
        over DLQ_MAX_VALUE_BYTES is cut and marked. Built when the record is taken in,
        so only what the copy needs is held until it is acknowledged (counted in
        `held_bytes`, which the consumer's backpressure watches)."""
        if not self._dlq:
            return None
        value: bytes | None = raw.value
        headers = [
            *raw.headers,
            ("streamstop-error", reason.encode()),
            ("streamstop-source", f"{raw.topic}/{raw.partition}/{raw.offset}".encode()),
        ]
        if value is not None and len(value) > DLQ_MAX_VALUE_BYTES:
            value = value[:DLQ_MAX_VALUE_BYTES]
            headers.append(("streamstop-truncated", b"true"))
        copy = OutMessage(self._dlq, raw.key, value, headers, Kind.DLQ, part)
        self.held_bytes += _size(copy)
        return copy

    def _results(
        self,
        answered: Iterable[tuple[str | None, Resolution, Sequence[Pending]]],
        batch_id: str | None,
        completed: str | None = None,
    ) -> Results:
        """Result events for each `(uuid, resolution, records waiting for it)`, decided at
        `completed` (now unless given); none for a record of a revoked partition. Per uuid
        what can be, per record only the rest."""
        values = ResultValues(batch_id, completed or format_timestamp(time.time()))
        # Enum members as locals: Python 3.11 looks a member up through EnumType.__getattr__.
        output, result, revoked = self._output, Kind.RESULT, Phase.REVOKED
        messages: list[OutMessage] = []
        recs: list[Pending] = []
        statuses: collections.Counter[str] = collections.Counter()
        for uuid, resolution, waiting in answered:
            if not waiting and batch_id is not None:  # answered twice, or never asked: a bug
                log.error("answer_without_records", batch_id=batch_id)
            key = uuid.encode() if uuid is not None else None
            before = len(recs)
            for rec in waiting:
                part = rec.part
                if part.phase is revoked:
                    continue
                value = values.value(
                    uuid, resolution, rec.request_id, part.tp, rec.offset, rec.received.text
                )
                messages.append(_message((output, key, value, rec.headers, result, part)))
                recs.append(rec)
            statuses[resolution.status] += len(recs) - before
        if self._tracing is not None:  # per slice: results continue their inputs' traces
            self._tracing.results(messages, recs, batch_id)
        return Results(messages, recs, statuses)

    async def _publish(
        self, results: Results, batch: Batch[Pending] | None, answered: Iterable[tuple[str, Any]]
    ) -> None:
        messages, recs, statuses = results
        assert self._publisher is not None, "exactly_once publishes in transactions"
        await self._publisher.publish(messages)
        self._assignment.records_done(recs)
        if recs:
            # One observation per acknowledged group (its oldest record), not per
            # record: the histogram is for alerting on slow results.
            oldest = min(rec.received.at for rec in recs)
            self._metrics.result_latency.observe(time.time() - oldest)
        for status, count in statuses.items():
            self._metrics.results.labels(status=status).inc(count)
        if batch is not None:
            # Let go of the finished records now, not when the whole batch is: a batch
            # lives until its last slice is published, and the consumer refills the room.
            for uuid, _ in answered:
                batch.release(uuid)

    def _release_slice(self, _: asyncio.Task[None]) -> None:
        self._slices.release()


def _size(message: OutMessage | None) -> int:
    if message is None:
        return 0
    key, value = message.key or b"", message.value or b""
    return len(key) + len(value) + sum(len(name) + len(data) for name, data in message.headers)


class Decided(NamedTuple):
    """A record's decision, waiting in its partition's sink for a transaction (the
    result is built from it then); with its DLQ copy, if any."""

    uuid: str | None
    resolution: Resolution
    rec: Pending
    batch_id: str | None
    completed: str
    dlq_copy: OutMessage | None


class TransactionalWriter(ResultWriter):
    """`exactly_once`: hands each record's decision to its partition's sink, and builds
    results when a transaction takes them."""

    def __init__(
        self,
        assignment: Assignment,
        metrics: Metrics,
        *,
        output_topic: str,
        dlq_topic: str,
        tracing: Tracing | None = None,
    ) -> None:
        super().__init__(
            None,
            assignment,
            metrics,
            output_topic=output_topic,
            dlq_topic=dlq_topic,
            tracing=tracing,
        )

    async def write_answers(
        self, answers: dict[str, Resolution], batch: Batch[Pending], batch_id: str, seq: int
    ) -> None:
        """Every record of `batch` waiting for `answers` is decided."""
        completed = format_timestamp(time.time())
        for uuid, resolution in answers.items():
            waiting = batch.records_for(uuid)
            if not waiting:  # answered twice, or never asked: a bug, not a record
                log.error("answer_without_records", batch_id=batch_id)
            for rec in waiting:
                self._decided(Decided(uuid, resolution, rec, batch_id, completed, None))
            batch.release(uuid)
        self._assignment.progress.set()

    async def write_local(self, answers: Sequence[LocalAnswer]) -> None:
        """Records answered without the API are decided, with their DLQ copies."""
        completed = format_timestamp(time.time())
        invalid = copies = 0
        for answer in answers:
            invalid += answer.resolution.status is Status.INVALID
            copies += answer.dlq is not None
            self._decided(
                Decided(answer.uuid, answer.resolution, answer.rec, None, completed, answer.dlq)
            )
        self._metrics.invalid_records.inc(invalid)
        self._metrics.dlq_records.inc(copies)
        self._assignment.progress.set()

    def _decided(self, decided: Decided) -> None:
        part = decided.rec.part
        if part.sink is not None and not part.revoked:
            part.sink.hold(decided)
        else:
            self.let_go([decided])

    def let_go(self, decisions: Iterable[Decided]) -> None:
        """`decisions` left their sink (committed, or dropped with their partition): their
        DLQ copies no longer count in `held_bytes`."""
        self.held_bytes -= sum(_size(decided.dlq_copy) for decided in decisions)

    def build(self, decisions: Sequence[Decided]) -> Results:
        """The result events (and DLQ copies) of `decisions`, as decided."""
        Run = list[tuple[str | None, Resolution, Sequence[Pending]]]
        runs: dict[tuple[str | None, str], Run] = {}
        copies: list[OutMessage] = []
        for decided in decisions:
            runs.setdefault((decided.batch_id, decided.completed), []).append(
                (decided.uuid, decided.resolution, (decided.rec,))
            )
            if decided.dlq_copy is not None:
                copies.append(decided.dlq_copy)
        messages: list[OutMessage] = []
        recs: list[Pending] = []
        statuses: collections.Counter[str] = collections.Counter()
        for (batch_id, completed), answered in runs.items():
            built = self._results(answered, batch_id, completed)
            messages += built.messages
            recs += built.recs
            statuses += built.statuses
        messages += copies
        return Results(messages, recs, statuses)

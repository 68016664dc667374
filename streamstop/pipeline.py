"""The data path: consume → decode → batch → stop → publish → commit.

One consume loop that never stops polling (backpressure is `pause()`, not "stop calling
getmany"), one task per batch, and a committer. A record is done when its result (and
DLQ copy) is acknowledged; offsets are committed per partition through the offset
tracker, so nothing is committed past an unfinished record.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import uuid as uuidlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamstop.config import Settings
from streamstop.core.batcher import Batch, Batcher
from streamstop.core.decode import Invalid, decode_value
from streamstop.core.offsets import OffsetTracker
from streamstop.core.results import Status, build_result, format_timestamp
from streamstop.metrics import Metrics
from streamstop.permits import PrioritySemaphore
from streamstop.publisher import OutMessage, Publisher
from streamstop.stopper import Resolution, Stopper

log = structlog.get_logger("streamstop.pipeline")

COMMIT_INTERVAL_S = 0.25
COMMIT_TIMEOUT_S = 10.0
MIN_COMMIT_TIMEOUT_S = 1.0
MAX_POLL_TIMEOUT_S = 0.1
MAX_RECORDS_PER_POLL = 5_000
RESUME_FRACTION = 0.75
DLQ_MAX_VALUE_BYTES = 512 * 1024
PUBLISH_SLICE = 1000  # uuids turned into results and sent at a time
MAX_SLICES_IN_FLIGHT = 4
EXPIRED_REASON = "older than batch.max_record_age_s"
UNDECODABLE_REASON = "record cannot be decoded, nor the rest of its batch (a header key not UTF-8?)"
PROBE_TIMEOUT_S = 5.0
POSITION_TIMEOUT_S = 0.5
FIND_CHUNK = 500
MAX_UNDECODABLE_MISSES = 3
Headers = Sequence[tuple[str, bytes]]


class PartitionState:
    """One assigned partition. A new object per assignment: work finishing after the
    partition was revoked updates an orphan and can never be committed."""

    __slots__ = ("active", "committed", "draining", "next_offset", "tp", "tracker")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.tracker = OffsetTracker()
        self.active = True
        self.draining = False
        self.committed: int | None = None
        self.next_offset: int | None = None  # after the last record taken in


class Undecodable(NamedTuple):
    """Stands in for a record aiokafka could not decode, for its DLQ copy."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes = b""
    headers: Sequence[tuple[str, bytes]] = ()


class Rec:
    """What a pending record keeps for its result: never the raw value."""

    __slots__ = ("headers", "offset", "part", "received", "received_at", "request_id")

    def __init__(
        self,
        part: PartitionState,
        offset: int,
        headers: Headers,
        request_id: str | None,
        received_at: float,
        received: str,
    ) -> None:
        self.part = part
        self.offset = offset
        self.headers = headers
        self.request_id = request_id
        self.received_at = received_at
        self.received = received  # received_at, formatted for the result


# A record answered without the API: (record, status, reason, raw record for the DLQ, uuid).
LocalAnswer = tuple[Rec, Status, str, Any, str | None]
# Results ready to publish: messages, the records they finish, counts by status.
Done = tuple[list["OutMessage"], list[Rec], "collections.Counter[str]"]


class Pipeline(ConsumerRebalanceListener):  # type: ignore[misc]
    """Owns the consumer loop, batch tasks and commits."""

    def __init__(
        self,
        settings: Settings,
        consumer: Any,
        publisher: Publisher,
        stopper: Stopper,
        metrics: Metrics,
    ) -> None:
        self._consumer = consumer
        self._publisher = publisher
        self._stopper = stopper
        self._metrics = metrics
        self._input = settings.kafka.input_topic
        self._output = settings.kafka.output_topic
        self._dlq = settings.kafka.dlq_topic
        self._max_pending = settings.batch.max_pending
        self._max_age_ms = settings.batch.max_record_age_s * 1000.0
        self._revoke_timeout_s = settings.lifecycle.revoke_timeout_s
        self._offset_reset = settings.kafka.auto_offset_reset
        self._undecodable_misses = 0
        self._unpositioned: set[TopicPartition] = set()
        self._batcher: Batcher[Rec] = Batcher(
            settings.batch.max_size, settings.batch.max_wait_ms / 1000.0
        )
        self._parts: dict[TopicPartition, PartitionState] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Results built and not yet acknowledged, over every batch: bounds their memory
        # (and the producer's buffers) whatever the number of batches answered at once.
        # Oldest batch (by dispatch) first: batches answered together finish one after
        # the other, not all at the end, each holding its bookkeeping until then.
        self._slices = PrioritySemaphore(MAX_SLICES_IN_FLIGHT)
        self._batch_seq = itertools.count()
        self._commit_lock = asyncio.Lock()
        self._progress = asyncio.Event()
        self._paused = False
        self._stopping = False
        self.fatal: BaseException | None = None
        self.failed = asyncio.Event()
        self.joined = False
        self.heartbeat = time.monotonic()

    # -- consuming ---------------------------------------------------------------------

    def uncommitted(self) -> int:
        """Consumed records the commit point holds back, over every partition we still
        track: from each one's first unfinished record on, finished ones after it too.
        This is what `batch.max_pending` caps: what a restart would process again. (A
        record stuck in retries therefore pauses the consumer once the window behind it
        is full, until it ends by `retry.deadline_s`.)"""
        return sum(part.tracker.window for part in self._parts.values())

    async def consume(self) -> None:
        """Poll until `stop_consuming`; never blocks on downstream work."""
        while not self._stopping:
            self.heartbeat = time.monotonic()
            if self._unpositioned:
                await self._learn_positions()
            uncommitted = self.uncommitted()
            self._metrics.pending.set(uncommitted)
            room = self._max_pending - uncommitted
            self._apply_backpressure(room)
            try:
                fetched = await self._consumer.getmany(
                    timeout_ms=int(self._poll_timeout() * 1000),
                    max_records=max(1, min(room, MAX_RECORDS_PER_POLL)),
                )
            except KafkaError as exc:
                log.warning("poll_failed", error=repr(exc))
                await asyncio.sleep(MAX_POLL_TIMEOUT_S)
                continue
            except ValueError as exc:
                # aiokafka could not decode a record (a header key that is not UTF-8,
                # say) and dropped the whole poll. Put the partitions back, find the
                # record, answer it `invalid` and go on past it.
                log.error("undecodable_record", error=repr(exc))
                try:
                    await self._skip_undecodable()
                except KafkaError as interrupted:  # say, a rebalance took the partition
                    log.warning("undecodable_record_search_failed", error=repr(interrupted))
                continue
            if fetched and not self._stopping:
                self._undecodable_misses = 0
                self._take(fetched)
            due = self._batcher.take_due(time.monotonic())
            if due is not None:
                self._dispatch(due)

    def _poll_timeout(self) -> float:
        deadline = self._batcher.deadline()
        if deadline is None:
            return MAX_POLL_TIMEOUT_S
        return min(MAX_POLL_TIMEOUT_S, max(0.0, deadline - time.monotonic()))

    def _take(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        """Decode a poll's records: valid ones into the batcher, the rest answered now."""
        wall = time.time()
        received = format_timestamp(wall)
        now = time.monotonic()
        max_age_ms = self._max_age_ms
        local: list[LocalAnswer] = []
        add = self._batcher.add
        count = 0
        for tp, records in fetched.items():
            part = self._parts.get(tp)
            if part is None or part.draining:
                continue  # revoked meanwhile: not tracked, so redelivered to the new owner
            track = part.tracker.add
            count += len(records)
            if records:
                part.next_offset = records[-1].offset + 1
            for record in records:
                track(record.offset)
                decoded = decode_value(record.value)
                if isinstance(decoded, Invalid):
                    rec = Rec(part, record.offset, record.headers, None, wall, received)
                    local.append((rec, Status.INVALID, decoded.reason, record, None))
                    continue
                rec = Rec(part, record.offset, record.headers, decoded.request_id, wall, received)
                if max_age_ms and wall * 1000.0 - record.timestamp > max_age_ms:
                    local.append((rec, Status.EXPIRED, EXPIRED_REASON, None, decoded.uuid))
                    continue
                full = add(decoded.uuid, rec, now)
                if full is not None:
                    self._dispatch(full)
        self._metrics.records_consumed.inc(count)
        if local:
            self._spawn(self._publish_local(local))

    async def _learn_positions(self) -> None:
        """Where each newly assigned partition starts (committed offset or reset): a poll
        that fails on an undecodable record is rewound there if nothing was taken yet."""
        for tp in list(self._unpositioned):
            part = self._parts.get(tp)
            try:
                if part is not None and part.next_offset is None:
                    # Bounded: position() waits as long as the coordinator is away, and
                    # the loop must keep polling meanwhile.
                    part.next_offset = await asyncio.wait_for(
                        self._consumer.position(tp), POSITION_TIMEOUT_S
                    )
            except (KafkaError, TimeoutError):
                return  # not assigned any more, or no answer: the next turn tries again
            self._unpositioned.discard(tp)

    async def _skip_undecodable(self) -> None:
        """After a poll failed on a record aiokafka cannot decode: rewind every partition
        to just after the records we took (the failed poll moved positions past records
        it never returned), then find the culprit and answer it without its content."""
        consumer = self._consumer
        self._undecodable_misses += 1
        if self._undecodable_misses > MAX_UNDECODABLE_MISSES:
            raise RuntimeError("a poll keeps failing on a record that cannot be found")
        parts = [part for part in self._parts.values() if part.active and not part.draining]
        for part in parts:
            await self._rewind(part)
        if self._paused:
            consumer.resume(*consumer.assignment())  # probing needs every partition
        try:
            for part in parts:
                start: int = await consumer.position(part.tp)
                found = await self._find_undecodable(part.tp, start)
                if found is not None:
                    first, end = found
                    self._undecodable_misses = 0
                    await self._take_before(part.tp, start, first)
                    self._answer_undecodable(part, first, end)
                    consumer.seek(part.tp, end)
                    part.next_offset = end
                    return
            log.warning("undecodable_record_not_found")
        finally:
            if self._paused:
                consumer.pause(*consumer.assignment())

    async def _rewind(self, part: PartitionState) -> None:
        consumer = self._consumer
        if part.next_offset is not None:
            consumer.seek(part.tp, part.next_offset)
            return
        # The start was not learnt yet (rare: the very first poll failed).
        committed = await consumer.committed(part.tp)
        if committed is not None:
            consumer.seek(part.tp, committed)
        elif self._offset_reset == "earliest":
            await consumer.seek_to_beginning(part.tp)
        # else `latest` with nothing committed: where the group started is not known.

    async def _find_undecodable(self, tp: TopicPartition, start: int) -> tuple[int, int] | None:
        """The offsets [first, end) of `tp` (from `start`) that aiokafka cannot read,
        or None when the records the failed poll could have read all decode.

        aiokafka decodes a whole record batch before it skips to the fetch position, so
        one bad record makes every offset of its batch unreadable: `first` is where
        reading one record starts failing, `end` the first offset that reads again.
        Records read while looking are read again afterwards (the caller seeks)."""
        consumer = self._consumer
        # A failed poll reads at most MAX_RECORDS_PER_POLL records of a partition: look
        # no further. In chunks, then one record at a time from the failing chunk.
        low = await self._failing_read(tp, start, FIND_CHUNK, MAX_RECORDS_PER_POLL)
        if low is not None:
            low = await self._failing_read(tp, low, 1, FIND_CHUNK)
        if low is None:
            consumer.seek(tp, start)
            return None
        first = low
        # The first offset past `first` that reads again (offsets may have gaps): grow
        # the step, then bisect.
        step = 1
        while await self._failing_read(tp, low + step, 1, 1) is not None:
            low, step = low + step, step * 2
        high = low + step
        while high - low > 1:
            middle = (low + high) // 2
            if await self._failing_read(tp, middle, 1, 1) is None:
                high = middle
            else:
                low = middle
        return first, high

    async def _take_before(self, tp: TopicPartition, start: int, stop: int) -> None:
        """Take in the records of `tp` from `start` up to `stop`, where the unreadable
        offsets begin (every record before it decodes)."""
        consumer = self._consumer
        consumer.seek(tp, start)
        chunk = FIND_CHUNK
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while (position := await consumer.position(tp)) < stop:
            if time.monotonic() > deadline:
                raise RuntimeError(f"records of {tp} before offset {stop} cannot be read")
            try:
                fetched = await consumer.getmany(
                    tp, timeout_ms=100, max_records=min(chunk, stop - position)
                )
            except ValueError:
                if chunk == 1:
                    return  # only gaps were left before the unreadable offsets
                # Offsets had gaps, so the chunk reached the unreadable ones and the
                # failed read dropped its records: go back, one record at a time.
                consumer.seek(tp, position)
                chunk = 1
                continue
            if fetched:
                self._take(fetched)
                deadline = time.monotonic() + PROBE_TIMEOUT_S

    async def _failing_read(
        self, tp: TopicPartition, offset: int, chunk: int, limit: int
    ) -> int | None:
        """Read up to `limit` records of `tp` from `offset`, `chunk` at a time. None if
        they all decode (or the partition ends); else the offset the failing read
        started from (the culprit is among its records)."""
        consumer = self._consumer
        consumer.seek(tp, offset)
        after = offset
        read = 0
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while read < limit and time.monotonic() < deadline:
            try:
                fetched = await consumer.getmany(
                    tp, timeout_ms=100, max_records=min(chunk, limit - read)
                )
            except ValueError:
                return after
            records = fetched.get(tp)
            if records:
                read += len(records)
                after = records[-1].offset + 1
                deadline = time.monotonic() + PROBE_TIMEOUT_S
            elif await consumer.position(tp) >= (consumer.highwater(tp) or 0):
                return None  # read to the end
        return None

    def _answer_undecodable(self, part: PartitionState, first: int, end: int) -> None:
        """Answer offsets [first, end) `invalid`: the records aiokafka cannot read (an
        offset in that range that holds no record, a gap, is answered too)."""
        wall = time.time()
        received = format_timestamp(wall)
        local: list[LocalAnswer] = []
        for offset in range(first, end):
            part.tracker.add(offset)
            rec = Rec(part, offset, (), None, wall, received)
            record = Undecodable(part.tp.topic, part.tp.partition, offset)
            local.append((rec, Status.INVALID, UNDECODABLE_REASON, record, None))
        self._metrics.records_consumed.inc(len(local))
        self._spawn(self._publish_local(local))
        log.warning(
            "undecodable_record_answered",
            partition=f"{part.tp.topic}/{part.tp.partition}",
            offsets=f"{first}-{end - 1}",
        )

    def _apply_backpressure(self, room: int) -> None:
        if not self._paused and room <= 0:
            self._paused = True
            self._consumer.pause(*self._consumer.assignment())
            self._metrics.paused_partitions.set(len(self._consumer.assignment()))
            log.info("consumer_paused", pending=self._max_pending - room)
        elif self._paused and room >= self._max_pending * (1 - RESUME_FRACTION):
            self._paused = False
            self._consumer.resume(*self._consumer.assignment())
            self._metrics.paused_partitions.set(0)
            log.info("consumer_resumed", pending=self._max_pending - room)

    # -- batches -------------------------------------------------------------------------

    def _dispatch(self, batch: Batch[Rec]) -> None:
        self._metrics.buffer_time.observe(time.monotonic() - batch.opened_at)
        self._spawn(self._run_batch(batch, str(uuidlib.uuid4()), next(self._batch_seq)))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._progress.set()
        if task.cancelled():
            return
        exc = task.exception()
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # a failed publish slice: report the error itself
        if exc is not None and self.fatal is None:
            self.fatal = exc
            log.error("fatal_error", error=repr(exc))
            self.failed.set()

    async def _run_batch(self, batch: Batch[Rec], batch_id: str, seq: int) -> None:
        refs = batch.refs
        output = self._output

        def results(answers: list[tuple[str, Resolution]]) -> Done:
            completed = format_timestamp(time.time())
            messages: list[OutMessage] = []
            recs: list[Rec] = []
            statuses: collections.Counter[str] = collections.Counter()
            for uuid, res in answers:
                key = uuid.encode()
                waiting = refs(uuid)
                if not waiting:  # answered twice, or never asked: a bug, not a record
                    log.error("answer_without_records", batch_id=batch_id)
                for rec in waiting:
                    part = rec.part
                    value = build_result(
                        uuid=uuid,
                        status=res.status,
                        code=res.code,
                        error=res.error,
                        request_id=rec.request_id,
                        topic=part.tp.topic,
                        partition=part.tp.partition,
                        offset=rec.offset,
                        batch_id=batch_id,
                        attempts=res.attempts,
                        received_at=rec.received,
                        completed_at=completed,
                    )
                    messages.append(OutMessage(output, key, value, rec.headers))
                    recs.append(rec)
                statuses[res.status] += len(waiting)
            return messages, recs, statuses

        async def publish(answers: dict[str, Resolution]) -> None:
            # Slice by slice, in request order, so the oldest records (first in the batch)
            # reach Kafka first. At most two slices are out at once: the next one is built
            # while the previous one is on its way, and building never starves the event
            # loop of the acks (and polls) it has to process meanwhile.
            items = iter(answers.items())
            async with asyncio.TaskGroup() as group:
                previous: asyncio.Task[None] | None = None
                while chunk := list(itertools.islice(items, PUBLISH_SLICE)):
                    await self._slices.acquire(seq)
                    try:
                        done = results(chunk)
                    except BaseException:
                        self._slices.release()
                        raise
                    sending = group.create_task(self._publish(done, chunk, batch))
                    # Released however the task ends, even cancelled before it started.
                    sending.add_done_callback(self._release_slice)
                    if previous is not None:
                        await asyncio.wait([previous])  # its failure is the group's to raise
                    previous = sending

        left = await self._stopper.resolve(batch.uuids, batch_id, publish, self.is_stopping)
        if left:
            log.info("batch_left_unfinished", batch_id=batch_id, uuids=len(left))

    async def _publish(
        self,
        done: Done,
        answered: list[tuple[str, Resolution]],
        batch: Batch[Rec],
    ) -> None:
        messages, recs, statuses = done
        await self._publisher.publish(messages)
        self._done(recs, statuses)
        # Let go of the finished records now, not when the whole batch is: a batch
        # lives until its last slice is published, and the consumer refills the room.
        for uuid, _ in answered:
            batch.release(uuid)

    def _release_slice(self, _: asyncio.Task[None]) -> None:
        self._slices.release()

    async def _publish_local(self, local: list[LocalAnswer]) -> None:
        """Results (and DLQ copies) for records answered without the API."""
        completed = format_timestamp(time.time())
        messages: list[OutMessage] = []
        statuses: collections.Counter[str] = collections.Counter()
        for rec, status, reason, record, uuid in local:
            part = rec.part
            messages.append(
                OutMessage(
                    self._output,
                    uuid.encode() if uuid else None,
                    build_result(
                        uuid=uuid,
                        status=status,
                        code=None,
                        error=reason,
                        request_id=rec.request_id,
                        topic=part.tp.topic,
                        partition=part.tp.partition,
                        offset=rec.offset,
                        batch_id=None,
                        attempts=0,
                        received_at=rec.received,
                        completed_at=completed,
                    ),
                    rec.headers,
                )
            )
            statuses[status] += 1
            if status is Status.INVALID and self._dlq:
                messages.append(self._dlq_copy(record, reason))
        invalid = statuses[Status.INVALID]
        await self._publisher.publish(messages)
        self._metrics.invalid_records.inc(invalid)
        if self._dlq:
            self._metrics.dlq_records.inc(invalid)
        self._done([rec for rec, *_ in local], statuses)

    def _dlq_copy(self, record: Any, reason: str) -> OutMessage:
        raw: bytes = record.value or b""
        headers = [
            *record.headers,
            ("streamstop-error", reason.encode()),
            ("streamstop-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        if len(raw) > DLQ_MAX_VALUE_BYTES:
            raw = raw[:DLQ_MAX_VALUE_BYTES]
            headers.append(("streamstop-truncated", b"true"))
        return OutMessage(self._dlq, record.key, raw, headers)

    def _done(self, recs: list[Rec], statuses: collections.Counter[str]) -> None:
        oldest = float("inf")
        for rec in recs:
            if rec.part.active:
                rec.part.tracker.done(rec.offset)
            oldest = min(oldest, rec.received_at)
        if recs:
            # One observation per acknowledged group (its oldest record), not per record:
            # the histogram is for alerting on slow results, and this keeps it off the hot path.
            self._metrics.result_latency.observe(time.time() - oldest)
        for status, count in statuses.items():
            self._metrics.results.labels(status=status).inc(count)
        self._progress.set()

    def is_stopping(self) -> bool:
        """True once shutdown began: no new retries start."""
        return self._stopping

    # -- commits -------------------------------------------------------------------------

    async def commit_periodically(self) -> None:
        """Commit what is done every COMMIT_INTERVAL_S, until cancelled."""
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self.commit_done()

    async def commit_done(
        self, parts: Sequence[PartitionState] | None = None, timeout_s: float = COMMIT_TIMEOUT_S
    ) -> bool:
        """Commit each partition's fully-done prefix; False if Kafka refused or did not
        answer within `timeout_s` (aiokafka retries a commit for as long as the
        coordinator is unreachable, which would hold shutdown and revokes hostage).
        Waiting for another commit in progress counts against the same budget."""
        began = time.monotonic()
        try:
            await asyncio.wait_for(self._commit_lock.acquire(), timeout_s)
        except TimeoutError:
            log.warning("commit_timed_out", timeout_s=timeout_s, waiting="another commit")
            return False
        try:
            return await self._commit(parts, max(0.1, timeout_s - (time.monotonic() - began)))
        finally:
            self._commit_lock.release()

    async def _commit(self, parts: Sequence[PartitionState] | None, timeout_s: float) -> bool:
        chosen = list(self._parts.values()) if parts is None else parts
        offsets: dict[TopicPartition, int] = {}
        for part in chosen:
            point = part.tracker.commit_point()
            if point is not None:
                offsets[part.tp] = point
        if offsets:
            try:
                await asyncio.wait_for(self._consumer.commit(offsets), timeout_s)
            except KafkaError as exc:
                log.warning("commit_failed", error=repr(exc), partitions=len(offsets))
                return False
            except TimeoutError:
                log.warning("commit_timed_out", timeout_s=timeout_s, partitions=len(offsets))
                return False
            self._metrics.commits.inc()
            for part in chosen:
                if part.tp in offsets:
                    part.tracker.mark_committed(offsets[part.tp])
                    part.committed = offsets[part.tp]
        self._update_lag(chosen)
        return True

    def _update_lag(self, parts: Sequence[PartitionState]) -> None:
        for part in parts:
            highwater = self._consumer.highwater(part.tp)
            if highwater is not None and part.committed is not None:
                self._metrics.consumer_lag.labels(
                    topic=part.tp.topic, partition=str(part.tp.partition)
                ).set(max(0, highwater - part.committed))

    # -- rebalancing and shutdown --------------------------------------------------------

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """New generation: fresh state per partition; backpressure re-applied."""
        for tp in assigned:
            self._parts[tp] = PartitionState(tp)
        self._unpositioned = set(assigned)
        self.joined = True
        if self._paused and assigned:
            self._consumer.pause(*assigned)
        log.info("partitions_assigned", partitions=_names(assigned))

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Drain revoked partitions within `lifecycle.revoke_timeout_s` and commit them
        before they are released."""
        self.joined = False
        parts = [self._parts[tp] for tp in revoked if tp in self._parts]
        if not parts:
            return
        began = time.monotonic()
        deadline = began + self._revoke_timeout_s
        drained = await self._drain(parts, deadline)
        await self.commit_done(parts, _commit_budget(deadline))
        left = sum(part.tracker.pending for part in parts)
        for part in parts:
            part.active = False
            self._parts.pop(part.tp, None)
            self._metrics.forget_partition(part.tp.topic, part.tp.partition)
        log.info(
            "partitions_revoked",
            partitions=_names(revoked),
            drained=drained,
            left_uncommitted=left,
            duration_ms=round((time.monotonic() - began) * 1000),
        )

    async def _drain(self, parts: Sequence[PartitionState], deadline: float) -> bool:
        """Send what is buffered for `parts` and wait until they are done or the deadline."""
        for part in parts:
            part.draining = True
        batch = self._batcher.flush()
        if batch is not None:
            self._dispatch(batch)
        while self._tasks and any(part.tracker.pending for part in parts):
            if self.fatal is not None:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                return False
        # No task left: drained only if that finished every record (tasks that stopped
        # at shutdown leave theirs unfinished).
        return not any(part.tracker.pending for part in parts)

    def stop_consuming(self) -> None:
        """Stop fetching; batch tasks finish their current attempt and start no retry."""
        self._stopping = True
        self._stopper.stop()

    async def drain_all(self, deadline: float) -> bool:
        """Shutdown: send what is buffered, wait for in-flight work, commit what is done."""
        self.stop_consuming()
        drained = await self._drain(list(self._parts.values()), deadline)
        if self.fatal is None:
            await self.commit_done(timeout_s=_commit_budget(deadline))
        return drained

    async def cancel_tasks(self) -> None:
        """Cancel batch tasks still running (their records stay uncommitted)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _commit_budget(deadline: float) -> float:
    """Time left for a commit before `deadline`, never less than a last short try."""
    return min(COMMIT_TIMEOUT_S, max(MIN_COMMIT_TIMEOUT_S, deadline - time.monotonic()))


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)

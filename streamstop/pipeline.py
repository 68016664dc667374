"""The poll loop: consume → decode → batch → dispatch, with backpressure and supervision.

One loop that never stops polling (backpressure is `pause()`, not "stop calling
getmany"): it takes records in, answers the ones that need no API call through the
writer, hands full or due batches to a task each (stopper → writer), and watches those
tasks. Decisions live elsewhere: decoding and batching in the core, a partition's life in
`partitions.py`, commits in `committer.py`, results in `writer.py`. A record is done when
its result (and DLQ copy) is acknowledged.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
import uuid as uuidlib
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, TypeVar

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from streamstop.config import Settings
from streamstop.core.batcher import Batch, Batcher
from streamstop.core.decode import Invalid, decode_value
from streamstop.core.results import Resolution, Status, format_timestamp
from streamstop.kafkaproblems import describe_kafka_problem
from streamstop.metrics import Metrics
from streamstop.partitions import Assignment, Partition, Pending, Phase, Received
from streamstop.stopper import BatchRun, Stopper
from streamstop.undecodable import NotFound, SearchAbandoned, UndecodableSearch
from streamstop.writer import LocalAnswer, ResultWriter, Undecodable

log = structlog.get_logger("streamstop.pipeline")
T = TypeVar("T")

MAX_POLL_TIMEOUT_S = 0.1
MAX_RECORDS_PER_POLL = 5_000
RESUME_FRACTION = 0.75
POSITION_RETRY_S = 0.5
KAFKA_STEP_TIMEOUT_S = 10.0
UNDECODABLE_RETRY_S = 1.0
# DLQ copies (up to 512 KiB each) waiting for their ack pause the consumer past this.
MAX_HELD_DLQ_BYTES = 64 * 1024 * 1024
LOG_EVERY_S = 30.0
POLL_RECOVERY_S = 5.0
EXPIRED_REASON = "older than batch.max_record_age_s"
UNDECODABLE_REASON = "record cannot be decoded, nor the rest of its batch (a header key not UTF-8?)"


class BatchWork:
    """A dispatched batch: its records, its requests, and the task resolving it."""

    __slots__ = ("batch", "run", "task")

    def __init__(self, batch: Batch[Pending], run: BatchRun) -> None:
        self.batch = batch
        self.run = run
        self.task: asyncio.Task[None] | None = None

    def abandon(self, uuids: list[str]) -> None:
        """Records of a revoked partition left the batch: stop working for them, and
        end the task when no record is left at all."""
        self.run.drop(uuids)
        if not self.batch.record_count and self.task is not None:
            self.task.cancel()


class Pipeline:
    """Owns the poll loop, the batcher and the batch tasks."""

    def __init__(
        self,
        settings: Settings,
        consumer: Any,
        assignment: Assignment,
        stopper: Stopper,
        writer: ResultWriter,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._assignment = assignment
        self._stopper = stopper
        self._writer = writer
        self._metrics = metrics
        self._max_pending = settings.batch.max_pending
        self._max_age_ms = settings.batch.max_record_age_s * 1000.0
        self._offset_reset = settings.kafka.auto_offset_reset
        self._batcher: Batcher[Pending] = Batcher(
            settings.batch.max_size, settings.batch.max_wait_ms / 1000.0
        )
        self._search = UndecodableSearch(consumer, self._take, self._answer_undecodable)
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch_seq = itertools.count()
        self._paused = False
        self._shutting_down = False
        self._problem_logged = float("-inf")
        self.kafka_problem: str | None = None  # why polling fails, while it does
        self._failed_at = float("-inf")
        self.fatal: BaseException | None = None
        self.failed = asyncio.Event()
        self.heartbeat = time.monotonic()
        self.in_poll = False

    # -- consuming ---------------------------------------------------------------------

    async def consume(self) -> None:
        """Poll until shutdown; never blocks on downstream work."""
        consumer = self._consumer
        while not self._shutting_down:
            self.heartbeat = time.monotonic()
            uncommitted = self._assignment.uncommitted()
            self._metrics.pending.set(uncommitted)
            room = self._max_pending - uncommitted
            self._apply_backpressure(room)
            self.in_poll = True  # waiting on Kafka here is no sign of a stuck loop
            try:
                fetched = await consumer.getmany(
                    timeout_ms=int(self._poll_timeout() * 1000),
                    max_records=max(1, min(room, MAX_RECORDS_PER_POLL)),
                )
            except OffsetOutOfRangeError as exc:
                await self._records_lost(exc.args[0])
                continue
            except NoOffsetForPartitionError as exc:
                await self._seek_to_reset_position(exc.args[0])  # a new group starts here
                continue
            except KafkaError as exc:
                self._poll_failed(exc)
                await asyncio.sleep(MAX_POLL_TIMEOUT_S)
                continue
            except ValueError as exc:
                # aiokafka could not decode a record (a header key that is not UTF-8,
                # say) and dropped the whole poll: find it, answer it, go on past it.
                log.error("undecodable_record", error=repr(exc))
                await self._search_undecodable()
                continue
            finally:
                self.in_poll = False
            self._poll_succeeded()
            if fetched and not self._shutting_down:
                self._search.reset()
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
        received = Received(wall, format_timestamp(wall))
        now = time.monotonic()
        max_age_ms = self._max_age_ms
        local: list[LocalAnswer] = []
        add = self._batcher.add
        parts = self._assignment.parts
        count = 0
        for tp, records in fetched.items():
            part = parts.get(tp)
            if part is None or not part.consuming or not records:
                continue  # revoked meanwhile: not tracked, so redelivered to the new owner
            track = part.tracker.add
            count += len(records)
            part.position = records[-1].offset + 1
            for record in records:
                track(record.offset)
                decoded = decode_value(record.value)
                if isinstance(decoded, Invalid):
                    rec = Pending(part, record.offset, record.headers, None, received)
                    copy = self._writer.dlq_copy(record, decoded.reason, part)
                    local.append(LocalAnswer(rec, None, _answered(decoded.reason), copy))
                    continue
                rec = Pending(part, record.offset, record.headers, decoded.request_id, received)
                if max_age_ms and wall * 1000.0 - record.timestamp > max_age_ms:
                    local.append(LocalAnswer(rec, decoded.uuid, _EXPIRED, None))
                    continue
                full = add(decoded.uuid, rec, now)
                if full is not None:
                    self._dispatch(full)
        self._metrics.records_consumed.inc(count)
        if local:
            self._spawn(self._writer.write_local(local))

    def position(self, parts: list[Partition]) -> None:
        """Learn where newly assigned partitions start, in the background."""
        self._spawn(self._position(parts))

    async def _position(self, parts: list[Partition]) -> None:
        """Each partition's starting offset (committed, or the reset position for a new
        group); then it is resumed, unless backpressure holds every partition."""
        for part in parts:
            while part.phase is Phase.POSITIONING:
                try:
                    offset = await asyncio.wait_for(
                        self._consumer.position(part.tp), POSITION_RETRY_S
                    )
                except (KafkaError, TimeoutError):
                    continue  # no answer yet (or unassigned: the phase says so)
                if part.phase is not Phase.POSITIONING:
                    break
                part.positioned(offset)
                self._metrics.committed_offset.labels(
                    topic=part.tp.topic, partition=str(part.tp.partition)
                ).set(offset)
                if not self._paused:
                    self._consumer.resume(part.tp)

    async def _seek_to_reset_position(self, tp: TopicPartition) -> None:
        """Where `kafka.auto_offset_reset` says a partition without a usable offset starts."""
        if self._offset_reset == "earliest":
            await self._bounded(self._consumer.seek_to_beginning(tp))
        else:
            await self._bounded(self._consumer.seek_to_end(tp))

    async def _records_lost(self, offsets: dict[TopicPartition, int]) -> None:
        """The records at a partition's position are gone. Below the log's start they
        were deleted (retention shorter than a hold) before they got a result: counted,
        logged, and consumed from the oldest record left, whatever
        `kafka.auto_offset_reset` says (that is where a new group starts; the records
        after the deleted ones still need their results). Past the log's end the log was
        cut back (an unclean leader election): the partition starts over from its end."""
        consumer = self._consumer
        for tp, offset in offsets.items():
            ends = await self._bounded(consumer.end_offsets([tp]))
            truncated = ends is not None and offset > ends[tp]
            self._metrics.offset_resets.labels(topic=tp.topic, partition=str(tp.partition)).inc()
            log.error(
                "offset_reset",
                partition=f"{tp.topic}/{tp.partition}",
                offset=offset,
                cause="log truncated" if truncated else "records deleted",
                hint="the input topic's retention must exceed the longest hold"
                if not truncated
                else "records past the new log end were lost by the brokers",
            )
            seek = consumer.seek_to_end(tp) if truncated else consumer.seek_to_beginning(tp)
            await self._bounded(seek)
            position = await self._bounded(consumer.position(tp))
            part = self._assignment.parts.get(tp)
            if position is None or part is None or not part.consuming:
                continue  # revoked meanwhile, or no answer: the next poll meets it again
            if part.position is not None and position < part.position:
                # Offsets already taken in come again: a new life for the partition.
                self._assignment.restart(part, position)
            else:
                # What was lost is gone for good: commit past it once the rest is done.
                part.tracker.skip_to(position)
                part.position = position

    async def _bounded(self, step: Awaitable[T]) -> T | None:
        """`step`, or None when Kafka does not answer in time (it is asked again later)."""
        try:
            return await asyncio.wait_for(step, KAFKA_STEP_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:
            log.warning("kafka_step_failed", error=repr(exc))
            return None

    def _poll_failed(self, exc: Exception) -> None:
        self.kafka_problem = f"polling fails: {describe_kafka_problem(exc, self._settings)}"
        self._metrics.kafka_hold.set(1)
        now = time.monotonic()
        self._failed_at = now
        if now - self._problem_logged >= LOG_EVERY_S:
            self._problem_logged = now
            log.error("poll_failed", error=repr(exc), problem=self.kafka_problem)

    def _poll_succeeded(self) -> None:
        # A refused fetch is raised once per retry, with polls in between that simply find
        # nothing: the problem ends only after a while without one.
        if self.kafka_problem is not None and time.monotonic() - self._failed_at > POLL_RECOVERY_S:
            self.kafka_problem = None
            self._problem_logged = float("-inf")
            self._metrics.kafka_hold.set(0)
            log.info("poll_recovered")

    async def _search_undecodable(self) -> None:
        parts = [part for part in self._assignment.parts.values() if part.consuming]
        try:
            await self._search.run(parts, self._paused)
        except (KafkaError, SearchAbandoned) as interrupted:
            log.warning("undecodable_record_search_abandoned", error=repr(interrupted))
        except NotFound as stuck:
            # Not ours to fix by exiting (a restart meets the same record): a hold, the
            # search tried again a moment later.
            self._poll_failed(stuck)
            await asyncio.sleep(UNDECODABLE_RETRY_S)

    def _answer_undecodable(self, part: Partition, first: int, end: int) -> None:
        """Answer offsets [first, end) `invalid`: the records aiokafka cannot read (an
        offset in that range that holds no record, a gap, is answered too)."""
        wall = time.time()
        received = Received(wall, format_timestamp(wall))
        resolution = _answered(UNDECODABLE_REASON)
        local: list[LocalAnswer] = []
        for offset in range(first, end):
            part.tracker.add(offset)
            rec = Pending(part, offset, (), None, received)
            raw = Undecodable(part.tp.topic, part.tp.partition, offset)
            local.append(
                LocalAnswer(
                    rec, None, resolution, self._writer.dlq_copy(raw, UNDECODABLE_REASON, part)
                )
            )
        self._metrics.records_consumed.inc(len(local))
        self._spawn(self._writer.write_local(local))
        log.warning(
            "undecodable_record_answered", partition=part.name, offsets=f"{first}-{end - 1}"
        )

    def _apply_backpressure(self, room: int) -> None:
        consumer = self._consumer
        # DLQ copies held until acknowledged (a DLQ hold) count as well as records.
        if self._writer.held_bytes > MAX_HELD_DLQ_BYTES:
            room = 0
        elif self._writer.held_bytes > MAX_HELD_DLQ_BYTES // 2:
            room = min(room, 1)
        if not self._paused and room <= 0:
            self._paused = True
            consumer.pause(*consumer.assignment())
            self._metrics.paused_partitions.set(len(consumer.assignment()))
            log.info("consumer_paused", pending=self._max_pending - room)
        elif self._paused and room >= self._max_pending * (1 - RESUME_FRACTION):
            self._paused = False
            consumer.resume(*self._assignment.consuming())
            self._metrics.paused_partitions.set(0)
            log.info("consumer_resumed", pending=self._max_pending - room)

    # -- batches -------------------------------------------------------------------------

    def _dispatch(self, batch: Batch[Pending]) -> None:
        self._metrics.buffer_time.observe(time.monotonic() - batch.opened_at)
        work = BatchWork(batch, self._stopper.start(batch.uuids, str(uuidlib.uuid4())))
        work.task = self._spawn(self._run_batch(work, next(self._batch_seq)))
        self._assignment.in_flight.add(work)
        self._metrics.batches_in_flight.set(len(self._assignment.in_flight))

    async def _run_batch(self, work: BatchWork, seq: int) -> None:
        try:
            async for answers in work.run:
                await self._writer.write_answers(answers, work.batch, work.run.batch_id, seq)
            left = work.run.unresolved()
            if left:
                log.info("batch_left_unfinished", batch_id=work.run.batch_id, uuids=left)
        finally:
            self._assignment.in_flight.discard(work)
            self._metrics.batches_in_flight.set(len(self._assignment.in_flight))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._assignment.progress.set()
        if task.cancelled():
            return
        exc = task.exception()
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # a failed publish slice: report the error itself
        if exc is not None and self.fatal is None:
            self.fatal = exc
            log.error("fatal_error", error=repr(exc), exc_info=exc)
            self.failed.set()

    # -- draining and shutdown -----------------------------------------------------------

    async def drain(self, parts: Sequence[Partition], deadline: float) -> bool:
        """Send what is buffered and wait until `parts` are done or the deadline."""
        batch = self._batcher.flush()
        if batch is not None:
            self._dispatch(batch)
        assignment = self._assignment
        while self._tasks and assignment.unfinished(parts):
            remaining = deadline - time.monotonic()
            if self.fatal is not None or remaining <= 0:
                return False
            assignment.progress.clear()
            try:
                await asyncio.wait_for(assignment.progress.wait(), remaining)
            except TimeoutError:
                return False
        # No task left: drained only if that finished every record (tasks that stopped
        # at shutdown leave theirs unfinished).
        return not assignment.unfinished(parts)

    def begin_shutdown(self) -> None:
        """Stop fetching; batch tasks finish their current attempt and start no retry."""
        self._shutting_down = True
        self._stopper.begin_shutdown()

    async def drain_all(self, deadline: float) -> bool:
        """Shutdown: send what is buffered and wait for in-flight work."""
        self.begin_shutdown()
        return await self.drain(list(self._assignment.parts.values()), deadline)

    async def cancel_tasks(self) -> None:
        """Cancel batch tasks still running (their records stay uncommitted)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@functools.lru_cache(maxsize=64)
def _answered(reason: str) -> Resolution:
    """The resolution of a record answered `invalid` for `reason` (few distinct ones)."""
    return Resolution(Status.INVALID, None, reason, 0)


_EXPIRED = Resolution(Status.EXPIRED, None, EXPIRED_REASON, 0)

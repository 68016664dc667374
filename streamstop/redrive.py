"""Publishing again the cancel requests behind chosen results: the Kafka side of
`streamstop redrive` (the command, its report and exit codes are `redrive_command.py`;
the decisions are `core/redrive.py` and `core/redrivejob.py`).

1. The topics must exist (checked without creating them), and no other redrive may run in
   the redrive group (`core/redrivejob.group_for`).
2. Join that group owning every output partition, so a second redrive cannot run beside
   this one. A member joining later ends this run (its progress saved).
3. Plan from the job the group's commits record: new, resumed or refused. A new job
   records itself (window and offsets) before anything is sent.
4. Read each partition's span `read_committed`; choose, skip a source record already sent,
   publish. Offsets are done once Kafka acknowledged the requests of everything below
   them; they are committed every second, on revocation and at the end, never before.

A resumed job reads its span again from its start, sending nothing below its commit (that
was sent): a record's second result found after the restart point is still recognized.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError, for_code

from streamstop.config import Settings
from streamstop.core.redrive import Chosen, SeenSources, Selection, Skipped, choose, request_for
from streamstop.core.redrivejob import (
    Conflict,
    Flags,
    Fresh,
    Job,
    Recorded,
    Resume,
    Span,
    group_for,
    plan,
    recorded_job,
)
from streamstop.core.results import Status, format_timestamp
from streamstop.kafkaclients import (
    explain_failure,
    make_admin,
    make_producer,
    make_redrive_consumer,
)
from streamstop.progress import Progress
from streamstop.topics import DEFAULT_MAX_MESSAGE_BYTES, KafkaRefused, describe_topics

SAMPLES = 10  # uuids a dry run lists
COMMIT_EVERY_S = 1.0
CLOSE_BUDGET_S = 10.0
_POLL_MS = 200
# A redrive stopped by SIGKILL stays a member until its session times out (aiokafka: 10 s).
_IDLE_GROUP_WAIT_S = 15.0
_IDLE_GROUP_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class RedriveRequest:
    """What the operator asked for."""

    flags: Flags
    selection: Selection
    dry_run: bool
    restart: bool
    timeout_s: float  # Kafka's answer to each step of the start, and to reads mid-run
    options: str = ""  # other options of the command line, to repeat in advice


class RedriveRefused(Exception):
    """The redrive cannot run as asked (a topic, the flags, an unfinished job)."""


class RedriveBusy(Exception):
    """Another `streamstop redrive` runs in the same group."""


class Ending(enum.Enum):
    """How a run ended."""

    FINISHED = "finished"
    INTERRUPTED = "interrupted"  # a signal
    SUPERSEDED = "superseded"  # another member joined the group


@dataclass
class Tally:
    """What a run found and did."""

    read: int = 0  # result records read
    unreadable: int = 0  # records that are not version-1 results
    second_results: int = 0  # further results of a source record already taken
    chosen: Counter[Status] = field(default_factory=Counter)  # one per source record
    sent_before: int = 0  # chosen, and published by the interrupted run this one resumes
    published: int = 0  # acknowledged by Kafka in this run
    cut: int = 0  # published without their copied headers (too large for the input topic)
    samples: list[Chosen] = field(default_factory=list)  # the first chosen (dry run)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A run's end: the report's material."""

    ending: Ending
    job: Job | None  # None when it ended before one was planned
    resumed: bool
    tally: Tally
    read: int  # offsets read over the job's spans
    saved: int  # offsets behind the last commit (what a rerun skips)
    elapsed_s: float


class Redrive:
    """One run of `streamstop redrive`; `run()` once, `stop()` from a signal handler."""

    def __init__(
        self,
        settings: Settings,
        request: RedriveRequest,
        progress: Callable[[int], Progress],
        say: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._request = request
        self._make_progress = progress
        self._say = say
        self._group = group_for(settings.kafka.group_id)
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()  # a fetch's handling, and commits, one at a time
        self._task: asyncio.Task[Any] | None = None
        self._scanning = False
        self._superseded = False
        self._assigned = asyncio.Event()
        self._first_assignment: set[TopicPartition] = set()
        self._tally = Tally()
        self._seen = SeenSources()
        self._job: Job | None = None
        self._resumed = False
        self._positions: dict[int, int] = {}  # next offset to read, per job partition
        self._resume_at: dict[int, int] = {}  # below it: published by an earlier run
        self._saved: dict[int, int] = {}  # last committed
        self._active: list[TopicPartition] = []  # job partitions not read to their end
        self._last_commit = 0.0
        self._began = time.monotonic()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._input_limit = DEFAULT_MAX_MESSAGE_BYTES
        self._progress: Progress | None = None

    def stop(self) -> None:
        """Stop cleanly: before reading, at once; while reading, after the current fetch's
        requests are acknowledged and committed."""
        self._stop.set()
        if not self._scanning and self._task is not None:
            self._task.cancel()

    async def run(self) -> Outcome:
        """Plan, read, publish, commit. Raises RedriveRefused, RedriveBusy, or
        KafkaRefused (one line saying what to check)."""
        task = self._task = asyncio.current_task()
        assert task is not None
        try:
            async with AsyncExitStack() as stack:
                try:
                    consumer = await self._start(stack)
                except asyncio.CancelledError:
                    if not self._stop.is_set():
                        raise
                    task.uncancel()  # our own stop(), before anything was read
                    if self._superseded:
                        raise RedriveBusy(self._busy("joined while this one started")) from None
                    return self._outcome(Ending.INTERRUPTED)
                self._scanning = True
                ending = await self._scan(consumer)
                return self._outcome(ending)
        except (KafkaError, TimeoutError, OSError) as exc:
            timeout = self._request.timeout_s
            raise KafkaRefused(await explain_failure(exc, self._settings, timeout)) from None
        finally:
            if self._progress is not None:
                self._progress.close()

    def saved_note(self) -> str | None:
        """How far the committed progress goes, once a job is recorded."""
        if self._job is None or self._request.dry_run:
            return None
        return f"progress saved: {self._read(self._saved):,} of {self._job.total:,} results read"

    def _read(self, offsets: dict[int, int]) -> int:
        """Offsets read over the job's spans, up to `offsets` in each partition."""
        if self._job is None:
            return 0
        return sum(offsets[p] - span.start for p, span in self._job.spans.items())

    def _busy(self, when: str) -> str:
        return (
            f"another streamstop redrive {when} in consumer group {self._group}: let it "
            "finish, or stop it with Ctrl-C (it saves its progress), then run this again"
        )

    # -- start-up ---------------------------------------------------------------------

    async def _start(self, stack: AsyncExitStack) -> AIOKafkaConsumer:
        settings, timeout = self._settings, self._request.timeout_s
        kafka = settings.kafka
        admin = make_admin(settings)
        _close_later(stack, admin.close)
        async with asyncio.timeout(timeout):
            await admin.start()
            described = await describe_topics(admin, [kafka.input_topic, kafka.output_topic])
        for key, name in (("input", kafka.input_topic), ("output", kafka.output_topic)):
            if name not in described:
                raise RedriveRefused(
                    f"the {key} topic {name} (kafka.{key}_topic) does not exist: check the "
                    "configuration, or run `streamstop topics check`"
                )
        partitions = described[kafka.output_topic].partitions
        wanted = self._request.flags.partition
        if wanted is not None and not 0 <= wanted < partitions:
            raise RedriveRefused(
                f"--partition {wanted}: the output topic {kafka.output_topic} has "
                f"partitions 0 to {partitions - 1}"
            )
        limit = described[kafka.input_topic].max_message_bytes
        self._input_limit = limit or DEFAULT_MAX_MESSAGE_BYTES
        await self._wait_until_group_idle(admin)
        tps = [TopicPartition(kafka.output_topic, p) for p in range(partitions)]
        async with asyncio.timeout(timeout):
            consumer = await self._join(stack, tps)
            committed = await admin.list_consumer_group_offsets(self._group, partitions=tps)
            recorded = recorded_job(
                {tp.partition: (om.offset, om.metadata or "") for tp, om in committed.items()}
            )
            await self._take_up(consumer, tps, recorded)
            if not self._request.dry_run:
                producer = make_producer(settings)
                _close_later(stack, producer.stop)
                await producer.start()
                self._producer = producer
        return consumer

    async def _wait_until_group_idle(self, admin: Any) -> None:
        waited = False
        deadline = time.monotonic() + _IDLE_GROUP_WAIT_S
        while members := await self._members(admin):
            if time.monotonic() >= deadline:
                raise RedriveBusy(self._busy("is running"))
            if not waited:
                self._say(
                    f"consumer group {self._group} has {members} member(s): waiting up to "
                    f"{_IDLE_GROUP_WAIT_S:.0f} s for them to leave"
                )
                waited = True
            await asyncio.sleep(_IDLE_GROUP_POLL_S)

    async def _members(self, admin: Any) -> int:
        async with asyncio.timeout(self._request.timeout_s):
            while True:
                try:
                    responses = await admin.describe_consumer_groups([self._group])
                    break
                except KafkaError as exc:
                    # A new cluster has no coordinator until its first group asks for one.
                    if not exc.retriable:
                        raise
                    await asyncio.sleep(_IDLE_GROUP_POLL_S)
        count = 0
        for response in responses:
            for group in response.to_object()["groups"]:
                if group["error_code"]:
                    raise for_code(group["error_code"])(f"consumer group {self._group}")
                count += len(group["members"])
        return count

    async def _join(self, stack: AsyncExitStack, tps: list[TopicPartition]) -> AIOKafkaConsumer:
        consumer = make_redrive_consumer(self._settings, self._group)
        _close_later(stack, consumer.stop)  # leaves the group
        await consumer.start()
        self._consumer = consumer
        consumer.subscribe([tps[0].topic], listener=_Owner(self._assigned_to, self._revoked))
        await self._assigned.wait()
        if self._first_assignment != set(tps):
            raise RedriveBusy(self._busy("started at the same time"))
        return consumer

    async def _take_up(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], recorded: Recorded | None
    ) -> None:
        """Plan the job, record a new one, and position the consumer on its spans."""
        request = self._request
        decided = plan(request.flags, recorded, request.restart)
        if isinstance(decided, Conflict):
            raise RedriveRefused(decided.explain(request.options))
        wanted = request.flags.partition
        chosen = [tp for tp in tps if wanted is None or tp.partition == wanted]
        if isinstance(decided, Resume):
            job = decided.recorded.job
            self._resumed = True
            self._resume_at = {p: decided.recorded.position(p) for p in job.spans}
            self._say(
                f"resuming redrive #{job.number}, begun {job.began}: "
                f"{decided.recorded.scanned:,} of {job.total:,} results were read"
            )
        else:
            selection = request.selection
            job = Job(
                decided.number,
                request.flags,
                selection.since_ms,
                selection.until_ms,
                format_timestamp(time.time()),
                await self._spans(consumer, chosen, selection.since_ms, decided),
            )
            self._resume_at = {p: span.start for p, span in job.spans.items()}
            if decided.after is not None:
                self._say(
                    f"redrive #{decided.after.number} with these flags is finished: this one "
                    f"reads the results written since it began ({decided.after.began}); "
                    "--restart reads the whole window again"
                )
        self._job = job
        self._saved = dict(self._resume_at)
        self._positions = {p: span.start for p, span in job.spans.items()}
        if not request.dry_run and not self._resumed:
            await self._commit()
        for tp in tps:
            span = job.spans.get(tp.partition)
            if span is not None and span.size:
                consumer.seek(tp, span.start)
                self._active.append(tp)
            else:
                consumer.pause(tp)
        self._progress = self._make_progress(job.total)

    @staticmethod
    async def _spans(
        consumer: AIOKafkaConsumer, tps: list[TopicPartition], since_ms: int | None, fresh: Fresh
    ) -> dict[int, Span]:
        """Each partition from its first result at or after `since_ms` (or its oldest; or
        where the finished job `fresh` follows ended) to its last stable offset now (the
        end of committed results)."""
        ends = await consumer.end_offsets(tps)
        if since_ms is None:
            starts = await consumer.beginning_offsets(tps)
        else:
            found = await consumer.offsets_for_times({tp: max(0, since_ms) for tp in tps})
            starts = {tp: ends[tp] if found[tp] is None else found[tp].offset for tp in tps}
        spans = {}
        for tp in tps:
            start = min(fresh.start(tp.partition, starts[tp]), ends[tp])
            spans[tp.partition] = Span(start, ends[tp])
        return spans

    def _assigned_to(self, assigned: set[TopicPartition]) -> None:
        if not self._assigned.is_set():
            self._first_assignment = set(assigned)
            self._assigned.set()

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        """Another member joined: commit what is done, and stop."""
        if not revoked or not self._assigned.is_set():
            return
        self._superseded = True
        self.stop()
        async with self._lock:
            if self._scanning:
                await self._commit()

    # -- reading and publishing -------------------------------------------------------

    async def _scan(self, consumer: AIOKafkaConsumer) -> Ending:
        quiet_since = time.monotonic()
        while self._active and not self._stop.is_set():
            fetched = await consumer.getmany(*self._active, timeout_ms=_POLL_MS)
            async with self._lock:
                if self._superseded:
                    break
                moved = await self._take(consumer, fetched)
                now = time.monotonic()
                if moved:
                    quiet_since = now
                elif now - quiet_since > self._request.timeout_s:
                    raise TimeoutError("no records while results are left to read")
                if now - self._last_commit >= COMMIT_EVERY_S:
                    await self._commit()
            self._show()
        async with self._lock:
            if not self._superseded:
                await self._commit()
        self._show(now=True)
        if self._superseded:
            return Ending.SUPERSEDED
        return Ending.INTERRUPTED if self._active else Ending.FINISHED

    async def _take(
        self, consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, list[ConsumerRecord]]
    ) -> bool:
        """Handle one fetch; returns whether any partition moved on."""
        assert self._job is not None
        sends: list[asyncio.Future[Any]] = []
        for tp, records in fetched.items():
            end = self._job.spans[tp.partition].end
            for record in records:
                if record.offset >= end:
                    break
                self._tally.read += 1
                await self._consider(record, sends)
        # Offsets move on only once every request below them is acknowledged.
        await asyncio.gather(*sends)
        self._tally.published += len(sends)
        moved = False
        for tp in list(self._active):
            span = self._job.spans[tp.partition]
            position = min(await consumer.position(tp), span.end)
            moved |= position != self._positions[tp.partition]
            self._positions[tp.partition] = position
            if position >= span.end:
                self._active.remove(tp)
                consumer.pause(tp)
        return moved

    async def _consider(self, record: ConsumerRecord, sends: list[asyncio.Future[Any]]) -> None:
        tally = self._tally
        verdict = choose(record.value, record.headers, record.timestamp, self._request.selection)
        if verdict is Skipped.UNREADABLE:
            tally.unreadable += 1
            return
        if isinstance(verdict, Skipped):
            return
        if not self._seen.first_time(verdict.source):
            tally.second_results += 1
            return
        tally.chosen[verdict.status] += 1
        if record.offset < self._resume_at[record.partition]:
            tally.sent_before += 1
            return
        if self._producer is None:  # a dry run
            if len(tally.samples) < SAMPLES:
                tally.samples.append(verdict)
            return
        request = request_for(verdict, self._input_limit)
        tally.cut += request.cut
        sends.append(
            await self._producer.send(
                self._settings.kafka.input_topic,
                request.value,
                key=request.key,
                headers=request.headers,
            )
        )

    async def _commit(self) -> None:
        """Commit each job partition's done offset, with the job in the metadata."""
        if self._request.dry_run or self._job is None or self._consumer is None:
            return
        topic = self._settings.kafka.output_topic
        # A resumed job reads again what lies below its commit: never move that back.
        done = {p: max(self._positions[p], self._resume_at[p]) for p in self._job.spans}
        try:
            await self._consumer.commit(
                {TopicPartition(topic, p): (o, self._job.metadata(p)) for p, o in done.items()}
            )
        except CommitFailedError:
            # The group moved on without this member (a session that timed out): another
            # member may own the partitions now. Stop; what was committed stays saved.
            self._superseded = True
            self._stop.set()
            return
        self._saved = done
        self._last_commit = time.monotonic()

    def _show(self, now: bool = False) -> None:
        if self._progress is None:
            return
        tally = self._tally
        counters = [("chosen", sum(tally.chosen.values()))]
        if not self._request.dry_run:
            counters.append(("published", tally.published + tally.sent_before))
        self._progress.show(self._read(self._positions), counters, now=now)

    def _outcome(self, ending: Ending) -> Outcome:
        return Outcome(
            ending,
            self._job,
            self._resumed,
            self._tally,
            self._read(self._positions),
            self._read(self._saved),
            time.monotonic() - self._began,
        )


def _close_later(stack: AsyncExitStack, close: Callable[[], Awaitable[Any]]) -> None:
    """Close a client when the run ends, in reverse order, bounded: a Kafka gone away
    cannot hold the command, and a failing close does not stop the others."""

    async def bounded() -> None:
        try:
            await asyncio.wait_for(close(), CLOSE_BUDGET_S)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # aiokafka's consumer.stop() can raise its fetch task's own CancelledError.
        except (KafkaError, OSError, TimeoutError):
            pass  # nothing more to do for that client

    stack.push_async_callback(bounded)


class _Owner(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands the group's rebalances to the run."""

    def __init__(
        self,
        assigned: Callable[[set[TopicPartition]], None],
        revoked: Callable[[set[TopicPartition]], Any],
    ) -> None:
        self._assigned = assigned
        self._revoked = revoked

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._revoked(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned(assigned)

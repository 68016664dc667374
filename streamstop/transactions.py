"""Exactly-once results: each input partition's results, DLQ copies and offsets committed
in Kafka transactions (`delivery.guarantee = "exactly_once"`, SPEC "Delivery guarantees").

One transactional producer per assigned input partition, transactional id
`{prefix}-{group_id}-{topic}-{partition}` (aiokafka has no KIP-447: a zombie owner is
fenced as Kafka Streams did before it). A new owner starts the partition's producer
(InitProducerId: it fences the previous owner's producer and ends its open transaction)
before it reads the partition's committed offset. Producers of partitions that stay across
a rebalance are kept (the assignor is sticky); they never outnumber assigned partitions
for longer than a rebalance.

A partition's sink commits its results in transactions, one after the other:

1. results go in as `core/holdback.py` releases them (never past the first record without
   one), built then and queued as record batches, for `delivery.transaction_interval_ms`
   or until `delivery.transaction_max_records`;
2. every batch is acknowledged;
3. the partition's next offset goes in with `send_offsets_to_transaction`; the consumer
   commits nothing itself;
4. the transaction commits; only then do its records count as committed.

No transaction waits for the stop API: results enter one only once decided. A transaction
that aborts while the partition can go on (a batch not queued, a refused authorization, a
batch Kafka refused) gives its results back for the next one; after a refused batch the
next one needs a new producer (the batch took its sequence numbers with it and aiokafka
cannot bump the epoch, KIP-360). A producer that can no longer be used (fenced by a newer
owner, its transaction timed out and fenced by the broker, its sequence broken otherwise)
ends the partition's open work: it is dropped, uncommitted, and redone from the committed
offset by whoever owns the partition (`rebalance.py`), never retried on a dead producer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from streamstop.config import Settings
from streamstop.core.holdback import Holdback, Released
from streamstop.kafkaclients import make_transactional_producer, transactional_id
from streamstop.metrics import Metrics
from streamstop.outages import Failing
from streamstop.partitions import Partition
from streamstop.publisher import (
    REFUSED_FOR_GOOD,
    REFUSED_TOO_LARGE,
    Failure,
    Limits,
    Publisher,
    Sent,
    transaction_error,
)
from streamstop.writer import Decided, Results

log = structlog.get_logger("streamstop.transactions")

STEP_TIMEOUT_S = 30.0
COMMITTED_TIMEOUT_S = 10.0
START_RETRY_S = (1.0, 10.0)
ABORT_PAUSE_S = (0.2, 5.0)
# A failed partition restarts after this, doubling while it keeps failing: longer than
# aiokafka's heartbeat interval (3 s), so a member that lost its partitions without
# knowing (a zombie) learns it first, instead of fencing their new owner in turn.
RESTART_DELAY_S = (5.0, 60.0)
LOG_EVERY_S = 30.0
CLOSE_TIMEOUT_S = 10.0
# Kafka refused a batch it was sent (an ACL, a lowered limit): the producer is not fenced,
# but the batch took its sequence numbers with it.
REFUSED_BATCH = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError, *REFUSED_TOO_LARGE)


class TransactionFailed(Exception):
    """A partition's producer can no longer be used: fenced by a newer owner or by the
    broker's transaction timeout, or its sequence broken (not by a batch Kafka refused:
    that producer is replaced)."""


class Writer(Protocol):
    """Builds the result events (and DLQ copies) of decisions, and lets go of them
    (`TransactionalWriter`)."""

    def build(self, decisions: Sequence[Decided]) -> Results:
        """The result events and DLQ copies of `decisions`."""

    def let_go(self, decisions: Iterable[Decided]) -> None:
        """`decisions` are committed or dropped."""


class _Aborted(Exception):
    """The transaction must abort, for `error`; the partition goes on."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


class Outcomes:
    """How the partitions' transactions have been going, for readiness: refused for
    good (an ACL, a topic's limit) until one commits; failing for a while."""

    def __init__(self) -> None:
        self.refused: str | None = None
        self.failing = Failing("transactions abort")

    def aborted(self, error: BaseException) -> bool:
        """A transaction aborted (or its producer failed); True when to log it."""
        if isinstance(error, (*REFUSED_FOR_GOOD, GroupAuthorizationFailedError)):
            self.refused = repr(error)
        return self.failing.failed(repr(error))

    def committed(self) -> None:
        self.refused = None
        self.failing.succeeded()


class PartitionProducer:
    """One input partition's transactional producer; kept while the partition stays."""

    def __init__(self, tp: TopicPartition, txn_id: str, publisher: Publisher) -> None:
        self.tp = tp
        self.transactional_id = txn_id
        self.publisher = publisher
        self.started = False
        # The offset its last transaction committed: a floor for where the partition
        # starts when this producer is kept (the committed offset may not show it yet).
        self.committed: int | None = None

    async def start(self) -> None:
        """InitProducerId: fences any older producer of the partition; a transaction it
        left open is aborted (or its commit completed) first."""
        await asyncio.wait_for(self.publisher.start(), STEP_TIMEOUT_S)
        self.started = True

    async def begin(self) -> None:
        self._raise_if_fatal()
        await self.publisher.producer.begin_transaction()

    async def commit(self, offset: int, group_id: str) -> None:
        """Send the partition's next offset into the transaction and commit it."""
        producer = self.publisher.producer
        try:
            await producer.send_offsets_to_transaction({self.tp: offset}, group_id)
            self._raise_if_fatal()
            await producer.commit_transaction()
        except KafkaError:
            self._raise_if_fatal()
            raise
        self.committed = offset

    async def abort(self) -> None:
        self._raise_if_fatal()
        transaction_error(self.publisher.producer)  # the caller has it
        try:
            await self.publisher.producer.abort_transaction()
        except KafkaError:
            self._raise_if_fatal()
            raise

    async def replace(self) -> None:
        """Stop the producer and start a new one for the same transactional id (a new
        epoch: it fences only the old one). Raises TransactionFailed if none starts."""
        await self.stop()
        self.started = False
        try:
            await self.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise TransactionFailed(f"no new producer: {exc!r}") from exc

    @property
    def reusable(self) -> bool:
        """Started, alive and between transactions: it may serve the partition again."""
        if not self.started or self._fatal() is not None:
            return False
        return not self.publisher.producer._txn_manager.is_in_transaction()

    def _raise_if_fatal(self) -> None:
        cause = self._fatal()
        if cause is not None:
            raise TransactionFailed(cause)

    def _fatal(self) -> str | None:
        """Why the producer died, if it did. aiokafka's producer dies (its sender task
        ends) on ProducerFenced, InvalidProducerEpoch, a broken sequence or a refused
        transactional id; its state machine then fails every call with an AssertionError,
        so callers look first."""
        manager = self.publisher.producer._txn_manager
        if not manager.is_fatal_error():
            return None
        ended = manager.wait_for_transaction_end()
        if ended is not None and ended.done() and not ended.cancelled():
            return repr(ended.exception())  # retrieved: asyncio would log it otherwise
        return "the producer failed"

    async def stop(self) -> None:
        if self.started:
            self._fatal()
        try:
            await asyncio.wait_for(self.publisher.stop(), CLOSE_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:
            log.warning("producer_stop_failed", txn_id=self.transactional_id, error=repr(exc))


class PartitionSink:
    """One assigned partition's decided results on their way into its transactions."""

    def __init__(
        self,
        part: Partition,
        producer: PartitionProducer,
        writer: Writer,
        metrics: Metrics,
        progress: asyncio.Event,
        settings: Settings,
        outcomes: Outcomes,
    ) -> None:
        self.part = part
        self.producer = producer
        self._writer = writer
        self._metrics = metrics
        self._progress = progress
        self._outcomes = outcomes
        self._group_id = settings.kafka.group_id
        delivery = settings.delivery
        self._interval_s = delivery.transaction_interval_ms / 1000
        self._max_records = delivery.transaction_max_records
        self._holdback: Holdback[Decided] = Holdback()
        self._wake = asyncio.Event()
        self._closing = False
        self.serving = False  # positioned and running transactions
        self._aborts = 0
        self.commits = 0

    @property
    def held(self) -> int:
        """Results decided and not committed yet."""
        return len(self._holdback)

    def hold(self, decided: Decided) -> None:
        """A record's result is decided: it waits for a transaction."""
        offset = decided.rec.offset
        self.part.finish(offset)
        self._holdback.add(offset, decided)
        self._wake.set()

    def close(self) -> None:
        """Commit what may go now, without waiting out the interval, and stop."""
        self._closing = True
        self._wake.set()

    def drop(self) -> None:
        """The partition is gone: what is held (uncommitted) is let go."""
        self._writer.let_go(self._holdback.clear())

    async def run(self) -> None:
        """Transactions one after the other until closed. Raises TransactionFailed."""
        self.serving = True
        while True:
            released = self._release(self._max_records)
            if released is None:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            await self._transaction(released)

    def _release(self, limit: int) -> Released[Decided] | None:
        return self._holdback.release(self.part.tracker.commit_point(), limit)

    async def _transaction(self, released: Released[Decided]) -> None:
        producer = self.producer
        await producer.begin()
        try:
            statuses, oldest = await self._fill(released.items)
            await producer.commit(self._holdback.offset, self._group_id)
        except (_Aborted, KafkaError) as exc:
            error = exc.error if isinstance(exc, _Aborted) else exc
            # A batch Kafka refused took its sequence numbers with it and aiokafka cannot
            # bump the epoch (KIP-360): the partition goes on with a new producer.
            replace = isinstance(error, REFUSED_BATCH)
            await producer.abort()
            self._holdback.aborted()
            await self._after_abort(error, replace)
            if replace:
                await producer.replace()
            return
        self._committed(statuses, oldest)

    async def _fill(self, items: list[Decided]) -> tuple[collections.Counter[str], float]:
        """Queue results as they may go (`items` first), until the interval ends, the
        transaction is full or the sink closes; then wait for every batch's ack. Returns
        the results' statuses and when the oldest of their records was consumed."""
        publisher = self.producer.publisher
        deadline = time.monotonic() + self._interval_s
        sent: list[Sent] = []
        statuses: collections.Counter[str] = collections.Counter()
        oldest = float("inf")
        refused: list[Failure] = []
        while True:
            if items:
                results = self._writer.build(items)
                queued, refused = await publisher.submit(results.messages)
                sent += queued
                if refused:  # not queued (a metadata error, a record that cannot fit)
                    break
                statuses += results.statuses
                oldest = min((rec.received.at for rec in results.recs), default=oldest)
            room = self._max_records - self._holdback.in_transaction
            left = deadline - time.monotonic()
            if self._closing or room <= 0 or left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
            self._wake.clear()
            released = self._release(room)
            items = released.items if released is not None else []
        await self._acked(sent, refused)
        return statuses, oldest

    async def _acked(self, sent: list[Sent], refused: list[Failure]) -> None:
        """Wait for every ack. Raises _Aborted if a message was `refused` (not queued) or
        Kafka refused a batch; TransactionFailed if a batch failed otherwise."""
        publisher = self.producer.publisher
        failed = [*refused, *await publisher.acks(sent)]
        if not failed:
            return
        await publisher.note_failures(failed)
        error = failed[0].error
        if refused or all(isinstance(failure.error, REFUSED_BATCH) for failure in failed):
            raise _Aborted(error)
        self._outcomes.aborted(error)
        raise TransactionFailed(f"a batch failed: {error!r}")

    def _committed(self, statuses: collections.Counter[str], oldest: float) -> None:
        items, offset = self._holdback.committed()
        self._writer.let_go(items)
        part, metrics = self.part, self._metrics
        part.tracker.mark_committed(offset)
        part.committed = offset
        self.commits += 1
        self._aborts = 0
        self._outcomes.committed()
        metrics.transactions.labels(outcome="committed").inc()
        metrics.commits.inc()
        metrics.committed_offset.labels(topic=part.tp.topic, partition=str(part.tp.partition)).set(
            offset
        )
        for status, count in statuses.items():
            metrics.results.labels(status=status).inc(count)
        if oldest != float("inf"):
            metrics.result_latency.observe(time.time() - oldest)
        self._progress.set()

    async def _after_abort(self, exc: BaseException, replacing: bool) -> None:
        self._aborts += 1
        self._metrics.transactions.labels(outcome="aborted").inc()
        if self._outcomes.aborted(exc):  # one line per trouble, not per retry
            log.warning(
                "transaction_aborted",
                partition=self.part.name,
                error=repr(exc),
                results=len(self._holdback),
                retrying=True,
                new_producer=replacing,
            )
        low, high = ABORT_PAUSE_S
        await asyncio.sleep(random.uniform(low, min(high, low * 2**self._aborts)))


Restart = Callable[[Partition, float], None]


class Transactions:
    """Every assigned partition's sink and transactional producer (`exactly_once`): opened
    when the group assigns partitions, closed (what may go committed) when it takes them
    away, and the producers of partitions that stay kept."""

    def __init__(
        self,
        settings: Settings,
        limits: Limits,
        metrics: Metrics,
        writer: Writer,
        consumer: Any,
        progress: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._limits = limits
        self._metrics = metrics
        self._writer = writer
        self._consumer = consumer
        self._progress = progress
        self._sinks: dict[TopicPartition, tuple[PartitionSink, asyncio.Task[None]]] = {}
        self._kept: dict[TopicPartition, PartitionProducer] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._failures: collections.Counter[TopicPartition] = collections.Counter()
        # Where a failed partition started over from, when the group has no committed
        # offset for it (a new group failing before its first commit).
        self._restart_at: dict[TopicPartition, int] = {}
        self._start_refused: str | None = None  # why Kafka refuses a producer's start
        self._outcomes = Outcomes()
        self._hold_logged = float("-inf")
        self._stopped = False
        # Set by the rebalance listener: drops a failed partition's work, restarts it.
        self.restart: Restart = lambda part, delay_s: None

    @property
    def refused(self) -> str | None:
        """Why Kafka refuses our transactional writes, while it does."""
        return self._start_refused or self._outcomes.refused

    @property
    def problem(self) -> str | None:
        """Why transactions have been aborting for a while, while they do."""
        return self._outcomes.failing.problem

    def open(
        self,
        parts: Iterable[Partition],
        position: Callable[[list[Partition]], None],
        delay_s: float = 0.0,
    ) -> None:
        """Give each new partition a sink, with the producer kept for it or a new one.
        After `delay_s` the producer starts (fencing any older owner), then the partition's
        committed offset is read afresh and it is handed to `position`."""
        if self._stopped:
            return  # shutting down: a rebalance while leaving the group starts nothing
        for part in parts:
            producer = self._kept.pop(part.tp, None) or self._new_producer(part.tp)
            sink = PartitionSink(
                part,
                producer,
                self._writer,
                self._metrics,
                self._progress,
                self._settings,
                self._outcomes,
            )
            part.sink = sink
            task = asyncio.create_task(self._serve(sink, position, delay_s))
            self._sinks[part.tp] = (sink, task)
        self._count_producers()

    def keep_only(self, tps: Iterable[TopicPartition]) -> None:
        """The group's new assignment: producers kept for partitions not in it stop."""
        wanted = set(tps)
        for tp in [tp for tp in self._kept if tp not in wanted]:
            self._stop_later(self._kept.pop(tp))
        for tp in [tp for tp in self._restart_at if tp not in wanted]:
            del self._restart_at[tp]  # moved on: its next owner reads the group's offset
        self._count_producers()

    async def commit(
        self, parts: Sequence[Partition] | None = None, timeout_s: float = CLOSE_TIMEOUT_S
    ) -> bool:
        """The partitions are going (a rebalance or shutdown; their drain is over): commit
        what may go now in a last transaction, then stop their sinks, keeping each producer
        left between transactions. False if one could not finish within `timeout_s`."""
        tps = list(self._sinks) if parts is None else [part.tp for part in parts]
        closed = await asyncio.gather(*(self._close(tp, timeout_s) for tp in tps))
        self._count_producers()
        return all(closed)

    async def stop(self) -> None:
        """Shutdown: every sink and producer stops."""
        self._stopped = True
        await self.commit(timeout_s=0.1)
        for tp in list(self._kept):
            self._stop_later(self._kept.pop(tp))
        await asyncio.gather(*self._stopping, return_exceptions=True)
        self._count_producers()

    def _new_producer(self, tp: TopicPartition) -> PartitionProducer:
        settings = self._settings
        txn_id = transactional_id(settings, tp.topic, tp.partition)
        publisher = Publisher(
            lambda: make_transactional_producer(settings, txn_id),
            self._limits,
            self._metrics,
            transactional=True,
        )
        return PartitionProducer(tp, txn_id, publisher)

    async def _serve(
        self, sink: PartitionSink, position: Callable[[list[Partition]], None], delay_s: float
    ) -> None:
        part = sink.part
        try:
            await asyncio.sleep(delay_s)
            if not sink.producer.started:
                await self._start(sink.producer)
            if not await self._seek_committed(part, sink.producer):
                return  # no longer assigned: a rebalance ends this sink
            position([part])
            await sink.run()
        except TransactionFailed as exc:
            self._failed(sink, exc)
        except Exception as exc:  # a bug: the partition's work is dropped, never the process
            log.error("transaction_loop_error", partition=part.name, error=repr(exc), exc_info=exc)
            self._failed(sink, exc)
        finally:
            sink.drop()

    async def _start(self, producer: PartitionProducer) -> None:
        """Start the producer, for as long as it takes: Kafka refusing or not answering is
        a hold (one line at the start and every 30 s), not an exit."""
        delay, max_delay = START_RETRY_S
        while True:
            began = time.monotonic()
            try:
                await producer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                if isinstance(exc, TransactionalIdAuthorizationFailed):
                    self._start_refused = f"transactional id {producer.transactional_id!r}: {exc!r}"
                self._metrics.kafka_hold.set(1)
                now = time.monotonic()
                if now - self._hold_logged >= LOG_EVERY_S:
                    self._hold_logged = now
                    log.error(
                        "transactional_producer_unavailable",
                        txn_id=producer.transactional_id,
                        error=repr(exc),
                        hint="check the TransactionalId ACLs (Write, Describe) on the prefix "
                        "and the broker's transaction.max.timeout.ms",
                        retrying=True,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
                continue
            if self._start_refused is not None or self._hold_logged != float("-inf"):
                self._start_refused = None
                self._hold_logged = float("-inf")
                self._metrics.kafka_hold.set(0)
            log.info(
                "transactional_producer_started",
                txn_id=producer.transactional_id,
                duration_ms=round((time.monotonic() - began) * 1000),
            )
            return

    async def _seek_committed(self, part: Partition, producer: PartitionProducer) -> bool:
        """Read the committed offset now that the producer fenced older owners (aiokafka's
        consumer read one at assignment, maybe before a transaction of the previous owner
        completed) and start there; False if the partition is no longer assigned."""
        consumer = self._consumer
        while True:
            try:
                committed = await asyncio.wait_for(consumer.committed(part.tp), COMMITTED_TIMEOUT_S)
                break
            except (KafkaError, TimeoutError) as exc:
                # Kafka away: the poll loop and the hold say so; try again.
                log.debug("committed_offset_unreadable", partition=part.name, error=repr(exc))
                await asyncio.sleep(START_RETRY_S[0])
        known = [offset for offset in (committed, producer.committed) if offset is not None]
        restart_at = self._restart_at.pop(part.tp, None)
        if not known and restart_at is not None:
            # Restarted before the group ever committed it: from where it began. The
            # consumer's own position is past the records whose results were dropped.
            known = [restart_at]
        if known:  # else a new group: the pipeline applies kafka.auto_offset_reset
            try:
                consumer.seek(part.tp, max(known))
            except IllegalStateError:
                return False
        return True

    def _failed(self, sink: PartitionSink, exc: BaseException) -> None:
        """The partition's producer can no longer be used: drop its open work (it stays
        uncommitted for the owner to redo), and restart it after a while."""
        part = sink.part
        self._sinks.pop(part.tp, None)
        self._stop_later(sink.producer)
        if part.committed is not None:  # where it began, or its last commit
            self._restart_at[part.tp] = part.committed
        # In a row: a partition that committed since its last failure starts again soon.
        self._failures[part.tp] = 1 if sink.commits else self._failures[part.tp] + 1
        delay = restart_delay(self._failures[part.tp])
        self._metrics.transactions.labels(outcome="failed").inc()
        log.warning(
            "transaction_failed",
            partition=part.name,
            txn_id=sink.producer.transactional_id,
            error=str(exc),
            dropped_results=sink.held,
            restart_in_s=delay,
            hint="fenced: another member owns the partition now, or the transaction "
            "outlived delivery.transaction_timeout_ms; its work is redone from the "
            "committed offset",
        )
        self.restart(part, delay)
        self._count_producers()

    async def _close(self, tp: TopicPartition, timeout_s: float) -> bool:
        entry = self._sinks.pop(tp, None)
        if entry is None:
            return True
        sink, task = entry
        sink.close()
        # Not serving yet (waiting to restart, starting its producer): nothing to commit,
        # and starting a producer now could fence the partition's next owner.
        done, _ = await asyncio.wait([task], timeout=timeout_s if sink.serving else 0)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        producer = sink.producer
        if done and producer.reusable:
            self._kept[tp] = producer
        else:
            # Mid-transaction: the next owner's start ends what it left open.
            self._stop_later(producer)
        return bool(done)

    def _stop_later(self, producer: PartitionProducer) -> None:
        task = asyncio.create_task(producer.stop())
        self._stopping.add(task)
        task.add_done_callback(self._producer_stopped)

    def _producer_stopped(self, task: asyncio.Task[None]) -> None:
        self._stopping.discard(task)
        self._count_producers()

    def _count_producers(self) -> None:
        self._metrics.producers.set(len(self._sinks) + len(self._kept) + len(self._stopping))


def restart_delay(failures: int) -> float:
    """Seconds before a partition whose producer failed `failures` times in a row (without
    a committed transaction in between) starts again."""
    low, high = RESTART_DELAY_S
    return float(min(high, low * 2.0 ** (failures - 1)))

"""`streamstop run`: start in dependency order, stop in reverse, every step bounded.

Start: logging → metrics/health server → HTTP client → Kafka (reachable, topics checked)
→ producer → consumer → pipeline tasks. Each component's close is registered right after
it starts, so a partial start cleans up what it started, and shutdown closes in reverse:
stop fetching → drain and commit → leave the group → flush the producer → close the admin
client and HTTP → stop the health server, within `lifecycle.shutdown_timeout_s`.

Kafka being unreachable, a topic missing, or Kafka refusing us is a hold, not an exit: not
ready, one line when it starts and at most every 30 s, recovery without a restart. A
signal is acted on within a second at every stage; a second one exits at once.

Never: exit while Kafka is merely unavailable, or wait past a budget for a close step.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import structlog
from aiokafka.errors import KafkaError, ProducerFenced

from streamstop import __version__, logs
from streamstop.committer import Committer, commit_budget
from streamstop.config import ConfigError, Settings
from streamstop.exitcodes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from streamstop.health import HealthServer
from streamstop.interpreter import Interpreter
from streamstop.kafkaclients import explain_failure, make_admin, make_consumer, make_producer
from streamstop.lag import LagMonitor
from streamstop.metrics import Metrics
from streamstop.partitions import Assignment
from streamstop.pipeline import Pipeline
from streamstop.publisher import Publisher
from streamstop.ratebudget import RateShare
from streamstop.rebalance import Commits, RebalanceListener
from streamstop.stopclient import StopClient
from streamstop.stopper import Stopper
from streamstop.topics import TopicLimits, TopicMissing, usable_topics
from streamstop.tracing import start_tracing
from streamstop.transactions import Transactions
from streamstop.writer import ResultWriter, TransactionalWriter

log = structlog.get_logger("streamstop.app")

T = TypeVar("T")
STEP_TIMEOUT_S = 30.0
CLOSE_BUDGET_S = 5.0
MIN_CLOSE_STEP_S = 0.5
HOLD_RETRY_S = (1.0, 10.0)
HOLD_LOG_EVERY_S = 30.0
# A stuck event loop or consume loop for this long (beyond a revoke drain) fails /livez.
LIVENESS_GRACE_S = 60.0
# Cyclic GC: young collections every 10,000 net allocations (not 700), full ones after
# 100 middle ones (not 10). Each record keeps a few tracked objects alive until its
# result is acknowledged (up to batch.max_pending records), and the defaults scanned
# them again and again: 16 % of the daemon's CPU at 1M records, 7 % with these
# (benchmarks/results/cpu-per-record-2026-12-02.md). Cyclic garbage is rare (a few
# thousand objects per million records), and it is still collected.
GC_THRESHOLDS = (10_000, 10, 100)
# Errors that mean "Kafka cannot be used as configured right now": a hold.
_KAFKA_UNAVAILABLE = (KafkaError, TopicMissing, OSError, ssl.SSLError, TimeoutError)


def run(settings: Settings) -> int:
    """Run the daemon until a signal; returns the process exit code."""
    logs.configure(settings.observability.log_level, settings.observability.log_format)
    try:
        logs.register_secret(settings.api_token())
        logs.register_secret(settings.sasl_password_value())
    except ConfigError as exc:
        return _config_error(exc)
    _warn_without_c_extensions()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        return asyncio.run(Daemon(settings).main())
    return uvloop.run(Daemon(settings).main())


def _config_error(exc: ConfigError) -> int:
    for problem in exc.problems:
        log.error("config_error", problem=problem)
    return EXIT_CONFIG


def _warn_without_c_extensions() -> None:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    if not DefaultRecordBatchBuilder.__module__.startswith("aiokafka.record._crecords"):
        log.warning(
            "aiokafka_c_extensions_missing",
            hint="aiokafka runs about 4x slower without its C extensions",
        )


class _Stopped(Exception):
    """A signal arrived while starting up."""


class Daemon:
    """One running instance: owns every component and its lifecycle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._shutdown = asyncio.Event()
        self._signals = 0
        self._close_until: float | None = None  # the shutdown budget, once it runs
        self._hold: str | None = "starting"
        self._hold_logged = float("-inf")
        self._ready: Callable[[], str | None] = lambda: self._hold
        self._live: Callable[[], str | None] = lambda: None

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_log_loop_exception)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            async with contextlib.AsyncExitStack() as stack:
                return await self._run(stack)
        except ConfigError as exc:
            return _config_error(exc)
        except _Stopped:
            log.info("stopped", during="start-up")
            return EXIT_OK

    async def _run(self, stack: contextlib.AsyncExitStack) -> int:
        settings = self.settings
        kafka = settings.kafka
        tracing = start_tracing(settings.observability.tracing)
        if tracing is not None:
            self._closing(stack, tracing.shutdown)  # closed last: exports the last spans
        health = HealthServer(
            settings.observability.http_port,
            self.metrics,
            live=lambda: self._live(),
            ready=lambda: self._ready(),
        )
        await health.start()
        self._closing(stack, health.stop)
        log.info("http_listening", port=health.port, version=__version__)

        api = settings.api
        client = StopClient(
            api.url,
            token=self._token,
            timeout_s=api.timeout_s,
            ca_file=api.ca_file,
            max_connections=settings.batch.max_in_flight,
            max_response_bytes=api.max_response_bytes,
            client_certfile=api.client_certfile,
            client_keyfile=api.client_keyfile,
            proxy_url=api.proxy_url,
            trust_env=api.trust_env,
        )
        await client.start()
        self._closing(stack, client.close)
        stopper = Stopper(
            client,
            Interpreter(max_retry_after_s=settings.retry.max_retry_after_s),
            max_in_flight=settings.batch.max_in_flight,
            max_batch_size=settings.batch.max_size,
            max_requests_per_second=api.max_requests_per_second,
            policy=settings.retry,
            metrics=self.metrics,
            tracing=tracing,
        )

        admin = make_admin(settings)
        await self._until_usable(admin.start, "connecting to Kafka")
        self._closing(stack, admin.close)
        # Checked before any client names them; a compacted output topic is exit 2.
        topics = await self._until_usable(lambda: usable_topics(admin, settings), "checking topics")
        limits = TopicLimits(admin, topics)
        publisher = None
        if settings.delivery.guarantee == "at_least_once":  # else a producer per partition
            publisher = (Publisher if tracing is None else tracing.publisher)(
                lambda: make_producer(settings), limits, self.metrics
            )
            await self._until_usable(publisher.start, "starting the producer")
            self._closing(stack, publisher.stop)
        consumer = await self._until_usable(self._start_consumer, "joining the consumer group")
        self._closing(stack, consumer.stop)  # leaves the group

        assignment = Assignment()
        outputs = {"output_topic": kafka.output_topic, "dlq_topic": kafka.dlq_topic}
        writer: ResultWriter
        committer: Commits
        writes: Writes
        transactions = None
        if publisher is None:
            transactional = TransactionalWriter(
                assignment, self.metrics, tracing=tracing, **outputs
            )
            transactions = Transactions(
                settings, limits, self.metrics, transactional, consumer, assignment.progress
            )
            self._closing(stack, transactions.stop)  # before the consumer leaves the group
            writer, committer, writes = transactional, transactions, transactions
        else:
            writer = ResultWriter(publisher, assignment, self.metrics, tracing=tracing, **outputs)
            committer, writes = Committer(consumer, assignment, self.metrics), publisher
        pipeline = Pipeline(settings, consumer, assignment, stopper, writer, self.metrics)
        listener = RebalanceListener(
            consumer,
            assignment,
            committer,
            self.metrics,
            drain=pipeline.drain,
            position=pipeline.position,
            revoke_timeout_s=settings.lifecycle.revoke_timeout_s,
            rate_share=RateShare(
                stopper.throttle,
                admin,
                kafka.input_topic,
                budget=api.max_requests_per_second,
                scope=api.rate_scope,
                partitions=topics[kafka.input_topic].partitions,
            ).assigned,
            transactions=transactions,
        )
        consumer.subscribe([kafka.input_topic], listener=listener)
        lag = LagMonitor(consumer, assignment, self.metrics)
        tasks = [
            asyncio.create_task(pipeline.consume(), name="consume"),
            asyncio.create_task(lag.run(), name="lag"),
        ]
        if isinstance(committer, Committer):  # exactly_once commits in transactions
            tasks.append(asyncio.create_task(committer.run(), name="commit"))
        self._live = lambda: self._liveness(pipeline, tasks)
        self._ready = lambda: _readiness(
            assignment, pipeline, writes, stopper, committer.problem or lag.problem
        )
        # Everything built so far lives as long as the process: move it out of the
        # collector's sight, so full collections only walk objects made since (full
        # collections over the start-up heap took ~50 ms each, paid by every record).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info(
            "started",
            input_topic=kafka.input_topic,
            output_topic=kafka.output_topic,
            group_id=kafka.group_id,
        )
        return await self._serve(pipeline, committer, assignment, tasks)

    async def _serve(
        self,
        pipeline: Pipeline,
        committer: Commits,
        assignment: Assignment,
        tasks: list[asyncio.Task[None]],
    ) -> int:
        """Run until a signal or a fatal error, then drain, commit and stop the tasks;
        the exit stack closes the rest."""
        failed = asyncio.create_task(pipeline.failed.wait())
        stopped = asyncio.create_task(self._shutdown.wait())
        await asyncio.wait([failed, stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        stopped.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                pipeline.fatal = pipeline.fatal or task.exception()

        began = time.monotonic()
        budget = self.settings.lifecycle.shutdown_timeout_s
        self._close_until = began + budget
        deadline = began + max(0.0, budget - CLOSE_BUDGET_S)
        drained = False
        if pipeline.fatal is None:
            log.info("shutting_down", pending=assignment.uncommitted())
            drained = await pipeline.drain_all(deadline)
            await committer.commit(timeout_s=commit_budget(deadline))
        else:
            pipeline.begin_shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pipeline.cancel_tasks()
        if pipeline.fatal is not None:
            log.error("stopped_after_fatal_error", error=repr(pipeline.fatal))
            return EXIT_FAILURE
        left = assignment.uncommitted()
        log.info(
            "stopped",
            # exactly_once: what the drain left decided is committed by the last transaction.
            drained=drained or not left,
            left_uncommitted=left,
            duration_ms=round((time.monotonic() - began) * 1000),
        )
        return EXIT_OK

    async def _start_consumer(self) -> Any:
        """A started consumer; a fresh one per attempt (a failed start leaves its state)."""
        consumer = make_consumer(self.settings)
        try:
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), CLOSE_BUDGET_S)
            raise
        return consumer

    async def _until_usable(self, attempt: Callable[[], Awaitable[T]], stage: str) -> T:
        """`attempt()`'s result once Kafka lets it succeed: meanwhile a hold (not ready,
        one line at the start and every 30 s). Raises _Stopped on a signal."""
        delay, max_delay = HOLD_RETRY_S
        while True:
            try:
                result = await self._unless_stopped(attempt())
            except _KAFKA_UNAVAILABLE as exc:
                await self._held(stage, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._shutdown.wait(), delay)
                if self._shutdown.is_set():
                    raise _Stopped from None
                delay = min(delay * 2, max_delay)
                continue
            if self._hold not in (None, "starting"):
                log.info("kafka_available", stage=stage)
            self._hold = "starting"
            self.metrics.kafka_hold.set(0)
            return result

    async def _unless_stopped(self, step: Awaitable[T]) -> T:
        """Await `step` (bounded), or give it up as soon as a signal arrives."""
        task = asyncio.ensure_future(asyncio.wait_for(step, STEP_TIMEOUT_S))
        stopped = asyncio.create_task(self._shutdown.wait())
        try:
            await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise _Stopped
        return task.result()

    async def _held(self, stage: str, exc: BaseException) -> None:
        """Kafka refused `stage`: say why (one line, at most every 30 s), not ready."""
        self.metrics.kafka_hold.set(1)
        now = time.monotonic()
        if now - self._hold_logged < HOLD_LOG_EVERY_S and self._hold not in (None, "starting"):
            return
        if isinstance(exc, TopicMissing):
            problem = str(exc)
        else:
            problem = await self._unless_stopped(explain_failure(exc, self.settings))
        self._hold = f"{stage}: {problem}"
        self._hold_logged = now
        log.error("kafka_unavailable", stage=stage, problem=problem, retrying=True)

    def _closing(
        self, stack: contextlib.AsyncExitStack, close: Callable[[], Awaitable[Any]]
    ) -> None:
        """Register a close step, bounded, run in reverse order of registration; a
        failing step does not stop the others."""

        async def bounded() -> None:
            budget = CLOSE_BUDGET_S
            if self._close_until is not None:
                budget = min(budget, max(MIN_CLOSE_STEP_S, self._close_until - time.monotonic()))
            try:
                await asyncio.wait_for(close(), budget)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being cancelled ourselves
                # aiokafka's consumer.stop() can raise the CancelledError of its own
                # fetch task (cancelled in a retry sleep): that step failed, nothing more.
                log.warning("close_failed", step=close.__qualname__, error="cancelled inside")
            except Exception as exc:
                log.warning("close_failed", step=close.__qualname__, error=repr(exc))

        stack.push_async_callback(bounded)

    def _token(self) -> str:
        token = self.settings.api_token()
        logs.register_secret(token)
        return token

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second_signal_exit", signal=sig.name)
            sys.stdout.flush()
            os._exit(EXIT_FAILURE)
        log.info("signal_received", signal=sig.name)
        self._shutdown.set()

    def _liveness(self, pipeline: Pipeline, tasks: list[asyncio.Task[None]]) -> str | None:
        for task in tasks:
            if task.done():
                return f"core task {task.get_name()} ended"
        stalled = time.monotonic() - pipeline.heartbeat
        grace = self.settings.lifecycle.revoke_timeout_s + LIVENESS_GRACE_S
        # A poll waiting on Kafka (a rebalance with the coordinator away, say) is an
        # outside outage, which a restart would not help.
        if stalled > grace and not pipeline.in_poll:
            return f"consume loop stalled for {stalled:.0f}s"
        return None


class Writes(Protocol):
    """What writes results to Kafka: the publisher, or the partitions' transactions."""

    @property
    def refused(self) -> str | None:
        """Why Kafka refuses what we send, while it does."""


def _readiness(
    assignment: Assignment,
    pipeline: Pipeline,
    writes: Writes,
    stopper: Stopper,
    group_problem: str | None,
) -> str | None:
    if pipeline.kafka_problem is not None:
        return pipeline.kafka_problem
    if group_problem is not None:
        return group_problem
    if writes.refused is not None:
        return f"Kafka refuses our writes: {writes.refused}"
    if stopper.holding:
        return "stop API configuration error"
    if not assignment.joined:
        return "not a member of the consumer group"
    return None


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    if isinstance(exc, ProducerFenced):
        # aiokafka's sender of a fenced transactional producer leaves its requests'
        # futures failed and unread; the fence itself is `transaction_failed`, once.
        log.debug("fenced_producer_future", message=context.get("message"), error=repr(exc))
        return
    log.error(
        "unhandled_loop_error",
        message=context.get("message"),
        error=repr(exc) if exc is not None else None,
        exc_info=exc,
    )

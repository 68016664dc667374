"""`streamstop run`: start in dependency order, stop in reverse, every step bounded.

Start: logging → metrics/health server → HTTP client → producer → consumer → pipeline
tasks. Stop (SIGTERM/SIGINT): stop fetching → drain and commit → leave the group →
flush the producer → close HTTP → stop the health server. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from streamstop import __version__, logs
from streamstop.config import ConfigError, Settings
from streamstop.exitcodes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from streamstop.health import HealthServer
from streamstop.kafkaclients import make_consumer, make_producer
from streamstop.metrics import Metrics
from streamstop.pipeline import Pipeline
from streamstop.publisher import Publisher
from streamstop.stopclient import StopClient
from streamstop.stopper import RetryPolicy, Stopper

log = structlog.get_logger("streamstop.app")

STEP_TIMEOUT_S = 10.0
CLOSE_BUDGET_S = 5.0
MIN_CLOSE_STEP_S = 0.5
# A stuck event loop or consume loop for this long (beyond a revoke drain) fails /livez.
LIVENESS_GRACE_S = 60.0


def run(settings: Settings) -> int:
    """Run the daemon until a signal; returns the process exit code."""
    logs.configure(settings.observability.log_level, settings.observability.log_format)
    try:
        logs.register_secret(settings.api_token())
        logs.register_secret(settings.sasl_password_value())
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config_error", problem=problem)
        return EXIT_CONFIG
    _warn_without_c_extensions()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        return asyncio.run(Daemon(settings).main())
    return uvloop.run(Daemon(settings).main())


def _warn_without_c_extensions() -> None:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    if not DefaultRecordBatchBuilder.__module__.startswith("aiokafka.record._crecords"):
        log.warning(
            "aiokafka_c_extensions_missing",
            hint="aiokafka runs about 4x slower without its C extensions",
        )


class Daemon:
    """One running instance: owns every component and its lifecycle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._stop = asyncio.Event()
        self._signals = 0

    async def main(self) -> int:
        settings = self.settings
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_log_loop_exception)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

        client = StopClient(
            settings.api.url,
            token=self._token,
            timeout_s=settings.api.timeout_s,
            ca_file=settings.api.ca_file,
            max_connections=settings.batch.max_in_flight,
        )
        stopper = Stopper(
            client,
            max_in_flight=settings.batch.max_in_flight,
            max_batch_size=settings.batch.max_size,
            max_requests_per_second=settings.api.max_requests_per_second,
            policy=RetryPolicy(
                settings.retry.initial_backoff_ms,
                settings.retry.max_backoff_ms,
                settings.retry.deadline_s,
            ),
            metrics=self.metrics,
        )
        producer = make_producer(settings)
        consumer = make_consumer(settings)
        publisher = Publisher(producer, give_up_s=120.0)
        pipeline = Pipeline(settings, consumer, publisher, stopper, self.metrics)
        health = HealthServer(
            settings.observability.http_port,
            self.metrics,
            live=lambda: self._liveness(pipeline, tasks),
            ready=lambda: self._readiness(pipeline, stopper),
        )
        tasks: list[asyncio.Task[None]] = []

        await health.start()
        log.info("http_listening", port=health.port, version=__version__)
        await client.start()
        try:
            await asyncio.wait_for(producer.start(), STEP_TIMEOUT_S * 6)
            outputs = [settings.kafka.output_topic, settings.kafka.dlq_topic]
            await asyncio.wait_for(
                publisher.prepare(topic for topic in outputs if topic), STEP_TIMEOUT_S * 6
            )
            consumer.subscribe([settings.kafka.input_topic], listener=pipeline)
            await asyncio.wait_for(consumer.start(), STEP_TIMEOUT_S * 6)
        except Exception as exc:  # any start failure ends the same way
            log.error("kafka_start_failed", error=repr(exc))
            await self._close(consumer.stop, producer.stop, client.close, health.stop)
            return EXIT_FAILURE
        # Everything built so far (modules, clients, settings) lives as long as the
        # process: move it out of the collector's sight, so full collections only walk
        # objects made since. Full collections over the start-up heap took ~50 ms each,
        # a pause every in-flight record paid for.
        gc.collect()  # start-up garbage goes now, not into the frozen generation
        gc.freeze()
        tasks = [
            asyncio.create_task(pipeline.consume(), name="consume"),
            asyncio.create_task(pipeline.commit_periodically(), name="commit"),
        ]
        log.info(
            "started",
            input_topic=settings.kafka.input_topic,
            output_topic=settings.kafka.output_topic,
            group_id=settings.kafka.group_id,
        )
        failed = asyncio.create_task(pipeline.failed.wait())
        stopped = asyncio.create_task(self._stop.wait())
        await asyncio.wait([failed, stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        stopped.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                pipeline.fatal = pipeline.fatal or task.exception()

        began = time.monotonic()
        deadline = began + max(0.0, settings.lifecycle.shutdown_timeout_s - CLOSE_BUDGET_S)
        drained = False
        if pipeline.fatal is None:
            log.info("shutting_down", pending=pipeline.uncommitted())
            drained = await pipeline.drain_all(deadline)
        else:
            pipeline.stop_consuming()
        tasks[0].cancel()
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pipeline.cancel_tasks()
        end = began + settings.lifecycle.shutdown_timeout_s
        await self._close(consumer.stop, producer.stop, client.close, health.stop, until=end)
        if pipeline.fatal is not None:
            log.error("stopped_after_fatal_error", error=repr(pipeline.fatal))
            return EXIT_FAILURE
        log.info(
            "stopped",
            drained=drained,
            left_uncommitted=pipeline.uncommitted(),
            duration_ms=round((time.monotonic() - began) * 1000),
        )
        return EXIT_OK

    async def _close(
        self, *steps: Callable[[], Awaitable[Any]], until: float | None = None
    ) -> None:
        """Run close steps in order, each bounded, all of them by `until` when given (the
        shutdown budget; each step still gets a moment); a failing step does not stop
        the rest."""
        for step in steps:
            budget = CLOSE_BUDGET_S
            if until is not None:
                budget = min(budget, max(MIN_CLOSE_STEP_S, until - time.monotonic()))
            try:
                await asyncio.wait_for(step(), budget)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being cancelled ourselves
                # aiokafka's consumer.stop() can raise the CancelledError of its own
                # fetch task (cancelled in a retry sleep): that step failed, nothing more.
                log.warning("close_failed", step=step.__qualname__, error="cancelled inside")
            except Exception as exc:
                log.warning("close_failed", step=step.__qualname__, error=repr(exc))

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
        self._stop.set()

    def _liveness(self, pipeline: Pipeline, tasks: list[asyncio.Task[None]]) -> str | None:
        for task in tasks:
            if task.done():
                return f"core task {task.get_name()} ended"
        stalled = time.monotonic() - pipeline.heartbeat
        if stalled > self.settings.lifecycle.revoke_timeout_s + LIVENESS_GRACE_S:
            return f"consume loop stalled for {stalled:.0f}s"
        return None

    def _readiness(self, pipeline: Pipeline, stopper: Stopper) -> str | None:
        if stopper.config_error:
            return "stop API configuration error"
        if not pipeline.joined:
            return "not a member of the consumer group"
        return None


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    log.error(
        "unhandled_loop_error",
        message=context.get("message"),
        error=repr(exc) if exc is not None else None,
        exc_info=exc,
    )

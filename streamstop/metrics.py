"""Prometheus metrics, one registry per app instance (tests run several in one process).

Never: a label per record or per uuid (unbounded series); never a secret.
"""

from __future__ import annotations

import contextlib

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from streamstop import __version__

BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 7500, 10000)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


# `_created` series double the exposition size and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """Every metric streamstop exposes, all prefixed `streamstop_`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.records_consumed = Counter(
            "streamstop_records_consumed", "Input records consumed.", registry=r
        )
        self.invalid_records = Counter(
            "streamstop_invalid_records",
            "Input records that were not a valid cancel event.",
            registry=r,
        )
        self.results = Counter(
            "streamstop_results",
            "Result events acknowledged by Kafka, by status.",
            ["status"],
            registry=r,
        )
        self.api_requests = Counter(
            "streamstop_api_requests", "Stop API requests by outcome.", ["outcome"], registry=r
        )
        self.retries = Counter(
            "streamstop_retries",
            "Uuids scheduled for another API attempt, by reason.",
            ["reason"],
            registry=r,
        )
        self.commits = Counter("streamstop_commits", "Successful offset commits.", registry=r)
        self.dlq_records = Counter(
            "streamstop_dlq_records", "Invalid records copied to the DLQ topic.", registry=r
        )
        self.api_latency = Histogram(
            "streamstop_api_request_duration_seconds",
            "Stop API request duration.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "streamstop_batch_size",
            "Distinct uuids per stop API request.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.buffer_time = Histogram(
            "streamstop_buffer_time_seconds",
            "Time a batch waited in the buffer before sending.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.result_latency = Histogram(
            "streamstop_result_latency_seconds",
            "Time from consuming a record to its result being acknowledged.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "streamstop_in_flight_requests", "Stop API requests in flight.", registry=r
        )
        self.pending = Gauge(
            "streamstop_pending_records", "Consumed records not yet committed.", registry=r
        )
        self.batches_in_flight = Gauge(
            "streamstop_batches_in_flight",
            "Batches dispatched to the stop API and not finished.",
            registry=r,
        )
        self.dropped_records = Counter(
            "streamstop_dropped_records",
            "Unfinished records of revoked partitions taken out of in-flight work at the "
            "end of their revoke budget (left uncommitted for the new owner).",
            registry=r,
        )
        self.transactions = Counter(
            "streamstop_transactions",
            "exactly_once: transactions by outcome: committed; aborted (the results go in "
            "the next one); failed (the producer was fenced or broken: the partition's open "
            "work was dropped and is redone from its committed offset).",
            ["outcome"],
            registry=r,
        )
        self.producers = Gauge(
            "streamstop_transactional_producers",
            "exactly_once: transactional producers open (one per assigned partition).",
            registry=r,
        )
        self.paused_partitions = Gauge(
            "streamstop_paused_partitions", "Partitions paused for backpressure.", registry=r
        )
        self.consumer_lag = Gauge(
            "streamstop_consumer_lag",
            "Per assigned partition: end offset (polled, paused or not) minus the group's "
            "committed offset (or, before the first commit, where the group started).",
            ["topic", "partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            "streamstop_committed_offset",
            "Per assigned partition: the group's committed offset (or where it started).",
            ["topic", "partition"],
            registry=r,
        )
        self.offset_resets = Counter(
            "streamstop_offset_resets",
            "Partitions whose position was reset because the records at it no longer "
            "exist (deleted by retention before they were committed).",
            ["topic", "partition"],
            registry=r,
        )
        self.kafka_hold = Gauge(
            "streamstop_kafka_hold",
            "1 while Kafka cannot be used as configured (unreachable, a topic missing, "
            "authentication or authorization refused): the daemon waits, not ready.",
            registry=r,
        )
        self.config_error = Gauge(
            "streamstop_config_error",
            "1 while the stop API answers with a configuration error (auth, URL, breaker).",
            registry=r,
        )
        self.ready = Gauge("streamstop_ready", "1 when /readyz answers 200.", registry=r)
        self.build_info = Gauge(
            "streamstop_build_info", "Build information.", ["version"], registry=r
        )
        self.build_info.labels(version=__version__).set(1)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop per-partition series of a partition this instance no longer owns (its
        new owner exports them)."""
        for gauge in (self.consumer_lag, self.committed_offset):
            with contextlib.suppress(KeyError):
                gauge.remove(topic, str(partition))

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)

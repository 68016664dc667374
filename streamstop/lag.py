"""Per-partition lag and committed offsets, from assignment on (SPEC "Operations").

Every assigned partition has a `streamstop_consumer_lag` and `streamstop_committed_offset`
series as soon as its starting position is known (the committed offset, or for a new
group the reset position), so an alert sees a partition that never commits. End offsets
are asked for every LAG_INTERVAL_S, whether the partition is paused or not: the consumer's
own high watermark only moves with fetches, and paused partitions are not fetched.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka.errors import KafkaError

from streamstop.metrics import Metrics
from streamstop.outages import Failing
from streamstop.partitions import Assignment

log = structlog.get_logger("streamstop.lag")

LAG_INTERVAL_S = 5.0
END_OFFSETS_TIMEOUT_S = 5.0


class LagMonitor:
    """Keeps the per-partition lag and committed-offset gauges current."""

    def __init__(self, consumer: Any, assignment: Assignment, metrics: Metrics) -> None:
        self._consumer = consumer
        self._assignment = assignment
        self._metrics = metrics
        self._failing = Failing("brokers do not answer end-offset requests")

    @property
    def problem(self) -> str | None:
        """Why the brokers have not answered for a while, while they do not."""
        return self._failing.problem

    async def run(self) -> None:
        """Refresh every LAG_INTERVAL_S until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(LAG_INTERVAL_S)

    async def refresh(self) -> None:
        known = {
            part.tp: part.committed
            for part in self._assignment.parts.values()
            if part.committed is not None
        }
        if not known:
            return
        try:
            ends = await asyncio.wait_for(
                self._consumer.end_offsets(list(known)), END_OFFSETS_TIMEOUT_S
            )
        except (KafkaError, TimeoutError) as exc:
            if self._failing.failed(repr(exc)):
                log.warning("end_offsets_failed", error=repr(exc))
            return
        self._failing.succeeded()
        metrics = self._metrics
        for tp, end in ends.items():
            part = self._assignment.parts.get(tp)
            if part is None or part.committed is None:
                continue  # revoked meanwhile
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            metrics.committed_offset.labels(**labels).set(part.committed)
            metrics.consumer_lag.labels(**labels).set(max(0, end - part.committed))

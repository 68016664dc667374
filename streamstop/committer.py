"""Committing input offsets: each partition's fully done prefix, never past a record
that is not done (SPEC "Delivery guarantees").

1. Each partition's offset tracker says where its done prefix ends (`commit_point`).
2. Those offsets are committed in one request, bounded by a time budget: aiokafka retries
   a commit for as long as the coordinator is away, which would hold shutdown and revokes
   hostage.
3. Only an acknowledged commit moves the trackers' committed mark, which never goes back.
A revoked partition is never committed: its tracker is an orphan. This module decides
nothing else and never publishes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamstop.metrics import Metrics
from streamstop.outages import Failing
from streamstop.partitions import Assignment, Partition

log = structlog.get_logger("streamstop.committer")

COMMIT_INTERVAL_S = 0.25
COMMIT_TIMEOUT_S = 10.0
MIN_COMMIT_TIMEOUT_S = 1.0


class Committer:
    """Commits what is done, every COMMIT_INTERVAL_S and when asked (revoke, shutdown)."""

    def __init__(self, consumer: Any, assignment: Assignment, metrics: Metrics) -> None:
        self._consumer = consumer
        self._assignment = assignment
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._failing = Failing("commits fail")

    @property
    def problem(self) -> str | None:
        """Why commits have been failing for a while (the group coordinator away, a
        group ACL taken away), while they do."""
        return self._failing.problem

    async def run(self) -> None:
        """Commit what is done every COMMIT_INTERVAL_S, until cancelled."""
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self.commit()

    async def commit(
        self, parts: Sequence[Partition] | None = None, timeout_s: float = COMMIT_TIMEOUT_S
    ) -> bool:
        """Commit each partition's done prefix; False if Kafka refused or did not answer
        within `timeout_s`. Waiting for another commit in progress counts against the
        same budget."""
        began = time.monotonic()
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout_s)
        except TimeoutError:
            log.warning("commit_timed_out", timeout_s=timeout_s, waiting="another commit")
            return False
        try:
            left = max(0.1, timeout_s - (time.monotonic() - began))
            chosen = list(self._assignment.parts.values()) if parts is None else parts
            return await self._commit(chosen, left)
        finally:
            self._lock.release()

    async def _commit(self, parts: Sequence[Partition], timeout_s: float) -> bool:
        offsets: dict[TopicPartition, int] = {}
        owners: dict[TopicPartition, Partition] = {}
        for part in parts:
            point = part.tracker.commit_point()
            if point is not None and not part.revoked:
                offsets[part.tp] = point
                owners[part.tp] = part
        if not offsets:
            return True
        try:
            await asyncio.wait_for(self._consumer.commit(offsets), timeout_s)
        except KafkaError as exc:
            if self._failing.failed(repr(exc)):
                log.warning("commit_failed", error=repr(exc), partitions=len(offsets))
            return False
        except TimeoutError:
            if self._failing.failed(f"no answer within {timeout_s:g} s"):
                log.warning("commit_timed_out", timeout_s=timeout_s, partitions=len(offsets))
            return False
        self._failing.succeeded()
        self._metrics.commits.inc()
        for tp, offset in offsets.items():
            part = owners[tp]
            part.tracker.mark_committed(offset)
            part.committed = offset
            self._metrics.committed_offset.labels(topic=tp.topic, partition=str(tp.partition)).set(
                offset
            )
        return True


def commit_budget(deadline: float) -> float:
    """Time left for a commit before `deadline`, never less than a last short try."""
    return min(COMMIT_TIMEOUT_S, max(MIN_COMMIT_TIMEOUT_S, deadline - time.monotonic()))

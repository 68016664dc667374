"""What happens when the consumer group moves partitions (SPEC "Operations").

Assigned partitions start POSITIONING, paused until their starting offset is known.
Revoked ones are drained within `lifecycle.revoke_timeout_s`: what is buffered is sent,
in-flight work may finish, what is done is committed, and then the partitions are
revoked: their unfinished records leave every in-flight batch, uncommitted, for the new
owner. Nothing here waits longer than the revoke budget.

Never: let a revoked partition's work outlive its revoke budget, or commit a revoked
partition after it is released.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

from streamstop.committer import Committer, commit_budget
from streamstop.metrics import Metrics
from streamstop.partitions import Assignment, Partition

log = structlog.get_logger("streamstop.rebalance")

Drain = Callable[[Sequence[Partition], float], Awaitable[bool]]


# aiokafka checks the listener's class; its types are unknown to mypy.
class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Moves partitions through their lifecycle when the group rebalances."""

    def __init__(
        self,
        consumer: Any,
        assignment: Assignment,
        committer: Committer,
        metrics: Metrics,
        *,
        drain: Drain,
        position: Callable[[list[Partition]], None],
        revoke_timeout_s: float,
    ) -> None:
        self._consumer = consumer
        self._assignment = assignment
        self._committer = committer
        self._metrics = metrics
        self._drain = drain
        self._position = position
        self._revoke_timeout_s = revoke_timeout_s

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """New generation: fresh partitions, paused until positioned."""
        parts = self._assignment.assign(assigned)
        if parts:
            self._consumer.pause(*assigned)
            self._position(parts)
        log.info("partitions_assigned", partitions=_names(assigned))

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Drain within the revoke budget, commit, then revoke."""
        parts = self._assignment.begin_drain(revoked)
        if not parts:
            return
        began = time.monotonic()
        deadline = began + self._revoke_timeout_s
        drained = await self._drain(parts, deadline)
        await self._committer.commit(parts, commit_budget(deadline))
        left = self._assignment.unfinished(parts)
        dropped = self._assignment.revoke(parts)
        self._metrics.dropped_records.inc(dropped)
        for part in parts:
            self._metrics.forget_partition(part.tp.topic, part.tp.partition)
        log.info(
            "partitions_revoked",
            partitions=_names(revoked),
            drained=drained,
            left_uncommitted=left,
            dropped_records=dropped,
            duration_ms=round((time.monotonic() - began) * 1000),
        )


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)

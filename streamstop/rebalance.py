"""What happens when the consumer group moves partitions (SPEC "Operations").

Assigned partitions start POSITIONING, paused until their starting offset is known.
Revoked ones are drained within `lifecycle.revoke_timeout_s`: what is buffered is sent,
in-flight work may finish, what is done is committed, and then the partitions are
revoked: their unfinished records leave every in-flight batch, uncommitted, for the new
owner. Nothing here waits longer than the revoke budget.

Under `exactly_once` each assigned partition gets a sink whose transactional producer
starts (fencing the previous owner) before the partition's committed offset is read;
revoked partitions commit what may go in a last transaction, and producers of
partitions the group gives back are kept. A partition whose producer fails (fenced)
has its open work dropped as at a revoke and starts again, from its committed offset,
after a delay, unless a rebalance is taking it away.

Never: let a revoked partition's work outlive its revoke budget, or commit a revoked
partition after it is released.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence, Set
from typing import Any, Protocol

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import IllegalStateError

from streamstop.committer import commit_budget
from streamstop.metrics import Metrics
from streamstop.partitions import Assignment, Partition, Phase
from streamstop.transactions import Transactions

log = structlog.get_logger("streamstop.rebalance")

Drain = Callable[[Sequence[Partition], float], Awaitable[bool]]


class Commits(Protocol):
    """Commits what is done of partitions: the committer, or under `exactly_once` the
    partitions' last transactions."""

    async def commit(
        self, parts: Sequence[Partition] | None = None, timeout_s: float = ...
    ) -> bool:
        """False if Kafka refused or did not answer within `timeout_s`."""

    @property
    def problem(self) -> str | None:
        """Why commits have been failing for a while, while they do (readiness)."""


# aiokafka checks the listener's class; its types are unknown to mypy.
class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Moves partitions through their lifecycle when the group rebalances."""

    def __init__(
        self,
        consumer: Any,
        assignment: Assignment,
        committer: Commits,
        metrics: Metrics,
        *,
        drain: Drain,
        position: Callable[[list[Partition]], None],
        revoke_timeout_s: float,
        rate_share: Callable[[Set[TopicPartition]], Awaitable[None]],
        transactions: Transactions | None = None,
    ) -> None:
        self._consumer = consumer
        self._assignment = assignment
        self._committer = committer
        self._metrics = metrics
        self._drain = drain
        self._position = position
        self._revoke_timeout_s = revoke_timeout_s
        self._rate_share = rate_share
        self._transactions = transactions
        if transactions is not None:
            transactions.restart = self.restart

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """New generation: fresh partitions paused until positioned (under
        `exactly_once`, until their producer started and fenced older owners), then this
        member's share of the API rate. Taken in and paused before anything is awaited:
        aiokafka may fetch the new partitions meanwhile, and records of a partition the
        pipeline does not know yet would be skipped."""
        parts = self._assignment.assign(assigned)
        if self._transactions is not None:
            _tell_sticky_assignor_the_generation(self._consumer)
            self._transactions.keep_only(assigned)
        if parts:
            self._consumer.pause(*assigned)
            if self._transactions is not None:
                self._transactions.open(parts, self._position)
            else:
                self._position(parts)
        log.info("partitions_assigned", partitions=_names(assigned))
        await self._rate_share(assigned)

    def restart(self, part: Partition, delay_s: float) -> None:
        """`exactly_once`: the partition's producer failed (fenced). Its open work is
        dropped, uncommitted; unless a rebalance is taking it away, it starts again after
        `delay_s` with a new producer, from its committed offset."""
        again = part.phase is not Phase.DRAINING and self._assignment.parts.get(part.tp) is part
        dropped = self._assignment.revoke([part])
        self._metrics.dropped_records.inc(dropped)
        if not again or self._transactions is None:
            return
        try:
            self._consumer.pause(part.tp)
        except IllegalStateError:
            return  # the group took it away meanwhile
        self._transactions.open(self._assignment.assign([part.tp]), self._position, delay_s)
        log.info("partition_restarting", partition=part.name, delay_s=delay_s, dropped=dropped)

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
            # exactly_once: what the drain left decided is committed by the last transaction.
            drained=drained or not left,
            left_uncommitted=left,
            dropped_records=dropped,
            duration_ms=round((time.monotonic() - began) * 1000),
        )


def _tell_sticky_assignor_the_generation(consumer: Any) -> None:
    """aiokafka never tells its sticky assignor the generation it joined: every member
    then claims its partitions at generation -1, and a member back from a pause claims its
    old partitions as strongly as their new owner does (the assignor picks one of the two
    and logs a warning). Told, the newer claim wins, as the assignor intends."""
    StickyPartitionAssignor.on_generation_assignment(consumer._coordinator.generation)


def _names(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)

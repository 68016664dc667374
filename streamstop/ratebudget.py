"""This member's part of the consumer group's stop API rate budget (`api.rate_scope`).

With `group`, `api.max_requests_per_second` is the whole group's: on every new assignment
the member takes the share of its partitions (assigned / all partitions of the input
topic) and caps its own throttle at that part. Kafka's eager rebalance protocol has every
member give its partitions up (and drain them, at its old share) before any member gets
new ones, so the shares in force never add up to more than the whole budget; a member
with no partitions, starting up or between generations, starts no request. With `pod`
(the old meaning) each process has the whole budget. A Retry-After still holds only the
process that got it (`core/throttle.py`).

Never: give a member more than its partitions' share in group scope, or hold up a
rebalance longer than one short describe of the input topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set
from typing import Any

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamstop.core.throttle import Throttle
from streamstop.topics import describe_topics

log = structlog.get_logger("streamstop.ratebudget")

# Describing the input topic happens inside the rebalance callback: keep it short.
DESCRIBE_TIMEOUT_S = 5.0


class RateShare:
    """Sets the throttle's share of the budget whenever the group assigns partitions."""

    def __init__(
        self,
        throttle: Throttle,
        admin: Any,
        input_topic: str,
        *,
        budget: float,
        scope: str,
        partitions: int,
    ) -> None:
        self._throttle = throttle
        self._admin = admin
        self._topic = input_topic
        self._budget = budget
        self._active = scope == "group" and budget > 0
        self._partitions = partitions  # the input topic's count, as last described
        if self._active:
            throttle.set_share(0.0)  # nothing assigned yet: nothing to send

    async def assigned(self, tps: Set[TopicPartition]) -> None:
        """The group's new generation gave this member `tps`: take their share."""
        if not self._active:
            return
        mine = [tp for tp in tps if tp.topic == self._topic]
        total = await self._partition_count(mine)
        share = len(mine) / total
        self._throttle.set_share(share)
        log.info(
            "api_rate_share",
            partitions=len(mine),
            of_partitions=total,
            requests_per_second=round(self._budget * share, 3),
        )

    async def _partition_count(self, mine: list[TopicPartition]) -> int:
        """The input topic's partition count now (partitions may have been added): described
        afresh; if Kafka does not answer in time, the last count known, which is at least
        the highest partition assigned plus one."""
        try:
            described = await asyncio.wait_for(
                describe_topics(self._admin, [self._topic]), DESCRIBE_TIMEOUT_S
            )
            self._partitions = described[self._topic].partitions
        except (KafkaError, TimeoutError, KeyError) as exc:
            log.warning(
                "input_partitions_not_described",
                topic=self._topic,
                error=repr(exc),
                assumed=self._partitions,
            )
        return max(self._partitions, 1, *(int(tp.partition) + 1 for tp in mine))

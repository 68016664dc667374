"""What streamstop needs of its topics, as pure rules: a described topic in, findings out.

No I/O: `streamstop topics create|check` and the daemon's start-up check describe the
topics (`streamstop.topics.describe_topics`) and ask these rules what is wrong. A
*problem* makes a topic unusable as configured (the results could not be published, or
would be merged or refused); a *warning* is a risk worth knowing (no redundancy, writes
that stop when one broker is down).

Never: pass a topic streamstop could not write to as configured (compacted output,
min.insync.replicas above its replicas).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Smallest record a result event or a DLQ copy needs: the result JSON with a long topic
# name (~700 bytes) plus the record and batch overhead. Below it nothing can be published.
MIN_RECORD_BYTES = 1024
# Replicas a write with acks=all must reach: 2 where the replication factor leaves one
# broker to spare, so one broker down never stops writes and an acknowledged write
# survives the loss of its leader.
PREFERRED_MIN_INSYNC = 2


class Role(enum.StrEnum):
    """What streamstop does with a topic; the value is the config key that names it."""

    INPUT = "kafka.input_topic"
    OUTPUT = "kafka.output_topic"
    DLQ = "kafka.dlq_topic"

    @property
    def written(self) -> bool:
        """True for the topics streamstop produces to (acks=all, idempotent)."""
        return self is not Role.INPUT


class Severity(enum.StrEnum):
    """How bad a finding is: a problem makes the topic unusable as configured."""

    PROBLEM = "problem"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """The facts about a topic the rules look at (effective values, broker defaults included).

    `max_message_bytes` is None when unknown (a topic not created yet, with the broker's
    default).
    """

    name: str
    partitions: int
    replication_factor: int
    cleanup_policy: str
    min_insync_replicas: int
    max_message_bytes: int | None

    @property
    def compacted(self) -> bool:
        """True when Kafka compacts the topic (`compact`, alone or with `delete`)."""
        return "compact" in {policy.strip() for policy in self.cleanup_policy.split(",")}

    def summary(self) -> str:
        """One line of the facts, for a report."""
        size = "broker default" if self.max_message_bytes is None else self.max_message_bytes
        return (
            f"{self.partitions} partitions, replication factor {self.replication_factor}, "
            f"min.insync.replicas {self.min_insync_replicas}, "
            f"cleanup.policy {self.cleanup_policy}, max.message.bytes {size}"
        )


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with a topic, in plain words."""

    severity: Severity
    text: str


_NULL_KEYS = {
    Role.OUTPUT: "the results of invalid input",
    Role.DLQ: "the copies of unkeyed invalid input",
}


def recommended_min_insync(replication_factor: int) -> int:
    """`min.insync.replicas` for a topic streamstop writes: min(2, RF - 1), at least 1."""
    return max(1, min(PREFERRED_MIN_INSYNC, replication_factor - 1))


def creation_configs(replication_factor: int) -> dict[str, str]:
    """Topic configs `streamstop topics create` sets on every topic it creates."""
    return {
        "cleanup.policy": "delete",
        "min.insync.replicas": str(recommended_min_insync(replication_factor)),
    }


def review(
    role: Role,
    name: str,
    topic: TopicDescription | None,
    input_topic: TopicDescription | None = None,
    *,
    visible: bool = True,
) -> list[Finding]:
    """What is wrong with `topic` (None: not found) for the `role` it plays.

    `input_topic`, when known, lets the output and DLQ topics' size limits be compared
    with the largest input record. `visible` False says Kafka refused to describe the topic
    (no Describe ACL): it may exist.
    """
    if topic is None:
        return [_missing(role, name) if visible else _hidden(role)]
    findings = _redundancy(topic)
    if role.written:
        findings += _writes(role, topic) + _sizes(role, topic, input_topic)
    elif topic.compacted:
        findings.append(
            Finding(
                Severity.WARNING,
                f"is compacted (cleanup.policy={topic.cleanup_policy}): Kafka may delete "
                "a cancel request before streamstop reads it when a later record has the "
                "same key; cleanup.policy=delete keeps every request",
            )
        )
    return findings


def has_problems(findings: list[Finding]) -> bool:
    """True when any finding makes the topic unusable."""
    return any(finding.severity is Severity.PROBLEM for finding in findings)


def _missing(role: Role, name: str) -> Finding:
    how = "`streamstop topics create` creates it" + (
        "" if role is Role.INPUT else " (streamstop does not create topics when it runs)"
    )
    return Finding(
        Severity.PROBLEM,
        f"does not exist: {how}; or set {role.value} to the topic you use instead of {name!r}",
    )


def _hidden(role: Role) -> Finding:
    needs = "Read" if role is Role.INPUT else "Write"
    return Finding(
        Severity.PROBLEM,
        "is not visible to this Kafka user (not authorized to describe it); if it exists, "
        f"grant the user Describe, DescribeConfigs and {needs} on it (docs/cluster.md, "
        "step 4)",
    )


def _redundancy(topic: TopicDescription) -> list[Finding]:
    if topic.replication_factor > 1:
        return []
    return [
        Finding(
            Severity.WARNING,
            "has replication factor 1: while its one broker is down the topic is "
            "unavailable, and losing that broker's disk loses the topic; use 3 in production",
        )
    ]


def _writes(role: Role, topic: TopicDescription) -> list[Finding]:
    findings: list[Finding] = []
    rf, min_insync = topic.replication_factor, topic.min_insync_replicas
    wanted = recommended_min_insync(rf)
    fix = f"set min.insync.replicas={wanted}"
    if topic.compacted:
        findings.append(
            Finding(
                Severity.PROBLEM,
                f"is compacted (cleanup.policy={topic.cleanup_policy}): Kafka refuses "
                f"records with a null key ({_NULL_KEYS[role]}) and compaction would merge "
                "the records of different inputs with the same key; set cleanup.policy=delete",
            )
        )
    if min_insync > rf:
        findings.append(
            Finding(
                Severity.PROBLEM,
                f"has min.insync.replicas={min_insync} but only {rf} replica(s): Kafka refuses "
                "every write with acks=all (how streamstop publishes), so nothing could be "
                f"published; {fix}",
            )
        )
    elif min_insync == rf > 1:
        findings.append(
            Finding(
                Severity.WARNING,
                f"has min.insync.replicas={min_insync}, all of its {rf} replicas: while any "
                "one broker is down Kafka refuses streamstop's writes (acks=all) and "
                f"processing stops; {fix}",
            )
        )
    elif min_insync < wanted:
        findings.append(
            Finding(
                Severity.WARNING,
                f"has min.insync.replicas={min_insync}: a write is acknowledged once one "
                "broker has it, so losing that broker before the others copy a result "
                f"loses the result while its input is already committed; {fix}",
            )
        )
    return findings


def _sizes(
    role: Role, topic: TopicDescription, input_topic: TopicDescription | None
) -> list[Finding]:
    limit = topic.max_message_bytes
    if limit is None:
        return []
    if limit < MIN_RECORD_BYTES:
        return [
            Finding(
                Severity.PROBLEM,
                f"has max.message.bytes={limit}: too small for any "
                f"{'result event' if role is Role.OUTPUT else 'DLQ copy'} "
                f"(at least {MIN_RECORD_BYTES} bytes); raise it (the broker default is 1048588)",
            )
        ]
    largest_input = None if input_topic is None else input_topic.max_message_bytes
    if largest_input is None or limit >= largest_input:
        return []
    what = (
        "the results of the largest input records are published without their copied input headers"
        if role is Role.OUTPUT
        else "copies of the largest invalid records are cut to fit (header streamstop-truncated)"
    )
    return [
        Finding(
            Severity.WARNING,
            f"has max.message.bytes={limit}, below the input topic's {largest_input}: {what}; "
            f"set max.message.bytes={largest_input} to keep them whole",
        )
    ]

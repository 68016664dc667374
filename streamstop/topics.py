"""The topics streamstop uses, as Kafka describes them: read, reviewed, created.

The rules (what a topic must be) are pure, in `core/topicrules.py`; this module asks the
admin client. Nothing here creates a topic by naming it: metadata is asked for every
topic, as a request naming a missing one lets a broker with `auto.create.topics.enable`
create it. The daemon's start-up check (`usable_topics`) and its record-size limits
(`TopicLimits`) live here; the `streamstop topics` command is `topics_command.py`.

Never: name a topic in a metadata request (that may create it), or alter one that exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    BrokerResponseError,
    ClusterAuthorizationFailedError,
    InvalidReplicationFactorError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from streamstop.config import ConfigError, Settings
from streamstop.core.topicrules import (
    MIN_RECORD_BYTES,
    Finding,
    Role,
    Severity,
    TopicDescription,
    creation_configs,
    review,
)

log = structlog.get_logger("streamstop.topics")

# The topic configs the rules read; describe_configs returns their effective values.
_CONFIGS = ("cleanup.policy", "min.insync.replicas", "max.message.bytes")
_POLL_INTERVAL_S = 0.2
# Kafka's default `message.max.bytes`, for a topic whose configuration we may not read.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
# Replication factor when none is given: 3, or every broker of a smaller cluster.
PREFERRED_REPLICATION_FACTOR = 3


AUTHORIZATION_ERRORS = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)


class KafkaRefused(Exception):
    """Kafka is unreachable or refused a request; the message says what to check."""


class TopicsRefused(Exception):
    """The requested topics cannot be made as asked (bad partitions, factor or configs)."""


@dataclass(frozen=True, slots=True)
class TopicReport:
    """One configured topic: what it is (None: missing) and what is wrong with it."""

    role: Role
    name: str
    described: TopicDescription | None
    findings: list[Finding]
    # Whether `topics create` made it (None for `topics check`).
    created: bool | None = None


def topic_names(settings: Settings) -> dict[Role, str]:
    """The topics the configuration names, by role (the DLQ only when it is on)."""
    kafka = settings.kafka
    names = {Role.INPUT: kafka.input_topic, Role.OUTPUT: kafka.output_topic}
    if kafka.dlq_topic:
        names[Role.DLQ] = kafka.dlq_topic
    return names


async def describe_topics(admin: Any, names: Sequence[str]) -> dict[str, TopicDescription]:
    """Describe the topics among `names` that exist (missing ones are left out).

    Partitions and replication factor come from metadata, `cleanup.policy`,
    `min.insync.replicas` and `max.message.bytes` from describe_configs (effective values:
    topic overrides or the broker's defaults). Never creates a topic: metadata is asked for
    all topics, as a request naming a missing topic lets a broker auto-create it.
    """
    wanted = set(names)
    metadata = await admin.describe_topics()
    found = {t["topic"]: t for t in metadata if t["topic"] in wanted and t["error_code"] == 0}
    if not found:
        return {}
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(_CONFIGS)) for name in found
    ]
    configs: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] == TopicAuthorizationFailedError.errno:
                # No DescribeConfigs permission: Kafka's defaults are assumed (the docs
                # list the ACL); a topic lowering max.message.bytes is then found out when
                # it refuses a record, and read again then.
                log.warning(
                    "topic_config_not_readable",
                    topic=resource["resource_name"],
                    hint="grant DescribeConfigs on the topic; assuming Kafka's defaults",
                )
                configs[resource["resource_name"]] = {}
                continue
            if resource["error_code"] != 0:
                error = for_code(resource["error_code"])
                raise error(f"describe configs of topic {resource['resource_name']!r}")
            configs[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
            }
    return {name: _description(topic, configs[name]) for name, topic in found.items()}


def _description(metadata: dict[str, Any], configs: dict[str, str]) -> TopicDescription:
    partitions = metadata["partitions"]
    return TopicDescription(
        name=metadata["topic"],
        partitions=len(partitions),
        replication_factor=max((len(p["replicas"]) for p in partitions), default=0),
        cleanup_policy=configs.get("cleanup.policy", "delete"),
        min_insync_replicas=int(configs.get("min.insync.replicas", "1")),
        max_message_bytes=int(configs["max.message.bytes"])
        if "max.message.bytes" in configs
        else None,
    )


async def review_topics(admin: Any, settings: Settings) -> list[TopicReport]:
    """Describe the configured topics and review each against what streamstop needs."""
    names = topic_names(settings)
    described = await describe_topics(admin, list(names.values()))
    hidden = await hidden_topics(admin, [name for name in names.values() if name not in described])
    input_topic = described.get(names[Role.INPUT])
    return [
        TopicReport(
            role,
            name,
            described.get(name),
            review(role, name, described.get(name), input_topic, visible=name not in hidden),
        )
        for role, name in names.items()
    ]


async def hidden_topics(admin: Any, names: Sequence[str]) -> set[str]:
    """Among topics metadata does not list, those Kafka will not say anything about to this
    user (no Describe ACL): they may exist. The others do not exist."""
    if not names:
        return set()
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, {"cleanup.policy": None}) for name in names
    ]
    return {
        resource["resource_name"]
        for response in await admin.describe_configs(resources)
        for resource in response.to_object()["resources"]
        if resource["error_code"] == TopicAuthorizationFailedError.errno
    }


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """What `topics create` was asked for."""

    partitions: int
    replication_factor: int | None  # None: PREFERRED_REPLICATION_FACTOR or every broker
    extra_configs: dict[str, str]


async def create_topics(admin: Any, settings: Settings, request: CreateRequest) -> set[str]:
    """Create the configured topics that do not exist yet; returns the names created.

    Every new topic gets `cleanup.policy=delete` and `min.insync.replicas` = min(2, RF-1)
    (at least 1), then `request.extra_configs`. Raises TopicsRefused, creating nothing,
    when a planned topic would be unusable (a compacted output or DLQ topic, say).
    """
    names = topic_names(settings)
    rf = request.replication_factor or await _default_replication_factor(admin)
    configs = {**creation_configs(rf), **request.extra_configs}
    refusals = [
        f"{name} ({role.value}) {finding.text}"
        for role, name in names.items()
        for finding in review(role, name, _planned(name, request.partitions, rf, configs))
        if finding.severity is Severity.PROBLEM
    ]
    if refusals:
        raise TopicsRefused("refusing to create the topics:\n  " + "\n  ".join(refusals))
    existing = await describe_topics(admin, list(names.values()))
    missing = [name for name in names.values() if name not in existing]
    if not missing:
        return set()
    new = [NewTopic(name, request.partitions, rf, topic_configs=configs) for name in missing]
    response = await admin.create_topics(new)
    created = {topic for topic, code, _ in response.topic_errors if code == 0}
    # Another client may have made a topic meanwhile: it is checked like any existing one.
    errors = [
        (for_code(code), topic, message)
        for topic, code, message in response.topic_errors
        if code not in (0, TopicAlreadyExistsError.errno)
    ]
    if errors:
        raise _create_error(errors, created, rf)
    await _wait_for_leaders(admin, created)
    return created


def _planned(name: str, partitions: int, rf: int, configs: dict[str, str]) -> TopicDescription:
    try:
        return TopicDescription(
            name=name,
            partitions=partitions,
            replication_factor=rf,
            cleanup_policy=configs["cleanup.policy"],
            min_insync_replicas=int(configs["min.insync.replicas"]),
            max_message_bytes=int(configs["max.message.bytes"])
            if "max.message.bytes" in configs
            else None,
        )
    except ValueError:
        raise TopicsRefused(
            "--topic-config min.insync.replicas and max.message.bytes must be whole numbers"
        ) from None


async def _default_replication_factor(admin: Any) -> int:
    brokers = len((await admin.describe_cluster())["brokers"])
    return max(1, min(PREFERRED_REPLICATION_FACTOR, brokers))


def _create_error(
    errors: list[tuple[type[BrokerResponseError], str, str | None]], created: set[str], rf: int
) -> Exception:
    lines = []
    for error, topic, message in errors:
        line = f"Kafka refused to create topic {topic!r}: {message or error.description}"
        if error is InvalidReplicationFactorError:
            line += f" (replication factor {rf}: choose it with --replication-factor N)"
        lines.append(line)
    if created:
        lines.append(f"created meanwhile: {', '.join(sorted(created))}")
    text = "\n".join(lines)
    if any(error in AUTHORIZATION_ERRORS for error, _, _ in errors):
        return KafkaRefused(
            f"{text}\nthe user needs the Create operation on the topics or the cluster "
            "(docs/cluster.md, ACLs), or ask the cluster's admins to run this command"
        )
    return TopicsRefused(text)


async def _wait_for_leaders(admin: Any, topics: set[str]) -> None:
    # A topic is usable once every partition has a leader; until then writes fail.
    while topics:
        metadata = await admin.describe_topics()
        ready = {
            t["topic"]
            for t in metadata
            if t["topic"] in topics
            and t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready == topics:
            return
        await asyncio.sleep(_POLL_INTERVAL_S)


class TopicMissing(Exception):
    """Topics streamstop needs do not exist (yet), or this user may not see them."""


async def usable_topics(admin: Any, settings: Settings) -> dict[str, TopicDescription]:
    """The daemon's start-up check: every configured topic, described. Raises TopicMissing
    (a hold: they may appear) and ConfigError for a problem of a topic streamstop writes
    (a compacted output or DLQ topic, say: exit 2). Warnings are logged."""
    reports = await review_topics(admin, settings)
    absent = [report for report in reports if report.described is None]
    if absent:
        raise TopicMissing(
            "; ".join(f"topic {r.name!r} ({r.role.value}) {r.findings[0].text}" for r in absent)
        )
    problems: list[str] = []
    for report in reports:
        for finding in report.findings:
            if finding.severity is Severity.PROBLEM and report.role.written:
                problems.append(f"{report.role.value}: topic {report.name!r} {finding.text}")
            else:
                log.warning("topic_warning", topic=report.name, warning=finding.text)
    if problems:
        raise ConfigError(problems)
    return {report.name: report.described for report in reports if report.described}


class TopicLimits:
    """Each written topic's effective `max.message.bytes` (the publisher's `Limits`)."""

    def __init__(self, admin: Any, topics: dict[str, TopicDescription]) -> None:
        self._admin = admin
        self._limits = {name: topic.max_message_bytes for name, topic in topics.items()}

    def max_message_bytes(self, topic: str) -> int:
        return self._limits.get(topic) or DEFAULT_MAX_MESSAGE_BYTES

    async def refused(self, topic: str, batch_bytes: int) -> None:
        """Kafka refused a batch of `batch_bytes` as too large for `topic`: read the
        limit again (an operator may have lowered it). When that tells nothing new (the
        configuration may not be read, say), halve what was refused instead, down to
        the smallest limit streamstop accepts: batches shrink until Kafka takes them."""
        try:
            described = await describe_topics(self._admin, [topic])
        except (KafkaError, TimeoutError) as exc:
            log.warning("topic_limit_not_refreshed", topic=topic, error=repr(exc))
            described = {}
        limit = described[topic].max_message_bytes if topic in described else None
        if limit is None or limit >= batch_bytes:
            limit = max(MIN_RECORD_BYTES, min(self.max_message_bytes(topic), batch_bytes) // 2)
        self._limits[topic] = limit

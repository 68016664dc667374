"""What the daemon needs to know about its topics before any client names them.

aiokafka's metadata requests ask the broker to create a topic they name, so a misspelt
topic on a broker with `auto.create.topics.enable=true` would silently appear with one
partition. Topics are therefore checked first through DescribeConfigs, which never
creates anything: whether each exists, the output and DLQ topics' `cleanup.policy`
(compacted is a configuration error: exit 2) and their effective `max.message.bytes`,
which sizes every record batch the publisher builds and is read again when Kafka refuses
one as too large.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code

log = structlog.get_logger("streamstop.cluster")

MAX_MESSAGE_BYTES = "max.message.bytes"
CLEANUP_POLICY = "cleanup.policy"
UNKNOWN_TOPIC = 3
TOPIC_AUTHORIZATION_FAILED = 29
DESCRIBE_TIMEOUT_S = 10.0
# Used when the topic's configuration may not be described (no DescribeConfigs ACL):
# Kafka's default `message.max.bytes`.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """The settings streamstop depends on, as the broker applies them."""

    name: str
    cleanup_policy: str
    max_message_bytes: int

    @property
    def compacted(self) -> bool:
        return "compact" in self.cleanup_policy


class TopicMissing(Exception):
    """A topic streamstop needs does not exist (yet)."""

    def __init__(self, topics: list[str]) -> None:
        super().__init__(f"topic {', '.join(topics)} does not exist")
        self.topics = topics


async def describe_topics(admin: Any, topics: Iterable[str]) -> dict[str, TopicConfig]:
    """Each topic's settings. Raises TopicMissing naming every topic that does not exist,
    and KafkaError when Kafka cannot answer. A topic whose configuration we may not read
    (no DescribeConfigs permission) gets the broker defaults, with a warning."""
    names = list(dict.fromkeys(topics))
    resources = [
        ConfigResource(
            ConfigResourceType.TOPIC, name, {MAX_MESSAGE_BYTES: None, CLEANUP_POLICY: None}
        )
        for name in names
    ]
    responses = await asyncio.wait_for(admin.describe_configs(resources), DESCRIBE_TIMEOUT_S)
    found: dict[str, TopicConfig] = {}
    missing: list[str] = []
    for response in responses:
        for resource in response.to_object()["resources"]:
            name = resource["resource_name"]
            code = resource["error_code"]
            if code == UNKNOWN_TOPIC:
                missing.append(name)
                continue
            if code == TOPIC_AUTHORIZATION_FAILED:
                log.warning(
                    "topic_config_not_readable",
                    topic=name,
                    hint="grant DescribeConfigs on the topic; assuming Kafka's defaults",
                )
                found[name] = TopicConfig(name, "delete", DEFAULT_MAX_MESSAGE_BYTES)
                continue
            if code != 0:
                raise for_code(code)(f"describing topic {name!r}: {resource['error_message']}")
            entries = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
            found[name] = TopicConfig(
                name,
                entries.get(CLEANUP_POLICY) or "delete",
                int(entries.get(MAX_MESSAGE_BYTES) or DEFAULT_MAX_MESSAGE_BYTES),
            )
    if missing:
        raise TopicMissing(sorted(missing))
    return found


class TopicLimits:
    """Each output topic's effective `max.message.bytes` (the publisher's `Limits`)."""

    def __init__(self, admin: Any, configs: dict[str, TopicConfig]) -> None:
        self._admin = admin
        self._limits = {name: config.max_message_bytes for name, config in configs.items()}

    def max_message_bytes(self, topic: str) -> int:
        return self._limits.get(topic, DEFAULT_MAX_MESSAGE_BYTES)

    async def refresh(self, topic: str) -> None:
        """Read the topic's limit again (an operator may have lowered it)."""
        try:
            configs = await describe_topics(self._admin, [topic])
        except (KafkaError, TopicMissing, TimeoutError) as exc:
            log.warning("topic_limit_not_refreshed", topic=topic, error=repr(exc))
            return
        self._limits[topic] = configs[topic].max_message_bytes

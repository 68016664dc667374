"""The Kafka clients streamstop uses, built from the settings in one place.

Connection and security options (bootstrap servers, TLS, SASL) are shared by every client,
so the consumer, the producer and the admin client always reach the cluster the same way.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from streamstop import __version__
from streamstop.config import Settings


def connection_options(settings: Settings) -> dict[str, Any]:
    """Connection settings shared by every client."""
    kafka = settings.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": f"streamstop-{__version__}",
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=kafka.ssl_cafile or None)
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = settings.sasl_password_value()
    return options


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """The idempotent producer of results and DLQ copies (acks=all)."""
    return AIOKafkaProducer(
        **connection_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
    )


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The group consumer of the input topic; offsets are committed by hand."""
    return AIOKafkaConsumer(
        **connection_options(settings),
        group_id=settings.kafka.group_id,
        enable_auto_commit=False,
        # The pipeline applies `kafka.auto_offset_reset` itself: a new group's start, and
        # records deleted before they were committed (counted and alerted on, never a
        # silent jump).
        auto_offset_reset="none",
        # The group waits this long for members to finish revoking (draining).
        rebalance_timeout_ms=int((settings.lifecycle.revoke_timeout_s + 10) * 1000),
        max_poll_interval_ms=300_000,
        # Prefetched data waits in memory while partitions are paused: 256 KiB per
        # partition (~2,500 cancel events) keeps up and keeps memory flat.
        max_partition_fetch_bytes=256 * 1024,
    )


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    """An admin client: topic checks and configs, end offsets."""
    return AIOKafkaAdminClient(**connection_options(settings))

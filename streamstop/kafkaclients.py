"""The Kafka clients streamstop uses, built from the settings in one place.

Connection and security options (bootstrap servers, TLS, SASL, OAuth) are shared by every
client, so the consumer, the producer and the admin client always reach the cluster the
same way. Credentials are read again for every new connection: a rotated Secret (SASL
password, CA, client certificate and key) reaches the next reconnect without a restart.

Never: build a Kafka client anywhere else, or keep a secret it could read again.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest

from streamstop import __version__
from streamstop.config import ConfigError, Settings
from streamstop.kafkaproblems import describe_kafka_problem
from streamstop.logs import register_secret
from streamstop.oauth import ClientCredentialsTokens

log = structlog.get_logger("streamstop.kafka")

Client = TypeVar("Client", AIOKafkaConsumer, AIOKafkaProducer, AIOKafkaAdminClient)
T = TypeVar("T")


class Credentials:
    """The Kafka credentials of now, for every connection a client opens.

    Secret and certificate files are read again when a connection is made (the TLS
    context is rebuilt only when one of its files changed). While a file cannot be read
    or used, as during a Secret update, the last good value stays in use and one warning
    says why.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._problem: str | None = None
        self._password = self._read(settings.sasl_password_value, None)
        self._tls_stamp = self._tls_files_stamp()
        self._tls = settings.kafka_ssl_context()
        self._read(settings.ssl_key_password_value, None)  # registers it for masking

    def sasl_password(self) -> str | None:
        """The SASL password, read again now (PLAIN and SCRAM)."""
        self._password = self._read(self._settings.sasl_password_value, self._password)
        return self._password

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL and SASL_SSL (else None), rebuilt when a file changed."""
        stamp = self._tls_files_stamp()
        if stamp != self._tls_stamp:
            self._tls = self._read(self._settings.kafka_ssl_context, self._tls)
            self._read(self._settings.ssl_key_password_value, None)
            self._tls_stamp = stamp
        return self._tls

    def _read(self, read: Callable[[], T], last: T) -> T:
        try:
            value = read()
        except ConfigError as exc:
            problem = exc.problems[0]
            if problem != self._problem:
                log.warning("kafka_credentials_unreadable", problem=problem, using="last good")
                self._problem = problem
            return last
        if isinstance(value, str):
            register_secret(value)
        self._problem = None
        return value

    def _tls_files_stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        kafka = self._settings.kafka
        files = (
            kafka.ssl_cafile,
            kafka.ssl_certfile,
            kafka.ssl_keyfile,
            str(kafka.ssl_key_password_file or ""),
        )
        return tuple(_stamp(path) for path in files)


def _stamp(path: str) -> tuple[int, int, int] | None:
    # Kubernetes updates a mounted Secret by swapping a symlink: stat follows it.
    if not path:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_mtime_ns, status.st_size)


class _CredentialsPerConnection(AIOKafkaClient):  # type: ignore[misc]
    """aiokafka's client, reading its TLS context and SASL password for each connection.

    AIOKafkaClient hands `self._ssl_context` and `self._sasl_plain_password` to every
    connection it creates (bootstrap and `_get_conn`); as properties here they come from
    `Credentials` at that moment. tests/test_kafkaclients.py fails if aiokafka changes that.
    """

    _streamstop_credentials: Credentials

    @property
    def _ssl_context(self) -> ssl.SSLContext | None:
        return self._streamstop_credentials.ssl_context()

    @property
    def _sasl_plain_password(self) -> str | None:
        return self._streamstop_credentials.sasl_password()


def connection_options(settings: Settings, credentials: Credentials) -> dict[str, Any]:
    """Connection settings shared by every client (credentials as of now)."""
    kafka = settings.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": f"streamstop-{__version__}",
        "security_protocol": kafka.security_protocol,
        "ssl_context": credentials.ssl_context(),
    }
    if kafka.security_protocol.startswith("SASL"):
        mechanism = kafka.sasl_mechanism or "PLAIN"
        options["sasl_mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            options["sasl_oauth_token_provider"] = ClientCredentialsTokens(
                kafka.oauth_token_url,
                kafka.oauth_client_id,
                settings.oauth_client_secret_value,
                kafka.oauth_scope,
            )
        else:
            options["sasl_plain_username"] = kafka.sasl_username
            options["sasl_plain_password"] = credentials.sasl_password()
    return options


def _build(factory: Callable[..., Client], settings: Settings, **options: Any) -> Client:
    """`factory` with the connection options, its connections reading credentials anew.

    Raises ConfigError when a credential file cannot be read or used now (load_settings
    checked them at start; this is a file that went away since).
    """
    credentials = Credentials(settings)
    built = factory(**connection_options(settings, credentials), **options)
    inner = built.client if isinstance(built, AIOKafkaProducer) else built._client
    if type(inner) is not AIOKafkaClient:
        raise TypeError(f"aiokafka built a {type(inner).__name__}, not an AIOKafkaClient")
    inner._streamstop_credentials = credentials
    inner.__class__ = _CredentialsPerConnection
    return built


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """The idempotent producer (acks=all) of results and DLQ copies, and of the requests
    `streamstop redrive` publishes again."""
    return _build(AIOKafkaProducer, settings, enable_idempotence=True, **_PRODUCING)


def transactional_id(settings: Settings, topic: str, partition: int) -> str:
    """The transactional id of one input partition's producer (`exactly_once`): the same
    for every owner of the partition, so a new owner's start fences the old one."""
    prefix = settings.delivery.transactional_id_prefix
    return f"{prefix}-{settings.kafka.group_id}-{topic}-{partition}"


def make_transactional_producer(settings: Settings, txn_id: str) -> AIOKafkaProducer:
    """The producer of one input partition's results, DLQ copies and offsets, in
    transactions (`exactly_once`)."""
    return _build(
        AIOKafkaProducer,
        settings,
        transactional_id=txn_id,
        transaction_timeout_ms=settings.delivery.transaction_timeout_ms,
        **_PRODUCING,
    )


_PRODUCING: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "max_batch_size": 256 * 1024,
    "request_timeout_ms": 30_000,
}


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The group consumer of the input topic; offsets are committed by hand (or, under
    `exactly_once`, in the partitions' transactions)."""
    return _build(
        AIOKafkaConsumer,
        settings,
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
        **_exactly_once_consuming(settings),
    )


def make_redrive_consumer(settings: Settings, group_id: str) -> AIOKafkaConsumer:
    """`streamstop redrive`'s reader of the output topic: results of committed
    transactions only; its progress is committed by hand in `group_id`."""
    return _build(
        AIOKafkaConsumer,
        settings,
        group_id=group_id,
        isolation_level="read_committed",
        enable_auto_commit=False,
        # Positions are set by seeking; a position whose records were deleted meanwhile
        # (retention) goes on from the oldest one left.
        auto_offset_reset="earliest",
        # A second redrive joining is noticed within a second: this one commits and stops.
        heartbeat_interval_ms=1000,
    )


def _exactly_once_consuming(settings: Settings) -> dict[str, Any]:
    """Under `exactly_once`: partitions stay where they are across rebalances when they
    can (sticky), so their producers stay; round robin remains a choice while members of
    an `at_least_once` deployment share the group (a rolling update), as the group uses
    a strategy every member supports. Input from aborted transactions is not consumed."""
    if settings.delivery.guarantee != "exactly_once":
        return {}
    return {
        "partition_assignment_strategy": (StickyPartitionAssignor, RoundRobinPartitionAssignor),
        "isolation_level": "read_committed",
    }


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    """An admin client: topic checks and configs, end offsets."""
    return _build(AIOKafkaAdminClient, settings)


async def probe(settings: Settings, timeout_s: float = 10.0) -> None:
    """Connect to the bootstrap servers once, as every client does (TLS, SASL), and ask
    for metadata; return at the first server that answers.

    For a hold that needs the precise reason: aiokafka's clients fail to start with a
    generic "Unable to bootstrap", and this raises what the last server did instead
    (`ssl.SSLError`, `SaslAuthenticationFailed`, `ConnectionRefusedError`, ...), for
    `describe_kafka_problem`. With OAUTHBEARER each call fetches a token.
    """
    options = connection_options(settings, Credentials(settings))
    del options["bootstrap_servers"]  # one server at a time here
    failure: Exception = KafkaConnectionError("no bootstrap servers")
    for server in settings.kafka.bootstrap_servers.split(","):
        host, _, port = server.rpartition(":")
        try:
            conn = await create_conn(
                host.strip("[]"),
                int(port),
                request_timeout_ms=int(timeout_s * 1000),
                **options,
            )
            try:
                # A listener wanting SASL lets a TLS-only client connect, then hangs up here.
                await conn.send(MetadataRequest([]))
                return
            finally:
                conn.close()
        except Exception as exc:  # whatever stops this server: try the next one
            failure = exc
    raise failure


async def explain_failure(exc: BaseException, settings: Settings, timeout_s: float = 10.0) -> str:
    """One line an operator can act on for `exc`, met while starting or using a client.

    aiokafka reports a refused login or a failed handshake as a generic "Unable to
    bootstrap": for those the bootstrap servers are probed once more to learn the precise
    reason. A broker's own error (authorization, say) is described as it is.
    """
    if isinstance(exc, KafkaConnectionError | TimeoutError | OSError):
        handled = sys.exc_info()[1]  # what the caller is handling, if it calls from an except
        try:
            await probe(settings, timeout_s)
        except Exception as precise:  # the reason the servers give now
            _detach(precise, handled)
            exc = precise
    return describe_kafka_problem(exc, settings)


def _detach(exc: BaseException, handled: BaseException | None) -> None:
    """Cut `exc`'s chain where Python linked the caller's own exception to it: the
    explanation looks at causes, and the caller's generic failure is not one."""
    node: BaseException | None = exc
    while node is not None and handled is not None:
        if node.__context__ is handled:
            node.__context__ = None
            return
        node = node.__cause__ or node.__context__


@contextmanager
def aiokafka_quiet() -> Iterator[None]:
    """For commands with their own report: aiokafka's lines stay off their output (the
    command's one line says why a step failed)."""
    logger = logging.getLogger("aiokafka")
    saved = logger.propagate, logger.level
    logger.propagate, logger.level = False, logging.CRITICAL
    try:
        yield
    finally:
        logger.propagate, logger.level = saved

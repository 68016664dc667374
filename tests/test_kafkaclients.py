"""Kafka clients built from the settings: credentials read for every new connection by
every client, the aiokafka internals that relies on, and `probe` plus
`describe_kafka_problem` against real TLS servers (no broker: tests/test_kafka_security.py
covers the broker's own answers)."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaClient
from structlog.testing import capture_logs

from streamstop.config import Settings
from streamstop.config.models import KafkaSettings
from streamstop.kafkaclients import make_admin, make_consumer, make_producer, probe
from streamstop.kafkaproblems import describe_kafka_problem
from streamstop.logs import mask_secrets

MAKERS: list[Callable[[Settings], Any]] = [make_consumer, make_producer, make_admin]


def inner_client(built: Any) -> Any:
    return getattr(built, "_client", None) or built.client


def settings_with(**kafka: Any) -> Settings:
    return Settings(kafka=KafkaSettings(**kafka))


def write_text(path: Path, text: str) -> None:
    path.write_text(text)


def test_aiokafka_hands_the_hooked_attributes_to_every_new_connection() -> None:
    # kafkaclients replaces these two attributes by properties read per connection. If
    # aiokafka renames them or stops passing them to create_conn, rotation silently ends.
    for method in (AIOKafkaClient.bootstrap, AIOKafkaClient._get_conn):
        source = inspect.getsource(method)
        assert "ssl_context=self._ssl_context" in source, method.__name__
        assert "sasl_plain_password=self._sasl_plain_password" in source, method.__name__


async def test_aiokafka_keeps_them_as_plain_instance_attributes() -> None:
    client = AIOKafkaClient(
        bootstrap_servers="127.0.0.1:1",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="u",
        sasl_plain_password="p",
    )

    assert {"_ssl_context", "_sasl_plain_password"} <= set(vars(client))


@pytest.mark.parametrize("make", MAKERS, ids=lambda make: make.__name__)
async def test_every_client_reads_the_password_file_for_each_connection(
    tmp_path: Path, make: Callable[[Settings], Any]
) -> None:
    password = tmp_path / "password"
    write_text(password, "first-Password-7d\n")
    settings = settings_with(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password_file=password,
    )
    client = inner_client(make(settings))

    assert client._sasl_plain_password == "first-Password-7d"
    write_text(password, "second-Password-8e\n")
    assert client._sasl_plain_password == "second-Password-8e"
    assert mask_secrets("second-Password-8e") == "***"


async def test_an_unreadable_password_file_keeps_the_last_one_and_warns_once(
    tmp_path: Path,
) -> None:
    password = tmp_path / "password"
    write_text(password, "kept-Password-9f\n")
    settings = settings_with(
        security_protocol="SASL_SSL", sasl_username="svc", sasl_password_file=password
    )
    client = inner_client(make_producer(settings))
    password.unlink()

    with capture_logs() as logs:
        reads = [client._sasl_plain_password for _ in range(3)]

    assert reads == ["kept-Password-9f"] * 3
    assert [(entry["event"], entry["problem"]) for entry in logs] == [
        (
            "kafka_credentials_unreadable",
            f"kafka.sasl_password_file: cannot read {password}: No such file or directory",
        )
    ]


async def test_the_tls_context_is_rebuilt_only_when_a_file_changes(
    tls_dir: Path, tmp_path: Path
) -> None:
    certfile, keyfile = tmp_path / "user.crt", tmp_path / "user.key"
    shutil.copy(tls_dir / "client.crt", certfile)
    shutil.copy(tls_dir / "client.key", keyfile)
    settings = settings_with(
        security_protocol="SSL",
        ssl_cafile=str(tls_dir / "ca.crt"),
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
    )
    client = inner_client(make_consumer(settings))
    first = client._ssl_context

    assert client._ssl_context is first
    assert first.check_hostname is True
    assert first.verify_mode == ssl.CERT_REQUIRED
    # A renewed certificate, as cert-manager or Strimzi would write it.
    shutil.copy(tls_dir / "other.crt", certfile)
    shutil.copy(tls_dir / "other.key", keyfile)
    assert client._ssl_context is not first


async def test_the_client_key_password_is_masked_in_logs(tls_dir: Path) -> None:
    password = (tls_dir / "client-protected.password").read_text().strip()
    settings = settings_with(
        security_protocol="SSL",
        ssl_certfile=str(tls_dir / "client-protected.crt"),
        ssl_keyfile=str(tls_dir / "client-protected.key"),
        ssl_key_password_file=tls_dir / "client-protected.password",
    )

    make_admin(settings)

    assert mask_secrets(f"key {password}") == "key ***"


@asynccontextmanager
async def tls_server(tls_dir: Path, name: str, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """A TLS server with certificate `name` that reads and drops whatever comes; yields
    host:port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_dir / f"{name}.crt", tls_dir / f"{name}.key")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(handle, host, 0, ssl=context)
    try:
        yield f"{host}:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def problem_line(settings: Settings) -> str:
    """The line for what `probe` met; fails the test if the probe got through."""
    try:
        await probe(settings, timeout_s=5)
    except Exception as exc:
        return describe_kafka_problem(exc, settings)
    raise AssertionError(f"probe reached {settings.kafka.bootstrap_servers}")


@pytest.mark.parametrize(
    ("server", "host", "cafile", "expected"),
    [
        (
            "expired",
            "127.0.0.1",
            "ca",
            "certificate has expired): the brokers' certificate must be renewed",
        ),
        (
            "broker",
            "127.0.0.2",
            "ca",
            "IP address mismatch, certificate is not valid for '127.0.0.2'.): use a bootstrap "
            "address the brokers' certificate names",
        ),
        (
            "broker",
            "127.0.0.1",
            "other-ca",
            "unable to get local issuer certificate): the brokers' CA is not in "
            "kafka.ssl_cafile ({tls}/other-ca.crt): set kafka.ssl_cafile to it",
        ),
    ],
    ids=["expired", "hostname", "unknown-ca"],
)
async def test_a_broker_certificate_that_is_not_accepted_is_one_line(
    tls_dir: Path, server: str, host: str, cafile: str, expected: str
) -> None:
    async with tls_server(tls_dir, server, host) as address:
        settings = settings_with(
            bootstrap_servers=address,
            security_protocol="SSL",
            ssl_cafile=str(tls_dir / f"{cafile}.crt"),
        )
        line = await problem_line(settings)

    assert line == (
        f"the TLS certificate of the broker at {address} (SSL) was not accepted ("
        + expected.format(tls=tls_dir)
    )


async def test_plaintext_to_a_tls_listener_is_a_protocol_mismatch(tls_dir: Path) -> None:
    async with tls_server(tls_dir, "broker") as address:
        line = await problem_line(settings_with(bootstrap_servers=address))

    assert line == (
        f"the broker at {address} (PLAINTEXT) closed the connection while connecting: check "
        "that the listener speaks PLAINTEXT (TLS listeners need SSL or SASL_SSL, SASL ones "
        "SASL_*)"
    )


async def test_nothing_listening_is_connection_refused() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    settings = settings_with(
        bootstrap_servers=address,
        security_protocol="SASL_PLAINTEXT",
        sasl_username="svc",
        sasl_password="pw-never-used",
    )

    line = await problem_line(settings)

    assert line == (
        f"nothing accepts connections at {address} (SASL_PLAINTEXT PLAIN) (connection "
        "refused): check kafka.bootstrap_servers and that the brokers are up"
    )

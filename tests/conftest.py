"""Shared fixtures: a real Kafka broker for the session and topics that clean up after them.

Set KAFKA_BOOTSTRAP=host:port to run against an already running broker (for example one
from `make kafka-up`) instead of starting a fresh one: saves ~10 s of start-up per run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi_proc import DEFAULT_TOKEN, FakeApi, running_fake_api
from kafkahelp import KafkaBroker, KafkaCluster, MakeTopic, kafka_sh, topics_on
from securekafka import TOKEN_LIFETIME_S, SecureKafka
from tokenserver import running_token_server

from streamstop.fakeapi.switches import Switches

_BROKER_FIXTURES = {"kafka_broker", "kafka_bootstrap", "secure_kafka", "kafka_cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the broker `kafka`, so `-m "not kafka"` skips them all."""
    for item in items:
        if _BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's broker: KAFKA_BOOTSTRAP's, or a fresh one stopped at the end."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield KafkaBroker(external, None)
        return
    state_dir = tmp_path_factory.mktemp("kafka")
    try:
        yield KafkaBroker.start_in(state_dir)
    finally:
        # Also after a failed start: the broker may be up but never became ready.
        kafka_sh("down", state_dir)


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three KRaft nodes (each a broker and a controller voter), internal topics
    replicated three times: started only for the modules that use it, every node stopped
    at the module's end."""
    state_dir = tmp_path_factory.mktemp("kafka-cluster")
    try:
        yield KafkaCluster.start_in(state_dir, nodes=3)
    finally:
        # Also after a failed start: some nodes may be up.
        kafka_sh("cluster-down", state_dir)


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Test certificates as scripts/kafka.sh makes them for the secured broker (ca, broker,
    client, client-protected, expired, other, other-ca), without a broker."""
    state_dir = tmp_path_factory.mktemp("certs")
    kafka_sh("certs", state_dir)
    return state_dir / "tls"


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """The session's secured broker (SASL_SSL, SASL_PLAINTEXT, mTLS and OAUTHBEARER
    listeners, see securekafka.py) with its OAuth token server; both stopped at the end."""
    state_dir = tmp_path_factory.mktemp("kafka-secure")
    with running_token_server(TOKEN_LIFETIME_S) as tokens:
        try:
            yield SecureKafka.start_in(state_dir, tokens)
        finally:
            kafka_sh("down", state_dir)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """Bootstrap address (`127.0.0.1:PORT`) of the session's broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Iterator[MakeTopic]:
    """Factory for fresh, uniquely named topics, usable as soon as it returns.

    The broker does not auto-create topics. Topics made here are deleted after the test.
    """
    with topics_on(kafka_bootstrap) as make:
        yield make


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeApi]:
    """One `streamstop fake-api` process per test module, stopped at its end."""
    with running_fake_api() as fake:
        yield fake


@pytest.fixture
def fake(shared_fake: FakeApi) -> FakeApi:
    """The module's fake API with every switch at its default and an empty record."""
    shared_fake.set(**{**Switches().model_dump(mode="json"), "token": DEFAULT_TOKEN})
    shared_fake.reset()
    return shared_fake


@pytest.fixture
def secure_topic(secure_kafka: SecureKafka) -> Iterator[MakeTopic]:
    """make_topic for the secured broker."""
    with topics_on(secure_kafka.bootstrap) as make:
        yield make

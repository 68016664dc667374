"""`streamstop run` against the secured broker: every Kafka security mode end to end,
credentials rotated mid-run, and refused credentials described in one line, no secret logged.

One broker serves every mode through its listeners (securekafka.py); records are produced
and read back through its PLAINTEXT listener, the daemon uses the secured one under test.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import TEST_TOKEN, Daemon, running_daemon, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import MakeTopic, consume_all, create_topic, delete_topics, produce, unique_name
from scenario import check_requests, check_results, config_for, corpus, topics_for, wait_committed
from securekafka import MODES, OAUTH_CLIENT, SecureKafka

pytestmark = pytest.mark.kafka


@pytest.fixture
def secure_topic(secure_kafka: SecureKafka) -> Iterator[MakeTopic]:
    """make_topic for the secured broker."""
    created: list[str] = []

    def make(partitions: int = 6, name_prefix: str = "t") -> str:
        topic = unique_name(name_prefix)
        create_topic(secure_kafka.bootstrap, topic, partitions)
        created.append(topic)
        return topic

    yield make
    delete_topics(secure_kafka.bootstrap, created)


def _assert_no_secret_logged(daemon: Daemon, secure_kafka: SecureKafka) -> None:
    log = daemon.raw_log()
    assert TEST_TOKEN not in log
    for secret in secure_kafka.secret_values():
        assert secret not in log


@pytest.mark.parametrize("mode", list(MODES))
def test_every_record_gets_its_result_on_each_secured_listener(
    secure_kafka: SecureKafka, secure_topic: MakeTopic, tmp_path: Path, mode: str
) -> None:
    topics = topics_for(secure_topic)
    messages = corpus(2_000, seed=14)
    positions = produce(secure_kafka.bootstrap, topics["input"], messages)
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(
            tmp_path, "", topics, api.url, **secure_kafka.kafka_config(mode)
        )
        with running_daemon(config, tmp_path / "daemon.log") as daemon:
            daemon.wait_ready(timeout_s=90)
            wait_committed(secure_kafka.bootstrap, topics, 120, "every offset committed")
            results = consume_all(secure_kafka.bootstrap, topics["output"], len(messages))
            per_record = check_results(messages, positions, results, topics["input"])
            assert set(per_record.values()) == {1}
            check_requests(api.received())
        assert daemon.proc.returncode == 0
        _assert_no_secret_logged(daemon, secure_kafka)

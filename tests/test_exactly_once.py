"""Exactly-once results with real processes and a real broker: a read_committed reader of
the output topic finds exactly one result per input record, whatever happens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from daemon_proc import TEST_TOKEN, running_daemon
from fakeapi_proc import running_fake_api
from kafkahelp import consume_all, produce
from scenario import check_results, config_for, corpus, topics_for, wait_committed

pytestmark = pytest.mark.kafka


def test_every_record_gets_exactly_one_committed_result(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic)
    messages = corpus(5000, seed=21)
    positions = produce(kafka_bootstrap, topics["input"], messages)
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(
            tmp_path, kafka_bootstrap, topics, api.url, delivery__guarantee="exactly_once"
        )
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_committed(kafka_bootstrap, topics, 120, "every record committed")
        results = consume_all(
            kafka_bootstrap,
            topics["output"],
            len(messages),
            timeout_s=60,
            isolation_level="read_committed",
        )
    per_record = check_results(messages, positions, results, topics["input"])
    assert set(per_record.values()) == {1}

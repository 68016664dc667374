"""`streamstop run` as a real process against the real broker and the fake API."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from daemon_proc import TEST_TOKEN, exposed_metric_names, running_daemon, wait_for
from fakeapi_proc import running_fake_api
from k8s_validate import CHART, build_helm, chart_metric_names, render
from kafkahelp import Message, committed_offsets, consume_all, end_offsets, produce
from scenario import (
    check_requests,
    check_results,
    config_for,
    corpus,
    expected_result,
    topics_for,
    wait_committed,
)

pytestmark = pytest.mark.kafka


def test_every_record_gets_exactly_one_correct_result(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic)
    messages = corpus(25_000, seed=1)
    positions = produce(kafka_bootstrap, topics["input"], messages)
    with (
        running_fake_api() as api,
        running_daemon(
            config_for(tmp_path, kafka_bootstrap, topics, api.url, api__token="test-token"),
            tmp_path / "daemon.log",
        ) as daemon,
    ):
        daemon.wait_ready()
        wait_committed(kafka_bootstrap, topics, 180, "every offset committed")
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=60)
        per_record = check_results(messages, positions, results, topics["input"])
        assert set(per_record.values()) == {1}, "exactly one result per record"
        check_requests(api.received())
        invalid = [m for m in messages if expected_result(m)[0] == "invalid"]
        dlq = consume_all(kafka_bootstrap, topics["dlq"], len(invalid), timeout_s=30)
        assert sorted(r.value or b"" for r in dlq) == sorted(m.value or b"" for m in invalid)
        assert all(dict(r.headers).get("streamstop-error") for r in dlq)
        # Input headers travel to the result.
        first = orjson.loads(results[0].value)
        assert dict(results[0].headers)["traceparent"].startswith(b"00-")
        assert first["schemaVersion"] == 1
        # Metrics moved with the traffic.
        assert daemon.metric("streamstop_records_consumed_total") == len(messages)
        assert daemon.metric("streamstop_results_total") == len(messages)
        assert daemon.metric("streamstop_commits_total") >= 1
        # Every metric the chart's alerts and dashboard query exists in a real scrape.
        used = chart_metric_names(render(build_helm(), [CHART / "ci" / "all-on-values.yaml"]))
        assert len(used) > 10
        assert used <= exposed_metric_names(daemon.get("/metrics")[1])
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0
        lines = daemon.lines()  # every line parses as JSON
        assert lines
        assert all({"event", "level", "timestamp"} <= set(line) for line in lines)
        assert TEST_TOKEN not in daemon.raw_log()


def test_sigterm_mid_run_then_restart_loses_nothing(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    messages = corpus(20_000, seed=2)
    positions = produce(kafka_bootstrap, topics["input"], messages)
    with running_fake_api("--latency-ms", "50") as api:
        config = config_for(
            tmp_path,
            kafka_bootstrap,
            topics,
            api.url,
            api__token="test-token",
            batch__max_in_flight=1,
        )
        with running_daemon(config, tmp_path / "d1.log") as first:
            first.wait_ready()
            wait_for(lambda: first.metric("streamstop_results_total") > 2000, 60, "some results")
            began = time.monotonic()
            first.signal(signal.SIGTERM)
            assert first.wait_exit(30) == 0
            assert time.monotonic() - began < 20 + 5
        # Committed offsets never ahead of published results.
        committed_results = consume_all(kafka_bootstrap, topics["output"], 1, timeout_s=5)
        done = {
            (
                orjson.loads(r.value)["source"]["partition"],
                orjson.loads(r.value)["source"]["offset"],
            )
            for r in committed_results
        }
        for partition, offset in committed_offsets(
            kafka_bootstrap, topics["group"], topics["input"]
        ).items():
            below = [p for p in positions if p[0] == partition and p[1] < offset]
            assert all(tuple(p) in done for p in below)
        with running_daemon(config, tmp_path / "d2.log") as second:
            second.wait_ready()
            wait_committed(kafka_bootstrap, topics, 180, "the restart finishes the rest")
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=60)
        per_record = check_results(messages, positions, results, topics["input"])
        duplicates = sum(n - 1 for n in per_record.values())
        print(f"records={len(messages)} duplicates={duplicates}")
        assert len(per_record) == len(messages)
        assert sum(end_offsets(kafka_bootstrap, topics["input"]).values()) == len(messages)


def test_two_daemons_rebalance_without_loss(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    messages = corpus(20_000, seed=3)
    positions = produce(kafka_bootstrap, topics["input"], messages)
    with running_fake_api("--token", TEST_TOKEN, "--latency-ms", "20") as api:
        config = config_for(
            tmp_path,
            kafka_bootstrap,
            topics,
            api.url,
            batch__max_in_flight=2,
            lifecycle__revoke_timeout_s=2,
        )
        with running_daemon(config, tmp_path / "a.log") as first:
            first.wait_ready()
            wait_for(lambda: first.metric("streamstop_results_total") > 1000, 60, "progress")
            # Slow the API down so the first member cannot finish its revoked partitions
            # within their revoke budget: work is left for the second one.
            api.set(latency_ms=1500)
            with running_daemon(config, tmp_path / "b.log") as second:
                # The second member joining forces a rebalance while the first is busy.
                second.wait_ready()
                wait_for(lambda: first.events("partitions_revoked"), 60, "the rebalance")
                api.set(latency_ms=20)
                wait_committed(kafka_bootstrap, topics, 180, "both members finish")
                assert second.metric("streamstop_results_total") > 0, "the second member worked"
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=60)
        per_record = check_results(messages, positions, results, topics["input"])
        duplicates = sum(n - 1 for n in per_record.values())
        print(f"rebalance: records={len(messages)} lost=0 duplicates={duplicates}")
        assert len(per_record) == len(messages)
        check_requests(api.received())


def test_records_older_than_max_age_expire_without_an_api_call(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    hour_ago = int((time.time() - 3600) * 1000)
    stale = [str(uuid.uuid4()) for _ in range(50)]
    fresh = [str(uuid.uuid4()) for _ in range(50)]
    messages = [Message(u.encode(), timestamp_ms=hour_ago) for u in stale]
    messages += [Message(u.encode()) for u in fresh]
    produce(kafka_bootstrap, topics["input"], messages)
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url, batch__max_record_age_s=60)
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_committed(kafka_bootstrap, topics, 60, "done")
        results = [
            orjson.loads(r.value)
            for r in consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=30)
        ]
        sent = {u for request in api.received() for u in request["uuids"]}
    expired = {r["messageUuid"] for r in results if r["status"] == "expired"}
    assert expired == set(stale)
    assert all(r["attempts"] == 0 and r["error"] for r in results if r["status"] == "expired")
    assert not sent & set(stale)
    assert set(fresh) <= sent


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_input_compressed_with_any_kafka_codec_is_read(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, codec: str
) -> None:
    # Producers (or a topic's compression.type) commonly compress; without the codec the
    # consumer cannot read a single record.
    topics = topics_for(make_topic, dlq=False)
    messages = [Message(str(uuid.uuid4()).encode()) for _ in range(200)]
    positions = produce(kafka_bootstrap, topics["input"], messages, compression_type=codec)
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url)
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_committed(kafka_bootstrap, topics, 60, "every record committed")
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=30)
    check_results(messages, positions, results, topics["input"])

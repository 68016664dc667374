"""Fault tolerance, proven with real processes: nothing lost, nothing committed early."""

from __future__ import annotations

import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from daemon_proc import TEST_TOKEN, Daemon, running_daemon, sampled, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import (
    KafkaBroker,
    Message,
    committed_offsets,
    consume_all,
    end_offsets,
    lag,
    produce,
    produce_bad_header,
)
from scenario import (
    Expectation,
    check_requests,
    check_results,
    config_for,
    corpus,
    expected_result,
    run_once_each,
    topics_for,
    wait_committed,
)

pytestmark = pytest.mark.kafka


def statuses(results: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in results:
        status = orjson.loads(record.value)["status"]
        counts[status] = counts.get(status, 0) + 1
    return counts


def assert_nothing_committed_needing_the_api(
    bootstrap: str, topics: dict[str, str], messages: list[Message], positions: list[Any]
) -> None:
    """Committed offsets stop before each partition's first record that needs the API:
    only invalid records, answered without it, may be committed meanwhile."""
    first: dict[int, int] = {}
    for message, (partition, offset) in zip(messages, positions, strict=True):
        if expected_result(message)[0] != "invalid":
            first[partition] = min(offset, first.get(partition, offset))
    committed = committed_offsets(bootstrap, topics["group"], topics["input"])
    assert all(offset <= first[partition] for partition, offset in committed.items())


def assert_no_secret(*daemons: Daemon) -> None:
    for daemon in daemons:
        assert TEST_TOKEN not in daemon.raw_log()
        daemon.lines()  # every line is JSON


def test_sigkill_at_random_moments_loses_nothing(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    messages = corpus(20_000, seed=4)
    positions = produce(kafka_bootstrap, topics["input"], messages)
    rng = random.Random(4)
    faults = [
        *("--error-rate", "0.1", "--throttle-rate", "0.05", "--retry-after-s", "1"),
        *("--missing-rate", "0.05", "--malformed-rate", "0.05"),
        *("--latency-ms", "30", "--latency-jitter-ms", "60"),
    ]
    kills = 0
    daemons: list[Daemon] = []
    with running_fake_api("--token", TEST_TOKEN, *faults) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url, batch__max_in_flight=3)
        for round_ in range(5):
            with running_daemon(config, tmp_path / f"d{round_}.log") as daemon:
                daemons.append(daemon)
                daemon.wait_port()
                if round_ < 4:
                    target = rng.randint(200, 2500)

                    def progressed(d: Daemon = daemon, t: int = target) -> bool:
                        return d.metric("streamstop_results_total") >= t

                    wait_for(progressed, 120, "some progress before the kill")
                    # Mid-work: records taken in and not committed at the moment of the kill.
                    in_flight = daemon.metric("streamstop_pending_records")
                    daemon.signal(signal.SIGKILL)
                    daemon.wait_exit(10)
                    assert in_flight > 0, "the kill landed with work in flight"
                    assert lag(kafka_bootstrap, topics["group"], topics["input"]) > 0
                    kills += 1
                    continue
                wait_committed(kafka_bootstrap, topics, 240, "the last run finishes everything")
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=60)
        per_record = check_results(messages, positions, results, topics["input"])
        received = api.received()
    check_requests(received)
    sent = {u.lower() for r in received if r["status"] == 200 for u in r["uuids"]}
    valid = {e[2] for e in map(expected_result, messages) if e[2] is not None}
    assert valid <= sent, "the fake API received every valid uuid"
    lost = len(messages) - len(per_record)
    duplicates = sum(n - 1 for n in per_record.values())
    retried = sum(len(r["uuids"]) for r in received) - len(valid)
    print(
        f"records={len(messages)} kills={kills} lost={lost} duplicates={duplicates} "
        f"retries={retried}"
    )
    assert lost == 0
    assert kills == 4
    assert_no_secret(*daemons)


def test_broker_restart_mid_run(kafka_broker: KafkaBroker, make_topic: Any, tmp_path: Path) -> None:
    if kafka_broker.state_dir is None:
        pytest.skip("needs a broker this test session started (KAFKA_BOOTSTRAP is set)")
    bootstrap = kafka_broker.bootstrap
    topics = topics_for(make_topic, dlq=False)
    messages = corpus(15_000, seed=5)
    positions = produce(bootstrap, topics["input"], messages)
    with running_fake_api("--token", TEST_TOKEN, "--latency-ms", "50") as api:
        config = config_for(tmp_path, bootstrap, topics, api.url, batch__max_in_flight=1)
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_for(lambda: daemon.metric("streamstop_results_total") > 1000, 60, "progress")
            kafka_broker.stop()
            kafka_broker.start()
            wait_committed(bootstrap, topics, 240, "the daemon recovers by itself")
            assert daemon.proc.poll() is None, "no restart was needed"
        results = consume_all(bootstrap, topics["output"], len(messages), timeout_s=60)
        per_record = check_results(messages, positions, results, topics["input"])
    assert len(per_record) == len(messages)
    assert_no_secret(daemon)


def test_sigterm_while_the_broker_is_down_stays_within_budget(
    kafka_broker: KafkaBroker, make_topic: Any, tmp_path: Path
) -> None:
    # Commits and producer flushes cannot finish without a broker (aiokafka retries a
    # commit for as long as the coordinator is away): shutdown must still end in budget.
    if kafka_broker.state_dir is None:
        pytest.skip("needs a broker this test session started (KAFKA_BOOTSTRAP is set)")
    bootstrap = kafka_broker.bootstrap
    topics = topics_for(make_topic, dlq=False)
    messages = corpus(10_000, seed=6)
    positions = produce(bootstrap, topics["input"], messages)
    budget_s = 10
    with running_fake_api("--token", TEST_TOKEN, "--latency-ms", "50") as api:
        config = config_for(
            tmp_path,
            bootstrap,
            topics,
            api.url,
            batch__max_in_flight=1,
            lifecycle__shutdown_timeout_s=budget_s,
        )
        with running_daemon(config, tmp_path / "d1.log") as daemon:
            daemon.wait_ready()
            wait_for(lambda: daemon.metric("streamstop_results_total") > 500, 60, "progress")
            kafka_broker.stop()
            try:
                began = time.monotonic()
                daemon.signal(signal.SIGTERM)
                code = daemon.wait_exit(budget_s + 20)
                took = time.monotonic() - began
            finally:
                kafka_broker.start()
        print(f"shutdown without a broker: exit {code} after {took:.1f}s (budget {budget_s}s)")
        assert code == 0
        assert took <= budget_s + 5
        with running_daemon(config, tmp_path / "d2.log") as second:
            wait_committed(bootstrap, topics, 240, "a restart finishes the rest")
        results = consume_all(bootstrap, topics["output"], len(messages), timeout_s=60)
        check_results(messages, positions, results, topics["input"])
    assert_no_secret(daemon, second)


def test_api_outage_fails_nothing_and_bounds_memory(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    messages = corpus(20_000, seed=6)
    max_pending = 3000
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(
            tmp_path,
            kafka_bootstrap,
            topics,
            api.url,
            batch__max_pending=max_pending,
            retry__max_backoff_ms=2000,
        )
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            api.set(outage=True)
            positions = produce(kafka_bootstrap, topics["input"], messages)
            peak = 0.0
            for _ in sampled(30):
                peak = max(peak, daemon.metric("streamstop_pending_records"))
                assert daemon.get("/livez")[0] == 200
            assert 0 < peak <= max_pending
            assert daemon.metric("streamstop_paused_partitions") > 0
            assert daemon.metric("streamstop_results_total", {"status": "failed"}) == 0
            api.set(outage=False)
            wait_committed(kafka_bootstrap, topics, 180, "throughput recovers after the outage")
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=60)
    check_results(messages, positions, results, topics["input"])
    assert "failed" not in statuses(results)
    assert_no_secret(daemon)


def test_a_record_stuck_in_retries_caps_what_is_consumed_behind_it(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    # The API never answers the first record's uuid, so the commit point cannot pass it.
    # Work behind it finishes, but what a restart would process again stays within
    # batch.max_pending: the consumer pauses until the stuck record ends.
    topics = topics_for(make_topic, dlq=False)
    stuck = str(uuid.uuid4())
    first = Message(orjson.dumps({"messageUuid": stuck}), partition=0)
    rest = [Message(m.value, m.key, m.headers, partition=0) for m in corpus(8000, seed=12)]
    max_pending = 2000
    with running_fake_api("--token", TEST_TOKEN, "--missing-uuid", stuck) as api:
        config = config_for(
            tmp_path, kafka_bootstrap, topics, api.url, batch__max_pending=max_pending
        )
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            positions = produce(kafka_bootstrap, topics["input"], [first, *rest])
            wait_for(
                lambda: daemon.metric("streamstop_paused_partitions") > 0,
                60,
                "the consumer pauses behind the stuck record",
            )
            for _ in sampled(3):
                assert daemon.metric("streamstop_pending_records") <= max_pending
                assert daemon.metric("streamstop_paused_partitions") > 0
            answered = sum(end_offsets(kafka_bootstrap, topics["output"]).values())
            assert 0 < answered < max_pending  # results for the window behind it only
            committed = committed_offsets(kafka_bootstrap, topics["group"], topics["input"])
            assert committed.get(0, 0) <= positions[0].offset
            api.set(missing_uuid=[])
            wait_committed(kafka_bootstrap, topics, 120, "everything once the record is answered")
        results = consume_all(kafka_bootstrap, topics["output"], len(positions), timeout_s=60)
    check_results([first, *rest], positions, results, topics["input"])


def test_bad_credentials_then_fixed_token_file(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    messages = corpus(3000, seed=7)
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token-value\n")
    positions = produce(kafka_bootstrap, topics["input"], messages)
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(
            tmp_path,
            kafka_bootstrap,
            topics,
            api.url,
            api__token="",
            api__token_file=str(token_file),
            retry__max_backoff_ms=1000,
        )
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_port()
            wait_for(
                lambda: daemon.metric("streamstop_config_error") == 1, 60, "a configuration error"
            )
            wait_for(lambda: len(daemon.events("api_configuration_error")) >= 3, 60, "retries")
            assert not daemon.ready()
            assert_nothing_committed_needing_the_api(kafka_bootstrap, topics, messages, positions)
            # A rotated Secret that is briefly empty: no request can go out, and the
            # daemon waits in the same state instead of crashing.
            token_file.write_text("")
            wait_for(
                lambda: any(
                    "is empty" in event["reason"]
                    for event in daemon.events("api_configuration_error")
                ),
                60,
                "the empty token file reported",
            )
            assert daemon.proc.poll() is None
            assert not daemon.ready()
            assert_nothing_committed_needing_the_api(kafka_bootstrap, topics, messages, positions)
            token_file.write_text(f"{TEST_TOKEN}\n")
            wait_committed(kafka_bootstrap, topics, 120, "recovery without a restart")
            assert daemon.ready()
            assert daemon.metric("streamstop_config_error") == 0
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=60)
    check_results(messages, positions, results, topics["input"])
    assert "failed" not in statuses(results)
    log = daemon.raw_log()
    assert "wrong-token-value" not in log
    assert_no_secret(daemon)


@pytest.mark.parametrize("count", [3, 100])
def test_bisection_fails_only_rejected_uuids(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, count: int
) -> None:
    # 100 of ~4,750 uuids (2%, several per batch, batches bisecting concurrently) must
    # not look like an API that rejects everything.
    topics = topics_for(make_topic, dlq=False)
    messages = corpus(5000, seed=8)
    valid = [e[2] for e in map(expected_result, messages) if e[2] is not None]
    rejected = set(random.Random(8).sample(sorted(set(valid)), count))

    def expect(message: Message) -> Expectation:
        status, code, uuid_ = expected_result(message)
        return ("failed", None, uuid_) if uuid_ in rejected else (status, code, uuid_)

    positions = produce(kafka_bootstrap, topics["input"], messages)
    args = [arg for u in sorted(rejected) for arg in ("--reject-uuid", u)]
    # The API quotes our Authorization in its 400 messages, which become the `error` of
    # failed results: the token must be masked there too, not only in logs.
    args.append("--echo-authorization")
    with running_fake_api("--token", TEST_TOKEN, *args) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url)
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_committed(kafka_bootstrap, topics, 120, "done")
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=60)
        check_requests(api.received())
    check_results(messages, positions, results, topics["input"], expect)
    for record in results:
        value = orjson.loads(record.value)
        if value["status"] == "failed":
            assert value["messageUuid"] in value["error"]
            assert "Authorization: Basic ***" in value["error"]
        assert TEST_TOKEN.encode() not in record.value
    assert daemon.events("api_configuration_error") == []  # the breaker never opened
    assert_no_secret(daemon)


@pytest.mark.parametrize("max_size", [500, 4])
def test_api_rejecting_everything_trips_the_breaker(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, max_size: int
) -> None:
    # With batches of 4 no bisection is long enough to open the breaker by itself: it
    # must open because nothing at all is being accepted, not fail every uuid.
    topics = topics_for(make_topic, dlq=False)
    messages = corpus(2000 if max_size > 4 else 200, seed=9)
    positions = produce(kafka_bootstrap, topics["input"], messages)
    with running_fake_api("--token", TEST_TOKEN, "--reject-all") as api:
        config = config_for(
            tmp_path,
            kafka_bootstrap,
            topics,
            api.url,
            retry__max_backoff_ms=1000,
            batch__max_size=max_size,
        )
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_port()
            wait_for(lambda: daemon.metric("streamstop_config_error") == 1, 60, "breaker open")
            assert not daemon.ready()
            assert daemon.metric("streamstop_results_total", {"status": "failed"}) == 0
            api.set(reject_all=False)
            wait_committed(kafka_bootstrap, topics, 120, "done")
        results = consume_all(kafka_bootstrap, topics["output"], len(messages), timeout_s=60)
    check_results(messages, positions, results, topics["input"])
    assert "failed" not in statuses(results)
    assert_no_secret(daemon)


def poison_corpus(seed: int) -> list[Message]:
    """A fixed, seeded set of nasty values, mixed with good ones."""
    rng = random.Random(seed)
    nasty: list[bytes | None] = [
        None,
        b"",
        b"   \n\t ",
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b"x" * (70 * 1024),
        orjson.dumps({"messageUuid": "a" * 60_000}),
        orjson.dumps({"messageUuid": 12345}),
        orjson.dumps({"messageUuid": None}),
        orjson.dumps({"messageUuid": ["2a28d557-22a1-4be6-8908-1481723043dd"]}),
        orjson.dumps([1, 2, 3]),
        b'"2a28d557-22a1-4be6-8908-1481723043dd"',
        b"{2a28d557-22a1-4be6-8908-1481723043dd}",
        b"urn:uuid:2a28d557-22a1-4be6-8908-1481723043dd",
        b"2a28d55722a14be689081481723043dd",
        b"1e999999",
        b"\x00\x01\x02",
        "2a28d557-22a1-4be6-8908-1481723043dd\u00a0x".encode(),
        b"\xed\xa0\x80",
    ]
    nasty += [rng.randbytes(rng.randint(1, 300)) for _ in range(200)]
    messages = [Message(value) for value in nasty]
    messages += [
        Message(str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode()) for _ in range(300)
    ]
    rng.shuffle(messages)
    return messages


def test_poison_input_ends_invalid_while_running(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic)
    messages = poison_corpus(10)
    positions, results = run_once_each(kafka_bootstrap, topics, messages, tmp_path)
    invalid = statuses(results)["invalid"]
    assert invalid >= 200
    dlq = consume_all(kafka_bootstrap, topics["dlq"], invalid, timeout_s=30)
    assert len(dlq) == invalid
    # Each copy carries the value as it came: a null value stays null, not empty.
    by_source = {dict(copy.headers)["streamstop-source"]: copy.value for copy in dlq}
    for message, (partition, offset) in zip(messages, positions, strict=True):
        source = f"{topics['input']}/{partition}/{offset}".encode()
        if source in by_source and len(message.value or b"") <= 512 * 1024:
            assert by_source[source] == message.value


def test_a_record_aiokafka_cannot_decode_ends_invalid_and_nothing_around_it_is_lost(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    # A header key that is not UTF-8 (librdkafka clients can write one) makes aiokafka
    # fail the whole poll, dropping the records it had already read from every
    # partition. Those must still be answered, and the culprit answered `invalid`.
    topics = topics_for(make_topic)
    before = corpus(3000, seed=11)
    positions = produce(kafka_bootstrap, topics["input"], before)
    # One alone in its batch; one in the middle of a batch of five: aiokafka decodes a
    # batch from its start, so the bad record and every one after it in its batch are
    # unreadable, from any fetch position.
    bad = produce_bad_header(kafka_bootstrap, topics["input"], 2, [b"x"])
    batch = [Message(str(uuid.uuid4()).encode()) for _ in range(5)]
    landed = produce_bad_header(
        kafka_bootstrap, topics["input"], 4, [m.value or b"" for m in batch], bad=2
    )
    # Records before the bad one in its batch read fine; it and those after it do not.
    before += batch[:2]
    positions += landed[:2]
    bad += landed[2:]
    after = corpus(3000, seed=12)
    positions += produce(kafka_bootstrap, topics["input"], after)
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url)
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_committed(kafka_bootstrap, topics, 120, "done, past both records")
            assert daemon.proc.poll() is None, "no restart was needed"
        total = len(before) + len(after) + len(bad)
        results = consume_all(kafka_bootstrap, topics["output"], total, timeout_s=60)
    culprits = {(p.partition, p.offset) for p in bad}
    assert len(culprits) == 4
    answered = {
        (v["source"]["partition"], v["source"]["offset"]): v
        for v in (orjson.loads(r.value) for r in results)
    }
    for position in culprits:
        assert answered[position]["status"] == "invalid"
        assert "cannot be decoded" in answered[position]["error"]
    rest = [r for r in results if _source(r) not in culprits]
    per_record = check_results(before + after, positions, rest, topics["input"])
    assert len(per_record) == len(before) + len(after)
    dlq = consume_all(kafka_bootstrap, topics["dlq"], len(culprits), timeout_s=30)
    copies = {
        dict(r.headers)["streamstop-source"].decode()
        for r in dlq
        if b"cannot be decoded" in dict(r.headers)["streamstop-error"]
    }
    assert copies == {f"{topics['input']}/{p}/{o}" for p, o in culprits}
    assert len(daemon.events("undecodable_record_answered")) == 2
    assert_no_secret(daemon)


def _source(record: Any) -> tuple[int, int]:
    source = orjson.loads(record.value)["source"]
    return source["partition"], source["offset"]

"""Exactly-once results with real processes and a real broker: a read_committed reader of
the output topic finds exactly one result per input record, whatever happens."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from daemon_proc import TEST_TOKEN, Daemon, running_daemon, wait_for
from fakeapi_proc import FakeApi, running_fake_api
from kafkahelp import (
    PREFIXED,
    TRANSACTIONAL_ID,
    KafkaBroker,
    KafkaCluster,
    Message,
    Position,
    committed_offsets,
    consume_all,
    group_protocol,
    produce,
    stable_offsets,
    topics_on,
    transaction_coordinators,
)
from scenario import check_results, config_for, corpus, expected_result, topics_for, wait_committed
from securekafka import USER, SecureKafka

pytestmark = pytest.mark.kafka

EXACTLY_ONCE = {"delivery__guarantee": "exactly_once"}
# 5xx, 429 with Retry-After, missing and malformed items, and latency: uuids take several
# attempts, batches finish out of order.
FAULTY_API = [
    *("--error-rate", "0.1", "--throttle-rate", "0.05", "--retry-after-s", "1"),
    *("--missing-rate", "0.05", "--malformed-rate", "0.05"),
    *("--latency-ms", "30", "--latency-jitter-ms", "60"),
]


class Feeder:
    """Cancel events arriving continuously on the input topic, from a thread, until
    stopped; remembers what it produced and where it landed."""

    def __init__(self, bootstrap: str, topic: str, chunk: int, every_s: float) -> None:
        self.messages: list[Message] = []
        self.positions: list[Position] = []
        self._args = (bootstrap, topic, chunk, every_s)
        self._stop = threading.Event()
        self._producing = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        bootstrap, topic, chunk, every_s = self._args
        seed = 1000
        try:
            while not self._stop.is_set():
                messages = corpus(chunk, seed=seed)
                with self._producing:
                    self.positions += produce(bootstrap, topic, messages)
                    self.messages += messages
                seed += 1
                self._stop.wait(every_s)
        except BaseException as exc:  # reported by stop(): the test must not pass on less
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert self.error is None, f"the feeder failed: {self.error!r}"

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No records arrive meanwhile (say, while the broker is down)."""
        with self._producing:
            yield

    @contextmanager
    def running(self) -> Iterator[Feeder]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(60)


@contextmanager
def live_input(
    bootstrap: str, topics: dict[str, str], *api_args: str, every_s: float = 0.3
) -> Iterator[tuple[FakeApi, Feeder]]:
    """The fake API (started with `api_args`), and cancel events arriving on the input
    topic meanwhile."""
    feeder = Feeder(bootstrap, topics["input"], chunk=200, every_s=every_s)
    with running_fake_api("--token", TEST_TOKEN, *api_args) as api, feeder.running():
        yield api, feeder


def read_committed(bootstrap: str, topic: str, expected: int = 0) -> list[Any]:
    """Every record a read_committed consumer finds in `topic` now (or once `expected`)."""
    return consume_all(bootstrap, topic, expected, timeout_s=120, isolation_level="read_committed")


def assert_exactly_one_each(
    bootstrap: str, topics: dict[str, str], messages: list[Message], positions: list[Position]
) -> None:
    """A read_committed reader finds exactly one correct result per input record."""
    results = read_committed(bootstrap, topics["output"], len(messages))
    per_record = check_results(messages, positions, results, topics["input"])
    assert len(per_record) == len(messages)
    assert set(per_record.values()) == {1}


def results_ahead_of_commits(bootstrap: str, topics: dict[str, str]) -> int:
    """Results a read_committed reader sees for input records whose offsets are not
    committed: after a kill, the next owner processes those records again. Offsets of a
    committed transaction may show a moment after its results: polled for a while."""
    deadline = time.monotonic() + 10
    while True:
        results = read_committed(bootstrap, topics["output"])
        committed = committed_offsets(bootstrap, topics["group"], topics["input"])
        ahead = 0
        for record in results:
            source = orjson.loads(record.value)["source"]
            ahead += source["offset"] >= committed.get(source["partition"], 0)
        if not ahead or time.monotonic() >= deadline:
            return ahead
        time.sleep(0.5)


def kill_mid_work(daemon: Daemon, progress: int) -> float:
    """SIGKILL `daemon` once it published `progress` results; returns the records it had
    taken in and not committed at that moment (work in flight)."""
    daemon.wait_port()
    wait_for(
        lambda: daemon.metric("streamstop_results_total") >= progress,
        120,
        "progress before the kill",
    )
    in_flight = daemon.metric("streamstop_pending_records")
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit(10)
    return in_flight


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_sigkills_mid_work_with_a_faulty_api(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, guarantee: str
) -> None:
    # The same run under both guarantees: at-least-once shows the duplicates that
    # exactly-once must not, so this test can tell the difference.
    topics = topics_for(make_topic)
    rng = random.Random(15)
    kills: list[tuple[float, int]] = []
    with live_input(kafka_bootstrap, topics, *FAULTY_API, every_s=0.5) as (api, feeder):
        config = config_for(
            tmp_path,
            kafka_bootstrap,
            topics,
            api.url,
            batch__max_in_flight=3,
            delivery__guarantee=guarantee,
        )
        for round_ in range(5):
            with running_daemon(config, tmp_path / f"d{round_}.log") as daemon:
                in_flight = kill_mid_work(daemon, rng.randint(300, 1500))
            kills.append((in_flight, results_ahead_of_commits(kafka_bootstrap, topics)))
        feeder.stop()
        with running_daemon(config, tmp_path / "last.log") as daemon:
            daemon.wait_ready()
            wait_committed(kafka_bootstrap, topics, 300, "the last run finishes everything")
    messages, positions = feeder.messages, feeder.positions
    results = read_committed(kafka_bootstrap, topics["output"], len(messages))
    per_record = check_results(messages, positions, results, topics["input"])
    invalid = sum(expected_result(m)[0] == "invalid" for m in messages)
    copies = read_committed(kafka_bootstrap, topics["dlq"], invalid)
    duplicates = sum(n - 1 for n in per_record.values())
    print(f"{guarantee}: records={len(messages)} kills={kills} duplicates={duplicates}")
    assert all(in_flight > 0 for in_flight, _ in kills), "every kill landed mid-work"
    assert len(per_record) == len(messages), "nothing lost"
    if guarantee == "exactly_once":
        assert duplicates == 0
        assert len(copies) == invalid
        # At no kill did a reader see a result whose record would be processed again...
        assert [ahead for _, ahead in kills] == [0] * 5
        # ...though kills left results in transactions that never committed.
        written = consume_all(kafka_bootstrap, topics["output"], len(results), timeout_s=60)
        assert len(written) > len(results)
    else:
        assert any(ahead for _, ahead in kills), "a kill landed between publish and commit"
        assert duplicates > 0
        assert len(copies) >= invalid


def owned(daemon: Daemon) -> set[str]:
    """The partitions `daemon` was last assigned (from its log)."""
    assigned = daemon.events("partitions_assigned")
    return set(assigned[-1]["partitions"]) if assigned else set()


def open_transactions(bootstrap: str, topic: str, window_s: float) -> dict[int, int]:
    """Partitions of `topic` a transaction has kept unstable for at least `window_s`:
    their last stable offset stayed below the high watermark, unmoved. Returns each
    one's last stable offset."""
    before = stable_offsets(bootstrap, topic)
    time.sleep(window_s)
    after = stable_offsets(bootstrap, topic)
    return {
        partition: stable
        for partition, (stable, high) in after.items()
        if stable < high and before[partition][0] == stable
    }


def stop_mid_transaction(
    daemon: Daemon, bootstrap: str, topic: str, window_s: float
) -> dict[int, int]:
    """SIGSTOP `daemon` at a moment one of its transactions is open (tries again a few
    times when it is between transactions); returns what `open_transactions` found."""
    for _ in range(20):
        daemon.signal(signal.SIGSTOP)
        pinned = open_transactions(bootstrap, topic, window_s)
        if pinned:
            return pinned
        daemon.signal(signal.SIGCONT)
        time.sleep(random.uniform(0.1, 0.5))
    raise AssertionError("never stopped the daemon mid-transaction")


def moved_past(bootstrap: str, topic: str, pinned: dict[int, int]) -> bool:
    """Every pinned partition's last stable offset moved: that transaction ended."""
    now = stable_offsets(bootstrap, topic)
    return all(now[partition][0] > stable for partition, stable in pinned.items())


def test_a_zombie_member_is_fenced(kafka_bootstrap: str, make_topic: Any, tmp_path: Path) -> None:
    # Member A is stopped mid-transaction past its session timeout: the group gives its
    # partitions to B, whose producers fence A's. A then wakes up believing it owns them.
    topics = topics_for(make_topic)
    with live_input(kafka_bootstrap, topics, "--latency-ms", "20") as (api, feeder):
        # Transactions open for a second: the stop lands in one sooner. A long transaction
        # timeout: only B's fencing can end A's open transaction while A is stopped.
        config = config_for(
            tmp_path,
            kafka_bootstrap,
            topics,
            api.url,
            delivery__transaction_interval_ms=1000,
            delivery__transaction_timeout_ms=600_000,
            **EXACTLY_ONCE,
        )
        with (
            running_daemon(config, tmp_path / "a.log") as zombie,
            running_daemon(config, tmp_path / "b.log") as other,
        ):
            zombie.wait_ready()
            other.wait_ready()
            wait_for(lambda: owned(zombie) and owned(other), 60, "both members own partitions")
            everything = owned(zombie) | owned(other)
            wait_for(lambda: zombie.metric("streamstop_transactions_total") > 10, 60, "work")
            pinned = stop_mid_transaction(zombie, kafka_bootstrap, topics["output"], 2.0)
            try:
                wait_for(lambda: owned(other) == everything, 90, "B takes A's partitions")
                wait_for(
                    lambda: moved_past(kafka_bootstrap, topics["output"], pinned),
                    60,
                    "B's producers end A's open transaction",
                )
            finally:
                zombie.signal(signal.SIGCONT)
            fenced = wait_for(
                lambda: zombie.events("transaction_failed"), 60, "the zombie's transaction fails"
            )
            assert "ProducerFenced" in fenced[0]["error"]
            committed = {"outcome": "committed"}
            before = zombie.metric("streamstop_transactions_total", committed)
            wait_for(
                lambda: zombie.metric("streamstop_transactions_total", committed) > before,
                120,
                "the zombie rejoins the group and commits again",
            )
            feeder.stop()
            wait_committed(kafka_bootstrap, topics, 180, "both members finish everything")
            assert zombie.proc.poll() is None, "the zombie recovered by itself"
            assert other.proc.poll() is None
    assert_exactly_one_each(kafka_bootstrap, topics, feeder.messages, feeder.positions)


def fence(bootstrap: str, transactional_ids: list[str]) -> None:
    """Start and stop a producer with each transactional id: its init_transactions bumps
    the epoch, so the daemon's producer of that id is fenced at its next write."""

    async def each() -> None:
        for transactional_id in transactional_ids:
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, transactional_id=transactional_id
            )
            await producer.start()
            await producer.stop()

    asyncio.run(each())


def test_a_partition_restarted_before_its_first_commit_starts_where_it_began(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    # A new group (no committed offset) whose producers are fenced while the API holds
    # their first records: each partition restarts before it ever committed. It must
    # read those records again from where it began, not go on from where the consumer
    # had fetched to (their results were dropped with the failed transaction).
    topics = topics_for(make_topic)
    messages = [Message(orjson.dumps({"messageUuid": str(uuid.uuid4())})) for _ in range(1200)]
    positions = produce(kafka_bootstrap, topics["input"], messages)
    # Slow answers: the fence lands while every first record waits for the API.
    with running_fake_api("--token", TEST_TOKEN, "--latency-ms", "5000") as api:
        config = config_for(
            tmp_path, kafka_bootstrap, topics, api.url, api__timeout_s=60, **EXACTLY_ONCE
        )
        with running_daemon(config, tmp_path / "d.log") as daemon:
            started = wait_for(
                lambda: (
                    len(daemon.events("transactional_producer_started")) == 6
                    and daemon.metric("streamstop_in_flight_requests") > 0
                    and daemon.events("transactional_producer_started")
                ),
                60,
                "every partition's producer started, its first records at the API",
            )
            assert committed_offsets(kafka_bootstrap, topics["group"], topics["input"]) == {}
            fence(kafka_bootstrap, [line["txn_id"] for line in started])
            wait_for(
                lambda: len(daemon.events("partition_restarting")) >= 6,
                90,
                "every partition restarts before its first commit",
            )
            wait_committed(kafka_bootstrap, topics, 180, "every record done after all")
            assert daemon.proc.poll() is None
            # The fence is told once per partition (transaction_failed), not as errors
            # for each future aiokafka's fenced sender leaves behind.
            assert not daemon.events("unhandled_loop_error")
    assert_exactly_one_each(kafka_bootstrap, topics, messages, positions)


def test_a_daemon_stalled_past_its_transaction_timeout(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    # Stopped within its group session but past its transaction timeout: the broker
    # aborts the open transaction and fences the producer; the daemon, still the owner,
    # must drop that work and redo it, never commit it nor exit.
    topics = topics_for(make_topic)
    with live_input(kafka_bootstrap, topics, "--latency-ms", "20") as (api, feeder):
        config = config_for(
            tmp_path,
            kafka_bootstrap,
            topics,
            api.url,
            delivery__transaction_interval_ms=500,
            delivery__transaction_timeout_ms=2000,
            **EXACTLY_ONCE,
        )
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_for(lambda: daemon.metric("streamstop_transactions_total") > 10, 60, "work")
            pinned = stop_mid_transaction(daemon, kafka_bootstrap, topics["output"], 0.5)
            try:
                wait_for(
                    lambda: moved_past(kafka_bootstrap, topics["output"], pinned),
                    30,
                    "the broker aborts the stalled transaction",
                )
            finally:
                daemon.signal(signal.SIGCONT)
            wait_for(lambda: daemon.events("transaction_failed"), 60, "the transaction fails")
            wait_for(lambda: daemon.events("partition_restarting"), 60, "the partition restarts")
            feeder.stop()
            wait_committed(kafka_bootstrap, topics, 180, "the daemon recovers by itself")
            assert daemon.proc.poll() is None, "no restart was needed"
    assert_exactly_one_each(kafka_bootstrap, topics, feeder.messages, feeder.positions)


def test_broker_restart_mid_transaction(
    kafka_broker: KafkaBroker, make_topic: Any, tmp_path: Path
) -> None:
    if kafka_broker.state_dir is None:
        pytest.skip("needs a broker this test session started (KAFKA_BOOTSTRAP is set)")
    bootstrap = kafka_broker.bootstrap
    topics = topics_for(make_topic)
    with live_input(bootstrap, topics, "--latency-ms", "20") as (api, feeder):
        config = config_for(tmp_path, bootstrap, topics, api.url, **EXACTLY_ONCE)
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_for(lambda: daemon.metric("streamstop_transactions_total") > 10, 60, "work")
            # Records arrive and transactions commit every ~100 ms: the broker goes while
            # one is open (seen: it keeps an output partition unstable).
            wait_for(lambda: open_transactions(bootstrap, topics["output"], 0.0), 30, "one open")
            committed = daemon.metric("streamstop_transactions_total", {"outcome": "committed"})
            with feeder.paused():
                kafka_broker.stop()
                kafka_broker.start()
            wait_for(
                lambda: (
                    daemon.metric("streamstop_transactions_total", {"outcome": "committed"})
                    > committed
                ),
                120,
                "transactions commit again",
            )
            feeder.stop()
            wait_committed(bootstrap, topics, 240, "the daemon recovers by itself")
            assert daemon.proc.poll() is None, "no restart was needed"
    assert_exactly_one_each(bootstrap, topics, feeder.messages, feeder.positions)


class Crash(NamedTuple):
    """A transaction coordinator killed mid-work."""

    node: int
    transactional_ids: list[str]  # those it coordinated at that moment
    pending_records: float  # the daemon's records taken in and not committed


def kill_coordinator_mid_transaction(
    cluster: KafkaCluster, daemon: Daemon, output_topic: str, transactional_ids: list[str]
) -> Crash:
    """SIGKILL the broker coordinating the most of `transactional_ids`, right after one
    of the daemon's transactions was seen open."""
    wait_for(lambda: open_transactions(cluster.bootstrap, output_topic, 0.0), 30, "one open")
    pending = daemon.metric("streamstop_pending_records")
    coordinators = transaction_coordinators(cluster.bootstrap, transactional_ids)
    victim, _ = Counter(coordinators.values()).most_common(1)[0]
    cluster.node(victim).kill()
    its_ids = [txn_id for txn_id, node in coordinators.items() if node == victim]
    return Crash(victim, its_ids, pending)


def transactional_ids(daemon: Daemon) -> list[str]:
    """The transactional ids of the producers `daemon` started so far."""
    return sorted({line["txn_id"] for line in daemon.events("transactional_producer_started")})


def coordinators_after(bootstrap: str, crash: Crash) -> dict[str, int]:
    """Who coordinates the crashed broker's transactional ids now; empty while it still
    does (the controller has not noticed the crash yet)."""
    now = transaction_coordinators(bootstrap, crash.transactional_ids)
    return {} if crash.node in now.values() else now


def test_the_transaction_coordinator_moves(kafka_cluster: KafkaCluster, tmp_path: Path) -> None:
    # Three brokers, everything replicated three times. The broker coordinating some of
    # the partition producers' transactions crashes while transactions are open: another
    # takes over its part of the transaction log and the producers go on with it. Later
    # the crashed broker comes back.
    bootstrap = kafka_cluster.bootstrap
    committed = {"outcome": "committed"}
    with topics_on(bootstrap, replication_factor=3) as make_topic:
        topics = topics_for(make_topic)
        with live_input(bootstrap, topics, "--latency-ms", "20") as (api, feeder):
            config = config_for(tmp_path, bootstrap, topics, api.url, **EXACTLY_ONCE)
            with running_daemon(config, tmp_path / "d.log") as daemon:
                daemon.wait_ready()
                txn_ids = wait_for(
                    lambda: (
                        transactional_ids(daemon) if len(transactional_ids(daemon)) == 6 else []
                    ),
                    60,
                    "one producer per partition",
                )
                wait_for(
                    lambda: daemon.metric("streamstop_transactions_total", committed) > 10,
                    60,
                    "transactions commit",
                )
                crash = kill_coordinator_mid_transaction(
                    kafka_cluster, daemon, topics["output"], txn_ids
                )
                at_kill = daemon.metric("streamstop_transactions_total", committed)
                moved = wait_for(
                    lambda: coordinators_after(bootstrap, crash),
                    120,
                    "another broker coordinates the crashed one's transactional ids",
                )
                print(f"{crash}; coordinators after: {moved}")
                with feeder.paused():
                    # Every partition, those whose coordinator moved too, commits all it
                    # was given while the crashed broker is still away.
                    wait_committed(bootstrap, topics, 240, "everything committed, one node down")
                assert daemon.metric("streamstop_transactions_total", committed) > at_kill
                kafka_cluster.node(crash.node).start()
                back = daemon.metric("streamstop_transactions_total", committed)
                wait_for(
                    lambda: daemon.metric("streamstop_transactions_total", committed) > back + 10,
                    120,
                    "transactions commit with the broker back",
                )
                feeder.stop()
                wait_committed(bootstrap, topics, 240, "the daemon finishes everything")
                assert daemon.proc.poll() is None, "the daemon never exited"
                assert not daemon.events("unhandled_loop_error")
            assert crash.pending_records > 0, "records were in flight at the crash"
        assert_exactly_one_each(bootstrap, topics, feeder.messages, feeder.positions)


def test_rolling_update_from_at_least_once_loses_nothing(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    # Old (at-least-once) and new (exactly-once) members share the group for a while, as
    # in a rolling update; then the old one stops.
    topics = topics_for(make_topic)
    with live_input(kafka_bootstrap, topics, "--latency-ms", "20") as (api, feeder):
        (tmp_path / "old").mkdir()
        (tmp_path / "new").mkdir()
        old_config = config_for(tmp_path / "old", kafka_bootstrap, topics, api.url)
        new_config = config_for(tmp_path / "new", kafka_bootstrap, topics, api.url, **EXACTLY_ONCE)
        with running_daemon(old_config, tmp_path / "old.log") as old:
            old.wait_ready()
            wait_for(lambda: old.metric("streamstop_results_total") > 500, 60, "old at work")
            with running_daemon(new_config, tmp_path / "new.log") as new:
                wait_for(lambda: owned(old) and owned(new), 60, "both members own partitions")
                # The one strategy both kinds of member support.
                assert group_protocol(kafka_bootstrap, topics["group"]) == "roundrobin"
                wait_for(lambda: new.metric("streamstop_transactions_total") > 0, 60, "new at work")
                old.stop()
                after_old = len(feeder.positions)
                wait_for(lambda: len(owned(new)) == 6, 60, "the new member takes everything")
                assert group_protocol(kafka_bootstrap, topics["group"]) == "sticky"
                wait_for(lambda: len(feeder.positions) > after_old + 1000, 60, "more input")
                feeder.stop()
                wait_committed(kafka_bootstrap, topics, 180, "the new member finishes")
    results = read_committed(kafka_bootstrap, topics["output"], len(feeder.messages))
    per_record = check_results(feeder.messages, feeder.positions, results, topics["input"])
    assert len(per_record) == len(feeder.messages), "nothing lost"
    # Records produced after the old member left get exactly-once results.
    assert all(per_record[p] == 1 for p in feeder.positions[after_old:])


def test_a_stop_sent_twice_is_answered_once(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    # The HTTP call stays at-least-once: a record whose result was not committed when the
    # daemon died is sent to the API again. The simulator remembers stopped messages and
    # answers a repeated stop 403 (already sent); the committed result is that answer.
    topics = topics_for(make_topic, dlq=False)
    uuids = [str(uuid.uuid4()) for _ in range(3000)]
    messages = [Message(orjson.dumps({"messageUuid": u})) for u in uuids]
    with running_fake_api(
        "--token", TEST_TOKEN, "--latency-ms", "300", "--repeat-stop-code", "403"
    ) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url, **EXACTLY_ONCE)
        with running_daemon(config, tmp_path / "first.log") as first:
            first.wait_ready()
            positions = produce(kafka_bootstrap, topics["input"], messages)
            # Killed once the API got stops whose results cannot all be committed yet.
            wait_for(lambda: len(api.received()) >= 3, 60, "stops sent to the API")
            first.signal(signal.SIGKILL)
            first.wait_exit(10)
        with running_daemon(config, tmp_path / "second.log") as second:
            second.wait_ready()
            wait_committed(kafka_bootstrap, topics, 120, "everything committed")
        sent: dict[str, int] = {}
        for request in api.received():
            for sent_uuid in request["uuids"]:
                sent[sent_uuid] = sent.get(sent_uuid, 0) + 1
    results = read_committed(kafka_bootstrap, topics["output"], len(messages))
    twice = {u for u, count in sent.items() if count > 1}
    assert twice, "some uuids were sent to the API again after the kill"

    def expect(message: Message) -> tuple[str, int | None, str | None]:
        status, code, uuid_ = expected_result(message)
        if uuid_ in twice and code in (200, 202):
            return "already_sent", 403, uuid_
        return status, code, uuid_

    per_record = check_results(messages, positions, results, topics["input"], expect)
    assert set(per_record.values()) == {1}


def test_producers_of_partitions_that_stay_are_kept(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    # A second member joins and leaves: the first keeps the partitions it had (sticky)
    # and their producers, and starts producers only for partitions new to it.
    topics = topics_for(make_topic, dlq=False)

    def started(daemon: Daemon) -> list[str]:
        return [event["txn_id"] for event in daemon.events("transactional_producer_started")]

    with live_input(kafka_bootstrap, topics) as (api, feeder):
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url, **EXACTLY_ONCE)
        with running_daemon(config, tmp_path / "first.log") as first:
            wait_for(lambda: len(started(first)) == 6, 60, "one producer per partition")
            with running_daemon(config, tmp_path / "second.log") as second:
                wait_for(lambda: len(started(second)) == 3, 60, "the second member's three")
                assert len(owned(first)) == 3
                assert len(started(first)) == 6, "no producer of the first one started again"
                # Its producers took three of the first's transactional ids (fencing them).
                assert set(started(second)) < set(started(first))
                wait_for(
                    lambda: first.metric("streamstop_transactional_producers") == 3,
                    30,
                    "the producers of partitions that went stopped",
                )
            wait_for(lambda: len(owned(first)) == 6, 60, "the first member takes all back")
            wait_for(lambda: len(started(first)) == 9, 60, "producers for the three back")
            assert first.metric("streamstop_transactional_producers") == 6
            feeder.stop()
            wait_committed(kafka_bootstrap, topics, 120, "everything committed")
    assert_exactly_one_each(kafka_bootstrap, topics, feeder.messages, feeder.positions)


@pytest.mark.parametrize("refused", ["transactional_id", "output_topic"])
def test_a_refused_write_is_a_hold(
    secure_kafka: SecureKafka, secure_topic: Any, tmp_path: Path, refused: str
) -> None:
    # Without Write on its transactional ids the daemon cannot start a producer; without
    # Write on the output topic its transactions abort (and each partition's producer is
    # replaced, again and again). Either is a hold (not ready, one line every 30 s, nothing
    # committed, the work kept, not redone); the ACL back, the same process goes on.
    topics = topics_for(secure_topic, dlq=False)
    uuids = [str(uuid.uuid4()) for _ in range(2000)]
    messages = [Message(orjson.dumps({"messageUuid": u})) for u in uuids]
    positions = produce(secure_kafka.bootstrap, topics["input"], messages)
    user = f"User:{USER}"
    if refused == "transactional_id":
        prefix = f"streamstop-{topics['group']}-"
        denial = secure_kafka.denied(user, prefix, "WRITE", (TRANSACTIONAL_ID, PREFIXED))
        event, error = "transactional_producer_unavailable", "TransactionalIdAuthorizationFailed"
        aborts = 0
    else:
        denial = secure_kafka.denied(user, topics["output"], "WRITE")
        event, error = "transaction_aborted", "TopicAuthorizationFailed"
        aborts = 18  # three refusals per input partition (6), on average
    aborted = {"outcome": "aborted"}
    with running_fake_api("--token", TEST_TOKEN) as api, ExitStack() as running:
        config = config_for(
            tmp_path,
            secure_kafka.bootstrap,
            topics,
            api.url,
            **secure_kafka.kafka_config("scram-sha-512"),
            **EXACTLY_ONCE,
        )
        with denial:
            began = time.monotonic()
            daemon = running.enter_context(running_daemon(config, tmp_path / "d.log"))
            held = wait_for(lambda: daemon.events(event), 60, "the hold")
            assert error in held[0]["error"]
            wait_for(lambda: daemon.get("/readyz")[0] == 503, 30, "not ready")
            assert "Kafka refuses our writes" in daemon.get("/readyz")[1]
            wait_for(
                lambda: daemon.metric("streamstop_transactions_total", aborted) >= aborts,
                90,
                "aborts with replaced producers",
            )
            assert committed_offsets(secure_kafka.bootstrap, topics["group"], topics["input"]) == {}
            assert len(daemon.events(event)) <= 1 + (time.monotonic() - began) // 30
        wait_committed(secure_kafka.bootstrap, topics, 120, "done once the ACL is gone")
        assert daemon.proc.poll() is None, "no restart was needed"
        wait_for(daemon.ready, 30, "ready again")
        assert not daemon.events("transaction_failed"), "no partition was dropped"
        assert not daemon.events("unhandled_loop_error")
        sent = [u for request in api.received() for u in request["uuids"]]
    assert_exactly_one_each(secure_kafka.bootstrap, topics, messages, positions)
    assert sorted(sent) == sorted(uuids), "each uuid sent to the API once: nothing redone"

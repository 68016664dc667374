"""The contract's examples work: `examples/produce_cancel_requests.py` feeds streamstop and
`examples/consume_results.py` reads its results once each, against the real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from contract import INPUT_EVENT, RESULT_EVENT, problem
from daemon_proc import TEST_TOKEN, running_daemon, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import Message, consume_all, lag, produce, publish_aborted
from scenario import config_for, topics_for, wait_committed

from streamstop.core.decode import Decoded, decode_value
from streamstop.core.results import Resolution, Status, build_result, format_timestamp

REPO = Path(__file__).resolve().parent.parent
PRODUCER = REPO / "examples" / "produce_cancel_requests.py"
CONSUMER = REPO / "examples" / "consume_results.py"
REQUESTS = 300
DUPLICATED = 50

pytestmark = pytest.mark.kafka


def run_producer(bootstrap: str, topic: str, uuids: list[str]) -> list[list[str]]:
    """Run the producer example with `uuids` on stdin; its output lines, split."""
    done = subprocess.run(
        [sys.executable, str(PRODUCER), "--bootstrap", bootstrap, "--topic", topic],
        input="\n".join(uuids),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


@contextmanager
def running_consumer(
    bootstrap: str, topic: str, group: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The consumer example as a process, its stdout and stderr in files; stopped by pid."""
    with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(CONSUMER),
                "--bootstrap",
                bootstrap,
                "--topic",
                topic,
                "--group",
                group,
            ],
            stdout=out,
            stderr=err,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_the_producer_refuses_malformed_uuids_and_sends_nothing(
    kafka_bootstrap: str, make_topic: Any
) -> None:
    topic = make_topic(1, "in")
    bad = "{2a28d557-22a1-4be6-8908-1481723043dd}"
    done = subprocess.run(
        [
            sys.executable,
            str(PRODUCER),
            "--bootstrap",
            kafka_bootstrap,
            "--topic",
            topic,
            str(uuid.uuid4()),
            bad,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert bad in done.stderr
    assert consume_all(kafka_bootstrap, topic, 0, timeout_s=5) == []


def test_producer_example_to_streamstop_to_consumer_example(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = topics_for(make_topic, dlq=False)
    uuids = [str(uuid.uuid4()).upper() for _ in range(REQUESTS)]
    sent = run_producer(kafka_bootstrap, topics["input"], uuids)
    assert [line[0] for line in sent] == [u.lower() for u in uuids]
    # What the producer wrote is what the input schema describes, and streamstop decodes it.
    for record in consume_all(kafka_bootstrap, topics["input"], REQUESTS, timeout_s=30):
        event = json.loads(record.value)
        assert problem(INPUT_EVENT, event) is None
        assert record.key == event["messageUuid"].encode()
        assert decode_value(record.value) == Decoded(event["messageUuid"], event["requestId"])

    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, kafka_bootstrap, topics, api.url)
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            wait_committed(kafka_bootstrap, topics, 120, "every request answered")
    results = consume_all(kafka_bootstrap, topics["output"], REQUESTS, timeout_s=60)
    assert len(results) == REQUESTS

    # At-least-once redelivery, simulated: some results published a second time. Before
    # one of them, a result in an aborted transaction, which read_committed must not see.
    first = json.loads(results[0].value)
    aborted = build_result(
        uuid=first["messageUuid"],
        resolution=Resolution(Status.FAILED, None, "from an aborted transaction", 1),
        request_id=None,
        topic=topics["input"],
        partition=0,
        offset=10**9,
        batch_id="aborted",
        received_at=format_timestamp(0.0),
        completed_at=format_timestamp(0.0),
    )
    publish_aborted(kafka_bootstrap, topics["output"], results[0].key, aborted)
    copies = [Message(r.value, r.key, list(r.headers)) for r in results[:DUPLICATED]]
    produce(kafka_bootstrap, topics["output"], copies)

    group = f"reader-{uuid.uuid4().hex[:8]}"
    with running_consumer(kafka_bootstrap, topics["output"], group, tmp_path) as consumer:
        wait_for(
            lambda: lag(kafka_bootstrap, group, topics["output"]) == 0,
            120,
            "the consumer example has committed every result",
        )
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(30) == 0
    handled = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    summary = (tmp_path / "err").read_text()
    assert len(handled) == REQUESTS, summary
    assert f"handled {REQUESTS} results, skipped {DUPLICATED} duplicates" in summary
    sources = {(r["source"]["partition"], r["source"]["offset"]) for r in handled}
    assert sources == {(int(line[2]), int(line[3])) for line in sent}
    assert all(problem(RESULT_EVENT, result) is None for result in handled)
    assert {r["requestId"] for r in handled} == {line[1] for line in sent}

"""Kafka refusing the daemon is a hold, never an exit: a wrong password at start, an ACL
taken away from the input or the output topic while running. Not ready, one line naming
what to check (never a secret), and recovery without a restart once it is fixed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cli_proc import streamstop
from daemon_proc import TEST_TOKEN, Daemon, running_daemon, sampled, wait_for
from fakeapi_proc import running_fake_api
from kafkahelp import MakeTopic, Message, consume_all, produce
from scenario import check_results, config_for, topics_for, wait_committed
from securekafka import USER, SecureKafka

pytestmark = pytest.mark.kafka


def readiness(daemon: Daemon) -> str:
    status, body = daemon.get("/readyz")
    return body if status == 503 else ""


def assert_holds(daemon: Daemon, event: str, seconds: float = 5) -> None:
    """Alive, not ready, and one line for the hold (not a storm), for `seconds`."""
    for _ in sampled(seconds, 0.5):
        assert daemon.proc.poll() is None, daemon.raw_log()[-3000:]
        assert readiness(daemon)
    assert len(daemon.events(event)) == 1


def test_a_refused_login_at_start_holds_until_the_password_file_is_fixed(
    secure_kafka: SecureKafka, secure_topic: MakeTopic, tmp_path: Path
) -> None:
    topics = topics_for(secure_topic, dlq=False)
    password_file = tmp_path / "sasl-password"
    password_file.write_text("wrong-Passw0rd-DISTINCT\n")
    messages = [Message(str(uuid.uuid4()).encode()) for _ in range(200)]
    positions = produce(secure_kafka.bootstrap, topics["input"], messages)
    kafka = secure_kafka.kafka_config("scram-sha-512", sasl_password_file=str(password_file))
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, "", topics, api.url, **kafka)
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_port()
            wait_for(lambda: daemon.events("kafka_unavailable"), 60, "the hold")
            (line,) = daemon.events("kafka_unavailable")
            assert f"refused the login of user {USER}" in line["problem"]
            assert str(password_file) in line["problem"]
            assert_holds(daemon, "kafka_unavailable")
            # The Secret is fixed: the file is read again on the next attempt.
            password_file.write_text(secure_kafka.password_file.read_text())
            wait_committed(secure_kafka.bootstrap, topics, 120, "recovery without a restart")
            assert daemon.ready()
        results = consume_all(secure_kafka.bootstrap, topics["output"], len(messages), 60)
    check_results(messages, positions, results, topics["input"])
    assert "wrong-Passw0rd-DISTINCT" not in daemon.raw_log()


@pytest.mark.parametrize(
    ("role", "operation", "event"),
    [
        ("output", "WRITE", "publish_refused"),
        ("input", "READ", "poll_failed"),
    ],
)
def test_an_acl_taken_away_while_running_is_a_hold_and_nothing_is_lost(
    secure_kafka: SecureKafka,
    secure_topic: MakeTopic,
    tmp_path: Path,
    role: str,
    operation: str,
    event: str,
) -> None:
    topics = topics_for(secure_topic, dlq=False)
    kafka = secure_kafka.kafka_config("scram-sha-512")
    first = [Message(str(uuid.uuid4()).encode()) for _ in range(100)]
    later = [Message(str(uuid.uuid4()).encode()) for _ in range(100)]
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, "", topics, api.url, **kafka)
        with running_daemon(config, tmp_path / "d.log") as daemon:
            daemon.wait_ready()
            positions = produce(secure_kafka.bootstrap, topics["input"], first)
            wait_committed(secure_kafka.bootstrap, topics, 60, "the first records")
            with secure_kafka.denied(f"User:{USER}", topics[role], operation):
                positions += produce(secure_kafka.bootstrap, topics["input"], later)
                wait_for(lambda: daemon.events(event), 60, "the refusal")
                (line,) = daemon.events(event)
                assert line["level"] == "error"
                assert "Authorization" in line["error"]
                assert_holds(daemon, event)
            wait_committed(secure_kafka.bootstrap, topics, 120, "recovery without a restart")
            wait_for(daemon.ready, 60, "ready again")
        results = consume_all(secure_kafka.bootstrap, topics["output"], 200, 60)
    check_results([*first, *later], positions, results, topics["input"])


def test_the_topics_command_names_a_refused_login_as_the_daemon_does(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    kafka = secure_kafka.kafka_config(
        "sasl-plaintext", sasl_password="wrong-Passw0rd-DISTINCT", sasl_password_file=""
    )
    env = {
        f"STREAMSTOP_KAFKA__{key.removeprefix('kafka__').upper()}": str(value)
        for key, value in kafka.items()
    }
    done = streamstop("topics", "check", "--timeout", "20", cwd=tmp_path, env=env)
    assert done.returncode == 3, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert f"refused the login of user {USER}" in line
    assert "wrong-Passw0rd-DISTINCT" not in done.stdout + done.stderr

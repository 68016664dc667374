"""`streamstop run` against the secured broker: every Kafka security mode end to end,
credentials rotated mid-run, and refused credentials described in one line, no secret logged.

One broker serves every mode through its listeners (securekafka.py); records are produced
and read back through its PLAINTEXT listener, the daemon uses the secured one under test.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from daemon_proc import TEST_TOKEN, Daemon, running_daemon, wait_for
from fakeapi_proc import FakeApi, running_fake_api
from kafkahelp import (
    MakeTopic,
    Message,
    Position,
    consume_all,
    produce,
    unique_name,
)
from scenario import check_requests, check_results, config_for, corpus, topics_for, wait_committed
from securekafka import MODES, TOKEN_LIFETIME_S, SecureKafka

from streamstop.config import Settings
from streamstop.config.models import KafkaSettings
from streamstop.kafkaclients import make_producer, probe
from streamstop.kafkaproblems import describe_kafka_problem

pytestmark = pytest.mark.kafka


@contextmanager
def secured_daemon(
    tmp_path: Path, topics: dict[str, str], kafka: dict[str, Any]
) -> Iterator[tuple[Daemon, FakeApi]]:
    """A ready `streamstop run` with the `[kafka]` keys `kafka` and a fake API; both are
    stopped by pid at the end."""
    with running_fake_api("--token", TEST_TOKEN) as api:
        config = config_for(tmp_path, "", topics, api.url, **kafka)
        with running_daemon(config, tmp_path / "daemon.log") as daemon:
            daemon.wait_ready(timeout_s=90)
            yield daemon, api


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
    with secured_daemon(tmp_path, topics, secure_kafka.kafka_config(mode)) as (daemon, api):
        wait_committed(secure_kafka.bootstrap, topics, 120, "every offset committed")
        results = consume_all(secure_kafka.bootstrap, topics["output"], len(messages))
        per_record = check_results(messages, positions, results, topics["input"])
        assert set(per_record.values()) == {1}
        check_requests(api.received())
    assert daemon.proc.returncode == 0
    _assert_no_secret_logged(daemon, secure_kafka)


class Rounds:
    """Traffic for a daemon under test: records produced in small rounds, each waited for
    until committed, the daemon ready throughout; then every record checked."""

    def __init__(self, secure_kafka: SecureKafka, topics: dict[str, str], daemon: Daemon) -> None:
        self._kafka = secure_kafka
        self._topics = topics
        self._daemon = daemon
        self.messages: list[Message] = []
        self.positions: list[Position] = []

    def run_for(self, seconds: float) -> None:
        """At least one round, and more until `seconds` have passed."""
        deadline = time.monotonic() + seconds
        while True:
            messages = corpus(100, seed=len(self.messages))
            self.positions += produce(self._kafka.bootstrap, self._topics["input"], messages)
            self.messages += messages
            what = f"{len(self.messages)} records committed"
            wait_committed(self._kafka.bootstrap, self._topics, 60, what)
            assert self._daemon.ready(), "the daemon stopped being ready"
            if time.monotonic() >= deadline:
                return

    def check_exactly_one_result_each(self) -> None:
        topics = self._topics
        results = consume_all(self._kafka.bootstrap, topics["output"], len(self.messages))
        per_record = check_results(self.messages, self.positions, results, topics["input"])
        assert set(per_record.values()) == {1}


def _authentication_failures(daemon: Daemon) -> list[str]:
    return [
        line
        for line in daemon.raw_log().splitlines()
        if "Authentication" in line or "invalid_token" in line
    ]


def test_a_rotated_sasl_password_file_is_used_on_reconnect(
    secure_kafka: SecureKafka, secure_topic: MakeTopic, tmp_path: Path
) -> None:
    user = unique_name("rotating")
    old, new = secrets.token_hex(16), secrets.token_hex(16)
    secure_kafka.set_scram_password(user, old)
    password_file = tmp_path / "sasl-password"
    password_file.write_text(old + "\n")
    topics = topics_for(secure_topic, dlq=False)
    kafka = secure_kafka.kafka_config(
        "scram-sha-512", sasl_username=user, sasl_password_file=str(password_file)
    )
    with secured_daemon(tmp_path, topics, kafka) as (daemon, _):
        rounds = Rounds(secure_kafka, topics, daemon)
        rounds.run_for(0)
        # As an operator rotates a Secret: the cluster's credential, then the mounted file.
        secure_kafka.set_scram_password(user, new)
        password_file.write_text(new + "\n")
        # The broker ends SASL sessions after KAFKA_SASL_REAUTH_MS (10 s): after twice that,
        # every connection in use was opened, and authenticated, after the rotation.
        rounds.run_for(25)
        rounds.check_exactly_one_result_each()
    assert daemon.proc.returncode == 0
    log = daemon.raw_log()
    assert old not in log
    assert new not in log


def test_oauth_tokens_renew_over_three_lifetimes_and_a_rotated_secret_is_used(
    secure_kafka: SecureKafka, secure_topic: MakeTopic, tmp_path: Path
) -> None:
    tokens = secure_kafka.tokens
    client = unique_name("oauth")
    old, new = secrets.token_hex(16), secrets.token_hex(16)
    tokens.set_client(client, old)
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(old + "\n")
    topics = topics_for(secure_topic, dlq=False)
    kafka = secure_kafka.kafka_config(
        "oauthbearer", oauth_client_id=client, oauth_client_secret_file=str(secret_file)
    )
    with secured_daemon(tmp_path, topics, kafka) as (daemon, _):
        rounds = Rounds(secure_kafka, topics, daemon)
        rounds.run_for(2 * TOKEN_LIFETIME_S)
        # Tokens live TOKEN_LIFETIME_S and the broker ends each session sooner; every
        # reconnect asks for a token, and a token past 80% of its life is replaced.
        assert tokens.issued_to(client) >= 2
        # Rotation as identity providers allow it: both secrets valid, the mounted file
        # changed, then the old secret revoked.
        tokens.set_client(client, old, new)
        secret_file.write_text(new + "\n")
        rotated_at = tokens.issued_to(client)
        rounds.run_for(TOKEN_LIFETIME_S)
        tokens.set_client(client, new)
        revoked_at = tokens.issued_to(client)
        rounds.run_for(TOKEN_LIFETIME_S)
        rounds.check_exactly_one_result_each()
        assert tokens.issued_to(client) > revoked_at > rotated_at, "only the new secret works"
    assert daemon.proc.returncode == 0
    assert tokens.refused_for(client) == 0
    assert _authentication_failures(daemon) == []
    log = daemon.raw_log()
    for secret in (old, new, *tokens.tokens):
        assert secret not in log


def _settings(secure_kafka: SecureKafka, mode: str, **overrides: str) -> Settings:
    keys = secure_kafka.kafka_config(mode, **overrides)
    return Settings(kafka=KafkaSettings(**{k.removeprefix("kafka__"): v for k, v in keys.items()}))


_NO_KEY = {"ssl_key_password_file": ""}
# Each refused credential: (mode, keys changed, the exact line; {where} is the listener with
# protocol and mechanism, {tls} the certificates, {password_file} the user's password file).
REFUSALS: dict[str, tuple[str, dict[str, str], str]] = {
    "wrong-password": (
        "scram-sha-512",
        {"sasl_password": "wrong-Password-5e", "sasl_password_file": ""},
        "Kafka at {where} refused the login of user streamstop: check kafka.sasl_username and "
        "kafka.sasl_password, and that the user exists for SCRAM-SHA-512 on the cluster "
        "([Error 58] SaslAuthenticationFailed: Authentication failed during authentication "
        "due to invalid credentials with SASL mechanism SCRAM-SHA-512)",
    ),
    "unknown-user": (
        "scram-sha-256",
        {"sasl_username": "nobody"},
        "Kafka at {where} refused the login of user nobody: check kafka.sasl_username and the "
        "secret in kafka.sasl_password_file ({password_file}), and that the user exists for "
        "SCRAM-SHA-256 on the cluster ([Error 58] SaslAuthenticationFailed: Authentication "
        "failed during authentication due to invalid credentials with SASL mechanism "
        "SCRAM-SHA-256)",
    ),
    "plain-wrong-password": (
        "plain",
        {"sasl_password": "wrong-Password-6f", "sasl_password_file": ""},
        "Kafka at {where} refused the login of user streamstop: check kafka.sasl_username and "
        "kafka.sasl_password, and that the user exists for PLAIN on the cluster ([Error 58] "
        "SaslAuthenticationFailed: Authentication failed: Invalid username or password)",
    ),
    "wrong-ca": (
        "scram-sha-512",
        {"ssl_cafile": "{tls}/other-ca.crt"},
        "the TLS certificate of the broker at {where} was not accepted (unable to get local "
        "issuer certificate): the brokers' CA is not in kafka.ssl_cafile ({tls}/other-ca.crt): "
        "set kafka.ssl_cafile to it",
    ),
    "no-client-certificate": (
        "mtls",
        {"ssl_certfile": "", "ssl_keyfile": "", **_NO_KEY},
        "the broker at {where} wants a client certificate (SSLV3_ALERT_BAD_CERTIFICATE): set "
        "kafka.ssl_certfile and kafka.ssl_keyfile",
    ),
    "expired-client-certificate": (
        "mtls",
        {"ssl_certfile": "{tls}/expired.crt", "ssl_keyfile": "{tls}/expired.key", **_NO_KEY},
        "the broker at {where} refused the client certificate {tls}/expired.crt "
        "(SSLV3_ALERT_CERTIFICATE_UNKNOWN): check that it has not expired and that a CA the "
        "brokers trust signed it",
    ),
    "client-certificate-of-another-ca": (
        "mtls",
        {"ssl_certfile": "{tls}/other.crt", "ssl_keyfile": "{tls}/other.key", **_NO_KEY},
        "the broker at {where} refused the client certificate {tls}/other.crt "
        "(SSLV3_ALERT_CERTIFICATE_UNKNOWN): check that it has not expired and that a CA the "
        "brokers trust signed it",
    ),
    "oauth-wrong-secret": (
        "oauthbearer",
        {"oauth_client_secret": "wrong-Secret-7a", "oauth_client_secret_file": ""},
        "OAuth token endpoint {token_url} refused the client credentials: HTTP 401 "
        "invalid_client (client streamstop-oauth): check kafka.oauth_token_url, "
        "kafka.oauth_client_id and kafka.oauth_client_secret",
    ),
    "tls-without-sasl-on-a-sasl-listener": (
        "scram-sha-512",
        {"security_protocol": "SSL", "sasl_mechanism": "", "sasl_username": ""},
        "the broker at {where} closed the connection while connecting: check that the listener "
        "speaks SSL (TLS listeners need SSL or SASL_SSL, SASL ones SASL_*)",
    ),
}


def _refused_settings(secure_kafka: SecureKafka, case: str) -> tuple[Settings, str]:
    """The settings of refusal `case` and the exact line expected for them."""
    mode, changes, line = REFUSALS[case]
    tls = str(secure_kafka.tls)
    settings = _settings(
        secure_kafka, mode, **{key: value.format(tls=tls) for key, value in changes.items()}
    )
    kafka = settings.kafka
    where = f"{kafka.bootstrap_servers} ({kafka.security_protocol}"
    where += f" {kafka.sasl_mechanism})" if kafka.security_protocol.startswith("SASL") else ")"
    expected = line.format(
        where=where,
        tls=tls,
        password_file=secure_kafka.password_file,
        token_url=secure_kafka.tokens.token_url,
    )
    return settings, expected


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_each_refused_credential_is_one_line_naming_what_to_check(
    secure_kafka: SecureKafka, case: str
) -> None:
    settings, expected = _refused_settings(secure_kafka, case)

    try:
        await probe(settings, timeout_s=20)
    except Exception as exc:
        line = describe_kafka_problem(exc, settings)
    else:
        raise AssertionError(f"{case}: the broker let the client in")

    assert line == expected
    assert all(secret not in line for secret in secure_kafka.secret_values())


_FAILURE_WORDS = ("SaslAuthenticationFailed", "certificate", "OAuth token endpoint", "closed")


@pytest.mark.parametrize(
    "case", ["wrong-password", "oauth-wrong-secret", "expired-client-certificate", "wrong-ca"]
)
def test_a_daemon_with_refused_credentials_is_not_ready_and_logs_no_secret(
    secure_kafka: SecureKafka, secure_topic: MakeTopic, tmp_path: Path, case: str
) -> None:
    mode, changes, _ = REFUSALS[case]
    tls = str(secure_kafka.tls)
    kafka = secure_kafka.kafka_config(
        mode, **{key: value.format(tls=tls) for key, value in changes.items()}
    )
    topics = topics_for(secure_topic, dlq=False)
    config = config_for(tmp_path, "", topics, "http://127.0.0.1:9/stop", **kafka)
    with running_daemon(config, tmp_path / "daemon.log") as daemon:

        def refused() -> bool:
            if daemon.proc.poll() is not None:
                return True
            return any(
                line.get("level") in ("warning", "error")
                and any(word in str(line) for word in _FAILURE_WORDS)
                for line in daemon.lines()
            )

        wait_for(refused, 60, "the daemon to meet the refusal")
        assert not daemon.ready()
    log = daemon.raw_log()
    for secret in [*secure_kafka.secret_values(), *changes.values(), TEST_TOKEN]:
        if secret and "/" not in secret:
            assert secret not in log


def test_the_secure_demo_runs_end_to_end(secure_kafka: SecureKafka) -> None:
    # What `make demo SECURE=1` runs once the Makefile has started the secured broker.
    demo = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSTOP_")}
    done = subprocess.run(
        [
            sys.executable,
            str(demo),
            secure_kafka.bootstrap,
            "--secure",
            str(secure_kafka.state_dir),
        ],
        env={**env, "DEMO_RECORDS": "2000"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "the daemon reaches Kafka over SASL_SSL, SCRAM-SHA-512" in done.stdout
    assert re.search(r"^total\s+2,000$", done.stdout, re.MULTILINE), done.stdout
    assert "stopped: daemon exit 0, fake-api exit 0" in done.stdout


async def test_a_deny_acl_is_an_authorization_error_named_in_one_line(
    secure_kafka: SecureKafka, secure_topic: MakeTopic
) -> None:
    # The harness' DENY helper, for hold tests: a real broker's answer, then access again.
    topic = secure_topic(1, "acl")
    settings = _settings(secure_kafka, "scram-sha-512")
    producer = make_producer(settings)
    await producer.start()
    try:
        with secure_kafka.denied("User:streamstop", topic, "WRITE"):
            with pytest.raises(TopicAuthorizationFailedError) as denied:
                await producer.send_and_wait(topic, b"denied")
            line = describe_kafka_problem(denied.value, settings)
        allowed = await producer.send_and_wait(topic, b"allowed again")
    finally:
        await producer.stop()

    kafka = settings.kafka
    assert line == (
        f"Kafka at {kafka.bootstrap_servers} (SASL_SSL SCRAM-SHA-512) denied user streamstop "
        f"access to a topic ([Error 29] TopicAuthorizationFailedError: {topic}): grant the ACLs "
        "listed in docs/operations.md"
    )
    assert allowed.offset >= 0

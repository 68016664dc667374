"""describe_kafka_problem: each error aiokafka raises for a security or connection fault,
built as aiokafka builds it, becomes one exact line; nothing secret ever gets through."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from aiokafka import errors

from streamstop.config import ConfigError, Settings
from streamstop.config.models import KafkaSettings
from streamstop.kafkaproblems import describe_kafka_problem
from streamstop.logs import register_secret
from streamstop.oauth import OAuthTokenError

SERVERS = "kafka-0:9093,kafka-1:9093"
SCRAM = Settings(
    kafka=KafkaSettings(
        bootstrap_servers=SERVERS,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="streamstop",
        sasl_password_file=Path("/var/run/secrets/streamstop/sasl-password"),
        ssl_cafile="/etc/kafka-ca/ca.crt",
    )
)
OAUTH = Settings(
    kafka=KafkaSettings(
        bootstrap_servers=SERVERS,
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_url="https://idp.example.com/token",
        oauth_client_id="streamstop",
        oauth_client_secret_file=Path("/var/run/secrets/streamstop/oauth-client-secret"),
    )
)
MTLS = Settings(
    kafka=KafkaSettings(
        bootstrap_servers=SERVERS,
        security_protocol="SSL",
        ssl_cafile="/etc/kafka-ca/ca.crt",
        ssl_certfile="/etc/kafka-user/user.crt",
        ssl_keyfile="/etc/kafka-user/user.key",
    )
)
TLS_ONLY = Settings(kafka=KafkaSettings(bootstrap_servers=SERVERS, security_protocol="SSL"))


def closed_by(alert: str) -> errors.KafkaConnectionError:
    """What aiokafka raises when the broker ends the TLS handshake with `alert`."""
    cause = ssl.SSLError(1, f"[SSL: {alert}] alert")
    cause.reason = alert
    closed = errors.KafkaConnectionError("Connection at kafka-0:9093 closed")
    closed.__cause__ = cause
    return closed


SCRAM_REFUSED = (
    "Authentication failed during authentication due to invalid credentials with SASL "
    "mechanism SCRAM-SHA-512"
)
CASES: list[tuple[str, BaseException, Settings, str]] = [
    (
        "scram-refused",
        errors.SaslAuthenticationFailed(SCRAM_REFUSED),
        SCRAM,
        f"Kafka at {SERVERS} (SASL_SSL SCRAM-SHA-512) refused the login of user streamstop: "
        "check kafka.sasl_username and the secret in kafka.sasl_password_file "
        "(/var/run/secrets/streamstop/sasl-password), and that the user exists for "
        f"SCRAM-SHA-512 on the cluster ([Error 58] SaslAuthenticationFailed: {SCRAM_REFUSED})",
    ),
    (
        "oauth-token-refused",
        errors.SaslAuthenticationFailed('{"status":"invalid_token"}'),
        OAUTH,
        f"Kafka at {SERVERS} (SASL_SSL OAUTHBEARER) refused the OAuth token of client "
        "streamstop: check the audience, issuer and scope (kafka.oauth_scope) the brokers "
        "expect and that they trust kafka.oauth_token_url's signing keys ([Error 58] "
        'SaslAuthenticationFailed: {"status":"invalid_token"})',
    ),
    (
        "oauth-endpoint-refused",
        OAuthTokenError(
            "OAuth token endpoint https://idp.example.com/token refused the client "
            "credentials: HTTP 401 invalid_client (client streamstop)"
        ),
        OAUTH,
        "OAuth token endpoint https://idp.example.com/token refused the client credentials: "
        "HTTP 401 invalid_client (client streamstop): check kafka.oauth_token_url, "
        "kafka.oauth_client_id and the secret in kafka.oauth_client_secret_file "
        "(/var/run/secrets/streamstop/oauth-client-secret)",
    ),
    (
        "mechanism-not-enabled",
        errors.UnsupportedSaslMechanismError(
            "Kafka broker does not support SCRAM-SHA-512 sasl mechanism. Enabled mechanisms "
            "are: ['PLAIN']"
        ),
        SCRAM,
        f"the broker at {SERVERS} (SASL_SSL SCRAM-SHA-512) does not enable that SASL "
        "mechanism: check kafka.sasl_mechanism ([Error 33] UnsupportedSaslMechanismError: "
        "Kafka broker does not support SCRAM-SHA-512 sasl mechanism. Enabled mechanisms are: "
        "['PLAIN'])",
    ),
    (
        "sasl-on-a-tls-listener",
        errors.IllegalSaslStateError("<AIOKafkaConnection host=kafka-0 port=9093>"),
        SCRAM,
        f"the listener at {SERVERS} (SASL_SSL SCRAM-SHA-512) takes no SASL login: check "
        "kafka.security_protocol (SSL or PLAINTEXT for this listener?)",
    ),
    (
        "topic-denied",
        errors.TopicAuthorizationFailedError(),
        MTLS,
        f"Kafka at {SERVERS} (SSL) denied the holder of /etc/kafka-user/user.crt access to "
        "a topic ([Error 29] TopicAuthorizationFailedError): grant the ACLs listed in "
        "docs/operations.md",
    ),
    (
        "group-denied",
        errors.GroupAuthorizationFailedError(),
        OAUTH,
        f"Kafka at {SERVERS} (SASL_SSL OAUTHBEARER) denied OAuth client streamstop access to "
        "the consumer group ([Error 30] GroupAuthorizationFailedError): grant the ACLs listed "
        "in docs/operations.md",
    ),
    (
        "client-certificate-missing",
        closed_by("SSLV3_ALERT_BAD_CERTIFICATE"),
        TLS_ONLY,
        f"the broker at {SERVERS} (SSL) wants a client certificate "
        "(SSLV3_ALERT_BAD_CERTIFICATE): set kafka.ssl_certfile and kafka.ssl_keyfile",
    ),
    (
        "client-certificate-refused",
        closed_by("SSLV3_ALERT_CERTIFICATE_UNKNOWN"),
        MTLS,
        f"the broker at {SERVERS} (SSL) refused the client certificate "
        "/etc/kafka-user/user.crt (SSLV3_ALERT_CERTIFICATE_UNKNOWN): check that it has not "
        "expired and that a CA the brokers trust signed it",
    ),
    (
        "tls-to-a-plaintext-listener",
        closed_by("WRONG_VERSION_NUMBER"),
        TLS_ONLY,
        f"the TLS handshake with {SERVERS} (SSL) failed (WRONG_VERSION_NUMBER): check that SSL "
        "is the listener's protocol",
    ),
    (
        "unknown-host",
        socket.gaierror(-2, "Name or service not known"),
        SCRAM,
        f"cannot resolve a host of {SERVERS} (SASL_SSL SCRAM-SHA-512): check "
        "kafka.bootstrap_servers and DNS",
    ),
    (
        "timeout",
        TimeoutError(),
        MTLS,
        f"no answer in time from {SERVERS} (SSL): check kafka.bootstrap_servers, network "
        "policies and firewalls, and that SSL is the listener's",
    ),
    (
        "bootstrap-failed",
        errors.KafkaConnectionError(f"Unable to bootstrap from {SERVERS}"),
        SCRAM,
        f"cannot connect to Kafka at {SERVERS} (SASL_SSL SCRAM-SHA-512): check "
        "kafka.bootstrap_servers, kafka.security_protocol and the credentials (aiokafka's "
        "line before says more)",
    ),
    (
        "secret-file-gone",
        ConfigError(["kafka.sasl_password_file: cannot read /p: No such file or directory"]),
        SCRAM,
        "kafka.sasl_password_file: cannot read /p: No such file or directory",
    ),
]


@pytest.mark.parametrize(
    ("error", "settings", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_fault_is_one_exact_line(
    error: BaseException, settings: Settings, expected: str
) -> None:
    assert describe_kafka_problem(error, settings) == expected


def test_the_innermost_cause_names_the_fault() -> None:
    refused = errors.SaslAuthenticationFailed(SCRAM_REFUSED)
    outer = errors.KafkaConnectionError(f"Unable to bootstrap from {SERVERS}")
    outer.__cause__ = refused

    assert describe_kafka_problem(outer, SCRAM) == describe_kafka_problem(refused, SCRAM)


def test_a_secret_in_an_unknown_error_is_masked_and_long_text_cut() -> None:
    secret = "leaked-Password-in-a-message"
    register_secret(secret)

    line = describe_kafka_problem(RuntimeError(f"auth {secret} " + "x" * 500), SCRAM)

    assert secret not in line
    assert line.startswith(f"Kafka at {SERVERS} (SASL_SSL SCRAM-SHA-512) failed: auth *** x")
    assert line.endswith("...")
    assert "\n" not in line
    assert len(line) < 300

"""One line an operator can act on, for an error met while connecting to or using Kafka.

aiokafka reports a TLS or SASL failure as an `ssl.SSLError`, a broker error code, or a
"Connection ... closed" whose cause is the TLS alert. `describe_kafka_problem` turns each
into one line naming the servers, protocol and mechanism, and what to check; it never
includes a secret (broker-supplied text is masked and shortened). Pure: no I/O.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from aiokafka import errors

from streamstop.config import ConfigError, Settings
from streamstop.logs import mask_secrets
from streamstop.oauth import OAuthTokenError

_MAX_QUOTED = 200
# OpenSSL verify codes (X509_V_ERR_*) with their own advice.
_CERT_HAS_EXPIRED = 10
_NAME_MISMATCH = {62, 64}  # host name, IP address
# TLS alerts a broker sends when it does not accept the client's certificate.
_NO_CLIENT_CERTIFICATE = {"TLSV13_ALERT_CERTIFICATE_REQUIRED"}
_CLIENT_CERTIFICATE_REFUSED = {
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
}
_AUTHORIZATION = {
    errors.TopicAuthorizationFailedError: "a topic",
    errors.GroupAuthorizationFailedError: "the consumer group",
    errors.ClusterAuthorizationFailedError: "the cluster",
    errors.TransactionalIdAuthorizationFailed: "the transactional id",
}


def describe_kafka_problem(exc: BaseException, settings: Settings) -> str:
    """One line for `exc`: where (servers, protocol, mechanism), what failed, what to check."""
    kafka = settings.kafka
    where = f"{kafka.bootstrap_servers} ({_protocol(settings)})"
    for cause in _chain(exc):
        line = _describe_one(cause, settings, where)
        if line is not None:
            return line
    return f"Kafka at {where} failed: {_quoted(exc)}"


def _describe_one(exc: BaseException, settings: Settings, where: str) -> str | None:
    kafka = settings.kafka
    if isinstance(exc, ConfigError):
        return exc.problems[0]
    if isinstance(exc, OAuthTokenError):
        return (
            f"{exc.args[0]}: check kafka.oauth_token_url, kafka.oauth_client_id and "
            f"{_secret_source(settings)}"
        )
    if isinstance(exc, errors.SaslAuthenticationFailed):
        return _login_refused(exc, settings, where)
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return (
            f"the broker at {where} does not enable that SASL mechanism: check "
            f"kafka.sasl_mechanism ({_quoted(exc)})"
        )
    if isinstance(exc, errors.IllegalSaslStateError):
        return (
            f"the listener at {where} takes no SASL login: check kafka.security_protocol "
            "(SSL or PLAINTEXT for this listener?)"
        )
    for kind, what in _AUTHORIZATION.items():
        if isinstance(exc, kind):
            return (
                f"Kafka at {where} denied {_identity(settings)} access to {what} "
                f"({_quoted(exc)}): grant the ACLs listed in docs/operations.md"
            )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _broker_certificate_refused(exc, settings, where)
    if isinstance(exc, ssl.SSLError):
        return _handshake_failed(exc, settings, where)
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"nothing accepts connections at {where} (connection refused): check "
            "kafka.bootstrap_servers and that the brokers are up"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve a host of {where}: check kafka.bootstrap_servers and DNS"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | errors.KafkaTimeoutError):
        return (
            f"no answer in time from {where}: check kafka.bootstrap_servers, network "
            f"policies and firewalls, and that {kafka.security_protocol} is the listener's"
        )
    if isinstance(exc, asyncio.IncompleteReadError) or (
        # Without a more specific cause, a close while connecting is a mismatch.
        isinstance(exc, errors.KafkaConnectionError) and "closed" in str(exc)
    ):
        return _closed_while_connecting(settings, where)
    if isinstance(exc, errors.KafkaConnectionError):
        return (
            f"cannot connect to Kafka at {where}: check kafka.bootstrap_servers, "
            "kafka.security_protocol and the credentials (aiokafka's line before says more)"
        )
    if isinstance(exc, OSError):
        return (
            f"cannot connect to Kafka at {where} ({exc.strerror or type(exc).__name__}): "
            "check kafka.bootstrap_servers and the network"
        )
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes, innermost (most specific) first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain[::-1]


def _login_refused(exc: BaseException, settings: Settings, where: str) -> str:
    kafka = settings.kafka
    if kafka.sasl_mechanism == "OAUTHBEARER":
        return (
            f"Kafka at {where} refused the OAuth token of client {kafka.oauth_client_id}: "
            "check the audience, issuer and scope (kafka.oauth_scope) the brokers expect "
            f"and that they trust kafka.oauth_token_url's signing keys ({_quoted(exc)})"
        )
    return (
        f"Kafka at {where} refused the login of user {kafka.sasl_username}: check "
        f"kafka.sasl_username and {_secret_source(settings)}, and that the user exists for "
        f"{kafka.sasl_mechanism or 'PLAIN'} on the cluster ({_quoted(exc)})"
    )


def _broker_certificate_refused(
    exc: ssl.SSLCertVerificationError, settings: Settings, where: str
) -> str:
    # Set by OpenSSL; absent when the error was made elsewhere.
    code = getattr(exc, "verify_code", None)
    detail = getattr(exc, "verify_message", None) or "certificate verify failed"
    if code == _CERT_HAS_EXPIRED:
        advice = "the brokers' certificate must be renewed"
    elif code in _NAME_MISMATCH:
        advice = "use a bootstrap address the brokers' certificate names"
    else:
        cafile = settings.kafka.ssl_cafile
        trusted = f"kafka.ssl_cafile ({cafile})" if cafile else "the system CAs"
        advice = f"the brokers' CA is not in {trusted}: set kafka.ssl_cafile to it"
    return f"the TLS certificate of the broker at {where} was not accepted ({detail}): {advice}"


def _handshake_failed(exc: ssl.SSLError, settings: Settings, where: str) -> str:
    reason = getattr(exc, "reason", None) or "SSL error"
    certfile = settings.kafka.ssl_certfile
    if reason in _NO_CLIENT_CERTIFICATE or (reason in _CLIENT_CERTIFICATE_REFUSED and not certfile):
        return (
            f"the broker at {where} wants a client certificate ({reason}): set "
            "kafka.ssl_certfile and kafka.ssl_keyfile"
        )
    if reason in _CLIENT_CERTIFICATE_REFUSED:
        return (
            f"the broker at {where} refused the client certificate {certfile} ({reason}): "
            "check that it has not expired and that a CA the brokers trust signed it"
        )
    return (
        f"the TLS handshake with {where} failed ({reason}): check that "
        f"{settings.kafka.security_protocol} is the listener's protocol"
    )


def _closed_while_connecting(settings: Settings, where: str) -> str:
    kafka = settings.kafka
    check = f"that the listener speaks {kafka.security_protocol}"
    if kafka.ssl_certfile:
        check += f" and accepts the client certificate {kafka.ssl_certfile}"
    return (
        f"the broker at {where} closed the connection while connecting: check {check} "
        "(TLS listeners need SSL or SASL_SSL, SASL ones SASL_*)"
    )


def _protocol(settings: Settings) -> str:
    kafka = settings.kafka
    if kafka.security_protocol.startswith("SASL"):
        return f"{kafka.security_protocol} {kafka.sasl_mechanism or 'PLAIN'}"
    return kafka.security_protocol


def _identity(settings: Settings) -> str:
    kafka = settings.kafka
    if kafka.security_protocol.startswith("SASL"):
        if kafka.sasl_mechanism == "OAUTHBEARER":
            return f"OAuth client {kafka.oauth_client_id}"
        return f"user {kafka.sasl_username}"
    if kafka.ssl_certfile:
        return f"the holder of {kafka.ssl_certfile}"
    return "this client"


def _secret_source(settings: Settings) -> str:
    kafka = settings.kafka
    if kafka.sasl_mechanism == "OAUTHBEARER":
        file, key = kafka.oauth_client_secret_file, "kafka.oauth_client_secret"
    else:
        file, key = kafka.sasl_password_file, "kafka.sasl_password"
    return f"the secret in {key}_file ({file})" if file is not None else key


def _quoted(exc: BaseException) -> str:
    """The error's own text, masked and short: broker messages are not ours to trust."""
    text = mask_secrets(str(exc) or type(exc).__name__).replace("\n", " ")
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."

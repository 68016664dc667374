"""How the Kafka settings fit together, and the TLS they describe.

Which keys a security protocol and SASL mechanism need (and which they would silently
ignore), and the TLS context built from the CA, client certificate and key files, read
when called so a renewed certificate needs no restart. Problems are one line each,
naming the key and never a secret.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from streamstop.config.checks import has_secret
from streamstop.config.errors import ConfigError

if TYPE_CHECKING:
    from streamstop.config.models import KafkaSettings

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def ssl_context(
    kafka: KafkaSettings, key_password: Callable[[], str | None]
) -> ssl.SSLContext | None:
    """TLS for SSL and SASL_SSL (None otherwise): see `Settings.kafka_ssl_context`."""
    if kafka.security_protocol not in TLS_PROTOCOLS:
        return None
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(kafka, key):
            _check_readable(Path(getattr(kafka, key)), f"kafka.{key}")
    try:
        context = ssl.create_default_context(cafile=kafka.ssl_cafile or None)
    except ssl.SSLError as exc:
        problem = f"kafka.ssl_cafile: {kafka.ssl_cafile} holds no usable PEM certificate"
        raise ConfigError([f"{problem} ({exc.reason or exc})"]) from None
    if kafka.ssl_certfile:
        password = key_password() or ""
        try:
            # A callable, also when empty: without one OpenSSL prompts on the terminal.
            context.load_cert_chain(
                kafka.ssl_certfile, kafka.ssl_keyfile or None, password=lambda: password
            )
        except ssl.SSLError as exc:
            raise ConfigError([_cert_chain_problem(kafka, exc)]) from None
    return context


def combination_problems(kafka: KafkaSettings) -> list[str]:
    """Keys the protocol and mechanism need, and keys set where they would be ignored."""
    return [*_sasl_problems(kafka), *_client_certificate_problems(kafka)]


def _sasl_problems(kafka: KafkaSettings) -> list[str]:
    protocol, oauth = kafka.security_protocol, kafka.sasl_mechanism == "OAUTHBEARER"
    problems: list[str] = []
    if protocol not in SASL_PROTOCOLS:
        if oauth:
            problems.append(f"kafka.sasl_mechanism: OAUTHBEARER needs SASL_SSL, not {protocol}")
    elif oauth:
        needs = "required when kafka.sasl_mechanism is OAUTHBEARER"
        problems.extend(
            f"kafka.{key}: {needs}"
            for key in ("oauth_token_url", "oauth_client_id")
            if not getattr(kafka, key)
        )
        if not has_secret(kafka.oauth_client_secret, kafka.oauth_client_secret_file):
            problems.append(f"kafka.oauth_client_secret: one of it or its _file is {needs}")
    else:
        needs = f"required when kafka.security_protocol is {protocol}"
        if not kafka.sasl_username:
            problems.append(f"kafka.sasl_username: {needs} (or STREAMSTOP_KAFKA__SASL_USERNAME)")
        if not has_secret(kafka.sasl_password, kafka.sasl_password_file):
            problems.append(
                f"kafka.sasl_password: {needs}: set the environment variable "
                "STREAMSTOP_KAFKA__SASL_PASSWORD, or kafka.sasl_password_file "
                "(STREAMSTOP_KAFKA__SASL_PASSWORD_FILE) naming a file that holds it"
            )
    if not oauth:
        problems.extend(
            f"kafka.{key}: used only when kafka.sasl_mechanism is OAUTHBEARER"
            for key in ("oauth_token_url", "oauth_client_id", "oauth_scope")
            if getattr(kafka, key)
        )
    return problems


def _client_certificate_problems(kafka: KafkaSettings) -> list[str]:
    protocol = kafka.security_protocol
    keys = [key for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(kafka, key)]
    if has_secret(kafka.ssl_key_password, kafka.ssl_key_password_file):
        keys.append("ssl_key_password")
    if keys and protocol not in TLS_PROTOCOLS:
        return [f"kafka.{key}: used only with SSL or SASL_SSL, not {protocol}" for key in keys]
    client = [key for key in keys if key != "ssl_cafile"]
    if client and not kafka.ssl_certfile:
        return [f"kafka.ssl_certfile: required with kafka.{client[0]}"]
    return []


def _check_readable(path: Path, key: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([f"{key}: cannot read {path}: {reason}"]) from None


def _cert_chain_problem(kafka: KafkaSettings, exc: ssl.SSLError) -> str:
    """One line for a client certificate and key that OpenSSL refused, naming the likely fix."""
    files = kafka.ssl_certfile + (f" and {kafka.ssl_keyfile}" if kafka.ssl_keyfile else "")
    if exc.reason == "KEY_VALUES_MISMATCH":
        hint = "the key does not belong to the certificate"
    elif _is_encrypted_key(Path(kafka.ssl_keyfile or kafka.ssl_certfile)):
        # OpenSSL says only "PEM lib" for a wrong or missing password.
        hint = "the key is encrypted and kafka.ssl_key_password(_file) does not open it"
    else:
        hint = "expected a PEM certificate and a PEM private key"
    return f"kafka.ssl_certfile: cannot use {files}: {hint}"


def _is_encrypted_key(path: Path) -> bool:
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return "ENCRYPTED PRIVATE KEY" in text or "Proc-Type: 4,ENCRYPTED" in text

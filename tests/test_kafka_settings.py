"""Kafka security settings: what each protocol and mechanism needs, CA/certificate/key and
secret files checked at start (one line per problem naming the key, exit 2), secrets masked."""

from __future__ import annotations

import json
import shutil
import ssl
from pathlib import Path

import pytest
from cli_proc import streamstop

from streamstop.config import ConfigError, load_settings, render_effective

TOKEN_ENV = {"STREAMSTOP_API__TOKEN": "api-T0ken-for-kafka-settings"}
OAUTH = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "OAUTHBEARER",
    "oauth_token_url": "https://idp.example.com/oauth2/token",
    "oauth_client_id": "streamstop",
}


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The repository's own ./config/streamstop.toml must not leak into these tests.
    monkeypatch.chdir(tmp_path)


def kafka_env(**keys: str | Path) -> dict[str, str]:
    return {**TOKEN_ENV, **{f"STREAMSTOP_KAFKA__{k.upper()}": str(v) for k, v in keys.items()}}


def problems_of(**keys: str | Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, kafka_env(**keys))
    return caught.value.problems


def secret_file(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content + "\n")
    return path


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
            [
                "kafka.oauth_token_url: required when kafka.sasl_mechanism is OAUTHBEARER",
                "kafka.oauth_client_id: required when kafka.sasl_mechanism is OAUTHBEARER",
                "kafka.oauth_client_secret: one of it or its _file is required when "
                "kafka.sasl_mechanism is OAUTHBEARER",
            ],
        ),
        (
            {"sasl_mechanism": "OAUTHBEARER"},
            ["kafka.sasl_mechanism: OAUTHBEARER needs SASL_SSL, not PLAINTEXT"],
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "svc",
                "sasl_password": "pw-for-settings",
                "oauth_client_id": "streamstop",
            },
            ["kafka.oauth_client_id: used only when kafka.sasl_mechanism is OAUTHBEARER"],
        ),
        (
            {"ssl_certfile": "/etc/kafka/user.crt"},
            ["kafka.ssl_certfile: used only with SSL or SASL_SSL, not PLAINTEXT"],
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_username": "svc",
                "sasl_password": "p" * 8,
                "ssl_key_password": "k" * 8,
            },
            ["kafka.ssl_key_password: used only with SSL or SASL_SSL, not SASL_PLAINTEXT"],
        ),
    ],
    ids=[
        "oauth-keys",
        "oauth-without-sasl",
        "oauth-key-unused",
        "cert-without-tls",
        "key-password-without-tls",
    ],
)
def test_each_protocol_and_mechanism_names_the_keys_it_needs_or_ignores(
    keys: dict[str, str], expected: list[str]
) -> None:
    assert problems_of(**keys) == expected


def test_a_client_key_needs_its_certificate(tls_dir: Path) -> None:
    problems = problems_of(security_protocol="SSL", ssl_keyfile=tls_dir / "client.key")

    assert problems == ["kafka.ssl_certfile: required with kafka.ssl_keyfile"]


def test_mutual_tls_with_an_encrypted_key_and_its_password_file(tls_dir: Path) -> None:
    settings = load_settings(
        None,
        kafka_env(
            security_protocol="SSL",
            ssl_cafile=tls_dir / "ca.crt",
            ssl_certfile=tls_dir / "client-protected.crt",
            ssl_keyfile=tls_dir / "client-protected.key",
            ssl_key_password_file=tls_dir / "client-protected.password",
        ),
    )

    context = settings.kafka_ssl_context()
    assert context is not None
    assert context.check_hostname is True
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert settings.ssl_key_password_value() == (
        (tls_dir / "client-protected.password").read_text().strip()
    )


@pytest.mark.parametrize(
    ("certfile", "keyfile", "password", "expected"),
    [
        (
            "client-protected.crt",
            "client-protected.key",
            "wrong-password",
            "the key is encrypted and kafka.ssl_key_password(_file) does not open it",
        ),
        (
            "client-protected.crt",
            "client-protected.key",
            None,
            "the key is encrypted and kafka.ssl_key_password(_file) does not open it",
        ),
        ("client.crt", "other.key", None, "the key does not belong to the certificate"),
        ("ca.srl", "client.key", None, "expected a PEM certificate and a PEM private key"),
    ],
    ids=["wrong-password", "no-password", "other-key", "not-pem"],
)
def test_a_client_certificate_that_cannot_be_used_is_one_line(
    tls_dir: Path, certfile: str, keyfile: str, password: str | None, expected: str
) -> None:
    keys: dict[str, str | Path] = {
        "security_protocol": "SSL",
        "ssl_certfile": tls_dir / certfile,
        "ssl_keyfile": tls_dir / keyfile,
    }
    if password is not None:
        keys["ssl_key_password"] = password

    [problem] = problems_of(**keys)

    files = f"{tls_dir / certfile} and {tls_dir / keyfile}"
    assert problem == f"kafka.ssl_certfile: cannot use {files}: {expected}"
    assert password is None or password not in problem


@pytest.mark.parametrize("key", ["ssl_cafile", "ssl_certfile", "ssl_keyfile"])
def test_a_missing_tls_file_is_named(tls_dir: Path, tmp_path: Path, key: str) -> None:
    keys: dict[str, str | Path] = {
        "security_protocol": "SSL",
        "ssl_certfile": tls_dir / "client.crt",
        "ssl_keyfile": tls_dir / "client.key",
        key: tmp_path / "missing.pem",
    }

    assert problems_of(**keys) == [
        f"kafka.{key}: cannot read {tmp_path / 'missing.pem'}: No such file or directory"
    ]


def test_a_ca_file_without_certificates_is_named(tls_dir: Path) -> None:
    [problem] = problems_of(security_protocol="SSL", ssl_cafile=tls_dir / "client.key")

    assert problem == (
        f"kafka.ssl_cafile: {tls_dir / 'client.key'} holds no usable PEM certificate "
        "(NO_CERTIFICATE_OR_CRL_FOUND)"
    )


@pytest.mark.parametrize(
    ("content", "reason"), [(None, "cannot read {path}: No such file"), ("", "{path} is empty")]
)
def test_an_unreadable_oauth_secret_file_is_named(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "client-secret"
    if content is not None:
        path.write_text(content)

    [problem] = problems_of(**OAUTH, oauth_client_secret_file=path)

    assert problem.startswith(f"kafka.oauth_client_secret_file: {reason.format(path=path)}")


@pytest.mark.parametrize("secret", ["oauth_client_secret", "ssl_key_password"])
def test_a_new_secret_and_its_file_together_is_an_error(tmp_path: Path, secret: str) -> None:
    value = "inline-Secret-value-1"
    path = secret_file(tmp_path, "secret", "file-value")

    pair: dict[str, str | Path] = {secret: value, f"{secret}_file": path}
    problems = problems_of(**OAUTH, **pair)

    assert problems[0] == (
        f"kafka.{secret}_file: set either kafka.{secret} or kafka.{secret}_file, not both "
        f"(from STREAMSTOP_KAFKA__{secret.upper()}_FILE)"
    )
    assert all(value not in problem for problem in problems)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("idp.example.com/token", "must be an http:// or https:// URL with a host"),
        (
            "https://id:secret@idp.example.com/token",
            "must not contain credentials; use kafka.oauth_client_id and "
            "kafka.oauth_client_secret(_file)",
        ),
    ],
)
def test_the_token_url_must_be_a_plain_url(tmp_path: Path, url: str, reason: str) -> None:
    path = secret_file(tmp_path, "secret", "s3cret-value")

    problems = problems_of(**{**OAUTH, "oauth_token_url": url}, oauth_client_secret_file=path)

    assert problems == [f"kafka.oauth_token_url: {reason} (from STREAMSTOP_KAFKA__OAUTH_TOKEN_URL)"]


def test_new_secrets_are_masked_by_check_config(tls_dir: Path) -> None:
    client_secret, key_password = "oauth-Client-Secret-9f", "key-Password-41c"
    env = kafka_env(**OAUTH, oauth_client_secret=client_secret, ssl_key_password=key_password)
    env["STREAMSTOP_KAFKA__SSL_CERTFILE"] = str(tls_dir / "client.crt")
    env["STREAMSTOP_KAFKA__SSL_KEYFILE"] = str(tls_dir / "client.key")

    settings = load_settings(None, env)
    shown = render_effective(settings)

    assert json.loads(shown)["kafka"]["oauth_client_secret"] == "***"
    assert json.loads(shown)["kafka"]["ssl_key_password"] == "***"
    for text in (shown, repr(settings), str(settings)):
        assert client_secret not in text
        assert key_password not in text
    assert settings.oauth_client_secret_value() == client_secret


def test_check_config_exits_2_with_one_line_for_a_missing_certificate(tmp_path: Path) -> None:
    env = kafka_env(security_protocol="SSL", ssl_certfile=tmp_path / "user.crt")

    done = streamstop("check-config", cwd=tmp_path, env={k: str(v) for k, v in env.items()})

    assert done.returncode == 2
    problems = [line for line in done.stderr.splitlines() if "config error" in line]
    assert problems == [
        f"streamstop: config error: kafka.ssl_certfile: cannot read {tmp_path / 'user.crt'}: "
        "No such file or directory"
    ]


def test_a_secret_file_replaced_by_a_rotation_is_read_again(tls_dir: Path, tmp_path: Path) -> None:
    password = tmp_path / "key-password"
    shutil.copy(tls_dir / "client-protected.password", password)
    settings = load_settings(
        None,
        kafka_env(
            security_protocol="SSL",
            ssl_certfile=tls_dir / "client-protected.crt",
            ssl_keyfile=tls_dir / "client-protected.key",
            ssl_key_password_file=password,
        ),
    )
    password.write_text("not-the-password\n")

    with pytest.raises(ConfigError) as caught:
        settings.kafka_ssl_context()

    assert "does not open it" in caught.value.problems[0]

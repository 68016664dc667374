"""The configuration's typed model: sections, keys, defaults and per-key validation.

Pure data and validation; finding, reading and merging the file and the environment is
`loading.py`. Secret files (`*_file` keys) are read on every call of their accessor, so a
rotated Kubernetes Secret is picked up without a restart.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

MAX_BATCH_SIZE = 10_000  # the stop API's limit per request

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
# What an HTTP header value can carry safely: a newline would split the header.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


class ConfigError(Exception):
    """Bad configuration: one line per problem, each naming the key, never a secret."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _empty_is_none(value: object) -> object:
    # TOML has no null, so the shipped file spells "no file" as "".
    return None if value == "" else value


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


SecretFile = Annotated[Path | None, BeforeValidator(_empty_is_none)]
_STRICT = ConfigDict(extra="forbid", hide_input_in_errors=True, allow_inf_nan=False, frozen=True)


def _only_one(secret: SecretStr | None, file: Path | None, secret_key: str, file_key: str) -> None:
    if file is not None and secret is not None and secret.get_secret_value():
        raise ValueError(f"set either {secret_key} or {file_key}, not both")


def _check_http_url(value: str, credentials_hint: str) -> str:
    try:
        parts = urlsplit(value)
        scheme, hostname = parts.scheme, parts.hostname
        has_credentials = parts.username is not None or parts.password is not None
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        scheme, hostname, has_credentials = "", None, False
    if scheme not in ("http", "https") or not hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    # URLs are logged and printed by check-config; credentials belong in secret keys.
    if has_credentials:
        raise ValueError(f"must not contain credentials; use {credentials_hint}")
    return value


def _check_topic(value: str) -> str:
    if not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise ValueError("must be a Kafka topic name: 1-249 of A-Z a-z 0-9 . _ -")
    return value


class KafkaSettings(BaseModel):
    """Where records come from and go to, and how to reach the brokers."""

    model_config = _STRICT

    bootstrap_servers: str = "localhost:9092"
    input_topic: str = "message-cancel-requests"
    output_topic: str = "message-stop-results"
    dlq_topic: str = ""
    group_id: str = Field(default="streamstop", min_length=1)
    auto_offset_reset: Annotated[Literal["earliest", "latest"], BeforeValidator(_lower)] = (
        "earliest"
    )
    security_protocol: Annotated[
        Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], BeforeValidator(_upper)
    ] = "PLAINTEXT"
    sasl_mechanism: Annotated[str, BeforeValidator(_upper)] = ""
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    sasl_password_file: SecretFile = None
    ssl_cafile: str = ""
    # A client certificate (mTLS); the key may also sit in the certificate file.
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: SecretStr = SecretStr("")
    ssl_key_password_file: SecretFile = None
    # OAUTHBEARER: an access token from this endpoint, client-credentials grant.
    oauth_token_url: str = ""
    oauth_client_id: str = ""
    oauth_client_secret: SecretStr = SecretStr("")
    oauth_client_secret_file: SecretFile = None
    oauth_scope: str = ""

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",")]
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("must be a comma-separated list of host:port")
        return ",".join(servers)

    @field_validator("input_topic")
    @classmethod
    def _input(cls, value: str) -> str:
        return _check_topic(value)

    @field_validator("output_topic")
    @classmethod
    def _output(cls, value: str, info: ValidationInfo) -> str:
        # Results written to the input topic would be consumed again, forever.
        if value == info.data.get("input_topic"):
            raise ValueError("must differ from kafka.input_topic")
        return _check_topic(value)

    @field_validator("dlq_topic")
    @classmethod
    def _dlq(cls, value: str, info: ValidationInfo) -> str:
        if value and value in (info.data.get("input_topic"), info.data.get("output_topic")):
            raise ValueError("must differ from kafka.input_topic and kafka.output_topic")
        return _check_topic(value) if value else value

    @field_validator("sasl_mechanism")
    @classmethod
    def _mechanism(cls, value: str) -> str:
        if value and value not in _SASL_MECHANISMS:
            raise ValueError(f"must be empty (PLAIN) or one of {', '.join(_SASL_MECHANISMS)}")
        return value

    @field_validator("sasl_password_file", "ssl_key_password_file", "oauth_client_secret_file")
    @classmethod
    def _secret_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        assert info.field_name is not None
        inline = info.field_name.removesuffix("_file")
        _only_one(info.data.get(inline), value, f"kafka.{inline}", f"kafka.{info.field_name}")
        return value

    @field_validator("oauth_token_url")
    @classmethod
    def _token_url(cls, value: str) -> str:
        hint = "kafka.oauth_client_id and kafka.oauth_client_secret(_file)"
        return _check_http_url(value, hint) if value else value


class BatchSettings(BaseModel):
    """How records are grouped into stop API requests, and how much work may pend."""

    model_config = _STRICT

    max_size: int = Field(default=MAX_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE)
    # Stops are time-critical: holding a batch for more than a minute defeats them.
    max_wait_ms: int = Field(default=500, ge=1, le=60_000)
    max_in_flight: int = Field(default=4, ge=1, le=256)
    # Below max_size this only caps batches further; allowed, as tests of back-pressure need it.
    max_pending: int = Field(default=100_000, ge=1)
    max_record_age_s: float = Field(default=0.0, ge=0)


class ApiSettings(BaseModel):
    """The stop API endpoint and its credentials."""

    model_config = _STRICT

    url: str = "https://direct.revicom.ltd/api/v1/message/stop"
    token: Annotated[SecretStr, BeforeValidator(_strip)] = SecretStr("")
    token_file: SecretFile = None
    timeout_s: float = Field(default=10.0, gt=0)
    max_requests_per_second: float = Field(default=0.0, ge=0)
    ca_file: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_http_url(value, "api.token or api.token_file")

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        _check_header_safe(value.get_secret_value())
        return value

    @field_validator("token_file")
    @classmethod
    def _token_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        _only_one(info.data.get("token"), value, "api.token", "api.token_file")
        return value


def _check_header_safe(token: str) -> None:
    if token and not _HEADER_SAFE.fullmatch(token):
        raise ValueError("must be printable ASCII without spaces")


class RetrySettings(BaseModel):
    """Backoff between attempts (full jitter) and when to give up on a uuid."""

    model_config = _STRICT

    initial_backoff_ms: int = Field(default=200, ge=1)
    max_backoff_ms: int = Field(default=30_000, ge=1)
    deadline_s: float = Field(default=600.0, gt=0)

    @field_validator("max_backoff_ms")
    @classmethod
    def _max_backoff(cls, value: int, info: ValidationInfo) -> int:
        initial = info.data.get("initial_backoff_ms")
        if initial is not None and value < initial:
            raise ValueError("must be >= retry.initial_backoff_ms")
        return value


class DeliverySettings(BaseModel):
    """The delivery guarantee for result events."""

    model_config = _STRICT

    guarantee: Annotated[Literal["at_least_once", "exactly_once"], BeforeValidator(_lower)] = (
        "at_least_once"
    )

    @field_validator("guarantee")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value == "exactly_once":
            raise ValueError("exactly_once is not supported yet")
        return value


class ObservabilitySettings(BaseModel):
    """Logs and the metrics/health HTTP server."""

    model_config = _STRICT

    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = (
        "info"
    )
    log_format: Annotated[Literal["json", "console"], BeforeValidator(_lower)] = "json"
    # 0 picks a free port, so tests can run several daemons side by side.
    http_port: int = Field(default=9090, ge=0, le=65535)


class LifecycleSettings(BaseModel):
    """Drain budgets for shutdown and for revoked partitions."""

    model_config = _STRICT

    shutdown_timeout_s: float = Field(default=25.0, gt=0)
    revoke_timeout_s: float = Field(default=20.0, gt=0)


class Settings(BaseSettings):
    """The whole configuration; built by `load_settings`, or directly in tests."""

    # Sources are the constructor's arguments only: load_settings reads file and
    # environment itself, so the spec's rules (not pydantic-settings') apply.
    model_config = SettingsConfigDict(
        extra="forbid", hide_input_in_errors=True, allow_inf_nan=False, frozen=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    def api_token(self) -> str:
        """The stop API token now: `api.token`, or `api.token_file` read at this call.

        Read on every call so a rotated Kubernetes Secret is picked up without a restart.
        Raises ConfigError when neither is set or the file is unreadable or empty.
        """
        api = self.api
        if api.token_file is None:
            if not api.token.get_secret_value():
                raise ConfigError(["api.token: one of api.token or api.token_file is required"])
            return api.token.get_secret_value()
        token = _read_secret_file(api.token_file, "api.token_file")
        try:
            _check_header_safe(token)
        except ValueError as exc:
            raise ConfigError([f"api.token_file: content {exc}"]) from None
        return token

    def sasl_password_value(self) -> str | None:
        """The SASL password now (`kafka.sasl_password` or its file read at this call), or None."""
        kafka = self.kafka
        return _secret_value(kafka.sasl_password, kafka.sasl_password_file, "kafka.sasl_password")

    def oauth_client_secret_value(self) -> str | None:
        """The OAuth client secret now (inline or its file read at this call), or None."""
        kafka = self.kafka
        return _secret_value(
            kafka.oauth_client_secret, kafka.oauth_client_secret_file, "kafka.oauth_client_secret"
        )

    def ssl_key_password_value(self) -> str | None:
        """The client key's password now (inline or its file read at this call), or None."""
        kafka = self.kafka
        return _secret_value(
            kafka.ssl_key_password, kafka.ssl_key_password_file, "kafka.ssl_key_password"
        )

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """TLS for SSL and SASL_SSL (None otherwise), from the CA, certificate and key files
        read at this call: broker certificates verified, host names checked.

        Raises ConfigError, one line naming the key, when a file cannot be read or used.
        """
        kafka = self.kafka
        if kafka.security_protocol not in _TLS_PROTOCOLS:
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
            password = self.ssl_key_password_value() or ""
            try:
                # A callable, also when empty: without one OpenSSL prompts on the terminal.
                context.load_cert_chain(
                    kafka.ssl_certfile, kafka.ssl_keyfile or None, password=lambda: password
                )
            except ssl.SSLError as exc:
                raise ConfigError([_cert_chain_problem(kafka, exc)]) from None
        return context

    def kafka_problems(self) -> list[str]:
        """What keeps the Kafka clients from connecting as configured, one line per problem:
        keys the protocol or mechanism needs, keys it would silently ignore, and secret,
        CA, certificate and key files that cannot be read or used (read now)."""
        problems = _combination_problems(self.kafka)
        readers: list[Callable[[], object]] = [
            self.kafka_ssl_context,
            self.sasl_password_value,
            self.oauth_client_secret_value,
        ]
        for read in readers:
            try:
                read()
            except ConfigError as exc:
                problems.extend(exc.problems)
        return problems


def _combination_problems(kafka: KafkaSettings) -> list[str]:
    """Keys the protocol and mechanism need, and keys set where they would be ignored."""
    return [*_sasl_problems(kafka), *_client_certificate_problems(kafka)]


def _sasl_problems(kafka: KafkaSettings) -> list[str]:
    protocol, oauth = kafka.security_protocol, kafka.sasl_mechanism == "OAUTHBEARER"
    problems: list[str] = []
    if protocol not in _SASL_PROTOCOLS:
        if oauth:
            problems.append(f"kafka.sasl_mechanism: OAUTHBEARER needs SASL_SSL, not {protocol}")
    elif oauth:
        needs = "required when kafka.sasl_mechanism is OAUTHBEARER"
        problems.extend(
            f"kafka.{key}: {needs}"
            for key in ("oauth_token_url", "oauth_client_id")
            if not getattr(kafka, key)
        )
        if not _has_secret(kafka.oauth_client_secret, kafka.oauth_client_secret_file):
            problems.append(f"kafka.oauth_client_secret: one of it or its _file is {needs}")
    else:
        needs = f"required when kafka.security_protocol is {protocol}"
        if not kafka.sasl_username:
            problems.append(f"kafka.sasl_username: {needs}")
        if not _has_secret(kafka.sasl_password, kafka.sasl_password_file):
            problems.append(f"kafka.sasl_password: one of it or its _file is {needs}")
    if not oauth:
        problems.extend(
            f"kafka.{key}: used only when kafka.sasl_mechanism is OAUTHBEARER"
            for key in ("oauth_token_url", "oauth_client_id", "oauth_scope")
            if getattr(kafka, key)
        )
    return problems


def _client_certificate_problems(kafka: KafkaSettings) -> list[str]:
    protocol = kafka.security_protocol
    keys = [key for key in ("ssl_certfile", "ssl_keyfile") if getattr(kafka, key)]
    if _has_secret(kafka.ssl_key_password, kafka.ssl_key_password_file):
        keys.append("ssl_key_password")
    if keys and protocol not in _TLS_PROTOCOLS:
        return [f"kafka.{key}: used only with SSL or SASL_SSL, not {protocol}" for key in keys]
    if keys and not kafka.ssl_certfile:
        return [f"kafka.ssl_certfile: required with kafka.{keys[0]}"]
    return []


def _has_secret(inline: SecretStr, file: Path | None) -> bool:
    return file is not None or bool(inline.get_secret_value())


def _secret_value(inline: SecretStr, file: Path | None, key: str) -> str | None:
    """A secret's value now: its `*_file` read at this call, else the inline value, else None."""
    if file is not None:
        return _read_secret_file(file, f"{key}_file")
    return inline.get_secret_value() or None


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


def _read_secret_file(path: Path, key: str) -> str:
    try:
        content = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        problem = f"{key}: cannot read {path}: {exc.strerror or type(exc).__name__}"
        raise ConfigError([problem]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{key}: {path} is not UTF-8 text"]) from None
    if not content:
        raise ConfigError([f"{key}: {path} is empty"])
    return content

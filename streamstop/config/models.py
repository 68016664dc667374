"""The configuration's typed model: sections, keys, defaults and per-key validation.

Pure data and validation; finding, reading and merging the file and the environment is
`loading.py`, checks of single values (URLs, files, secrets) `checks.py`, how the Kafka
security keys fit together `kafka_tls.py`. Secret files (`*_file` keys) are read on every
call of their accessor, so a rotated Kubernetes Secret is picked up without a restart.

Never: echo a value in an error (it may be a secret), or read the environment itself.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

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

from streamstop.config.checks import (
    CaBundle,
    ReadableFile,
    SecretFile,
    check_header_safe,
    check_http_url,
    check_proxy_url,
    load_client_certificate,
    read_secret_file,
    secret_value,
)
from streamstop.config.errors import ConfigError
from streamstop.config.kafka_tls import combination_problems, ssl_context
from streamstop.core.interpret import DEFAULT_MAX_RETRY_AFTER_S

MAX_BATCH_SIZE = 10_000  # the stop API's limit per request
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


_STRICT = ConfigDict(extra="forbid", hide_input_in_errors=True, allow_inf_nan=False, frozen=True)


def _only_one(secret: SecretStr | None, file: Path | None, secret_key: str, file_key: str) -> None:
    if file is not None and secret is not None and secret.get_secret_value():
        raise ValueError(f"set either {secret_key} or {file_key}, not both")


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
        return check_http_url(value, hint) if value else value


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
    """The stop API endpoint, its credentials, and how to reach it."""

    model_config = _STRICT

    url: str = "https://direct.revicom.ltd/api/v1/message/stop"
    token: Annotated[SecretStr, BeforeValidator(_strip)] = SecretStr("")
    token_file: SecretFile = None
    timeout_s: float = Field(default=10.0, gt=0)
    max_requests_per_second: float = Field(default=0.0, ge=0)
    # group: max_requests_per_second is the consumer group's, each member taking the share
    # of its assigned partitions; pod: each process has all of it (the old meaning).
    rate_scope: Annotated[Literal["group", "pod"], BeforeValidator(_lower)] = "group"
    ca_file: CaBundle = None
    client_certfile: ReadableFile = None
    # Validated even when unset: the certificate is checked together with its key.
    client_keyfile: ReadableFile = Field(default=None, validate_default=True)
    proxy_url: str = ""
    trust_env: bool = False
    # A full 10,000-uuid answer is about 0.7 MB: a smaller cap would refuse good answers.
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024 * 1024)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value, "api.token or api.token_file")

    @field_validator("proxy_url")
    @classmethod
    def _proxy_url(cls, value: str) -> str:
        if value:
            check_proxy_url(value)
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        check_header_safe(value.get_secret_value())
        return value

    @field_validator("token_file")
    @classmethod
    def _token_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        _only_one(info.data.get("token"), value, "api.token", "api.token_file")
        return value

    @field_validator("client_keyfile")
    @classmethod
    def _client_keyfile(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        certfile = info.data.get("client_certfile")
        if certfile is None:
            if value is not None:
                raise ValueError("needs api.client_certfile")
            return value
        try:
            load_client_certificate(ssl.create_default_context(), certfile, value)
        except ssl.SSLError as exc:
            raise ValueError(
                "api.client_certfile and its key do not load as an unencrypted PEM pair "
                f"({exc.reason})"
            ) from None
        return value


class RetrySettings(BaseModel):
    """Backoff between attempts (full jitter) and when to give up on a uuid."""

    model_config = _STRICT

    initial_backoff_ms: int = Field(default=200, ge=1)
    max_backoff_ms: int = Field(default=30_000, ge=1)
    deadline_s: float = Field(default=600.0, gt=0)
    # Stops are time-critical: a Retry-After longer than this is not obeyed past it.
    max_retry_after_s: float = Field(default=DEFAULT_MAX_RETRY_AFTER_S, gt=0)

    @field_validator("max_backoff_ms")
    @classmethod
    def _max_backoff(cls, value: int, info: ValidationInfo) -> int:
        initial = info.data.get("initial_backoff_ms")
        if initial is not None and value < initial:
            raise ValueError("must be >= retry.initial_backoff_ms")
        return value


class DeliverySettings(BaseModel):
    """The delivery guarantee for result events, and how exactly-once transactions run."""

    model_config = _STRICT

    guarantee: Annotated[Literal["at_least_once", "exactly_once"], BeforeValidator(_lower)] = (
        "at_least_once"
    )
    # exactly_once: each input partition's producer is "{prefix}-{group_id}-{topic}-{partition}".
    transactional_id_prefix: str = Field(default="streamstop", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    transaction_interval_ms: int = Field(default=100, ge=1, le=60_000)
    transaction_max_records: int = Field(default=10_000, ge=1, le=1_000_000)
    # The broker aborts (and fences) a transaction open longer than this; it must not
    # exceed the broker's transaction.max.timeout.ms (15 minutes by default).
    transaction_timeout_ms: int = Field(default=60_000, ge=1000, le=900_000)

    @field_validator("transaction_timeout_ms")
    @classmethod
    def _timeout(cls, value: int, info: ValidationInfo) -> int:
        interval = info.data.get("transaction_interval_ms")
        if interval is not None and value < 2 * interval:
            raise ValueError("must be at least twice delivery.transaction_interval_ms")
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
    # otlp: OpenTelemetry spans over OTLP/HTTP, configured by the OTEL_* variables.
    tracing: Annotated[Literal["off", "otlp"], BeforeValidator(_lower)] = "off"


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
        token = read_secret_file(api.token_file, "api.token_file")
        try:
            check_header_safe(token)
        except ValueError as exc:
            raise ConfigError([f"api.token_file: content {exc}"]) from None
        return token

    def sasl_password_value(self) -> str | None:
        """The SASL password now (`kafka.sasl_password` or its file read at this call), or None."""
        kafka = self.kafka
        return secret_value(kafka.sasl_password, kafka.sasl_password_file, "kafka.sasl_password")

    def oauth_client_secret_value(self) -> str | None:
        """The OAuth client secret now (inline or its file read at this call), or None."""
        kafka = self.kafka
        return secret_value(
            kafka.oauth_client_secret, kafka.oauth_client_secret_file, "kafka.oauth_client_secret"
        )

    def ssl_key_password_value(self) -> str | None:
        """The client key's password now (inline or its file read at this call), or None."""
        kafka = self.kafka
        return secret_value(
            kafka.ssl_key_password, kafka.ssl_key_password_file, "kafka.ssl_key_password"
        )

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """TLS for SSL and SASL_SSL (None otherwise), from the CA, certificate and key files
        read at this call: broker certificates verified, host names checked. Raises
        ConfigError, one line naming the key, when a file cannot be read or used."""
        return ssl_context(self.kafka, self.ssl_key_password_value)

    def kafka_problems(self) -> list[str]:
        """What keeps the Kafka clients from connecting as configured, one line per problem:
        keys the protocol or mechanism needs, keys it would silently ignore, and secret,
        CA, certificate and key files that cannot be read or used (read now)."""
        problems = combination_problems(self.kafka)
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

"""The configuration's typed model: sections, keys, defaults and per-key validation.

Pure data and validation; finding, reading and merging the file and the environment is
`loading.py`. Secret files (`*_file` keys) are read on every call of their accessor, so a
rotated Kubernetes Secret is picked up without a restart.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamstop.core.interpret import DEFAULT_MAX_RETRY_AFTER_S

MAX_BATCH_SIZE = 10_000  # the stop API's limit per request
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
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


def _readable(path: Path | None) -> Path | None:
    if path is not None:
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    return path


def _ca_bundle(path: Path | None) -> Path | None:
    if path is not None:
        try:
            ssl.create_default_context(cafile=path)
        except ssl.SSLError as exc:
            raise ValueError(f"{path} is not a PEM CA bundle ({exc.reason})") from None
    return path


# A file the daemon reads (certificates, keys, CA bundles): checked at load time so a
# missing mount is exit 2 with one line, not a traceback when the first client starts.
ReadableFile = Annotated[Path | None, BeforeValidator(_empty_is_none), AfterValidator(_readable)]
CaBundle = Annotated[ReadableFile, AfterValidator(_ca_bundle)]
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
    ssl_cafile: CaBundle = None

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

    @field_validator("sasl_password_file")
    @classmethod
    def _password_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        _only_one(
            info.data.get("sasl_password"),
            value,
            "kafka.sasl_password",
            "kafka.sasl_password_file",
        )
        return value


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
        parts = _split_url(value)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        # The URL is logged and printed by check-config; credentials belong in api.token.
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials; use api.token or api.token_file")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError(
                "must be https:// unless its host is loopback (127.0.0.0/8, ::1, localhost): "
                "over http:// the token would travel in clear text"
            )
        return value

    @field_validator("proxy_url")
    @classmethod
    def _proxy_url(cls, value: str) -> str:
        if value:
            check_proxy_url(value)
        return value

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


def load_client_certificate(context: ssl.SSLContext, certfile: Path, keyfile: Path | None) -> None:
    """Load a client certificate (and its key, unless inside `certfile`) into `context`.

    An encrypted key is refused rather than prompted for: a daemon has no terminal.
    """
    context.load_cert_chain(certfile, keyfile, password="")


def check_proxy_url(value: str) -> None:
    """Raise ValueError unless `value` is `http://[user:password@]host[:port]`: an HTTP
    CONNECT proxy, the only kind the API client speaks."""
    parts = _split_url(value)
    if parts is None or parts.scheme != "http" or not parts.hostname:
        raise ValueError("must be an http:// URL of an HTTP CONNECT proxy")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be http://[user:password@]host[:port] without a path")


def _split_url(value: str) -> SplitResult | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return None
    return parts


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_header_safe(token: str) -> None:
    if token and not _HEADER_SAFE.fullmatch(token):
        raise ValueError("must be printable ASCII without spaces")


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
        if kafka.sasl_password_file is not None:
            return _read_secret_file(kafka.sasl_password_file, "kafka.sasl_password_file")
        return kafka.sasl_password.get_secret_value() or None


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

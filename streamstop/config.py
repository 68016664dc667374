"""Configuration: a TOML file overridden by `STREAMSTOP_<SECTION>__<KEY>` variables.

`load_settings` finds the file (`--config`, `$STREAMSTOP_CONFIG`, `./config/streamstop.toml`,
else built-in defaults), reads it and the environment itself, merges them and validates
the result with pydantic. Every problem becomes one line naming the key (and where the
value came from), never echoing a value: secrets must not leak through error messages.

Environment variable names are case-insensitive (`STREAMSTOP_API__TOKEN` and
`streamstop_api__token` mean the same key), as TOML keys are lower case.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "STREAMSTOP_"
ENV_NESTING = "__"
CONFIG_ENV = "STREAMSTOP_CONFIG"
DEFAULT_PATH = Path("config/streamstop.toml")
SECRET_MASK = "***"
MAX_BATCH_SIZE = 10_000  # the stop API's limit per request

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
# What an HTTP header value can carry safely: a newline would split the header.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")

# Where a value came from, by its location, to make errors actionable.
_Origins = dict[tuple[str, ...], str]


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
        try:
            parts = urlsplit(value)
            scheme, hostname = parts.scheme, parts.hostname
            has_credentials = parts.username is not None or parts.password is not None
        except ValueError:  # e.g. an unbalanced IPv6 bracket
            scheme, hostname, has_credentials = "", None, False
        if scheme not in ("http", "https") or not hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        # The URL is logged and printed by check-config; credentials belong in api.token.
        if has_credentials:
            raise ValueError("must not contain credentials; use api.token or api.token_file")
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


def load_settings(path: str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Load, merge and validate the configuration, for `run` and `check-config`.

    `path` is `--config`; `env` defaults to `os.environ`. Raises ConfigError listing every
    problem found, including the credentials `run` needs (an API token, SASL login).
    """
    env = os.environ if env is None else env
    file = _config_path(path, env)
    data: dict[str, Any] = _read_toml(file) if file is not None else {}
    origins: _Origins = {}
    if file is not None:
        _record_origins(data, (), f"from {file}", origins)
    _apply_env(data, env, origins)
    problems: list[str] = []
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        # Built outside the handler so the ConfigError carries no link to the input.
        problems = [_describe(error, origins) for error in exc.errors(include_input=False)]
    if problems:
        raise ConfigError(problems)
    problems = _run_requirements(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def _config_path(path: str | None, env: Mapping[str, str]) -> Path | None:
    # An empty STREAMSTOP_CONFIG names no file, like an unset one.
    named = path or env.get(CONFIG_ENV)
    if named:
        named_path = Path(named)
        if not named_path.exists():
            raise ConfigError([f"config file {named}: does not exist"])
        return named_path
    return DEFAULT_PATH if DEFAULT_PATH.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages carry the line and column, never the text of the line.
        raise ConfigError([f"config file {path}: invalid TOML: {exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"config file {path}: not UTF-8 text"]) from None
    except OSError as exc:
        problem = f"config file {path}: cannot read: {exc.strerror or type(exc).__name__}"
        raise ConfigError([problem]) from None


def _record_origins(
    data: Mapping[str, Any], loc: tuple[str, ...], origin: str, into: _Origins
) -> None:
    for key, value in data.items():
        into[(*loc, key)] = origin
        if isinstance(value, Mapping):
            _record_origins(value, (*loc, key), origin, into)


def _apply_env(data: dict[str, Any], env: Mapping[str, str], origins: _Origins) -> None:
    """Overlay `STREAMSTOP_<SECTION>__<KEY>` variables; others under the prefix are not config."""
    for name, value in env.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or ENV_NESTING not in upper:
            continue
        # Deeper names (A__B__C) keep "b__c" whole, so validation reports an unknown key.
        section_name, _, key = upper[len(ENV_PREFIX) :].lower().partition(ENV_NESTING)
        section = data.setdefault(section_name, {})
        if not isinstance(section, dict):
            continue  # the file's own non-table value is reported by validation
        section[key] = value
        origins[(section_name, key)] = f"from {name}"
        origins.setdefault((section_name,), f"from {name}")


def _describe(error: ErrorDetails, origins: _Origins) -> str:
    """One line for a validation error: key, reason, origin; never the input."""
    loc = tuple(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        reason = "unknown section" if len(loc) == 1 else "unknown key"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        reason = "must be a table"
    else:
        reason = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    origin = origins.get(loc)
    return f"{'.'.join(loc)}: {reason}" + (f" ({origin})" if origin else "")


def _run_requirements(settings: Settings) -> list[str]:
    """Credentials `run` needs; secret files are read now so a bad mount shows up early."""
    problems: list[str] = []
    for read in (settings.api_token, settings.sasl_password_value):
        try:
            read()
        except ConfigError as exc:
            problems.extend(exc.problems)
    kafka = settings.kafka
    if kafka.security_protocol in _SASL_PROTOCOLS:
        needs = f"required when kafka.security_protocol is {kafka.security_protocol}"
        if not kafka.sasl_username:
            problems.append(f"kafka.sasl_username: {needs}")
        if kafka.sasl_password_file is None and not kafka.sasl_password.get_secret_value():
            problems.append(
                f"kafka.sasl_password: one of it or kafka.sasl_password_file is {needs}"
            )
    return problems


def render_effective(settings: Settings) -> str:
    """The effective configuration as JSON, every key, secrets masked: for `check-config`."""
    return json.dumps(_displayable(settings.model_dump()), indent=2)


def _displayable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _displayable(item) for key, item in value.items()}
    if isinstance(value, SecretStr):
        return SECRET_MASK if value.get_secret_value() else ""
    if isinstance(value, Path):
        return str(value)
    # Only the *_file keys are optional; "" matches how the TOML file spells "none".
    return "" if value is None else value

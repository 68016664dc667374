"""Loading the configuration: find the file, read it and the environment, merge, validate.

`load_settings` finds the file (`--config`, `$STREAMSTOP_CONFIG`, `./config/streamstop.toml`,
else built-in defaults), reads it and the environment itself, merges them and validates
the result with the model (`models.py`). Every problem becomes one line naming the key
(and where the value came from), never echoing a value: secrets must not leak through
error messages.

Environment variable names are case-insensitive (`STREAMSTOP_API__TOKEN` and
`streamstop_api__token` mean the same key), as TOML keys are lower case.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_core import ErrorDetails

from streamstop.config.models import ConfigError, Settings
from streamstop.logs import MASK

ENV_PREFIX = "STREAMSTOP_"
ENV_NESTING = "__"
CONFIG_ENV = "STREAMSTOP_CONFIG"
DEFAULT_PATH = Path("config/streamstop.toml")

# Where a value came from, by its location, to make errors actionable.
_Origins = dict[tuple[str, ...], str]


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
    try:
        settings.api_token()
    except ConfigError as exc:
        problems.extend(exc.problems)
    return problems + settings.kafka_problems()


def render_effective(settings: Settings) -> str:
    """The effective configuration as JSON, every key, secrets masked: for `check-config`."""
    return json.dumps(_displayable(settings.model_dump()), indent=2)


def _displayable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _displayable(item) for key, item in value.items()}
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, Path):
        return str(value)
    # Only the *_file keys are optional; "" matches how the TOML file spells "none".
    return "" if value is None else value

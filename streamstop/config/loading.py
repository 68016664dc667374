"""Loading the configuration: find the file, read it and the environment, merge, validate.

`load` finds the file (`--config`, `$STREAMSTOP_CONFIG`, `./config/streamstop.toml`, else
built-in defaults), reads it and the environment itself, merges them and validates the
result with the model (`models.py`), remembering where every value came from. Every
problem becomes one line naming the key (and where the value came from), never echoing a
value: secrets must not leak through error messages. A misspelt key gets the closest
known one as a suggestion.

Environment variable names are case-insensitive (`STREAMSTOP_API__TOKEN` and
`streamstop_api__token` mean the same key), as TOML keys are lower case.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from streamstop.config.errors import ConfigError
from streamstop.config.models import Settings
from streamstop.logs import MASK, masked_url

ENV_PREFIX = "STREAMSTOP_"
ENV_NESTING = "__"
CONFIG_ENV = "STREAMSTOP_CONFIG"
DEFAULT_PATH = Path("config/streamstop.toml")

Location = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value came from: a file (its path), a variable (its name), or the default."""

    kind: Literal["file", "env", "default"]
    where: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.where}" if self.where else self.kind


DEFAULT = Origin("default")


@dataclass(frozen=True)
class Loaded:
    """A validated configuration, the file it came from, and the origin of each value."""

    settings: Settings
    file: Path | None
    origins: Mapping[Location, Origin] = field(default_factory=dict)
    # Lines worth telling a user that are not errors (ignored look-alike variables).
    notes: tuple[str, ...] = ()

    def origin(self, location: Location) -> Origin:
        """Where the value at `location` (section, key) came from."""
        return self.origins.get(location, DEFAULT)


def env_name(section: str, key: str) -> str:
    """The environment variable that sets `section.key`."""
    return f"{ENV_PREFIX}{section.upper()}{ENV_NESTING}{key.upper()}"


def load(
    path: str | None, env: Mapping[str, str] | None = None, *, need_api_token: bool = True
) -> Loaded:
    """Load, merge and validate the configuration; keep where each value came from.

    `path` is `--config`; `env` defaults to `os.environ`. Raises ConfigError listing every
    problem found, including the credentials the command needs: the SASL login, and the
    API token unless `need_api_token` is false (commands that only talk to Kafka).
    """
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    data: dict[str, Any] = _read_toml(file) if file is not None else {}
    origins: dict[Location, Origin] = {}
    if file is not None:
        _record_origins(data, (), Origin("file", str(file)), origins)
    _apply_env(data, env, origins)
    problems: list[str] = []
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        # Built outside the handler so the ConfigError carries no link to the input.
        problems = [_describe(error, origins) for error in exc.errors(include_input=False)]
    if problems:
        raise ConfigError(problems)
    problems = _requirements(settings, need_api_token=need_api_token)
    if problems:
        raise ConfigError(problems)
    return Loaded(settings, file, origins, tuple(_ignored_look_alikes(env)))


def load_settings(path: str | None, env: Mapping[str, str] | None = None) -> Settings:
    """The validated configuration `run` needs (see `load`)."""
    return load(path, env).settings


def find_config_file(path: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file `load` reads: `path` (`--config`), else `$STREAMSTOP_CONFIG`, else
    `./config/streamstop.toml` if it exists; None means built-in defaults.

    Raises ConfigError when a named file does not exist.
    """
    env = os.environ if env is None else env
    # An empty STREAMSTOP_CONFIG names no file, like an unset one.
    named = path or env.get(CONFIG_ENV)
    if named:
        named_path = Path(named)
        if not named_path.exists():
            how = "--config" if path else f"${CONFIG_ENV}"
            raise ConfigError([f"config file {named}: does not exist (named by {how})"])
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
    data: Mapping[str, Any], loc: Location, origin: Origin, into: dict[Location, Origin]
) -> None:
    for key, value in data.items():
        into[(*loc, key)] = origin
        if isinstance(value, Mapping):
            _record_origins(value, (*loc, key), origin, into)


def _apply_env(
    data: dict[str, Any], env: Mapping[str, str], origins: dict[Location, Origin]
) -> None:
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
        origins[(section_name, key)] = Origin("env", name)
        origins.setdefault((section_name,), Origin("env", name))


def _describe(error: ErrorDetails, origins: Mapping[Location, Origin]) -> str:
    """One line for a validation error: key, reason, origin; never the input."""
    loc = tuple(str(part) for part in error["loc"])
    kind = error["type"]
    origin = origins.get(loc)
    if kind == "extra_forbidden":
        reason = "unknown section" if len(loc) == 1 else "unknown key"
        reason += _suggestion(loc, origin)
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        reason = "must be a table"
    else:
        reason = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    return f"{'.'.join(loc)}: {reason}" + (f" (from {origin.where})" if origin else "")


def _suggestion(loc: Location, origin: Origin | None) -> str:
    """`; did you mean ...?` with the closest known section or key, spelt as the user wrote it."""
    sections = dict(_sections())
    if len(loc) == 1:
        known: list[str] = list(sections)
    elif len(loc) == 2 and loc[0] in sections:
        known = list(sections[loc[0]].model_fields)
    else:
        return ""
    close = difflib.get_close_matches(loc[-1], known, n=1)
    if not close:
        return ""
    if origin is not None and origin.kind == "env" and len(loc) == 2:
        return f"; did you mean {env_name(loc[0], close[0])}?"
    return f"; did you mean `{'.'.join((*loc[:-1], close[0]))}`?"


def _requirements(settings: Settings, *, need_api_token: bool) -> list[str]:
    """Credentials the command needs and what keeps the Kafka clients from connecting as
    configured; secret, CA, certificate and key files are read now so a bad mount shows
    up early."""
    problems = _api_token_problems(settings) if need_api_token else []
    return problems + settings.kafka_problems()


def _api_token_problems(settings: Settings) -> list[str]:
    api = settings.api
    if api.token_file is None and not api.token.get_secret_value():
        return [f"api.token: the stop API token is required: {_either_way('api', 'token')}"]
    return _problems_of(settings.api_token)


def _either_way(section: str, secret: str) -> str:
    """How to give a secret: its variable, or its `*_file` key naming a mounted file."""
    file_key = f"{secret}_file"
    return (
        f"set the environment variable {env_name(section, secret)}, or {section}.{file_key} "
        f"({env_name(section, file_key)}) naming a file that holds it (a mounted Secret)"
    )


def _problems_of(read: Callable[[], object]) -> list[str]:
    try:
        read()
    except ConfigError as exc:
        return exc.problems
    return []


def _ignored_look_alikes(env: Mapping[str, str]) -> Iterator[str]:
    """Variables that look like config with a single `_` before the key: ignored, say so."""
    for name in env:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or ENV_NESTING in upper or upper == CONFIG_ENV:
            continue
        rest = upper[len(ENV_PREFIX) :].lower()
        for section, model in _sections():
            key = rest.removeprefix(f"{section}_")
            if key != rest and key in model.model_fields:
                yield (
                    f"{name} is ignored: a config variable has two underscores between "
                    f"section and key; did you mean {env_name(section, key)}?"
                )


def _sections() -> Iterator[tuple[str, type[BaseModel]]]:
    for section, spec in Settings.model_fields.items():
        if isinstance(spec.annotation, type) and issubclass(spec.annotation, BaseModel):
            yield section, spec.annotation


# URLs that may carry a secret in a query string or (the proxy's) user-info.
_URL_KEYS = (("api", "url"), ("api", "proxy_url"))


def render_effective(settings: Settings) -> str:
    """The effective configuration as JSON, every key, secrets masked: for `check-config`."""
    return json.dumps(_shown(settings), indent=2)


def render_origins(loaded: Loaded) -> str:
    """Every key with its effective value (secrets masked) and where it came from.

    One `section.key = value  (origin)` line each, aligned, for `check-config --show-origin`.
    """
    rows = [
        (".".join(loc) + " = " + json.dumps(value), str(loaded.origin(loc)))
        for loc, value in _leaves(_shown(loaded.settings), ())
    ]
    width = max(len(left) for left, _ in rows)
    return "\n".join(f"{left:<{width}}  ({origin})" for left, origin in rows)


def _shown(settings: Settings) -> dict[str, Any]:
    """Every key's value as check-config shows it: secrets masked, URLs' secrets too."""
    shown: dict[str, Any] = _displayable(settings.model_dump())
    for section, key in _URL_KEYS:
        shown[section][key] = masked_url(shown[section][key])
    return shown


def _leaves(value: Any, loc: Location) -> Iterator[tuple[Location, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*loc, key))
    else:
        yield loc, value


def _displayable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _displayable(item) for key, item in value.items()}
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, Path):
        return str(value)
    # Only the *_file keys are optional; "" matches how the TOML file spells "none".
    return "" if value is None else value

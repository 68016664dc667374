"""Checks of single values: URLs, files the daemon reads, secrets and their files.

Files named by the configuration (CA bundles, certificates, keys) are checked when it is
loaded, so a missing mount is exit 2 with one line; secret files are read on every use,
so a rotated Kubernetes Secret is picked up without a restart.

Never: echo a secret's value in a problem.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from pathlib import Path
from typing import Annotated
from urllib.parse import SplitResult, urlsplit

from pydantic import AfterValidator, BeforeValidator, SecretStr

from streamstop.config.errors import ConfigError

# What an HTTP header value can carry safely: a newline would split the header.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def empty_is_none(value: object) -> object:
    # TOML has no null, so the shipped file spells "no file" as "".
    return None if value == "" else value


SecretFile = Annotated[Path | None, BeforeValidator(empty_is_none)]


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
ReadableFile = Annotated[Path | None, BeforeValidator(empty_is_none), AfterValidator(_readable)]


CaBundle = Annotated[ReadableFile, AfterValidator(_ca_bundle)]


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


def check_http_url(value: str, credentials_hint: str) -> str:
    """An http(s) URL with a host, without credentials (URLs are logged and printed by
    check-config; credentials belong in secret keys), and `https://` unless the host is
    loopback: over `http://` a secret would travel in clear text."""
    parts = _split_url(value)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"must not contain credentials; use {credentials_hint}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            "must be https:// unless its host is loopback (127.0.0.0/8, ::1, localhost): "
            "over http:// the secret would travel in clear text"
        )
    return value


def check_proxy_url(value: str) -> None:
    """Raise ValueError unless `value` is `http://[user:password@]host[:port]`: an HTTP
    CONNECT proxy, the only kind the API client speaks."""
    parts = _split_url(value)
    if parts is None or parts.scheme != "http" or not parts.hostname:
        raise ValueError("must be an http:// URL of an HTTP CONNECT proxy")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be http://[user:password@]host[:port] without a path")


def load_client_certificate(context: ssl.SSLContext, certfile: Path, keyfile: Path | None) -> None:
    """Load a client certificate (and its key, unless inside `certfile`) into `context`.

    An encrypted key is refused rather than prompted for: a daemon has no terminal.
    """
    context.load_cert_chain(certfile, keyfile, password="")


def check_header_safe(token: str) -> None:
    if token and not _HEADER_SAFE.fullmatch(token):
        raise ValueError("must be printable ASCII without spaces")


def has_secret(inline: SecretStr, file: Path | None) -> bool:
    return file is not None or bool(inline.get_secret_value())


def secret_value(inline: SecretStr, file: Path | None, key: str) -> str | None:
    """A secret's value now: its `*_file` read at this call, else the inline value, else None."""
    if file is not None:
        return read_secret_file(file, f"{key}_file")
    return inline.get_secret_value() or None


def read_secret_file(path: Path, key: str) -> str:
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

"""The HTTP side of the stop API: one reused aiohttp session, Basic auth, orjson bodies.

It only moves bytes; what an answer means is decided in `core/interpret.py`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from streamstop.config import ConfigError


@dataclass(frozen=True, slots=True)
class Response:
    """What the API answered, as plain data."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class CredentialsError(Exception):
    """The token cannot be read now (say, a rotated Secret file is empty): no request is
    sent. The message names the setting and the problem, never the token."""


class TransportError(Exception):
    """No HTTP answer (connection refused or reset, DNS, TLS, timeout). Its message never
    contains request headers."""


class StopClient:
    """POSTs uuids to the stop API."""

    def __init__(
        self,
        url: str,
        *,
        token: Callable[[], str],
        timeout_s: float,
        ca_file: Path | None,
        max_connections: int,
    ) -> None:
        self._url = url
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ssl = ssl.create_default_context(cafile=ca_file)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session (inside the running loop)."""
        connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            auto_decompress=True,
            raise_for_status=False,
        )

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, uuids: list[str], request_id: str) -> Response:
        """Send one request; raises TransportError when there is no HTTP answer."""
        assert self._session is not None, "StopClient.start() not called"
        try:
            token = self._token()
        except ConfigError as exc:
            raise CredentialsError(str(exc)) from None
        headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "X-Request-Id": request_id,
        }
        body = orjson.dumps({"uuids": uuids})
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                payload = await resp.read()
                return Response(resp.status, resp.headers, payload)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Build the message from the class and errno-like text only: aiohttp's
            # request-info reprs carry headers, and so the token.
            raise TransportError(_describe(exc)) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    return type(exc).__name__

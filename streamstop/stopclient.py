"""The HTTP side of the stop API: one reused aiohttp session, Basic auth, orjson bodies.

It only moves bytes, and bounds how many it accepts; what an answer means is decided in
`core/interpret.py`. Failures that retrying cannot fix (an unreadable token, a certificate
that does not verify, a host name that does not resolve, a proxy refusing us) raise
`ApiConfigError`, for the stopper's configuration-error hold; the others raise
`TransportError`, retried.

Never: put a request header (the token) in an error, or read more than the cap.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog
from aiohttp import hdrs

from streamstop.config import ConfigError
from streamstop.config.checks import check_proxy_url, load_client_certificate
from streamstop.config.models import DEFAULT_MAX_RESPONSE_BYTES
from streamstop.core.interpret import MESSAGE_SCAN_BYTES
from streamstop.logs import masked_url, register_secret

log = structlog.get_logger("streamstop.stopclient")

# Of an answer that is not a 2xx only its message is used: one byte more than the
# interpreter scans, so it can tell the text was cut (and drop a possibly cut word).
ERROR_BODY_BYTES = MESSAGE_SCAN_BYTES + 1
_READ_CHUNK_BYTES = 64 * 1024
# A proxy answering CONNECT with these refuses us for good: its credentials or its policy.
_PROXY_REFUSALS = frozenset({401, 403, 407})


@dataclass(frozen=True, slots=True)
class Response:
    """What the API answered, as plain data."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class ApiConfigError(Exception):
    """The API cannot be used as configured: the token cannot be read now (no request was
    sent), the server's certificate does not verify, a host name does not resolve, or the
    proxy refuses the tunnel. Retrying will not help until the configuration (or the
    outside world) changes. The message names the problem and what to check, never the
    token or a proxy's credentials."""


class TransportError(Exception):
    """No usable HTTP answer (connection refused or reset, timeout, a cut body): transient.
    Its message never contains request headers."""


class ResponseTooLarge(TransportError):
    """A 2xx answer larger than `api.max_response_bytes` after decompression: transient.
    Reading stopped at the cap, so the body never sat in memory whole."""


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
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        client_certfile: Path | None = None,
        client_keyfile: Path | None = None,
        proxy_url: str = "",
        trust_env: bool = False,
    ) -> None:
        self._url = url
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ssl = ssl.create_default_context(cafile=ca_file)
        if client_certfile is not None:
            load_client_certificate(self._ssl, client_certfile, client_keyfile)
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._proxy = proxy_url or (_env_proxy(url) if trust_env else None)
        if self._proxy:
            # Proxy credentials must never reach a log line, whatever quotes them.
            register_secret(_password(self._proxy))
        # Why no request can be sent as configured: api.proxy_url was checked when the
        # configuration loaded, the environment's proxy is checked here.
        self._unusable: str | None = None
        if self._proxy and not proxy_url:
            try:
                check_proxy_url(self._proxy)
            except ValueError as exc:
                self._unusable = f"the environment's HTTPS_PROXY {exc} (api.trust_env)"
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
            # The environment's proxies were read once, above; netrc is never read.
            trust_env=False,
        )
        if self._proxy:
            log.info("api_proxy", proxy=masked_url(self._proxy))

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, uuids: list[str], request_id: str) -> Response:
        """Send one request. Raises ApiConfigError when the API cannot be used as
        configured, TransportError when there is no usable answer (ResponseTooLarge for
        a 2xx over `api.max_response_bytes`)."""
        assert self._session is not None, "StopClient.start() not called"
        if self._unusable is not None:
            raise ApiConfigError(self._unusable)
        try:
            token = self._token()
        except ConfigError as exc:
            raise ApiConfigError(str(exc)) from None
        headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "X-Request-Id": request_id,
        }
        body = orjson.dumps({"uuids": uuids})
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, allow_redirects=False, proxy=self._proxy
            ) as resp:
                payload = await self._read(resp)
                return Response(resp.status, resp.headers, payload)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Messages are built from the class, host and reason only: aiohttp's
            # request-info reprs carry headers, and so the token.
            raise _failure(exc) from None

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, read only as far as it is useful: a 2xx up to the cap (past it,
        ResponseTooLarge), anything else up to its message."""
        success = 200 <= resp.status < 300
        limit = self._max_response_bytes if success else ERROR_BODY_BYTES
        # Content-Length counts the bytes on the wire: a limit only when not encoded.
        declared = resp.content_length
        encoded = hdrs.CONTENT_ENCODING in resp.headers
        if success and not encoded and declared is not None and declared > limit:
            resp.close()
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        # Counted as decompressed: aiohttp inflates a bounded amount per chunk read.
        async for chunk in resp.content.iter_chunked(_READ_CHUNK_BYTES):
            if size + len(chunk) > limit:
                # Dropping the connection is cheaper than draining what we will not use.
                resp.close()
                if success:
                    raise self._too_large()
                chunks.append(chunk[: limit - size])
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def _too_large(self) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"answer larger than api.max_response_bytes ({self._max_response_bytes} bytes)"
        )


def _env_proxy(url: str) -> str | None:
    """The proxy HTTPS_PROXY (or HTTP_PROXY for http://) names for `url`, unless NO_PROXY
    excludes its host; the standard library's reading of those variables. A bare
    host:port means http://, as for curl."""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxy = urllib.request.getproxies_environment().get(parts.scheme)
    if proxy and "://" not in proxy:
        proxy = f"http://{proxy}"
    return proxy


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _failure(exc: BaseException) -> ApiConfigError | TransportError:
    """The exception to raise for a failed request: a hold or a transient failure."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        reason = getattr(error, "verify_message", None) or type(error).__name__
        return ApiConfigError(
            f"TLS certificate of {exc.host} does not verify ({reason}): check api.ca_file, "
            "and the CA of any proxy that re-signs TLS"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return ApiConfigError(
            f"TLS handshake with {exc.host}:{exc.port} failed ({_ssl_reason(exc)}): check "
            "api.url, api.ca_file, api.client_certfile and api.client_keyfile"
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ApiConfigError(
            f"cannot resolve host name {exc.host}: check api.url (or api.proxy_url) and DNS"
        )
    if isinstance(exc, aiohttp.ClientHttpProxyError) and exc.status in _PROXY_REFUSALS:
        return ApiConfigError(
            f"the proxy refused the tunnel with HTTP {exc.status}: check api.proxy_url "
            "(its credentials) and the proxy's rules for the API's host"
        )
    return TransportError(_describe(exc))


def _ssl_reason(exc: aiohttp.ClientSSLError) -> str:
    error = exc.os_error
    return getattr(error, "reason", None) or type(error).__name__


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"proxy answered HTTP {exc.status}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    return type(exc).__name__

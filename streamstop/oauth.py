"""OAuth 2 access tokens for Kafka's OAUTHBEARER mechanism: the client-credentials grant.

aiokafka asks its token provider for a token only when it opens a connection (it does
not re-authenticate connections, KIP-368), and a broker with `connections.max.reauth.ms`
closes a connection once its token expires. So a token is fetched when the cached one is
past most of its lifetime, leaving every token handed out the rest of it, and the client
secret file is read again on every fetch: a rotated Secret takes effect without a restart.

Never: put the client secret in an error, or hand out a token past most of its lifetime.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections.abc import Callable
from urllib.parse import quote_plus

import aiohttp
import orjson
import structlog
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import AuthenticationFailedError

from streamstop.logs import register_secret

log = structlog.get_logger("streamstop.oauth")

# A token is replaced once this share of its lifetime has passed.
REFRESH_AT_FRACTION = 0.8
TIMEOUT_S = 10.0
_MAX_RESPONSE_BYTES = 1 << 20
# RFC 6749 error codes are short ASCII words; anything else is not echoed.
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


class OAuthTokenError(AuthenticationFailedError):  # type: ignore[misc]
    """The token endpoint gave no usable token; the message names the endpoint, never a secret."""


class ClientCredentialsTokens(AbstractTokenProvider):  # type: ignore[misc]
    """Access tokens from `token_url` for `client_id`, the secret read by `read_secret` at
    each fetch; a token is reused until `REFRESH_AT_FRACTION` of its lifetime has passed."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        read_secret: Callable[[], str | None],
        scope: str = "",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._read_secret = read_secret
        self._scope = scope
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        # Connections opened together share one fetch.
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A token with most of its lifetime left: the cached one, or a new one.

        If fetching fails while the cached token is still valid, the cached one is used.
        Raises OAuthTokenError when there is no valid token.
        """
        async with self._lock:
            return await self._current()

    async def _current(self) -> str:
        now = self._clock()
        if self._token is not None and now < self._refresh_at:
            return self._token
        try:
            token, lifetime_s = await self._fetch()
        except OAuthTokenError as exc:
            if self._token is None or now >= self._expires_at:
                raise
            log.warning("oauth_token_refresh_failed", error=str(exc), using="the current token")
            return self._token
        register_secret(token)
        self._token = token
        self._refresh_at = now + lifetime_s * REFRESH_AT_FRACTION
        self._expires_at = now + lifetime_s
        return token

    async def _fetch(self) -> tuple[str, float]:
        secret = self._read_secret() or ""
        register_secret(secret)
        # RFC 6749 2.3.1: both are form-encoded before they go into the Basic header.
        credentials = f"{quote_plus(self._client_id)}:{quote_plus(secret)}"
        headers = {
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
            "Accept": "application/json",
        }
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session,
                session.post(self._token_url, data=form, headers=headers) as response,
            ):
                body = await response.content.read(_MAX_RESPONSE_BYTES)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._error(f"unreachable ({type(exc).__name__})") from None
        return self._parse(status, body)

    def _parse(self, status: int, body: bytes) -> tuple[str, float]:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise self._error(f"answered HTTP {status} without a JSON object")
        if status != 200:
            code = answer.get("error")
            detail = f" {code}" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
            raise self._error(f"refused the client credentials: HTTP {status}{detail}")
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._error("answered without an access_token")
        return token, _lifetime_s(answer, token, self._clock())

    def _error(self, what: str) -> OAuthTokenError:
        return OAuthTokenError(
            f"OAuth token endpoint {self._token_url} {what} (client {self._client_id})"
        )


def _lifetime_s(answer: dict[str, object], token: str, now: float) -> float:
    """Seconds the token is valid: `expires_in`, else the JWT's `exp`, else 0 (fetch a new
    token for every connection)."""
    expires_in = answer.get("expires_in")
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        return max(0.0, float(expires_in))
    expiry = _jwt_expiry(token)
    return max(0.0, expiry - now) if expiry is not None else 0.0


def _jwt_expiry(token: str) -> float | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None

"""A small OAuth 2 authorization server for the secured test broker, served from a thread.

`POST /token` grants the client-credentials flow (client authenticated by HTTP Basic, as
RFC 6749 prefers, or in the form) with RS256 JWTs for audience "kafka"; `GET /jwks` serves
the public key that Kafka's OIDC validator checks them against. Clients, their secrets and
the token lifetime can change while it runs, and it counts what it issued and refused.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

AUDIENCE = "kafka"
_KEY_ID = "streamstop-test"


@dataclass
class TokenServer:
    """What the server knows and did; read and changed by tests while it serves."""

    lifetime_s: int
    clients: dict[str, tuple[str, ...]] = field(default_factory=dict)
    issued: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    tokens: list[str] = field(default_factory=list)
    url: str = ""
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    def set_client(self, client_id: str, *secrets: str) -> None:
        """Register `client_id` with the secrets it may use (two while one is rotated, as
        identity providers allow); any other secret is refused from now on."""
        with self._lock:
            self.clients[client_id] = secrets

    def issued_to(self, client_id: str) -> int:
        with self._lock:
            return self.issued[client_id]

    def refused_for(self, client_id: str) -> int:
        with self._lock:
            return self.refused[client_id]

    def jwks(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": _KEY_ID, "use": "sig", "alg": "RS256"}]}

    def grant(self, client_id: str, secret: str, scope: str) -> tuple[int, dict[str, Any]]:
        """The answer to a client-credentials request: (HTTP status, JSON body)."""
        with self._lock:
            if secret not in self.clients.get(client_id, ()):
                self.refused[client_id] += 1
                return 401, {"error": "invalid_client"}
            now = int(time.time())
            claims = {
                "iss": self.url,
                "sub": client_id,
                "aud": AUDIENCE,
                "iat": now,
                "exp": now + self.lifetime_s,
                "scope": scope or "kafka",
                "jti": uuid.uuid4().hex,
            }
            token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": _KEY_ID})
            self.issued[client_id] += 1
            self.tokens.append(token)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime_s}
        return 200, body


def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/jwks":
                self._answer(200, server.jwks())
            else:
                self._answer(404, {"error": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if self.path != "/token" or form.get("grant_type") != "client_credentials":
                self._answer(400, {"error": "unsupported_grant_type"})
                return
            client_id, secret = _client_credentials(self.headers.get("Authorization", ""), form)
            self._answer(*server.grant(client_id, secret, form.get("scope", "")))

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest output is for test results."""

    return Handler


def _client_credentials(authorization: str, form: dict[str, str]) -> tuple[str, str]:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() == "basic":
        client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        return unquote_plus(client_id), unquote_plus(secret)
    return form.get("client_id", ""), form.get("client_secret", "")


@contextmanager
def running_token_server(lifetime_s: int) -> Iterator[TokenServer]:
    """A token server on a free loopback port, shut down at the end."""
    server = TokenServer(lifetime_s)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="token-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()

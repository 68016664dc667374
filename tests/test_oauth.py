"""OAUTHBEARER tokens by the client-credentials grant, against the test token server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from tokenserver import TokenServer, running_token_server

from streamstop.logs import mask_secrets
from streamstop.oauth import REFRESH_AT_FRACTION, ClientCredentialsTokens, OAuthTokenError

LIFETIME_S = 100
CLIENT = "streamstop-unit"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with running_token_server(LIFETIME_S) as server:
        server.set_client(CLIENT, "first-Secret-0a")
        yield server


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "client-secret"
    write_secret(path, "first-Secret-0a")
    return path


def write_secret(path: Path, value: str) -> None:
    path.write_text(value + "\n")


def provider(server: TokenServer, secret: Path, clock: Clock) -> ClientCredentialsTokens:
    return ClientCredentialsTokens(
        server.token_url, CLIENT, lambda: secret.read_text().strip(), "kafka", clock=clock
    )


async def test_a_token_is_reused_until_most_of_its_lifetime_has_passed(
    server: TokenServer, secret: Path
) -> None:
    clock = Clock()
    tokens = provider(server, secret, clock)

    first = await tokens.token()
    clock.now += LIFETIME_S * REFRESH_AT_FRACTION - 1
    again = await tokens.token()
    clock.now += 2
    renewed = await tokens.token()

    assert first == again != renewed
    assert server.issued_to(CLIENT) == 2
    assert server.tokens == [first, renewed]
    assert mask_secrets(f"token {renewed}") == "token ***"


async def test_the_secret_file_is_read_again_for_each_new_token(
    server: TokenServer, secret: Path
) -> None:
    clock = Clock()
    tokens = provider(server, secret, clock)
    await tokens.token()

    server.set_client(CLIENT, "second-Secret-1b")
    write_secret(secret, "second-Secret-1b")
    clock.now += LIFETIME_S

    assert await tokens.token() == server.tokens[-1]
    assert server.issued_to(CLIENT) == 2
    assert server.refused_for(CLIENT) == 0


async def test_connections_opened_together_share_one_request(
    server: TokenServer, secret: Path
) -> None:
    tokens = provider(server, secret, Clock())

    got = await asyncio.gather(*(tokens.token() for _ in range(5)))

    assert len(set(got)) == 1
    assert server.issued_to(CLIENT) == 1


async def test_refused_credentials_are_one_line_without_the_secret(
    server: TokenServer, secret: Path
) -> None:
    write_secret(secret, "wrong-Secret-2c")

    with pytest.raises(OAuthTokenError) as refused:
        await provider(server, secret, Clock()).token()

    assert str(refused.value) == (
        f"OAuthTokenError: OAuth token endpoint {server.token_url} refused the client "
        f"credentials: HTTP 401 invalid_client (client {CLIENT})"
    )


async def test_an_unreachable_endpoint_is_named(secret: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/token"
    tokens = ClientCredentialsTokens(url, CLIENT, lambda: "s3cret-value", clock=Clock())

    with pytest.raises(OAuthTokenError) as refused:
        await tokens.token()

    assert str(refused.value) == (
        f"OAuthTokenError: OAuth token endpoint {url} unreachable "
        f"(ClientConnectorError) (client {CLIENT})"
    )


async def test_a_failed_renewal_keeps_the_token_while_it_is_valid(
    server: TokenServer, secret: Path
) -> None:
    clock = Clock()
    tokens = provider(server, secret, clock)
    first = await tokens.token()
    server.set_client(CLIENT, "revoked-everything")

    clock.now += LIFETIME_S - 1
    with capture_logs() as logs:
        kept = await tokens.token()
    clock.now += 2
    with pytest.raises(OAuthTokenError):
        await tokens.token()

    assert kept == first
    assert [entry["event"] for entry in logs] == ["oauth_token_refresh_failed"]
    assert "first-Secret-0a" not in str(logs)


async def test_without_expires_in_the_token_lifetime_comes_from_its_exp_claim(
    server: TokenServer, secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted = server.grant

    def without_expires_in(
        client_id: str, secret: str, scope: str
    ) -> tuple[int, dict[str, object]]:
        status, body = granted(client_id, secret, scope)
        body.pop("expires_in", None)
        return status, body

    monkeypatch.setattr(server, "grant", without_expires_in)
    clock = Clock()
    clock.now = time.time()
    tokens = provider(server, secret, clock)

    first = await tokens.token()
    clock.now += LIFETIME_S * REFRESH_AT_FRACTION - 5

    assert await tokens.token() == first
    assert server.issued_to(CLIENT) == 1

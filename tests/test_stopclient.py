"""The stop API client against the real simulator: how much of an answer it reads, which
failures are holds (ApiConfigError) and which are transient, TLS, mTLS and proxies."""

from __future__ import annotations

import base64
import contextlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from connect_proxy import running_proxy
from fakeapi_proc import FakeApi, running_fake_api
from test_fakeapi import uuid_ending
from tlscerts import TestCa

from streamstop.config import ConfigError
from streamstop.core.interpret import Kind, interpret_response
from streamstop.fakeapi.rules import code_for
from streamstop.logs import mask_secrets
from streamstop.stopclient import (
    ERROR_BODY_BYTES,
    ApiConfigError,
    Response,
    ResponseTooLarge,
    StopClient,
    TransportError,
)

MIB = 1024 * 1024
TOKEN = "test-token"
UUIDS = [uuid_ending(digit, n) for n, digit in enumerate("0acd")]


@contextlib.asynccontextmanager
async def started(url: str, **options: Any) -> AsyncIterator[StopClient]:
    """A started client for `url` with the simulator's token; closed at the end."""
    options.setdefault("ca_file", None)
    client = StopClient(url, token=lambda: TOKEN, timeout_s=20, max_connections=2, **options)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def post(url: str, **options: Any) -> Response:
    async with started(url, **options) as client:
        return await client.post(UUIDS, "batch-1")


def assert_answered(response: Response) -> None:
    verdict = interpret_response(response.status, response.headers, response.body, UUIDS, 0.0)
    assert verdict.kind is Kind.ITEMS
    assert verdict.codes == {uuid: code_for(uuid) for uuid in UUIDS}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="module")
def ca(certs: Path) -> TestCa:
    """The CA that signed the simulator's certificate."""
    return TestCa(certs, "api")


@pytest.fixture(scope="module")
def other_ca(certs: Path) -> TestCa:
    """A CA that signed nothing the simulator uses (say, a TLS-inspecting proxy's)."""
    return TestCa(certs, "other")


@pytest.fixture(scope="module")
def tls_fake(ca: TestCa) -> Iterator[FakeApi]:
    certfile, keyfile = ca.issue("server", "127.0.0.1", "localhost")
    tls = ("--tls-certfile", str(certfile), "--tls-keyfile", str(keyfile))
    with running_fake_api(*tls, tls=ca.trusting()) as fake:
        assert fake.url.startswith("https://127.0.0.1:")
        yield fake


# --- How much of an answer is read ---------------------------------------------------


async def test_an_answer_over_the_cap_is_a_transient_failure(fake: FakeApi) -> None:
    fake.set(huge_body_mb=3)
    with pytest.raises(ResponseTooLarge) as caught:
        await post(fake.url, max_response_bytes=2 * MIB)
    assert isinstance(caught.value, TransportError)  # retried like a lost connection
    assert str(caught.value) == "answer larger than api.max_response_bytes (2097152 bytes)"

    response = await post(fake.url, max_response_bytes=4 * MIB)
    assert len(response.body) > 3 * MIB  # the same answer fits a larger cap
    assert_answered(response)


async def test_a_gzip_bomb_is_cut_at_the_cap_without_inflating_in_memory(fake: FakeApi) -> None:
    fake.set(huge_body_mb=256, gzip_answers=True)  # about 1 MB on the wire
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge):
            await post(fake.url, max_response_bytes=16 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [request["status"] for request in fake.received()] == [200]
    # The cap plus one bounded decompression step (aiohttp >= 3.13.3: at most 32 MiB);
    # reading it whole held 512 MiB.
    assert peak < 64 * MIB, f"peak {peak / MIB:.0f} MiB"


async def test_a_gzip_answer_under_the_cap_is_read_decompressed(fake: FakeApi) -> None:
    fake.set(gzip_answers=True, huge_body_mb=2)
    response = await post(fake.url, max_response_bytes=4 * MIB)
    assert len(response.body) > 2 * MIB
    assert_answered(response)


async def test_only_the_start_of_a_rejection_is_read() -> None:
    # A gateway's 400 can be any size; its message is at the start.
    page = b'{"message": "uuid 7 is not valid", "trace": "' + b"x" * (20 * MIB) + b'"}'

    async def reject(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=400, body=page, content_type="application/json")

    app = web.Application()
    app.router.add_post("/stop", reject)
    async with TestServer(app) as server:
        response = await post(str(server.make_url("/stop")))
    assert response.status == 400
    assert len(response.body) == ERROR_BODY_BYTES
    verdict = interpret_response(400, response.headers, response.body, UUIDS, 0.0)
    assert verdict.kind is Kind.SPLIT
    assert verdict.reason.startswith('HTTP 400: {"message": "uuid 7 is not valid"')


# --- Holds: the API cannot be used as configured -------------------------------------


async def test_an_unreadable_token_is_a_configuration_error_and_nothing_is_sent(
    fake: FakeApi,
) -> None:
    def token() -> str:
        raise ConfigError(["api.token_file: /run/secrets/token is empty"])

    client = StopClient(fake.url, token=token, timeout_s=5, ca_file=None, max_connections=1)
    await client.start()
    try:
        with pytest.raises(ApiConfigError) as caught:
            await client.post(UUIDS, "batch-1")
    finally:
        await client.close()
    assert str(caught.value) == "api.token_file: /run/secrets/token is empty"
    assert fake.received() == []


async def test_an_unresolvable_host_name_is_a_configuration_error() -> None:
    with pytest.raises(ApiConfigError) as caught:
        await post("https://streamstop-test.invalid/api/v1/message/stop")
    assert str(caught.value) == (
        "cannot resolve host name streamstop-test.invalid: check api.url (or api.proxy_url) and DNS"
    )


async def test_the_api_over_tls_answers_with_its_ca(tls_fake: FakeApi, ca: TestCa) -> None:
    tls_fake.reset()
    assert_answered(await post(tls_fake.url, ca_file=ca.ca_file))
    assert len(tls_fake.received()) == 1


@pytest.mark.parametrize("trusted", ["other", "system"])
async def test_a_certificate_that_does_not_verify_is_a_configuration_error(
    tls_fake: FakeApi, other_ca: TestCa, trusted: str
) -> None:
    tls_fake.reset()
    ca_file = other_ca.ca_file if trusted == "other" else None
    with pytest.raises(ApiConfigError) as caught:
        await post(tls_fake.url, ca_file=ca_file)
    message = str(caught.value)
    assert message.startswith("TLS certificate of 127.0.0.1 does not verify (")
    assert "check api.ca_file" in message
    assert TOKEN not in message
    assert tls_fake.received() == []  # nothing was sent to a server we cannot trust


async def test_a_certificate_for_another_name_is_a_configuration_error(ca: TestCa) -> None:
    certfile, keyfile = ca.issue("elsewhere", "api.elsewhere.example")
    tls = ("--tls-certfile", str(certfile), "--tls-keyfile", str(keyfile))
    with running_fake_api(*tls, tls=ca.trusting()) as fake, pytest.raises(ApiConfigError) as caught:
        await post(fake.url, ca_file=ca.ca_file)
    assert "mismatch" in str(caught.value)


# --- mTLS gateways and proxies ---------------------------------------------------------


@pytest.fixture(scope="module")
def client_ca(certs: Path) -> TestCa:
    """The CA an mTLS gateway trusts for client certificates."""
    return TestCa(certs, "clients")


@pytest.fixture(scope="module")
def mtls_fake(ca: TestCa, client_ca: TestCa) -> Iterator[FakeApi]:
    certfile, keyfile = ca.issue("gateway", "127.0.0.1")
    args = ["--tls-certfile", str(certfile), "--tls-keyfile", str(keyfile)]
    args += ["--tls-client-cafile", str(client_ca.ca_file)]
    admin = ca.trusting()
    admin.load_cert_chain(*client_ca.issue("admin", "admin.test"))
    with running_fake_api(*args, tls=admin) as fake:
        yield fake


async def test_an_mtls_gateway_accepts_the_client_certificate(
    mtls_fake: FakeApi, ca: TestCa, client_ca: TestCa
) -> None:
    certfile, keyfile = client_ca.issue("streamstop", "streamstop.test")
    response = await post(
        mtls_fake.url, ca_file=ca.ca_file, client_certfile=certfile, client_keyfile=keyfile
    )
    assert_answered(response)


@pytest.mark.parametrize("certificate", ["none", "unknown_ca"])
async def test_an_mtls_gateway_refuses_a_client_without_a_certificate_it_trusts(
    mtls_fake: FakeApi, ca: TestCa, other_ca: TestCa, certificate: str
) -> None:
    # Under TLS 1.3 the gateway refuses after the handshake has completed on our side and
    # closes the connection: indistinguishable from a dropped connection, so transient
    # (docs/operations.md says what to check).
    mtls_fake.reset()
    options: dict[str, Any] = {"ca_file": ca.ca_file}
    if certificate == "unknown_ca":
        options["client_certfile"], options["client_keyfile"] = other_ca.issue("x", "x.test")
    # The refusal lands as a closed or a reset connection, depending on timing.
    with pytest.raises(TransportError, match=r"ServerDisconnectedError|ClientOSError"):
        await post(mtls_fake.url, **options)
    assert mtls_fake.received() == []


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


async def test_requests_go_through_the_proxy_with_its_credentials_never_logged(
    tls_fake: FakeApi, ca: TestCa
) -> None:
    tls_fake.reset()
    password = "pr0xy-Pass-DISTINCT"
    async with running_proxy(f"svc:{password}") as proxy:
        proxy_url = f"http://svc:{password}@127.0.0.1:{proxy.port}"
        with structlog.testing.capture_logs() as logs:
            response = await post(tls_fake.url, ca_file=ca.ca_file, proxy_url=proxy_url)
    assert_answered(response)
    port = tls_fake.url.split(":")[2].split("/")[0]
    assert proxy.tunnels == [f"127.0.0.1:{port}"]
    assert proxy.authorizations == [_basic(f"svc:{password}")]
    assert logs == [
        {
            "event": "api_proxy",
            "log_level": "info",
            "proxy": f"http://svc:***@127.0.0.1:{proxy.port}",
        }
    ]
    # Registered as a secret: whatever quotes it later is masked.
    assert mask_secrets(f"proxy said {password}!") == "proxy said ***!"


async def test_a_proxy_refusing_our_credentials_is_a_configuration_error(
    tls_fake: FakeApi, ca: TestCa
) -> None:
    tls_fake.reset()
    async with running_proxy("svc:right") as proxy:
        proxy_url = f"http://svc:wrong-Pass-DISTINCT@127.0.0.1:{proxy.port}"
        with pytest.raises(ApiConfigError) as caught:
            await post(tls_fake.url, ca_file=ca.ca_file, proxy_url=proxy_url)
    message = str(caught.value)
    assert message.startswith("the proxy refused the tunnel with HTTP 407: check api.proxy_url")
    assert "wrong-Pass-DISTINCT" not in message
    assert tls_fake.received() == []


@pytest.mark.parametrize(
    ("trust_env", "no_proxy", "proxied"),
    [(True, "", True), (True, "127.0.0.1", False), (False, "", False)],
)
async def test_the_environments_proxy_is_used_only_with_trust_env(
    tls_fake: FakeApi,
    ca: TestCa,
    monkeypatch: pytest.MonkeyPatch,
    trust_env: bool,
    no_proxy: str,
    proxied: bool,
) -> None:
    async with running_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", no_proxy)
        response = await post(tls_fake.url, ca_file=ca.ca_file, trust_env=trust_env)
    assert_answered(response)
    assert bool(proxy.tunnels) is proxied


async def test_a_bare_host_and_port_in_https_proxy_means_http(
    tls_fake: FakeApi, ca: TestCa, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert_answered(await post(tls_fake.url, ca_file=ca.ca_file, trust_env=True))
    assert len(proxy.tunnels) == 1


async def test_a_proxy_of_another_kind_in_the_environment_is_a_configuration_error(
    tls_fake: FakeApi, ca: TestCa, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_fake.reset()
    monkeypatch.setenv("HTTPS_PROXY", "socks5://u:S0cks-Pass-DISTINCT@127.0.0.1:1080")
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(ApiConfigError) as caught:
        await post(tls_fake.url, ca_file=ca.ca_file, trust_env=True)
    assert str(caught.value) == (
        "the environment's HTTPS_PROXY must be an http:// URL of an HTTP CONNECT proxy "
        "(api.trust_env)"
    )
    assert mask_secrets("S0cks-Pass-DISTINCT") == "***"
    monkeypatch.delenv("HTTPS_PROXY")  # urllib, reading what the simulator received, obeys it
    assert tls_fake.received() == []


async def test_a_dead_proxy_is_a_transient_failure(tls_fake: FakeApi, ca: TestCa) -> None:
    async with running_proxy() as proxy:
        dead = proxy.url
    started_at = time.monotonic()
    with pytest.raises(TransportError) as caught:
        await post(tls_fake.url, ca_file=ca.ca_file, proxy_url=dead)
    assert not isinstance(caught.value, ApiConfigError)
    assert time.monotonic() - started_at < 20

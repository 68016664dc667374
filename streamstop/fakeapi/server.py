"""The simulator's HTTP shell: the stop endpoint, the `/_fake/` admin API, start and stop.

Decisions live in `responder.py`; this module only moves requests and replies.
"""

from __future__ import annotations

import asyncio
import random
import signal
import ssl
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import hdrs, web

from streamstop.fakeapi.record import Recorder
from streamstop.fakeapi.responder import JSON, StopRequest, respond
from streamstop.fakeapi.switches import SwitchError, Switches, public_view, with_changes
from streamstop.logs import register_secret

ADMIN_PREFIX = "/_fake"
# Room for a little over 10,000 uuids, so an oversized request still gets the API's own
# JSON 413 rather than aiohttp's; larger bodies are refused unread.
MAX_BODY_BYTES = 8 * 1024 * 1024


class FakeState:
    """The simulator's mutable state: switches (replaced whole), random source, record,
    and the uuids stopped so far (lower case)."""

    def __init__(self, switches: Switches, recorder: Recorder) -> None:
        self.switches = switches
        self.rng = random.Random(switches.seed)
        self.recorder = recorder
        self.stopped: set[str] = set()

    def change(self, changes: Mapping[str, object]) -> None:
        """Apply runtime switch changes; a new `seed` restarts the random sequence."""
        self.switches = with_changes(self.switches, changes)
        register_secret(self.switches.token.get_secret_value())
        if "seed" in changes:
            self.rng.seed(self.switches.seed)


STATE = web.AppKey("state", FakeState)


async def _stop(request: web.Request) -> web.Response:
    state = request.app[STATE]
    at = time.time()
    arrived = time.monotonic()
    state.recorder.started(arrived)
    try:
        body: bytes | None = await request.read()
    except web.HTTPRequestEntityTooLarge:
        body = None
    reply = respond(
        StopRequest(request.headers.get(hdrs.AUTHORIZATION), request.content_type, body),
        state.switches,
        state.rng,
        state.stopped,
    )
    state.recorder.add(request.headers.get("X-Request-Id"), reply.sent, reply.status, at)
    if reply.delay_s > 0:
        # Latency is what a client sees of an API: from the request's arrival (when its
        # handler starts) to the answer, the simulator's own work (~20 ms for 10,000
        # uuids) included.
        await asyncio.sleep(max(0.0, reply.delay_s - (time.monotonic() - arrived)))
    return web.Response(
        status=reply.status,
        body=reply.body or None,
        content_type=reply.content_type,
        headers=reply.headers,
    )


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=JSON)


async def _received(request: web.Request) -> web.Response:
    return web.Response(body=request.app[STATE].recorder.received_json(), content_type=JSON)


async def _reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.recorder.reset()
    state.stopped.clear()
    return _json({"reset": True})


async def _stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json({**state.recorder.stats(), "stopped_uuids": len(state.stopped)})


async def _get_config(request: web.Request) -> web.Response:
    return _json(public_view(request.app[STATE].switches))


async def _set_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        changes = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _json({"message": "body is not valid JSON"}, 400)
    if not isinstance(changes, dict):
        return _json({"message": "body must be a JSON object of switches"}, 400)
    try:
        state.change(changes)
    except SwitchError as exc:
        return _json({"message": str(exc)}, 400)
    return _json(public_view(state.switches))


def build_app(state: FakeState, path: str) -> web.Application:
    """The aiohttp application: `POST path` plus the admin API under `/_fake/`."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    app.router.add_post(path, _stop)
    app.router.add_get(f"{ADMIN_PREFIX}/received", _received)
    app.router.add_post(f"{ADMIN_PREFIX}/reset", _reset)
    app.router.add_get(f"{ADMIN_PREFIX}/stats", _stats)
    app.router.add_get(f"{ADMIN_PREFIX}/config", _get_config)
    app.router.add_post(f"{ADMIN_PREFIX}/config", _set_config)
    return app


@dataclass(frozen=True, slots=True)
class Listen:
    """Where to listen and what to record."""

    host: str
    port: int
    path: str
    record_file: Path | None
    # Serve HTTPS with this context (None: plain HTTP).
    tls: ssl.SSLContext | None = None


async def serve(listen: Listen, switches: Switches) -> None:
    """Serve until SIGTERM or SIGINT; print one JSON line with the URLs once listening."""
    register_secret(switches.token.get_secret_value())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    recorder = Recorder(listen.record_file)
    # No access log: one line per request would cost more CPU than answering it.
    runner = web.AppRunner(build_app(FakeState(switches, recorder), listen.path), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, listen.host, listen.port, ssl_context=listen.tls)
        await site.start()
        base = _base_url(runner.addresses[0], "https" if listen.tls else "http")
        line = {
            "event": "fake_api_listening",
            "url": f"{base}{listen.path}",
            "admin": f"{base}{ADMIN_PREFIX}",
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()
        await stopping.wait()
    finally:
        await runner.cleanup()
        recorder.close()


def _base_url(address: object, scheme: str) -> str:
    # IPv4 sockets give (host, port), IPv6 ones (host, port, flowinfo, scope_id).
    assert isinstance(address, tuple)
    host, port = str(address[0]), int(address[1])
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def tls_context(certfile: Path, keyfile: Path | None, client_cafile: Path | None) -> ssl.SSLContext:
    """A server TLS context; with `client_cafile`, clients must present a certificate it
    signed (an mTLS gateway). Raises OSError or ssl.SSLError for unusable files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    if client_cafile is not None:
        context.load_verify_locations(cafile=client_cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    return context

"""The operations HTTP server: `/livez`, `/readyz`, `/metrics`.

Never: fail `/livez` for an outside outage (Kafka, the API): a restart would not help.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from streamstop.config import ConfigError
from streamstop.metrics import Metrics


class HealthServer:
    """Serves probes and metrics on `observability.http_port` (0 picks a free port)."""

    def __init__(
        self,
        port: int,
        metrics: Metrics,
        live: Callable[[], str | None],
        ready: Callable[[], str | None],
    ) -> None:
        self._port = port
        self._metrics = metrics
        self._live = live
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        """Bind and serve."""
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host="0.0.0.0", port=self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            problem = f"observability.http_port: cannot listen on port {self._port}"
            raise ConfigError([f"{problem}: {exc.strerror or type(exc).__name__}"]) from None
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _livez(self, _: web.Request) -> web.Response:
        return _probe(self._live())

    async def _readyz(self, _: web.Request) -> web.Response:
        problem = self._ready()
        self._metrics.ready.set(0 if problem else 1)
        return _probe(problem)

    async def _metrics_page(self, _: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.render())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response


def _probe(problem: str | None) -> web.Response:
    if problem is None:
        return web.json_response({"ok": True})
    return web.json_response({"ok": False, "reason": problem}, status=503)

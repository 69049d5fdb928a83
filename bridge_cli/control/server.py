"""The control API: JSON over HTTP on loopback, bearer-token protected, versioned paths."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from aiohttp import web

from bridge_cli.config.model import Listen
from bridge_cli.control.reports import status_report

if TYPE_CHECKING:
    from bridge_cli.proxy.runtime import Bridge

API = "/api/v1"


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status,
                             headers={"x-bridge-error": kind})


class ControlServer:
    """aiohttp app on bridge's loop; every route needs `Authorization: Bearer <token>`."""

    def __init__(self, bridge: Bridge, token: str) -> None:
        self.bridge = bridge
        self.token = token
        self.url: str | None = None
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _error(401, "unauthorized",
                          "missing or wrong bearer token; the CLI reads it from $BRIDGE_HOME/control.json")
        return await handler(request)

    async def start(self, listen: Listen) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get(f"{API}/status", self._status)
        app.router.add_post(f"{API}/reload", self._reload)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, listen.host, listen.port)
        await site.start()
        host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(status_report(self.bridge))

    async def _reload(self, request: web.Request) -> web.Response:
        result = await self.bridge.reload()
        return web.json_response(result.to_dict(), status=200 if result.applied else 422)

"""The control API: JSON over HTTP on loopback, bearer-token protected, versioned paths."""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import web

from bridge_cli.config.loader import parse_fault
from bridge_cli.config.model import Listen
from bridge_cli.control.cache_report import cache_clear, cache_stats
from bridge_cli.control.reports import faults_report, status_report
from bridge_cli.control.spend_report import spend_report
from bridge_cli.control.view import BridgeView
from bridge_cli.errors import StartupError, UsageError

API = "/api/v1"


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status,
                             headers={"x-bridge-error": kind})


class ControlServer:
    """aiohttp app on bridge's loop; every route needs `Authorization: Bearer <token>`."""

    def __init__(self, view: BridgeView, token: str) -> None:
        self.view = view
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
        app.router.add_get(f"{API}/spend", self._spend)
        app.router.add_get(f"{API}/cache", self._cache)
        app.router.add_delete(f"{API}/cache", self._cache_clear)
        app.router.add_get(f"{API}/faults", self._faults)
        app.router.add_post(f"{API}/faults", self._add_fault)
        app.router.add_delete(f"{API}/faults", self._clear_faults)
        app.router.add_delete(f"{API}/faults/{{name}}", self._remove_fault)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, listen.host, listen.port)
        try:
            await site.start()
        except OSError as e:  # port 0 never collides; an explicit port may be taken meanwhile
            raise StartupError(f"control.listen: {listen} cannot be bound ({e.strerror}); "
                               "change control.listen (or pass --control-listen)") from None
        host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(status_report(self.view))

    async def _reload(self, request: web.Request) -> web.Response:
        result = await self.view.reload()
        return web.json_response(result, status=200 if result["applied"] else 422)

    # --- spend -----------------------------------------------------------------------
    async def _spend(self, request: web.Request) -> web.Response:
        q = request.query
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(None, lambda: spend_report(
                self.view.store, self.view.config, since=q.get("since"),
                by=q.get("by", "route")))
        except UsageError as e:
            return _error(400, "bad_request", str(e))
        return web.json_response(data)

    # --- cache -----------------------------------------------------------------------
    async def _cache(self, request: web.Request) -> web.Response:
        live = {r.name: dict(self.view.route_stats(r.name).cache) for r in self.view.config.routes}
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, cache_stats, self.view.responses, live)
        return web.json_response(data)

    async def _cache_clear(self, request: web.Request) -> web.Response:
        q = request.query
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(None, lambda: cache_clear(
                self.view.responses, namespace=q.get("namespace"), route=q.get("route"),
                cassette=q.get("cassette")))
        except UsageError as e:
            return _error(400, "bad_request", str(e))
        return web.json_response(data)

    # --- faults ----------------------------------------------------------------------
    async def _faults(self, request: web.Request) -> web.Response:
        return web.json_response(faults_report(self.view))

    async def _add_fault(self, request: web.Request) -> web.Response:
        try:
            raw = await request.json()
        except ValueError:
            return _error(400, "bad_request", "the body must be a JSON object of fault keys")
        if isinstance(raw, dict) and not raw.get("name"):
            raw = {**raw, "name": _fresh_name(raw, {f["name"] for f in self.view.faults()})}
        try:
            fault = parse_fault(raw, self.view.config)
        except UsageError as e:
            return _error(400, "bad_request", str(e))
        snapshot = self.view.add_fault(fault)
        return web.json_response({"fault": snapshot, "seed": self.view.seed}, status=201)

    async def _remove_fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not self.view.remove_fault(name):
            known = ", ".join(f["name"] for f in self.view.faults()) or "none"
            return _error(404, "not_found", f"no active fault is named '{name}' (active: {known})")
        return web.json_response({"removed": [name]})

    async def _clear_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"removed": self.view.clear_faults()})


def _fresh_name(raw: dict, taken) -> str:
    """A readable unique name for a fault injected without one: route-action-N."""
    action = next((str(raw[k]) if k in ("status", "preset") else k for k in
                   ("preset", "status", "latency", "reset", "hang", "throttle", "truncate",
                    "corrupt", "sse_cut_after", "sse_delay", "slow_first_byte") if k in raw),
                  "fault")
    base = f"{raw.get('route', 'all')}-{action}".replace("*", "all").replace("_", "-").lower()
    n = 1
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"

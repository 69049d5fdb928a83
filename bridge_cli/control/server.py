"""The control API: JSON over HTTP on loopback, bearer-token protected, versioned paths.

Only bridge's CLI (and curl) is meant to call it, so a browser is kept out twice over: a
`Host` that is not the listener's own address is refused (a DNS-rebinding page sends its
own name), and so is any `Origin` but the API's own (a cross-site request). Every answer,
refusals included, is JSON; bridge's error shape is `{"error": {"type", "message"}}`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os

from aiohttp import web

from bridge_cli.config.loader import parse_fault
from bridge_cli.config.model import Listen
from bridge_cli.control.cache_report import cache_clear, cache_stats
from bridge_cli.control.drift_report import drift_report
from bridge_cli.control.events import EventHub, live_counts, parse_last_id
from bridge_cli.control.reports import faults_report, status_report
from bridge_cli.control.spend_report import spend_report
from bridge_cli.control.view import BridgeView
from bridge_cli.errors import StartupError, StoreError, UsageError

log = logging.getLogger("bridge.control")

API = "/api/v1"
MAX_BODY = 64 * 1024  # bytes: a fault is a few hundred, and nothing else takes a body
MAX_DEPTH = 32  # levels of JSON nesting a body may have: a fault needs 3
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_BAD_BODY = "the body must be a JSON object of fault keys"


def _error(status: int, kind: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status,
                             headers={"x-bridge-error": kind, **(headers or {})})


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ControlServer:
    """aiohttp app on bridge's loop; every route needs the listener's own `Host`, no foreign
    `Origin` and `Authorization: Bearer <token>`."""

    def __init__(self, view: BridgeView, token: str) -> None:
        self.view = view
        self.token = token
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._hosts: frozenset[str] = frozenset()  # "host:port" values a request may name
        self.hub = EventHub(lambda: live_counts(self.view))
        self._unsubscribe = None

    def _own_host(self, value: str) -> bool:
        """Whether a Host header (or an origin's host part) names this listener."""
        return value.strip().lower() in self._hosts

    def _own_origin(self, origin: str) -> bool:
        scheme, sep, rest = origin.partition("://")
        return sep != "" and scheme.lower() == "http" and self._own_host(rest)

    def _authorized(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        expected = self.token.encode()
        # compared in constant time whatever the scheme, so the time says nothing
        same = hmac.compare_digest(given.strip(" ").encode("utf-8", "replace"), expected)
        return same and scheme.isascii() and scheme.lower() == "bearer"

    def _refusal(self, request: web.Request) -> web.Response | None:
        """The answer to a request from someone other than bridge's CLI, or None."""
        for host in request.headers.getall("Host", []):
            if not self._own_host(host):
                return _error(403, "forbidden_host",
                              f"Host {host!r} is not this control API's address ({self.url}); "
                              "call it by that URL")
        for origin in request.headers.getall("Origin", []):
            if not self._own_origin(origin):
                return _error(403, "forbidden_origin",
                              f"Origin {origin!r} may not call the control API; only bridge's "
                              "CLI and tools without an Origin (curl) may")
        if not self._authorized(request.headers.get("Authorization", "")):
            return _error(401, "unauthorized",
                          "missing or wrong bearer token; the CLI reads it from $BRIDGE_HOME/control.json")
        return None

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return _http_error(request, e)
        except UsageError as e:
            return _error(400, "bad_request", str(e))
        except StoreError as e:
            return _error(503, "store_unavailable", str(e))
        except Exception:  # a bug: logged with its traceback, the caller gets JSON
            log.exception("control API: %s %s failed", request.method, request.path)
            return _error(500, "bridge_internal",
                          "the control API failed on this request; bridge's log has the details")

    async def start(self, listen: Listen) -> None:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        app.router.add_get(f"{API}/status", self._status)
        app.router.add_post(f"{API}/reload", self._reload)
        app.router.add_get(f"{API}/spend", self._spend)
        app.router.add_get(f"{API}/cache", self._cache)
        app.router.add_delete(f"{API}/cache", self._cache_clear)
        app.router.add_get(f"{API}/drift", self._drift)
        app.router.add_get(f"{API}/faults", self._faults)
        app.router.add_post(f"{API}/faults", self._add_fault)
        app.router.add_delete(f"{API}/faults", self._clear_faults)
        app.router.add_delete(f"{API}/faults/{{name}}", self._remove_fault)
        app.router.add_get(f"{API}/events", self._events)
        app.router.add_get(f"{API}/flows/{{id}}", self._flow)
        self._unsubscribe = self.view.subscribe(self.hub.publish)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, listen.host, listen.port)
        try:
            await site.start()
        except OSError as e:  # port 0 never collides; an explicit port may be taken meanwhile
            raise StartupError(f"control.listen: {listen} cannot be bound ({e.strerror}); "
                               "change control.listen (or pass --control-listen)") from None
        host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
        self.url = f"http://{_bracket(host)}:{port}"
        names = {*_LOOPBACK, _bracket(host), _bracket(listen.host)}
        ports = (f":{port}", "") if port == 80 else (f":{port}",)  # clients leave out :80
        self._hosts = frozenset(n.lower() + p for n in names for p in ports)

    async def stop(self) -> None:
        self.hub.close()  # event streams never end by themselves
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(status_report(self.view))

    async def _reload(self, request: web.Request) -> web.Response:
        result = await self.view.reload()
        return web.json_response(result, status=200 if result["applied"] else 422)

    # --- events and flows --------------------------------------------------------------
    async def _events(self, request: web.Request) -> web.StreamResponse:
        last = parse_last_id(request.headers.get("Last-Event-ID",
                                                 request.query.get("last_event_id")))
        view = self.view
        hello = {"pid": os.getpid(), "started_at": view.started_at, "seed": view.seed,
                 "control": view.control_url}
        return await self.hub.stream(request, last, hello)

    async def _flow(self, request: web.Request) -> web.Response:
        flow_id = request.match_info["id"]
        detail = self.view.flow_detail(flow_id)
        if detail is None:
            return _error(404, "not_found", f"flow {flow_id[:80]!r} is not kept (any more): "
                          "bridge keeps the last flows only; the flow log has every summary")
        return web.json_response(detail)

    # --- spend -----------------------------------------------------------------------
    async def _spend(self, request: web.Request) -> web.Response:
        q = request.query
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, lambda: spend_report(
            self.view.store, self.view.config, since=q.get("since"), by=q.get("by", "route")))
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
        data = await loop.run_in_executor(None, lambda: cache_clear(
            self.view.responses, namespace=q.get("namespace"), route=q.get("route"),
            cassette=q.get("cassette")))
        return web.json_response(data)

    # --- drift -----------------------------------------------------------------------
    async def _drift(self, request: web.Request) -> web.Response:
        route = request.query.get("route")
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, drift_report, self.view.store, route)
        names = [r.name for r in self.view.config.routes]
        if route is not None and route not in names and route not in data["routes"]:
            raise UsageError(f"no route is named {route!r} (routes: {', '.join(names)}); "
                             "leave out ?route= for every route")
        return web.json_response(data)

    # --- faults ----------------------------------------------------------------------
    async def _faults(self, request: web.Request) -> web.Response:
        return web.json_response(faults_report(self.view))

    async def _add_fault(self, request: web.Request) -> web.Response:
        raw = await _json_body(request)
        if isinstance(raw, dict) and not raw.get("name"):
            raw = {**raw, "name": _fresh_name(raw, {f["name"] for f in self.view.faults()})}
        fault = parse_fault(raw, self.view.config)
        snapshot = self.view.add_fault(fault)
        return web.json_response({"fault": snapshot, "seed": self.view.seed}, status=201)

    async def _remove_fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not self.view.remove_fault(name):
            known = ", ".join(f["name"] for f in self.view.faults()) or "none"
            return _error(404, "not_found", f"no active fault is named '{name}' (active: {known})")
        return web.json_response({"removed": [name], "breakers": self._unclosed_breakers()})

    async def _clear_faults(self, request: web.Request) -> web.Response:
        removed = self.view.clear_faults()
        return web.json_response({"removed": removed, "breakers": self._unclosed_breakers()})

    def _unclosed_breakers(self) -> list[dict]:
        """Breakers not closed: removing a fault does not close the breakers it opened, they
        recover on their own (`open_for`, then trial calls), so the answer says which."""
        return [{"route": route.name, "upstream": upstream, "state": b["state"],
                 "open_remaining_s": b["open_remaining_s"]}
                for route in self.view.config.routes
                for upstream, b in self.view.breakers(route.name).items()
                if b["state"] != "closed"]


async def _json_body(request: web.Request) -> object:
    """The request's JSON body (UTF-8, as RFC 8259 says), at most MAX_DEPTH levels deep;
    UsageError otherwise. Deep nesting is refused here so that nothing after recurses."""
    body = await request.read()  # HTTPRequestEntityTooLarge beyond MAX_BODY
    try:
        value = json.loads(body.decode("utf-8"))
    except RecursionError:
        raise UsageError(f"{_BAD_BODY}, nested at most {MAX_DEPTH} levels deep") from None
    except ValueError:
        raise UsageError(_BAD_BODY) from None
    if not _nests_within(value, MAX_DEPTH):
        raise UsageError(f"{_BAD_BODY}, nested at most {MAX_DEPTH} levels deep")
    return value


def _nests_within(value: object, limit: int) -> bool:
    """Whether JSON `value` has at most `limit` levels of arrays and objects (no recursion)."""
    todo = [(value, 1)]
    while todo:
        v, depth = todo.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is None:
            continue
        if depth > limit:
            return False
        todo.extend((c, depth + 1) for c in children)
    return True


def _http_error(request: web.Request, e: web.HTTPException) -> web.Response:
    """aiohttp's own refusal (no such path, wrong method, body too large) as bridge's JSON."""
    path = request.path[:200]
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        return _error(405, "method_not_allowed", f"{request.method} is not allowed on {path}; "
                      f"use {allowed}", headers={"Allow": allowed})
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        return _error(413, "body_too_large", f"the body is larger than {MAX_BODY // 1024} KiB, "
                      "the control API's limit")
    if e.status == 404:
        return _error(404, "not_found", f"the control API has no {path}; its paths are "
                      f"under {API} (docs/control-api.md)")
    return _error(e.status, "bad_request" if e.status < 500 else "bridge_internal", e.reason)


def _fresh_name(raw: dict, taken) -> str:
    """A readable unique name for a fault injected without one: route-action-N, where a
    preset that starts with the route's name says it once (openai-429-1, not
    openai-openai-429-1)."""
    action = next((str(raw[k]) if k in ("status", "preset") else k for k in
                   ("preset", "status", "latency", "reset", "hang", "throttle", "truncate",
                    "corrupt", "sse_cut_after", "sse_delay", "slow_first_byte") if k in raw),
                  "fault")
    route = str(raw.get("route", "all")).replace("*", "all")
    base = action if action.startswith(f"{route}-") else f"{route}-{action}"
    base = base.replace("_", "-").lower()
    n = 1
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"

"""Import a toxiproxy config (toxiproxy.json): proxies become routes, toxics chaos faults.

Read: the `-config` file's list of proxies (name, listen, upstream, enabled), or the
mapping of name to proxy that `GET /proxies` answers, each proxy's `toxics` (name, type,
stream, toxicity, attributes). toxiproxy moves TCP bytes, bridge HTTP requests: an
upstream `host:port` is taken as `http://host:port` (https on port 443).
"""

from __future__ import annotations

import re
from typing import Any

from bridge_cli.config.migrate.chain import Note, Upgraded
from bridge_cli.config.migrate.common import millis, plain, to_name
from bridge_cli.errors import ConfigError

_WILDCARD = re.compile(r"^(0\.0\.0\.0|\[::\]|::|)$")
PROXY_KEYS = ("name", "listen", "upstream", "enabled", "toxics")


def import_toxiproxy(doc: Any) -> Upgraded:
    """The version 2 document of a toxiproxy config, with a note for every change and for
    every toxic that has no equivalent among bridge's faults."""
    doc = plain(doc)
    if isinstance(doc, dict) and all(isinstance(v, dict) for v in doc.values()) and doc:
        doc = [{"name": k} | v for k, v in doc.items()]  # GET /proxies: name -> proxy
    if not isinstance(doc, list) or not all(isinstance(p, dict) for p in doc):
        raise ConfigError("not a toxiproxy config: expected a JSON list of proxies "
                          "({name, listen, upstream}), as toxiproxy-server -config reads")
    notes: list[Note] = []
    routes: list[dict] = []
    faults: list[dict] = []
    for i, proxy in enumerate(doc):
        route = _route(i, proxy, notes, {r["name"] for r in routes})
        if route is None:
            continue
        routes.append(route)
        for j, toxic in enumerate(proxy.get("toxics") or []):
            fault = _fault(route["name"], f"[{i}].toxics[{j}]", toxic, notes,
                           {f["name"] for f in faults})
            if fault is not None:
                faults.append(fault)
    out: dict[str, Any] = {"version": 2, "routes": routes}
    if faults:
        out["chaos"] = {"faults": faults}
    return Upgraded(out, 0, notes)


def _route(i: int, proxy: dict, notes: list[Note], taken: set[str]) -> dict | None:
    where = f"[{i}]"
    if not proxy.get("name") or not proxy.get("listen") or not proxy.get("upstream"):
        raise ConfigError(f"proxy {where}: a toxiproxy proxy needs name, listen and upstream")
    name = to_name(proxy["name"])
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    if proxy.get("enabled") is False:
        notes.append(Note("dropped", f"proxy '{proxy['name']}' is disabled (toxiproxy's "
                          "`down`): no route made", where))
        return None
    listen = str(proxy["listen"])
    host, _, port = listen.rpartition(":")
    if _WILDCARD.match(host):
        notes.append(Note("moved", f"listen {listen} became 127.0.0.1:{port}: bridge listens "
                          "on loopback unless a host is given (write 0.0.0.0:PORT for every "
                          "interface)", f"{where}.listen", f"routes[{name}].listen"))
        listen = f"127.0.0.1:{port}"
    upstream = str(proxy["upstream"])
    url = upstream if "://" in upstream else (
        f"{'https' if upstream.endswith(':443') else 'http'}://{upstream}")
    notes.append(Note("moved", f"proxy '{proxy['name']}' became route '{name}' on {listen}, "
                      f"upstream {url} (bridge forwards HTTP; a database or other TCP "
                      "service can't go through it)", where, f"routes[{name}]"))
    for key in proxy:
        if key not in PROXY_KEYS:
            notes.append(Note("dropped", f"proxy key '{key}' has no equivalent in bridge",
                              f"{where}.{key}"))
    return {"name": name, "listen": listen, "upstreams": [{"name": "upstream", "url": url}]}


def _fault(route: str, where: str, toxic: Any, notes: list[Note],
           taken: set[str]) -> dict | None:
    if not isinstance(toxic, dict) or "type" not in toxic:
        notes.append(Note("dropped", "a toxic without a type", where))
        return None
    kind, stream = str(toxic["type"]), str(toxic.get("stream", "downstream"))
    attributes = toxic.get("attributes") or {}
    name = to_name(f"{route}-{toxic.get('name') or f'{kind}_{stream}'}")
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    label = f"toxic '{toxic.get('name') or kind}' of route '{route}'"
    actions, why = _actions(kind, stream, attributes)
    if actions is None:
        notes.append(Note("unsupported", f"{label}: {why}", where))
        return None
    fault: dict[str, Any] = {"name": name, "route": route}
    toxicity = toxic.get("toxicity", 1.0)
    if isinstance(toxicity, int | float) and not isinstance(toxicity, bool) and toxicity < 1:
        fault["probability"] = f"{round(max(toxicity, 0) * 100, 2):g}%"
    fault.update(actions)
    notes.append(Note("moved", f"{label} ({kind}) became chaos fault '{name}'"
                      + (f": {why}" if why else ""), where, f"chaos.faults[{name}]"))
    return fault


def _actions(kind: str, stream: str, attrs: dict) -> tuple[dict | None, str]:
    """bridge fault keys for a toxic, and a word on what differs (or why there are none)."""
    if kind == "latency":
        out = {"latency": millis(attrs.get("latency", 0)) or "0ms"}
        if attrs.get("jitter"):
            out["jitter"] = millis(attrs["jitter"])
        return out, "" if stream == "downstream" else "bridge delays the whole try"
    if kind == "bandwidth" and stream == "downstream":
        rate = attrs.get("rate")
        if isinstance(rate, int | float) and rate > 0:
            return {"throttle": f"{rate:g}KB/s"}, ""
        return None, "rate 0 stops every byte; bridge's throttle needs a rate above 0"
    if kind == "timeout":
        wait = attrs.get("timeout", 0)
        return ({"hang": millis(wait)} if wait else {"hang": True}), (
            "the try hangs, bounded by the route's timeout")
    if kind == "reset_peer":
        wait = attrs.get("timeout", 0)
        out = {"latency": millis(wait), "reset": True} if wait else {"reset": True}
        return out, "the request is reset before it reaches the upstream"
    if kind == "limit_data" and stream == "downstream":
        size = attrs.get("bytes")
        if isinstance(size, int) and size > 0:
            return {"truncate": size}, "bridge cuts the response body, not the headers"
        return None, "bytes must be a number above 0"
    reasons = {
        "bandwidth": "bridge throttles only the answer, not the request (upstream stream)",
        "limit_data": "bridge cuts only the answer, not the request (upstream stream)",
        "slow_close": "bridge has no fault that delays closing the connection",
        "slicer": "bridge has no fault that slices TCP packets",
    }
    return None, reasons.get(kind, f"unknown toxic type '{kind}'")

"""Version 1 to 2: ApiBridge's connectors.yaml becomes bridge routes.

Version 1 (docs/migrate.md has an example): no top-level `version`, `connectors:` mapping
a name to `{providers: [...]}`, each provider with name, base_url, api_key, timeout and
cache_ttl (seconds), retries (tries after the first), cost_per_call_usd and weight.
A connector becomes a route with a listener of its own, its providers the route's
upstreams; the settings ApiBridge kept per provider are per route in bridge.
"""

from __future__ import annotations

from typing import Any

from bridge_cli.config.migrate.chain import Note, migration
from bridge_cli.config.migrate.common import (
    env_name,
    env_ref,
    key_header,
    plain,
    port_picker,
    seconds,
    to_name,
)
from bridge_cli.config.units import parse_duration
from bridge_cli.errors import ConfigError

PROVIDER_KEYS = ("name", "base_url", "api_key", "timeout", "retries", "cache_ttl",
                 "cost_per_call_usd", "weight")


@migration(1)
def connectors_to_routes(doc: dict, notes: list[Note]) -> dict:
    """The version 2 document of an ApiBridge connectors.yaml."""
    doc = plain(doc)
    connectors = doc.get("connectors")
    if connectors is None:
        connectors = {}
    if not isinstance(connectors, dict):
        raise ConfigError("connectors: expected a mapping of connector names to "
                          "{providers: [...]} (ApiBridge's connectors.yaml)")
    for key, value in doc.items():
        if key == "_metadata":
            release = value.get("version") if isinstance(value, dict) else None
            notes.append(Note("dropped", "ApiBridge's own metadata"
                              + (f" (its release {release})" if release else "")
                              + ": bridge configs carry `version: 2` instead", key))
        elif key not in ("connectors", "version"):
            notes.append(Note("dropped", f"top-level key '{key}' has no place in a bridge "
                              "config", key))
    pick = port_picker()
    routes: list[dict] = []
    for cname, connector in connectors.items():
        name = _unique(to_name(cname), {r["name"] for r in routes})
        route = _route(str(cname), name, connector, notes, pick)
        if route is not None:
            routes.append(route)
    return {"version": 2, "routes": routes}


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _route(cname: str, name: str, connector: Any, notes: list[Note], pick) -> dict | None:
    where = f"connectors.{cname}"
    providers = connector.get("providers") if isinstance(connector, dict) else None
    if not isinstance(providers, list) or not providers:
        notes.append(Note("dropped", f"connector '{cname}' has no providers, so there is "
                          "nowhere to send its requests: no route made", where))
        return None
    own: list[Note] = []  # this connector's notes, after the one saying where it went
    for key in connector:
        if key != "providers":
            own.append(Note("dropped", f"connector key '{key}' is ApiBridge's own; bridge "
                            "has no such setting", f"{where}.{key}"))
    upstreams: list[dict] = []
    for i, provider in enumerate(providers):
        upstream = _upstream(cname, name, i, provider, own, {u["name"] for u in upstreams})
        if upstream is not None:
            upstreams.append(upstream)
    if not upstreams:
        notes.extend(own)
        notes.append(Note("dropped", f"connector '{cname}' has no usable provider: no route "
                          "made", where))
        return None
    route: dict[str, Any] = {"name": name, "listen": pick()}
    notes.append(Note("moved", f"connector '{cname}' became route '{name}', listening on "
                      f"{route['listen']} (point the app at http://{route['listen']})",
                      where, f"routes[{name}]"))
    if any("weight" in u for u in upstreams):
        route["strategy"] = "weighted"
        own.append(Note("moved", f"provider weights became upstream weights, with "
                        f"strategy: weighted on route '{name}'", f"{where}.providers[].weight",
                        f"routes[{name}].strategy"))
    route["upstreams"] = upstreams
    usable = [p for p in providers if isinstance(p, dict) and p.get("base_url")]
    route.update(_route_settings(cname, name, usable, own))
    notes.extend(own)
    return route


def _upstream(cname: str, rname: str, index: int, provider: Any, notes: list[Note],
              taken: set[str]) -> dict | None:
    where = f"connectors.{cname}.providers[{index}]"
    if not isinstance(provider, dict) or not provider.get("base_url"):
        notes.append(Note("dropped", f"provider {index + 1} of connector '{cname}' has no "
                          "base_url", where))
        return None
    pname = _unique(to_name(provider.get("name", f"provider-{index + 1}")), taken)
    upstream: dict[str, Any] = {"name": pname, "url": str(provider["base_url"]).rstrip("/")}
    if "weight" in provider:
        upstream["weight"] = provider["weight"]
    key = provider.get("api_key")
    if key not in (None, ""):
        variable = env_ref(key) or env_name(cname, pname, "API_KEY")
        upstream["headers"] = key_header(upstream["url"], variable)
        header = next(iter(upstream["headers"]))
        how = (f"read from ${variable} as before" if env_ref(key)
               else f"moved out of the file: export {variable}=<the key>")
        notes.append(Note("env", f"api_key of {rname}/{pname} {how}; it is sent as the "
                          f"{header} header", f"{where}.api_key",
                          f"routes[{rname}].upstreams[{pname}].headers.{header}"))
    for extra in provider:
        if extra not in PROVIDER_KEYS:
            notes.append(Note("dropped", f"provider key '{extra}' is ApiBridge's own; bridge "
                              "has no such setting", f"{where}.{extra}"))
    return upstream


def _route_settings(cname: str, rname: str, providers: list[dict],
                    notes: list[Note]) -> dict[str, Any]:
    """timeout, retry, cache and spend of the route, from what its providers said."""
    out: dict[str, Any] = {}
    where = f"connectors.{cname}.providers[]"

    def take(key: str, convert, choose, which: str, becomes: str, after: str = "") -> Any:
        value, differ = _pick(providers, key, convert, choose, notes, where, which)
        if value is not None:
            notes.append(Note("moved", f"{key} became {becomes}: {value} on route "
                              f"'{rname}'{differ}{after}", f"{where}.{key}",
                              f"routes[{rname}].{becomes.split('.')[0]}"))
        return value

    if (timeout := take("timeout", seconds, max, "the longest", "timeout",
                        "; ApiBridge's numbers are seconds")) is not None:
        out["timeout"] = timeout
    if retries := _pick(providers, "retries", _count, max, notes, where, "the most")[0]:
        out["retry"] = {"attempts": retries + 1}
        notes.append(Note("moved", f"retries: {retries} became retry.attempts: {retries + 1} "
                          f"on route '{rname}' (the first try counts); add `methods: [POST]` "
                          "to retry POST calls that reached the provider", f"{where}.retries",
                          f"routes[{rname}].retry"))
    if (ttl := take("cache_ttl", _positive_seconds, min, "the shortest", "cache.ttl",
                    " (bridge caches GET and HEAD answers; add `methods: [GET, POST]` to "
                    "cache LLM calls)")) is not None:
        out["cache"] = {"ttl": ttl}
    if (cost := take("cost_per_call_usd", _money, max, "the dearest",
                     "spend.per_request_usd")) is not None:
        out["spend"] = {"per_request_usd": cost}
    return out


def _pick(providers: list[dict], key: str, convert, choose, notes: list[Note], where: str,
          which: str) -> tuple[Any, str]:
    """The route's value of a per-provider `key`, `choose` (max or min) of the values the
    providers give, and a few words when they differ; bad values are dropped with a note."""
    values = []
    for i, provider in enumerate(providers):
        if key not in provider:
            continue
        value = convert(provider[key])
        if value is None:
            if provider[key] not in (0, "0", None) or key != "cache_ttl":
                notes.append(Note("dropped", f"{key}: {provider[key]!r} is not a value bridge "
                                  "can read", f"{where.removesuffix('[]')}[{i}].{key}"))
            continue
        values.append(value)
    if not values:
        return None, ""
    chosen = choose(values, key=_order)
    if len({_order(v) for v in values}) == 1:
        return chosen, ""
    given = ", ".join(str(v) for v in dict.fromkeys(values))
    return chosen, f" (its providers set {given}: the route takes {which})"


def _order(value: Any) -> float:
    return parse_duration(value) if isinstance(value, str) else float(value)


def _count(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else None


def _positive_seconds(value: Any) -> str | None:
    text = seconds(value)
    return text if text is not None and parse_duration(text) > 0 else None


def _money(value: Any) -> float | int | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return value if ok else None

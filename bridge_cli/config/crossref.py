"""Checks between keys that a schema can't express: unique names, listeners that share a
port, faults that name a route or upstream that isn't there.

Each check returns its problems as (path, message) pairs, path as in the YAML, so that
build.py can report them all at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from bridge_cli.config.model import Config, Listen

ConfigPath = tuple[str | int, ...]
Problem = tuple[ConfigPath, str]

_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


def format_path(path: Sequence[str | int]) -> str:
    """("routes", 0, "retry") -> "routes[0].retry"."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def did_you_mean(word: str, choices: Any) -> str:
    """" (did you mean 'x'?)" for the closest of `choices`, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def route_name_problems(routes: list[dict]) -> list[Problem]:
    """Route names are unique."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, route in enumerate(routes):
        name = route["name"]
        if name in seen:
            problems.append((
                ("routes", i, "name"),
                f"route name '{name}' is already used by "
                f"routes[{seen[name]}]: route names must be unique",
            ))
        seen.setdefault(name, i)
    return problems


def listen_problems(config: Config, raw: dict) -> list[Problem]:
    """Two listeners can't share a port (port 0 picks a free one each time)."""
    control_path: ConfigPath = (
        ("control", "listen") if "listen" in raw.get("control", {}) else ("control",)
    )
    listens: list[tuple[ConfigPath, Listen]] = [(control_path, config.control.listen)]
    if config.proxy is not None:
        listens.append((("proxy", "listen"), config.proxy.listen))
    listens += [
        (("routes", i, "listen"), r.listen)
        for i, r in enumerate(config.routes)
        if r.listen is not None
    ]
    listens.sort(key=lambda item: _path_key(item[0]))  # report the later one
    problems: list[Problem] = []
    for j, (path, listen) in enumerate(listens):
        for other_path, other in listens[:j]:
            if listen.port and listen.port == other.port and _same_host(listen, other):
                owner = format_path(other_path)
                if other_path == ("control",):
                    owner = "the control API (its default address; set control.listen)"
                problems.append((path, f"{listen} is already used by {owner}"))
                break
    return problems


def fault_problems(config: Config) -> list[Problem]:
    """Fault names are unique, and a fault's route and upstream exist."""
    routes = {r.name: r for r in config.routes}
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, fault in enumerate(config.chaos.faults):
        path: ConfigPath = ("chaos", "faults", i)
        if fault.name in seen:
            problems.append((
                (*path, "name"),
                f"fault name '{fault.name}' is already used by "
                f"chaos.faults[{seen[fault.name]}]",
            ))
        seen.setdefault(fault.name, i)
        if fault.route != "*" and fault.route not in routes:
            problems.append((
                (*path, "route"),
                f"no route is named '{fault.route}'"
                + did_you_mean(fault.route, routes)
                + " (name a route, or * for every route)",
            ))
            continue
        if fault.upstream is None:
            continue
        scope = list(routes.values()) if fault.route == "*" else [routes[fault.route]]
        names = [u.name for r in scope for u in r.upstreams]
        if fault.upstream not in names:
            where = "no route has" if fault.route == "*" else (f"route '{fault.route}' has no")
            problems.append((
                (*path, "upstream"),
                f"{where} upstream named "
                f"'{fault.upstream}'"
                + did_you_mean(fault.upstream, names)
                + f" (upstreams: {', '.join(dict.fromkeys(names)) or 'none'})",
            ))
    return problems


def _same_host(a: Listen, b: Listen) -> bool:
    if a.host in _WILDCARD_HOSTS or b.host in _WILDCARD_HOSTS:
        return True
    loopback = {"localhost", "127.0.0.1"}
    return a.host == b.host or (a.host in loopback and b.host in loopback)


def _path_key(path: ConfigPath) -> tuple:
    order = {"control": 0, "proxy": 1, "routes": 2}
    return (order[str(path[0])], *(p if isinstance(p, int) else 0 for p in path[1:]))

"""Turn a schema-valid config dict into the frozen model, parsing every unit once.

The schema has already checked shapes and unit formats; what is left here are the checks a
schema can't express (unique names, references between keys, keys that exclude each other)
and the conversions. Problems are collected, not raised one by one, so the user sees all of
them at once; the loader turns their paths into line numbers.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bridge_cli.config import units
from bridge_cli.config.model import (
    Backoff,
    Breaker,
    Budget,
    Cache,
    Chaos,
    Config,
    Control,
    Drift,
    Fault,
    FaultMatch,
    Listen,
    Match,
    Proxy,
    Retry,
    Route,
    SlowCall,
    Spend,
    Timeout,
    Upstream,
)

ConfigPath = tuple[str | int, ...]

# The actions a fault can take; one with none of them would silently do nothing.
FAULT_ACTIONS = (
    "latency", "jitter", "status", "headers", "body", "preset", "reset", "hang",
    "throttle", "slow_first_byte", "truncate", "corrupt", "sse_cut_after", "sse_delay",
)  # fmt: skip
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


class InvalidConfig(Exception):
    """Problems found while building: each a (path, message) pair, path as in the YAML."""

    def __init__(self, problems: list[tuple[ConfigPath, str]]):
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def format_path(path: Sequence[str | int]) -> str:
    """("routes", 0, "retry") -> "routes[0].retry"."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


class _Builder:
    def __init__(self, base_dir: Path | None):
        self.base_dir = base_dir
        self.problems: list[tuple[ConfigPath, str]] = []

    def problem(self, path: ConfigPath, message: str) -> None:
        self.problems.append((path, message))

    def fields(self, raw: dict, path: ConfigPath, convert: dict[str, Callable]) -> dict:
        """Keyword arguments for a dataclass from the keys present in `raw`, each converted;
        absent keys keep the dataclass default. `for` becomes `for_`."""
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            try:
                converted = convert[key](value, (*path, key)) if key in convert else value
            except ValueError as exc:
                self.problem((*path, key), str(exc))
                continue
            kwargs["for_" if key == "for" else key] = converted
        return kwargs

    def file(self, value: str, path: ConfigPath) -> str:
        """A path relative to the config file's directory, made absolute."""
        if self.base_dir is None or Path(value).expanduser().is_absolute():
            return str(Path(value).expanduser())
        return str(self.base_dir / value)

    # ---- routes --------------------------------------------------------------------------

    def upstreams(self, items: list, path: ConfigPath) -> tuple[Upstream, ...]:
        built: list[Upstream] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            raw = {"url": item} if isinstance(item, str) else dict(item)
            raw.setdefault("name", f"upstream-{index + 1}")
            kwargs = self.fields(raw, (*path, index), {
                "url": lambda v, p: v.rstrip("/"),
                "weight": lambda v, p: float(v),
                "ca_file": self.file,
            })  # fmt: skip
            name = kwargs["name"]
            if name in seen:
                where = (
                    (*path, index, "name")
                    if isinstance(item, dict) and "name" in item
                    else (*path, index)
                )
                self.problem(
                    where,
                    f"upstream name '{name}' is already used by "
                    f"{format_path((*path, seen[name]))}: names must be unique "
                    "within a route",
                )
            seen.setdefault(name, index)
            built.append(Upstream(**kwargs))
        return tuple(built)

    def timeout(self, value: Any, path: ConfigPath) -> Timeout:
        if not isinstance(value, dict):
            total = units.parse_duration(value)
            # A bare duration bounds the whole try; the connect phase can't take longer.
            return Timeout(connect=min(Timeout.connect, total), total=total)
        return Timeout(
            **self.fields(
                value,
                path,
                {"connect": _unit(units.parse_duration), "total": _unit(units.parse_duration)},
            )
        )

    def backoff(self, raw: dict, path: ConfigPath) -> Backoff:
        kwargs = self.fields(
            raw, path, {"initial": _unit(units.parse_duration), "max": _unit(units.parse_duration)}
        )
        backoff = Backoff(**kwargs)
        if backoff.initial > backoff.max:
            self.problem(
                path,
                f"initial ({units.format_duration(backoff.initial)}) is longer "
                f"than max ({units.format_duration(backoff.max)})",
            )
        return backoff

    def retry(self, raw: dict, path: ConfigPath) -> Retry:
        return Retry(**self.fields(raw, path, {
            "on": lambda v, p: tuple(str(x) for x in v),
            "methods": _methods,
            "backoff": self.backoff,
            "budget": _unit(units.parse_percent),
            "budget_floor": lambda v, p: _per_second(units.parse_rate(v)),
        }))  # fmt: skip

    def breaker(self, raw: dict, path: ConfigPath) -> Breaker:
        breaker = Breaker(**self.fields(raw, path, {
            "failure_rate": _unit(units.parse_percent),
            "open_for": _unit(units.parse_duration),
            "failure_statuses": lambda v, p: _statuses(v),
            "slow_call": lambda v, p: SlowCall(
                units.parse_duration(v["duration"]), units.parse_percent(v["rate"])),
        }))  # fmt: skip
        if breaker.min_calls > breaker.window:
            self.problem(
                (*path, "min_calls"),
                f"min_calls ({breaker.min_calls}) is more than "
                f"window ({breaker.window}): the breaker could never open",
            )
        return breaker

    def cache(self, raw: dict, path: ConfigPath) -> Cache:
        return Cache(**self.fields(raw, path, {
            "ttl": _unit(units.parse_duration),
            "methods": _methods,
            "statuses": lambda v, p: tuple(v),
            "vary": lambda v, p: tuple(h.lower() for h in v),  # header names ignore case
            "ignore_query": lambda v, p: tuple(v),
            "ignore_body_fields": lambda v, p: tuple(v),
            "max_size": _unit(units.parse_size),
        }))  # fmt: skip

    def spend(self, raw: dict, path: ConfigPath) -> Spend:
        if ("provider" in raw) == ("per_request_usd" in raw):
            self.problem(
                path,
                "set `provider:` (priced from the usage in each response) or "
                "`per_request_usd:` (a flat price), one of the two",
            )
        return Spend(**self.fields(raw, path, {"per_request_usd": _per_request}))

    def budget(self, raw: dict, path: ConfigPath) -> Budget:
        if "period" in raw and "rolling" in raw:
            self.problem(
                path, "set `period:` (a calendar period) or `rolling:` (a sliding window), not both"
            )
        kwargs = self.fields(raw, path, {
            "limit_usd": _unit(units.usd_to_micros),
            "rolling": _unit(units.parse_duration),
            "alert_at": _unit(units.parse_percent),
        })  # fmt: skip
        if "rolling" in kwargs:
            kwargs["period"] = None
        return Budget(**kwargs)

    def route(self, raw: dict, path: ConfigPath) -> Route:
        kwargs = self.fields(raw, path, {
            "upstreams": self.upstreams,
            "listen": _unit(units.parse_listen),
            "match": lambda v, p: Match(**v),
            "timeout": self.timeout,
            "retry": self.retry,
            "breaker": self.breaker,
            "cache": self.cache,
            "rate_limit": _unit(units.parse_rate),
            "spend": self.spend,
            "budget": self.budget,
            "drift": lambda v, p: Drift(**self.fields(v, p, {"schema": self.file})),
        })  # fmt: skip
        name = raw["name"]
        if "listen" not in raw and "match" not in raw:
            self.problem(
                path,
                f"route '{name}' receives no traffic: add `listen: "
                "127.0.0.1:PORT` (a reverse listener for the app's base URL) "
                "or `match: {host: HOST}` (traffic through the explicit proxy)",
            )
        if "budget" in raw and "spend" not in raw:
            self.problem(
                (*path, "budget"),
                "a budget needs `spend:` to price the calls: add "
                "`spend: {provider: NAME}` or `spend: {per_request_usd: AMOUNT}`",
            )
        return Route(**kwargs)

    # ---- chaos ---------------------------------------------------------------------------

    def fault(self, raw: dict, path: ConfigPath) -> Fault:
        if not any(key in raw for key in FAULT_ACTIONS):
            self.problem(
                path,
                f"fault '{raw['name']}' does nothing: add one of "
                "status, preset, latency, reset, hang, throttle, truncate, ...",
            )
        return Fault(**self.fields(raw, path, {
            "match": lambda v, p: FaultMatch(**self.fields(v, p, {
                "method": lambda m, _: m.upper(), "header": lambda h, _: _header_values(h)})),
            "probability": _unit(units.parse_percent),
            "for": _unit(units.parse_duration),
            "latency": _unit(units.parse_duration),
            "jitter": _unit(units.parse_duration),
            "headers": lambda v, p: _header_values(v),
            "body": lambda v, p: v if isinstance(v, str) else json.dumps(v),
            "hang": lambda v, p: v if isinstance(v, bool) and v else (
                None if v is False else units.parse_duration(v)),
            "throttle": _unit(units.parse_bandwidth),
            "slow_first_byte": _unit(units.parse_duration),
            "truncate": lambda v, p: v if isinstance(v, int) else units.parse_percent(v),
            "sse_delay": _unit(units.parse_duration),
        }))  # fmt: skip

    def chaos(self, raw: dict, path: ConfigPath) -> Chaos:
        faults = tuple(
            self.fault(item, (*path, "faults", i)) for i, item in enumerate(raw.get("faults", ()))
        )
        kwargs = self.fields(raw, path, {"faults": lambda v, p: faults})
        return Chaos(**kwargs)

    # ---- cross-references ----------------------------------------------------------------

    def check_routes(self, routes: list[dict]) -> None:
        seen: dict[str, int] = {}
        for i, route in enumerate(routes):
            name = route["name"]
            if name in seen:
                self.problem(
                    ("routes", i, "name"),
                    f"route name '{name}' is already used by "
                    f"routes[{seen[name]}]: route names must be unique",
                )
            seen.setdefault(name, i)

    def check_listens(self, config: Config, raw: dict) -> None:
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
        for j, (path, listen) in enumerate(listens):
            for other_path, other in listens[:j]:
                if listen.port and listen.port == other.port and _same_host(listen, other):
                    owner = format_path(other_path)
                    if other_path == ("control",):
                        owner = "the control API (its default address; set control.listen)"
                    self.problem(path, f"{listen} is already used by {owner}")
                    break

    def check_faults(self, config: Config, raw: dict) -> None:
        routes = {r.name: r for r in config.routes}
        seen: dict[str, int] = {}
        for i, fault in enumerate(config.chaos.faults):
            path: ConfigPath = ("chaos", "faults", i)
            if fault.name in seen:
                self.problem(
                    (*path, "name"),
                    f"fault name '{fault.name}' is already used by "
                    f"chaos.faults[{seen[fault.name]}]",
                )
            seen.setdefault(fault.name, i)
            if fault.route != "*" and fault.route not in routes:
                self.problem(
                    (*path, "route"),
                    f"no route is named '{fault.route}'"
                    + _did_you_mean(fault.route, routes)
                    + " (name a route, or * for every route)",
                )
                continue
            if fault.upstream is None:
                continue
            scope = list(routes.values()) if fault.route == "*" else [routes[fault.route]]
            names = [u.name for r in scope for u in r.upstreams]
            if fault.upstream not in names:
                where = "no route has" if fault.route == "*" else (f"route '{fault.route}' has no")
                self.problem(
                    (*path, "upstream"),
                    f"{where} upstream named "
                    f"'{fault.upstream}'"
                    + _did_you_mean(fault.upstream, names)
                    + f" (upstreams: {', '.join(dict.fromkeys(names)) or 'none'})",
                )


def build_config(raw: dict, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """The frozen Config of a schema-valid dict; raises InvalidConfig with every problem.
    Relative file paths in it (ca_file, drift.schema) are taken from `base_dir`."""
    b = _Builder(base_dir)
    routes_raw = raw.get("routes", [])
    b.check_routes(routes_raw)
    routes = tuple(b.route(r, ("routes", i)) for i, r in enumerate(routes_raw))
    kwargs: dict[str, Any] = {
        "version": int(raw["version"]),
        "routes": routes,
        "pricing": tuple(raw.get("pricing", ())),
        "source": source,
    }
    if "proxy" in raw:
        proxy = b.fields(
            raw["proxy"], ("proxy",), {"listen": _unit(units.parse_listen), "ca_file": b.file}
        )
        proxy.setdefault("listen", Listen("127.0.0.1", 8080))  # only if its value was bad
        kwargs["proxy"] = Proxy(**proxy)
    if "listen" in raw.get("control", {}):
        listen = b.fields(raw["control"], ("control",), {"listen": _unit(units.parse_listen)})
        if "listen" in listen:
            kwargs["control"] = Control(listen["listen"])
    if "store" in raw:
        kwargs["store"] = raw["store"]
    if "chaos" in raw:
        kwargs["chaos"] = b.chaos(raw["chaos"], ("chaos",))
    if "budget" in raw:
        kwargs["budget"] = b.budget(raw["budget"], ("budget",))
    config = Config(**kwargs)
    b.check_listens(config, raw)
    b.check_faults(config, raw)
    if b.problems:
        raise InvalidConfig(b.problems)
    return config


# ---- small conversions ---------------------------------------------------------------------


def _unit(parse: Callable[[Any], Any]) -> Callable[[Any, ConfigPath], Any]:
    return lambda value, path: parse(value)


def _methods(value: list[str], path: ConfigPath) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.upper() for m in value))


def _per_second(rate: Any) -> float:
    return rate.count / rate.per


def _statuses(items: list[int | str]) -> tuple[int, ...]:
    """Status codes with classes like "5xx" expanded."""
    codes: set[int] = set()
    for item in items:
        if isinstance(item, str):  # the schema allows only "Nxx" here
            first = int(item[0]) * 100
            codes.update(range(first, first + 100))
        else:
            codes.add(item)
    return tuple(sorted(codes))


def _per_request(value: Any, path: ConfigPath) -> int | dict[str, int]:
    if isinstance(value, dict):
        return {method.upper(): units.usd_to_micros(amount) for method, amount in value.items()}
    return units.usd_to_micros(value)


def _header_values(headers: dict[str, Any]) -> dict[str, str]:
    # YAML reads `retry-after: 1` as an int and `x-flag: true` as a bool; headers are text.
    return {
        name: (str(v).lower() if isinstance(v, bool) else str(v)) for name, v in headers.items()
    }


def _same_host(a: Listen, b: Listen) -> bool:
    if a.host in _WILDCARD_HOSTS or b.host in _WILDCARD_HOSTS:
        return True
    loopback = {"localhost", "127.0.0.1"}
    return a.host == b.host or (a.host in loopback and b.host in loopback)


def _path_key(path: ConfigPath) -> tuple:
    order = {"control": 0, "proxy": 1, "routes": 2}
    return (order[str(path[0])], *(p if isinstance(p, int) else 0 for p in path[1:]))


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""

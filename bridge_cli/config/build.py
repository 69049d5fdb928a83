"""Turn a schema-valid config dict into the frozen model, parsing every unit once.

The schema has already checked shapes and unit formats; what is left here are the checks a
schema can't express (unique names, references between keys, keys that exclude each other)
and the conversions. Problems are collected, not raised one by one, so the user sees all of
them at once; the loader turns their paths into line numbers. A fault's actions are parsed
by their fault kinds (engine/faults/, which imports only config's model and units, never this
module: no import cycle).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge_cli.config import units
from bridge_cli.config.crossref import (
    ConfigPath,
    did_you_mean,
    fault_problems,
    format_path,
    listen_problems,
    route_name_problems,
)
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
from bridge_cli.engine.faults import header_values, options
from bridge_cli.resources import data_dir

BUILTIN = "builtin:"  # drift.schema naming a schema bridge ships (schemas/builtin/NAME.json)


def builtin_schemas() -> list[str]:
    """The names of the JSON Schemas bridge ships for `drift: {schema: builtin:NAME}`."""
    return sorted(p.stem for p in (data_dir("schemas") / "builtin").glob("*.json"))


class InvalidConfig(Exception):
    """Problems found while building: each a (path, message) pair, path as in the YAML."""

    def __init__(self, problems: list[tuple[ConfigPath, str]]):
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


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

    def drift_schema(self, value: str, path: ConfigPath) -> str:
        """`builtin:NAME` (a schema bridge ships) as it is, checked; else a file path."""
        if not value.startswith(BUILTIN):
            file = self.file(value, path)
            if self.base_dir is not None and not Path(file).is_file():
                self.problem(path, f"no such schema file {file}: give a JSON Schema file, or "
                             "builtin:openai-chat / builtin:anthropic-message")
            return file
        names = builtin_schemas()
        if value[len(BUILTIN):] not in names:
            self.problem(path, f"no built-in schema {value!r}"
                         f"{did_you_mean(value[len(BUILTIN):], names)}; built in: "
                         + ", ".join(BUILTIN + n for n in names))
        return value

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
                "headers": self.env_headers,
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

    def env_headers(self, raw: dict, path: ConfigPath) -> dict[str, str]:
        """An upstream's own headers, `${NAME}` read from the environment now, at load."""
        out: dict[str, str] = {}
        for name, value in raw.items():
            try:
                out[name] = _expand_env(value)
            except ValueError as exc:
                self.problem((*path, name), str(exc))
        return out

    def timeout(self, value: Any, path: ConfigPath) -> Timeout:
        if not isinstance(value, dict):
            total = units.parse_duration(value)
            # A bare duration bounds the whole try; the connect phase can't take longer.
            return Timeout(connect=min(Timeout.connect, total), total=total)
        return Timeout(
            **self.fields(
                value,
                path,
                {k: _unit(units.parse_duration) for k in ("connect", "total", "first_token", "idle")},
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
            "max_entry_size": _unit(units.parse_size),
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
            "drift": lambda v, p: Drift(**self.fields(v, p, {"schema": self.drift_schema})),
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
        kinds = options()  # config key -> (its fault kind, its option)
        if not any(key in raw for key in kinds):
            self.problem(
                path,
                f"fault '{raw['name']}' does nothing: add one of "
                "status, preset, latency, reset, hang, throttle, truncate, ...",
            )
        kwargs = self.fields({k: v for k, v in raw.items() if k not in kinds}, path, {
            "match": lambda v, p: FaultMatch(**self.fields(v, p, {
                "method": lambda m, _: m.upper(), "header": lambda h, _: header_values(h)})),
            "probability": _unit(units.parse_percent),
            "for": _unit(units.parse_duration),
        })  # fmt: skip
        actions = self.fields({k: v for k, v in raw.items() if k in kinds}, path,
                              {key: _unit(option.parse) for key, (_, option) in kinds.items()})
        # A kind's parser returns None for "off" (`reset: false`): no action at all.
        return Fault(**kwargs, actions={k: v for k, v in actions.items() if v is not None})

    def chaos(self, raw: dict, path: ConfigPath) -> Chaos:
        faults = tuple(
            self.fault(item, (*path, "faults", i)) for i, item in enumerate(raw.get("faults", ()))
        )
        kwargs = self.fields(raw, path, {"faults": lambda v, p: faults})
        return Chaos(**kwargs)


def build_config(raw: dict, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """The frozen Config of a schema-valid dict; raises InvalidConfig with every problem.
    Relative file paths in it (ca_file, drift.schema) are taken from `base_dir`."""
    b = _Builder(base_dir)
    routes_raw = raw.get("routes", [])
    b.problems += route_name_problems(routes_raw)
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
    b.problems += listen_problems(config, raw)
    b.problems += fault_problems(config)
    if b.problems:
        raise InvalidConfig(b.problems)
    return config


# ---- small conversions ---------------------------------------------------------------------


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: str) -> str:
    """`value` with each `${NAME}` replaced by the environment variable NAME."""

    def one(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise ValueError(f"environment variable {m.group(1)} is not set: export it "
                             "before bridge starts, or write the value here")
        return os.environ[m.group(1)]

    return _ENV_REF.sub(one, value)


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

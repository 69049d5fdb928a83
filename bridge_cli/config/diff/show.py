"""Values of a diff as the user writes them: `30s`, `50%`, `$0.002`, `60/60s`."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from bridge_cli.config.units import format_duration

DURATIONS = {"ttl", "open_for", "connect", "total", "first_token", "idle", "initial", "max",
             "rolling", "for",
             "duration", "latency"}
PERCENTS = {"failure_rate", "alert_at", "probability", "budget", "rate"}
MONEY = {"limit_usd", "per_request_usd"}
SIZES = {"max_size", "max_entry_size"}


def show(value: Any, key: str = "") -> str:
    """One value as short text; `key` (the config key it is under) picks its unit."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value, key)
    if isinstance(value, list):
        if len(value) > 3 and all(type(v) is int for v in value):
            return "[" + ", ".join(_runs(value)) + "]"
        return "[" + ", ".join(show(v, key) for v in value) + "]"
    if isinstance(value, dict):
        if key == "rate_limit" and set(value) == {"count", "per"}:
            return f"{value['count']}/{_duration(value['per'])}"
        if key in MONEY:  # per_request_usd per method
            return "{" + ", ".join(f"{k}: {_money(v)}" for k, v in value.items()) + "}"
        items = [f"{k}: {show(v, k)}" for k, v in value.items() if v not in (None, [], {})]
        return "{" + ", ".join(items) + "}"
    return str(value) if not isinstance(value, str) or value else json.dumps(value)


def _runs(numbers: list[int]) -> list[str]:
    """Sorted integers with runs folded: [429, 500, 501, ..., 599] -> 429, 500-599."""
    out: list[list[int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return [str(a) if a == b else f"{a}-{b}" for a, b in out]


def _number(value: int | float, key: str) -> str:
    if key in DURATIONS:
        return _duration(value)
    if key in PERCENTS and isinstance(value, float):
        return f"{Decimal(str(value)) * 100:f}".rstrip("0").rstrip(".") + "%"
    if key in MONEY:
        return _money(value)
    if key in SIZES:
        return _size(int(value))
    if key == "budget_floor":
        return f"{value:g}/s"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    try:
        return format_duration(seconds)
    except ValueError:
        return f"{seconds}s"


def _money(micros: Any) -> str:
    if not isinstance(micros, int):
        return str(micros)
    value = Decimal(micros).scaleb(-6).normalize()
    return f"${value:f}" if value < 1 else f"${value:,.2f}"


def _size(n: int) -> str:
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def label(path: str) -> str:
    """The last key of a dotted path, for a change's explanation ("retry.attempts")."""
    tail = path.split("].", 1)[-1] if "]." in path else path
    return tail

"""Parsers for the units config values are written in: durations, percentages, rates, sizes,
bandwidths, money and listen addresses.

Each parser takes what YAML produced (a string or a number) and returns the model's unit
(float seconds, float fraction, bytes, integer micro-dollars), or raises ValueError saying
what was expected. Arithmetic goes through Decimal so that "0.1s" or "$0.002" parse to the
value the user wrote, not a float neighbour of it.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from bridge_cli.config.model import Listen, Rate

_NUMBER = r"(\d+(?:\.\d+)?)"

_DURATION_UNITS = {"ms": Decimal("0.001"), "s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}
_DURATION = re.compile(rf"^\s*{_NUMBER}\s*(ms|s|m|h|d)?\s*$")
DURATION_HINT = "a duration like 250ms, 30s, 5m or 1h"

_PERCENT = re.compile(rf"^\s*{_NUMBER}\s*%\s*$")
PERCENT_HINT = "a percentage like 50% (0% to 100%; or a fraction from 0 to 1)"

_RATE_UNITS = {
    "s": 1, "sec": 1, "second": 1,
    "m": 60, "min": 60, "minute": 60,
    "h": 3600, "hr": 3600, "hour": 3600,
    "d": 86400, "day": 86400,
}  # fmt: skip
_RATE = re.compile(rf"^\s*(\d+)\s*/\s*(?:{_NUMBER}\s*)?([a-z]+)\s*$")
RATE_HINT = "a rate like 60/min, 10/s or 100/h"

# Binary multiples: "1GB" is 2**30 bytes, as disk-cache sizes are usually meant.
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}  # fmt: skip
_SIZE = re.compile(rf"^\s*{_NUMBER}\s*([a-z]*)\s*$", re.IGNORECASE)
SIZE_HINT = "a size like 10KB, 512MB or 1GB"
_BANDWIDTH = re.compile(rf"^\s*{_NUMBER}\s*([a-z]*)\s*/\s*s\s*$", re.IGNORECASE)
BANDWIDTH_HINT = "a bandwidth like 10KB/s or 1MB/s"

MONEY_HINT = "an amount in USD like 5 or 0.002 (at most 6 decimal places)"
LISTEN_HINT = "an address like 127.0.0.1:8081, :8081 or a bare port"
DEFAULT_LISTEN_HOST = "127.0.0.1"
_LISTEN = re.compile(r"^\s*(?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):)?(\d{1,5})\s*$")


def _got(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _plain_number(value: object) -> Decimal | None:
    """A finite, non-negative int/float as a Decimal; None for anything else (bools too)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    # str() of a float is its shortest round-trip form: 0.1 -> Decimal("0.1"), not 0.1000…0555.
    number = Decimal(str(value))
    return number if number >= 0 else None


def parse_duration(value: str | int | float) -> float:
    """Seconds from "250ms", "30s", "5m", "1h", "1d", or a bare number of seconds."""
    number = _plain_number(value)
    if number is None and isinstance(value, str) and (m := _DURATION.match(value)):
        number = Decimal(m.group(1)) * _DURATION_UNITS[m.group(2) or ""]
    if number is None:
        raise ValueError(f"expected {DURATION_HINT}, got {_got(value)}")
    return float(number)


def format_duration(seconds: float) -> str:
    """The shortest text parse_duration reads back as exactly `seconds` ("5m", "250ms")."""
    if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite number of seconds >= 0, got {seconds!r}")
    exact = Decimal(str(seconds))
    for unit, factor in (("h", 3600), ("m", 60)):
        if exact >= factor and exact % factor == 0:
            return f"{exact // factor}{unit}"
    if exact == exact.to_integral_value():
        return f"{int(exact)}s"
    millis = exact * 1000
    if millis == millis.to_integral_value():
        return f"{int(millis)}ms"
    return f"{exact:f}s"


def parse_percent(value: str | int | float) -> float:
    """A fraction from "50%" (0.5), or a bare number from 0 to 1 taken as the fraction."""
    if isinstance(value, str) and (m := _PERCENT.match(value)):
        number = Decimal(m.group(1))
        if number <= 100:
            return float(number / 100)
    else:
        number = _plain_number(value)
        if number is not None and number <= 1:
            return float(number)
    raise ValueError(f"expected {PERCENT_HINT}, got {_got(value)}")


def parse_rate(value: str | int) -> Rate:
    """A Rate (count per seconds) from "60/min", "10/s", "100/h", "5/10s", or a bare
    integer per second."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Rate(value, 1.0)
    if isinstance(value, str) and (m := _RATE.match(value.lower())):
        count, multiple, unit = m.groups()
        if unit in _RATE_UNITS:
            per = Decimal(multiple or 1) * _RATE_UNITS[unit]
            if per > 0:
                return Rate(int(count), float(per))
    raise ValueError(f"expected {RATE_HINT}, got {_got(value)}")


def _bytes(number: str, unit: str) -> int | None:
    factor = _SIZE_UNITS.get(unit.lower())
    return None if factor is None else int(Decimal(number) * factor)


def parse_size(value: str | int) -> int:
    """Bytes from "10KB", "512MB", "1GB" (binary multiples: 1KB = 1024 bytes), or a bare
    integer of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        size = _bytes(*m.groups())
        if size is not None:
            return size
    raise ValueError(f"expected {SIZE_HINT}, got {_got(value)}")


def parse_bandwidth(value: str | int) -> int:
    """Bytes per second from "10KB/s", "1MB/s", or a bare integer of bytes per second."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _BANDWIDTH.match(value)):
        rate = _bytes(*m.groups())
        if rate:  # zero bytes per second would never finish: not a throttle but a hang
            return rate
    raise ValueError(f"expected {BANDWIDTH_HINT}, got {_got(value)}")


def usd_to_micros(value: int | float | str | Decimal) -> int:
    """Integer micro-dollars from an amount in USD (5.00 -> 5_000_000), exactly; an amount
    finer than a micro-dollar is refused rather than rounded."""
    amount: Decimal | None
    if isinstance(value, Decimal):
        amount = value if value.is_finite() and value >= 0 else None
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip().removeprefix("$"))
        except InvalidOperation:
            amount = None
        if amount is not None and (not amount.is_finite() or amount < 0):
            amount = None
    else:
        amount = _plain_number(value)
    if amount is not None:
        micros = amount * 1_000_000
        if micros == micros.to_integral_value():
            return int(micros)
    raise ValueError(f"expected {MONEY_HINT}, got {_got(value)}")


def micros_to_usd(micros: int) -> str:
    """The decimal string of an amount of micro-dollars, as JSON shows money ("5.000000")."""
    return f"{Decimal(micros).scaleb(-6):.6f}"


def parse_listen(value: str | int) -> Listen:
    """A Listen from "host:port", ":port", "[::1]:port" or a bare port; the host defaults
    to 127.0.0.1 (bridge is a local proxy: listening on every interface must be explicit)."""
    port: int | None = None
    host = DEFAULT_LISTEN_HOST
    if isinstance(value, int) and not isinstance(value, bool):
        port = value
    elif isinstance(value, str) and (m := _LISTEN.match(value)):
        if m.group(1):
            host = m.group(1).strip("[]")
        port = int(m.group(2))
    if port is None or not 0 <= port <= 65535:
        raise ValueError(f"expected {LISTEN_HINT} (port 0 to 65535), got {_got(value)}")
    return Listen(host, port)

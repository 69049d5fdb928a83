"""Money: integer micro-dollars inside bridge, decimal strings in JSON and on screen."""

from __future__ import annotations

from decimal import Decimal


def usd(micros: int) -> str:
    """12345 -> "0.012345" (exact, for JSON)."""
    return str((Decimal(micros) / Decimal(1_000_000)).quantize(Decimal("0.000001")))


def usd_short(micros: int) -> str:
    """For people: $0.0123, $12.35."""
    value = Decimal(micros) / Decimal(1_000_000)
    return f"${value:.4f}" if abs(value) < 1 else f"${value:,.2f}"

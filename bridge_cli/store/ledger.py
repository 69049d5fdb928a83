"""The spend ledger: one row per call that cost (or saved) money, keyed by local day.

    ledger:<YYYY-MM-DD>:<ts>-<request id>   {"format": 1, "ts": ..., "route": ..., ...}

Rows are dicts the spend addon builds (route, upstream, model, cost_micros, saved_micros,
status, reason, tokens, snapshot, path); this module only keys, versions and reads them.
Rows written before the ledger was versioned have no "format" and read as format 0, whose
fields are those of format 1.
"""

from __future__ import annotations

import logging
import secrets
import time

from bridge_cli.common.store import Store, make_key, split_key

log = logging.getLogger("bridge.store")

LEDGER_FORMAT = 1  # of a row; bump on an incompatible change (older bridges skip newer rows)
_PREFIX = make_key("ledger") + ":"


def day_of(ts: float) -> str:
    """The local calendar day of ts (epoch seconds), as the ledger keys it: 2026-11-25."""
    return time.strftime("%Y-%m-%d", time.localtime(ts))


class Ledger:
    """Append and read the spend ledger over any Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def append(self, row: dict, request_id: str | None = None) -> str:
        """Write one call's row (row["ts"]: epoch seconds; the key names request_id or row["id"])
        and return its key; StoreError when the store is busy, for the caller to log."""
        ts = float(row["ts"])
        # Keys sort by time within a day; the request id (or a random tag) keeps two calls
        # settled in the same microsecond apart.
        tag = request_id or str(row.get("id") or "") or secrets.token_hex(4)
        key = make_key("ledger", day_of(ts), f"{ts:.6f}-{tag}")
        self.store.set(key, {**row, "format": LEDGER_FORMAT})
        return key

    def rows(self, since_day: str) -> list[dict]:
        """Every row from since_day (local, YYYY-MM-DD) on, in key order, each with its "day"
        and without "format"; StoreError when the store cannot be scanned."""
        out = []
        for key, day in self._keys():
            if day < since_day:
                continue
            row = self._read(key)
            if row is not None:
                out.append({**row, "day": day})
        return out

    def remove(self, route: str | None = None) -> int:
        """Delete the rows of route (every row when None); how many went."""
        doomed = [k for k, _ in self._keys()
                  if route is None or (self._read(k) or {}).get("route") == route]
        for key in doomed:
            self.store.delete(key)
        return len(doomed)

    def _keys(self) -> list[tuple[str, str]]:
        """(key, day) of every row."""
        out = []
        for key in self.store.scan(_PREFIX):
            parts = split_key(key)
            out.append((key, parts[1] if len(parts) >= 3 else ""))
        return out

    def _read(self, key: str) -> dict | None:
        row = self.store.get(key)
        if not isinstance(row, dict):
            return None
        fmt = row.get("format", 0)
        if not isinstance(fmt, int) or fmt > LEDGER_FORMAT:
            log.warning("ledger row %s is of format %r, newer than this bridge reads (%d); "
                        "skipped", key, fmt, LEDGER_FORMAT)
            return None
        return {k: v for k, v in row.items() if k != "format"}

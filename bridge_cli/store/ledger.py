"""The spend ledger: one row per call that cost (or saved) money, keyed by local day.

    ledger:<YYYY-MM-DD>:<ts>-<request id>   {"format": 1, "ts": ..., "route": ..., ...}
    ledger:<YYYY-MM-DD>:<ts>-b<tag>         {"format": 2, "rows": [{...}, ...]}

Format 2 holds the rows of one batch (the settler writes every batch of a day as one
record: one write instead of hundreds under load); readers see rows either way.

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
BATCH_FORMAT = 2  # a record holding several rows
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

    def append_many(self, rows: list[dict]) -> list[str]:
        """Write many rows, one record per local day; the keys written."""
        by_day: dict[str, list[dict]] = {}
        for row in rows:
            by_day.setdefault(day_of(float(row["ts"])), []).append(row)
        keys = []
        for day, day_rows in by_day.items():
            if len(day_rows) == 1:
                keys.append(self.append(day_rows[0]))
                continue
            first = min(float(r["ts"]) for r in day_rows)
            key = make_key("ledger", day, f"{first:.6f}-b{secrets.token_hex(4)}")
            self.store.set(key, {"format": BATCH_FORMAT, "rows": day_rows})
            keys.append(key)
        return keys

    def rows(self, since_day: str) -> list[dict]:
        """Every row from since_day (local, YYYY-MM-DD) on, in key order, each with its "day"
        and without "format"; StoreError when the store cannot be scanned."""
        out = []
        for key, day in self._keys():
            if day < since_day:
                continue
            out.extend({**row, "day": day} for row in self._read(key))
        return out

    def remove(self, route: str | None = None) -> int:
        """Delete the rows of route (every row when None); how many went."""
        gone = 0
        for key, _ in self._keys():
            rows = self._read(key)
            keep = [r for r in rows if route is not None and r.get("route") != route]
            if len(keep) == len(rows):
                continue
            gone += len(rows) - len(keep)
            if keep:
                self.store.set(key, {"format": BATCH_FORMAT, "rows": keep})
            else:
                self.store.delete(key)
        return gone

    def _keys(self) -> list[tuple[str, str]]:
        """(key, day) of every row."""
        out = []
        for key in self.store.scan(_PREFIX):
            parts = split_key(key)
            out.append((key, parts[1] if len(parts) >= 3 else ""))
        return out

    def _read(self, key: str) -> list[dict]:
        """The rows of one record (one row, or a batch); none when unreadable or newer."""
        record = self.store.get(key)
        if not isinstance(record, dict):
            return []
        fmt = record.get("format", 0)
        if fmt == BATCH_FORMAT and isinstance(record.get("rows"), list):
            return [r for r in record["rows"] if isinstance(r, dict)]
        if not isinstance(fmt, int) or fmt > LEDGER_FORMAT:
            log.warning("ledger row %s is of format %r, newer than this bridge reads (%d); "
                        "skipped", key, fmt, BATCH_FORMAT)
            return []
        return [{k: v for k, v in record.items() if k != "format"}]

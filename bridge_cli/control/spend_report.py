"""The spend resource: what calls cost, grouped, with savings and budgets.

Shared by GET /api/v1/spend and `bridge spend`; it reads the ledger in the store, so it
works with no bridge running (budgets need the config: the running one, or `-c FILE`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections import defaultdict

from bridge_cli.common.store import Store, make_key, split_key
from bridge_cli.config.model import Config
from bridge_cli.engine.budget import Budgets, window_of
from bridge_cli.engine.money import usd
from bridge_cli.errors import UsageError
from bridge_cli.store.ledger import Ledger

GROUPS = ("route", "upstream", "model", "day", "status")


def parse_since(value: str | None, now: float) -> str:
    """`--since`: a date (2026-11-01), `today`, or a span back (7d, 24h); a day string."""
    if value is None or value == "today":
        return time.strftime("%Y-%m-%d", time.localtime(now))
    v = value.strip().lower()
    try:
        if v.endswith("d") and v[:-1].isdigit():
            return dt.date.fromtimestamp(now - int(v[:-1]) * 86400).isoformat()
        if v.endswith("h") and v[:-1].isdigit():
            return dt.date.fromtimestamp(now - int(v[:-1]) * 3600).isoformat()
        return dt.date.fromisoformat(v).isoformat()
    except (ValueError, OverflowError, OSError):  # a span back before year 1, or past time_t
        pass
    raise UsageError(f"--since {value!r}: expected a date like 2026-11-01, today, or 7d / 24h")


def ledger(store: Store, since_day: str) -> list[dict]:
    """Every recorded call from `since_day` (local) on (Ledger.rows; tests/test_spend_e2e.py)."""
    return Ledger(store).rows(since_day)


def spend_report(store: Store, config: Config | None, *, since: str | None = None,
                 by: str = "route", now: float | None = None) -> dict:
    """Totals and groups of spend, savings and token counts; budgets when `config` is known."""
    if by not in GROUPS:
        raise UsageError(f"--by {by!r}: expected one of {', '.join(GROUPS)}")
    now = time.time() if now is None else now
    since_day = parse_since(since, now)
    rows = Ledger(store).rows(since_day)
    groups: dict[str, dict] = defaultdict(lambda: {"calls": 0, "cost": 0, "saved": 0,
                                                   "unpriced": 0, "estimated": 0, "tokens": 0})
    for r in rows:
        g = groups[str(r.get(by) or "-")]
        g["calls"] += 1
        g["cost"] += int(r.get("cost_micros") or 0)
        g["saved"] += int(r.get("saved_micros") or 0)
        g["unpriced"] += r.get("status") == "unpriced"
        g["estimated"] += r.get("status") == "estimated"
        g["tokens"] += sum(v for k, v in (r.get("tokens") or {}).items()
                           if k in ("input_tokens", "output_tokens") and isinstance(v, int))
    out_groups = [{by: k, "calls": g["calls"], "cost_usd": usd(g["cost"]),
                   "saved_usd": usd(g["saved"]), "unpriced": g["unpriced"],
                   "estimated": g["estimated"], "tokens": g["tokens"]}
                  for k, g in sorted(groups.items(), key=lambda kv: -kv[1]["cost"])]
    total = sum(int(r.get("cost_micros") or 0) for r in rows)
    saved = sum(int(r.get("saved_micros") or 0) for r in rows)
    return {
        "since": since_day,
        "by": by,
        "total_usd": usd(total),
        "saved_usd": usd(saved),
        "calls": len(rows),
        "groups": out_groups,
        "budgets": budgets_report(store, config, now) if config is not None else None,
    }


def budgets_report(store: Store, config: Config, now: float) -> list[dict]:
    """Each budget's window: spent (with what the ledger recorded before the budget held
    anything, which it counts from its first request on), reserved, and the last worst
    case it refused with the settings that lower it."""
    budgets = Budgets(store, lambda: now)
    read: dict[str, list[dict]] = {}

    def rows(day: str) -> list[dict]:
        if day not in read:
            read[day] = Ledger(store).rows(day)
        return read[day]

    out = []
    scoped = [(f"route:{r.name}", r.budget) for r in config.routes if r.budget is not None]
    if config.budget is not None:
        scoped.append(("global", config.budget))
    for scope, b in scoped:
        before = sum(n for _, n in budgets.unseeded(scope, b, rows))
        committed = budgets.committed(scope, b) + before
        spent = budgets.spent(scope, b) + before
        refused = budgets.last_refused(scope, b)
        w = window_of(b, now)
        out.append({"budget": scope, "limit_usd": usd(b.limit_usd), "spent_usd": usd(spent),
                    "reserved_usd": usd(max(0, committed - spent)), "action": b.action,
                    "period": b.period or f"rolling {b.rolling:g}s",
                    "resets_at": w.resets_at.isoformat() if w.resets_at else None,
                    "alert_at": b.alert_at,
                    "used": round(committed / b.limit_usd, 4) if b.limit_usd else None,
                    "refused_usd": None if refused is None else usd(refused)})
    return out


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    by = report["by"]
    w = csv.writer(buf)
    w.writerow([by, "calls", "cost_usd", "saved_usd", "unpriced", "estimated", "tokens"])
    for g in report["groups"]:
        w.writerow([g[by], g["calls"], g["cost_usd"], g["saved_usd"], g["unpriced"],
                    g["estimated"], g["tokens"]])
    return buf.getvalue()


def reset_spend(store: Store, route: str | None) -> dict:
    """Forget a route's spend (its budget windows and ledger), or everything."""
    scope = f"route:{route}" if route else None
    removed = Budgets(store, time.time).reset(scope) if scope else sum(
        Budgets(store, time.time).reset(s) for s in _scopes(store))
    calls = Ledger(store).remove(route)
    return {"route": route, "budget_keys": removed, "calls": calls}


def _scopes(store: Store) -> set[str]:
    scopes = set()
    for k in store.scan(make_key("budget") + ":"):
        parts = split_key(k)
        if len(parts) >= 4:
            scopes.add(parts[2])
    return scopes

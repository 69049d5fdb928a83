"""What a config change would have done to recorded traffic: `bridge diff`'s projections.

It reads what a bridge left in $BRIDGE_HOME, with no bridge running: the flow log
(flows.jsonl and its rotations: every request with its tries) and the spend ledger in the
store (what each priced call cost). Where nothing is recorded for a route, nothing is said.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from bridge_cli.config.diff import Change
from bridge_cli.engine.money import usd_short
from bridge_cli.errors import BridgeError
from bridge_cli.store import Ledger, open_store
from bridge_cli.store.home import DEFAULT_HOME
from bridge_cli.store.ledger import day_of

WINDOW_DAYS = 7
FLOW_LOG = "flows.jsonl"
ROTATIONS = 3  # flows.jsonl.1 … .3, as store/flowlog.py keeps them
NOT_A_CALL = "breaker_open"  # a try the breaker refused never reached the upstream


def state_dir() -> Path:
    """$BRIDGE_HOME as `bridge_home()` finds it, but never created: a diff only reads."""
    return Path(os.path.expanduser(os.environ.get("BRIDGE_HOME") or DEFAULT_HOME)).absolute()


def project(changes: list[Change], home: Path, store_url: str | None = None,
            now: float | None = None) -> dict[str, dict]:
    """Projections by change path: {"text": one line, ...the numbers}; only for changes
    whose route has recorded traffic in the last WINDOW_DAYS days."""
    wanted = [c for c in changes if _kind(c)]
    if not wanted or not home.is_dir():
        return {}
    since = (time.time() if now is None else now) - WINDOW_DAYS * 86400
    flows = _flows_by_route(home, since, {c.route for c in wanted})
    rows = _ledger_by_route(home, store_url, since) if any(
        _kind(c) == "spend" for c in wanted) else {}
    out = {}
    for c in wanted:
        kind = _kind(c)
        if kind == "spend":
            found = _spend(c, rows.get(c.route, []), flows.get(c.route, []))
        else:
            found = PROJECTIONS[kind](c, flows.get(c.route, []))
        if found is not None:
            out[c.path] = found
    return out


def _kind(c: Change) -> str | None:
    if c.path.endswith(".retry.attempts") and c.kind == "changed":
        return "attempts"
    if c.path.endswith(".spend.per_request_usd") and c.new is not None:
        return "spend"
    if c.rule == "route-removed":
        return "route"
    if c.rule == "upstream-removed":
        return "upstream"
    return None


def _window(n: int) -> str:
    return f"at the last {WINDOW_DAYS} days' traffic ({n:,} request{'s' * (n != 1)})"


def _runs(flow: dict) -> list[list[str]]:
    """The outcomes of a request's tries, one list per upstream it tried in turn."""
    runs: list[list[str]] = []
    last = object()
    for t in flow.get("tries") or ():
        if not isinstance(t, dict) or t.get("outcome") == NOT_A_CALL:
            continue
        if t.get("upstream") != last:
            runs.append([])
            last = t.get("upstream")
        runs[-1].append(str(t.get("outcome")))
    return runs


def _attempts(c: Change, flows: list[dict]) -> dict | None:
    """Retry attempts old -> new: upstream calls more or fewer, from the recorded tries."""
    if not flows or not isinstance(c.old, int) or not isinstance(c.new, int):
        return None
    runs = [run for f in flows for run in _runs(f)]
    calls = sum(len(r) for r in runs)
    failed = sum(o != "ok" for r in runs for o in r)
    rate = failed / calls if calls else 0.0
    data = {"requests": len(flows), "calls": calls, "failed_rate": round(rate, 4)}
    head = f"{_window(len(flows))}, {rate:.1%} of calls failed and could be retried"
    if c.new > c.old:
        # A request that used all its tries on a failure gets more: each further try
        # fails again at the observed rate (independent), or, if failures persist, always.
        spent = [[len(r) >= c.old and r[-1] != "ok" for r in _runs(f)] for f in flows]
        out_of_tries = sum(sum(s) for s in spent)
        requests = sum(any(s) for s in spent)
        times = f" ({out_of_tries:,} times, at one upstream each)" if out_of_tries > requests else ""
        more = c.new - c.old
        expected = out_of_tries * sum(rate**k for k in range(more))
        data |= {"out_of_tries": out_of_tries, "requests_out_of_tries": requests,
                 "more_calls": round(expected),
                 "more_calls_at_most": out_of_tries * more}
        if not out_of_tries:
            return data | {"text": f"{head}: no request ran out of tries, so no more "
                                   "upstream calls"}
        return data | {"text": f"{head}: {requests:,} request{'s' * (requests != 1)} ran out "
                               f"of tries{times}; +~{expected:,.0f} "
                               f"upstream calls (up to +{out_of_tries * more:,} if the "
                               "failures persist)"}
    fewer = sum(max(0, len(r) - c.new) for r in runs)
    lost = sum(len(r) > c.new and r[-1] == "ok" for r in runs)
    data |= {"fewer_calls": fewer, "would_fail": lost}
    return data | {"text": f"{head}: −{fewer:,} upstream calls; {lost:,} request(s) that "
                           f"succeeded only after try {c.new} would have failed there"}


def _spend(c: Change, rows: list[dict], flows: list[dict]) -> dict | None:
    """A new flat price on the calls the ledger recorded: what they cost, what they would."""
    if not rows:
        return None
    before = sum(int(r.get("cost_micros") or 0) for r in rows)
    if isinstance(c.new, int):
        after = c.new * len(rows)
    else:  # a price per method: the method of each call comes from the flow log
        methods = {f.get("id"): str(f.get("method") or "").upper() for f in flows}
        prices = [c.new.get(methods.get(r.get("id"), "")) for r in rows]
        if any(p is None for p in prices):
            return None
        after = sum(prices)
    n = len(rows)
    return {"requests": n, "cost_before_micros": before, "cost_after_micros": after,
            "text": f"spend ≈ {usd_short(before)} → {usd_short(after)} per {n:,} "
                    f"request{'s' * (n != 1)} (the last {WINDOW_DAYS} days' recorded calls)"}


def _route_removed(c: Change, flows: list[dict]) -> dict | None:
    if not flows:
        return None
    return {"requests": len(flows),
            "text": f"it served {len(flows):,} request{'s' * (len(flows) != 1)} in the last "
                    f"{WINDOW_DAYS} days"}


def _upstream_removed(c: Change, flows: list[dict]) -> dict | None:
    answered = sum(f.get("upstream") == c.old.get("name") for f in flows)
    if not answered:
        return None
    return {"requests": len(flows), "answered": answered,
            "text": f"{answered:,} of {len(flows):,} requests ended there in the last "
                    f"{WINDOW_DAYS} days"}


PROJECTIONS = {"attempts": _attempts, "route": _route_removed, "upstream": _upstream_removed}


def _flows_by_route(home: Path, since: float, routes: set) -> dict[str, list[dict]]:
    """The flow log's requests since `since` (epoch seconds) of `routes`, by route."""
    out: dict[str, list[dict]] = {}
    for record in _flow_records(home):
        route = record.get("route")
        ts = record.get("ts")
        if (record.get("kind", "flow") == "flow" and route in routes
                and isinstance(ts, int | float) and ts >= since):
            out.setdefault(route, []).append(record)
    return out


def _flow_records(home: Path) -> Iterator[dict]:
    """Every readable JSON line of the flow log, oldest file first; broken lines skipped."""
    paths = [home / f"{FLOW_LOG}.{n}" for n in range(ROTATIONS, 0, -1)] + [home / FLOW_LOG]
    for path in paths:
        try:
            with path.open("rb") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict):
                        yield record
        except OSError:
            continue


def _ledger_by_route(home: Path, store_url: str | None, since: float) -> dict[str, list[dict]]:
    """The ledger's rows since `since` (epoch seconds), by route; none if unreadable."""
    if not (home / "store").is_dir():
        return {}
    try:
        store = open_store(store_url, home)
    except BridgeError:
        return {}
    try:
        rows = Ledger(store).rows(day_of(since))
    except BridgeError:
        return {}
    finally:
        store.close()
    out: dict[str, list[dict]] = {}
    for r in rows:
        ts = r.get("ts")
        if isinstance(ts, int | float) and ts >= since and r.get("status") != "saved":
            out.setdefault(str(r.get("route")), []).append(r)
    return out

"""Budgets by reservation (DESIGN.md): refuse when spent + reserved + this request's worst
case would pass the limit; settle to the real cost when usage arrives; release on failure.

Per budget scope ("route:openai", "global") and period, the store holds two integers
(micro-dollars): `committed` (spent plus reserved, the one `reserve` checks atomically)
and `spent` (settled costs only, for reports). Calendar periods are in local time; a
rolling window is kept in hour buckets, the current one reserved against the limit less
what the earlier buckets of the window hold.

A budget also counts what the ledger recorded in its window before it held anything there
(calls made before the budget was configured): `Budgets.seed` adds those rows, once per
bucket, when the bucket's counter does not exist yet. Rows name the budget scopes that
held money for them (`budgets`), so a call is never counted twice.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge_cli.common.store import Store, make_key
from bridge_cli.config.model import Budget
from bridge_cli.engine.money import usd, usd_short

HOUR = 3600.0


def period_bounds(period: str, now: dt.datetime) -> tuple[str, dt.datetime]:
    """(id, start of the next period) of the calendar period holding the naive local wall
    time `now`: plain calendar arithmetic, so a period spanning a daylight-saving change
    still ends at local midnight (window_of attaches the offset of that instant)."""
    if period == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%dT%H"), start + dt.timedelta(hours=1)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day.strftime("%Y-%m-%d"), day + dt.timedelta(days=1)
    if period == "week":
        monday = day - dt.timedelta(days=day.weekday())
        y, w, _ = monday.isocalendar()
        return f"{y}-W{w:02d}", monday + dt.timedelta(days=7)
    if period == "month":
        first = day.replace(day=1)
        nxt = (first + dt.timedelta(days=32)).replace(day=1)
        return first.strftime("%Y-%m"), nxt
    raise ValueError(f"unknown budget period {period!r}")


@dataclass(frozen=True)
class Window:
    """Where one budget's money for `now` is counted."""

    bucket: str  # the period id (or the current hour bucket of a rolling window)
    resets_at: dt.datetime | None  # None for a rolling window
    earlier: tuple[str, ...] = ()  # rolling: the other hour buckets inside the window


def window_of(budget: Budget, now_wall: float) -> Window:
    now = dt.datetime.fromtimestamp(now_wall)  # naive local wall time, `fold` set
    if budget.rolling:
        # Buckets of a minute for windows up to 2 h, else of an hour; the window holds
        # the current bucket and every earlier one that overlaps it (on the safe side).
        size = 60.0 if budget.rolling <= 2 * HOUR else HOUR
        n = math.ceil(budget.rolling / size)
        base = int(now_wall // size)
        tag = "m" if size == 60.0 else "h"
        return Window(f"{tag}{base}", None, tuple(f"{tag}{base - i}" for i in range(1, n + 1)))
    pid, nxt = period_bounds(budget.period or "day", now)
    if budget.period == "hour" and now.fold:
        pid += "~2"  # the repeated hour of the night the clocks go back is its own period
    return Window(pid, nxt.astimezone())


def window_spans(budget: Budget, now_wall: float) -> list[tuple[str, float, float]]:
    """(bucket, start, end) in epoch seconds of every bucket of the window holding now."""
    w = window_of(budget, now_wall)
    if budget.rolling:
        size = 60.0 if budget.rolling <= 2 * HOUR else HOUR
        return [(b, int(b[1:]) * size, int(b[1:]) * size + size) for b in (w.bucket, *w.earlier)]
    now = dt.datetime.fromtimestamp(now_wall)
    start = _period_start(budget.period or "day", now).replace(fold=now.fold)
    return [(w.bucket, start.timestamp(), w.resets_at.timestamp())]


def _period_start(period: str, now: dt.datetime) -> dt.datetime:
    """The naive local start of the calendar period holding `now`."""
    if period == "hour":
        return now.replace(minute=0, second=0, microsecond=0)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1) if period == "month" else day


def recorded_in(rows: list[dict], scope: str, start: float, end: float) -> int:
    """Micro-dollars the ledger `rows` record for `scope` ("route:NAME" or "global") from
    start to end (epoch seconds) that no budget of that scope held: calls it never saw."""
    route = scope.split(":", 1)[1] if scope.startswith("route:") else None
    total = 0
    for r in rows:
        ts, cost = r.get("ts"), r.get("cost_micros")
        if (type(ts) in (int, float) and start <= ts < end and type(cost) is int and cost > 0
                and (route is None or r.get("route") == route)
                and scope not in (r.get("budgets") or ())):
            total += cost
    return total


@dataclass(frozen=True)
class Worst:
    """A request's worst case and what it is made of, for a refusal to explain."""

    amount: int  # micro-dollars
    output_tokens: int | None = None  # None: a flat price
    limit_field: str | None = None  # the request's output limit field; None: the default
    dearest: bool = False  # an unknown model, priced at the provider's dearest prices

    def why(self) -> str:
        """What the amount is made of and the setting that lowers it (for a 402)."""
        if self.output_tokens is None:
            return " (the route's per_request_usd)"
        limit = (f"its {self.limit_field}" if self.limit_field
                 else "no max_tokens in the request, so spend.default_max_tokens")
        price = "the provider's dearest price" if self.dearest else "the model's price"
        return (f" for its worst case ({self.output_tokens} output tokens: {limit}, at "
                f"{price}); set max_tokens in the request or spend.default_max_tokens on the "
                f"route to what the app needs and less is held")


@dataclass(frozen=True)
class Reservation:
    """Money held for one request in flight, against one or more budgets."""

    amount: int  # micro-dollars
    held: tuple[tuple[str, str], ...]  # (scope, bucket) pairs it is held in


@dataclass(frozen=True)
class Refusal:
    """Why a request may not go: the budget, what it holds, when it resets."""

    scope: str
    limit: int
    committed: int
    resets_at: dt.datetime | None
    action: str

    def message(self, amount: int, why: str = "") -> str:
        """The one-line reason a client gets with its 402 (`amount`: its worst case, `why`:
        what that worst case is made of and the setting that lowers it)."""
        when = (f"; it resets at {self.resets_at.isoformat(timespec='minutes')}"
                if self.resets_at else " (a rolling window: it frees up as older calls age out)")
        name = ("the global budget" if self.scope == "global"
                else f"the budget of {self.scope.replace(':', ' ')}")
        return (f"{name} would be passed: {usd_short(self.committed)} spent or reserved of "
                f"{usd_short(self.limit)}, and this request reserves ${usd(amount)}{why}{when}")

    def detail(self) -> dict:
        """The machine-readable part of the 402 error body."""
        return {"budget": self.scope, "committed_usd": usd(self.committed),
                "limit_usd": usd(self.limit),
                "resets_at": self.resets_at.isoformat() if self.resets_at else None}


class Budgets:
    """Reserve, settle and report budgets over a Store. `wall` gives epoch seconds."""

    def __init__(self, store: Store, wall: Callable[[], float]) -> None:
        self.store = store
        self.wall = wall

    @staticmethod
    def _key(kind: str, scope: str, bucket: str) -> str:
        return make_key("budget", kind, scope, bucket)

    def committed(self, scope: str, budget: Budget) -> int:
        """Micro-dollars spent or reserved in the current window (StoreError if unreadable)."""
        return self._sum("committed", scope, budget)

    def spent(self, scope: str, budget: Budget) -> int:
        """Micro-dollars settled in the current window (StoreError if unreadable)."""
        return self._sum("spent", scope, budget)

    def _sum(self, kind: str, scope: str, budget: Budget) -> int:
        w = window_of(budget, self.wall())
        # get_int, not get: a store that can't answer must not read as nothing spent.
        return sum(self.store.get_int(self._key(kind, scope, b)) for b in (w.bucket, *w.earlier))

    def unseeded(self, scope: str, budget: Budget, rows: Callable[[str], list[dict]]
                 ) -> list[tuple[str, int]]:
        """(bucket, micro-dollars) of what the ledger recorded in the buckets of the current
        window that hold no counter yet; `rows(day)` reads the ledger from a local day on."""
        spans = [s for s in window_spans(budget, self.wall()) if not self._exists(
            self._key("committed", scope, s[0]))]
        if not spans:
            return []
        got = rows(time.strftime("%Y-%m-%d", time.localtime(min(s[1] for s in spans))))
        return [(b, n) for b, start, end in spans if (n := recorded_in(got, scope, start, end))]

    def seed(self, scope: str, found: list[tuple[str, int]]) -> int:
        """Count `found` (unseeded's answer) in the buckets that still hold no counter (run
        it in one store batch, so two bridges never both count it); micro-dollars added."""
        added = 0
        for bucket, amount in found:
            committed = self._key("committed", scope, bucket)
            if not self._exists(committed):
                self.store.incr(committed, amount)
                self.store.incr(self._key("spent", scope, bucket), amount)
                added += amount
        return added

    def _exists(self, key: str) -> bool:
        # scan, not get: a busy store raises instead of reading as "no counter", which
        # would count the same calls again.
        return key in self.store.scan(key)

    def reserve(self, budgets: list[tuple[str, Budget]], amount: int
                ) -> tuple[Reservation, Refusal | None]:
        """Hold `amount` against every blocking budget, all or none; a `warn` budget that
        would be passed doesn't refuse but is reported as the refusal (action warn)."""
        held: list[tuple[str, str]] = []
        try:
            return self._reserve(budgets, amount, held)
        except Exception:
            # A busy store mid-way must not leave money held in the budgets already done.
            for s, b in held:
                try:
                    self.store.release(self._key("committed", s, b), amount)
                except Exception:
                    pass
            raise

    def _reserve(self, budgets: list[tuple[str, Budget]], amount: int,
                 held: list[tuple[str, str]]) -> tuple[Reservation, Refusal | None]:
        warned: Refusal | None = None
        now = self.wall()
        for scope, budget in budgets:
            w = window_of(budget, now)
            key = self._key("committed", scope, w.bucket)
            earlier = sum(self.store.get_int(self._key("committed", scope, b))
                          for b in w.earlier)
            limit = budget.limit_usd - earlier
            if self.store.reserve(key, amount, limit):
                held.append((scope, w.bucket))
                continue
            refusal = Refusal(scope, budget.limit_usd, earlier + self.store.get_int(key),
                              w.resets_at, budget.action)
            if budget.action == "block":
                for s, b in held:
                    self.store.release(self._key("committed", s, b), amount)
                self._note_refusal(scope, w.bucket, amount)
                return Reservation(0, ()), refusal
            # warn: count it anyway, so reports and alerts see the overspend
            self.store.incr(key, amount)
            held.append((scope, w.bucket))
            warned = warned or refusal
        return Reservation(amount, tuple(held)), warned

    def _note_refusal(self, scope: str, bucket: str, amount: int) -> None:
        """Keep the last worst case this budget refused, for `bridge spend` to explain."""
        key = self._key("refused", scope, bucket)
        if self.store.peek(key) != amount:  # a storm of refusals writes once
            self.store.set(key, amount)

    def last_refused(self, scope: str, budget: Budget) -> int | None:
        """The worst case (micro-dollars) this budget last refused in its current bucket."""
        got = self.store.peek(self._key("refused", scope, window_of(budget, self.wall()).bucket))
        return got if type(got) is int else None

    def committed_keys(self, reservation: Reservation) -> list[str]:
        """The store keys a reservation holds money in."""
        return [self._key("committed", scope, bucket) for scope, bucket in reservation.held]

    def settle(self, reservation: Reservation, cost: int) -> None:
        """Replace the reservation by the real cost (micro-dollars) in every budget held."""
        self.settle_many([(reservation, cost)])

    def settle_many(self, items: list[tuple[Reservation, int | None]]) -> None:
        """Settle (a cost in micro-dollars) or release (None) many reservations with one
        write per budget key: what a batch of finished requests changes, summed first."""
        deltas: dict[str, int] = {}
        for reservation, cost in items:
            for scope, bucket in reservation.held:
                committed = self._key("committed", scope, bucket)
                if cost is None:
                    deltas[committed] = deltas.get(committed, 0) - reservation.amount
                    continue
                deltas[committed] = deltas.get(committed, 0) + cost - reservation.amount
                spent = self._key("spent", scope, bucket)
                deltas[spent] = deltas.get(spent, 0) + cost
        for key, delta in deltas.items():
            if delta > 0:
                self.store.incr(key, delta)
            elif delta < 0:
                self.store.release(key, -delta)

    def release(self, reservation: Reservation) -> None:
        """The request failed before costing anything: give the money back."""
        self.settle_many([(reservation, None)])

    def crossed_alert(self, scope: str, budget: Budget) -> bool:
        """True exactly once per period, when the committed money first reaches alert_at."""
        if self.committed(scope, budget) < budget.alert_at * budget.limit_usd:
            return False
        w = window_of(budget, self.wall())
        return self.store.incr(self._key("alerted", scope, w.bucket)) == 1

    def reset(self, scope: str) -> int:
        """Forget every period of a scope; how many keys went."""
        keys = [k for kind in ("committed", "spent", "alerted", "refused")
                for k in self.store.scan(make_key("budget", kind, scope) + ":")]
        for k in keys:
            self.store.delete(k)
        return len(keys)

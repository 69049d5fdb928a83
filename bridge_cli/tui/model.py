"""What the dashboard knows of the bridge, built from the control API's events alone.

Plain Python, no Textual: the feed applies events here as they arrive, and the screen
reads it on a timer, so a burst of events costs one redraw. Every collection is bounded
(flows, findings, per-second series), so the dashboard's memory stays flat however long
it runs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

KEEP_FLOWS = 2000  # flows kept for the traffic table
KEEP_FINDINGS = 500  # drift findings kept
SERIES = 180  # seconds of requests/s and latency kept for the sparklines
LATENCY_SAMPLES = 256  # latencies kept per second for its p50/p95


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def status_class(status: int | None) -> str:
    """'2xx' ... '5xx', or 'err' when there was no answer."""
    return f"{status // 100}xx" if status else "err"


@dataclass
class FlowFilter:
    """The `/` filter: every word must match — `5xx` a status class, a route's name, or else
    text in the path."""

    text: str = ""

    def matches(self, flow: dict, routes: set[str]) -> bool:
        for word in self.text.split():
            if len(word) == 3 and word.endswith("xx"):
                if status_class(flow.get("status")) != word.lower():
                    return False
            elif word in routes:
                if flow.get("route") != word:
                    return False
            elif word.lower() not in (flow.get("url") or "").lower():
                return False
        return True


@dataclass
class Second:
    """One second of traffic as the flows told it."""

    at: int
    latencies: list[float] = field(default_factory=list)


@dataclass
class Model:
    """The dashboard's state. `version` grows with every change the screen must show."""

    keep: int = KEEP_FLOWS
    clock: Callable[[], float] = time.time
    flows: deque = field(default_factory=deque)
    breakers: dict[tuple[str, str], dict] = field(default_factory=dict)
    transitions: dict[tuple[str, str], dict] = field(default_factory=dict)
    faults: list[dict] = field(default_factory=list)
    findings: deque = field(default_factory=lambda: deque(maxlen=KEEP_FINDINGS))
    spend: dict | None = None
    routes: dict[str, dict] = field(default_factory=dict)
    alert_at: dict[str, float] = field(default_factory=dict)  # budget scope -> share
    seconds: deque = field(default_factory=lambda: deque(maxlen=SERIES))
    rps: deque = field(default_factory=lambda: deque(maxlen=SERIES))
    notice: str | None = None
    last_id: int = 0
    dropped: int = 0
    total_events: int = 0
    version: int = 0
    _last_total: tuple[float, int] | None = None

    def __post_init__(self) -> None:
        self.flows = deque(maxlen=self.keep)

    # --- events --------------------------------------------------------------------
    def apply(self, kind: str, data: dict, event_id: int | None = None) -> None:
        """Fold one event of the stream into the state."""
        if event_id is not None:
            self.last_id = event_id
            self.total_events += 1
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(data)
            self.version += 1

    def _on_flow(self, d: dict) -> None:
        self.flows.appendleft(d)
        at = int(d.get("ts") or self.clock())
        if not self.seconds or self.seconds[-1].at < at:
            self.seconds.append(Second(at))
        bucket = self.seconds[-1]
        if len(bucket.latencies) < LATENCY_SAMPLES:
            bucket.latencies.append(float(d.get("duration_ms") or 0.0))

    def _on_breaker(self, d: dict) -> None:
        key = (d["route"], d["upstream"])
        self.transitions[key] = {"old": d["old"], "new": d["new"], "ts": d.get("ts"),
                                 "reason": d.get("reason")}
        self.breakers.setdefault(key, {})["state"] = d["new"]

    def _on_fault(self, d: dict) -> None:
        if d.get("what") == "cleared":
            self.faults = [f for f in self.faults if f.get("name") != d.get("name")]
        elif not any(f.get("name") == d.get("name") for f in self.faults):
            self.faults.append({"name": d["name"], "route": d.get("route"),
                                "does": d.get("does"), "hits": 0, "remaining_s": None})

    def _on_drift(self, d: dict) -> None:
        self.findings.appendleft(d)

    def _on_budget_alert(self, d: dict) -> None:
        self.notice = f"budget {d['scope']}: {d['what']} (${d['committed_usd']} of ${d['limit_usd']})"

    def _on_notice(self, d: dict) -> None:
        self.notice = d.get("message")

    def _on_dropped(self, d: dict) -> None:
        self.dropped += int(d.get("dropped", 0))

    def _on_stats(self, d: dict) -> None:
        self.routes = d.get("routes", {})
        self.faults = list(d.get("faults", []))
        self.alert_at = d.get("alert_at", {})
        for b in d.get("breakers", []):
            self.breakers[(b["route"], b["upstream"])] = b
        total = sum(r.get("requests", 0) for r in self.routes.values())
        now = float(d.get("ts") or self.clock())
        if self._last_total is not None and now > self._last_total[0]:
            then, before = self._last_total
            self.rps.append(max(0, total - before) / (now - then))
        self._last_total = (now, total)

    def set_drift(self, report: dict) -> None:
        """The findings of GET /api/v1/drift (on connect); events add to them."""
        self.findings.clear()
        self.findings.extend(report.get("findings", [])[:KEEP_FINDINGS])
        self.version += 1

    def set_spend(self, report: dict) -> None:
        self.spend = report
        self.version += 1

    def restarted(self) -> None:
        """The bridge behind the URL is a new one: its ids begin again."""
        self.last_id = 0
        self._last_total = None
        self.breakers.clear()
        self.transitions.clear()
        self.version += 1

    # --- what the screen shows -------------------------------------------------------
    def visible_flows(self, flt: FlowFilter, limit: int) -> list[dict]:
        """The newest `limit` flows the filter lets through, newest first."""
        names = set(self.routes) | {f.get("route") for f in list(self.flows)[:50] if f.get("route")}
        out = []
        for flow in self.flows:
            if flt.matches(flow, names):
                out.append(flow)
                if len(out) >= limit:
                    break
        return out

    def latency_series(self, q: float) -> list[float]:
        return [percentile(s.latencies, q) for s in self.seconds]

    def requests_per_second(self) -> float:
        return self.rps[-1] if self.rps else 0.0

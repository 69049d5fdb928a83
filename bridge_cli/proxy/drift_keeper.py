"""What drift checking knows, kept in memory for the request path and in the store behind
it: learned baselines and findings load once per route, checks run against memory, and
what changed is written by a background task every second (and at stop), never on a
request. Policy is engine/drift.py's; the records are store/drift.py's."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from bridge_cli.common.store import Store
from bridge_cli.engine.drift import Baseline, Finding
from bridge_cli.errors import StoreError
from bridge_cli.resources import data_dir
from bridge_cli.store.drift import DriftRecords

log = logging.getLogger("bridge.drift")
FLUSH_EVERY = 1.0  # seconds between background writes
BUILTIN = "builtin:"


class DriftKeeper:
    """Baselines and known findings per route, in memory; writes behind."""

    def __init__(self, store: Store) -> None:
        self.records = DriftRecords(store, Baseline, Finding)
        self.baselines: dict[tuple[str, str], Baseline] = {}
        self.known: dict[str, Finding] = {}  # finding key -> the finding (count kept here)
        self._loaded: set[str] = set()
        self._dirty: set[tuple[str, str]] = set()
        self._new: dict[str, Finding] = {}  # to store: each finding, count = times since last
        self._schemas: dict[str, dict] = {}
        self._task: asyncio.Task | None = None

    def load(self, route: str) -> None:
        """A route's stored baselines and findings, once (a busy store: start empty)."""
        if route in self._loaded:
            return
        self._loaded.add(route)
        try:
            for key, baseline in self.records.baselines(route).items():
                self.baselines.setdefault(key, baseline)
            for f in self.records.findings(route):
                self.known.setdefault(f.key, f)
        except (StoreError, ValueError) as e:
            log.warning("drift: could not read what route %s learned before: %s", route, e)

    def baseline(self, route: str, endpoint: str) -> Baseline:
        self.load(route)
        return self.baselines.setdefault((route, endpoint), Baseline())

    def changed(self, route: str, endpoint: str) -> None:
        self._dirty.add((route, endpoint))

    def note(self, findings: list[Finding]) -> list[Finding]:
        """Count findings; returns the ones never seen before (raised once, no flapping)."""
        new = []
        for f in findings:
            seen = self.known.get(f.key)
            if seen is None:
                self.known[f.key] = f
                new.append(f)
            else:
                seen.count += f.count
            delta = self._new.get(f.key)
            if delta is None:  # what the store has not heard yet: the finding, count = times
                self._new[f.key] = Finding.from_dict({**f.to_dict(), "count": f.count})
            else:
                delta.count += f.count
        return new

    def schema(self, name: str) -> dict | None:
        """A supplied JSON Schema (a file or builtin:NAME), read once; None if unreadable."""
        if name not in self._schemas:
            path = (data_dir("schemas") / "builtin" / f"{name[len(BUILTIN):]}.json"
                    if name.startswith(BUILTIN) else Path(name))
            try:
                self._schemas[name] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                log.warning("drift: schema %s can't be read (%s); not checked", name, e)
                self._schemas[name] = None
        return self._schemas[name]

    # --- writing behind ------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._flush_loop())

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            work = self._take()
            if work[0] or work[1]:
                await loop.run_in_executor(None, self._write, *work)

    def _take(self) -> tuple[list, list]:
        """What to write, snapshotted on the loop (baselines change only there)."""
        baselines = [(r, e, Baseline.from_dict(self.baselines[(r, e)].to_dict()))
                     for r, e in self._dirty if (r, e) in self.baselines]
        findings = list(self._new.values())
        self._dirty, self._new = set(), {}
        return baselines, findings

    def _write(self, baselines: list, findings: list) -> None:
        try:
            for route, endpoint, baseline in baselines:
                self.records.save_baseline(route, endpoint, baseline)
            if findings:
                self.records.record(findings)
        except StoreError as e:  # advice, not money: the next change writes again
            log.warning("drift: could not store what was learned: %s", e)

    def stop(self) -> None:
        """Write what is left (call at shutdown, off the event loop or after it stopped)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._write(*self._take())

"""Drift records: each endpoint's learned baseline, and the changes found in its bodies.

    drift:baseline:<route>:<endpoint>   {"format": 1, "route": ..., "endpoint": ...,
                                         "baseline": <the baseline's own dict>}
    drift:finding:<route>:<hash>        {"format": 1, "finding": <the finding's own dict>}

<hash> is a digest of the finding's key (route|endpoint|path|kind|after): one record per
distinct change, whose count goes up each time the change is seen again (no flapping).
The baseline and finding codecs are engine/drift.py's `Baseline` and `Finding`, passed in
(store/ knows no policy); each carries its own format inside the record's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any, Protocol

from bridge_cli.common.store import Store, make_key, split_key

log = logging.getLogger("bridge.store")

DRIFT_FORMAT = 1  # of a record; bump on an incompatible change (older bridges skip newer ones)
SEVERITY_ORDER = {"breaking": 0, "additive": 1, "loosening": 2}


class BaselineCodec(Protocol):
    """What DriftRecords needs of a baseline (engine/drift.py's Baseline)."""

    def to_dict(self) -> dict: ...
    def accept(self) -> None: ...
    @classmethod
    def from_dict(cls, d: dict) -> Any: ...


class FindingCodec(Protocol):
    """What DriftRecords needs of a finding (engine/drift.py's Finding)."""

    route: str
    endpoint: str
    severity: str
    first_seen: float  # epoch seconds
    count: int

    @property
    def key(self) -> str: ...
    def to_dict(self) -> dict: ...
    @classmethod
    def from_dict(cls, d: dict) -> Any: ...


class DriftRecords[B: BaselineCodec, F: FindingCodec]:
    """Learned baselines and drift findings over any Store; `baseline` and `finding` are
    the codec classes (engine/drift.py's Baseline and Finding)."""

    FORMAT = DRIFT_FORMAT

    def __init__(self, store: Store, baseline: type[B], finding: type[F]) -> None:
        self.store = store
        self._baseline = baseline
        self._finding = finding

    @staticmethod
    def baseline_key(route: str, endpoint: str) -> str:
        return make_key("drift", "baseline", route, endpoint)

    @staticmethod
    def finding_key(route: str, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return make_key("drift", "finding", route, digest)

    # --- baselines -------------------------------------------------------------------
    def baselines(self, route: str | None = None) -> dict[tuple[str, str], B]:
        """Every readable baseline (of `route`, or all), by (route, endpoint)."""
        out: dict[tuple[str, str], B] = {}
        for key in self.store.scan(_prefix("baseline", route)):
            value = self._unwrap(key, "baseline")
            if value is None:
                continue
            record, inner = value
            parts = split_key(key)  # drift, baseline, route, endpoint
            where = (record.get("route", parts[2]), record.get("endpoint", parts[-1]))
            baseline = self._decode(key, self._baseline, inner)
            if baseline is not None and all(isinstance(w, str) for w in where):
                out[where] = baseline
        return out

    def save_baseline(self, route: str, endpoint: str, baseline: B) -> None:
        """Store one endpoint's baseline; StoreError when the store is busy."""
        self.store.set(self.baseline_key(route, endpoint), {
            "format": DRIFT_FORMAT, "route": route, "endpoint": endpoint,
            "baseline": baseline.to_dict()})

    # --- findings --------------------------------------------------------------------
    def findings(self, route: str | None = None) -> list[F]:
        """Every readable finding (of `route`, or all): breaking first, then the newest."""
        found = [f for _, f in self._findings(route)]
        found.sort(key=lambda f: (f.route, f.endpoint))
        found.sort(key=lambda f: (SEVERITY_ORDER.get(f.severity, 3), -f.first_seen))
        return found

    def record(self, findings: list[F]) -> list[F]:
        """Store new findings; one already stored (same key) only adds to its stored count.
        Returns the new ones. One transaction, so two bridges never raise one change twice."""
        new: list[F] = []
        with self.store.batch():
            for f in findings:
                key = self.finding_key(f.route, f.key)
                value = self._unwrap(key, "finding")
                stored = None if value is None else self._decode(key, self._finding, value[1])
                if stored is None:
                    new.append(f)
                    inner = f.to_dict()
                else:  # the stored record keeps its first_seen and example flow
                    inner = {**value[1], "count": stored.count + f.count}
                self.store.set(key, {"format": DRIFT_FORMAT, "finding": inner})
        return new

    def accept(self, route: str | None = None, endpoint: str | None = None) -> int:
        """Baselines adopt their observed shape and the matching findings are removed (of
        `route` and `endpoint`, or all); how many endpoints were accepted."""
        accepted: set[tuple[str, str]] = set()
        with self.store.batch():
            for (r, e), baseline in self.baselines(route).items():
                if endpoint is None or e == endpoint:
                    baseline.accept()
                    self.save_baseline(r, e, baseline)
                    accepted.add((r, e))
            for key, f in self._findings(route):
                if endpoint is None or f.endpoint == endpoint:
                    self.store.delete(key)
                    accepted.add((f.route, f.endpoint))
        return len(accepted)

    def clear(self, route: str | None = None) -> int:
        """Forget the baselines and findings of `route` (or all); how many records went."""
        keys = [*self.store.scan(_prefix("baseline", route)),
                *self.store.scan(_prefix("finding", route))]
        with self.store.batch():
            return sum(self.store.delete(k) for k in keys)

    def routes(self) -> list[str]:
        """The routes that have any drift record, sorted."""
        return sorted({split_key(k)[2] for k in self.store.scan(make_key("drift") + ":")
                       if len(split_key(k)) == 4})

    # --- reading ---------------------------------------------------------------------
    def _findings(self, route: str | None) -> Iterator[tuple[str, F]]:
        for key in self.store.scan(_prefix("finding", route)):
            value = self._unwrap(key, "finding")
            finding = None if value is None else self._decode(key, self._finding, value[1])
            if finding is not None:
                yield key, finding

    def _unwrap(self, key: str, field: str) -> tuple[dict, dict] | None:
        """(the record, its inner dict) at key, or None: missing, busy, malformed, newer."""
        record = self.store.get(key)
        if not isinstance(record, dict):
            return None
        fmt = record.get("format")
        if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > DRIFT_FORMAT:
            log.warning("drift record %s is of format %r, which this bridge does not read; "
                        "ignored", key, fmt)
            return None
        inner = record.get(field)
        return (record, inner) if isinstance(inner, dict) else None

    @staticmethod
    def _decode(key: str, codec: type, inner: dict) -> Any:
        try:
            return codec.from_dict(inner)
        except (ValueError, TypeError, KeyError) as e:
            log.warning("drift record %s is unreadable (%s); ignored", key, e)
            return None


def _prefix(kind: str, route: str | None) -> str:
    """The scan prefix of one kind of record, of one route or of all."""
    return (make_key("drift", kind, route) if route is not None else make_key("drift", kind)) + ":"

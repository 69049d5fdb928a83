"""Fault injection: which tries a fault hits, reproducibly, and what it does to them.

Every decision derives from (seed, fault name, the request's index for that fault), never
from a shared random stream, so the same seed and the same request sequence fault the same
requests whatever else runs, and keep-alive can't make a fault sticky. A fault with
`stage: upstream` (the default) is decided per try, inside the attempt loop, so retries and
breakers see it like a real failure; `stage: client` is decided once per request on the
final answer, after bridge's own retries. What a fault does is up to its kinds
(engine/faults/): this module only asks them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from bridge_cli.config.model import Fault
from bridge_cli.engine.faults import (
    PRESETS,
    Draw,
    Hit,
    Preset,
    Shaping,
    corrupt_body,
    kinds_of,
    options,
)
from bridge_cli.engine.routing import path_matches
from bridge_cli.engine.spend import request_model

# Re-exported: the proxy and the tests import these from here.
__all__ = [
    "PRESETS", "ActiveFault", "Chaos", "Hit", "Preset", "Shaping", "corrupt_body",
    "describe", "effect", "parse_fault_header", "resolve_answer", "shaping_of",
]  # fmt: skip


def _unit(seed: int, name: str, index: int, salt: str = "") -> float:
    """A uniform draw in [0, 1) that depends only on its arguments."""
    digest = hashlib.sha256(f"{seed}\x00{name}\x00{index}\x00{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def effect(fault: Fault, draw: Draw, model: str | None = None) -> Hit:
    """What `fault` does to a try it hits (of a request naming `model`): each of its kinds
    in registry order."""
    part = Hit(names=[fault.name], request_model=model)
    shaping: dict = {}
    for kind in kinds_of(fault):
        kind.on_request(fault, part, draw)
        shaping |= kind.shaping(fault)
    part.shaping = Shaping(**shaping) if shaping else None
    return part


def shaping_of(fault: Fault) -> Shaping | None:
    """The response-side part of a fault, or None when it has none."""
    return effect(fault, lambda salt: 0.5).shaping


def resolve_answer(fault: Fault) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a fault's injected answer (503 when it has none)."""
    part = effect(fault, lambda salt: 0.5)
    return part.status or 503, part.headers, part.body


@dataclass
class ActiveFault:
    """A fault bridge is applying, with its counters. Times are monotonic seconds."""

    fault: Fault
    started: float
    source: str = "config"  # config | api | header
    index: int = 0  # matching tries seen so far (the index of the next one)
    hits: int = 0

    def expired(self, now: float) -> bool:
        f = self.fault
        if f.count is not None and self.hits >= f.count:
            return True
        return f.for_ is not None and now - self.started >= f.for_

    def matches(self, route: str, upstream: str | None, method: str, path: str,
                headers: dict[str, str]) -> bool:
        f = self.fault
        if f.route not in ("*", route):
            return False
        if f.upstream is not None and upstream is not None and f.upstream != upstream:
            return False
        m = f.match
        if m is None:
            return True
        if m.method is not None and m.method != method.upper():
            return False
        if m.path is not None and not path_matches(m.path, path):
            return False
        return all(headers.get(k.lower()) == v for k, v in m.header.items())

    def fires(self, seed: int) -> bool:
        """Count this matching try and decide whether the fault hits it."""
        i = self.index
        self.index += 1
        f = self.fault
        if f.first is not None and i >= f.first:
            return False
        if f.every is not None and (i + 1) % f.every != 0:
            return False
        if f.probability <= 0.0:
            return False
        return f.probability >= 1.0 or _unit(seed, f.name, i) < f.probability

    def snapshot(self, now: float) -> dict:
        f = self.fault
        left = None if f.for_ is None else max(0.0, f.for_ - (now - self.started))
        return {
            "name": f.name,
            "route": f.route,
            "upstream": f.upstream,
            "stage": f.stage,
            "source": self.source,
            "does": describe(f),
            "probability": f.probability,
            "hits": self.hits,
            "matched": self.index,
            "count": f.count,
            "remaining_s": round(left, 1) if left is not None else None,
        }


class Chaos:
    """The active faults of a running bridge; `clock` gives monotonic seconds."""

    def __init__(self, seed: int, clock: Callable[[], float]) -> None:
        self.seed = seed
        self.clock = clock
        self.faults: dict[str, ActiveFault] = {}
        # Faults that ran out (count or `for`): their last snapshot, so a test can still
        # read the hits, and so a reload doesn't re-arm a finished config fault.
        self.finished: dict[str, ActiveFault] = {}

    def add(self, fault: Fault, source: str = "api") -> ActiveFault:
        """Start applying `fault` (replacing one of the same name)."""
        active = ActiveFault(fault, self.clock(), source)
        self.faults[fault.name] = active
        self.finished.pop(fault.name, None)
        return active

    def remove(self, name: str) -> bool:
        return self.faults.pop(name, None) is not None

    def clear(self) -> int:
        n = len(self.faults)
        self.faults.clear()
        return n

    def sync_config(self, faults: Iterable[Fault]) -> None:
        """After a reload: config faults follow the file; faults added through the API stay."""
        wanted = {f.name: f for f in faults}
        for name, active in list(self.faults.items()):
            if active.source == "config" and wanted.get(name) != active.fault:
                del self.faults[name]
        for name, f in wanted.items():
            done = self.finished.get(name)
            if name not in self.faults and not (done is not None and done.fault == f):
                self.add(f, "config")

    def _expire(self) -> None:
        now = self.clock()
        for name in [n for n, a in self.faults.items() if a.expired(now)]:
            self.finished[name] = self.faults.pop(name)
        while len(self.finished) > 256:  # keep the newest few hundred
            self.finished.pop(next(iter(self.finished)))

    def decide(self, stage: str, route: str, upstream: str | None, method: str, path: str,
               headers: dict[str, str], extra: Iterable[ActiveFault] = (),
               body: bytes = b"") -> Hit | None:
        """The faults of `stage` that hit this try (or final answer), merged; None: none.
        `body`: the request's, read only when a preset fault hits (its model is quoted)."""
        self._expire()
        hit = Hit()
        model: list[str | None] = []  # the request's model, once asked
        for active in [*self.faults.values(), *extra]:
            f = active.fault
            if f.stage != stage or not active.matches(route, upstream, method, path, headers):
                continue
            if not active.fires(self.seed):
                continue
            active.hits += 1
            if "preset" in f.actions and not model:
                model.append(request_model(path, body))
            hit.add(effect(f, partial(_unit, self.seed, f.name, active.index - 1),
                           model[0] if model else None))
        return hit if hit.names else None

    def snapshot(self) -> list[dict]:
        self._expire()
        now = self.clock()
        return [a.snapshot(now) for a in self.faults.values()]

    def finished_snapshot(self) -> list[dict]:
        """Faults that removed themselves (count reached, `for` over), with their final hits."""
        self._expire()
        now = self.clock()
        return [{**a.snapshot(now), "remaining_s": 0.0} for a in self.finished.values()]


def describe(f: Fault) -> str:
    """What a fault does, in words, for `bridge chaos inject` and `list`."""
    parts = [text for kind in kinds_of(f) if (text := kind.describe(f))]
    where = f"route {f.route}" if f.route != "*" else "every route"
    if f.upstream:
        where += f", upstream {f.upstream}"
    odds = []
    if f.probability < 1.0:
        odds.append(f"{f.probability:.0%} of requests")
    if f.every:
        odds.append(f"every {f.every}th")
    if f.first:
        odds.append(f"the first {f.first}")
    if f.count:
        odds.append(f"at most {f.count} times")
    if f.for_:
        odds.append(f"for {f.for_:g}s")
    return f"{', '.join(parts) or 'nothing'} on {where}" + (f" ({', '.join(odds)})" if odds else "")


def parse_fault_header(value: str) -> dict:
    """`x-bridge-fault: status=503; latency=2s` -> config keys of a one-request fault.
    A bare word (`reset`, `corrupt`, `hang`) means true. ValueError names a bad part."""
    settable = {key: option for key, (_, option) in options().items() if option.in_header}
    raw: dict = {"name": "x-bridge-fault"}
    for part in value.replace(",", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        key, eq, val = part.partition("=")
        key = key.strip().replace("-", "_")
        if key not in settable:
            raise ValueError(f"unknown fault key {key!r} (use one of {', '.join(sorted(settable))})")
        raw[key] = settable[key].from_text(val.strip()) if eq else True
    if len(raw) == 1:
        raise ValueError("empty fault: say what to do, e.g. status=503 or latency=2s")
    return raw

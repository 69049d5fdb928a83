"""Fault injection: which tries a fault hits, reproducibly, and what it does to them.

Every decision derives from (seed, fault name, the request's index for that fault), never
from a shared random stream, so the same seed and the same request sequence fault the same
requests whatever else runs, and keep-alive can't make a fault sticky. A fault with
`stage: upstream` (the default) is decided per try, inside the attempt loop, so retries and
breakers see it like a real failure; `stage: client` is decided once per request on the
final answer, after bridge's own retries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bridge_cli.config.model import Fault
from bridge_cli.engine.routing import path_matches

# What a fault does before or instead of the upstream call (decided per try) ...
REQUEST_ACTIONS = ("latency", "status", "preset", "reset", "hang")
# ... and what it does to the body of the answer the client gets.
RESPONSE_ACTIONS = ("throttle", "slow_first_byte", "truncate", "corrupt", "sse_cut_after",
                    "sse_delay")


def _unit(seed: int, name: str, index: int, salt: str = "") -> float:
    """A uniform draw in [0, 1) that depends only on its arguments."""
    digest = hashlib.sha256(f"{seed}\x00{name}\x00{index}\x00{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Shaping:
    """How to deliver a faulted body: units bytes, bytes/s, seconds."""

    throttle: int | None = None
    slow_first_byte: float | None = None
    truncate: int | float | None = None  # int: bytes; float: fraction of the body
    sse_cut_after: int | None = None
    sse_delay: float | None = None
    corrupt: bool = False

    def merge(self, other: Shaping) -> Shaping:
        """Both faults' effects; the later one wins where both set a knob."""
        return Shaping(**{k: getattr(other, k) if getattr(other, k) not in (None, False)
                          else getattr(self, k) for k in self.__dataclass_fields__})

    def truncate_at(self, length: int | None) -> int | None:
        """Bytes to let through before cutting, for a body of `length` bytes (None: unknown)."""
        if self.truncate is None:
            return None
        if isinstance(self.truncate, float):
            return None if length is None else int(length * self.truncate)
        return self.truncate


def shaping_of(fault: Fault) -> Shaping | None:
    """The response-side part of a fault, or None when it has none."""
    s = Shaping(fault.throttle, fault.slow_first_byte, fault.truncate, fault.sse_cut_after,
                fault.sse_delay, fault.corrupt)
    return s if s != Shaping() else None


def has_request_action(fault: Fault) -> bool:
    return bool(fault.latency or fault.jitter or fault.status or fault.preset or fault.reset
                or fault.hang)


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

    def delay(self, seed: int) -> float:
        """Seconds of latency for the hit just decided: latency ± jitter, never negative."""
        f = self.fault
        base = f.latency or 0.0
        if f.jitter:
            base += (2 * _unit(seed, f.name, self.index - 1, "jitter") - 1) * f.jitter
        return max(0.0, base)

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


@dataclass
class Hit:
    """What the faults that hit one try (or one final answer) add up to."""

    names: list[str] = field(default_factory=list)
    delay: float = 0.0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reset: bool = False
    hang: float | bool | None = None
    shaping: Shaping | None = None

    @property
    def terminal(self) -> bool:
        """Does the try end without the upstream being called?"""
        return self.status is not None or self.reset or bool(self.hang)


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
               headers: dict[str, str], extra: Iterable[ActiveFault] = ()) -> Hit | None:
        """The faults of `stage` that hit this try (or final answer), merged; None: none."""
        self._expire()
        hit = Hit()
        for active in [*self.faults.values(), *extra]:
            f = active.fault
            if f.stage != stage or not active.matches(route, upstream, method, path, headers):
                continue
            if not active.fires(self.seed):
                continue
            active.hits += 1
            hit.names.append(f.name)
            hit.delay += active.delay(self.seed)
            if not hit.terminal:
                if f.status or f.preset:
                    status, hdrs, body = resolve_answer(f)
                    hit.status, hit.headers, hit.body = status, hdrs, body
                elif f.reset:
                    hit.reset = True
                elif f.hang:
                    hit.hang = f.hang
            s = shaping_of(f)
            if s is not None:
                hit.shaping = s if hit.shaping is None else hit.shaping.merge(s)
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


# --- answers -------------------------------------------------------------------------------

def resolve_answer(f: Fault) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a fault's injected answer (preset parts overridable)."""
    status, headers, body = 503, {"content-type": "application/json"}, b""
    if f.preset is not None:
        p = PRESETS[f.preset]
        status, headers, body = p.status, dict(p.headers), p.body
    if f.status is not None:
        status = f.status
        if f.preset is None and f.body is None:
            body = json.dumps({"error": {"type": "injected_fault", "message":
                                         f"bridge chaos: fault '{f.name}' answered {status}"}}).encode()
    headers.update({k.lower(): v for k, v in f.headers.items()})
    if f.body is not None:
        body = f.body.encode()
    return status, headers, body


def corrupt_body(body: bytes, content_type: str) -> bytes:
    """Malformed JSON of the same content type: the first half of the body, unterminated."""
    if not body:
        return b'{"'
    cut = body[: max(1, len(body) // 2)]
    return cut + (b'"\x00{' if b"json" in content_type.encode().lower() or body[:1] in b"{[" else b"\x00")


def describe(f: Fault) -> str:
    """What a fault does, in words, for `bridge chaos inject` and `list`."""
    parts = []
    if f.preset:
        parts.append(f"answer like {f.preset}")
    elif f.status:
        parts.append(f"answer {f.status}")
    if f.latency or f.jitter:
        parts.append(f"add {f.latency or 0:g}s latency" + (f" ±{f.jitter:g}s" if f.jitter else ""))
    if f.reset:
        parts.append("drop the connection")
    if f.hang:
        parts.append("hang" + ("" if f.hang is True else f" for {f.hang:g}s"))
    if f.throttle:
        parts.append(f"throttle to {f.throttle} B/s")
    if f.slow_first_byte:
        parts.append(f"delay the first byte {f.slow_first_byte:g}s")
    if f.truncate is not None:
        parts.append(f"truncate after {f.truncate:.0%}" if isinstance(f.truncate, float)
                     else f"truncate after {f.truncate} bytes")
    if f.corrupt:
        parts.append("corrupt the body")
    if f.sse_cut_after is not None:
        parts.append(f"cut SSE streams after {f.sse_cut_after} events")
    if f.sse_delay:
        parts.append(f"delay each SSE event {f.sse_delay:g}s")
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


@dataclass(frozen=True)
class Preset:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _json(obj) -> bytes:
    return json.dumps(obj, indent=2).encode() + b"\n"


# Real providers' error answers, in shape and headers, so SDKs parse them as they would
# the real thing (the openai SDK raises RateLimitError for openai-429).
PRESETS: dict[str, Preset] = {
    "openai-429": Preset(429, (
        ("content-type", "application/json"),
        ("retry-after", "1"),
        ("x-ratelimit-limit-requests", "500"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "120ms"),
        ("x-ratelimit-limit-tokens", "30000"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "1s"),
        ("x-request-id", "req_bridge_chaos"),
    ), _json({"error": {
        "message": "Rate limit reached for gpt-4o in organization org-bridgechaos on requests "
                   "per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms. "
                   "Visit https://platform.openai.com/account/rate-limits to learn more.",
        "type": "requests", "param": None, "code": "rate_limit_exceeded"}})),
    "openai-500": Preset(500, (
        ("content-type", "application/json"),
        ("x-request-id", "req_bridge_chaos"),
    ), _json({"error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error", "param": None, "code": None}})),
    "anthropic-429": Preset(429, (
        ("content-type", "application/json"),
        ("retry-after", "1"),
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:01Z"),
        ("request-id", "req_bridgechaos"),
        ("x-should-retry", "true"),
    ), json.dumps({"type": "error", "error": {
        "type": "rate_limit_error",
        "message": "Number of request tokens has exceeded your per-minute rate limit "
                   "(https://docs.anthropic.com/en/api/rate-limits); see the response headers "
                   "for current usage. Please reduce the prompt length or the maximum tokens "
                   "requested, or try again later."}}).encode()),
    "anthropic-529-overloaded": Preset(529, (
        ("content-type", "application/json"),
        ("request-id", "req_bridgechaos"),
        ("x-should-retry", "true"),
    ), json.dumps({"type": "error", "error": {"type": "overloaded_error",
                                              "message": "Overloaded"}}).encode()),
    "github-403-rate-limit": Preset(403, (
        ("content-type", "application/json; charset=utf-8"),
        ("x-ratelimit-limit", "60"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1767225600"),
        ("x-ratelimit-used", "60"),
        ("x-ratelimit-resource", "core"),
        ("x-github-media-type", "github.v3; format=json"),
    ), json.dumps({
        "message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: "
                   "Authenticated requests get a higher rate limit. Check out the documentation "
                   "for more details.)",
        "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api"
                             "#rate-limiting"}).encode()),
}


HEADER_KEYS = {"status", "preset", "latency", "jitter", "reset", "hang", "throttle",
               "slow_first_byte", "truncate", "corrupt", "sse_cut_after", "sse_delay"}


def parse_fault_header(value: str) -> dict:
    """`x-bridge-fault: status=503; latency=2s` -> config keys of a one-request fault.
    A bare word (`reset`, `corrupt`, `hang`) means true. ValueError names a bad part."""
    raw: dict = {"name": "x-bridge-fault"}
    for part in value.replace(",", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        key, eq, val = part.partition("=")
        key = key.strip().replace("-", "_")
        if key not in HEADER_KEYS:
            raise ValueError(f"unknown fault key {key!r} (use one of {', '.join(sorted(HEADER_KEYS))})")
        val = val.strip()
        if not eq:
            raw[key] = True
        elif key in ("status", "sse_cut_after") or (key == "truncate" and val.isdigit()):
            if not val.isdigit():
                raise ValueError(f"{key} needs a whole number, got {val!r}")
            raw[key] = int(val)
        else:
            raw[key] = val
    if len(raw) == 1:
        raise ValueError("empty fault: say what to do, e.g. status=503 or latency=2s")
    return raw

"""The typed config: frozen dataclasses built once at load, with parsed units.

Nothing downstream touches raw dicts or re-parses "30s": durations are float seconds,
percentages float fractions (0.5 for "50%"), rates (count, per-seconds), money integer
micro-dollars, sizes bytes. Field names are the config keys (the user's words).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Defaults that the contract documents (docs/config.md) and the schema repeats.
DEFAULT_PROXY_LISTEN = "127.0.0.1:8080"
DEFAULT_CONTROL_LISTEN = "127.0.0.1:8765"
DEFAULT_RETRY_ON = ("429", "502", "503", "504", "connect", "reset", "timeout")
IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE")


@dataclass(frozen=True)
class Listen:
    """A host:port to bind; port 0 asks the OS for a free one."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Upstream:
    """One place a route can send a request to."""

    name: str
    url: str  # scheme://host[:port][/base-path], no trailing slash
    weight: float = 1.0
    ca_file: str | None = None  # extra CA bundle to trust for this upstream's TLS
    # How a try at this upstream rewrites the request (docs/llm-failover.md): the body's
    # `model`, headers of its own (credentials, `${NAME}` already expanded: never log
    # them, nor repr them), body fields set (None: dropped). Not hashed: a dict can't be.
    model: str | None = None
    headers: dict[str, str] = field(default_factory=dict, hash=False, repr=False)
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    context_window: int | None = None  # tokens
    prefill: bool = True  # False: the model rejects a trailing assistant message

    def rewrites(self) -> bool:
        """Does a try at this upstream change the body or headers the client sent?"""
        return self.model is not None or bool(self.headers) or bool(self.params)


@dataclass(frozen=True)
class Timeout:
    """Per-try timeouts, seconds. `total` bounds a whole non-streamed try; on a stream
    it bounds the time to the first byte and then each idle gap, unless `first_token`
    (request sent -> headers and, on a stream, its first data event) and `idle` (the
    longest gap between pieces of a stream) say otherwise."""

    connect: float = 10.0
    total: float = 60.0
    first_token: float | None = None
    idle: float | None = None

    @property
    def stream_idle(self) -> float:
        return self.idle if self.idle is not None else self.total


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between tries on one upstream (seconds)."""

    initial: float = 0.2
    max: float = 5.0
    jitter: str = "full"  # full | equal | none


@dataclass(frozen=True)
class Retry:
    """How many tries an upstream gets and what moves a request on."""

    attempts: int = 1  # tries per upstream, the first included
    on: tuple[str, ...] = DEFAULT_RETRY_ON  # status codes as strings, and connect/reset/timeout
    methods: tuple[str, ...] = ()  # retried besides the idempotent methods (e.g. POST)
    backoff: Backoff = field(default_factory=Backoff)
    respect_retry_after: bool = True
    budget: float = 0.2  # fraction of the route's requests over the last 10 s
    budget_floor: float = 10.0  # retries per second always allowed


@dataclass(frozen=True)
class SlowCall:
    """A call slower than `duration` (seconds) counts as slow; `rate` opens the breaker."""

    duration: float
    rate: float


@dataclass(frozen=True)
class Breaker:
    """Count-based circuit breaker, one per (route, upstream)."""

    failure_rate: float = 0.5
    window: int = 20
    min_calls: int = 5
    open_for: float = 30.0  # seconds
    half_open_calls: int = 2
    failure_statuses: tuple[int, ...] = (429, *range(500, 600))
    slow_call: SlowCall | None = None


@dataclass(frozen=True)
class Cache:
    """Response cache of a route."""

    ttl: float = 600.0  # seconds
    methods: tuple[str, ...] = ("GET", "HEAD")
    statuses: tuple[int, ...] = (200,)
    vary: tuple[str, ...] = ()
    ignore_query: tuple[str, ...] = ()
    ignore_body_fields: tuple[str, ...] = ()
    namespace: str | None = None
    max_size: int = 1 << 30  # bytes
    max_entry_size: int = 8 << 20  # bytes: a larger answer passes through, not kept
    override: bool = False  # ignore upstream Cache-Control: no-store/private
    replay_pacing: bool = False


@dataclass(frozen=True)
class Rate:
    """`count` per `per` seconds, e.g. 60/min -> Rate(60, 60.0)."""

    count: int
    per: float


@dataclass(frozen=True)
class Spend:
    """How a route's calls are priced."""

    provider: str | None = None  # openai | anthropic | google | mistral | ...
    per_request_usd: dict[str, int] | int | None = None  # micro-dollars, flat or per method
    inject_usage: bool = False
    default_max_tokens: int = 4096  # output tokens a reservation assumes without max_tokens


@dataclass(frozen=True)
class Budget:
    """A spending limit, for a route or global."""

    limit_usd: int  # micro-dollars
    period: str | None = "day"  # hour | day | week | month (calendar, local time)
    rolling: float | None = None  # seconds; replaces period
    alert_at: float = 0.8
    action: str = "block"  # block | warn


@dataclass(frozen=True)
class Drift:
    """Schema-drift checks of a route's JSON bodies."""

    learn: bool = True
    schema: str | None = None  # a file path, or builtin:NAME (schemas/builtin/NAME.json)
    action: str = "warn"
    requests: bool = False  # learn and check request bodies too


@dataclass(frozen=True)
class Match:
    """Which explicit-proxy traffic a route catches: host and a path glob (`**` any depth)."""

    host: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class Route:
    """A named group of upstreams, reached by a reverse listener or a host/path match."""

    name: str
    upstreams: tuple[Upstream, ...]
    listen: Listen | None = None
    match: Match | None = None
    strategy: str = "fallback"  # fallback | weighted | round_robin | least_latency
    llm: str | None = None  # openai | anthropic: errors read by meaning, streams recovered
    stream_recovery: str | None = None  # continue | off; None: continue on an llm route
    stream_repair: bool | None = None  # drop malformed SSE events; None: on for llm routes
    timeout: Timeout = field(default_factory=Timeout)
    retry: Retry | None = None
    breaker: Breaker | None = None
    cache: Cache | None = None
    rate_limit: Rate | None = None
    spend: Spend | None = None
    budget: Budget | None = None
    drift: Drift | None = None

    @property
    def recovers_streams(self) -> bool:
        if self.stream_recovery is None:
            return self.llm is not None
        return self.stream_recovery == "continue"

    @property
    def repairs_streams(self) -> bool:
        return self.llm is not None if self.stream_repair is None else self.stream_repair


@dataclass(frozen=True)
class FaultMatch:
    """Which requests a fault applies to."""

    method: str | None = None
    path: str | None = None  # glob
    header: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """One declared fault (chaos): which tries it hits, and what it does to them.
    Units: seconds, fractions."""

    name: str
    route: str = "*"
    upstream: str | None = None
    stage: str = "upstream"  # upstream | client
    match: FaultMatch | None = None
    probability: float = 1.0
    every: int | None = None
    first: int | None = None
    count: int | None = None
    for_: float | None = None  # seconds; key `for` in YAML
    # What it does: the keys of its fault kinds (engine/faults/kinds.py), parsed into each
    # kind's units, e.g. {"status": 503, "latency": 2.0}. One mapping, so that a new kind
    # needs no field here.
    actions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chaos:
    """Faults that start with `bridge up`, and the seed of every probability draw."""

    seed: int | None = None
    allow_headers: bool = False
    faults: tuple[Fault, ...] = ()


@dataclass(frozen=True)
class Proxy:
    """The explicit proxy listener (HTTPS_PROXY)."""

    listen: Listen
    ca_file: str | None = None  # extra CA bundle trusted for pass-through upstream TLS


@dataclass(frozen=True)
class Control:
    """Where the control API listens."""

    listen: Listen


@dataclass(frozen=True)
class Config:
    """A whole, validated bridge config."""

    version: int = 2
    proxy: Proxy | None = None
    control: Control = field(
        default_factory=lambda: Control(Listen("127.0.0.1", 8765))
    )
    store: str | None = None
    routes: tuple[Route, ...] = ()
    chaos: Chaos = field(default_factory=Chaos)
    budget: Budget | None = None
    pricing: tuple[dict, ...] = ()
    source: str = "<built-in default>"  # the file it came from, for messages

    def route(self, name: str) -> Route | None:
        """The route called `name`, or None."""
        for r in self.routes:
            if r.name == name:
                return r
        return None

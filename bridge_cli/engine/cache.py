"""Response cache policy: keys, what may be stored, entries, and why an offline miss missed.

Keys come from the request as the client sent it: the route's namespace (not the upstream
that answered), method, host for explicit-proxy traffic, path, sorted query, a hash of the
body (JSON canonicalised: key order and whitespace don't matter) and the `vary:` headers.
Credentials (every header named like one: Authorization, Cookie, X-Custom-Auth, x-session-id,
…; key-like query parameters; an API key in the path) enter a key only as a hash, so two
callers never share an entry; recordings leave them out by default so a team can share a
cassette. The parts are stored beside each entry (and listed, exported), so they never hold
a credential in clear; an offline miss reads them to say what differed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge_cli.common.entry import Entry  # its codec lives in common/: store/ reads it too
from bridge_cli.common.redact import (
    fingerprint,
    is_secret_header,
    is_secret_param,
    replace_key_shapes,
)
from bridge_cli.config.model import Cache

NEVER_STORED = frozenset({429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class RequestView:
    """The parts of a request a key is made from."""

    namespace: str
    method: str
    path: str  # without the query
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    host: str | None = None  # set for explicit-proxy traffic, where a route may span hosts


def split_path(path_qs: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`/a?b=1&c` -> ("/a", (("b", "1"), ("c", "")))."""
    from urllib.parse import parse_qsl

    path, _, qs = path_qs.partition("?")
    return path, tuple(parse_qsl(qs, keep_blank_values=True))


def _drop_field(obj: Any, dotted: list[str]) -> None:
    if not dotted or not isinstance(obj, dict):
        return
    head, rest = dotted[0], dotted[1:]
    if not rest:
        obj.pop(head, None)
    else:
        _drop_field(obj.get(head), rest)


def body_digest(body: bytes, ignore_fields: Iterable[str] = ()) -> str | None:
    """A hash of the body; JSON is canonicalised and `ignore_fields` (dotted) left out."""
    if not body:
        return None
    data = body
    stripped = body.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            doc = json.loads(body)
        except ValueError:
            pass
        else:
            for f in ignore_fields:
                _drop_field(doc, f.split("."))
            data = json.dumps(doc, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()[:32]


def _secret(value: str) -> str:
    return f"sha256:{fingerprint(value, 16)}"


def _path_key(credentials: bool) -> Callable[[str], str]:
    """What an API key found in the path or a query value becomes: a hash in a cache key
    (another key is another entry), a placeholder in a recording's (any key replays)."""
    if credentials:
        return lambda key: f"[credential:{_secret(key)}]"
    return lambda key: "[credential]"


def key_parts(view: RequestView, cache: Cache, *, credentials: bool = True) -> dict[str, Any]:
    """The parts of the cache key, JSON-ready and without a credential in clear;
    `credentials=False` for shareable cassettes (credentials left out)."""
    ignore = {q.lower() for q in cache.ignore_query}
    hide = _path_key(credentials)
    query = sorted(
        (k, _secret(v) if is_secret_param(k) else replace_key_shapes(v, hide))
        for k, v in view.query
        if k.lower() not in ignore and (credentials or not is_secret_param(k))
    )
    parts: dict[str, Any] = {"namespace": view.namespace, "method": view.method.upper(),
                             "path": replace_key_shapes(view.path, hide)}
    if view.host:
        parts["host"] = view.host.lower()
    if query:
        parts["query"] = [list(p) for p in query]
    digest = body_digest(view.body, cache.ignore_body_fields)
    if digest:
        parts["body"] = digest
    vary = {h.lower(): view.headers.get(h.lower(), "") for h in cache.vary}
    if vary:
        parts["vary"] = {k: _secret(v) if v and is_secret_header(k) else v
                         for k, v in sorted(vary.items())}
    if credentials:
        creds = {k: _secret(v) for k, v in sorted(view.headers.items()) if is_secret_header(k)}
        if creds:
            parts["credentials"] = creds
    return parts


def with_upstream_vary(parts: dict, vary_names: Iterable[str], headers: Mapping[str, str]) -> dict:
    """The second-level key parts when the upstream answered with `Vary`."""
    values = {}
    for name in sorted({n.strip().lower() for n in vary_names if n.strip()}):
        v = headers.get(name, "")
        values[name] = _secret(v) if v and is_secret_header(name) else v
    return {**parts, "upstream_vary": values}


def key_of(parts: Mapping[str, Any]) -> str:
    """The store key of some parts (hex)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ReplayMode:
    """How `bridge up` was asked to use recordings (--record, --offline, --cassette)."""

    record: bool = False
    offline: bool = False
    cassette: str = "default"
    routes: frozenset[str] = frozenset()  # --record --route ...: only these (empty: all)

    def records(self, route: str) -> bool:
        return self.record and (not self.routes or route in self.routes)


# --- what may be looked up and stored ------------------------------------------------------

def _directives(value: str) -> set[str]:
    return {d.strip().split("=", 1)[0].lower() for d in value.split(",") if d.strip()}


@dataclass(frozen=True)
class RequestPolicy:
    lookup: bool  # may a stored answer be served?
    store: bool  # may the answer be stored?


def request_policy(method: str, headers: Mapping[str, str], cache: Cache) -> RequestPolicy:
    """Client directives: `Cache-Control: no-cache` or `x-bridge-cache: refresh` refetch and
    update the entry; `no-store` bypasses the cache entirely."""
    if method.upper() not in cache.methods:
        return RequestPolicy(False, False)
    cc = _directives(headers.get("cache-control", ""))
    if "no-store" in cc:
        return RequestPolicy(False, False)
    refresh = "no-cache" in cc or headers.get("x-bridge-cache", "").lower() == "refresh"
    return RequestPolicy(not refresh, True)


def response_storable(status: int, headers: Mapping[str, str], cache: Cache) -> bool:
    """Only successful answers: the route's statuses, never 429 or 5xx; and the upstream's
    Cache-Control no-store/private is respected unless `override: true`."""
    if status in NEVER_STORED or status not in cache.statuses:
        return False
    if not cache.override and _directives(headers.get("cache-control", "")) & {"no-store", "private"}:
        return False
    return True


# --- entries (their codec: common/entry.py) ------------------------------------------------

def age_seconds(entry: Entry, now: float) -> int:
    return max(0, int(now - entry.stored_at))


def is_fresh(entry: Entry, ttl: float, now: float) -> bool:
    return now - entry.stored_at < ttl


# --- why an offline request missed -------------------------------------------------------------

MAX_FIELDS = 300  # JSON leaves of a request body a recording keeps, to explain a miss
MAX_FIELD_TEXT = 120  # characters kept of one leaf's JSON text (then a hash of the rest)
MAX_SHOWN = 10  # body differences an offline miss lists
SHOWN_TEXT = 60  # characters shown of one value
MORE = "…"  # the key marking a body whose leaves were cut at MAX_FIELDS


def body_fields(body: bytes, ignore_fields: Iterable[str] = ()) -> dict[str, str] | None:
    """A JSON body's leaves, `messages[0].content` -> JSON text (long values cut, a secret-named
    field hashed, key shapes hidden), kept with a recording; None when the body isn't JSON."""
    if body.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    for f in ignore_fields:
        _drop_field(doc, f.split("."))
    out: dict[str, str] = {}
    _leaves(doc, "", "", out)
    return out


def _leaves(value: Any, path: str, name: str, out: dict[str, str]) -> None:
    if len(out) >= MAX_FIELDS:
        out[MORE] = "more fields not kept"
        return
    if isinstance(value, dict) and value:
        for k, v in value.items():
            step = f".{k}" if k.isidentifier() else f"[{json.dumps(k)}]"
            _leaves(v, (path + step).lstrip("."), k, out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            _leaves(v, f"{path}[{i}]", name, out)
    elif isinstance(value, str) and name and (is_secret_param(name) or is_secret_header(name)):
        out[path] = json.dumps(f"[redacted:{_secret(value)}]")
    else:
        text = replace_key_shapes(json.dumps(value, ensure_ascii=False), lambda k: "[credential]")
        if len(text) > MAX_FIELD_TEXT:  # the hash tells two long values with one start apart
            text = text[:MAX_FIELD_TEXT - 20] + f"…#{fingerprint(text, 8)}"
        out[path or "(body)"] = text


def body_changes(wanted: Mapping[str, str], have: Mapping[str, str]) -> list[dict[str, str]]:
    """Where a recorded body's leaves differ from the wanted ones: {path, recorded, request},
    JSON texts ("(none)" where a side has no such field), in the wanted body's order."""
    cut = MORE in wanted or MORE in have
    out = []
    for path in [*wanted, *(p for p in have if p not in wanted)]:
        a, b = wanted.get(path), have.get(path)
        if path == MORE or a == b or (cut and (a is None or b is None)):
            continue
        out.append({"path": path, "recorded": b or "(none)", "request": a or "(none)"})
    return out


def describe_changes(changes: list[dict[str, str]]) -> str:
    """`messages[1].content: "Hello!" → "Something new"; …`, at most MAX_SHOWN of them."""
    shown = [f"{c['path']}: {_shown(c['recorded'])} → {_shown(c['request'])}"
             for c in changes[:MAX_SHOWN]]
    more = len(changes) - MAX_SHOWN
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def _shown(text: str) -> str:
    if len(text) <= SHOWN_TEXT:
        return text
    return text[:SHOWN_TEXT - 16] + "…" + text[-15:]  # the end: where a cut value's hash is


def differences(wanted: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    """The key parts in which a recorded request differs from the wanted one, in words."""
    out = []
    for k in sorted((set(wanted) | set(have)) - {"body_fields"}):
        a, b = wanted.get(k), have.get(k)
        if a == b:
            continue
        if k in ("body", "credentials"):
            out.append(f"{k} differs")
        elif a is None:
            out.append(f"{k}: recorded {b!r}, this request has none")
        elif b is None:
            out.append(f"{k}: this request has {a!r}, the recording has none")
        else:
            out.append(f"{k}: recorded {b!r}, this request {a!r}")
    return out


def closest(wanted: Mapping[str, Any], candidates: Iterable[Mapping[str, Any]],
            fields: Mapping[str, str] | None = None):
    """(parts, differences) of the recorded request nearest to `wanted`, or (None, []);
    `fields`: the wanted body's leaves (body_fields), to prefer the nearest body."""
    best, best_diff = None, []
    for parts in candidates:
        if parts.get("namespace") != wanted.get("namespace"):
            continue
        diff = differences(wanted, parts)
        # A different path counts more; among equals, the body with fewer changed fields.
        score = (len(diff) + (2 if parts.get("path") != wanted.get("path") else 0),
                 len(changed_fields(fields, parts)) if "body differs" in diff else 0)
        if best is None or score < best[0]:
            best, best_diff = (score, parts), diff
    return (best[1], best_diff) if best else (None, [])


def changed_fields(fields: Mapping[str, str] | None, recorded: Mapping[str, Any]) -> list[dict]:
    """body_changes between the wanted body's leaves and a recording's (its parts), or []
    when either is unknown (not JSON, recorded before bodies were kept)."""
    have = recorded.get("body_fields")
    if fields is None or not isinstance(have, dict):
        return []
    return body_changes(fields, have)

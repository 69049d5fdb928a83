"""The cache resource: stats, listing, clearing, export and import of stored responses.

Shared by GET/DELETE /api/v1/cache and `bridge cache ...`; it reads the stores directly, so
it works with no bridge running (hit counts then come from nowhere and show as null).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from bridge_cli.common.entry import FORMAT, MAX_ABOUT, Entry, parse_entry
from bridge_cli.errors import StoreError, UsageError
from bridge_cli.store.responses import EntryStore, ResponseStores

log = logging.getLogger("bridge.cache")
# Of `bridge cache export` files. A text body is written as `body_text`, a binary one as
# base64 `body` (what every earlier export holds); the reader takes both.
EXPORT_FORMAT = 1
_ROUTE = re.compile(r"[a-z0-9][a-z0-9_-]*")  # a route name, as schemas/bridge.v2.json has it


def _stores(stores: ResponseStores, namespace: str | None, cassette: str | None,
            warnings: list[str] | None = None) -> list[tuple[str, str, EntryStore]]:
    """(kind, name, store) selected by the options; all caches and cassettes by default.
    A name given is checked (UsageError); a directory found on disk whose name bridge
    would never give is left out, with a line in `warnings`."""
    if cassette is not None:
        return [("cassette", cassette, stores.cassette(cassette))]
    if namespace is not None:
        return [("cache", namespace, stores.cache(namespace))]
    out = []
    for kind, folder, open_one in (("cache", "cache", stores.cache),
                                   ("cassette", "cassettes", stores.cassette)):
        for name in stores.names(folder):
            try:
                out.append((kind, name, open_one(name)))
            except UsageError as e:
                _warn(warnings, f"{folder}/{name!r} left out: {e}")
    return out


def _warn(warnings: list[str] | None, message: str) -> None:
    log.warning("%s", message)
    if warnings is not None:
        warnings.append(message)


def _unreadable(kind: str, name: str, e: StoreError) -> str:
    what = "cache namespace" if kind == "cache" else "cassette"
    return f"{what} '{name}' is unreadable and left out: {e}"


def cache_stats(stores: ResponseStores, live: dict[str, dict] | None = None) -> dict:
    """Entries and bytes per cache namespace and cassette; hits per route when `live`
    (route -> counters from a running bridge) is given. An unreadable store is left out
    with a line in "warnings", so one corrupt namespace does not hide the others."""
    groups: list[dict] = []
    warnings: list[str] = []
    for kind, name, es in _stores(stores, None, None, warnings):
        entries = size = 0
        try:
            for _, s in es.summaries():
                entries += 1
                size += int(s.get("size", 0))
        except StoreError as e:
            _warn(warnings, _unreadable(kind, name, e))
            continue
        groups.append({"kind": kind, "name": name, "entries": entries, "bytes": size})
    routes = []
    for route, counts in sorted((live or {}).items()):
        hits = counts.get("hit", 0) + counts.get("coalesced", 0) + counts.get("replay", 0)
        looked = hits + counts.get("miss", 0)
        routes.append({"route": route, "hits": hits, "misses": counts.get("miss", 0),
                       "coalesced": counts.get("coalesced", 0), "refreshes": counts.get("refresh", 0),
                       "hit_rate": round(hits / looked, 4) if looked else None})
    return {"stores": groups, "routes": routes, "live": live is not None, "warnings": warnings}


def cache_list(stores: ResponseStores, *, namespace: str | None = None, route: str | None = None,
               cassette: str | None = None) -> list[dict]:
    """One row per stored response, newest first."""
    now = time.time()
    rows = []
    for kind, name, es in _stores(stores, namespace, cassette):
        for key, s in es.summaries():
            parts = s.get("parts", {})
            if route is not None and s.get("route") != route:
                continue
            query = "&".join(f"{k}={v}" for k, v in parts.get("query", []))
            about = _about(es, key, s)
            rows.append({
                "kind": kind, "name": name, "key": key, "route": s.get("route"),
                "method": parts.get("method"), "path": parts.get("path", "") + (f"?{query}" if query else ""),
                "model": about.get("model"), "prompt": about.get("prompt"),
                "status": s.get("status"), "bytes": s.get("size"), "stream": s.get("stream", False),
                "age_s": round(now - float(s.get("stored_at", now)), 1),
            })
    return sorted(rows, key=lambda r: r["age_s"])


DESCRIBE_LIMIT = 2**20  # bytes: a larger answer stored without `about` is not read for one
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _about(es: EntryStore, key: str, summary: dict) -> dict:
    """What the request asked ({"model", "prompt"}, either may be missing): as recorded
    when the entry was written; otherwise (written before bridge recorded it, or not an
    LLM request's shape) the model a POST's (small enough) answer names."""
    if summary.get("about"):
        return summary["about"]
    if summary.get("parts", {}).get("method") != "POST" or not summary.get("status") or \
            int(summary.get("size") or 0) > DESCRIBE_LIMIT:
        return {}
    try:  # peek, not es.get: listing is not a use, it must not delay eviction
        entry = parse_entry(es.store.peek(f"entry:{key}"))
    except StoreError:
        return {}
    if entry is None:
        return {}
    if entry.about is not None:
        return entry.about
    model = _answer_model(entry)
    return {"model": " ".join(_CONTROL.sub(" ", model).split())[:MAX_ABOUT]} if model else {}


def _answer_model(entry: Entry) -> str | None:
    """The model an LLM's answer names: its JSON `model` (Gemini: `modelVersion`), or for a
    stream the first event that names one (Anthropic's and the Responses API's one level down)."""
    docs = [entry.body] if entry.events is None else [
        line[5:] for line in entry.body.splitlines()[:40] if line.startswith(b"data:")]
    for raw in docs:
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if not isinstance(doc, dict):
            continue
        for d in (doc, *(v for v in doc.values() if isinstance(v, dict))):
            model = d.get("model", d.get("modelVersion"))
            if isinstance(model, str) and model:
                return model
    return None


def cache_clear(stores: ResponseStores, *, namespace: str | None = None, route: str | None = None,
                cassette: str | None = None) -> dict:
    """Remove the selected entries; how many were removed, per store. A store named by
    `namespace`/`cassette` that is unreadable is a StoreError; clearing all of them leaves
    an unreadable one out, with a line in "warnings"."""
    if route is not None and not _ROUTE.fullmatch(route):
        raise UsageError(f"route name {route!r}: a route's name is lower-case letters, "
                         "digits, '_' and '-', e.g. openai")
    removed, warnings = [], []
    for kind, name, es in _stores(stores, namespace, cassette, warnings):
        if route is not None and cassette is None and kind == "cassette":
            continue  # --route clears a route's cache; recordings go only with --cassette
        try:
            n = _clear(es, route)
        except StoreError as e:
            if namespace is not None or cassette is not None:
                raise
            _warn(warnings, _unreadable(kind, name, e))
            continue
        removed.append({"kind": kind, "name": name, "removed": n})
    return {"removed": removed, "total": sum(r["removed"] for r in removed), "warnings": warnings}


def _clear(es: EntryStore, route: str | None) -> int:
    """Remove every entry of `es`, or only `route`'s; how many went."""
    if route is None:
        return es.clear()
    keys = [k for k, s in es.summaries() if s.get("route") == route]
    for k in keys:
        es.delete(k)
    return len(keys)


def export_entries(stores: ResponseStores, out: IO[str], *, cassette: str | None = None,
                   namespace: str | None = None) -> int:
    """Write the selected entries as JSON lines (a header line first); how many."""
    selected = _stores(stores, namespace, cassette)
    out.write(json.dumps({"bridge_export": EXPORT_FORMAT, "entry_format": FORMAT,
                          "exported_at": time.time()}) + "\n")
    n = 0
    for kind, name, es in selected:
        for key, _ in es.summaries():
            entry = es.get(key)
            if entry is None:
                continue
            out.write(json.dumps({"kind": kind, "name": name, "key": key,
                                  "entry": entry.to_export()}, ensure_ascii=False) + "\n")
            n += 1
    return n


def import_entries(stores: ResponseStores, lines: Iterable[str], source: str, *,
                   cassette: str | None = None) -> int:
    """Read an export; every entry goes back where it came from, or into `cassette`.
    A bad file is a UsageError naming the line, and nothing is written."""
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except (StopIteration, ValueError):
        raise UsageError(f"{source}:1: not a bridge cache export (no header line)") from None
    if not isinstance(header, dict) or header.get("bridge_export") != EXPORT_FORMAT:
        raise UsageError(f"{source}:1: not a bridge cache export of format {EXPORT_FORMAT}")
    todo = []
    for lineno, line in enumerate(it, start=2):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            entry = parse_entry(row["entry"])
            kind, name, key = row["kind"], row["name"], row["key"]
        except (ValueError, KeyError, TypeError, RecursionError):
            entry = None
        if entry is None or kind not in ("cache", "cassette"):
            raise UsageError(f"{source}:{lineno}: not a valid entry; nothing was imported")
        todo.append((kind, name, key, entry))
    by_store: dict[int, tuple] = {}
    for kind, name, key, entry in todo:
        es = stores.cassette(cassette) if cassette else (
            stores.cassette(name) if kind == "cassette" else stores.cache(name))
        by_store.setdefault(id(es), (es, []))[1].append((key, entry, None))
    for es, items in by_store.values():  # one transaction per store: all of it or none
        es.put_many(items)
    return len(todo)


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a bridge cache export (not UTF-8 text)") from None

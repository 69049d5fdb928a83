"""Which route a request belongs to: by the listener it came in on, or by host/path."""

from __future__ import annotations

import re
from functools import lru_cache

from bridge_cli.config.model import Config, Route


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    # `**` matches across slashes, `*` within one segment, `?` one character.
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def glob_match(pattern: str, value: str) -> bool:
    """Match `value` against a path or host glob (`*`, `?`, `**`)."""
    return _glob_regex(pattern).fullmatch(value) is not None


def path_matches(pattern: str, path: str) -> bool:
    """Like glob_match, ignoring the query string; `/v1/**` also matches `/v1`."""
    path = path.split("?", 1)[0]
    if glob_match(pattern, path):
        return True
    return pattern.endswith("/**") and path == pattern[:-3]


def match_route(config: Config, host: str, path: str) -> Route | None:
    """The first route whose `match:` fits this explicit-proxy request, or None."""
    host = host.lower()
    for route in config.routes:
        m = route.match
        if m is None:
            continue
        if m.host is not None and not glob_match(m.host.lower(), host):
            continue
        if m.path is not None and not path_matches(m.path, path):
            continue
        return route
    return None

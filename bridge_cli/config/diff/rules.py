"""THE table of what a config change means: each rule names the changes it catches, their
severity, and the one line that explains them. The first rule that matches a difference
classifies it; what no rule catches is safe. tests/test_diff.py has a test for every rule.

    breaking  traffic that worked stops working: a route, listener or upstream removed, a
              listener moved, a path no longer matched, a schema check that now blocks
    risky     works, but can cost more, hide failures or serve stale answers: more tries
              or longer timeouts, a looser breaker, a longer or POST cache, a higher or
              warning-only budget, a chaos fault
    safe      everything else
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge_cli.config.diff.compare import Change, Diff
from bridge_cli.config.diff.show import label, show
from bridge_cli.config.model import IDEMPOTENT_METHODS
from bridge_cli.engine.routing import glob_match, path_matches

BREAKING, RISKY, SAFE = "breaking", "risky", "safe"
SEVERITIES = (BREAKING, RISKY, SAFE)


@dataclass(frozen=True)
class Rule:
    """Catches the differences at one of `where` for which `when` holds."""

    name: str
    severity: str
    where: tuple[str, ...]
    when: Callable[[Diff], bool]
    explain: Callable[[Diff], str]


def _was(d: Diff) -> str:
    return show(d.old, d.key)


def _now(d: Diff) -> str:
    return show(d.new, d.key)


def _raised(d: Diff) -> bool:
    return d.kind == "changed" and isinstance(d.old, int | float) and d.new > d.old


def _timeout_raised(d: Diff) -> bool:
    """Longer, or first_token/idle unset (then `total` bounds the wait, which is longer)."""
    return (d.kind in ("changed", "removed") and isinstance(d.old, int | float)
            and (d.new is None or d.new > d.old))


def _lowered(d: Diff) -> bool:
    return d.kind == "changed" and isinstance(d.old, int | float) and d.new < d.old


def _route_entry(d: Diff) -> str:
    entry = d.old or {}
    reached = [f"listener {entry['listen']}"] if entry.get("listen") else []
    if entry.get("match"):
        reached.append(f"match {show(entry['match'])}")
    return " and ".join(reached) or "it"


def _covers(new: dict | None, old: dict | None) -> bool:
    """Does `match:` `new` catch every request `old` caught? (None: explicit-proxy
    traffic isn't caught at all; an absent host or path: any.)"""
    if old is None:
        return True
    if new is None:
        return False
    if new.get("host") and new["host"].lower() != (old.get("host") or "").lower():
        if not old.get("host") or not glob_match(new["host"].lower(), _sample(old["host"])):
            return False
    if not new.get("path"):
        return True
    if not old.get("path"):
        return False
    samples = {_sample(old["path"]), _sample(old["path"], "x")}
    if old["path"].endswith("/**"):
        samples.add(old["path"][:-3])  # `/v1/**` also matches `/v1`
    return all(path_matches(new["path"], s) for s in samples)


def _sample(glob: str, deep: str = "x/y") -> str:
    """A value that `glob` matches, its wildcards filled in."""
    return glob.lower().replace("**", deep).replace("*", "x").replace("?", "x")


def _match_diff(d: Diff) -> tuple[dict | None, dict | None]:
    """The whole old and new `match:` of a difference inside one."""
    if d.where == "routes[].match":
        return d.old, d.new
    key = d.key  # host or path, changed alone
    return {key: d.old}, {key: d.new}


def _unmatched(d: Diff) -> bool:
    old, new = _match_diff(d)
    return not _covers(new, old)


def _breaker_looser(d: Diff) -> bool:
    if d.where == "routes[].breaker" or d.where == "routes[].breaker.slow_call":
        return d.kind == "removed"
    if d.key == "failure_statuses":
        return bool(set(d.old or ()) - set(d.new or ()))
    if d.key == "open_for":
        return _lowered(d)
    return _raised(d)  # failure_rate, window, min_calls, slow_call duration and rate


def _unsafe_methods(methods: list | None) -> list[str]:
    return [m for m in methods or () if m not in IDEMPOTENT_METHODS]


def _gains_unsafe(d: Diff) -> bool:
    return bool(set(_unsafe_methods(d.new)) - set(_unsafe_methods(d.old)))


def _budget_looser(d: Diff) -> bool:
    return d.kind == "removed" if d.key == "budget" else _raised(d)


def _section(d: Diff) -> str:
    return "the global budget" if d.path.startswith("budget") else "the budget"


RULES: tuple[Rule, ...] = (
    # ---- breaking -----------------------------------------------------------------------
    Rule("route-removed", BREAKING, ("routes[]",), lambda d: d.kind == "removed",
         lambda d: f"route '{d.old['name']}' removed: requests to {_route_entry(d)} "
                   "are no longer routed"),
    Rule("listener-removed", BREAKING, ("routes[].listen", "proxy", "proxy.listen"),
         lambda d: d.kind == "removed",
         lambda d: f"listener {show(d.old.get('listen') if isinstance(d.old, dict) else d.old)}"
                   " removed: apps pointed at it can no longer connect"),
    Rule("listener-moved", BREAKING, ("routes[].listen", "proxy.listen"),
         lambda d: d.kind == "changed",
         lambda d: f"listener moved from {_was(d)} to {_now(d)}: apps pointed at {_was(d)} "
                   "must change their base URL or proxy setting"),
    Rule("upstream-removed", BREAKING, ("routes[].upstreams[]",), lambda d: d.kind == "removed",
         lambda d: f"upstream '{d.old['name']}' ({d.old['url']}) removed: the route no longer "
                   "sends requests there"),
    Rule("path-unmatched", BREAKING,
         ("routes[].match", "routes[].match.path", "routes[].match.host"), _unmatched,
         lambda d: f"match {_was(d)} → {_now(d)}: requests it caught before are no longer "
                   "caught (they pass through the explicit proxy unrouted)"),
    Rule("drift-blocks", BREAKING, ("routes[].drift.action", "routes[].drift"),
         lambda d: (d.new if d.key == "action" else (d.new or {}).get("action")) == "block",
         lambda d: "schema drift now blocks: an answer whose shape changed is refused "
                   "with 502 schema_drift instead of passed on with a warning"),
    # ---- risky --------------------------------------------------------------------------
    Rule("retries-raised", RISKY, ("routes[].retry.attempts",), _raised,
         lambda d: f"retry attempts raised from {_was(d)} to {_now(d)}: a failing upstream "
                   f"gets up to {d.new} calls per request, and slow failures take longer"),
    Rule("retry-unsafe-methods", RISKY, ("routes[].retry.methods",), _gains_unsafe,
         lambda d: f"retries now resend {', '.join(_unsafe_methods(d.new))}: a request that "
                   "reached the upstream may run twice"),
    Rule("timeout-raised", RISKY, ("routes[].timeout.connect", "routes[].timeout.total",
                                   "routes[].timeout.first_token", "routes[].timeout.idle"),
         _timeout_raised,
         lambda d: f"{label(d.path)} raised from {_was(d)} to {_now(d)}: a hung upstream "
                   "holds requests longer before bridge gives up"),
    Rule("breaker-loosened", RISKY,
         ("routes[].breaker", "routes[].breaker.slow_call", "routes[].breaker.failure_rate",
          "routes[].breaker.window", "routes[].breaker.min_calls", "routes[].breaker.open_for",
          "routes[].breaker.failure_statuses", "routes[].breaker.slow_call.duration",
          "routes[].breaker.slow_call.rate"), _breaker_looser,
         lambda d: ("breaker removed: a failing upstream keeps getting every request"
                    if d.where == "routes[].breaker" else
                    f"breaker loosened, {label(d.path)} {_was(d)} → {_now(d)}: it opens "
                    "later or closes sooner on a failing upstream")),
    Rule("cache-enabled", RISKY, ("routes[].cache",), lambda d: d.kind == "added",
         lambda d: f"caching enabled for {show(d.new['methods'])} for {show(d.new['ttl'], 'ttl')}"
                   ": answers may be served stale"
                   + (", POST answers included" if _unsafe_methods(d.new["methods"]) else "")),
    Rule("cache-ttl-raised", RISKY, ("routes[].cache.ttl",), _raised,
         lambda d: f"cache TTL raised from {_was(d)} to {_now(d)}: answers may be served "
                   "staler"),
    Rule("cache-post", RISKY, ("routes[].cache.methods",), _gains_unsafe,
         lambda d: f"caching now covers {', '.join(_unsafe_methods(d.new))}: identical "
                   "requests share one answer (LLM calls included)"),
    Rule("budget-raised", RISKY,
         ("routes[].budget", "routes[].budget.limit_usd", "budget", "budget.limit_usd"),
         _budget_looser,
         lambda d: (f"{_section(d)} removed: spend is no longer limited" if d.kind == "removed"
                    else f"{_section(d)}'s limit raised from {_was(d)} to {_now(d)}: more can "
                         "be spent before it acts")),
    Rule("budget-warns", RISKY, ("routes[].budget.action", "budget.action"),
         lambda d: d.old == "block" and d.new == "warn",
         lambda d: f"{_section(d)} switched from block to warn: spend past the limit is "
                   "no longer refused"),
    Rule("fault-added", RISKY, ("chaos.faults[]",), lambda d: d.kind == "added",
         lambda d: f"chaos fault '{d.new['name']}' added on route {d.new['route']}: "
                   "requests will fail or slow down on purpose"),
)


_ENTRY_WORD = {"routes[]": "route", "routes[].upstreams[]": "upstream",
               "chaos.faults[]": "chaos fault"}


def _entry(e: dict) -> str:
    """A route, upstream or fault in a few words: its name and where it points."""
    where = e.get("url") or e.get("listen") or (e.get("match") or {}).get("host")
    if e.get("route"):  # a fault
        where = f"on route {e['route']}"
    return f"'{e['name']}'" + (f" ({where})" if where else "")


def _safe_explain(d: Diff) -> str:
    what = label(d.path)
    word = _ENTRY_WORD.get(d.where)
    if d.kind == "renamed":
        note = ("; its recorded spend, budget and breaker state stay under the old name"
                if word == "route" else "")
        return f"{word or what} renamed '{d.old}' → '{d.new}', nothing else changed{note}"
    if word:
        entry = d.new if d.kind == "added" else d.old
        return f"{word} {_entry(entry)} {d.kind}"
    if d.kind == "added":
        return f"{what} added: {_now(d)}"
    if d.kind == "removed":
        return f"{what} removed (was {_was(d)})"
    return f"{what} changed from {_was(d)} to {_now(d)}"


SAFE_RULE = Rule("safe", SAFE, (), lambda d: True, _safe_explain)


def rule_for(d: Diff) -> Rule:
    """The rule of RULES that catches `d`; SAFE_RULE when none does."""
    for rule in RULES:
        if d.where in rule.where and rule.when(d):
            return rule
    return SAFE_RULE


def classify(d: Diff) -> Change:
    """The Change `d` is, by the first matching rule."""
    rule = rule_for(d)
    return Change(d.route, d.path, d.old, d.new, d.kind, rule.severity, rule.explain(d),
                  rule.name)

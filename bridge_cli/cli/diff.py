"""`bridge diff OLD NEW`: what a config change means, classified, for review and CI."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bridge_cli.cli.output import console, err_console, print_json
from bridge_cli.config.diff import SEVERITIES, Change, Side, diff_sides, load_side
from bridge_cli.config.diff.show import show
from bridge_cli.config.loader import read_config_text
from bridge_cli.config.yamlload import MAX_BYTES, too_big
from bridge_cli.errors import ConfigError, ExitStatus, UsageError

STDIN = "-"
FORMATS = ("rich", "markdown", "json")
MARKERS = {"added": "+", "removed": "-", "changed": "~", "renamed": "~"}
COLOURS = {"breaking": "red", "risky": "yellow", "safe": "green"}


def diff(
    old: Annotated[str, typer.Argument(metavar="OLD", help="The config before: a file, or - for standard input.")],
    new: Annotated[str, typer.Argument(metavar="NEW", help="The config after: a file, or - for standard input.")],
    format_: Annotated[str, typer.Option("--format", "-f", help="rich (default), markdown (a pull-request comment) or json.")] = "rich",
    json_: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    fail_on: Annotated[str | None, typer.Option("--fail-on", help="Exit 1 when a change is this severe or worse: breaking or risky.")] = None,
) -> None:
    """Compare two configs by meaning: every change classified breaking, risky or safe.

    Routes, upstreams and faults are matched by name, values by what they mean (30s is
    30000ms, a default written out is no change); a version 1 file is migrated in memory
    first. Where $BRIDGE_HOME has recorded traffic, a change shows what it would have done
    to it. Exit 0, or 1 with --fail-on and a change that severe; 2 for invalid input.

    Examples:\n
      bridge diff old.yaml bridge.yaml\n
      git show main:bridge.yaml | bridge diff - bridge.yaml --fail-on breaking\n
      bridge diff old.yaml new.yaml --format markdown > comment.md
    """
    fmt = "json" if json_ else format_.lower()
    if fmt not in FORMATS:
        raise UsageError(f"--format {format_!r}: expected one of {', '.join(FORMATS)}")
    if fail_on is not None and fail_on.lower() not in ("breaking", "risky"):
        raise UsageError(f"--fail-on {fail_on!r}: expected breaking or risky")
    if old == STDIN and new == STDIN:
        raise UsageError("only one side can be read from standard input (-): name a file "
                         "for the other")
    sides = _load_both(old, new)
    changes = diff_sides(*sides)
    projections = _projections(changes, sides)
    doc = document(sides, changes, projections)
    RENDER[fmt](doc)
    if fail_on is not None and _fails(changes, fail_on.lower()):
        raise typer.Exit(int(ExitStatus.FINDINGS))


def _load_both(old: str, new: str) -> tuple[Side, Side]:
    """Both sides loaded; every problem of either printed one per line, then exit 2."""
    sides, problems = [], []
    for name in (old, new):
        try:
            text, source, base = _read(name)
            sides.append(load_side(text, source, base))
        except ConfigError as exc:
            problems += str(exc).splitlines()
    for line in problems:
        err_console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
    if problems:
        raise typer.Exit(int(ExitStatus.ERROR))
    return sides[0], sides[1]


def _read(name: str) -> tuple[str, str, Path]:
    """(text, name for messages, directory relative paths start from) of a side."""
    if name != STDIN:
        return read_config_text(name), name, Path(name).absolute().parent
    data = sys.stdin.buffer.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConfigError(too_big("<stdin>"))
    try:
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"<stdin>: not UTF-8 text (byte {exc.start})") from None
    return text, "<stdin>", Path.cwd()


def _projections(changes: list[Change], sides: tuple[Side, Side]) -> dict[str, dict]:
    from bridge_cli.control.diff_projection import project, state_dir

    store_url = sides[1].config.store or sides[0].config.store
    return project(changes, state_dir(), store_url)


def _fails(changes: list[Change], fail_on: str) -> bool:
    worst = SEVERITIES[: SEVERITIES.index(fail_on) + 1]
    return any(c.severity in worst for c in changes)


def document(sides: tuple[Side, Side], changes: list[Change],
             projections: dict[str, dict]) -> dict:
    """The diff as data: `--format json`, and what the other formats render."""
    summary = {s: sum(c.severity == s for c in changes) for s in SEVERITIES}
    return {
        "old": sides[0].source,
        "new": sides[1].source,
        "migrated": {side: s.from_version for side, s in zip(("old", "new"), sides, strict=True)
                     if s.from_version != 2},
        "summary": summary,
        "changes": [c.to_dict() | {"old_text": _value(c, c.old), "new_text": _value(c, c.new),
                                   "projection": projections.get(c.path)} for c in changes],
    }


def _value(c: Change, value) -> str | None:
    """A value as text for the `old → new` column; None for whole entries and sections."""
    if value is None or isinstance(value, dict):
        return None
    key = c.path.rsplit(".", 1)[-1]
    return f"'{value}'" if c.kind == "renamed" else show(value, key)


def _group(c: Change) -> str:
    return f"route {c.route}" if c.route else "global"


def _key(c: dict) -> str:
    """The path within its route's group: `retry.attempts` under `route openai`."""
    prefix = f"routes[{c['route']}]"
    if c["route"] and c["path"] == prefix:
        return "route"
    return c["path"].removeprefix(prefix + ".")


def _grouped(doc: dict) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for c in doc["changes"]:
        groups.setdefault(f"route {c['route']}" if c["route"] else "global", []).append(c)
    return groups


def _summary(doc: dict) -> str:
    s = doc["summary"]
    n = sum(s.values())
    if not n:
        return "No changes: the two configs mean the same."
    return f"{n} change{'s' * (n != 1)}: " + ", ".join(f"{s[k]} {k}" for k in SEVERITIES)


def _from_to(c: dict) -> str:
    if c["old_text"] is None and c["new_text"] is None:
        return ""
    return f"{c['old_text'] or '(none)'} → {c['new_text'] or '(none)'}"


def render_rich(doc: dict) -> None:
    """The terminal view: grouped by route, a marker per change, a summary line."""
    for side, version in doc["migrated"].items():
        err_console.print(f"{escape(doc[side])}: a version {version} config, compared as "
                          "`bridge migrate` would write it", soft_wrap=True)
    console.print(f"[bold]bridge diff[/bold] {escape(doc['old'])} → {escape(doc['new'])}")
    pad = " " * 14
    for group, changes in _grouped(doc).items():
        console.print(f"\n[bold]{escape(group)}[/bold]")
        for c in changes:
            colour = COLOURS[c["severity"]]
            head = f"{_key(c)}: {_from_to(c)}" if _from_to(c) else _key(c)
            console.print(f"  [{colour}]{MARKERS[c['kind']]} {c['severity']:<9}[/{colour}] "
                          f"{escape(head)}", soft_wrap=True)
            console.print(f"{pad}{escape(c['explanation'])}", soft_wrap=True)
            if c["projection"]:
                console.print(f"{pad}[dim]↳ {escape(c['projection']['text'])}[/dim]",
                              soft_wrap=True)
    console.print(f"\n[bold]{_summary(doc)}[/bold]")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: dict) -> None:
    """A pull-request comment: a table per route group, the summary in bold."""
    out = [f"### bridge diff `{doc['old']}` → `{doc['new']}`", "", f"**{_summary(doc)}**"]
    for side, version in doc["migrated"].items():
        out.append(f"\n_{doc[side]} is a version {version} config: compared as `bridge "
                   "migrate` would write it._")
    for group, changes in _grouped(doc).items():
        out += ["", f"#### {group}", "", "| | severity | key | change | why |",
                "|---|---|---|---|---|"]
        for c in changes:
            why = c["explanation"] + (f"<br>↳ {c['projection']['text']}"
                                      if c["projection"] else "")
            sev = f"**{c['severity']}**" if c["severity"] != "safe" else "safe"
            out.append(f"| {MARKERS[c['kind']]} | {sev} | `{_cell(_key(c))}` | "
                       f"{_cell(_from_to(c))} | {_cell(why)} |")
    sys.stdout.write("\n".join(out) + "\n")


RENDER: dict[str, Callable[[dict], None]] = {
    "rich": render_rich, "markdown": render_markdown, "json": print_json}

"""`bridge cache stats | ls | clear | export | import`: stored responses and recordings.

These read $BRIDGE_HOME directly, so they work whether or not a bridge is running; `stats`
adds hit rates per route when one is.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bridge_cli.cli.output import console, err_console, print_json
from bridge_cli.common.entry import EntryError, decode_entry
from bridge_cli.common.redact import replace_key_shapes
from bridge_cli.control import cache_report as report
from bridge_cli.errors import ControlError, UsageError
from bridge_cli.store import bridge_home
from bridge_cli.store.responses import ResponseStores, valid_name

cache_app = typer.Typer(
    help="Cached responses and recordings (cassettes).\n\nExample: bridge cache stats",
    no_args_is_help=True,
)

NamespaceOpt = Annotated[str | None, typer.Option(help="Only this cache namespace (a route's name by default).")]
RouteOpt = Annotated[str | None, typer.Option(help="Only entries of this route.")]
CassetteOpt = Annotated[str | None, typer.Option(help="Only this cassette (recording).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _stores() -> ResponseStores:
    return ResponseStores(bridge_home())


def _size(n: int | None) -> str:
    n = n or 0
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@cache_app.command("stats")
def stats(json_: JsonOpt = False) -> None:
    """Entries and size per cache and cassette; hit rate per route while bridge runs.

    Example:\n
      bridge cache stats --json
    """
    live = None
    try:
        from bridge_cli.control.client import ControlClient

        status = ControlClient.from_home(bridge_home()).status()
        live = {r["name"]: r.get("cache", {}) for r in status["routes"]}
    except ControlError:
        pass
    data = report.cache_stats(_stores(), live)
    if json_:
        print_json(data)
        return
    table = Table("kind", "name", "entries", "size", box=None)
    for g in data["stores"]:
        table.add_row(g["kind"], escape(g["name"]), str(g["entries"]), _size(g["bytes"]))
    console.print(table if data["stores"] else "nothing cached or recorded yet")
    if data["routes"]:
        rt = Table("route", "hits", "misses", "coalesced", "hit rate", box=None)
        for r in data["routes"]:
            rate = "-" if r["hit_rate"] is None else f"{r['hit_rate']:.0%}"
            rt.add_row(escape(r["route"]), str(r["hits"]), str(r["misses"]), str(r["coalesced"]), rate)
        console.print(rt)
    elif not data["live"]:
        err_console.print("(no bridge running: hit rates are counted by a running bridge)")


@cache_app.command("ls")
def ls(namespace: NamespaceOpt = None, route: RouteOpt = None, cassette: CassetteOpt = None,
       json_: JsonOpt = False) -> None:
    """List stored responses, newest first.

    Examples:\n
      bridge cache ls --route openai\n
      bridge cache ls --cassette default --json
    """
    rows = report.cache_list(_stores(), namespace=namespace, route=route, cassette=cassette)
    for r in rows:  # entries stored before keys in paths were hidden in the key parts
        r["path"] = replace_key_shapes(r["path"], lambda key: "[credential]")
    if json_:
        print_json(rows)
        return
    if not rows:
        console.print("no stored responses match")
        return
    table = Table("where", "request", "status", "size", "age", "key", box=None)
    for r in rows:
        table.add_row(f"{r['kind']}:{escape(r['name'])}", escape(_request(r)),
                      str(r["status"]), _size(r["bytes"]) + (" (stream)" if r["stream"] else ""),
                      f"{r['age_s']:.0f}s", r["key"][:12])
    console.print(table, highlight=False)


PROMPT_WORDS, PROMPT_CHARS = 8, 48  # of the last user prompt, in a row of `cache ls`


def _request(row: dict) -> str:
    """What a row's request asked: an LLM call's model and the first words of its last
    user prompt; otherwise method, path and query."""
    call = f"{row['method'] or ''} {row['path']}".strip()
    if not row.get("model"):
        return call
    if not row.get("prompt"):
        return f"{row['model']}  {call}"
    words = row["prompt"].split()
    short = " ".join(words[:PROMPT_WORDS])
    if len(short) > PROMPT_CHARS:
        short = short[:PROMPT_CHARS - 1].rstrip()
    cut = short != " ".join(words) or short.endswith("…")
    return f"{row['model']}  \"{short.rstrip('…')}{'…' if cut else ''}\""


@cache_app.command("clear")
def clear(namespace: NamespaceOpt = None, route: RouteOpt = None, cassette: CassetteOpt = None,
          yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask for confirmation.")] = False,
          json_: JsonOpt = False) -> None:
    """Remove stored responses: everything, or one route, namespace or cassette.

    Examples:\n
      bridge cache clear --route openai --yes\n
      bridge cache clear --cassette default
    """
    what = (f"cassette '{cassette}'" if cassette else f"namespace '{namespace}'" if namespace
            else "every cache and cassette") + (f", route '{route}' only" if route else "")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"clearing {what} needs confirmation: pass --yes")
        typer.confirm(f"Remove the stored responses of {what}?", abort=True)
    result = report.cache_clear(_stores(), namespace=namespace, route=route, cassette=cassette)
    if json_:
        print_json(result)
        return
    console.print(f"removed {result['total']} stored response(s) from {what}")


@cache_app.command("export")
def export(file: Annotated[Path, typer.Argument(help="Where to write (JSON lines), or - for stdout.")],
           cassette: CassetteOpt = None, namespace: NamespaceOpt = None) -> None:
    """Write stored responses to a portable file a team can commit and share.

    Recordings leave credentials out of their keys, so a cassette works for every
    teammate's API key.

    Example:\n
      bridge cache export --cassette default tests/cassettes/default.jsonl
    """
    stores = _stores()
    if str(file) == "-":
        sys.stdout.reconfigure(encoding="utf-8")  # the lines hold text bodies, in any script
        n = report.export_entries(stores, sys.stdout, cassette=cassette, namespace=namespace)
    else:
        tmp = file.with_name(file.name + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as out:
                n = report.export_entries(stores, out, cassette=cassette, namespace=namespace)
            tmp.replace(file)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"{file}: cannot write it ({e.strerror})") from None
    err_console.print(f"exported {n} stored response(s)" + (f" to {file}" if str(file) != "-" else ""))


@cache_app.command("import")
def import_(file: Annotated[Path, typer.Argument(help="A file written by `bridge cache export`.")],
            cassette: Annotated[str | None, typer.Option(
                help="Put every entry into this cassette instead of where it came from.")] = None) -> None:
    """Load stored responses from an export file (nothing is written if any line is bad).

    Example:\n
      bridge cache import tests/cassettes/default.jsonl && bridge up --offline
    """
    lines = _read_export(file)
    _check_export(lines, str(file))  # every field of every line, before anything is written
    n = report.import_entries(_stores(), lines, str(file), cassette=cassette)
    err_console.print(f"imported {n} stored response(s) from {file}")


_NOTHING = "nothing was imported"
_KEY = re.compile(r"[0-9a-f]{64}")


def _read_export(file: Path) -> list[str]:
    """The lines of an export file; a UsageError for a file that isn't UTF-8 text."""
    try:
        data = file.read_bytes()
    except OSError as e:
        raise UsageError(f"{file}: cannot read it ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise UsageError(f"{file}: not a text file; `bridge cache export` writes JSON lines "
                         f"({_NOTHING})")
    return [line.removesuffix("\r") for line in text.split("\n")]


def _check_export(lines: list[str], source: str) -> None:
    """A UsageError naming the first line bridge would not import, and why."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            row = json.loads(line)
        except RecursionError:
            raise UsageError(f"{where}: JSON nested too deeply ({_NOTHING})") from None
        except ValueError:
            what = "not a bridge cache export" if lineno == 1 else "not a JSON line"
            raise UsageError(f"{where}: {what} ({_NOTHING})") from None
        if lineno > 1:
            _check_row(row, where)


def _check_row(row: object, where: str) -> None:
    if not isinstance(row, dict):
        raise UsageError(f"{where}: not an exported entry ({_NOTHING})")
    problem = None
    if row.get("kind") not in ("cache", "cassette"):
        problem = "kind is neither 'cache' nor 'cassette'"
    elif not valid_name(row.get("name")):
        problem = "name is not a namespace or cassette name (letters, digits, '.', '_', '-')"
    elif not isinstance(row.get("key"), str) or not _KEY.fullmatch(row["key"]):
        problem = "key is not a stored key (64 hex digits)"
    else:
        try:
            decode_entry(row.get("entry"))
        except EntryError as e:
            problem = f"entry: {e}"
    if problem:
        raise UsageError(f"{where}: {problem} ({_NOTHING})")

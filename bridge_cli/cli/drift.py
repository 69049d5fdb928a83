"""`bridge drift`, `drift show | accept | export`: how the bodies of an API changed shape.

These read $BRIDGE_HOME's store directly, so they work whether or not a bridge is running.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.json import JSON
from rich.markup import escape
from rich.table import Table

from bridge_cli.cli.output import console, err_console, print_json
from bridge_cli.common.store import Store
from bridge_cli.control import drift_report as report
from bridge_cli.errors import ExitStatus, UsageError
from bridge_cli.store import bridge_home, open_store

drift_app = typer.Typer(
    help="Schema drift: findings in the JSON bodies of your routes, and learned schemas.\n\n"
    "Exit status: 0 no breaking finding, 1 breaking findings (for CI), 2 a usage error.\n\n"
    "Example: bridge drift --route openai",
    invoke_without_command=True,
)

RouteOpt = Annotated[str | None, typer.Option(help="Only this route.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
_COLOUR = {"breaking": "red", "additive": "green", "loosening": "yellow"}


def _with_store[T](work: Callable[[Store], T]) -> T:
    store = open_store(None, bridge_home())
    try:
        return work(store)
    finally:
        store.close()


@drift_app.callback()
def drift(ctx: typer.Context, route: RouteOpt = None, json_: JsonOpt = False) -> None:
    """List drift findings, breaking first; exit 1 when any finding is breaking.

    Exit status: 0 no breaking finding, 1 breaking findings present (fail a CI job on
    it), 2 a usage error. Works with no bridge running (reads $BRIDGE_HOME).

    Examples:\n
      bridge drift\n
      bridge drift --route openai --json
    """
    if ctx.invoked_subcommand is not None:
        return
    data = _with_store(lambda s: report.drift_report(s, route))
    if json_:
        print_json(data)
    else:
        _print_findings(data)
    if data["breaking"]:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def _print_findings(data: dict) -> None:
    """The findings table and a summary line (to stdout)."""
    where = f" on route '{escape(data['route'])}'" if data["route"] else ""
    learned = len(data["endpoints"])
    if data["route"] and data["route"] not in data["routes"]:
        others = ", ".join(data["routes"]) or "none"
        err_console.print(f"nothing is recorded for route '{escape(data['route'])}' "
                          f"(routes with drift records: {escape(others)})")
        return
    if not data["findings"]:
        console.print(f"no drift{where}: {learned} endpoint(s) learned" if learned else
                      f"nothing learned{where} yet: routes with `drift:` learn from the "
                      "traffic bridge sees")
        return
    t = Table("severity", "route", "endpoint", "path", "change", "before → after", "seen",
              "first seen", "example flow", box=None)
    for f in data["findings"]:
        colour = _COLOUR.get(f["severity"], "white")
        t.add_row(f"[{colour}]{f['severity']}[/{colour}]", escape(f["route"]),
                  escape(f["endpoint"]), escape(f["path"]), f["kind"],
                  escape(f"{f['before'] or '-'} → {f['after'] or '-'}"), str(f["count"]),
                  time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f["first_seen"])),
                  escape(f["example_flow"] or "-"))
    console.print(t)
    counts = ", ".join(f"{n} {sev}" for sev, n in data["counts"].items() if n)
    console.print(f"{counts}{where}. A change you expect: `bridge drift accept ENDPOINT` "
                  "makes it the new baseline.", soft_wrap=True)


@drift_app.command("show")
def show(
    endpoint: Annotated[str, typer.Argument(help="As `bridge drift` lists it: 'GET /users/{id}'.")],
    route: RouteOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print the schema learned for ENDPOINT (of every route that has it).

    Example:\n
      bridge drift show 'POST /v1/chat/completions' --route openai
    """
    shown = _with_store(lambda s: report.show(s, endpoint, route))
    if json_:
        print_json(shown)
        return
    for item in shown:
        console.print(f"[bold]{escape(item['route'])}[/bold]  {escape(item['endpoint'])}  "
                      f"({item['observations']} bodies seen)")
        console.print(JSON.from_data(item["schema"]))


@drift_app.command("accept")
def accept(
    endpoint: Annotated[str | None, typer.Argument(
        help="The endpoint whose new shape to adopt; every endpoint when left out.")] = None,
    route: RouteOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask for confirmation.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Adopt the shape bridge saw as ENDPOINT's baseline (every endpoint's without one).

    Its findings are cleared: the change is the new normal.

    Examples:\n
      bridge drift accept 'GET /users/{id}'\n
      bridge drift accept --route openai --yes
    """
    if endpoint is None and not yes:
        what = f"route '{route}'" if route else "every route"
        if not sys.stdin.isatty():
            raise UsageError(f"accepting the drift of every endpoint of {what} needs "
                             "confirmation: pass --yes, or name one ENDPOINT")
        typer.confirm(f"Adopt the observed shape of every endpoint of {what} as its baseline?",
                      abort=True)
    result = _with_store(lambda s: report.accept(s, endpoint, route))
    if json_:
        print_json(result)
        return
    err_console.print(f"accepted {result['accepted']} endpoint(s)"
                      + (f" ({escape(endpoint)})" if endpoint else ""))


@drift_app.command("export")
def export(
    directory: Annotated[Path, typer.Argument(help="Where to write the files (created).")],
    route: RouteOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Write each learned schema as a JSON Schema file to commit and use with `schema:`.

    One file per endpoint (route__METHOD__path.json); existing files stay unless --force.

    Example:\n
      bridge drift export schemas/ --route users
    """
    written = _with_store(lambda s: report.export(s, directory, route, force))
    if json_:
        print_json(written)
        return
    for w in written:
        console.print(f"{escape(w['file'])}  {escape(w['route'])} {escape(w['endpoint'])}",
                      soft_wrap=True)

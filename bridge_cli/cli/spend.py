"""`bridge spend` and `bridge spend reset`: what calls cost, and budgets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bridge_cli.cli.output import console, err_console, print_json
from bridge_cli.config.loader import load_config
from bridge_cli.control import spend_report as report
from bridge_cli.errors import ControlError, UsageError
from bridge_cli.store import bridge_home, open_store

spend_app = typer.Typer(
    help="What every call cost, savings from the cache, and budgets.\n\n"
    "Example: bridge spend --since 7d --by model",
    invoke_without_command=True,
)


@spend_app.callback()
def spend(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="From this day: 2026-11-01, today (default), 7d, 24h.")] = None,
    by: Annotated[str, typer.Option(help="Group by route, upstream, model, day or status.")] = "route",
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Config whose budgets to show when no bridge is running.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="The control API's spend document.")] = False,
    csv_: Annotated[bool, typer.Option("--csv", help="The groups as CSV.")] = False,
) -> None:
    """Spend by route, upstream, model or day, with savings and budgets.

    Works with no bridge running (reads $BRIDGE_HOME); budgets come from the running
    bridge, or from -c FILE.

    Examples:\n
      bridge spend\n
      bridge spend --since 7d --by model --csv > spend.csv
    """
    if ctx.invoked_subcommand is not None:
        return
    data = None
    if config is None:
        try:
            from bridge_cli.control.client import ControlClient

            data = ControlClient.from_home(bridge_home()).spend(since, by)
        except ControlError:
            data = None
    if data is None:
        cfg = load_config(config) if config is not None else None
        store = open_store(cfg.store if cfg else None, bridge_home())
        try:
            data = report.spend_report(store, cfg, since=since, by=by)
        finally:
            store.close()
    if json_:
        print_json(data)
        return
    if csv_:
        sys.stdout.write(report.to_csv(data))
        return
    console.print(f"spend since {data['since']}: [bold]${data['total_usd']}[/bold] over "
                  f"{data['calls']} call(s); saved ${data['saved_usd']} by the cache")
    if data["groups"]:
        t = Table(by, "calls", "cost $", "saved $", "tokens", "unpriced", "estimated", box=None)
        for g in data["groups"]:
            t.add_row(escape(str(g[by])), str(g["calls"]), g["cost_usd"], g["saved_usd"],
                      str(g["tokens"]), str(g["unpriced"]), str(g["estimated"]))
        console.print(t)
    if data.get("budgets"):
        _print_budgets(data["budgets"])


def _print_budgets(budgets: list[dict]) -> None:
    """The budgets table, then why a budget refused a request this period."""
    t = Table("budget", "spent $", "reserved $", "limit $", "used", "action", "resets", box=None)
    for b in budgets:
        used = "-" if b["used"] is None else f"{b['used']:.0%}"
        t.add_row(escape(b["budget"]), b["spent_usd"], b["reserved_usd"], b["limit_usd"], used,
                  b["action"], b["resets_at"] or b["period"])
    console.print(t)
    for b in budgets:
        if b.get("refused_usd"):
            console.print(
                f"{escape(b['budget'])} refused a request this period: its worst case, "
                f"${b['refused_usd']}, did not fit. A request without max_tokens reserves "
                "spend.default_max_tokens (4096 unless set) output tokens: set max_tokens in "
                "the request, or spend.default_max_tokens on the route, to what the app needs "
                "and less is held.", soft_wrap=True)


@spend_app.command("reset")
def reset(
    route: Annotated[str | None, typer.Option(help="Only this route (default: all spend).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask for confirmation.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable result.")] = False,
) -> None:
    """Forget recorded spend and budget usage, for one route or all.

    Example:\n
      bridge spend reset --route openai --yes
    """
    what = f"route '{route}'" if route else "every route and the global budget"
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"resetting the spend of {what} needs confirmation: pass --yes")
        typer.confirm(f"Forget the recorded spend of {what}?", abort=True)
    store = open_store(None, bridge_home())
    try:
        result = report.reset_spend(store, route)
    finally:
        store.close()
    if json_:
        print_json(result)
        return
    err_console.print(f"forgot {result['calls']} recorded call(s) of {what}")

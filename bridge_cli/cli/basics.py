"""`bridge init`, `validate`, `ca` and `status`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bridge_cli.cli.output import console, err_console, print_json
from bridge_cli.config.loader import load_config
from bridge_cli.errors import UsageError
from bridge_cli.resources import data_dir
from bridge_cli.store import bridge_home

STARTER = "starter"  # `bridge init` with no recipe


def _recipes() -> dict[str, tuple[Path, str]]:
    out = {}
    for path in sorted(data_dir("recipes").glob("*.yaml")):
        first = path.read_text().splitlines()[0] if path.stat().st_size else ""
        out[path.stem] = (path, first.lstrip("# ").strip())
    return out


def init(
    recipe: Annotated[str | None, typer.Option("--recipe", "-r", help="Write this recipe instead of the starter.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the recipes and exit.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write (default ./bridge.yaml).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="With --list: machine-readable output.")] = False,
) -> None:
    """Write a commented starter bridge.yaml, or a ready recipe.

    Examples:\n
      bridge init                              # ./bridge.yaml, commented\n
      bridge init --list                       # what recipes there are\n
      bridge init --recipe openai-with-local-fallback
    """
    recipes = _recipes()
    if list_:
        if json_:
            print_json([{"name": n, "description": d} for n, (_, d) in recipes.items()])
            return
        table = Table("recipe", "what it sets up", box=None)
        for name, (_, desc) in recipes.items():
            table.add_row(name, desc)
        console.print(table)
        return
    name = recipe or STARTER
    if name not in recipes:
        raise UsageError(f"unknown recipe {name!r}; `bridge init --list` shows the {len(recipes) - 1} there are")
    target = output or Path("bridge.yaml")
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; pass --force to overwrite it, or -o OTHER.yaml")
    target.write_text(recipes[name][0].read_text())
    err_console.print(f"wrote {target} ({'recipe ' + name if recipe else 'starter config'}); "
                      f"check it with `bridge validate {target}`, start with `bridge up -c {target}`")


def validate(
    files: Annotated[list[Path], typer.Argument(help="Config files to check.", dir_okay=False)],
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable result.")] = False,
) -> None:
    """Check configs against the schema; errors name file, line, key and what was expected.

    Example:\n
      bridge validate bridge.yaml
    """
    from bridge_cli.errors import ConfigError

    results, failed = [], False
    for f in files:
        try:
            cfg = load_config(f)
            results.append({"file": str(f), "valid": True, "routes": [r.name for r in cfg.routes]})
        except ConfigError as e:
            failed = True
            results.append({"file": str(f), "valid": False, "errors": str(e).splitlines()})
    if json_:
        print_json(results)
    else:
        for r in results:
            if r["valid"]:
                console.print(f"[green]ok[/green] {escape(r['file'])}: {len(r['routes'])} route(s)")
            else:
                for line in r["errors"]:
                    err_console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def ca(
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable paths.")] = False,
) -> None:
    """Show where bridge's CA certificate is and how to make clients trust it.

    Needed only for HTTPS through the explicit proxy (HTTPS_PROXY); reverse routes
    (a base URL such as http://127.0.0.1:8081) need no CA at all.

    Example:\n
      bridge ca            # prints the export lines to paste into your shell
    """
    from bridge_cli.cli.up import ensure_ca  # the one door from cli/ into proxy/

    cert = ensure_ca(bridge_home())
    lines = [f"export SSL_CERT_FILE={cert}", f"export REQUESTS_CA_BUNDLE={cert}",
             f"export NODE_EXTRA_CA_CERTS={cert}"]
    if json_:
        print_json({"cert": str(cert), "env": {"SSL_CERT_FILE": str(cert),
                                               "REQUESTS_CA_BUNDLE": str(cert),
                                               "NODE_EXTRA_CA_CERTS": str(cert)}})
        return
    err_console.print(f"bridge's CA certificate: {cert}\n"
                      "Trust it in the shell that runs your app (HTTPS through the explicit proxy):")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def status(
    json_: Annotated[bool, typer.Option("--json", help="The control API's status document.")] = False,
) -> None:
    """Routes, listeners, upstreams and request counts of the running bridge.

    Example:\n
      bridge status --json | jq '.routes[].requests'
    """
    from bridge_cli.control.client import ControlClient

    data = ControlClient.from_home(bridge_home()).status()
    if json_:
        print_json(data)
        return
    console.print(f"bridge {data['version']} (pid {data['pid']}, up {data['uptime_s']:.0f}s) — "
                  f"config {data['config']}")
    table = Table("listener", "address", "kind", box=None)
    for lst in data["listeners"]:
        table.add_row(lst["name"], lst["address"], lst["kind"])
    console.print(table)
    routes = Table("route", "upstream", "url", "requests", "breaker", "errors", "p50 ms", box=None)
    for r in data["routes"]:
        p50 = r["latency_ms"]["p50"]
        for i, u in enumerate(r["upstreams"]):
            br = u.get("breaker")
            breaker = "-" if br is None else (
                f"{br['state']} ({br['failures']}/{br['calls']} failed)")
            routes.add_row(r["name"] if i == 0 else "", u["name"], u["url"], str(u["requests"]),
                           breaker, str(r["errors"]) if i == 0 else "",
                           f"{p50:.1f}" if (p50 is not None and i == 0) else "")
    console.print(routes)
    console.print(f"pass-through requests: {data['passthrough']['requests']}")

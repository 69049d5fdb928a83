"""`bridge init`, `validate`, `ca` and `status`."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bridge_cli.cli.output import console, err_console, print_json
from bridge_cli.config.loader import load_config, schema
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

    results, lines, failed = [], {}, False
    for f in files:
        try:
            cfg = load_config(f)
            results.append({"file": str(f), "valid": True, "routes": [r.name for r in cfg.routes]})
        except ConfigError as e:
            failed = True
            lines[str(f)] = str(e).splitlines()
            results.append({"file": str(f), "valid": False,
                            "errors": [config_problem(str(f), line) for line in lines[str(f)]]})
    if json_:
        print_json(results)
    else:
        for r in results:
            if r["valid"]:
                console.print(f"[green]ok[/green] {escape(r['file'])}: {len(r['routes'])} route(s)")
            else:
                for line in lines[r["file"]]:
                    err_console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
    if failed:
        raise typer.Exit(2)


# "FILE:LINE: KEY: MESSAGE", as config/loader.py words every problem; KEY and LINE may be
# missing ("FILE: no such config file", "FILE:3: invalid YAML: ...").
_PROBLEM = re.compile(r"(?:(?P<line>\d+): )?(?:(?P<key>\S+?): )?(?P<message>.*)", re.S)


def config_problem(file: str, text: str) -> dict:
    """One line of a ConfigError as fields: file, line (or None), key (or None), message."""
    rest = text.removeprefix(file + ":").lstrip(" ") if text.startswith(file + ":") else None
    found = _PROBLEM.fullmatch(rest) if rest is not None else None
    if found is None:
        return {"file": file, "line": None, "key": None, "message": text}
    key = found["key"]
    top = re.split(r"[.\[]", key, maxsplit=1)[0] if key else None
    if key and top not in schema()["properties"]:  # a word of the message, not a key
        key, message = None, f"{key}: {found['message']}"
    else:
        message = found["message"]
    line = int(found["line"]) if found["line"] else None
    return {"file": file, "line": line, "key": key, "message": message}


def ca(
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable paths.")] = False,
) -> None:
    """Show where bridge's CA certificate is and how to make clients trust it.

    Needed only for HTTPS through the explicit proxy (HTTPS_PROXY); reverse routes
    (a base URL such as http://127.0.0.1:8081) need no CA at all.

    Example:\n
      bridge ca            # prints the export lines to paste into your shell
    """
    from bridge_cli.cli.up import ensure_ca, trust_bundle  # the one door from cli/ into proxy/

    home = bridge_home()
    cert = ensure_ca(home)
    bundle = trust_bundle(home)  # SSL_CERT_FILE / REQUESTS_CA_BUNDLE replace the system's CAs
    env = {"SSL_CERT_FILE": str(bundle), "REQUESTS_CA_BUNDLE": str(bundle),
           "NODE_EXTRA_CA_CERTS": str(cert)}  # Node adds these to its own CAs: bridge's alone
    if json_:
        print_json({"cert": str(cert), "bundle": str(bundle), "env": env})
        return
    err_console.print(f"bridge's CA certificate: {cert}\n"
                      f"with the system's CAs: {bundle}\n"
                      "Trust it in the shell that runs your app (HTTPS through the explicit proxy):")
    for name, value in env.items():
        console.print(f"export {name}={value}", highlight=False, soft_wrap=True)


def status(
    json_: Annotated[bool, typer.Option("--json", help="The control API's status document.")] = False,
) -> None:
    """Routes, listeners, upstreams and request counts of the running bridge.

    Per route: requests; errors, the requests that ended in an error (a 5xx answer, the
    upstream's or bridge's own, an error bridge answered itself such as an unreachable
    upstream, a timeout or a budget refusal, or no whole answer); p50 and p99 latency in
    ms over its last 512 requests. Per upstream: the requests whose last try went to it,
    and its breaker.

    Example:\n
      bridge status --json | jq '.routes[].errors'
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
    console.print(_routes_table(data["routes"]))
    console.print(_upstreams_table(data["routes"]))
    console.print(f"pass-through requests: {data['passthrough']['requests']}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _routes_table(routes: list[dict]) -> Table:
    """One row per route: its own counts and latency."""
    table = Table("route", "requests", "errors", "p50 ms", "p99 ms", "drift", box=None)
    for r in routes:
        drift = r.get("drift") or {}
        table.add_row(r["name"], str(r["requests"]), str(r["errors"]),
                      _ms(r["latency_ms"]["p50"]), _ms(r["latency_ms"]["p99"]),
                      ", ".join(f"{n} {kind}" for kind, n in sorted(drift.items())) or "-")
    return table


def _upstreams_table(routes: list[dict]) -> Table:
    """One row per upstream of each route: its URL, requests and breaker."""
    table = Table("route", "upstream", "url", "requests", "breaker", box=None)
    for r in routes:
        for u in r["upstreams"]:
            br = u.get("breaker")
            breaker = "-" if br is None else f"{br['state']} ({br['failures']}/{br['calls']} failed" + (
                f", {math.ceil(br['open_remaining_s'])}s left)" if br.get("open_remaining_s")
                else ")")
            table.add_row(r["name"], u["name"], u["url"], str(u["requests"]), breaker)
    return table

"""`bridge chaos inject | list | clear`: faults in a running bridge, through the control API."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bridge_cli.cli.output import console, err_console, print_json
from bridge_cli.control.client import ControlClient
from bridge_cli.errors import UsageError
from bridge_cli.store import bridge_home

chaos_app = typer.Typer(
    help="Make upstreams misbehave on demand, in a running bridge.\n\n"
    "Example: bridge chaos inject --route openai --preset openai-429 --probability 30% --for 5m",
    no_args_is_help=True,
)


def _client() -> ControlClient:
    return ControlClient.from_home(bridge_home())


@chaos_app.command("inject")
def inject(
    route: Annotated[str, typer.Option(help="Route to fault, or * for every route.")] = "*",
    name: Annotated[str | None, typer.Option(help="Name (default: route-action-N).")] = None,
    status: Annotated[int | None, typer.Option(help="Answer with this HTTP status.")] = None,
    preset: Annotated[str | None, typer.Option(
        help="A real provider error: openai-429, openai-500, anthropic-429, "
             "anthropic-529-overloaded, github-403-rate-limit.")] = None,
    header: Annotated[list[str] | None, typer.Option(
        "--header", help="Header of the injected answer, NAME:VALUE (repeatable).")] = None,
    body: Annotated[str | None, typer.Option(help="Body of the injected answer.")] = None,
    latency: Annotated[str | None, typer.Option(help="Delay before forwarding, e.g. 2s.")] = None,
    jitter: Annotated[str | None, typer.Option(help="± random extra delay, e.g. 500ms.")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Drop the connection, no answer.")] = False,
    hang: Annotated[str | None, typer.Option(
        help="Never answer: 'true' (until timeout or the client gives up) or a duration.")] = None,
    throttle: Annotated[str | None, typer.Option(help="Bandwidth of the body, e.g. 10KB/s.")] = None,
    slow_first_byte: Annotated[str | None, typer.Option(help="Delay before the first byte.")] = None,
    truncate: Annotated[str | None, typer.Option(help="Cut the body after N bytes or 50%.")] = None,
    corrupt: Annotated[bool, typer.Option("--corrupt", help="Malformed JSON body.")] = False,
    sse_cut_after: Annotated[int | None, typer.Option(help="Cut SSE streams after N events.")] = None,
    sse_delay: Annotated[str | None, typer.Option(help="Delay between SSE events.")] = None,
    probability: Annotated[str | None, typer.Option(help="Share of matching requests, e.g. 30%.")] = None,
    every: Annotated[int | None, typer.Option(help="Fault every Nth matching request.")] = None,
    first: Annotated[int | None, typer.Option(help="Fault the first N matching requests.")] = None,
    count: Annotated[int | None, typer.Option(help="Remove the fault after N hits.")] = None,
    for_: Annotated[str | None, typer.Option("--for", help="Remove the fault after this long, e.g. 5m.")] = None,
    upstream: Annotated[str | None, typer.Option(help="Only tries on this upstream of the route.")] = None,
    stage: Annotated[str | None, typer.Option(
        help="upstream (per try, seen by retries; default) or client (the final answer).")] = None,
    match_path: Annotated[str | None, typer.Option(help="Only paths matching this glob.")] = None,
    match_method: Annotated[str | None, typer.Option(help="Only this method.")] = None,
    match_header: Annotated[list[str] | None, typer.Option(
        help="Only requests with this header value, NAME:VALUE (repeatable).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the control API's answer.")] = False,
) -> None:
    """Add a fault to the running bridge; it applies at once.

    Examples:\n
      bridge chaos inject --route openai --status 503 --probability 30% --for 5m\n
      bridge chaos inject --route openai --preset openai-429 --count 3\n
      bridge chaos inject --route api --latency 2s --jitter 500ms --match-path '/v1/**'
    """
    fault: dict = {"route": route}
    for key, value in (("name", name), ("status", status), ("preset", preset), ("body", body),
                       ("latency", latency), ("jitter", jitter), ("throttle", throttle),
                       ("slow_first_byte", slow_first_byte), ("sse_cut_after", sse_cut_after),
                       ("sse_delay", sse_delay), ("probability", probability), ("every", every),
                       ("first", first), ("count", count), ("for", for_),
                       ("upstream", upstream), ("stage", stage)):
        if value is not None:
            fault[key] = value
    if reset:
        fault["reset"] = True
    if corrupt:
        fault["corrupt"] = True
    if hang is not None:
        fault["hang"] = True if hang.lower() in ("true", "yes", "forever") else hang
    if truncate is not None:
        fault["truncate"] = int(truncate) if truncate.isdigit() else truncate
    if header:
        fault["headers"] = _pairs(header, "--header")
    match = {}
    if match_path:
        match["path"] = match_path
    if match_method:
        match["method"] = match_method.upper()
    if match_header:
        match["header"] = _pairs(match_header, "--match-header")
    if match:
        fault["match"] = match
    answer = _client().add_fault(fault)
    if json_:
        print_json(answer)
        return
    f = answer["fault"]
    console.print(f"injected [bold]{escape(f['name'])}[/bold]: {escape(f['does'])}", highlight=False)
    err_console.print(f"remove it with `bridge chaos clear {f['name']}`; seed {answer['seed']}")


@chaos_app.command("list")
def list_(
    json_: Annotated[bool, typer.Option("--json", help="The control API's document.")] = False,
) -> None:
    """Show the active faults, their hits so far and time left.

    Example:\n
      bridge chaos list
    """
    data = _client().faults()
    if json_:
        print_json(data)
        return
    if not data["faults"]:
        console.print(f"no active faults (seed {data['seed']})")
        return
    table = Table("name", "what it does", "hits", "left", "from", box=None)
    for f in data["faults"]:
        left = "-" if f["remaining_s"] is None else f"{f['remaining_s']:.0f}s"
        if f["count"] is not None:
            left += f", {max(0, f['count'] - f['hits'])} hit(s)"
        table.add_row(escape(f["name"]), escape(f["does"]), str(f["hits"]), left, f["source"])
    console.print(table)
    console.print(f"seed {data['seed']}")


@chaos_app.command("clear")
def clear(
    name: Annotated[str | None, typer.Argument(help="The fault to remove (default: all).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="The control API's answer.")] = False,
) -> None:
    """Remove one fault, or all of them.

    Examples:\n
      bridge chaos clear openai-503-1\n
      bridge chaos clear
    """
    answer = _client().remove_fault(name)
    if json_:
        print_json(answer)
        return
    removed = answer["removed"]
    console.print(f"removed {len(removed)} fault(s)" + (f": {', '.join(removed)}" if removed else ""))


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition(":")
        if not sep or not k.strip():
            raise UsageError(f"{flag} {item!r}: expected NAME:VALUE, e.g. retry-after:1")
        out[k.strip()] = v.strip()
    return out

"""`bridge chaos inject | list | clear`: faults in a running bridge, through the control API."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from bridge_cli.cli.output import console, err_console, print_json
from bridge_cli.control.client import ControlClient
from bridge_cli.engine.faults import KINDS, Option
from bridge_cli.errors import UsageError
from bridge_cli.store import bridge_home

chaos_app = typer.Typer(
    help="Make upstreams misbehave on demand, in a running bridge.\n\n"
    "Example: bridge chaos inject --route openai --preset openai-429 --probability 30% --for 5m",
    no_args_is_help=True,
)


def _client() -> ControlClient:
    return ControlClient.from_home(bridge_home())


def with_kind_options(command: Callable[..., None]) -> Callable[..., None]:
    """Put one option per config key of every fault kind (engine/faults) where `command`
    has its `actions` parameter; the command gets them in `actions`, as config keys."""
    # Typer reads a command's options from its signature: a new kind's flag appears by
    # rewriting that signature, not by another parameter written here by hand.
    signature = inspect.signature(command, eval_str=True)
    kind_options = [option for kind in KINDS.values() for option in kind.options]
    params: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        params += [_kind_parameter(o) for o in kind_options] if param.name == "actions" else [param]

    @functools.wraps(command)
    def run(**kwargs: Any) -> None:
        actions = {}
        for option in kind_options:
            value = kwargs.pop(option.key)
            if value is not None and value is not False:
                actions[option.key] = _config_value(option, value)
        command(**kwargs, actions=actions)

    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return run


# A flag's Python type, and its value when not given, by Option.cli.
_FLAG_TYPES: dict[type, tuple[Any, Any]] = {
    str: (str | None, None), int: (int | None, None), bool: (bool, False),
    list: (list[str] | None, None),
}  # fmt: skip


def _kind_parameter(option: Option) -> inspect.Parameter:
    hint, default = _FLAG_TYPES[option.cli]
    return inspect.Parameter(
        option.key, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
        annotation=Annotated[hint, typer.Option(option.cli_flag, help=option.help)])


def _config_value(option: Option, value: Any) -> Any:
    """A flag's value as the config key takes it."""
    if option.cli is list:
        return _pairs(value, option.cli_flag)
    return option.from_text(value) if isinstance(value, str) else value


@chaos_app.command("inject")
@with_kind_options
def inject(
    route: Annotated[str, typer.Option(help="Route to fault, or * for every route.")] = "*",
    name: Annotated[str | None, typer.Option(help="Name (default: route-action-N).")] = None,
    actions: dict[str, Any] | None = None,  # one option per fault-kind key: with_kind_options
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
    if name is not None:
        fault["name"] = name
    fault |= actions or {}
    for key, value in (("probability", probability), ("every", every), ("first", first),
                       ("count", count), ("for", for_), ("upstream", upstream), ("stage", stage)):
        if value is not None:
            fault[key] = value
    match = _match(match_path, match_method, match_header)
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
    for b in answer.get("breakers", []):
        console.print(f"breaker {escape(b['route'])}/{escape(b['upstream'])} {_breaker_state(b)}",
                      highlight=False)
    if answer.get("breakers"):
        err_console.print("a breaker recovers by itself, not with the faults: watch it in "
                          "`bridge status`")


def _breaker_state(b: dict) -> str:
    """How long a breaker left open (by the faults, maybe) keeps failing requests fast."""
    left = b.get("open_remaining_s")
    if b["state"] == "open" and left:
        return (f"is still open for {math.ceil(left)}s: bridge sends it nothing until then, "
                "then trial calls close it")
    return "is half-open: the next requests to it are trial calls that close it if they succeed"


def _match(path: str | None, method: str | None, header: list[str] | None) -> dict:
    """The fault's `match:` from the --match-* flags ({} when none is given)."""
    match: dict = {}
    if path:
        match["path"] = path
    if method:
        match["method"] = method.upper()
    if header:
        match["header"] = _pairs(header, "--match-header")
    return match


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition(":")
        if not sep or not k.strip():
            raise UsageError(f"{flag} {item!r}: expected NAME:VALUE, e.g. retry-after:1")
        out[k.strip()] = v.strip()
    return out

"""The `bridge` command: one Typer sub-app or command per group, errors mapped once here."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from bridge_cli import __version__
from bridge_cli.cli import basics, dash, demo, diff, migrate, up
from bridge_cli.cli.cache import cache_app
from bridge_cli.cli.chaos import chaos_app
from bridge_cli.cli.drift import drift_app
from bridge_cli.cli.output import err_console
from bridge_cli.cli.spend import spend_app
from bridge_cli.errors import BridgeError, ExitStatus

app = typer.Typer(
    name="bridge",
    help="A local developer proxy for the HTTP APIs your app depends on.\n\n"
    "Example: bridge up -c bridge.yaml",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("up")(up.up)
app.command("init")(basics.init)
app.command("validate")(basics.validate)
app.command("ca")(basics.ca)
app.command("status")(basics.status)
app.command("dash")(dash.dash)
app.command("diff")(diff.diff)
app.command("migrate")(migrate.migrate)
app.command("demo")(demo.demo)
app.add_typer(chaos_app, name="chaos")
app.add_typer(cache_app, name="cache")
app.add_typer(spend_app, name="spend")
app.add_typer(drift_app, name="drift")


def _version(value: bool) -> None:
    if value:
        print(f"bridge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """A local developer proxy for the HTTP APIs your app depends on."""
    global _DEBUG
    _DEBUG = debug


_DEBUG = False


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    try:
        rc = app(standalone_mode=False)  # click returns typer.Exit's code here
        sys.exit(rc if isinstance(rc, int) else 0)
    except BridgeError as e:
        if _DEBUG:
            raise
        err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(int(e.exit_status))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(int(ExitStatus.ERROR))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # click's usage errors and the like
        usage, exits = _click_exceptions()
        if exits and isinstance(e, exits):
            sys.exit(e.exit_code)
        if usage and isinstance(e, usage):
            e.show()  # one line of usage and the error, as click prints it
            sys.exit(int(ExitStatus.ERROR))
        raise


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Usage-error and exit classes of click, and of the click newer Typer vendors."""
    usage: list[type] = []
    exits: list[type] = []
    for name in ("click.exceptions", "typer._click.exceptions"):
        try:
            mod = __import__(name, fromlist=["ClickException"])
        except ImportError:
            continue
        if hasattr(mod, "ClickException"):
            usage.append(mod.ClickException)
        if hasattr(mod, "Exit"):
            exits.append(mod.Exit)
    return tuple(usage), tuple(exits)

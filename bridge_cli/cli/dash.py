"""`bridge dash`: the live dashboard of a running bridge, through its control API."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from bridge_cli.errors import NotRunningError, UsageError
from bridge_cli.store import bridge_home
from bridge_cli.tui.api import START_HINT, read_control_file


def dash(
    url: Annotated[str | None, typer.Option(
        help="Control API URL (default: from $BRIDGE_HOME/control.json).")] = None,
    token: Annotated[str | None, typer.Option(
        help="Control API token (default: from $BRIDGE_HOME/control.json).")] = None,
) -> None:
    """Watch a running bridge live: traffic, breakers, spend, chaos and drift.

    Examples:\n
      bridge dash                    # the bridge of $BRIDGE_HOME\n
      bridge dash --url http://127.0.0.1:8765 --token TOKEN\n
      bridge up --dash               # proxy and dashboard in one process
    """
    from bridge_cli.tui.app import make_app  # Textual loads only for the dashboard

    if (url is None) != (token is None):
        raise UsageError("give --url and --token together, or neither (then both come from "
                         "$BRIDGE_HOME/control.json)")
    home = bridge_home()
    if url is None and read_control_file(home) is None and not _interactive():
        raise NotRunningError(f"no bridge is running (no {home / 'control.json'}); {START_HINT}")
    make_app(url, token, None if url else home).run()


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


async def run_beside(url: str, token: str, home: Path) -> None:
    """`bridge up --dash`: the dashboard on the bridge's own loop, until the user quits it
    (or SIGTERM). Log lines would draw over the screen: they are held back meanwhile."""
    from bridge_cli.tui.app import DashboardApp

    app = DashboardApp(url, token, refresh=lambda: read_control_file(home))
    root = logging.getLogger()
    handlers, root.handlers = root.handlers, [logging.NullHandler()]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, app.exit)
    try:
        await app.run_async()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        root.handlers = handlers

"""`bridge demo`: everything bridge does, on fake upstreams, in one command and one minute."""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from bridge_cli.cli import up
from bridge_cli.cli.output import console, err_console, print_json
from bridge_cli.config.units import parse_duration
from bridge_cli.demo.run import Demo, Options
from bridge_cli.demo.summary import lines
from bridge_cli.errors import UsageError

DEFAULT_HEADLESS = 60.0  # seconds


def demo(
    headless: Annotated[bool, typer.Option(
        "--headless", help="No dashboard: run for --duration, then print a summary "
        "(for tests and CI).")] = False,
    duration: Annotated[str | None, typer.Option(
        help="How long to run, e.g. 30s or 2m (default: 60s with --headless; with the "
        "dashboard, until you quit it).")] = None,
    rate: Annotated[float, typer.Option(help="Requests a second the demo's app sends.")] = 5.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    seed: Annotated[int | None, typer.Option(
        help="Seed of every random draw (traffic, upstreams, chaos), to replay a run.")] = None,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the demo's state directory (spend, cache, drift, flow log) "
        "and print where it is.")] = False,
) -> None:
    """Watch bridge at work with no network and no API keys: two fake LLM upstreams, a
    route with fallback, cache, budget, drift and a fault schedule, an app's traffic and
    the dashboard. Breakers trip and recover, spend rises toward the budget, the cache
    answers repeats and the upstream changes shape, all within a minute.

    Examples:\n
      bridge demo                                  # the dashboard, until you quit it\n
      bridge demo --headless --duration 30s        # a summary after 30 s\n
      bridge demo --headless --json --seed 7       # JSON; the same traffic and faults again
    """
    if seed is not None and not 0 <= seed < 2**63:
        raise UsageError(f"--seed {seed}: give a whole number from 0 (e.g. --seed 42)")
    options = Options(duration=_duration(duration, headless), rate=_rate(rate),
                      seed=seed if seed is not None else secrets.randbelow(10**6))
    dashboard = None if headless else _dashboard_class()
    home = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    try:
        summary = asyncio.run(_run(options, home, dashboard, keep))
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    if json_out:
        print_json(summary)
        return
    for line in lines(summary):
        console.print(line, markup=False, highlight=False)


def _duration(value: str | None, headless: bool) -> float | None:
    if value is None:
        return DEFAULT_HEADLESS if headless else None
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = -1.0
    if not 1 <= seconds <= 86400:
        raise UsageError(f"--duration {value}: give how long to run, from 1s to 24h, as a "
                         "duration like 30s or 2m (e.g. --duration 30s)")
    return seconds


def _rate(value: float) -> float:
    if not 0.1 <= value <= 100:
        raise UsageError(f"--rate {value:g}: give the requests a second the demo sends, "
                         "from 0.1 to 100 (e.g. --rate 5)")
    return value


def _dashboard_class():
    """The dashboard app, or a one-line error when it can't run here."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("the demo's dashboard needs a terminal; run `bridge demo --headless` "
                         "for a summary instead")
    try:
        from bridge_cli.tui.app import DashboardApp  # textual loads only for the dashboard
    except ImportError as e:
        if e.name not in (None, "bridge_cli.tui.app"):
            raise
        raise UsageError("this version of bridge has no dashboard yet; run `bridge demo "
                         "--headless` for a summary instead") from None
    return DashboardApp


async def _run(options: Options, home: Path, dashboard, keep: bool) -> dict:
    from bridge_cli.proxy.runtime import Bridge  # mitmproxy loads only to run a bridge

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(up._quiet_cancellations)
    _log_to(None if dashboard is None else home / "bridge.log")
    run = Demo(options, home, lambda cfg, h, seed: Bridge(cfg, h, watch=False, seed=seed), keep)
    stop = asyncio.Event()

    def on_signal() -> None:
        if not stop.is_set() and dashboard is None:
            err_console.print("stopping: the calls in flight finish, then the summary so far")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await run.start()  # stops what it started if it fails
        try:
            if dashboard is None:
                run.bridge.bus.subscribe(up._make_printer(quiet=True))
                err_console.print(
                    f"bridge demo: route chat on {run.route_url} → fake LLMs cloud (primary) "
                    f"and local (fallback); {options.duration:g} s at {options.rate:g} "
                    f"requests/s, seed {options.seed} (Ctrl-C stops early)",
                    highlight=False, markup=False)
                await run.wait(stop)
            else:
                await _show(dashboard(run.control_url, run.token), run, stop)
        finally:
            summary = await run.stop()  # a dashboard that failed still leaves nothing running
        return summary
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _show(app, run: Demo, stop: asyncio.Event) -> None:
    """The dashboard until the user quits it, or the duration ends."""
    shown = asyncio.create_task(app.run_async(), name="demo-dashboard")
    waited = asyncio.create_task(run.wait(stop), name="demo-wait")
    done, _ = await asyncio.wait({shown, waited}, return_when=asyncio.FIRST_COMPLETED)
    if shown in done:
        waited.cancel()
    else:
        app.exit()
    await asyncio.gather(shown, waited, return_exceptions=True)
    if shown.done() and not shown.cancelled() and shown.exception() is not None:
        raise shown.exception()


def _log_to(path: Path | None) -> None:
    """bridge's log lines: on stderr, or, under the dashboard, into a file (the terminal is
    the dashboard's)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the demo app's calls: not news
    if path is None:
        up.setup_logging(verbose=False)
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)

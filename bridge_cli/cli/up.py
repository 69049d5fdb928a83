"""`bridge up`: start the proxy, print where to point the app, then one line per request."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.logging import RichHandler
from rich.markup import escape

from bridge_cli.cli.output import console, err_console
from bridge_cli.cli.settings import parse_listen_option, resolve_config
from bridge_cli.common.redact import redact_text, redact_url
from bridge_cli.config.loader import unenforced_keys
from bridge_cli.config.model import Config, Control, Proxy, Route
from bridge_cli.control.view import BridgeView
from bridge_cli.engine.cache import ReplayMode
from bridge_cli.engine.events import BreakerEvent, BudgetEvent, DriftEvent, FlowEvent, NoticeEvent
from bridge_cli.errors import UsageError
from bridge_cli.store import bridge_home
from bridge_cli.store.responses import ResponseStores

STATUS_STYLE = {2: "green", 3: "cyan", 4: "yellow", 5: "red"}


class _RedactFilter(logging.Filter):
    """mitmproxy's own log lines pass through the same redaction as ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        return True


def setup_logging(verbose: bool) -> None:
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False, show_time=False,
                              rich_tracebacks=False, markup=False)
    else:  # RichHandler pads each line to the console's width, which off a terminal is huge
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    handler.addFilter(_RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("mitmproxy").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def up(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Config file (default: ./bridge.yaml if it exists, else the built-in default).",
        dir_okay=False)] = None,
    listen: Annotated[str | None, typer.Option(
        help="Explicit proxy address, overriding proxy.listen (port 0: any free port).")] = None,
    control_listen: Annotated[str | None, typer.Option(
        "--control-listen", help="Control API address, overriding control.listen.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line per request.")] = False,
    no_watch: Annotated[bool, typer.Option("--no-watch", help="Don't reload when the config file changes.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show mitmproxy's own log lines.")] = False,
    seed: Annotated[int | None, typer.Option(
        help="Seed of every chaos probability draw (overrides chaos.seed), to replay a run.")] = None,
    record: Annotated[bool, typer.Option(
        "--record", help="Record every response of the routes into a cassette.")] = False,
    record_route: Annotated[list[str] | None, typer.Option(
        "--record-route", help="With --record: only this route (repeatable).")] = None,
    cassette: Annotated[str, typer.Option(help="Cassette to record into or replay from.")] = "default",
    offline: Annotated[bool, typer.Option(
        "--offline", help="Serve only recordings and the cache; contact no upstream.")] = False,
    drain: Annotated[float, typer.Option(
        "--drain", help="On SIGTERM or Ctrl-C, seconds to let requests in flight finish "
        "before stopping (a second signal stops at once).")] = 10.0,
    dash: Annotated[bool, typer.Option(
        "--dash", help="Run the dashboard in this process; quitting it stops bridge.")] = False,
) -> None:
    """Start bridge: the explicit proxy, each route's listener and the control API.

    Examples:\n
      bridge up                      # ./bridge.yaml, or the built-in default (proxy on :8080)\n
      bridge up -c bridge.yaml -q    # a config file, without per-request lines\n
      bridge up --listen 127.0.0.1:0 --control-listen 127.0.0.1:0\n
      bridge up --drain 30           # on Ctrl-C / SIGTERM, give requests in flight 30 s\n
      bridge up --dash               # with the live dashboard (bridge dash)
    """
    if not 0 <= drain <= 3600:
        raise UsageError(f"--drain {drain:g}: give the seconds to wait for requests in flight "
                         "on shutdown, from 0 to 3600 (e.g. --drain 10)")
    cfg, path, described = resolve_config(config)
    if listen is not None:
        cfg = dataclasses.replace(cfg, proxy=Proxy(parse_listen_option(listen, "--listen")))
    if control_listen is not None:
        cfg = dataclasses.replace(
            cfg, control=Control(parse_listen_option(control_listen, "--control-listen")))
    home = bridge_home()
    setup_logging(verbose)
    err_console.print(f"[bold]bridge[/bold] — config: {escape(described)}")
    for key in unenforced_keys_of(cfg, path):
        err_console.print(
            f"[yellow bold]warning:[/yellow bold] `{escape(key)}` is in the config but not enforced by "
            "this version of bridge yet; it is accepted and ignored", highlight=False)
    replay = _replay_mode(cfg, home, record, offline, record_route, cassette)
    if offline:
        err_console.print(f"[yellow]offline[/yellow]: serving cassette '{escape(cassette)}' and "
                          "the cache only; no upstream is contacted")
    elif record:
        err_console.print(f"recording into cassette '{escape(cassette)}'")
    asyncio.run(_serve(cfg, home, path, quiet, watch=not no_watch, seed=seed, replay=replay,
                       drain=drain, dash=dash))


def _replay_mode(cfg: Config, home: Path, record: bool, offline: bool,
                 record_route: list[str] | None, cassette: str) -> ReplayMode:
    if record and offline:
        raise UsageError("--record and --offline exclude each other: record online first, "
                         "then replay with --offline")
    unknown = sorted(set(record_route or ()) - {r.name for r in cfg.routes})
    if unknown:
        raise UsageError(f"--record-route {unknown[0]}: no such route "
                         f"(routes: {', '.join(r.name for r in cfg.routes) or 'none'})")
    ResponseStores(home).cassette(cassette)  # checks the name before anything binds
    return ReplayMode(record=record, offline=offline, cassette=cassette,
                      routes=frozenset(record_route or ()))


def unenforced_keys_of(cfg: Config, path: Path | None) -> list[str]:
    if path is None:
        return []
    from bridge_cli.config.loader import raw_config

    return unenforced_keys(raw_config(path.read_text(), str(path)))


async def _serve(cfg: Config, home: Path, path: Path | None, quiet: bool, watch: bool,
                 seed: int | None, replay, drain: float = 10.0, dash: bool = False) -> None:
    from bridge_cli.proxy.runtime import Bridge  # mitmproxy loads only for `up`

    # Before the bridge starts: mitmproxy's master puts back the handler it found when it stops.
    asyncio.get_running_loop().set_exception_handler(_quiet_cancellations)
    bridge = Bridge(cfg, home, config_path=path, watch=watch, seed=seed, replay=replay)
    if not dash:  # the dashboard shows what the lines would
        bridge.bus.subscribe(_make_printer(quiet))
    try:
        await bridge.start()
    except BaseException:
        await bridge.stop()
        raise
    _print_listeners(bridge.view(), home, seed_given=seed is not None)
    if dash:  # the dashboard on this loop: quitting it drains and stops the bridge
        from bridge_cli.cli.dash import run_beside

        try:
            await run_beside(bridge.view().control_url, bridge.token, home)
        finally:
            await _drain_then_stop(bridge, drain)
            err_console.print("bridge stopped")
        return
    loop = asyncio.get_running_loop()
    signals: list[int] = []

    def on_signal(sig: int) -> None:
        signals.append(sig)
        if len(signals) > 1:  # a second signal: stop now
            asyncio.ensure_future(bridge.stop())
            return
        err_console.print(f"stopping: finishing the requests in flight (up to {drain:g} s; "
                          "Ctrl-C again to stop at once)")
        asyncio.ensure_future(_drain_then_stop(bridge, drain))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await bridge.wait_stopped()
    finally:
        await bridge.stop()
        err_console.print("bridge stopped")


def _quiet_cancellations(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Connections cut at shutdown are cancelled tasks, not errors: Python 3.12.1's stream
    callback reports each as "Exception in callback" with a traceback; say nothing."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


def trust_bundle(home: Path) -> Path:
    """The system's CAs plus bridge's in one PEM file (`bridge ca`'s SSL_CERT_FILE)."""
    from bridge_cli.proxy.runtime import Bridge

    return Bridge.trust_bundle(home)


async def _drain_then_stop(bridge, grace: float) -> None:
    left = await bridge.drain(grace)
    if left:
        err_console.print(f"[yellow]{left} request(s) still in flight after {grace:g} s: "
                          "cut[/yellow] (their spend settles at what was reserved)")
    await bridge.stop()


def ensure_ca(home: Path) -> Path:
    """bridge's CA certificate in `home`, created when missing (`bridge ca`)."""
    from bridge_cli.proxy.runtime import Bridge  # mitmproxy's CA code stays in proxy/

    return Bridge.ensure_ca(home)


# What the official SDKs of a provider read, and the path their requests start with that
# the base URL must carry: OpenAI's SDK posts to BASE/chat/completions, so its base ends
# in /v1; Anthropic's posts to BASE/v1/messages, google-genai's to BASE/v1beta/models/...
APP_SETTINGS = {"openai": ("OPENAI_BASE_URL", "/v1"), "anthropic": ("ANTHROPIC_BASE_URL", ""),
                "google": ("GOOGLE_GEMINI_BASE_URL", "")}
PROVIDER_HOSTS = {"api.openai.com": "openai", "api.anthropic.com": "anthropic",
                  "generativelanguage.googleapis.com": "google"}


def app_setting(route: Route, url: str) -> str | None:
    """`OPENAI_BASE_URL=URL/v1` and the like: the setting to paste for a route whose provider
    is known (its `spend.provider`, else an upstream's host); None when it is not."""
    provider = route.spend.provider if route.spend and route.spend.provider else None
    hosts = [urlsplit(u.url).hostname for u in route.upstreams]
    provider = provider or next((PROVIDER_HOSTS[h] for h in hosts if h in PROVIDER_HOSTS), None)
    if provider not in APP_SETTINGS:
        return None
    name, prefix = APP_SETTINGS[provider]
    base_path = urlsplit(route.upstreams[0].url).path.rstrip("/")
    if base_path and not (prefix and base_path.endswith(prefix)):
        return None  # an upstream path bridge can't map to the SDK's own: don't guess
    return f"{name}={url}{'' if base_path else prefix}"


def _print_listeners(view: BridgeView, home: Path, seed_given: bool = False) -> None:
    """Where to point the app: one line per listener, the control URL, and the chaos seed
    when chaos can act (faults or a seed in the config, or --seed)."""
    config = view.config
    for lst in view.listeners():
        url = f"http://{lst.address}"
        route = config.route(lst.name)
        if route is None:  # the explicit proxy
            console.print(f"  [bold]proxy[/bold]    {url}   set HTTPS_PROXY={url} "
                          "(HTTPS needs bridge's CA: run `bridge ca`)")
            continue
        ups = escape(", ".join(redact_url(u.url) for u in route.upstreams))
        name = f"[bold]{escape(lst.name)}[/bold]" + " " * max(0, 8 - len(lst.name))
        setting = app_setting(route, url)
        if setting:  # paste-ready: the SDK's own variable, with the path it expects
            console.print(f"  {name} {setting}   → {ups}")
        else:
            console.print(f"  {name} {url}   → {ups} (the app's base URL, in place of the "
                          "upstream's)")
    for route in config.routes:
        if route.listen is None and route.match is not None:
            console.print(f"  [bold]{route.name}[/bold]   via the proxy: host "
                          f"{route.match.host or '*'} path {route.match.path or '/**'}")
    console.print(f"  [bold]control[/bold]  {view.control_url}   (bridge status)")
    console.print(f"  flow log {home / 'flows.jsonl'}")
    faults = len(view.faults())
    chaos = config.chaos
    if seed_given or faults or chaos.faults or chaos.seed is not None or chaos.allow_headers:
        console.print(f"  chaos seed {view.seed} (replay this run with --seed {view.seed})"
                      + (f"; {faults} fault(s) from the config" if faults else ""))
    console.file.flush()


def _make_printer(quiet: bool):
    def on_event(event) -> None:
        if isinstance(event, NoticeEvent):
            style = {"error": "red", "warning": "yellow"}.get(event.level, "cyan")
            err_console.print(f"[{style}]{escape(event.message)}[/{style}]", highlight=False)
            return
        if isinstance(event, BreakerEvent):
            style = {"open": "red", "half_open": "yellow"}.get(event.new, "green")
            err_console.print(
                f"breaker [bold]{escape(event.route)}/{escape(event.upstream)}[/bold]: "
                f"{event.old} → [{style}]{event.new}[/{style}] ({escape(event.reason)})",
                highlight=False)
            return
        if isinstance(event, BudgetEvent):
            verb = ("reached its alert threshold" if event.what == "alert" else
                    "refused a request" if event.action == "block" else "was passed (warn only)")
            err_console.print(
                f"[yellow bold]budget[/yellow bold] {escape(event.scope)} {verb}: "
                f"${event.committed_usd} of ${event.limit_usd}", highlight=False)
            return
        if isinstance(event, DriftEvent):
            style = {"breaking": "red", "additive": "cyan"}.get(event.severity, "yellow")
            blocked = " — blocked (502)" if event.action == "block" and \
                event.severity == "breaking" else ""
            err_console.print(
                f"[{style} bold]drift[/{style} bold] {escape(event.route)} "
                f"{escape(event.endpoint)}: {event.severity} {event.change} at "
                f"{escape(event.path)} ({escape(str(event.before))} → "
                f"{escape(str(event.after))}){blocked}  (bridge drift)", highlight=False)
            return
        if quiet or not isinstance(event, FlowEvent):
            return
        status = event.status if event.status is not None else "---"
        style = STATUS_STYLE.get((event.status or 500) // 100, "red")
        extra = f" [red]{escape(event.error)}[/red]" if event.error else ""
        tries = f" ×{event.attempts}" if event.attempts > 1 else ""
        if event.cache in ("hit", "coalesced", "replay"):
            tries += f" [cyan]{event.cache}[/cyan]"
        if event.faults:
            tries += f" [magenta]fault:{escape(','.join(event.faults))}[/magenta]"
        tries += _cost_text(event)
        console.print(
            f"{event.method:6} {event.route or '-':14} {event.upstream or '-':16} "
            f"[{style}]{status}[/{style}] {event.duration_ms:7.1f}ms{tries}  {escape(event.url)}{extra}",
            highlight=False, soft_wrap=True)

    return on_event


def _cost_text(event: FlowEvent) -> str:
    """What the call cost, never a silent zero: `unpriced` when bridge couldn't price it
    (the ledger keeps why; `bridge spend` counts it), `~$X (estimated)` for an estimate."""
    if event.spend_status == "unpriced":
        return " [yellow]unpriced[/yellow]"
    if event.spend_status == "estimated":
        return f" ~${event.cost_usd} (estimated)"
    if event.spend_status in ("priced", "flat") and event.cost_usd is not None:
        return f" ${event.cost_usd}"
    return ""  # free (an error, a 4xx), saved by the cache, or a route that isn't priced

"""The listeners a config asks for: ports picked for port 0 (mitmproxy refuses two on :0,
and picks again if another process takes one first), checked before anything binds."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import socket
from dataclasses import dataclass

from bridge_cli.config.model import Config, Listen
from bridge_cli.control.view import PROXY_LISTENER
from bridge_cli.errors import StartupError
from bridge_cli.proxy.state import regular_spec, reverse_spec

MITM_SERVER_LOG = "mitmproxy.addons.proxyserver"  # logs a listener that failed to bind
MITM_CONNECTION_LOG = "mitmproxy.proxy.server"  # logs what happens on one connection


@dataclass(frozen=True)
class ListenerPlan:
    """One listener: who it serves, the config key that asked for it, where it binds."""

    name: str  # route name, or "proxy"
    key: str  # config key, for messages: "routes[openai].listen", "proxy.listen"
    listen: Listen  # concrete: port 0 already replaced by a free port
    picked: bool = False  # the config said port 0: bridge chose this port, may choose again

    @property
    def spec(self) -> str:
        if self.name == PROXY_LISTENER:
            return regular_spec(self.listen)
        return reverse_spec(self.listen)


def free_port(host: str) -> int:
    """A port the OS says is free on `host` now (mitmproxy rejects two listeners on :0)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_error(listen: Listen, key: str, error: OSError) -> StartupError:
    """The exit-2 error for `listen` failing to bind: names `key` and what to do."""
    why = {
        errno.EADDRINUSE: "is already in use",
        errno.EACCES: "needs privileges to bind",
        errno.EADDRNOTAVAIL: "is not an address of this machine",
    }.get(error.errno, f"cannot be bound ({error.strerror})")
    return StartupError(
        f"{key}: {listen} {why}; change {key} (or pass --listen/--control-listen) "
        "or stop whatever holds it"
    )


def check_bindable(listen: Listen, key: str) -> None:
    """Raise StartupError naming `key` when `listen` cannot be bound right now."""
    try:
        with socket.socket(_family(listen.host), socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((listen.host, listen.port))
    except OSError as e:
        raise bind_error(listen, key, e) from None


def pick(plan: ListenerPlan) -> ListenerPlan:
    """`plan` on a fresh free port of its host (its key named if the host can't bind)."""
    try:
        port = free_port(plan.listen.host)
    except OSError as e:
        raise bind_error(Listen(plan.listen.host, 0), plan.key, e) from None
    _QUIET.ports.add((plan.listen.host, port))
    return dataclasses.replace(plan, listen=Listen(plan.listen.host, port), picked=True)


def plan_listeners(
    config: Config, previous: dict[str, Listen] | None = None
) -> list[ListenerPlan]:
    """Every proxy listener of `config`, ports chosen; port-0 listeners keep the port
    they had in `previous` (by name), so a reload doesn't move them."""
    previous = previous or {}
    wanted: list[tuple[str, str, Listen]] = []
    if config.proxy is not None:
        wanted.append((PROXY_LISTENER, "proxy.listen", config.proxy.listen))
    for route in config.routes:
        if route.listen is not None:
            wanted.append((route.name, f"routes[{route.name}].listen", route.listen))
    plans = []
    for name, key, listen in wanted:
        plan = ListenerPlan(name, key, listen)
        if listen.port == 0:
            old = previous.get(name)
            kept = old is not None and old.host == listen.host
            plan = dataclasses.replace(plan, listen=old, picked=True) if kept else pick(plan)
        plans.append(plan)
    return plans


async def settled_servers(proxyserver, plans: list[ListenerPlan], timeout: float) -> dict:
    """mitmproxy's server of each plan (by mode spec), once each has bound or failed;
    `proxyserver`: mitmproxy's Proxyserver addon; timeout: seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        servers = {s.mode.full_spec: s for s in proxyserver.servers}
        pending = [p for p in plans if p.spec not in servers or not (
            servers[p.spec].listen_addrs or servers[p.spec].last_exception)]
        # is_running: mitmproxy applies a later change of `mode` only once it runs.
        if not pending and not proxyserver.servers.is_updating and proxyserver.is_running:
            return servers
        if loop.time() > deadline:
            p = pending[0] if pending else plans[0]
            raise StartupError(f"{p.key}: mitmproxy could not listen on {p.listen}")
        await asyncio.sleep(0.02)


class _QuietPickedFailures(logging.Filter):
    """Drops mitmproxy's error line for a port bridge picked (it is picked again instead),
    and the empty one it logs as it then drops that listener (a bare AssertionError)."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: set[tuple[str, int]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return bool(msg.strip()) and not any(f"failed to listen on {h}:{p} " in msg for h, p in self.ports)


_QUIET = _QuietPickedFailures()
logging.getLogger(MITM_SERVER_LOG).addFilter(_QUIET)


class _ClientTlsFailures(logging.Filter):
    """Drops mitmproxy's `Client TLS handshake failed…` line, logged per connection: the
    passthrough addon says it in bridge's words, once per host, with what to run. Kept
    when mitmproxy's own lines are asked for (`bridge up -v`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger("mitmproxy").getEffectiveLevel() <= logging.INFO:
            return True
        return not record.getMessage().startswith("Client TLS handshake failed.")


logging.getLogger(MITM_CONNECTION_LOG).addFilter(_ClientTlsFailures())

"""The listeners a config asks for, checked before anything binds for real."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from bridge_cli.config.model import Config, Listen
from bridge_cli.errors import StartupError
from bridge_cli.proxy.state import PROXY_LISTENER, regular_spec, reverse_spec


@dataclass(frozen=True)
class ListenerPlan:
    """One listener: who it serves, the config key that asked for it, where it binds."""

    name: str  # route name, or "proxy"
    key: str  # config key, for messages: "routes[openai].listen", "proxy.listen"
    listen: Listen  # concrete: port 0 already replaced by a free port

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


def check_bindable(listen: Listen, key: str) -> None:
    """Raise StartupError naming `key` when `listen` cannot be bound right now."""
    try:
        with socket.socket(_family(listen.host), socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((listen.host, listen.port))
    except OSError as e:
        why = {
            errno.EADDRINUSE: "is already in use",
            errno.EACCES: "needs privileges to bind",
            errno.EADDRNOTAVAIL: "is not an address of this machine",
        }.get(e.errno, f"cannot be bound ({e.strerror})")
        raise StartupError(
            f"{key}: {listen} {why}; change {key} (or pass --listen/--control-listen) "
            "or stop whatever holds it"
        ) from None


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
        if listen.port == 0:
            old = previous.get(name)
            port = old.port if old is not None and old.host == listen.host else free_port(listen.host)
            listen = Listen(listen.host, port)
        plans.append(ListenerPlan(name, key, listen))
    return plans

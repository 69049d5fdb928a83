"""Which config a command runs on, and small option parsers shared by commands."""

from __future__ import annotations

from pathlib import Path

from bridge_cli.config.loader import default_config, load_config
from bridge_cli.config.model import Config, Listen
from bridge_cli.errors import UsageError

DEFAULT_FILE = Path("bridge.yaml")


def resolve_config(explicit: Path | None) -> tuple[Config, Path | None, str]:
    """`-c FILE`, else ./bridge.yaml when it exists, else the built-in default; and a
    phrase saying which, for the user."""
    if explicit is not None:
        return load_config(explicit), explicit, str(explicit)
    if DEFAULT_FILE.is_file():
        return load_config(DEFAULT_FILE), DEFAULT_FILE, f"{DEFAULT_FILE} (found in the current directory)"
    return default_config(), None, "built-in default (no ./bridge.yaml here; `bridge init` writes one)"


def parse_listen_option(value: str, flag: str) -> Listen:
    """`HOST:PORT`, `:PORT` or `PORT` -> Listen; a one-line UsageError otherwise."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{flag} {value!r}: expected HOST:PORT or PORT with a port 0-65535, e.g. 127.0.0.1:8080")
    return Listen(host, int(port))

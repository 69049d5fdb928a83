"""Small conversions every migration shares: names, durations, env variables, ports."""

from __future__ import annotations

import re
from typing import Any

_NOT_NAME = re.compile(r"[^a-z0-9_-]+")
_ENV_REF = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")
_TAKEN_PORTS = {8080, 8765}  # the explicit proxy's and the control API's defaults
FIRST_PORT = 8081

# Hosts whose API key travels in a header of their own rather than `authorization`.
_KEY_HEADERS = {
    "api.anthropic.com": ("x-api-key", "{}"),
    "generativelanguage.googleapis.com": ("x-goog-api-key", "{}"),
}


def to_name(text: Any) -> str:
    """A bridge name (lowercase letters, digits, - and _) made from `text`."""
    name = _NOT_NAME.sub("-", str(text).strip().lower()).strip("-_")
    return name or "unnamed"


def env_name(*parts: str) -> str:
    """An environment variable name from `parts`: ("openai", "primary") -> OPENAI_PRIMARY."""
    words = [re.sub(r"[^A-Za-z0-9]+", "_", p).strip("_").upper() for p in parts if p]
    name = "_".join(w for w in words if w)
    return name if name and not name[0].isdigit() else f"KEY_{name}"


def env_ref(value: Any) -> str | None:
    """The variable a key already names (`${NAME}`, `$NAME`, `os.environ/NAME`), if any."""
    if not isinstance(value, str):
        return None
    text = value.strip().removeprefix("os.environ/")
    if text != value.strip() and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        return text
    m = _ENV_REF.match(text)
    return m.group(1) if m and text.startswith("$") else None


def key_header(url: str, variable: str) -> dict[str, str]:
    """The header that carries an API key to `url`, its value read from `variable`."""
    host = re.sub(r"^[a-z]+://", "", url).split("/")[0].split(":")[0].lower()
    name, _ = _KEY_HEADERS.get(host, ("authorization", ""))
    if host.endswith(".openai.azure.com"):
        name = "api-key"  # Azure OpenAI takes its key in a header of its own
    ref = "${" + variable + "}"
    return {name: ref if name != "authorization" else f"Bearer {ref}"}


def seconds(value: Any) -> str | None:
    """A duration string from seconds given as a number ("30" -> "30s"); a string that
    already has a unit stays as it is; anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if value < 0:
            return None
        if isinstance(value, float) and not value.is_integer():
            return f"{round(value * 1000)}ms"
        return f"{int(value)}s"
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)?\s*", value):
        text = value.strip()
        return text if text[-1].isalpha() else f"{text}s"
    return None


def millis(value: Any) -> str | None:
    """A duration string from milliseconds given as a number (1000 -> "1000ms")."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return f"{int(value)}ms" if float(value).is_integer() else f"{value}ms"


def port_picker(first: int = FIRST_PORT):
    """A function that hands out loopback listen addresses, one free port after another."""
    taken = set(_TAKEN_PORTS)
    state = {"next": first}

    def pick(reserved: set[int] = frozenset()) -> str:
        port = state["next"]
        while port in taken or port in reserved:
            port += 1
        taken.add(port)
        state["next"] = port + 1
        return f"127.0.0.1:{port}"

    return pick


def plain(value: Any) -> Any:
    """`value` as plain dicts, lists, str, int, float, bool and None (ruamel's commented
    types and scalars become the builtin ones)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)

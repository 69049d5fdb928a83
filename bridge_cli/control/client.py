"""The control API's client, used by the CLI (and later the TUI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from bridge_cli.errors import ControlError, NotRunningError, UsageError

START_HINT = "start one with `bridge up`"


class ControlClient:
    """Talks to a running bridge found through $BRIDGE_HOME/control.json."""

    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False,
                                  headers={"Authorization": f"Bearer {token}"})

    @classmethod
    def from_home(cls, home: Path) -> ControlClient:
        """The client for the bridge whose control.json is in `home`."""
        path = home / "control.json"
        try:
            info = json.loads(path.read_text())
            url, token = info["url"], info["token"]
        except FileNotFoundError:
            raise NotRunningError(f"no bridge is running (no {path}); {START_HINT}") from None
        except (OSError, ValueError, KeyError):
            raise NotRunningError(f"{path} is unreadable; {START_HINT}") from None
        pid = info.get("pid")
        if isinstance(pid, int) and not _alive(pid):
            raise NotRunningError(f"no bridge is running (pid {pid} has exited); {START_HINT}")
        return cls(url, token)

    def request(self, method: str, path: str, **kw) -> dict:
        try:
            r = self._http.request(method, f"/api/v1/{path.lstrip('/')}", **kw)
        except httpx.TransportError:
            raise NotRunningError(f"no bridge answers at {self.url}; {START_HINT}") from None
        try:
            data = r.json()
        except ValueError:
            raise ControlError(f"bridge answered {r.status_code} with a non-JSON body") from None
        if r.status_code >= 400 and "error" in data:
            message = data["error"].get("message", "control API error")
            if r.status_code in (400, 404, 422):
                raise UsageError(message)
            raise ControlError(message)
        return data

    def status(self) -> dict:
        return self.request("GET", "status")

    def reload(self) -> dict:
        return self.request("POST", "reload")

    def spend(self, since: str | None, by: str) -> dict:
        params = {"by": by, **({"since": since} if since else {})}
        return self.request("GET", "spend", params=params)

    def faults(self) -> dict:
        return self.request("GET", "faults")

    def add_fault(self, fault: dict) -> dict:
        return self.request("POST", "faults", json=fault)

    def remove_fault(self, name: str | None = None) -> dict:
        return self.request("DELETE", f"faults/{name}" if name else "faults")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""The dashboard's client of the control API: JSON calls and the event stream, async."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

START_HINT = "start one with `bridge up --dash`, or `bridge up` in another terminal"


class Unreachable(Exception):
    """No bridge answers at the URL (or it refused the token)."""


def read_control_file(home: Path) -> tuple[str, str] | None:
    """(url, token) from `home`/control.json, None when there is no readable one."""
    try:
        info = json.loads((home / "control.json").read_text())
        return str(info["url"]), str(info["token"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ControlAPI:
    """One bridge's control API; `refresh` gives fresh (url, token) after a restart."""

    def __init__(self, url: str, token: str,
                 refresh: Callable[[], tuple[str, str] | None] | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.refresh = refresh

    def renew(self) -> None:
        """Re-read the address and token (a restarted bridge has a new token)."""
        fresh = self.refresh() if self.refresh is not None else None
        if fresh is not None:
            self.url, self.token = fresh[0].rstrip("/"), fresh[1]

    def _client(self, read: float | None = 10.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, trust_env=False,
                                 timeout=httpx.Timeout(10.0, read=read),
                                 headers={"Authorization": f"Bearer {self.token}"})

    async def call(self, method: str, path: str, **kw) -> dict:
        """One call; the JSON answer. Unreachable when no bridge answers; an API error's
        message as ValueError."""
        try:
            async with self._client() as http:
                r = await http.request(method, f"/api/v1/{path}", **kw)
        except httpx.TransportError as e:
            raise Unreachable(f"no bridge answers at {self.url}") from e
        try:
            data = r.json()
        except ValueError:
            raise ValueError(f"bridge answered {r.status_code} with a non-JSON body") from None
        if r.status_code == 401:
            raise Unreachable(f"the bridge at {self.url} refused the token")
        if r.status_code >= 400:
            raise ValueError(data.get("error", {}).get("message", f"error {r.status_code}"))
        return data

    async def events(self, last_id: int | None) -> AsyncIterator[tuple[int | None, str, dict]]:
        """The event stream from after `last_id` (None: from now): (id, kind, data)."""
        headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
        try:
            async with self._client(read=None) as http, \
                    http.stream("GET", "/api/v1/events", headers=headers) as r:
                if r.status_code != 200:
                    raise Unreachable(f"the bridge at {self.url} answered {r.status_code}")
                fields: dict[str, str] = {}
                async for line in r.aiter_lines():
                    if line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                        continue
                    if "event" in fields and "data" in fields:
                        eid = int(fields["id"]) if fields.get("id", "").isdigit() else None
                        yield eid, fields["event"], json.loads(fields["data"])
                    fields = {}
        except httpx.TransportError as e:
            raise Unreachable(f"no bridge answers at {self.url}") from e

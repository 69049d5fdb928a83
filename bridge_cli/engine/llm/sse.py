"""Server-Sent Events at the byte level: cut a byte stream into whole events, read one."""

from __future__ import annotations

from dataclasses import dataclass


class EventCutter:
    """Feeds arbitrary chunks in, hands whole events (each ending in a blank line) out."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        out = []
        while (end := _event_end(self._buf)) >= 0:
            out.append(self._buf[:end])
            self._buf = self._buf[end:]
        return out

    def rest(self) -> bytes:
        """What came after the last whole event (an event the upstream never finished)."""
        rest, self._buf = self._buf, b""
        return rest


def _event_end(buf: bytes) -> int:
    """Index just past the first complete event in `buf`, or -1."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n", b"\r\r") if (i := buf.find(sep)) >= 0]
    return min(ends) if ends else -1


@dataclass(frozen=True)
class Event:
    """One event's fields: its `event:` name ('' without one) and its data lines joined."""

    name: str
    data: str | None  # None: no data line (a comment or a keep-alive)


def read_event(raw: bytes) -> Event:
    name, data = "", []
    for line in raw.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    return Event(name, "\n".join(data) if data else None)


def data_event(payload: str, name: str = "") -> bytes:
    """An event carrying `payload` (one JSON document, no newlines) as its data."""
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {payload}\n\n".encode()

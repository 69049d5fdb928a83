"""Stream observers: what sees a streamed answer piece by piece on its way to the client.

An observer is declared on the request's record before the answer arrives (cache capture,
usage extraction, usage stripping) and handed to the forwarder with the stream. Observers
run in `phase` order, so one that reads what the upstream sent (usage) sees every piece
before one that rewrites it (stripping), and one that keeps what the client got (the
cache) sees the rewritten piece.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from bridge_cli.common.jsondoc import json_value

READ_UPSTREAM, REWRITE, READ_DELIVERED = 0, 1, 2


class StreamObserver:
    """One party interested in a stream; every method has a do-nothing default."""

    phase = READ_UPSTREAM
    wants_whole = False  # read the upstream to its end even after the client left

    def piece(self, data: bytes) -> bytes:
        """See (and for REWRITE observers, replace) one piece; return what goes on."""
        return data

    def end(self) -> bytes:
        """The stream ended: bytes still to send (a rewriter's held-back rest)."""
        return b""

    def complete(self) -> None:
        """The upstream's answer arrived whole (even when the client left before the end)."""


class Capture(StreamObserver):
    """Keeps what the client got, with time offsets, and hands it over once complete."""

    phase = READ_DELIVERED
    wants_whole = True  # an SDK closes at `[DONE]`; the answer may still be whole

    def __init__(self, on_complete: Callable[[list[tuple[float, bytes]]], None],
                 clock: Callable[[], float] = time.monotonic,
                 limit: int | None = None) -> None:
        self.on_complete = on_complete
        self.clock = clock
        self.limit = limit  # bytes: past this the capture gives up (nothing is kept)
        self.pieces: list[tuple[float, bytes]] = []
        self.size = 0
        self.too_big = False
        self._t0: float | None = None

    def piece(self, data: bytes) -> bytes:
        now = self.clock()
        if self._t0 is None:
            self._t0 = now
        if data and not self.too_big:
            self.size += len(data)
            if self.limit is not None and self.size > self.limit:
                self.too_big, self.pieces = True, []  # let go of what was held
            else:
                self.pieces.append((now - self._t0, data))
        return data

    def complete(self) -> None:
        if not self.too_big:
            self.on_complete(self.pieces)


def ordered(observers: Iterable[StreamObserver]) -> tuple[StreamObserver, ...]:
    """Observers in the order pieces must pass them (stable within a phase)."""
    return tuple(sorted(observers, key=lambda o: o.phase))


def pass_piece(observers: tuple[StreamObserver, ...], data: bytes) -> bytes:
    """Run one upstream piece through every observer; return what the client gets."""
    for o in observers:
        data = o.piece(data)
    return data


def pass_end(observers: tuple[StreamObserver, ...]) -> bytes:
    """The stream ended: collect what rewriters held back, passed through the later ones."""
    out = b""
    for i, o in enumerate(observers):
        rest = o.end()
        if rest:
            for later in observers[i + 1:]:
                rest = later.piece(rest)
            out += rest
    return out


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event type, JSON data) of each complete-enough Server-Sent Event in `text`: the
    type is its `event:` line ('message' without one); events whose data is `[DONE]` or
    not JSON are left out."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        kind, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                kind = line[6:].strip() or "message"
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        joined = "\n".join(data)
        if not joined or joined == "[DONE]":
            continue
        doc = json_value(joined)
        if doc is not None:
            out.append((kind, doc))
    return out

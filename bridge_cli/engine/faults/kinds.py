"""The built-in fault kinds, in the order they apply (see KINDS in kind.py).

Request side (before, or instead of, the upstream call): preset, status, latency, reset,
hang. Response side (the body of the answer the client gets): throttle, slow_first_byte,
truncate, corrupt, sse_cut_after, sse_delay; their keys are the `Shaping` fields they set.
"""

from __future__ import annotations

import json
from typing import Any

from bridge_cli.config import units
from bridge_cli.config.model import Fault
from bridge_cli.engine.faults.hit import Hit
from bridge_cli.engine.faults.kind import Draw, FaultKind, Option, register
from bridge_cli.engine.faults.presets import PRESETS


def header_values(headers: dict[str, Any]) -> dict[str, str]:
    """Header values as text: YAML reads `retry-after: 1` as an int and `x-flag: true` as
    a bool."""
    return {
        name: (str(v).lower() if isinstance(v, bool) else str(v)) for name, v in headers.items()
    }


def _switch(value: Any) -> bool | None:
    return True if value else None  # `reset: false` is no fault at all


def _hang(value: Any) -> float | bool | None:
    if isinstance(value, bool):
        return True if value else None
    return units.parse_duration(value)


def _hang_text(text: str) -> str | bool:
    return True if text.strip().lower() in ("true", "yes", "forever") else text


def _truncate(value: int | str) -> int | float:
    return value if isinstance(value, int) else units.parse_percent(value)


def _truncate_text(text: str) -> int | str:
    return int(text) if text.isdigit() else text  # bytes; else a percentage


# --- request side ----------------------------------------------------------------------------


@register
class Preset(FaultKind):
    """Answer like a real provider's error (presets.py) instead of calling the upstream;
    a message that names a model names the request's."""

    key = "preset"
    options = (Option("preset", "A real provider error: " + ", ".join(PRESETS) + "."),)

    def on_request(self, fault: Fault, hit: Hit, draw: Draw) -> None:
        p = PRESETS[self.value(fault)]
        hit.status, hit.headers, hit.body = p.status, dict(p.headers), p.body_for(hit.request_model)

    def describe(self, fault: Fault) -> str:
        return f"answer like {self.value(fault)}"


@register
class Status(FaultKind):
    """Answer `status` instead of calling the upstream; `headers` and `body` shape that
    answer, or the preset's (which Preset, registered before, has put in the hit)."""

    key = "status"
    options = (
        Option("status", "Answer with this HTTP status.", cli=int),
        Option("headers", "Header of the injected answer, NAME:VALUE (repeatable).",
               parse=header_values, cli=list, flag="--header", in_header=False),
        Option("body", "Body of the injected answer.", in_header=False,
               parse=lambda v: v if isinstance(v, str) else json.dumps(v)),
    )

    def on_request(self, fault: Fault, hit: Hit, draw: Draw) -> None:
        a = fault.actions
        status = a.get("status")
        if status is None and hit.status is None:
            return  # headers or body, but no answer for them to shape
        if hit.status is None:  # no preset: bridge's own JSON error names the fault
            hit.headers = {"content-type": "application/json"}
            hit.body = json.dumps({"error": {
                "type": "injected_fault",
                "message": f"bridge chaos: fault '{fault.name}' answered {status}"}}).encode()
        if status is not None:
            hit.status = status
        hit.headers.update({k.lower(): v for k, v in a.get("headers", {}).items()})
        if a.get("body") is not None:
            hit.body = a["body"].encode()

    def describe(self, fault: Fault) -> str | None:
        if "preset" in fault.actions or not self.value(fault):
            return None  # the preset says it
        return f"answer {self.value(fault)}"


@register
class Latency(FaultKind):
    """Wait `latency` ± `jitter` seconds (uniform, drawn from the seed; never below 0),
    then go on to the upstream."""

    key = "latency"
    options = (
        Option("latency", "Delay before forwarding, e.g. 2s.", parse=units.parse_duration),
        Option("jitter", "± random extra delay, e.g. 500ms.", parse=units.parse_duration),
    )

    def on_request(self, fault: Fault, hit: Hit, draw: Draw) -> None:
        delay = self.value(fault) or 0.0
        jitter = fault.actions.get("jitter")
        if jitter:
            delay += (2 * draw("jitter") - 1) * jitter
        hit.delay += max(0.0, delay)

    def describe(self, fault: Fault) -> str | None:
        latency, jitter = self.value(fault), fault.actions.get("jitter")
        if not (latency or jitter):
            return None
        return f"add {latency or 0:g}s latency" + (f" ±{jitter:g}s" if jitter else "")


@register
class Reset(FaultKind):
    """Drop the connection before any response (a `reset` to the attempt loop)."""

    key = "reset"
    options = (Option("reset", "Drop the connection, no answer.", parse=_switch, cli=bool),)

    def on_request(self, fault: Fault, hit: Hit, draw: Draw) -> None:
        if not hit.terminal:
            hit.reset = True

    def describe(self, fault: Fault) -> str:
        return "drop the connection"


@register
class Hang(FaultKind):
    """Never answer: `true` until the client gives up (or the route's timeout), or for a
    number of seconds."""

    key = "hang"
    options = (Option("hang", "Never answer: 'true' (until timeout or the client gives up) "
                              "or a duration.", parse=_hang, text=_hang_text),)

    def on_request(self, fault: Fault, hit: Hit, draw: Draw) -> None:
        if not hit.terminal:
            hit.hang = self.value(fault)

    def describe(self, fault: Fault) -> str:
        hang = self.value(fault)
        return "hang" + ("" if hang is True else f" for {hang:g}s")


# --- response side ---------------------------------------------------------------------------


class _Shaped(FaultKind):
    """A response-side kind: its key is the `Shaping` field it sets."""

    def shaping(self, fault: Fault) -> dict[str, Any]:
        return {self.key: self.value(fault)}


@register
class Throttle(_Shaped):
    """Send the answer's body at this many bytes per second."""

    key = "throttle"
    options = (Option("throttle", "Bandwidth of the body, e.g. 10KB/s.",
                      parse=units.parse_bandwidth),)

    def describe(self, fault: Fault) -> str | None:
        return f"throttle to {self.value(fault)} B/s" if self.value(fault) else None


@register
class SlowFirstByte(_Shaped):
    """Hold the answer this many seconds before its first byte."""

    key = "slow_first_byte"
    options = (Option("slow_first_byte", "Delay before the first byte.",
                      parse=units.parse_duration),)

    def describe(self, fault: Fault) -> str | None:
        seconds = self.value(fault)
        return f"delay the first byte {seconds:g}s" if seconds else None


@register
class Truncate(_Shaped):
    """Cut the body after this many bytes (int) or this share of it (float), then drop
    the connection."""

    key = "truncate"
    options = (Option("truncate", "Cut the body after N bytes or 50%.", parse=_truncate,
                      text=_truncate_text),)

    def describe(self, fault: Fault) -> str:
        cut = self.value(fault)
        return (f"truncate after {cut:.0%}" if isinstance(cut, float)
                else f"truncate after {cut} bytes")


@register
class Corrupt(_Shaped):
    """Replace a buffered JSON body with malformed JSON (`corrupt_body`)."""

    key = "corrupt"
    options = (Option("corrupt", "Malformed JSON body.", parse=_switch, cli=bool),)

    def describe(self, fault: Fault) -> str:
        return "corrupt the body"


def corrupt_body(body: bytes, content_type: str) -> bytes:
    """Malformed JSON of the same content type: the first half of the body, unterminated."""
    if not body:
        return b'{"'
    cut = body[: max(1, len(body) // 2)]
    return cut + (b'"\x00{' if b"json" in content_type.encode().lower() or body[:1] in b"{[" else b"\x00")


@register
class SseCutAfter(_Shaped):
    """Cut a server-sent-events stream after this many whole events."""

    key = "sse_cut_after"
    options = (Option("sse_cut_after", "Cut SSE streams after N events.", cli=int),)

    def describe(self, fault: Fault) -> str:
        return f"cut SSE streams after {self.value(fault)} events"


@register
class SseDelay(_Shaped):
    """Wait this many seconds between two server-sent events."""

    key = "sse_delay"
    options = (Option("sse_delay", "Delay between SSE events.", parse=units.parse_duration),)

    def describe(self, fault: Fault) -> str | None:
        seconds = self.value(fault)
        return f"delay each SSE event {seconds:g}s" if seconds else None

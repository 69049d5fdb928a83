"""Fault kinds: one class per kind, held in one registry (`KINDS`).

    kind.py      FaultKind, Option, KINDS, register: what a kind is
    kinds.py     the built-in kinds (status, preset, latency, reset, hang, throttle, ...)
    hit.py       Hit and Shaping: what the kinds that hit a try add up to
    presets.py   real providers' error answers, for `preset`

engine/chaos.py decides which tries a fault hits; the kinds say what it does to them.
"""

from bridge_cli.engine.faults.hit import Hit, Shaping
from bridge_cli.engine.faults.kind import (
    KINDS,
    Draw,
    FaultKind,
    Option,
    kinds_of,
    options,
    register,
)
from bridge_cli.engine.faults.kinds import corrupt_body, header_values
from bridge_cli.engine.faults.presets import PRESETS, Preset

__all__ = [
    "KINDS", "PRESETS", "Draw", "FaultKind", "Hit", "Option", "Preset", "Shaping",
    "corrupt_body", "header_values", "kinds_of", "options", "register",
]  # fmt: skip

"""What a fault kind is, and `KINDS`, the registry of them.

A kind is one class: the config keys it owns (each an `Option`: how its value parses, the
`bridge chaos inject` flag and the `x-bridge-fault` header part that set it), what it does
to a try before or instead of the upstream call (`on_request`), what it does to the
answer's body (`shaping`), and its words for `bridge chaos list` (`describe`). Adding a
kind is one class with `@register`, plus its keys in schemas/bridge.v2.json ($defs.fault).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from bridge_cli.config.model import Fault
    from bridge_cli.engine.faults.hit import Hit

# A uniform draw in [0, 1) for the hit being decided, from (seed, fault, index, salt):
# a kind that needs randomness names its salt, so it never shifts another kind's draws.
Draw = Callable[[str], float]


def _as_is(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Option:
    """One config key of a fault kind: how its value parses, and how a flag or a header
    part sets it."""

    key: str
    help: str  # of its `bridge chaos inject` flag
    parse: Callable[[Any], Any] = _as_is  # config value -> model value (units); None: off
    cli: type = str  # the flag's type: str, int, bool (a switch), list (NAME:VALUE, repeated)
    text: Callable[[str], Any] = _as_is  # a str flag's or header part's text -> config value
    flag: str = ""  # default: --key-with-dashes
    in_header: bool = True  # may an `x-bridge-fault` header set it?

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")

    def from_text(self, text: str) -> Any:
        """The config value that `text` (a header part's or a flag's) stands for;
        ValueError when a whole number is not one."""
        if self.cli is int:
            if not text.isdigit():
                raise ValueError(f"{self.key} needs a whole number, got {text!r}")
            return int(text)
        return self.text(text)


class FaultKind:
    """One kind of fault. A fault has the kind when it sets any of the kind's options;
    its parsed values are in `fault.actions`, keyed by config key."""

    key: ClassVar[str]  # the config key that names the kind (its first option's)
    options: ClassVar[tuple[Option, ...]]  # every config key it owns, `key` first

    @property
    def cli_flag(self) -> str:
        return self.options[0].cli_flag

    @property
    def help(self) -> str:
        return self.options[0].help

    def value(self, fault: Fault) -> Any:
        """The fault's parsed value of `key` (None when only another option is set)."""
        return fault.actions.get(self.key)

    def on_request(self, fault: Fault, hit: Hit, draw: Draw) -> None:
        """Add what the kind does before, or instead of, the upstream call to `hit` (the
        fault's own part; kinds earlier in KINDS have written theirs). Default: nothing."""

    def shaping(self, fault: Fault) -> dict[str, Any]:
        """Fields of the answer's `Shaping` that the kind sets. Default: none."""
        return {}

    def describe(self, fault: Fault) -> str | None:
        """What the kind does, in a few words (`bridge chaos list`); None: nothing to say."""
        return None


# Kinds in the order they apply to a fault: an earlier kind's answer is what a later one
# refines (preset, then status), and the first kind that ends a try wins (status, reset, hang).
KINDS: dict[str, FaultKind] = {}


def register[K: type[FaultKind]](cls: K) -> K:
    """Class decorator: add one instance of the kind to KINDS, after those already there."""
    kind = cls()
    if kind.key in KINDS:
        raise ValueError(f"fault kind {kind.key!r} is already registered")
    KINDS[kind.key] = kind
    return cls


def options() -> dict[str, tuple[FaultKind, Option]]:
    """Every config key of every registered kind -> (its kind, its option)."""
    return {o.key: (kind, o) for kind in KINDS.values() for o in kind.options}


def kinds_of(fault: Fault) -> list[FaultKind]:
    """The registered kinds `fault` has, in registry order."""
    return [kind for kind in KINDS.values()
            if any(o.key in fault.actions for o in kind.options)]

"""What faults do to one try (or one final answer): the `Hit` the proxy applies, and the
`Shaping` of the answer's body. Fault kinds (kinds.py) write into these; proxy/ reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Shaping:
    """How to deliver a faulted body: units bytes, bytes/s, seconds."""

    throttle: int | None = None
    slow_first_byte: float | None = None
    truncate: int | float | None = None  # int: bytes; float: fraction of the body
    sse_cut_after: int | None = None
    sse_delay: float | None = None
    corrupt: bool = False

    def merge(self, other: Shaping) -> Shaping:
        """Both faults' effects; the later one wins where both set a knob."""
        return Shaping(**{k: getattr(other, k) if getattr(other, k) not in (None, False)
                          else getattr(self, k) for k in self.__dataclass_fields__})

    def truncate_at(self, length: int | None) -> int | None:
        """Bytes to let through before cutting, for a body of `length` bytes (None: unknown)."""
        if self.truncate is None:
            return None
        if isinstance(self.truncate, float):
            return None if length is None else int(length * self.truncate)
        return self.truncate


@dataclass
class Hit:
    """What the faults that hit one try (or one final answer) add up to. Units: seconds."""

    names: list[str] = field(default_factory=list)
    delay: float = 0.0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reset: bool = False
    hang: float | bool | None = None  # True: until the client gives up; seconds otherwise
    shaping: Shaping | None = None
    # Not an effect: the model the request names, for kinds whose answer quotes it (preset).
    request_model: str | None = None

    @property
    def terminal(self) -> bool:
        """Does the try end without the upstream being called?"""
        return self.status is not None or self.reset or bool(self.hang)

    def add(self, part: Hit) -> None:
        """Fold in what one more fault does: delays add up, the first fault that ends the
        try decides how, and body shapings merge (the later one wins per knob)."""
        self.names += part.names
        self.delay += part.delay
        if part.terminal and not self.terminal:
            self.status, self.headers, self.body = part.status, part.headers, part.body
            self.reset, self.hang = part.reset, part.hang
        if part.shaping is not None:
            self.shaping = (part.shaping if self.shaping is None
                            else self.shaping.merge(part.shaping))

"""Colours by meaning, taken from the running theme so light and dark themes both read."""

from __future__ import annotations

from rich.text import Text
from textual.app import App

STATUS_TONE = {2: "success", 3: "accent", 4: "warning", 5: "error"}
BREAKER_TONE = {"closed": "success", "half_open": "warning", "open": "error"}
SEVERITY_TONE = {"breaking": "error", "additive": "accent", "loosening": "warning"}


def tone(app: App, meaning: str) -> str:
    """The theme's colour for `meaning` (success, warning, error, accent, ...)."""
    return app.theme_variables.get(meaning) or app.theme_variables["foreground"]


def toned(app: App, text: str, meaning: str | None, bold: bool = False) -> Text:
    """`text` in the theme's colour for `meaning` (plain when None)."""
    if meaning is None:
        return Text(text)
    return Text(text, style=f"{'bold ' if bold else ''}{tone(app, meaning)}")


def status_tone(status: int | None) -> str:
    return STATUS_TONE.get((status or 500) // 100, "error")

"""Consoles and small rendering helpers shared by the commands."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Off a terminal (piped, redirected, captured by a test or CI) nothing reads the width:
# a line cut at 80 columns ("http://127.0.0…") is a value lost, so lines are never
# wrapped and tables are laid out as wide as their contents.
OFF_TERMINAL_WIDTH = 1_000_000


def make_console(*, stderr: bool = False) -> Console:
    """A console at the terminal's width, or, off a terminal, one that never wraps or cuts."""
    console = Console(stderr=stderr, highlight=False)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, highlight=False, width=OFF_TERMINAL_WIDTH, soft_wrap=True)


console = make_console()
err_console = make_console(stderr=True)


def print_json(data: Any) -> None:
    """`--json`: the document and nothing else on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()

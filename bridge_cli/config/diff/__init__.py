"""`bridge diff`: two configs compared by meaning (normalise.py), every difference matched
by name (compare.py) and classified by one rules table (rules.py)."""

from bridge_cli.config.diff.compare import Change, diff_sides
from bridge_cli.config.diff.normalise import Side, load_side
from bridge_cli.config.diff.rules import RULES, SEVERITIES

__all__ = ["RULES", "SEVERITIES", "Change", "Side", "diff_sides", "load_side"]

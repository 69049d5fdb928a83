"""Schema drift: learn what an endpoint's JSON bodies look like, and classify changes.

Per route, method and path template (`template`: /users/42 and /users/7 are
/users/{id}), a `Baseline` learns the shape of 2xx JSON bodies and returns a `Finding` for
each change a new body shows (compare.py says how each is classified); or `check` holds a
body against a supplied JSON Schema. Pure policy: the proxy's drift addon applies it, and
store/drift.py keeps baselines and findings (a change raised once, counted after that).
"""

from bridge_cli.engine.drift.baseline import MIN_OBSERVATIONS, Baseline
from bridge_cli.engine.drift.bodies import (
    MAX_BODY,
    block_message,
    blocking,
    document,
    stream_documents,
)
from bridge_cli.engine.drift.check import check
from bridge_cli.engine.drift.finding import KINDS, SEVERITY, Finding, is_breaking
from bridge_cli.engine.drift.paths import ID_SEGMENT, endpoint, template

__all__ = ["ID_SEGMENT", "KINDS", "MAX_BODY", "MIN_OBSERVATIONS", "SEVERITY", "Baseline",
           "Finding", "block_message", "blocking", "check", "document", "endpoint",
           "is_breaking", "stream_documents", "template"]

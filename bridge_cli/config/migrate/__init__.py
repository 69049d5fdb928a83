"""Bring older configs up to the current version, and import other tools' configs.

`upgrade(doc)` is the one entry point for a parsed bridge config (`bridge diff` and
`bridge migrate` both use it); `litellm` and `toxiproxy` import foreign files.
"""

from bridge_cli.config.migrate.chain import (
    CURRENT_VERSION,
    Note,
    Upgraded,
    detect_version,
    migration,
    upgrade,
)

__all__ = ["CURRENT_VERSION", "Note", "Upgraded", "detect_version", "migration", "upgrade"]

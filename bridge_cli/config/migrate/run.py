"""One migration of a file's text: parse, upgrade or import, write the new text, check it.

Nothing here touches the file system: the command decides what to print and write.
The new text must pass the same checks as `bridge validate` before anyone writes it.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge_cli.config.loader import parse_config
from bridge_cli.config.migrate.chain import CURRENT_VERSION, Upgraded, upgrade
from bridge_cli.config.migrate.litellm import import_litellm
from bridge_cli.config.migrate.toxiproxy import import_toxiproxy
from bridge_cli.config.migrate.writer import Comments, dump, load_round_trip, read_comments
from bridge_cli.config.yamlload import load_yaml
from bridge_cli.errors import ConfigError

TOOLS = {"litellm": "LiteLLM config.yaml", "toxiproxy": "toxiproxy.json"}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_KEY = re.compile(r"(api_?key|secret|token|password|(^|_)key$)", re.I)
REDACTED = "<redacted>"


@dataclass
class Migration:
    """What migrating one file gives: the old and new text, the upgrade, the variables
    the new file reads, and the secrets of the old text (never to be printed)."""

    source: str
    tool: str  # "bridge", or the tool an import came from
    old_text: str
    new_text: str
    upgraded: Upgraded
    variables: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.tool != "bridge" or self.upgraded.from_version != CURRENT_VERSION

    def shown_old_text(self) -> str:
        """The old text with every secret value in it replaced by <redacted>."""
        text = self.old_text
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text


def migrate_text(text: str, source: str, tool: str | None = None,
                 base_dir: Path | None = None) -> Migration:
    """Migrate `text` (a bridge config, or with `tool` another tool's file) to the current
    version; ConfigError (one line) when it can't be read or the result would not pass
    `bridge validate`."""
    comments = None
    if tool is None:
        data = _yaml(text, source)
        try:
            rich = load_round_trip(text)  # the same document, with its comments
        except Exception:  # noqa: BLE001  (PyYAML took it: fall back to no comments)
            rich = data
        upgraded = _named(source, upgrade, rich)
        comments = read_comments(text, rich)
    elif tool == "litellm":
        data = _yaml(text, source)
        upgraded = _named(source, import_litellm, data)
        comments = Comments(leading=[_imported(source, tool), *read_comments(text, None).leading])
    elif tool == "toxiproxy":
        upgraded = _named(source, import_toxiproxy, _json(text, source))
        comments = Comments(leading=[_imported(source, tool)])
    else:
        raise ConfigError(f"unknown --from {tool!r}: give litellm or toxiproxy")
    migration = Migration(source, tool or "bridge", text, text, upgraded,
                          secrets=_secrets(data if tool != "toxiproxy" else None))
    if migration.changed:
        migration.new_text = dump(upgraded.doc, comments, upgraded.notes)
        migration.variables = sorted(set(_ENV.findall(migration.new_text)))
        check(migration, base_dir)
    return migration


def _imported(source: str, tool: str) -> str:
    return (f"Imported by `bridge migrate --from {tool} {Path(source).name}`, which lists what "
            "it could not carry over.")


def _yaml(text: str, source: str) -> Any:
    data = load_yaml(text, source).data
    if data is None:
        raise ConfigError(f"{source}: the file is empty: nothing to migrate")
    return data


def _json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def _named(source: str, convert, doc: Any) -> Upgraded:
    """convert(doc), its ConfigError naming the file."""
    try:
        return convert(doc)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _secrets(doc: Any) -> list[str]:
    """String values under keys that name a credential (api_key, token, ...), unless they
    only name an environment variable."""
    found: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if isinstance(value, str) and _SECRET_KEY.search(str(key)) and len(value) >= 4:
                if not value.startswith(("os.environ/", "$")):
                    found.append(value)
            else:
                found += _secrets(value)
    elif isinstance(doc, list):
        for value in doc:
            found += _secrets(value)
    return found


def check(migration: Migration, base_dir: Path | None) -> None:
    """Raise a one-line ConfigError unless the new text passes `bridge validate` (the
    variables it reads may be unset yet: the notes say to set them)."""
    with _placeholders(migration.variables):
        try:
            parse_config(migration.new_text, f"{migration.source} (migrated)", base_dir=base_dir)
        except ConfigError as exc:
            lines = str(exc).splitlines()
            more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
            raise ConfigError(f"{migration.source}: the migrated config would not pass "
                              f"`bridge validate`, so nothing was written: {lines[0]}{more}"
                              ) from None


@contextmanager
def _placeholders(names: list[str]):
    """Set each unset variable of `names` to a placeholder while the block runs."""
    missing = [n for n in names if n not in os.environ]
    for name in missing:
        os.environ[name] = "placeholder"
    try:
        yield
    finally:
        for name in missing:
            os.environ.pop(name, None)

"""One side of a diff: a config file read, migrated to version 2 if older, validated by the
same loader as `bridge validate`, and turned into plain data with every default applied.

Durations are seconds, percentages fractions, money micro-dollars (config/model.py), so
`30s` and `30000ms` are the same value and writing a default explicitly changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bridge_cli.config.loader import parse_config, schema
from bridge_cli.config.model import Config, Retry
from bridge_cli.config.yamlload import load_yaml
from bridge_cli.errors import BridgeError, ConfigError

CURRENT = 2
# Lists whose order means nothing: compared as sets (sorted), so reordering is no change.
UNORDERED = {"on", "methods", "statuses", "vary", "ignore_query", "ignore_body_fields",
             "failure_statuses"}
# Fields holding a path the loader made absolute: shown relative to the config's directory
# again, so two checkouts of one file compare equal.
FILE_FIELDS = {"ca_file", "schema"}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Side:
    """One config of a diff: its typed model, its plain form, where it came from."""

    source: str
    config: Config
    plain: dict
    from_version: int = CURRENT
    notes: tuple[str, ...] = ()


def load_side(text: str, source: str, base_dir: Path) -> Side:
    """The Side of config `text`; ConfigError with one line per problem when it is not a
    valid bridge config of a version bridge reads."""
    doc = load_yaml(text, source)  # invalid YAML: the loader's one line, with its line number
    data, version = doc.data, _version_of(doc)
    notes: tuple[str, ...] = ()
    name = source
    if version != CURRENT:
        upgraded = _upgrade(data, source)
        text = yaml.safe_dump(json.loads(json.dumps(upgraded.doc)), sort_keys=False)
        notes = tuple(str(n) for n in getattr(upgraded, "notes", ()) or ())
        source = f"{source} (migrated from version {version})"
    with _env_as_written(text):
        config = parse_config(text, source, base_dir=base_dir)
    return Side(name, config, plain_config(config, base_dir), version, notes)


def _version_of(doc) -> int:
    """The config version of a parsed document: 2, 1 (ApiBridge's connectors.yaml), or a
    ConfigError for a version bridge does not know or a file that is no bridge config."""
    data, source = doc.data, doc.source
    if not isinstance(data, dict):
        return CURRENT  # the loader words what is wrong with it
    if "version" not in data:
        if "connectors" in data:
            return 1
        known = set(schema()["properties"])
        if not known & set(data):
            found = ", ".join(str(k) for k in list(data)[:5]) or "nothing"
            raise ConfigError(f"{source}:1: not a bridge config: none of bridge's keys "
                              f"(version, routes, proxy, ...) at the top, found {found}")
        return CURRENT
    version = data["version"]
    if version in (1, CURRENT) and not isinstance(version, bool):
        return version
    raise ConfigError(f"{source}:{doc.line(('version',))}: version: unknown config version "
                      f"{json.dumps(version, default=str)}: bridge reads version 2, and "
                      "version 1 (ApiBridge's connectors.yaml), which it migrates")


def _upgrade(data: dict, source: str):
    """The document upgraded to version 2 by `bridge migrate`'s own upgrade."""
    try:
        from bridge_cli.config.migrate import upgrade
    except ImportError:
        raise ConfigError(f"{source}:1: this is a version 1 config, and this bridge has no "
                          "migration for it: run `bridge migrate` first") from None
    try:
        return upgrade(data)
    except BridgeError as exc:
        raise ConfigError("\n".join(f"{source}: {line}" for line in str(exc).splitlines())
                          ) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{source}: can't migrate this version 1 config: {exc}") from None


@contextlib.contextmanager
def _env_as_written(text: str) -> Iterator[None]:
    """While loading, `${NAME}` in upstream headers expands to itself: a diff compares what
    is written, never prints a credential, and works in CI where the secret is not set."""
    names = set(_ENV_REF.findall(text))
    saved = {n: os.environ.get(n) for n in names}
    try:
        for n in names:
            os.environ[n] = "${" + n + "}"
        yield
    finally:
        for n, value in saved.items():
            if value is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = value


def plain_config(config: Config, base_dir: Path | None = None) -> dict:
    """The config as plain data (dicts, lists, numbers, strings), defaults applied."""
    routes = [dataclasses.replace(r, retry=r.retry or Retry()) for r in config.routes]
    out = plain(dataclasses.replace(config, routes=tuple(routes)), base_dir)
    out.pop("source", None)
    out.pop("version", None)
    return out


def plain(value: Any, base_dir: Path | None = None, key: str = "") -> Any:
    """A model value as plain data; listen addresses as "host:port" text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if type(value).__name__ == "Listen":
            return str(value)
        return {("for" if f.name == "for_" else f.name):
                plain(getattr(value, f.name), base_dir, f.name)
                for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v, base_dir, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [plain(v, base_dir) for v in value]
        if key in UNORDERED:
            items.sort(key=str)
        return items
    if key in FILE_FIELDS and isinstance(value, str) and base_dir is not None:
        with contextlib.suppress(ValueError):
            return str(Path(value).relative_to(base_dir.absolute()))
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)

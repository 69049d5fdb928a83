"""`bridge migrate`: bring a config to the current version, or import another tool's file."""

from __future__ import annotations

import difflib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from bridge_cli.cli.output import print_json
from bridge_cli.config.loader import read_config_text
from bridge_cli.config.migrate import CURRENT_VERSION
from bridge_cli.config.migrate.run import TOOLS, Migration, migrate_text
from bridge_cli.config.yamlload import MAX_BYTES, too_big
from bridge_cli.errors import UsageError

STDIN = "-"


def migrate(
    file: Annotated[str, typer.Argument(help="The config to migrate, or - to read standard input.")],
    write: Annotated[bool, typer.Option("--write", help="Rewrite FILE in place, keeping FILE.bak.")] = False,
    from_: Annotated[str | None, typer.Option("--from", metavar="TOOL", help="Import another tool's file: litellm (config.yaml) or toxiproxy (toxiproxy.json).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result to this file (an existing one is kept as .bak).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="The new document and the notes as JSON.")] = False,
) -> None:
    """Upgrade a config to the current version, or import a LiteLLM or toxiproxy file.

    By default a dry run: the change as a unified diff, then what changed and why.

    Nothing is written unless the result passes `bridge validate`; a second run changes nothing.

    Examples:\n
      bridge migrate connectors.yaml                 # dry run: diff and summary\n
      bridge migrate connectors.yaml --write         # keeps connectors.yaml.bak\n
      bridge migrate --from litellm config.yaml -o bridge.yaml\n
      bridge migrate --from toxiproxy toxiproxy.json -o bridge.yaml
    """
    if from_ is not None and from_ not in TOOLS:
        raise UsageError(f"unknown --from {from_!r}: give litellm or toxiproxy")
    if write and output is not None:
        raise UsageError("give --write (rewrite FILE in place) or -o PATH, not both")
    if write and file == STDIN:
        raise UsageError("--write rewrites FILE in place, and standard input has no file: "
                         "use -o PATH")
    if write and from_ is not None:
        raise UsageError(f"--write rewrites a bridge config in place; an import from {from_} "
                         "is a new file: use -o bridge.yaml")
    source = "<stdin>" if file == STDIN else file
    target = Path(file) if write else output
    base = (target or Path(file if file != STDIN else ".")).absolute().parent
    migration = migrate_text(_read(file), source, from_, base_dir=base)
    written = backup = None
    if migration.changed and target is not None:
        backup = _write(target, migration.new_text)
        written = target
    if json_:
        print_json(_as_json(migration, written, backup))
        return
    _show(migration, file, from_, written, backup)


def _read(file: str) -> str:
    if file != STDIN:
        return read_config_text(file)
    text = sys.stdin.read(MAX_BYTES + 1)
    if len(text) > MAX_BYTES:
        raise UsageError(too_big("<stdin>"))
    return text


def _write(target: Path, text: str) -> Path | None:
    """Write `text` to `target` atomically; an existing file is kept as TARGET.bak first."""
    backup = None
    if target.exists():
        backup = target.with_name(target.name + ".bak")
        shutil.copy2(target, backup)
    fd, tmp = tempfile.mkstemp(dir=target.absolute().parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if backup is not None:
            shutil.copymode(backup, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup


def _as_json(m: Migration, written: Path | None, backup: Path | None) -> dict:
    return {
        "file": m.source,
        "from": m.tool,
        "from_version": m.upgraded.from_version,
        "to_version": CURRENT_VERSION,
        "changed": m.changed,
        "written": str(written) if written else None,
        "backup": str(backup) if backup else None,
        "environment": m.variables,
        "notes": [n.as_dict() for n in m.upgraded.notes],
        "document": m.upgraded.doc if m.changed else None,
    }


def _show(m: Migration, file: str, tool: str | None, written: Path | None,
          backup: Path | None) -> None:
    out = sys.stdout
    if not m.changed:
        out.write(f"{m.source} is already version {CURRENT_VERSION}: nothing to change\n")
        return
    if written is None:
        out.write(_diff(m) if tool is None else m.new_text)
        out.write("\n")
    what = TOOLS[tool] if tool else _version_name(m.upgraded.from_version)
    out.write(f"{m.source}: {what} -> version {CURRENT_VERSION}\n")
    width = max((len(n.kind) for n in m.upgraded.notes), default=0)
    for note in m.upgraded.notes:
        where = f"{note.where}: " if note.where else ""
        out.write(f"  {note.kind:<{width}}  {where}{note.text}\n")
    if m.variables:
        out.write("The new file reads these environment variables (set them before `bridge "
                  f"up`): {', '.join(m.variables)}\n")
    if written is not None:
        kept = f" (the old file is {backup})" if backup else ""
        out.write(f"wrote {written}{kept}; it passes `bridge validate`\n")
    elif tool is None and file != STDIN:
        out.write(f"Dry run: nothing written. `bridge migrate {file} --write` rewrites it, "
                  f"keeping {file}.bak.\n")
    else:
        how = f"--from {tool} " if tool else ""
        out.write(f"Dry run: nothing written. `bridge migrate {how}{file} -o bridge.yaml` "
                  "writes it.\n")


def _diff(m: Migration) -> str:
    old = m.shown_old_text().splitlines(keepends=True)
    new = m.new_text.splitlines(keepends=True)
    lines = difflib.unified_diff(old, new, fromfile=m.source, tofile=f"{m.source} (migrated)")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _version_name(version: int) -> str:
    return "version 1 (ApiBridge connectors.yaml)" if version == 1 else f"version {version}"

"""The layers of the code, checked: a crossing fails here, and so CI.

The contracts live in pyproject.toml ([tool.importlinter]); docs/architecture.md draws them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bridge_cli"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_engine_loads_without_mitmproxy_or_ui_libraries():
    code = ("import sys, pkgutil, importlib, bridge_cli.engine as e\n"
            "for m in pkgutil.walk_packages(e.__path__, 'bridge_cli.engine.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = [n for n in ('mitmproxy', 'aiohttp', 'diskcache', 'typer', 'rich', 'textual')"
            " if n in sys.modules]\n"
            "print(','.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"engine/ loaded {proc.stdout.strip()}"


def _sizes():
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        yield path, source.count("\n"), ast.parse(source)


def test_no_module_is_too_long_to_read():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p, n, _ in _sizes() if n > MAX_MODULE_LINES]
    assert not long, f"split these (at most {MAX_MODULE_LINES} lines): {long}"


def test_no_function_is_too_long_to_read():
    long = []
    for path, _, tree in _sizes():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n}")
    assert not long, f"split these (at most {MAX_FUNCTION_LINES} lines): {long}"

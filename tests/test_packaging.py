"""The installed package works outside the source tree, and the layers stay apart."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True,
                   env={**os.environ, "PIP_NO_INDEX": "1"})
    return next(out.glob("bridge_cli-*.whl"))


def test_wheel_ships_recipes_and_schemas(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "bridge_cli/_data/schemas/bridge.v2.json" in names
    recipes = {n for n in names if n.startswith("bridge_cli/_data/recipes/")}
    assert "bridge_cli/_data/recipes/openai.yaml" in recipes


def test_non_editable_install_finds_recipes_and_validates_them(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)  # the installed copy only, not the checkout
    env["BRIDGE_HOME"] = str(tmp_path / "home")
    probe = subprocess.run(
        [sys.executable, "-c", "import bridge_cli.resources as r, sys; "
         "print(r.data_dir('recipes')); sys.exit(str(r.data_dir('recipes')).startswith("
         f"{str(target)!r}) is False)"],
        cwd=work, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    r = subprocess.run([sys.executable, "-m", "bridge_cli", "init", "--recipe", "openai"],
                       cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    v = subprocess.run([sys.executable, "-m", "bridge_cli", "validate", "bridge.yaml"],
                       cwd=work, env=env, capture_output=True, text=True)
    assert v.returncode == 0, v.stderr


def test_engine_imports_no_mitmproxy_textual_typer_or_rich():
    code = (
        "import pkgutil, importlib, sys, bridge_cli.engine as e\n"
        "for m in pkgutil.iter_modules(e.__path__): importlib.import_module('bridge_cli.engine.' + m.name)\n"
        "import bridge_cli.config.loader, bridge_cli.store\n"
        "bad = [m for m in ('mitmproxy', 'textual', 'typer', 'rich') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mitmproxy_is_imported_only_inside_proxy():
    offenders = []
    for path in (ROOT / "bridge_cli").rglob("*.py"):
        rel = path.relative_to(ROOT / "bridge_cli")
        if rel.parts[0] == "proxy":
            continue
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import mitmproxy", "from mitmproxy")):
                offenders.append(str(rel))
    assert offenders == []

"""The installed package works outside the source tree, and the layers stay apart."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import one_route

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


def test_building_prints_no_license_deprecation(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True,
                       env={**os.environ, "PIP_NO_INDEX": "1"})
    assert r.returncode == 0, r.stderr
    assert "project.license" not in r.stdout + r.stderr  # setuptools' deprecation of the table
    whl = zipfile.ZipFile(next(tmp_path.glob("bridge_cli-*.whl")))
    assert "License-Expression: MIT" in whl.read("bridge_cli-0.1.0.dist-info/METADATA").decode()


def fresh_venv(where: Path) -> Path:
    """A new venv on this Python 3.12, without pip (this venv's pip installs into it)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    return where / "bin" / "python"


APP_TESTS = """\
    import httpx
    from bridge_cli.testing import fault

    pytest_plugins = ["bridge_cli.testing"]  # the bridge_fault fixture
    URL = {url!r}

    def test_app_sees_a_429():
        with fault("api", status=429, stage="client") as f:
            assert httpx.get(URL + "/v1/models", trust_env=False).status_code == 429
        assert f.hits == 1

    def test_with_the_fixture(bridge_fault):
        bridge_fault("api", status=503, stage="client")
        assert httpx.get(URL + "/v1/models", trust_env=False).status_code == 503
"""


def test_an_apps_test_suite_in_its_own_venv_uses_bridge_cli_testing(
        wheel, tmp_path, start_bridge, upstream):
    """What the README tells an app to do: install bridge into the app's venv, then fault."""
    python = fresh_venv(tmp_path / "app-venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "-q", str(wheel)], check=True, capture_output=True)
    # bridge's dependencies (and pytest) come from this venv instead of PyPI: offline and fast
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and "proxy" not in k.lower()}
    version = subprocess.run([python.parent / "bridge", "--version"], capture_output=True,
                             text=True, env=env, cwd=tmp_path)
    assert version.returncode == 0 and "bridge 0.1.0" in version.stdout, version.stderr

    b = start_bridge(one_route(("primary", upstream.url)))
    app = tmp_path / "app"
    app.mkdir()
    (app / "test_app.py").write_text(textwrap.dedent(APP_TESTS.format(url=b.url("api"))))
    env["BRIDGE_HOME"] = str(b.home)
    r = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
                       cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
    assert b.control().faults()["faults"] == []  # both removed when their tests ended
    where = subprocess.run([python, "-c", "import bridge_cli; print(bridge_cli.__file__)"],
                           capture_output=True, text=True, env=env, cwd=app).stdout
    assert where.startswith(site)  # the installed copy, not this checkout


@pytest.mark.skipif(os.environ.get("BRIDGE_PYPI_TESTS") != "1",
                    reason="installs bridge's dependencies from PyPI (~30 s); BRIDGE_PYPI_TESTS=1")
def test_pip_install_of_the_repository_into_a_fresh_venv(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "v")], check=True)
    python, bridge = tmp_path / "v" / "bin" / "python", tmp_path / "v" / "bin" / "bridge"
    r = subprocess.run([python, "-m", "pip", "install", str(ROOT)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "project.license" not in r.stdout + r.stderr
    assert subprocess.run([bridge, "--version"], capture_output=True).returncode == 0
    probe = subprocess.run([python, "-c", "import bridge_cli.testing"], cwd=tmp_path)
    assert probe.returncode == 0


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

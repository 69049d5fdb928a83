"""`./dev` keeps its venv in the repository but runs bridge where the user is."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cli_env, control_get, dead_url, one_route, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "dev"
REAL_VENV = ROOT / ".venv"


def install_signature() -> str:
    """What `./dev` stamps an install with: the checksum of pyproject.toml and setup.py."""
    out = subprocess.run("cat pyproject.toml setup.py | cksum", shell=True, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return out.split()[0]


@pytest.fixture
def venv(tmp_path) -> Path:
    """A BRIDGE_VENV stamped as installed that runs the repository's venv's bridge: ./dev
    must not reinstall, and if it tried, it would fail at once (this venv has no pip)."""
    v = tmp_path / "venv"
    (v / "bin").mkdir(parents=True)
    (v / "bin" / "python").symlink_to(REAL_VENV / "bin" / "python")
    (v / "bin" / "bridge").symlink_to(REAL_VENV / "bin" / "bridge")
    shutil.copy(REAL_VENV / "pyvenv.cfg", v / "pyvenv.cfg")
    (v / ".bridge-installed").write_text(install_signature() + "-\n")
    return v


@pytest.fixture
def work(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def dev(args: list[str], cwd: Path, venv: Path, home: Path, exe: str = str(DEV)):
    env = cli_env(home) | {"BRIDGE_VENV": str(venv)}
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_init_writes_where_dev_is_run_and_validate_reads_that_file(work, venv, tmp_path):
    had_one = (ROOT / "bridge.yaml").exists()
    try:
        r = dev(["bridge", "init"], work, venv, tmp_path / "home")
        assert r.returncode == 0, r.stderr
        assert "dev: installing" not in r.stderr
        assert (work / "bridge.yaml").is_file()
        assert (ROOT / "bridge.yaml").exists() == had_one  # the repository got nothing
    finally:
        if not had_one:  # a regression must not leave a stray file in the checkout
            (ROOT / "bridge.yaml").unlink(missing_ok=True)
    ok = dev(["bridge", "validate", "bridge.yaml"], work, venv, tmp_path / "home")
    assert ok.returncode == 0, ok.stderr


def test_validate_a_broken_file_in_the_callers_directory(work, venv, tmp_path):
    (work / "sub").mkdir()
    (work / "sub" / "bridge.yaml").write_text(
        "version: 2\nroutes:\n  - name: api\n    listen: 127.0.0.1:8081\n"
        "    upstreams: [{name: a, url: 'http://127.0.0.1:9'}]\n    retyr: {attempts: 2}\n")
    r = dev(["bridge", "validate", "sub/bridge.yaml"], work, venv, tmp_path / "home")
    assert r.returncode == 2
    assert "retyr" in r.stderr and "Traceback" not in r.stderr  # this file's error, not "no file"


def test_up_picks_up_the_bridge_yaml_of_the_callers_directory(work, venv, tmp_path):
    (work / "bridge.yaml").write_text(one_route(("primary", dead_url()), route="mine-here"))
    home = tmp_path / "home"
    env = cli_env(home) | {"BRIDGE_VENV": str(venv)}
    proc = subprocess.Popen([str(DEV), "up", "-q"], cwd=work, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        control_file = home / "control.json"
        wait_for(lambda: control_file.exists() or proc.poll() is not None, 30, "bridge up")
        assert proc.poll() is None, proc.communicate()[1]
        control = wait_for(lambda: _json(control_file), 5, "control.json")
        assert "mine-here" in json.dumps(control_get(control, "status"))
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def test_an_install_with_test_extras_serves_plain_bridge_commands(work, venv, tmp_path):
    (venv / ".bridge-installed").write_text(install_signature() + "-test\n")
    r = dev(["bridge", "--version"], work, venv, tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert "dev: installing" not in r.stderr


def test_help_works_when_dev_is_called_by_a_relative_path(venv, tmp_path):
    r = dev(["help"], ROOT.parent, venv, tmp_path / "home", exe=f"./{ROOT.name}/dev")
    assert r.returncode == 0, r.stderr
    assert "./dev bridge ARGS" in r.stdout

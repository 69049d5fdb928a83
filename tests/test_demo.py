"""`bridge demo`: the whole product on fake upstreams, run through the installed `bridge`
script as a user (or CI) runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import cli_env

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def _demo(args: list[str], home: Path, timeout: float = 40) -> subprocess.CompletedProcess:
    return subprocess.run([BRIDGE, "demo", *args], env=cli_env(home), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_headless_demo_shows_breakers_spend_cache_and_drift_within_seconds(tmp_path):
    home = tmp_path / "home"
    started = time.monotonic()
    proc = _demo(["--headless", "--duration", "8s", "--json", "--seed", "3", "--rate", "8"], home)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)  # --json: the document and nothing else on stdout
    assert took < 25, f"an 8 s demo took {took:.1f} s"
    assert s["requests"]["total"] > 0 and s["requests"]["app_saw"].get("200", 0) > 0
    assert s["breakers"]["transitions"] >= 1
    assert s["breakers"]["events"][0]["upstream"] == "cloud"  # the primary's outage
    assert s["cache"]["hits"] > 0
    assert float(s["spend"]["spent_usd"]) > 0 and float(s["spend"]["limit_usd"]) > 0
    assert 0 < s["spend"]["used"] <= 1
    assert s["drift"]["findings"] >= 1
    assert any(e["change"] == "type_changed" and e["path"] == "$.created"
               for e in s["drift"]["events"]), s["drift"]  # the scheduled change of shape
    assert "Traceback" not in proc.stderr
    # The demo keeps its state in a temporary directory, never in the user's BRIDGE_HOME.
    assert not home.exists() or not any(home.iterdir())


def test_demo_duration_that_is_not_a_duration_is_one_line_and_exit_2(tmp_path):
    proc = _demo(["--headless", "--duration", "banana"], tmp_path / "home", timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--duration banana" in lines[0] and "30s" in lines[0], lines


def test_ctrl_c_mid_demo_stops_cleanly_with_the_summary_so_far(tmp_path):
    proc = subprocess.Popen([BRIDGE, "demo", "--headless", "--duration", "60s", "--rate", "8"],
                            env=cli_env(tmp_path / "home"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        # Its first line says the traffic is on; then let a few calls through.
        deadline = time.monotonic() + 30
        while "route chat on" not in (line := proc.stderr.readline()):
            assert line and time.monotonic() < deadline, "the demo did not start"
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopping" in err
    assert "(stopped early)" in out
    requests = next(line for line in out.splitlines() if line.startswith("requests"))
    assert int(requests.split()[1]) > 0, out

#!/usr/bin/env python3
"""bridge next to LiteLLM proxy on the same LLM route, the same upstream and the same load.

In one run it starts the local OpenAI-style upstream of _llm.py (a chat completion with
`usage`, model gpt-4o-mini), then, each in its own process:

- `bridge up` with one reverse route to it and `spend: {provider: openai}` (usage priced);
- LiteLLM proxy, one worker (`litellm --config CFG --num_workers 1`), with one model_list
  entry mapping gpt-4o-mini to openai/gpt-4o-mini at the same upstream (cost tracking is
  LiteLLM's default; no database, telemetry off, the local price map);
- bare `mitmdump` in reverse mode, for reference (and the upstream alone, for headroom).

Every target gets the same requests: POST /v1/chat/completions, every body unique (so no
cache could answer), with the same `Authorization` key. Like overhead.py it measures
requests/s at 16 keep-alive connections in interleaved slices and p50/p99 at one
connection in interleaved blocks, and prints bridge / LiteLLM throughput (target >= 6x).

LiteLLM is installed once into its own virtual environment (default
~/.cache/bridge-bench/litellm-venv, made with this Python; `pip install 'litellm[proxy]'`
from PyPI). When it can't be (no network to PyPI, the install fails) or the proxy won't
start, the script prints one line saying why and exits 0. A report, not a test: it exits 0
whether or not the target is met. Traffic stays on 127.0.0.1 (apart from that install);
every process started is stopped at the end, on Ctrl-C and on errors too.

    .venv/bin/python benchmarks/peers.py [--duration 10] [--requests 1000] [--json]
    .venv/bin/python benchmarks/peers.py --no-install     # skip unless LiteLLM is there
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import urllib.error
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402
import _llm  # noqa: E402
from _harness import HOST, Target, bridge, mitmdump, upstream_direct  # noqa: E402
from _loadgen import LLM_LOAD, capture  # noqa: E402

TARGET_RATIO = 6.0  # bridge req/s at c16 >= 6x LiteLLM's
BRIDGE, PEER = "bridge", "litellm"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bridge-bench"
INSTALL_TIMEOUT = 1200.0  # seconds for the one-time pip install
START_TIMEOUT = 180.0  # LiteLLM imports a lot; on a busy 2-core machine it starts slowly
STAMP = ".bridge-bench-installed"


class Skip(Exception):
    """The comparison can't run here; the message says why."""


def ensure_litellm(venv: Path, install: bool) -> tuple[Path, str]:
    """LiteLLM's `litellm` command in `venv` (installed there first if needed) and its version."""
    exe, py = venv / "bin" / "litellm", venv / "bin" / "python"
    if not (venv / STAMP).exists():
        if not install:
            raise Skip(f"LiteLLM is not installed in {venv} and --no-install was given")
        print(f"installing LiteLLM into {venv} (once; pip install 'litellm[proxy]' from PyPI) ...",
              file=sys.stderr)
        venv.parent.mkdir(parents=True, exist_ok=True)
        log = venv.parent / "litellm-install.log"
        steps = ([] if py.exists() else [[sys.executable, "-m", "venv", str(venv)]]) + [
            [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "litellm[proxy]"]]
        for argv in steps:
            try:
                rc, out, err = capture(argv, INSTALL_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise Skip(f"installing LiteLLM took over {INSTALL_TIMEOUT:.0f} s") from None
            log.write_text(out + err)
            if rc != 0:
                last = (err.strip().splitlines() or ["?"])[-1]
                raise Skip(f"could not install LiteLLM (no network to PyPI?): {last} (log: {log})")
        if not exe.exists():
            raise Skip(f"pip installed litellm[proxy] but {exe} is missing (log: {log})")
        (venv / STAMP).write_text("litellm[proxy]\n")
    rc, out, _ = capture([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"], 60)
    if rc != 0:
        raise Skip(f"the LiteLLM environment {venv} is broken; delete it to reinstall")
    return exe, out.strip()


def litellm(exe: Path, key: str):
    """LiteLLM proxy, one worker, one model mapped to the upstream; no DB, no telemetry."""

    def start(run: h.Run) -> tuple[str, int]:
        port = h.free_port()
        cfg = run.tmp / "litellm.yaml"  # JSON is YAML
        cfg.write_text(json.dumps({"model_list": [{"model_name": _llm.MODEL, "litellm_params": {
            "model": f"openai/{_llm.MODEL}", "api_base": f"http://{HOST}:{run.upstream_port}/v1",
            "api_key": "sk-bench-upstream"}}]}, indent=2))
        env = {"LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": key,
               "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # don't fetch the price map from GitHub
               "DATABASE_URL": None, "LITELLM_TELEMETRY_GROUPS": None, "NO_COLOR": "1"}
        p = run.spawn(PEER, [str(exe), "--config", str(cfg), "--host", HOST, "--port", str(port),
                             "--num_workers", "1"], env=env, cwd=run.tmp)
        url = f"http://{HOST}:{port}"
        run.wait_for(PEER, p, lambda: h.accepts(port) and h.fetch(url, load_with(key))[0] == 200,
                     timeout=START_TIMEOUT)
        return url, p.pid

    return start


def load_with(key: str) -> dict:
    return {**LLM_LOAD, "headers": {"Authorization": f"Bearer {key}"}}


def check_llm(url: str, load: dict) -> None:
    """The answer must be the upstream's completion (LiteLLM re-serializes it: compare fields)."""
    status, body = h.fetch(url, load)
    try:
        doc = json.loads(body)
        ok = (status == 200 and doc["usage"]["total_tokens"] == 33 and _llm.MODEL in doc["model"]
              and doc["choices"][0]["message"]["content"] == "Hi! How can I help you today?")
    except (ValueError, KeyError, IndexError, TypeError):
        ok = False
    if not ok:
        raise RuntimeError(f"{url}{load['path']} answered {status} {body[:300]!r}, not the upstream's completion")


def compare(rows: list[dict]) -> dict:
    by = {r["name"]: r for r in rows}
    b, p, m = by[BRIDGE], by[PEER], by["mitmdump"]
    ratio = b["rps_c16"] / p["rps_c16"] if p["rps_c16"] else float("inf")
    return {"throughput_ratio": round(ratio, 2), "throughput_target": TARGET_RATIO,
            "throughput_pass": ratio >= TARGET_RATIO,
            "p50_delta_ms": round(b["p50_ms_c1"] - p["p50_ms_c1"], 3),
            "p50_ratio": round(p["p50_ms_c1"] / b["p50_ms_c1"], 2),  # LiteLLM's p50 over bridge's
            "bridge_vs_mitmdump_throughput": round(b["rps_c16"] / m["rps_c16"], 3),
            "litellm_vs_mitmdump_throughput": round(p["rps_c16"] / m["rps_c16"], 3)}


def print_table(doc: dict) -> None:
    print(f"\nbridge vs LiteLLM proxy: {doc['cpus']} CPU(s), Python {doc['python']}, "
          f"LiteLLM {doc['litellm_version']} (1 worker); c16: {doc['generator']}, "
          f"{doc['duration_s']:g} s per target in {doc['slices']} interleaved slices; "
          f"c1: {doc['latency_requests']} requests per target, interleaved")
    print(f"load: {doc['request']}")
    print("absolute numbers are machine-bound: the ratios below are the figure of merit\n")
    h.print_rows(doc["targets"])
    if (doc["cpu_busy_before"] or 0) > 0.25:
        print(f"\nwarning: {doc['cpu_busy_before']:.0%} of the CPUs were busy with other work before "
              "the run: figures are noisier (the interleaving keeps the comparison paired)")
    c = doc["comparison"]
    print(f"\nbridge / litellm throughput: {c['throughput_ratio']:.2f}x  (target >= "
          f"{c['throughput_target']:.0f}x)  {'PASS' if c['throughput_pass'] else 'MISS'}")
    print(f"bridge - litellm p50:        {c['p50_delta_ms']:+.3f} ms  (litellm's p50 is "
          f"{c['p50_ratio']:.1f}x bridge's; informational)")
    print(f"for reference, throughput over bare mitmdump: bridge {c['bridge_vs_mitmdump_throughput']:.3f}, "
          f"litellm {c['litellm_vs_mitmdump_throughput']:.3f}")


def run_all(args, key: str, exe: Path) -> tuple[dict, dict]:
    gen, gen_label = h.pick_generator(args.generator)
    targets = [Target("upstream", upstream_direct, "the upstream alone"),
               Target("mitmdump", mitmdump(), "bare mitmdump, reverse mode (reference)"),
               Target(BRIDGE, bridge({"spend": {"provider": "openai"}}), "bridge, spend on"),
               Target(PEER, litellm(exe, key), "LiteLLM proxy, 1 worker")]
    with tempfile.TemporaryDirectory(prefix="bridge-peers-") as tmp:
        run = h.Run(Path(tmp))
        try:
            h.start_upstream(run)
            started = {}
            for t in targets:
                print(f"starting {t.name}: {t.about}", file=sys.stderr)
                try:
                    started[t.name] = t.start(run)
                except RuntimeError as e:
                    if t.name == PEER:
                        raise Skip(f"LiteLLM proxy would not start: {str(e)[-600:]}") from None
                    raise
            slices, lat = h.measure_all(gen, started, args, run.tmp, load_with(key), check_llm)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the stop
            run.stop()
    return h.target_rows(slices, lat), {"generator": gen_label}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of c16 load per target (default 10)")
    ap.add_argument("--requests", type=int, default=1000, help="c1 requests per target (default 1000)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of c16 load before measuring (default 2)")
    ap.add_argument("--slices", type=int, default=5, help="c16 load per target in N interleaved slices (default 5)")
    ap.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto",
                    help="c16 load generator (default: wrk when on PATH)")
    ap.add_argument("--venv", type=Path, default=CACHE / "litellm-venv", help="LiteLLM's virtual environment")
    ap.add_argument("--no-install", action="store_true", help="skip unless LiteLLM is already installed")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if args.requests < 100 or args.warmup < 1 or args.slices < 1 or args.duration < args.slices:
        ap.error("need --requests >= 100, --warmup >= 1, --slices >= 1, --duration >= --slices")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: a shell may start us ignoring it
        signal.signal(sig, on_signal)
    try:
        exe, version = ensure_litellm(args.venv, not args.no_install)
        busy = h.cpu_busy()
        rows, meta = run_all(args, "sk-bench-" + os.urandom(16).hex(), exe)
    except Skip as e:
        print(json.dumps({"skipped": str(e)}) if args.json else f"peers.py: skipped: {e}")
        return 0
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, ValueError, urllib.error.URLError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    doc = {**meta, "cpus": os.cpu_count(), "python": platform.python_version(), "litellm_version": version,
           "cpu_busy_before": None if busy is None else round(busy, 2), "duration_s": args.duration,
           "slices": args.slices, "latency_requests": args.requests,
           "request": f"POST {LLM_LOAD['path']}, every body unique, model {_llm.MODEL}, "
                      "answer: a chat completion with usage; bridge: spend on",
           "targets": rows, "comparison": compare(rows)}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())

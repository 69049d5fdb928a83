"""What the proxy benchmarks share (not a benchmark itself: `./dev bench` skips files
starting with `_`): the processes a run starts and stops (the local upstream of _llm.py,
bare mitmdump, `bridge up`), sanity checks, CPU readings and the interleaved measurement.

Every process is started in a session of its own and `Run.stop()` ends each one (SIGTERM
to its process group, then SIGKILL); callers call it in a `finally`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _llm  # noqa: E402
from _loadgen import GET_LOAD, latency_c1, load_c16  # noqa: E402

HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds for any process to come up
HERE = Path(__file__).resolve().parent


@dataclass
class Run:
    """Everything one benchmark run started; `stop()` ends all of it."""

    tmp: Path
    upstream_port: int = 0
    upstream_pid: int = 0
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    homes: dict[str, Path] = field(default_factory=dict)  # bridge target -> its $BRIDGE_HOME

    def spawn(self, name: str, argv: list[str], env: dict | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        """Start `argv` in a session of its own; `env` adds to ours (a None value removes)."""
        env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
        log = open(self.tmp / f"{name}.log", "wb")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env=env, cwd=cwd, start_new_session=True)
        finally:
            log.close()
        self.procs.append((name, p))
        return p

    def wait_for(self, name: str, p: subprocess.Popen, ready: Callable[[], object],
                 timeout: float = START_TIMEOUT):
        """Poll `ready()` until it returns something truthy; fail if `p` dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode} at start-up:\n{self.log_tail(name)}")
            try:
                value = ready()
            except (OSError, ValueError, KeyError):
                value = None
            if value:
                return value
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not come up within {timeout:.0f}s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.tmp / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        for _, p in reversed(self.procs):  # SIGTERM all first: they shut down in parallel
            if p.poll() is None:
                _signal_group(p, signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait(5)
        self.procs.clear()


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)  # the child leads its own session (start_new_session)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def start_upstream(run: Run, sse_events: int = 20, sse_gap_ms: float = 5.0) -> None:
    port_file = run.tmp / "upstream.port"
    p = run.spawn("upstream", [sys.executable, str(HERE / "_llm.py"), "_upstream", str(port_file),
                               str(sse_events), str(sse_gap_ms)])
    run.upstream_port = run.wait_for("upstream", p, lambda: int(port_file.read_text()))
    run.upstream_pid = p.pid


# --- targets: (name, how to start it -> its base URL and pid, what it is) -----------------


@dataclass(frozen=True)
class Target:
    name: str
    start: Callable[[Run], tuple[str, int]]  # base URL, pid of the process doing the work
    about: str


def upstream_direct(run: Run) -> tuple[str, int]:
    return f"http://{HOST}:{run.upstream_port}", run.upstream_pid


def mitmdump(*options: str, name: str = "mitmdump") -> Callable[[Run], tuple[str, int]]:
    """Bare mitmdump in reverse mode to the upstream; `options` are more `--set` values."""

    def start(run: Run) -> tuple[str, int]:
        exe = Path(sys.executable).parent / "mitmdump"
        exe = str(exe) if exe.exists() else shutil.which("mitmdump")
        if not exe:
            raise RuntimeError("mitmdump not found next to this Python nor on PATH")
        port = free_port()
        confdir = run.tmp / f"{name}-conf"
        confdir.mkdir()
        sets = [a for o in ("connection_strategy=lazy", f"confdir={confdir}", *options) for a in ("--set", o)]
        p = run.spawn(name, [exe, "-q", "--mode",
                             f"reverse:http://{HOST}:{run.upstream_port}@{HOST}:{port}", *sets])
        run.wait_for(name, p, lambda: accepts(port))
        return f"http://{HOST}:{port}", p.pid

    return start


def bridge(route_extra: dict | None = None, name: str = "bridge") -> Callable[[Run], tuple[str, int]]:
    """`bridge up` with one reverse route to the upstream; `route_extra` adds route keys
    (retry, breaker, cache, spend, budget, ...)."""

    def start(run: Run) -> tuple[str, int]:
        home = run.tmp / f"{name}-home"
        home.mkdir(mode=0o700)
        run.homes[name] = home
        route = {"name": "bench", "listen": f"{HOST}:0",
                 "upstreams": [{"name": "up", "url": f"http://{HOST}:{run.upstream_port}"}],
                 **(route_extra or {})}
        config = run.tmp / f"{name}.yaml"  # JSON is YAML, and quotes every string
        config.write_text(json.dumps({"version": 2, "control": {"listen": f"{HOST}:0"},
                                      "routes": [route]}, indent=2))
        p = run.spawn(name, [sys.executable, "-m", "bridge_cli", "up", "-c", str(config), "-q"],
                      env={"BRIDGE_HOME": str(home)})

        def ready() -> str | None:
            status = control(home, "status")
            return next((f"http://{x['address']}" for x in status["listeners"]
                         if x["kind"] == "reverse" and x["name"] == "bench"), None)

        return run.wait_for(name, p, ready), p.pid

    return start


def control(home: Path, path: str) -> dict:
    """GET /api/v1/PATH of the bridge whose $BRIDGE_HOME is `home`."""
    info = json.loads((home / "control.json").read_text())
    req = urllib.request.Request(info["url"] + "/api/v1/" + path,
                                 headers={"Authorization": f"Bearer {info['token']}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


# --- checks and readings ------------------------------------------------------------------


def fetch(url: str, load: dict = GET_LOAD) -> tuple[int, bytes]:
    """One request of `load` (an LLM load: one unique POST body) -> (status, body)."""
    body = _llm.chat_body("check-" + os.urandom(4).hex(), 0) if load.get("llm") else None
    headers = {"Content-Type": "application/json", **load.get("headers", {})} if body else {}
    req = urllib.request.Request(url + load["path"], data=body, method="POST" if body else "GET",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_answers(url: str, load: dict = GET_LOAD) -> None:
    """A misrouted fast 502 would flatter every figure: the target must return the body."""
    want = (_llm.COMPLETION if load.get("llm") else
            _llm.CATALOG if load["path"] == _llm.CATALOG_PATH else _llm.PLAIN_BODY)
    status, body = fetch(url, load)
    if status != 200 or body != want:
        raise RuntimeError(f"{url}{load['path']} answered {status} {body[:300]!r}, not the upstream's body")


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over `seconds` before anything starts (Linux), else None."""
    def sample() -> list[int]:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]

    try:
        a = sample()
        time.sleep(seconds)
        b = sample()
    except (OSError, ValueError):
        return None
    d = [y - x for x, y in zip(a, b, strict=True)]
    idle = d[3] + (d[4] if len(d) > 4 else 0)  # idle + iowait
    return 1 - idle / sum(d) if sum(d) else None


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) the process has used so far (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --- the interleaved measurement ----------------------------------------------------------


def measure_all(gen: str, targets: dict[str, tuple[str, int]], args, tmp: Path,
                load: dict = GET_LOAD, check: Callable[[str, dict], None] = check_answers) -> tuple[dict, dict]:
    """Warm every target up, then c16 in interleaved slices and c1 in interleaved blocks."""
    for name, (url, _) in targets.items():
        check(url, load)
        print(f"warming up {name} at {url}", file=sys.stderr)
        load_c16(gen, url, args.warmup, tmp, load)
    slices = {name: [] for name in targets}
    for i in range(args.slices):
        print(f"c16 slice {i + 1}/{args.slices}", file=sys.stderr)
        for name, (url, pid) in targets.items():
            before = cpu_seconds(pid)
            r = load_c16(gen, url, args.duration / args.slices, tmp, load)
            after = cpu_seconds(pid)
            r["cpu_s"] = None if before is None or after is None else after - before
            slices[name].append(r)
    print(f"c1: {args.requests} requests to each target, interleaved", file=sys.stderr)
    return slices, latency_c1({n: u for n, (u, _) in targets.items()}, args.requests, 50, load)


def rate(rs: list[dict]) -> float:
    return sum(r["requests"] for r in rs) / sum(r["seconds"] for r in rs)


def cpu_ms(rs: list[dict]) -> float | None:
    """CPU the target's process spent per request over the slices `rs`."""
    if any(r["cpu_s"] is None for r in rs):
        return None
    return 1000 * sum(r["cpu_s"] for r in rs) / max(1, sum(r["requests"] for r in rs))


def target_rows(slices: dict[str, list[dict]], lat: dict[str, dict]) -> list[dict]:
    """One row of figures per target."""
    return [{"name": name, "rps_c16": round(rate(rs), 1),
             "cpu_ms_per_request_c16": None if cpu_ms(rs) is None else round(cpu_ms(rs), 3),
             "p50_ms_c1": round(lat[name]["p50_ms"], 3), "p99_ms_c1": round(lat[name]["p99_ms"], 3),
             "bad_status": sum(r["bad_status"] for r in rs) + lat[name]["bad_status"],
             "errors": sum(r["errors"] for r in rs),
             "bad_sample": next((r["bad_sample"] for r in [lat[name], *rs] if r.get("bad_sample")), None)}
            for name, rs in slices.items()]


def print_rows(rows: list[dict], width: int = 12) -> None:
    print(f"{'target':<{width}}{'req/s @c16':>12}{'CPU ms/req':>12}{'p50 ms @c1':>12}{'p99 ms @c1':>12}")
    for t in rows:
        bad = t["bad_status"] or t["errors"]
        flag = f"  (non-200: {t['bad_status']}, errors: {t['errors']})" if bad else ""
        cpu = "-" if t["cpu_ms_per_request_c16"] is None else f"{t['cpu_ms_per_request_c16']:.3f}"
        print(f"{t['name']:<{width}}{t['rps_c16']:>12,.0f}{cpu:>12}{t['p50_ms_c1']:>12.3f}"
              f"{t['p99_ms_c1']:>12.3f}{flag}")
    for t in rows:
        if t.get("bad_sample"):
            print(f"  {t['name']} answered, e.g.: {t['bad_sample']}")
        elif t["bad_status"]:
            print(f"  {t['name']}: wrk counts non-200 answers without showing one "
                  "(--generator builtin prints an example)")


def pick_generator(choice: str) -> tuple[str, str]:
    """(generator, label): wrk when on PATH unless `choice` is builtin."""
    from _loadgen import wrk_version

    wrk = shutil.which("wrk")
    if choice == "wrk" and not wrk:
        raise SystemExit("--generator wrk: wrk is not on PATH")
    if wrk and choice != "builtin":
        return wrk, f"{wrk_version(wrk)} -t1"
    return "builtin", "built-in asyncio generator"

"""store/: DiskStore on a real diskcache, the pickle refusal, bridge_home and open_store; the
Store protocol's cache and money reads; the ledger, breaker and cache-entry repositories on
DiskStore and on a second, in-memory backend; a busy store where money is concerned."""

import contextlib
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import diskcache
import pytest

from bridge_cli.common.entry import FORMAT, make_entry
from bridge_cli.common.store import split_key
from bridge_cli.config.model import Budget
from bridge_cli.engine.budget import Budgets
from bridge_cli.errors import StoreError, UsageError
from bridge_cli.store import (
    BreakerStates,
    DiskStore,
    Ledger,
    SavedBreaker,
    Store,
    bridge_home,
    make_key,
    open_cache_store,
    open_store,
)
from bridge_cli.store.breakers import BREAKER_FORMAT
from bridge_cli.store.ledger import LEDGER_FORMAT, day_of
from bridge_cli.store.responses import ResponseStores
from tests.conftest import wait_for


class Planted:
    """Unpickling this creates `marker`: proof that someone called pickle.loads."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --- values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "text",
        "",
        b"\x00\xffbytes",
        b"",
        0,
        -7,
        2**63 - 1,
        2**80,
        1.5,
        True,
        False,
        {"a": [1, 2.5, "x", None, True], "b": {"c": {}}},
        [],
        [1, "two", {"three": 3}],
        "x" * 100_000,
        b"y" * 100_000,
        {"big": ["z" * 100] * 1000},
    ],
    ids=lambda v: f"{type(v).__name__}:{len(v) if hasattr(v, '__len__') else v}",
)
def test_values_round_trip_with_their_types(store, value):
    store.set("k", value)
    got = store.get("k")
    assert got == value
    assert type(got) is type(value)


def test_missing_key_and_stored_none_both_read_as_none(store):
    assert store.get("nope") is None
    store.set("null", None)
    assert store.get("null") is None
    assert list(store.scan("null")) == ["null"]


def test_values_survive_reopening(tmp_path):
    with DiskStore(tmp_path) as s:
        s.set("breaker:r:u", {"state": "open", "opened_at": 1764000000.5})
    with DiskStore(tmp_path) as s:
        assert s.get("breaker:r:u") == {"state": "open", "opened_at": 1764000000.5}


@pytest.mark.parametrize("value", [{1, 2}, object(), (b"bytes-in-json",), {"k": b"v"}])
def test_values_that_are_not_bytes_or_json_are_refused(store, value):
    with pytest.raises(TypeError):
        store.set("k", value)


def test_nan_is_refused_rather_than_read_back_as_none(store):
    with pytest.raises(ValueError):
        store.set("k", float("nan"))
    with pytest.raises(ValueError):
        store.set("k", {"x": float("inf")})


def test_keys_must_be_non_empty_str(store):
    for key in (b"k", 1, ("a", "b"), ""):
        with pytest.raises(TypeError):
            store.get(key)
        with pytest.raises(TypeError):
            store.set(key, 1)


def test_ttl_expires_value(store):
    store.set("short", "v", ttl=0.05)
    store.set("long", "v", ttl=60)
    assert store.get("short") == "v"
    wait_for(lambda: store.get("short") is None, timeout=1.0, what="the 50 ms value expiring")
    assert store.get("long") == "v"
    assert list(store.scan("")) == ["long"]


def test_delete_says_whether_the_key_existed(store):
    store.set("k", 1)
    assert store.delete("k") is True
    assert store.delete("k") is False
    assert store.get("k") is None


def test_scan_yields_keys_with_prefix_in_order(store):
    keys = [
        "spend:route:openai:2026-11-25",
        "spend:route:anthropic:2026-11-25",
        "spend:route:openai:2026-11-24",
        "spend:routes",
        "spend:global:2026-11-25",
        "reserved:route:openai:2026-11-25",
        "spend:route;",  # ";" sorts right after ":" -- the range's upper bound
        "spend:routé:x",
    ]
    for k in keys:
        store.set(k, 1)
    assert list(store.scan("spend:route:")) == [
        "spend:route:anthropic:2026-11-25",
        "spend:route:openai:2026-11-24",
        "spend:route:openai:2026-11-25",
    ]
    assert list(store.scan("spend:routé")) == ["spend:routé:x"]
    assert list(store.scan("")) == sorted(keys)
    assert list(store.scan("nothing:")) == []


def test_make_key_escapes_colons_so_prefixes_stay_exact():
    assert make_key("spend", "route", "openai", "2026-11-25") == "spend:route:openai:2026-11-25"
    assert make_key("breaker", "r", "http://a:8080") == "breaker:r:http%3A//a%3A8080"
    assert make_key("x", "50%") == "x:50%25"


def test_disk_store_satisfies_the_store_protocol(store):
    assert isinstance(store, Store)


def test_store_directory_is_owner_only(tmp_path):
    DiskStore(tmp_path / "new").close()
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


# --- counters and reservations -------------------------------------------------------


def test_incr_starts_from_zero_and_adds(store):
    assert store.incr("n") == 1
    assert store.incr("n", 41) == 42
    assert store.incr("n", -2) == 40
    assert store.get("n") == 40


def test_incr_keeps_the_keys_expiry(store):
    store.set("spend:route:r:today", 5, ttl=0.2)
    assert store.incr("spend:route:r:today", 1) == 6
    wait_for(lambda: store.get("spend:route:r:today") is None, timeout=1.0,
             what="the counter expiring")


def test_incr_on_a_non_integer_is_a_store_error(store):
    store.set("s", "text")
    with pytest.raises(StoreError, match="not an integer"):
        store.incr("s")
    store.set("b", True)
    with pytest.raises(StoreError):
        store.reserve("b", 1, 10)


def test_reserve_adds_only_while_within_the_limit(store):
    assert store.reserve("reserved:r", 600_000, 1_000_000) is True
    assert store.reserve("reserved:r", 400_000, 1_000_000) is True  # exactly at the limit
    assert store.reserve("reserved:r", 1, 1_000_000) is False
    assert store.get("reserved:r") == 1_000_000
    assert store.reserve("other", 5, 4) is False
    assert store.get("other") is None  # a refusal writes nothing


def test_release_floors_at_zero(store):
    store.reserve("reserved:r", 300, 1000)
    assert store.release("reserved:r", 200) == 100
    assert store.release("reserved:r", 500) == 0
    assert store.get("reserved:r") == 0
    assert store.release("never-set", 5) == 0


def test_negative_amounts_are_refused(store):
    with pytest.raises(ValueError):
        store.reserve("k", -1, 10)
    with pytest.raises(ValueError):
        store.release("k", -1)


def test_reserve_never_exceeds_limit_across_threads(tmp_path):
    store = DiskStore(tmp_path)
    granted, busy = [], []
    start = threading.Barrier(8)

    def worker():
        n = b = 0
        start.wait()
        for _ in range(200):
            try:
                n += store.reserve("reserved:route:r:2026-11-25", 3, 1000)
            except StoreError:
                b += 1
        granted.append(n)
        busy.append(b)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = store.get("reserved:route:r:2026-11-25")
    assert total == 3 * sum(granted) <= 1000
    assert sum(granted) == 333, f"only {sum(granted)} granted, {sum(busy)} busy"
    store.close()


WORKER = """
import sys, time
from pathlib import Path
from bridge_cli.errors import StoreError
from bridge_cli.store import DiskStore
store = DiskStore(Path(sys.argv[1]))
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()  # ready: imported, store open
while not go.exists():
    time.sleep(0.001)
granted = busy = 0
for _ in range(300):
    try:
        granted += store.reserve("reserved:global:2026-11-25", 1, 250)
    except StoreError:
        busy += 1
print(granted, busy)
"""


def test_reserve_never_exceeds_limit_across_processes(tmp_path):
    DiskStore(tmp_path / "store").close()  # create the schema before the race
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path / "store"), str(go), str(r)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    wait_for(lambda: all(r.exists() for r in ready), timeout=30, what="both workers ready")
    go.touch()
    results = [tuple(map(int, p.communicate(timeout=60)[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    granted = sum(g for g, _ in results)
    with DiskStore(tmp_path / "store") as s:
        assert s.get("reserved:global:2026-11-25") == granted == 250, results


# --- pickle refusal (CVE-2025-69872) --------------------------------------------------


def test_pickled_rows_are_never_unpickled(tmp_path, caplog):
    directory = tmp_path / "store"
    markers = [tmp_path / f"pwned-{i}" for i in range(4)]
    with diskcache.Cache(str(directory)) as plain:  # diskcache's default, pickling Disk
        plain.set("cache:ns:small", Planted(markers[0]))
        plain.set("spend:route:r:day", Planted(markers[1]))
        plain.set(("tuple", Planted(markers[2])), 1)  # a pickled *key*
    with diskcache.Cache(str(directory), disk_min_file_size=0) as plain:
        plain.set("cache:ns:in-a-file", Planted(markers[3]))  # pickle in a .val file

    with caplog.at_level(logging.WARNING, logger="bridge.store"), DiskStore(directory) as s:
        assert s.get("cache:ns:small") is None
        assert s.get("cache:ns:in-a-file") is None
        assert list(s.scan("")) == ["cache:ns:in-a-file", "cache:ns:small", "spend:route:r:day"]
        assert s.incr("spend:route:r:day", 5) == 5  # an unreadable counter restarts
        s.set("cache:ns:small", {"safe": True})  # and may be overwritten
        assert s.get("cache:ns:small") == {"safe": True}
    for marker in markers:
        assert not marker.exists(), f"{marker.name}: a pickle was loaded"
    assert "pickle" in caplog.text


def test_plain_diskcache_would_have_run_the_planted_pickle(tmp_path):
    # The control: proves the planted row above is a real exploit, not a dud.
    marker = tmp_path / "pwned"
    with diskcache.Cache(str(tmp_path / "store")) as plain:
        plain.set("k", Planted(marker))
        plain.get("k")
    assert marker.exists()


# --- busy and broken stores ----------------------------------------------------------


def test_corrupt_store_is_a_store_error_naming_the_directory(tmp_path):
    directory = tmp_path / "store"
    directory.mkdir()
    (directory / "cache.db").write_bytes(b"this is not a sqlite database\n" * 300)
    with pytest.raises(StoreError) as e:
        DiskStore(directory)
    assert str(directory) in str(e.value)
    assert "deleted" in str(e.value)
    assert "\n" not in str(e.value)


def test_corrupt_value_file_reads_as_a_miss(store, caplog):
    store.set("big", {"x": "y" * 100_000})
    [val] = list(Path(store.directory).rglob("*.val"))
    val.write_text("{ not json")
    with caplog.at_level(logging.WARNING, logger="bridge.store"):
        assert store.get("big") is None
    assert "big" in caplog.text


def test_busy_store_fails_writes_fast_and_still_serves_reads(store):
    store.set("k", "old")
    locker = sqlite3.connect(store.directory / "cache.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process is mid-write
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="busy"):
            store.set("k", "new")
        with pytest.raises(StoreError):
            store.reserve("r", 1, 10)
        assert store.get("k") == "old"  # WAL: readers are not blocked by a writer
        assert time.monotonic() - t0 < 1.0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    store.set("k", "new")
    assert store.get("k") == "new"


def test_storage_error_on_read_is_a_logged_miss(store, monkeypatch, caplog):
    def broken(*a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store._cache, "get", broken)
    with caplog.at_level(logging.WARNING, logger="bridge.store"):
        assert store.get("spend:x") is None
    assert "disk I/O error" in caplog.text


def test_storage_error_on_write_is_a_store_error(store, monkeypatch):
    def broken(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store._cache, "set", broken)
    with pytest.raises(StoreError, match="disk is full"):
        store.set("k", 1)
    with pytest.raises(StoreError, match="disk is full"):
        store.incr("k")


# --- bridge_home ---------------------------------------------------------------------


def test_bridge_home_uses_env_and_creates_it_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIDGE_HOME", str(tmp_path / "a" / "home"))
    home = bridge_home()
    assert home == tmp_path / "a" / "home"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_bridge_home_defaults_to_local_state(tmp_path, monkeypatch):
    monkeypatch.delenv("BRIDGE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert bridge_home() == tmp_path / ".local" / "state" / "bridge"
    assert stat.S_IMODE((tmp_path / ".local/state/bridge").stat().st_mode) == 0o700


def test_bridge_home_tightens_loose_permissions(tmp_path, monkeypatch):
    loose = tmp_path / "home"
    loose.mkdir()
    loose.chmod(0o755)
    monkeypatch.setenv("BRIDGE_HOME", str(loose))
    bridge_home()
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


def test_bridge_home_with_a_file_in_the_way_is_a_store_error(tmp_path, monkeypatch):
    (tmp_path / "home").write_text("")
    monkeypatch.setenv("BRIDGE_HOME", str(tmp_path / "home"))
    with pytest.raises(StoreError) as e:
        bridge_home()
    assert str(tmp_path / "home") in str(e.value) and "BRIDGE_HOME" in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_bridge_home_without_permission_is_a_store_error(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir(mode=0o500)
    monkeypatch.setenv("BRIDGE_HOME", str(tmp_path / "locked" / "home"))
    try:
        with pytest.raises(StoreError, match="BRIDGE_HOME"):
            bridge_home()
    finally:
        (tmp_path / "locked").chmod(0o700)


# --- open_store ----------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, "", "  "])
def test_open_store_without_url_is_diskcache_in_home(tmp_path, url):
    s = open_store(url, tmp_path)
    assert isinstance(s, DiskStore) and s.directory == tmp_path / "store"
    s.close()


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://:pw@cache.internal:6380"])
def test_open_store_refuses_redis_until_it_exists(tmp_path, url):
    with pytest.raises(UsageError) as e:
        open_store(url, tmp_path)
    assert str(e.value) == (
        "store: redis:// is not supported yet; remove `store:` to use the embedded store in "
        "$BRIDGE_HOME"
    )


def test_open_store_names_an_unknown_url_without_its_password(tmp_path):
    with pytest.raises(UsageError) as e:
        open_store("memcached://admin:hunter2hunter2@cache:11211", tmp_path)
    assert "memcached://admin:" in str(e.value)
    assert "hunter2" not in str(e.value)


# --- the protocol's reads for the cache and for money ----------------------------------


def access_time(store: DiskStore, key: str) -> float:
    with sqlite3.connect(store.directory / "cache.db") as db:
        return db.execute("SELECT access_time FROM Cache WHERE key = ?", (key,)).fetchone()[0]


def test_peek_reads_without_recording_a_use_and_touch_records_it(tmp_path):
    with open_cache_store(tmp_path / "cache") as s:
        s.set("entry:a", {"v": 1})
        stored = access_time(s, "entry:a")
        wait_for(lambda: time.time() > stored, what="the clock moving on")  # so a touch shows
        assert s.peek("entry:a") == {"v": 1}
        assert s.peek("entry:missing") is None
        assert access_time(s, "entry:a") == stored  # no write on the read path
        s.touch(["entry:a", "entry:missing"])
        assert access_time(s, "entry:a") > stored
        s.touch([])


def test_get_int_reads_counters_and_refuses_what_is_not_one(store):
    assert store.get_int("budget:committed:x:day") == 0
    store.incr("budget:committed:x:day", 1500)
    assert store.get_int("budget:committed:x:day") == 1500
    store.set("text", "12")
    with pytest.raises(StoreError, match="not an integer"):
        store.get_int("text")


def test_get_int_on_a_broken_store_is_a_store_error_not_zero(store, monkeypatch):
    store.incr("budget:committed:x:day", 5)

    def broken(*a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store._cache, "get", broken)
    assert store.get("budget:committed:x:day") is None  # records read as a miss
    with pytest.raises(StoreError, match="disk I/O error"):
        store.get_int("budget:committed:x:day")  # money does not


def test_split_key_undoes_make_key():
    parts = ["breaker", "r:1", "http://a:8080/50%"]
    assert split_key(make_key(*parts)) == parts


class MemoryStore:
    """A second backend in a few lines: what the repositories need is all in the protocol."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.touched: list[str] = []

    def get(self, key):
        return json.loads(json.dumps(self.data[key])) if key in self.data else None

    peek = get

    def get_int(self, key):
        value = self.data.get(key, 0)
        if type(value) is not int:
            raise StoreError(f"{key!r} is not an integer")
        return value

    def set(self, key, value, ttl=None):
        self.data[key] = json.loads(json.dumps(value))

    def incr(self, key, delta=1):
        self.data[key] = self.get_int(key) + delta
        return self.data[key]

    def delete(self, key):
        return self.data.pop(key, None) is not None

    def scan(self, prefix):
        return iter(sorted(k for k in self.data if k.startswith(prefix)))

    def reserve(self, key, amount, limit):
        if self.get_int(key) + amount > limit:
            return False
        self.incr(key, amount)
        return True

    def release(self, key, amount):
        self.data[key] = max(self.get_int(key) - amount, 0)
        return self.data[key]

    def touch(self, keys):
        self.touched += keys

    @contextlib.contextmanager
    def batch(self):
        saved = json.loads(json.dumps(self.data))
        try:
            yield
        except BaseException:
            self.data = saved  # all or nothing
            raise

    def impatient(self):
        return self  # nothing here ever waits

    def check(self):
        return False  # nothing can delete it

    def close(self):
        pass


@pytest.fixture(params=["disk", "memory"])
def backend(request, tmp_path):
    s = DiskStore(tmp_path / "store") if request.param == "disk" else MemoryStore()
    yield s
    s.close()


def test_memory_store_satisfies_the_store_protocol():
    assert isinstance(MemoryStore(), Store)


# --- the ledger ----------------------------------------------------------------------


NOV_25_NOON = 1_795_608_000.0  # 2026-11-25 12:00 UTC


def a_row(ts: float, route: str = "llm", cost: int = 1200) -> dict:
    return {"ts": ts, "route": route, "upstream": "openai", "model": "gpt-4o-mini",
            "cost_micros": cost, "saved_micros": 0, "status": "priced", "reason": None,
            "tokens": {"input_tokens": 10, "output_tokens": 5}, "snapshot": "s", "path": "/v1"}


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_ledger_round_trip_stores_a_format_version(backend, utc):
    ledger = Ledger(backend)
    key = ledger.append(a_row(NOV_25_NOON), request_id="req-1")
    assert key.startswith("ledger:2026-11-25:") and key.endswith("-req-1")
    assert backend.get(key)["format"] == LEDGER_FORMAT
    (row,) = ledger.rows("2026-11-01")
    assert row == {**a_row(NOV_25_NOON), "day": "2026-11-25"}
    assert ledger.rows("2026-11-26") == []  # since_day filters by the key's day
    assert ledger.append({**a_row(NOV_25_NOON), "id": "req-2"}).endswith("-req-2")


def test_ledger_reads_rows_written_before_it_was_versioned(backend, utc):
    old = a_row(NOV_25_NOON)  # as the spend addon wrote rows before: no "format"
    backend.set(make_key("ledger", "2026-11-25", f"{NOV_25_NOON:.6f}-old"), old)
    Ledger(backend).append(a_row(NOV_25_NOON + 60, cost=300))
    rows = Ledger(backend).rows("2026-11-25")
    assert [r["cost_micros"] for r in rows] == [1200, 300]


def test_ledger_skips_rows_of_a_newer_format_and_junk(backend, utc, caplog):
    backend.set(make_key("ledger", "2026-11-25", "1-new"), {**a_row(1), "format": 99})
    backend.set(make_key("ledger", "2026-11-25", "2-junk"), "not a row")
    with caplog.at_level(logging.WARNING, logger="bridge.store"):
        assert Ledger(backend).rows("2000-01-01") == []
    assert "newer" in caplog.text


def test_ledger_remove_forgets_one_route_or_all(backend, utc):
    ledger = Ledger(backend)
    for i, route in enumerate(["a", "b", "a"]):
        ledger.append(a_row(NOV_25_NOON + i, route=route))
    assert ledger.remove("a") == 2
    assert [r["route"] for r in ledger.rows("2000-01-01")] == ["b"]
    assert ledger.remove() == 1 and ledger.rows("2000-01-01") == []


# --- breaker state -------------------------------------------------------------------


def test_breaker_states_save_open_and_load_all(backend):
    states = BreakerStates(backend)
    states.save_open("llm", "http://primary:8080", 1764000000.5)
    states.save_open("other", "b", 1764000100.0)
    assert backend.get(BreakerStates.key("llm", "http://primary:8080"))["format"] == BREAKER_FORMAT
    assert sorted(states.load(), key=lambda s: s.route) == [
        SavedBreaker("llm", "http://primary:8080", 1764000000.5),
        SavedBreaker("other", "b", 1764000100.0)]
    states.save_closed("llm", "http://primary:8080")
    states.save_closed("never", "saved")
    assert states.load() == [SavedBreaker("other", "b", 1764000100.0)]


def test_breaker_states_read_records_from_before_the_format(backend):
    backend.set(make_key("breaker", "r", "http://a:8080"), {"state": "open", "opened_at": 17})
    backend.set(make_key("breaker", "r", "closed"), {"state": "closed"})
    backend.set(make_key("breaker", "r", "newer"), {"state": "open", "opened_at": 1,
                                                   "route": "r", "upstream": "newer",
                                                   "format": BREAKER_FORMAT + 1})
    assert BreakerStates(backend).load() == [SavedBreaker("r", "http://a:8080", 17.0)]


# --- cache entries over the protocol alone -------------------------------------------


def test_entry_store_serves_from_any_backend():
    memory = MemoryStore()
    es = ResponseStores(Path("/nonexistent"), opener=lambda d, size: memory).cache("api")
    entry = make_entry(200, [("content-type", "application/json")], b"{}", 1000.0,
                       {"namespace": "api", "path": "/a"}, "api")
    es.put("k1", entry, None)
    assert es.get("k1") == entry
    assert [(k, s["format"], s["status"]) for k, s in es.summaries()] == [("k1", FORMAT, 200)]
    es.flush_touches()
    assert sorted(memory.touched) == ["entry:k1", "idx:k1"]
    assert es.clear() == 1 and memory.data == {}


# --- a busy store, where money is concerned ------------------------------------------


@pytest.fixture
def busy(store):
    """The store while another process is mid-write (the way the busy test above does it)."""
    locker = sqlite3.connect(store.directory / "cache.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    yield store
    locker.execute("ROLLBACK")
    locker.close()


def test_a_busy_store_refuses_a_ledger_row_loudly(busy):
    with pytest.raises(StoreError, match="busy"):
        Ledger(busy).append(a_row(NOV_25_NOON))


def test_a_busy_store_refuses_a_reservation_and_holds_nothing(busy):
    budgets = Budgets(busy, lambda: NOV_25_NOON)
    with pytest.raises(StoreError, match="busy"):
        budgets.reserve([("route:llm", Budget(limit_usd=50_000)),
                         ("global", Budget(limit_usd=90_000))], 10_000)
    assert budgets.committed("route:llm", Budget(limit_usd=50_000)) == 0


def test_a_busy_store_refuses_breaker_state_loudly(busy):
    with pytest.raises(StoreError, match="busy"):
        BreakerStates(busy).save_open("r", "u", 1.0)


def test_a_batch_of_rows_is_one_record_per_day_and_reads_back_as_rows(backend):
    ledger = Ledger(backend)
    rows = [a_row(NOV_25_NOON + i, route="a" if i % 2 else "b", cost=i) for i in range(5)]
    rows.append(a_row(NOV_25_NOON + 86400, route="a", cost=99))  # the next day
    keys = ledger.append_many(rows)
    assert len(keys) == 2  # one batch for the 25th, one single row for the 26th
    got = ledger.rows("2000-01-01")
    assert sorted(r["cost_micros"] for r in got) == [0, 1, 2, 3, 4, 99]
    assert {r["day"] for r in got} == {day_of(NOV_25_NOON), day_of(NOV_25_NOON + 86400)}
    assert ledger.remove("a") == 3  # out of a batch and a single row
    assert sorted(r["cost_micros"] for r in ledger.rows("2000-01-01")) == [0, 2, 4]
    assert ledger.remove() == 3 and ledger.rows("2000-01-01") == []

"""store/flowlog.py: JSON lines, rotation by size, owner-only files, no secrets on disk."""

import errno
import json
import logging
import os
import stat

import pytest

from bridge_cli.errors import StoreError
from bridge_cli.store import FlowLog
from bridge_cli.store import flowlog as flowlog_module
from tests.conftest import FakeClock

SECRET = "sk-proj-Q7fT2mZkW9xLpR4vN8bYc3HdJ6sA1eGu"
GOOGLE = "AIzaSyD3kF7mQ2pX9wL4zR8tB6nV1cH5jG0sYeU"


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def path(tmp_path):
    return tmp_path / "logs" / "flows.jsonl"


def test_records_are_buffered_until_flush_then_one_json_line_each(path, clock):
    log = FlowLog(path, clock=clock)
    log.write({"id": 1, "route": "openai", "status": 200})
    log.write({"id": 2, "route": "openai", "note": "multi\nline"})
    assert path.read_bytes() == b""  # write() is cheap: nothing on disk yet
    log.flush()
    raw = path.read_text()
    assert raw.count("\n") == 2
    assert lines(path) == [
        {"id": 1, "route": "openai", "status": 200},
        {"id": 2, "route": "openai", "note": "multi\nline"},
    ]
    log.close()


def test_write_flushes_half_a_second_after_the_last_flush(path, clock):
    log = FlowLog(path, clock=clock)
    log.write({"id": 1})
    clock.now += 0.49
    log.write({"id": 2})
    assert path.read_bytes() == b""
    clock.now += 0.02
    log.write({"id": 3})
    assert [r["id"] for r in lines(path)] == [1, 2, 3]
    log.close()


def test_write_flushes_when_the_buffer_passes_64_kib(path, clock):
    log = FlowLog(path, clock=clock)
    for i in range(70):
        log.write({"id": i, "pad": "x" * 1000})
    assert 60 <= len(lines(path)) < 70  # flushed once the buffer passed 64 KiB
    log.close()
    assert len(lines(path)) == 70


def test_rotation_by_size_keeps_n_backups_and_drops_the_oldest(path, clock):
    log = FlowLog(path, max_bytes=1000, backups=3, clock=clock)
    for i in range(200):
        log.write({"id": i, "pad": "p" * 60})
        if i % 7 == 0:
            log.flush()
    log.close()
    files = [path.with_name("flows.jsonl" + s) for s in (".3", ".2", ".1", "")]
    assert all(f.exists() for f in files)
    assert not path.with_name("flows.jsonl.4").exists()
    ids = []
    for f in files:
        assert 0 < f.stat().st_size <= 1000
        ids += [r["id"] for r in lines(f)]
    assert ids == list(range(ids[0], 200))  # in order, contiguous, newest last
    assert ids[0] > 0  # the oldest were dropped


def test_rotation_with_no_backups_keeps_one_file(path, clock):
    log = FlowLog(path, max_bytes=500, backups=0, clock=clock)
    for i in range(50):
        log.write({"id": i, "pad": "p" * 60})
        log.flush()
    log.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["flows.jsonl"]
    assert lines(path)[-1]["id"] == 49


def test_a_record_larger_than_max_bytes_gets_a_file_of_its_own(path, clock):
    log = FlowLog(path, max_bytes=100, backups=2, clock=clock)
    log.write({"id": 1})
    log.write({"id": 2, "pad": "p" * 300})
    log.write({"id": 3})
    log.close()
    assert [r["id"] for r in lines(path.with_name("flows.jsonl.2"))] == [1]
    assert [r["id"] for r in lines(path.with_name("flows.jsonl.1"))] == [2]
    assert [r["id"] for r in lines(path)] == [3]


def test_files_are_owner_only_including_rotated_ones(path, clock):
    path.parent.mkdir()
    path.write_text("")
    path.chmod(0o644)  # an older, looser file is tightened
    log = FlowLog(path, max_bytes=200, backups=2, clock=clock)
    for i in range(20):
        log.write({"id": i, "pad": "p" * 40})
        log.flush()
    log.close()
    for f in path.parent.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name


def test_secrets_in_url_and_headers_never_reach_disk(path, clock):
    log = FlowLog(path, clock=clock)
    log.write(
        {
            "url": f"https://generativelanguage.googleapis.com/v1/models?key={GOOGLE}",
            "headers": [
                ["authorization", f"Bearer {SECRET}"],
                ["content-type", "application/json"],
            ],
            "request": {
                "url": f"https://u:{SECRET}@api.test/v1",
                "headers": {"x-api-key": SECRET, "set-cookie": [f"sid={SECRET}; Path=/"]},
            },
            "upstream_url": f"https://api.test/v1?access_token={SECRET}",
            "response_headers": [("cookie", f"session={SECRET}"), ("x-request-id", "req_1")],
        }
    )
    log.close()
    raw = path.read_text()
    assert SECRET[8:] not in raw and GOOGLE[4:] not in raw
    [rec] = lines(path)
    assert rec["headers"][1] == ["content-type", "application/json"]
    assert rec["headers"][0][1].startswith("Bearer sk-…[redacted:sha256:")
    assert rec["response_headers"][1] == ["x-request-id", "req_1"]


def test_a_full_disk_drops_records_with_one_warning_and_recovers(path, clock, monkeypatch, caplog):
    log = FlowLog(path, clock=clock)
    log.write({"id": 0})
    log.flush()
    real_write = os.write

    def full(fd, data):
        if fd == log._fd:
            real_write(fd, bytes(data[:7]))  # a partial line reaches the file first
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(flowlog_module.os, "write", full)
    with caplog.at_level(logging.WARNING, logger="bridge.store"):
        for i in range(1, 4):
            log.write({"id": i})
            log.flush()  # never raises into the proxy
    assert caplog.text.count("No space left on device") == 1
    monkeypatch.setattr(flowlog_module.os, "write", real_write)
    log.write({"id": 4})
    log.close()
    assert [r["id"] for r in lines(path)] == [0, 4]  # no half line glued to a record


def test_write_after_close_is_dropped_quietly(path, clock, caplog):
    log = FlowLog(path, clock=clock)
    log.close()
    with caplog.at_level(logging.WARNING, logger="bridge.store"):
        log.write({"id": 1})
        log.flush()
    assert "closed" in caplog.text
    log.close()  # idempotent


def test_a_record_that_is_not_json_is_dropped_not_raised(path, clock, caplog):
    log = FlowLog(path, clock=clock)
    with caplog.at_level(logging.WARNING, logger="bridge.store"):
        log.write({1: "mixed", "key": "types"})  # sort_keys can't order these
    log.write({"when": object()})  # unknown objects become their str()
    log.close()
    assert "not JSON" in caplog.text
    assert len(lines(path)) == 1


def test_an_unopenable_path_is_a_store_error(tmp_path):
    (tmp_path / "flows.jsonl").mkdir()
    with pytest.raises(StoreError, match="flows.jsonl"):
        FlowLog(tmp_path / "flows.jsonl")

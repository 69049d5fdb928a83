"""FlowLog: the append-only JSONL flow log, rotated by size, with credentials kept off disk."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge_cli.common.redact import redact_headers, redact_url
from bridge_cli.errors import StoreError

log = logging.getLogger("bridge.store")

FLUSH_INTERVAL = 0.5  # seconds: a write() this long after the last flush flushes
BUFFER_BYTES = 64 * 2**10  # bytes: a fuller buffer is flushed by the write() that filled it
FILE_MODE = 0o600


def _scrub(value: Any) -> Any:
    """A copy of a record with every url / headers field (at any depth) redacted."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            name = k if isinstance(k, str) else ""
            if (name == "url" or name.endswith("_url")) and isinstance(v, str):
                out[k] = redact_url(v)
            elif name == "headers" or name.endswith("_headers"):
                out[k] = _scrub_headers(v)
            else:
                out[k] = _scrub(v)
        return out
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _scrub_headers(headers: Any) -> Any:
    """Headers as a dict (name -> value or list of values) or as a list of pairs."""
    if isinstance(headers, dict):
        return {
            k: [_one_header(k, x) for x in v] if isinstance(v, list) else _one_header(k, v)
            for k, v in headers.items()
        }
    if isinstance(headers, list | tuple):
        return [
            [p[0], _one_header(p[0], p[1])]
            if isinstance(p, list | tuple) and len(p) == 2
            else _scrub(p)
            for p in headers
        ]
    return _scrub(headers)


def _one_header(name: Any, value: Any) -> Any:
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    if not isinstance(name, str) or value is None:
        return value
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    redacted = redact_headers([(name, text)])[0][1]
    return value if redacted == text and not isinstance(value, bytes) else redacted


class FlowLog:
    """Append-only JSON lines at path, rotated at max_bytes (bytes) into path.1 … path.N."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = 10 * 2**20,
        backups: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ):
        """Open path for appending (mode 0600, parent created 0700); clock: seconds."""
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._clock = clock
        self._buffer: list[bytes] = []
        self._buffered = 0  # bytes
        self._last_flush = clock()
        self._warned = False
        self._lock = threading.Lock()  # guards the buffer
        self._io_lock = threading.Lock()  # keeps flushes (and rotations) in order
        self._fd: int | None = None
        self._closed = False
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._open()
        except OSError as e:
            raise StoreError(f"flow log {self.path} cannot be opened: {e.strerror or e}") from None

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        st = os.fstat(self._fd)
        if st.st_mode & 0o777 != FILE_MODE:  # an older file, or a looser umask
            os.fchmod(self._fd, FILE_MODE)
        self._size = st.st_size

    def write(self, record: dict[str, Any], *, redacted: bool = False) -> None:
        """Buffer one record as a JSON line (url and headers redacted, unless the caller
        built it from redacted values already: `redacted=True`); never raises OSError."""
        try:
            line = json.dumps(record if redacted else _scrub(record), sort_keys=True,
                              separators=(",", ":"), default=str)
        except (TypeError, ValueError) as e:  # a caller's bug must not take the proxy down
            log.warning("flow log %s: dropped a record that is not JSON: %s", self.path, e)
            return
        data = line.encode("utf-8", "backslashreplace") + b"\n"
        with self._lock:
            self._buffer.append(data)
            self._buffered += len(data)
            due = (
                self._buffered >= BUFFER_BYTES or self._clock() - self._last_flush >= FLUSH_INTERVAL
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Write buffered records to disk (no fsync); on failure warn once and drop them."""
        with self._io_lock:
            with self._lock:
                lines, self._buffer, self._buffered = self._buffer, [], 0
                self._last_flush = self._clock()
            if not lines:
                return
            if self._closed:
                self._fail(len(lines), "the flow log is closed")
                return
            try:
                if self._fd is None:  # a rotation that failed half-way: try again
                    self._open()
                self._write_lines(lines)
            except OSError as e:
                self._fail(len(lines), e.strerror or str(e))
            else:
                self._warned = False

    def _write_lines(self, lines: list[bytes]) -> None:
        chunk: list[bytes] = []
        size = self._size
        for line in lines:
            if chunk or size:
                if size + len(line) > self.max_bytes:
                    self._append(b"".join(chunk))
                    chunk = []
                    self._rotate()
                    size = 0
            chunk.append(line)
            size += len(line)
        self._append(b"".join(chunk))

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            # A half-written line would glue itself to the next record: cut it off.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise
        self._size += len(data)

    def _rotate(self) -> None:
        """flows.jsonl -> .1 -> … -> .N; the oldest is dropped; a fresh file is opened."""
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()

    def _fail(self, dropped: int, reason: str) -> None:
        if not self._warned:  # once per run of failures: a full disk must not flood the log
            log.warning("flow log %s: dropped %d record(s): %s", self.path, dropped, reason)
            self._warned = True

    def close(self) -> None:
        """Flush and close the file; later writes are dropped with one warning."""
        self.flush()
        with self._io_lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> FlowLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

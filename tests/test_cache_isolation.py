"""The cache keeps callers apart and stored answers are data (issue 21).

- Every request header named like a credential (auth, token, key, secret, session, cookie)
  enters a cache key hashed: two callers who differ only in `X-Custom-Auth` or `Cookie`
  never share an entry. Recordings leave them out, so any caller replays a cassette.
- Such headers, and an API key in the URL path, are never stored, listed or exported in
  clear, nor written to the flow log.
- `bridge cache import` checks every field of every line before writing anything, and
  replay never serves what import would refuse.

Real bridges between real upstreams on 127.0.0.1, real stores in tmp dirs, the `bridge`
CLI as a subprocess.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
from aiohttp import web

from bridge_cli.common.entry import make_entry
from bridge_cli.config.model import Cache
from bridge_cli.engine.cache import ReplayMode, RequestView, key_of, key_parts, split_path
from bridge_cli.store.responses import ResponseStores
from tests.conftest import bridge_cmd, cli_env, config_yaml, route_yaml
from tests.test_cache_e2e import cache_of, calls, numbered, one_line, settled

PATH_KEY = "sk-live-abcdef0123456789abcdef"
OTHER_PATH_KEY = "sk-live-zyxwvu9876543210zyxwvu"
SECRET = "Zq8Lm3Xp7Wk2Rt5Vb9Nc4Yh6Df1Gs0Ae"


def cached_route(url: str) -> str:
    return config_yaml(route_yaml("api", ("up", url), cache="{}"))


def home_files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file()]


def assert_nowhere(secret: str, files: list[Path]) -> None:
    for p in files:
        data = p.read_bytes()
        assert secret.encode() not in data, f"{secret[:10]}… in clear in {p}"
        assert secret[8:].encode() not in data, f"the tail of {secret[:10]}… in clear in {p}"


# --- 1. credential-named headers keep callers apart ---------------------------------------------


@pytest.mark.parametrize("header, alice, bob", [
    ("X-Custom-Auth", "alice-" + SECRET, "bob-" + SECRET),
    ("Cookie", f"session={SECRET}a", f"session={SECRET}b"),
    ("X-Session-Id", "s-alice-0001", "s-bob-0002"),
])
def test_callers_differing_only_in_a_credential_named_header_never_share_an_entry(
        start_bridge, upstream, client, header, alice, bob):
    users = {alice: "alice", bob: "bob"}
    numbered(upstream, "/v1/me", extra=lambda r: {"user": users.get(r.headers.get(header))})
    b = start_bridge(cached_route(upstream.url))
    url = b.url("api") + "/v1/me"
    a1 = client.get(url, headers={header: alice})
    b1 = client.get(url, headers={header: bob})
    assert (cache_of(a1), cache_of(b1)) == ("miss", "miss")
    assert b1.json()["user"] == "bob"  # not alice's stored answer
    a2, b2 = client.get(url, headers={header: alice}), client.get(url, headers={header: bob})
    assert (cache_of(a2), cache_of(b2)) == ("hit", "hit")
    assert (a2.json()["user"], b2.json()["user"]) == ("alice", "bob")
    assert calls(upstream, "/v1/me") == 2
    settled(b)
    b.stop()
    assert_nowhere(alice, [p for p in home_files(b.home) if "cache" in p.parts])


def view(path_qs: str, headers: dict) -> RequestView:
    path, query = split_path(path_qs)
    return RequestView("api", "GET", path, query, {k.lower(): v for k, v in headers.items()}, b"")


@pytest.mark.parametrize("header", ["x-custom-auth", "cookie", "x-session-id", "x-user-secret"])
def test_recordings_leave_credential_named_headers_out_and_caches_hash_them(header):
    a, b = view("/v1/me", {header: "a-" + SECRET}), view("/v1/me", {header: "b-" + SECRET})
    assert key_of(key_parts(a, Cache(), credentials=False)) == \
        key_of(key_parts(b, Cache(), credentials=False))  # any caller replays a cassette
    pa, pb = key_parts(a, Cache()), key_parts(b, Cache())
    assert key_of(pa) != key_of(pb)
    assert pa["credentials"][header].startswith("sha256:") and SECRET not in json.dumps(pa)


def test_rate_limit_token_counts_and_idempotency_keys_stay_out_of_the_key():
    plain = view("/v1/me", {})
    noisy = view("/v1/me", {"idempotency-key": "retry-1", "x-max-tokens": "10"})
    assert key_of(key_parts(plain, Cache())) == key_of(key_parts(noisy, Cache()))


# --- 2. credentials are never stored, listed, exported or logged in clear -------------------------


def test_a_credential_named_header_is_redacted_in_the_flow_log(start_bridge, upstream, client):
    b = start_bridge(cached_route(upstream.url))
    r = client.get(b.url("api") + "/v1/me", headers={"X-Custom-Auth": SECRET,
                                                     "X-Session-Id": "sess-" + SECRET[::-1]})
    assert r.status_code == 200
    b.stop()  # flushes the flow log
    logs = [p for p in home_files(b.home) if "flow" in p.name]
    assert logs and any(b"x-custom-auth" in p.read_bytes().lower() for p in logs)
    assert_nowhere(SECRET, logs)
    assert_nowhere(SECRET[::-1], logs)


def test_an_api_key_in_the_path_is_never_stored_listed_or_exported_in_clear(
        start_bridge, upstream, client, tmp_path):
    # The upstream's own answer is its data (bridge stores it as it came): here it doesn't
    # echo the key back, so any copy of the key found below is bridge's doing.
    quiet = lambda request: {"path": "-"}  # noqa: E731
    numbered(upstream, f"/v1/models/{PATH_KEY}/x", extra=quiet)
    numbered(upstream, f"/v1/models/{OTHER_PATH_KEY}/x", extra=quiet)
    b = start_bridge(cached_route(upstream.url), replay=ReplayMode(record=True))
    url = b.url("api") + f"/v1/models/{PATH_KEY}/x?alt=json&key={SECRET}"
    first, again = client.get(url), client.get(url)
    assert (cache_of(first), cache_of(again)) == ("miss", "hit")
    other = client.get(b.url("api") + f"/v1/models/{OTHER_PATH_KEY}/x?alt=json")
    assert cache_of(other) == "miss"  # another key in the path is another entry
    settled(b)
    b.stop()
    stored = [p for p in home_files(b.home) if {"cache", "cassettes"} & set(p.parts)
              or "flow" in p.name]
    for secret in (PATH_KEY, OTHER_PATH_KEY, SECRET):
        assert_nowhere(secret, stored)

    env = cli_env(b.home)
    ls = bridge_cmd(["cache", "ls", "--json"], env, tmp_path)
    assert ls.returncode == 0, ls.stderr
    paths = [r["path"] for r in json.loads(ls.stdout)]
    # Two cache entries (one per key), one recording (keys left out: the last one kept).
    assert len(paths) == 3 and all(p.startswith("/v1/models/[credential") for p in paths)
    table = bridge_cmd(["cache", "ls"], env, tmp_path)
    export = tmp_path / "team.jsonl"
    ex = bridge_cmd(["cache", "export", "--cassette", "default", str(export)], env, tmp_path)
    assert ex.returncode == 0, ex.stderr
    for secret in (PATH_KEY, OTHER_PATH_KEY, SECRET):
        for text in (ls.stdout, table.stdout, export.read_text()):
            assert secret not in text and secret[8:] not in text

    # A recording leaves the key out, so a teammate's own key in the path replays it.
    off = start_bridge(cached_route(upstream.url), replay=ReplayMode(offline=True),
                       name="offline.yaml")
    before = len(upstream.calls)
    replayed = client.get(off.url("api") + "/v1/models/sk-live-teammate0123456789abcd/x?alt=json")
    assert replayed.status_code == 200 and cache_of(replayed) == "replay"
    assert len(upstream.calls) == before


# --- 3. import checks everything first; replay serves nothing import would refuse ---------------


def good_entry(path: str = "/v1/models", headers=(("content-type", "application/json"),),
               body: bytes = b'{"data":[]}') -> tuple[str, dict]:
    parts = key_parts(view(path, {}), Cache(), credentials=False)
    return key_of(parts), make_entry(200, list(headers), body, 1000.0, parts, "api").to_json()


def export_text(*rows: tuple[str, dict]) -> str:
    lines = [json.dumps({"bridge_export": 1, "entry_format": 1, "exported_at": 1.0})]
    lines += [json.dumps({"kind": "cassette", "name": "team", "key": k, "entry": e})
              for k, e in rows]
    return "\n".join(lines) + "\n"


def broken(**changes) -> tuple[str, dict]:
    key, entry = good_entry("/v1/broken")
    entry.update(changes)
    return key, entry


def _nan_stored_at(text: str) -> str:
    return text.replace('"stored_at": 1000.0', '"stored_at": NaN')


def _huge_stored_at(text: str) -> str:
    return text.replace('"stored_at": 1000.0', '"stored_at": 1e999')


def _deep_parts(text: str) -> str:
    return text.replace('"parts": {', '"parts": {"deep": ' + "[" * 100_000 + "]" * 100_000 + ", ")


BAD_LINES = {
    "header name with a space": broken(headers=[["bad name", "x"]]),
    "header name with CRLF": broken(headers=[["x\r\nset-cookie", "y"]]),
    "header value with CRLF": broken(headers=[["x-a", "1\r\nset-cookie: stolen=1"]]),
    "header value with NUL": broken(headers=[["x-a", "1\x00"]]),
    "header pair of numbers": broken(headers=[[1, 2]]),
    "headers not a list": broken(headers="content-type: text/plain"),
    "status too high": broken(status=999),
    "status too low": broken(status=42),
    "status a string": broken(status="200"),
    "status a boolean": broken(status=True),
    "status a fraction": broken(status=200.5),
    "body a number": broken(body=5),
    "stored_at a string": broken(stored_at="1000"),
    "route a number": broken(route=7),
    "event offset NaN": broken(events=[[float("nan"), "eA=="]]),
    "parts.path a list": broken(parts={"path": ["/"]}),
    "too many headers": broken(headers=[["x-h", "v"]] * 10_000),
}
RAW_EDITS = {"stored_at NaN": _nan_stored_at, "stored_at 1e999": _huge_stored_at,
             "parts nested 100000 deep": _deep_parts}


@pytest.fixture
def fresh(tmp_path):
    """An empty BRIDGE_HOME: (env, home)."""
    home = tmp_path / "teammate"
    return cli_env(home), home


def assert_nothing_imported(env, home: Path, cwd: Path) -> None:
    ls = bridge_cmd(["cache", "ls", "--json"], env, cwd)
    assert ls.returncode == 0 and json.loads(ls.stdout) == [], ls.stdout + ls.stderr
    assert not (home / "cassettes").exists() and not (home / "cache").exists()


@pytest.mark.parametrize("case", list(BAD_LINES) + list(RAW_EDITS))
def test_import_refuses_any_bad_field_in_one_line_and_writes_nothing(tmp_path, fresh, case):
    env, home = fresh
    rows = [good_entry("/v1/a"), good_entry("/v1/b")]
    if case in BAD_LINES:
        text = export_text(*rows, BAD_LINES[case])
    else:  # the edit is made to the text of the last line
        good, last = export_text(*rows, broken()).rstrip("\n").rsplit("\n", 1)
        text = good + "\n" + RAW_EDITS[case](last) + "\n"
    file = tmp_path / "bad.jsonl"
    file.write_text(text)
    err = one_line(bridge_cmd(["cache", "import", str(file)], env, tmp_path))
    assert f"{file}:4:" in err and "nothing was imported" in err
    assert_nothing_imported(env, home, tmp_path)


@pytest.mark.parametrize("row", [
    {"kind": "cassette", "name": "../escape"},
    {"kind": "cassette", "name": 5},
    {"kind": "cache", "name": "api", "key": "../../etc"},
    {"kind": "nowhere"},
])
def test_a_bad_name_kind_or_key_after_good_lines_writes_nothing(tmp_path, fresh, row):
    env, home = fresh
    key, entry = good_entry("/v1/late")
    lines = export_text(good_entry("/v1/a")).splitlines()
    lines.append(json.dumps({"kind": "cassette", "name": "team", "key": key, "entry": entry}
                            | row))
    file = tmp_path / "late.jsonl"
    file.write_text("\n".join(lines) + "\n")
    err = one_line(bridge_cmd(["cache", "import", str(file)], env, tmp_path))
    assert f"{file}:3:" in err
    assert_nothing_imported(env, home, tmp_path)


@pytest.mark.parametrize("content", [
    bytes(range(256)) * 4,
    gzip.compress(export_text(good_entry()).encode()),
    b'{"bridge_export": 1}\n\x00\x01\x02',
], ids=["random-bytes", "gzipped-export", "nul-bytes"])
def test_importing_a_binary_file_is_one_line_and_exit_2(tmp_path, fresh, content):
    env, home = fresh
    file = tmp_path / "team.jsonl"
    file.write_bytes(content)
    err = one_line(bridge_cmd(["cache", "import", str(file)], env, tmp_path))
    assert str(file) in err
    assert_nothing_imported(env, home, tmp_path)


def test_a_first_line_nested_absurdly_deep_is_one_line_and_exit_2(tmp_path, fresh):
    env, home = fresh
    file = tmp_path / "deep.jsonl"
    file.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    assert f"{file}:1:" in one_line(bridge_cmd(["cache", "import", str(file)], env, tmp_path))
    assert_nothing_imported(env, home, tmp_path)


HOP_BY_HOP = [("Connection", "close"), ("Keep-Alive", "timeout=5"),
              ("Transfer-Encoding", "chunked"), ("TE", "trailers"), ("Trailer", "x-sum"),
              ("Upgrade", "h2c"), ("Proxy-Authenticate", "Basic"), ("Proxy-Connection", "close")]


def test_import_drops_hop_by_hop_headers_and_fixes_content_length_so_replay_works(
        start_bridge, upstream, client, tmp_path, bridge_home):
    body = b'{"data":["gpt-4o"]}'
    key, entry = good_entry("/v1/models", body=body)
    entry["headers"] = [["content-type", "application/json"], ["content-length", "99999"],
                        *map(list, HOP_BY_HOP)]
    file = tmp_path / "team.jsonl"
    file.write_text(export_text((key, entry)))
    im = bridge_cmd(["cache", "import", str(file)], cli_env(bridge_home), tmp_path)
    assert im.returncode == 0, im.stderr

    b = start_bridge(cached_route(upstream.url), replay=ReplayMode(offline=True, cassette="team"))
    r = client.get(b.url("api") + "/v1/models")
    assert (r.status_code, cache_of(r), r.content) == (200, "replay", body)
    assert r.headers["content-length"] == str(len(body))
    got = {k.lower() for k in r.headers}
    # Connection is the hop's own (bridge's server to this client), never the stored one.
    assert got.isdisjoint(n.lower() for n, _ in HOP_BY_HOP if n != "Connection")
    assert r.headers.get("connection", "").lower() != "close"
    assert len(upstream.calls) == 0


def test_replay_never_serves_a_stored_entry_import_would_refuse(
        start_bridge, upstream, client, bridge_home):
    stores = ResponseStores(bridge_home)
    key, good = good_entry("/v1/models")
    es = stores.cassette("default")
    es.put(key, make_entry(200, [], b"ok", 1.0, good["parts"], "api"), None)
    injected = dict(good, headers=[["x-a", "1\r\nset-cookie: stolen=1"]],
                    body=base64.b64encode(b"poisoned").decode())
    es.store.set(f"entry:{key}", injected)  # as if written by hand or an old import
    stores.close()

    b = start_bridge(cached_route(upstream.url), replay=ReplayMode(offline=True))
    r = client.get(b.url("api") + "/v1/models")
    assert r.status_code == 504 and r.json()["error"]["type"] == "offline_miss"
    assert "stolen" not in str(r.headers) and b"poisoned" not in r.content


def test_a_file_bridge_exported_imports_and_replays(start_bridge, upstream, client, tmp_path,
                                                   bridge_home):
    upstream.on("/v1/models", lambda r: _json({"data": ["gpt-4o"]}))
    b = start_bridge(cached_route(upstream.url), replay=ReplayMode(record=True))
    first = client.get(b.url("api") + "/v1/models", headers={"X-Custom-Auth": SECRET})
    assert first.status_code == 200
    settled(b)
    b.stop()
    env = cli_env(bridge_home)
    export = tmp_path / "team.jsonl"
    assert bridge_cmd(["cache", "export", "--cassette", "default", str(export)], env,
                      tmp_path).returncode == 0
    assert SECRET not in export.read_text()
    env2 = cli_env(tmp_path / "teammate")
    im = bridge_cmd(["cache", "import", str(export)], env2, tmp_path)
    assert im.returncode == 0 and "imported 1" in im.stderr, im.stderr


async def _json(payload) -> web.Response:
    return web.json_response(payload)

"""engine/cache.py: cache keys, what may be looked up and stored, entries, and why an offline
request missed; plus the EntryStore that keeps entries (store/responses.py) on a real
diskcache. No proxy here: tests/test_cache_e2e.py drives the same rules through a bridge."""

from __future__ import annotations

import json
import logging

import pytest

from bridge_cli.common.entry import FORMAT, Entry, make_entry, parse_entry, vary_record
from bridge_cli.config.model import Cache
from bridge_cli.engine.cache import (
    ReplayMode,
    RequestPolicy,
    RequestView,
    age_seconds,
    body_digest,
    closest,
    differences,
    is_fresh,
    key_of,
    key_parts,
    request_policy,
    response_storable,
    split_path,
    with_upstream_vary,
)
from bridge_cli.store.responses import ResponseStores

TOKEN_A = "sk-proj-AAAAaaaa1111222233334444"
TOKEN_B = "sk-proj-BBBBbbbb5555666677778888"


def view(path_qs: str = "/v1/models", *, method: str = "GET", body: bytes = b"",
         headers: dict | None = None, namespace: str = "api", host: str | None = None) -> RequestView:
    path, query = split_path(path_qs)
    return RequestView(namespace, method, path, query,
                       {k.lower(): v for k, v in (headers or {}).items()}, body, host)


def key(v: RequestView, cache: Cache | None = None, **kw) -> str:
    return key_of(key_parts(v, cache or Cache(), **kw))


# --- split_path ----------------------------------------------------------------------------


def test_split_path_keeps_blank_values_and_repeated_names():
    assert split_path("/a?b=1&c&b=2") == ("/a", (("b", "1"), ("c", ""), ("b", "2")))
    assert split_path("/plain") == ("/plain", ())


# --- the body ------------------------------------------------------------------------------


def test_json_body_key_order_and_whitespace_do_not_matter():
    a = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0}'
    b = b'{\n  "temperature": 0,\n  "messages": [ {"content": "hi", "role": "user"} ],\n  "model": "gpt-4o"\n}\n'
    assert body_digest(a) == body_digest(b)
    assert key(view(method="POST", body=a)) == key(view(method="POST", body=b))


def test_a_different_json_body_is_another_key():
    a = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    b = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}'
    assert body_digest(a) != body_digest(b)
    assert key(view(method="POST", body=a)) != key(view(method="POST", body=b))


def test_list_order_inside_json_still_matters():
    assert body_digest(b'{"a":[1,2]}') != body_digest(b'{"a":[2,1]}')


def test_unicode_escapes_and_literal_characters_are_the_same_json():
    assert body_digest('{"q":"café"}'.encode()) == body_digest(b'{"q":"caf\\u00e9"}')


def test_a_non_json_body_is_hashed_as_bytes():
    assert body_digest(b"a=1&b=2") != body_digest(b"b=2&a=1")
    assert body_digest(b"a=1&b=2") == body_digest(b"a=1&b=2")
    # Starts like JSON, isn't: hashed as it is, no crash.
    assert body_digest(b"{not json") == body_digest(b"{not json")
    assert body_digest(b"{not json") != body_digest(b"{not json ")


def test_an_empty_body_leaves_no_body_part():
    assert body_digest(b"") is None
    assert "body" not in key_parts(view(), Cache())


def test_ignore_body_fields_leaves_dotted_paths_out_and_keeps_the_rest():
    cache = Cache(methods=("POST",), ignore_body_fields=("user", "metadata.trace_id"))
    base = {"model": "m", "user": "u1", "metadata": {"trace_id": "t1", "team": "x"}}
    other = {"model": "m", "user": "u2", "metadata": {"trace_id": "t2", "team": "x"}}
    changed = {"model": "m", "user": "u1", "metadata": {"trace_id": "t1", "team": "y"}}
    k = [key(view(method="POST", body=json.dumps(d).encode()), cache) for d in (base, other, changed)]
    assert k[0] == k[1]  # only the ignored fields differ
    assert k[0] != k[2]  # metadata.team is not ignored
    # Without the setting, the volatile fields count.
    assert key(view(method="POST", body=json.dumps(base).encode())) != \
        key(view(method="POST", body=json.dumps(other).encode()))


def test_ignore_body_fields_tolerates_missing_paths_and_non_objects():
    fields = ["metadata.trace_id", "a.b.c", "user"]
    assert body_digest(b'{"metadata": 5}', fields) == body_digest(b'{"metadata":5}')
    assert body_digest(b'[1, 2]', fields) == body_digest(b"[1,2]")
    assert body_digest(b'{"a": {"b": "leaf"}}', fields) == body_digest(b'{"a":{"b":"leaf"}}')


# --- query, method, host, namespace ----------------------------------------------------------


def test_query_order_does_not_matter_but_values_do():
    assert key(view("/s?a=1&b=2")) == key(view("/s?b=2&a=1"))
    assert key(view("/s?a=1&b=2")) != key(view("/s?a=1&b=3"))
    assert key(view("/s?a=1")) != key(view("/s"))


def test_ignore_query_leaves_volatile_parameters_out_case_insensitively():
    cache = Cache(ignore_query=("request_id", "_"))
    assert key(view("/s?q=x&request_id=1&_=123"), cache) == key(view("/s?q=x&REQUEST_ID=2"), cache)
    assert key(view("/s?q=x&request_id=1"), cache) != key(view("/s?q=y&request_id=1"), cache)
    assert "query" not in key_parts(view("/s?request_id=1"), cache)


def test_method_is_normalised_and_separates_keys():
    assert key(view(method="get")) == key(view(method="GET"))
    assert key(view(method="GET")) != key(view(method="HEAD"))


def test_namespace_separates_keys_and_proxy_host_is_part_of_the_key():
    assert key(view(namespace="a")) != key(view(namespace="b"))
    assert key(view(host="API.example.com")) == key(view(host="api.example.com"))
    assert key(view(host="a.example.com")) != key(view(host="b.example.com"))
    assert "host" not in key_parts(view(), Cache())  # reverse routes: the route is the host


def test_key_of_does_not_depend_on_dict_order():
    assert key_of({"a": 1, "b": [1, 2]}) == key_of({"b": [1, 2], "a": 1})


# --- vary -----------------------------------------------------------------------------------


def test_vary_headers_enter_the_key():
    cache = Cache(vary=("accept-language",))
    en = key(view(headers={"Accept-Language": "en"}), cache)
    de = key(view(headers={"Accept-Language": "de"}), cache)
    assert en != de
    assert en == key(view(headers={"Accept-Language": "en", "X-Other": "1"}), cache)
    # A header outside `vary` is no part of the key.
    assert key(view(headers={"Accept-Language": "en"})) == key(view(headers={"Accept-Language": "de"}))


def test_upstream_vary_makes_a_second_level_key():
    parts = key_parts(view(), Cache())
    en = with_upstream_vary(parts, ["Accept-Language", " accept-encoding "], {"accept-language": "en"})
    de = with_upstream_vary(parts, ["accept-language", "accept-encoding"], {"accept-language": "de"})
    assert en["upstream_vary"] == {"accept-encoding": "", "accept-language": "en"}
    assert key_of(en) != key_of(de) and key_of(en) != key_of(parts)
    again = with_upstream_vary(parts, ["accept-encoding", "accept-language"], {"accept-language": "en"})
    assert key_of(again) == key_of(en)


def test_a_secret_vary_header_enters_the_key_only_hashed():
    cache = Cache(vary=("x-api-key",))
    parts = key_parts(view(headers={"x-api-key": TOKEN_A}), cache)
    assert TOKEN_A not in json.dumps(parts)
    second = with_upstream_vary(parts, ["authorization"], {"authorization": f"Bearer {TOKEN_B}"})
    assert TOKEN_B not in json.dumps(second)
    assert second["upstream_vary"]["authorization"].startswith("sha256:")


# --- credentials ----------------------------------------------------------------------------


def test_two_api_keys_never_share_a_key_and_neither_appears_in_clear():
    a = key_parts(view(headers={"Authorization": f"Bearer {TOKEN_A}"}), Cache())
    b = key_parts(view(headers={"Authorization": f"Bearer {TOKEN_B}"}), Cache())
    assert key_of(a) != key_of(b)
    assert key_of(a) != key(view())  # with a key is not the same as without one
    for parts, token in ((a, TOKEN_A), (b, TOKEN_B)):
        text = json.dumps(parts)
        assert token not in text and token[:12] not in text and "Bearer" not in text
        assert parts["credentials"]["authorization"].startswith("sha256:")


@pytest.mark.parametrize("header", ["x-api-key", "api-key", "x-goog-api-key", "anthropic-api-key"])
def test_api_key_headers_are_credentials_too(header):
    a = key_parts(view(headers={header: TOKEN_A}), Cache())
    b = key_parts(view(headers={header: TOKEN_B}), Cache())
    assert key_of(a) != key_of(b)
    assert TOKEN_A not in json.dumps(a)


def test_key_like_query_parameters_are_hashed():
    a = key_parts(view(f"/m?alt=json&key={TOKEN_A}"), Cache())
    b = key_parts(view(f"/m?key={TOKEN_B}&alt=json"), Cache())
    assert key_of(a) != key_of(b)
    assert TOKEN_A not in json.dumps(a)
    assert dict(map(tuple, a["query"]))["alt"] == "json"  # other parameters stay readable


def test_recordings_leave_credentials_out_so_any_key_replays():
    with_a = view(f"/m?key={TOKEN_A}", headers={"Authorization": f"Bearer {TOKEN_A}"})
    with_b = view(f"/m?key={TOKEN_B}", headers={"Authorization": f"Bearer {TOKEN_B}"})
    pa = key_parts(with_a, Cache(), credentials=False)
    assert "credentials" not in pa and "query" not in pa and TOKEN_A not in json.dumps(pa)
    assert key_of(pa) == key_of(key_parts(with_b, Cache(), credentials=False))


def test_a_cookie_is_a_credential_of_the_key():
    """Two users' cookies never share an entry (the key holds the cookie hashed)."""
    assert key(view(headers={"Cookie": "a=1"})) != key(view(headers={"Cookie": "a=2"}))


# --- what may be looked up and stored --------------------------------------------------------


def test_request_policy_methods_default_to_get_and_head():
    assert request_policy("GET", {}, Cache()) == RequestPolicy(lookup=True, store=True)
    assert request_policy("head", {}, Cache()) == RequestPolicy(True, True)
    assert request_policy("POST", {}, Cache()) == RequestPolicy(lookup=False, store=False)
    assert request_policy("POST", {}, Cache(methods=("GET", "POST"))) == RequestPolicy(True, True)


@pytest.mark.parametrize("headers", [{"cache-control": "no-cache"},
                                     {"cache-control": "max-age=0, No-Cache"},
                                     {"x-bridge-cache": "refresh"},
                                     {"x-bridge-cache": "REFRESH"}])
def test_no_cache_and_refresh_refetch_and_store(headers):
    p = request_policy("GET", headers, Cache())
    assert (p.lookup, p.store) == (False, True)


def test_client_no_store_bypasses_the_cache():
    assert request_policy("GET", {"cache-control": "no-store"}, Cache()) == RequestPolicy(False, False)


def test_only_listed_statuses_are_stored():
    assert response_storable(200, {}, Cache())
    assert not response_storable(404, {}, Cache())
    assert response_storable(404, {}, Cache(statuses=(200, 404)))
    assert not response_storable(201, {}, Cache())


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_429_and_5xx_are_never_stored_even_when_listed(status):
    # The config schema refuses to list them; the engine refuses again.
    assert not response_storable(status, {}, Cache(statuses=(200, status)))
    assert not response_storable(status, {}, Cache(statuses=(200, status), override=True))


@pytest.mark.parametrize("cc", ["no-store", "private", "Private, max-age=60", "max-age=0, NO-STORE",
                                'private="set-cookie"'])
def test_upstream_no_store_and_private_are_respected_unless_override(cc):
    assert not response_storable(200, {"cache-control": cc}, Cache())
    assert response_storable(200, {"cache-control": cc}, Cache(override=True))


def test_other_upstream_cache_control_does_not_prevent_storing():
    assert response_storable(200, {"cache-control": "public, max-age=60"}, Cache())
    assert response_storable(200, {"cache-control": "no-cache"}, Cache())


# --- entries --------------------------------------------------------------------------------


def test_make_entry_keeps_the_answer_but_not_per_response_headers():
    e = make_entry(200, [("Content-Type", "application/json"), ("Set-Cookie", "s=1"),
                         ("Date", "x"), ("X-Bridge-Route", "api"), ("age", "3"),
                         ("x-request-id", "r1")], b'{"ok":true}', 1000.0, {"path": "/"}, "api")
    assert e.headers == [("Content-Type", "application/json"), ("x-request-id", "r1")]
    assert e.size == len(b'{"ok":true}')


def test_an_entry_survives_its_json_round_trip_with_stream_events():
    e = make_entry(200, [("content-type", "text/event-stream")], b"data: 1\n\ndata: 2\n\n",
                   1234.5, {"method": "GET", "path": "/s"}, "api",
                   events=[(0.0, b"data: 1\n\n"), (0.25, b"data: 2\n\n")])
    doc = json.loads(json.dumps(e.to_json()))
    assert doc["format"] == FORMAT
    back = parse_entry(doc)
    assert back == e


def test_a_vary_record_round_trips():
    r = vary_record(["accept-language"], 5.0, {"path": "/"}, "api")
    assert parse_entry(r.to_json()).vary == ["accept-language"]


def good_doc() -> dict:
    return make_entry(200, [("a", "b")], b"body", 1.0, {"path": "/"}, "api",
                      events=[(0.0, b"x")]).to_json()


def _broken(**changes) -> dict:
    doc = good_doc()
    for k, v in changes.items():
        if v is KeyError:
            del doc[k]
        else:
            doc[k] = v
    return doc


@pytest.mark.parametrize("raw", [
    None, b"garbage", "garbage", 42, [], [1, 2], {},
    _broken(format=FORMAT + 1), _broken(format=0), _broken(format=KeyError),
    _broken(status="two hundred"), _broken(status=KeyError), _broken(headers=[["only-name"]]),
    _broken(headers=5), _broken(body="not base64!!"), _broken(body=None), _broken(stored_at="now"),
    _broken(parts=7), _broken(events=[[0.0, "@@@"]]), _broken(events=[["soon", "eA=="]]),
    _broken(events=3), _broken(route=KeyError),
], ids=lambda r: repr(r)[:40])
def test_parse_entry_on_garbage_is_none_never_an_exception(raw):
    assert parse_entry(raw) is None


def test_age_and_freshness():
    e = Entry(200, [], b"", stored_at=100.0, parts={}, route="api")
    assert age_seconds(e, 100.4) == 0 and age_seconds(e, 161.9) == 61
    assert age_seconds(e, 90.0) == 0  # a clock step back never shows a negative age
    assert is_fresh(e, 10, 109.9) and not is_fresh(e, 10, 110.0)


def test_replay_mode_selects_routes_to_record():
    assert not ReplayMode().records("a")
    assert ReplayMode(record=True).records("a")
    only = ReplayMode(record=True, routes=frozenset({"a"}))
    assert only.records("a") and not only.records("b")
    assert not ReplayMode(offline=True).records("a")


# --- why an offline request missed ------------------------------------------------------------


def rec_parts(path_qs: str, **kw) -> dict:
    return key_parts(view(path_qs, **kw), Cache(), credentials=False)


def test_differences_names_the_parts_in_words():
    wanted = rec_parts("/v1/models?limit=5")
    have = rec_parts("/v1/models?limit=10")
    diff = differences(wanted, have)
    assert len(diff) == 1 and diff[0].startswith("query:")
    assert "10" in diff[0] and "5" in diff[0]
    assert differences(wanted, wanted) == []


def test_differences_of_bodies_and_missing_parts():
    post = rec_parts("/v1/chat", method="POST", body=b'{"q":1}')
    other = rec_parts("/v1/chat", method="POST", body=b'{"q":2}')
    assert differences(post, other) == ["body differs"]
    bare = rec_parts("/v1/chat", method="POST")
    assert differences(post, bare) == ["body differs"]  # digests are never shown
    plain = rec_parts("/v1/chat", method="POST", headers={"Accept-Language": "en"})
    with_query = rec_parts("/v1/chat?stream=true", method="POST")
    (d,) = differences(plain, with_query)
    assert d.startswith("query:") and "this request has none" in d
    (d,) = differences(with_query, plain)
    assert d.startswith("query:") and "recording has none" in d


def test_closest_prefers_the_same_path_and_ignores_other_namespaces():
    wanted = rec_parts("/v1/chat", method="POST", body=b'{"q":1}')
    same_path = rec_parts("/v1/chat", method="POST", body=b'{"q":2}')
    other_path = rec_parts("/v1/embeddings", method="POST", body=b'{"q":1}')
    other_ns = rec_parts("/v1/chat", method="POST", body=b'{"q":1}', namespace="elsewhere")
    near, diff = closest(wanted, [other_path, other_ns, same_path])
    assert near == same_path and diff == ["body differs"]
    assert closest(wanted, [other_ns]) == (None, [])
    assert closest(wanted, []) == (None, [])
    near, diff = closest(wanted, [other_path])
    assert near == other_path and any(d.startswith("path:") for d in diff)


# --- EntryStore on a real diskcache ------------------------------------------------------------


@pytest.fixture
def stores(tmp_path):
    s = ResponseStores(tmp_path / "home")
    yield s
    s.close()


def an_entry(path: str, body: bytes = b'{"ok":true}') -> tuple[str, Entry]:
    parts = key_parts(view(path), Cache())
    return key_of(parts), make_entry(200, [("content-type", "application/json")], body,
                                     1000.0, parts, "api")


def test_entry_store_round_trip_and_summaries(stores):
    es = stores.cache("api")
    k, e = an_entry("/a")
    es.put(k, e, None)
    assert es.get(k) == e
    (key_, summary), = es.summaries()
    assert key_ == k and summary["status"] == 200 and summary["parts"]["path"] == "/a"
    assert (stores.home / "cache" / "api").is_dir()


@pytest.mark.parametrize("garbage", [b"\x00\x01 not json", "text", {"format": FORMAT + 1},
                                     {"format": FORMAT, "status": "x"}, [1, 2, 3]],
                         ids=["bytes", "str", "newer-format", "bad-field", "list"])
def test_a_corrupt_stored_entry_is_a_miss_and_a_warning(stores, caplog, garbage):
    es = stores.cache("api")
    k, e = an_entry("/a")
    es.put(k, e, None)
    es.store.set(f"entry:{k}", garbage)
    with caplog.at_level(logging.WARNING, logger="bridge.cache"):
        assert es.get(k) is None
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_names_are_checked_so_nothing_escapes_the_home(stores):
    from bridge_cli.errors import UsageError

    for bad in ("../x", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(UsageError):
            stores.cassette(bad)


def test_after_lru_eviction_every_servable_entry_is_listed_and_cleared(stores):
    es = stores.cache("small", size_limit=400_000)
    keys = []
    for i in range(30):  # ~60 KB each as JSON (file-backed): far more than the limit
        k, e = an_entry(f"/big/{i}", body=bytes([65 + i % 26]) * 45_000)
        es.put(k, e, None)
        keys.append(k)
        assert es.get(keys[0]) is not None  # a hot entry: read after every write
        es.flush_touches()  # what the proxy does in batches off the event loop
    servable = {k for k in keys if es.get(k) is not None}
    assert keys[0] in servable and keys[1] not in servable  # LRU: the hot one stays
    assert len(servable) < len(keys)
    assert servable <= {k for k, _ in es.summaries()}  # `bridge cache ls` shows what answers
    es.clear()  # `bridge cache clear`
    assert [k for k in keys if es.get(k) is not None] == []

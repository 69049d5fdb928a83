"""Schema-drift policy on plain dicts: templating, learning, classification, codecs.

No sockets here: the engine decides what changed; the drift addon and store apply it.
"""

from __future__ import annotations

import copy
import json
import timeit

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge_cli.engine.drift import (
    MIN_OBSERVATIONS,
    Baseline,
    Finding,
    check,
    endpoint,
    is_breaking,
    template,
)

WHERE = {"route": "api", "endpoint": "GET /users/{id}"}


def user(i: int = 1, **changes) -> dict:
    doc = {"id": i, "name": f"user {i}", "email": f"u{i}@example.com", "plan": "free",
           "usage": {"total_tokens": 10 * i, "cost": 0.5},
           "orders": [{"sku": "a", "price": 100 + i}, {"sku": "b", "price": 7}]}
    for key, value in changes.items():
        if value is ABSENT:
            doc.pop(key)
        else:
            doc[key] = value
    return doc


ABSENT = object()


def learned(*docs: dict, n: int = 5) -> Baseline:
    """A baseline that saw `docs` (or n users) with no finding."""
    b = Baseline()
    for i, doc in enumerate(docs or [user(i) for i in range(1, n + 1)]):
        assert b.observe(doc, now=100.0 + i, flow_id=f"learn{i}", **WHERE) == []
    return b


def observe(b: Baseline, doc: object, flow: str = "flow-9") -> list[Finding]:
    return b.observe(doc, now=2000.0, flow_id=flow, **WHERE)


def kinds(findings: list[Finding]) -> set[tuple[str, str, str]]:
    return {(f.kind, f.path, f.severity) for f in findings}


# --- templates and endpoints -----------------------------------------------------------

@pytest.mark.parametrize("path, want", [
    ("/users/42", "/users/{id}"),
    ("/users/7/orders/9f3c2a1b?x=1", "/users/{id}/orders/{id}"),
    ("/v1/files/123e4567-e89b-12d3-a456-426614174000", "/v1/files/{id}"),
    ("/blobs/DEADBEEF00", "/blobs/{id}"),
    ("/v1/chat/completions/chatcmpl-AbCdEf123456789xyzQ", "/v1/chat/completions/{id}"),
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/v2/models/gpt4", "/v2/models/gpt4"),  # short token with a digit: a name, not an ID
    ("/api/accounts/settings-and-preferences", "/api/accounts/settings-and-preferences"),
    ("/", "/"),
    ("", "/"),
])
def test_template_turns_id_like_segments_into_id_and_keeps_words(path, want):
    assert template(path) == want


def test_two_users_share_one_endpoint():
    assert endpoint("get", template("/users/42")) == endpoint("GET", template("/users/7"))
    assert endpoint("GET", "/users/{id}") == "GET /users/{id}"


def test_endpoint_names_request_bodies_and_stream_events_apart():
    assert endpoint("POST", "/v1/chat/completions", "request") == \
        "POST /v1/chat/completions request"
    assert endpoint("POST", "/v1/chat/completions", "event:message_delta") == \
        "POST /v1/chat/completions event:message_delta"
    with pytest.raises(ValueError, match="event:TYPE"):
        endpoint("POST", "/v1/x", "body")


# --- learning: no false alarms ---------------------------------------------------------

def test_the_first_documents_only_learn():
    b = Baseline()
    for i in range(MIN_OBSERVATIONS):
        doc = user(i) if i % 2 else user(i, plan=ABSENT, extra=True)
        assert observe(b, doc) == []
    assert b.observations == MIN_OBSERVATIONS


def test_a_sometimes_absent_field_is_optional_not_missing():
    b = learned(user(1), user(2, plan=ABSENT), user(3), user(4))
    assert observe(b, user(5, plan=ABSENT)) == []
    assert "plan" not in b.schema()["required"]


def test_a_sometimes_absent_field_in_array_items_is_optional():
    docs = [user(i, orders=[{"sku": "a", "price": 1}, {"sku": "b"}]) for i in range(4)]
    b = learned(*docs)
    assert observe(b, user(9, orders=[{"sku": "c"}])) == []


def test_the_same_shape_again_is_no_finding():
    b = learned()
    assert observe(b, user(77)) == []


def test_integers_and_whole_floats_fit_a_number_field():
    b = learned(*[user(i, usage={"total_tokens": 3, "cost": 0.25 * i}) for i in range(4)])
    assert observe(b, user(5, usage={"total_tokens": 3, "cost": 2})) == []
    b = learned(*[user(i, id=float(i)) for i in range(4)])  # 1.0 is an integer
    assert observe(b, user(5, id=5)) == []


def test_nullable_fields_are_recognised():
    b = learned(user(1), user(2, email=None), user(3), user(4, email=None))
    assert observe(b, user(5, email=None)) == []
    assert observe(b, user(6)) == []
    assert sorted(b.schema()["properties"]["email"]["type"]) == ["null", "string"]


def test_arrays_of_objects_merge_their_items_into_one_schema():
    docs = [user(i, orders=[{"sku": "a"}, {"sku": "b", "gift": True}, {"sku": "c", "price": i}])
            for i in range(3)]
    schema = learned(*docs).schema()
    items = schema["properties"]["orders"]["items"]
    assert items["type"] == "object"
    assert set(items["properties"]) == {"sku", "gift", "price"}
    assert items["required"] == ["sku"]


def test_a_field_only_ever_null_that_gains_a_value_is_learned_not_raised():
    b = learned(*[user(i, deleted_at=None) for i in range(4)])
    assert observe(b, user(5, deleted_at="2025-01-01")) == []


def test_a_deeply_nested_body_is_observed_without_a_recursion_error():
    def deep(leaf: object) -> object:
        for _ in range(600):
            leaf = {"a": [leaf]}
        return leaf

    b = learned(deep(1), deep(1), deep(1))
    assert observe(b, deep("far below what is learned")) == []
    assert Baseline.from_dict(json.loads(json.dumps(b.to_dict()))).observations == 4
    jsonschema.validate(deep("x"), b.schema())
    assert kinds(observe(b, {"a": "x"})) == {("type_changed", "$.a", "breaking")}


def test_observing_a_10_kb_body_takes_well_under_half_a_millisecond():
    doc = {"object": "list", "has_more": False, "data": [
        {"id": f"prod_{i:04d}", "name": f"Product {i}", "active": i % 3 != 0,
         "price": {"amount": 1000 + i, "currency": "eur"}, "tags": ["new", "sale"][: i % 3],
         "stock": None if i % 5 == 0 else i, "created": 1715367049 + i} for i in range(64)]}
    assert len(json.dumps(doc)) > 10_000
    b = learned(doc, doc, doc)
    best = min(timeit.repeat(lambda: observe(b, doc), number=20, repeat=5)) / 20
    assert best < 0.0005, f"{best * 1e6:.0f} us per 10 KB body"  # ~0.1 ms measured


# --- each class of change ----------------------------------------------------------------

def test_a_required_field_missing_is_breaking():
    found = observe(learned(), user(9, email=ABSENT))
    assert kinds(found) == {("field_missing", "$.email", "breaking")}
    f = found[0]
    assert (f.before, f.after, f.count, f.first_seen, f.example_flow) == \
        ("required", "absent", 1, 2000.0, "flow-9")
    assert (f.route, f.endpoint) == ("api", "GET /users/{id}")


def test_a_required_field_missing_in_array_items_is_breaking():
    found = observe(learned(), user(9, orders=[{"sku": "a", "price": 1}, {"sku": "b"}]))
    assert kinds(found) == {("field_missing", "$.orders[].price", "breaking")}


def test_a_type_change_is_breaking():
    found = observe(learned(), user(9, usage={"total_tokens": "90", "cost": 0.5}))
    assert kinds(found) == {("type_changed", "$.usage.total_tokens", "breaking")}
    assert (found[0].before, found[0].after) == ("integer", "string")


def test_a_fraction_where_only_integers_were_seen_is_a_type_change():
    found = observe(learned(), user(9, usage={"total_tokens": 90.5, "cost": 0.5}))
    assert [(f.kind, f.before, f.after) for f in found] == [("type_changed", "integer", "number")]


def test_an_array_item_type_change_is_breaking():
    found = observe(learned(), user(9, orders=["a", "b"]))
    assert kinds(found) == {("item_type_changed", "$.orders[]", "breaking")}
    assert (found[0].before, found[0].after) == ("object", "string")


def test_a_new_field_is_additive():
    found = observe(learned(), user(9, avatar="https://x/y.png"))
    assert kinds(found) == {("field_added", "$.avatar", "additive")}
    assert found[0].after == "string"
    assert not is_breaking(found)


def test_a_new_field_in_array_items_is_additive():
    found = observe(learned(), user(9, orders=[{"sku": "a", "price": 1, "tax": 0.2}]))
    assert kinds(found) == {("field_added", "$.orders[].tax", "additive")}


def test_a_new_enum_value_is_additive():
    b = learned(*[user(i, plan=["free", "pro", "team"][i % 3]) for i in range(21)])
    assert observe(b, user(30, plan="pro")) == []
    found = observe(b, user(31, plan="enterprise"))
    assert kinds(found) == {("enum_value_added", "$.plan", "additive")}
    assert (found[0].before, found[0].after) == ('"free", "pro", "team"', '"enterprise"')


def test_strings_with_many_values_are_not_an_enum():
    b = learned(n=25)  # 25 different names
    assert observe(b, user(99, name="somebody new")) == []


def test_a_field_that_becomes_null_is_loosening():
    found = observe(learned(), user(9, name=None))
    assert kinds(found) == {("became_nullable", "$.name", "loosening")}
    assert (found[0].before, found[0].after) == ("string", "null")
    assert not is_breaking(found)


def test_a_root_type_change_is_reported_at_the_root():
    assert kinds(observe(learned(), [user(1)])) == {("type_changed", "$", "breaking")}


def test_odd_field_names_are_quoted_in_the_path():
    found = observe(learned(), user(9, **{"x.y z": 1}))
    assert [f.path for f in found] == ['$["x.y z"]']


def test_is_breaking_looks_for_any_breaking_finding():
    b = learned()
    additive = observe(b, user(9, avatar="a"))
    breaking = observe(b, user(9, email=ABSENT))
    assert not is_breaking([]) and not is_breaking(additive)
    assert is_breaking(additive + breaking)


# --- no flapping, and accept ---------------------------------------------------------------

def test_a_change_is_raised_again_with_the_same_key_until_accepted():
    b = learned()
    first = observe(b, user(9, email=ABSENT), flow="flow-a")
    again = observe(b, user(10, email=ABSENT), flow="flow-b")
    assert [f.key for f in first] == [f.key for f in again]  # the store counts, not re-raises
    assert first[0].key == "api|GET /users/{id}|$.email|field_missing|absent"
    assert observe(b, user(11)) == []  # the old shape is still normal
    b.accept()
    assert observe(b, user(12, email=ABSENT)) == []
    assert observe(b, user(13)) == []
    assert b.observations == 5 + 5


def test_accept_adopts_a_type_change_and_a_new_field():
    b = learned()
    assert observe(b, user(9, id="u9", avatar="a"))
    b.accept()
    assert observe(b, user(10, id="u10", avatar="b")) == []
    assert observe(b, user(11)) == []  # the old type is still known


# --- a supplied schema -----------------------------------------------------------------------

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "plan", "orders"],
    "properties": {
        "id": {"type": "integer"},
        "plan": {"enum": ["free", "pro"]},
        "orders": {"type": "array", "items": {
            "type": "object", "required": ["price"], "additionalProperties": False,
            "properties": {"sku": {"type": "string"}, "price": {"type": "integer",
                                                              "minimum": 0}}}},
    },
}


def check_doc(doc: object) -> list[Finding]:
    return check(SCHEMA, doc, now=5.0, flow_id="flow-c", **WHERE)


def test_check_passes_a_body_that_fits_the_schema():
    assert check_doc(user(1)) == []


def test_check_reports_each_violation_as_breaking_at_its_path():
    doc = user(1, id="one", plan="gold", orders=[{"sku": "a", "price": -1},
                                                 {"sku": "b", "colour": "red"}])
    found = {(f.path, f.before, f.after) for f in check_doc(doc)}
    assert found == {
        ("$.id", "integer", "string"),
        ("$.plan", '"free", "pro"', '"gold"'),
        ("$.orders[].price", "minimum: 0", "fails minimum"),
        ("$.orders[].price", "required", "absent"),
        ("$.orders[].colour", "not allowed", "present"),
    }
    assert all(f.kind == "schema_violation" and f.severity == "breaking"
               for f in check_doc(doc))
    assert is_breaking(check_doc(doc))


def test_check_reports_one_finding_per_violation_not_per_array_item():
    orders = [{"sku": "a", "price": -i} for i in range(1, 30)]
    assert len(check_doc(user(1, orders=orders))) == 1


def test_check_refuses_an_invalid_schema():
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        check({"type": "no-such-type"}, {}, now=1.0, flow_id="f", **WHERE)


def test_a_learned_schema_accepts_what_was_learned_and_is_usable_by_check():
    docs = [user(1), user(2, email=None), user(3, plan=ABSENT), user(4, orders=[])]
    schema = learned(*docs).schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for doc in docs:
        jsonschema.validate(doc, schema)
    found = check(schema, user(5, id="x"), now=1.0, flow_id="f", **WHERE)
    assert [(f.path, f.after) for f in found] == [("$.id", "string")]


# --- round trips and malformed records ---------------------------------------------------------

def test_a_finding_round_trips_through_json():
    f = observe(learned(), user(9, email=ABSENT))[0]
    assert Finding.from_dict(json.loads(json.dumps(f.to_dict()))) == f


def test_a_baseline_round_trips_through_json_and_keeps_deciding_the_same():
    b = learned(*[user(i, plan=["free", "pro"][i % 2], x=None) for i in range(21)])
    observe(b, user(9, avatar="a"))  # a pending change, too
    copy_ = Baseline.from_dict(json.loads(json.dumps(b.to_dict())))
    assert copy_.to_dict() == b.to_dict()
    assert copy_.observations == b.observations
    for doc in (user(9, avatar="b"), user(9, plan="team"), user(1, email=ABSENT), user(3, x=1)):
        assert kinds(observe(copy_, doc)) == kinds(observe(b, doc))
    assert b.to_dict()["format"] == Baseline.FORMAT


GOOD_FINDING = {"route": "r", "endpoint": "GET /x", "path": "$.a", "kind": "field_added",
                "severity": "additive", "before": "absent", "after": "string",
                "first_seen": 1.0, "count": 2, "example_flow": "f"}


@pytest.mark.parametrize("change", [
    {"kind": "renamed"}, {"severity": "fatal"}, {"count": 0}, {"count": "2"}, {"count": True},
    {"first_seen": "yesterday"}, {"route": None}, {"before": 3}, {"path": ["$"]},
])
def test_finding_from_dict_refuses_malformed_input(change):
    assert Finding.from_dict(GOOD_FINDING).count == 2
    with pytest.raises(ValueError):
        Finding.from_dict({**GOOD_FINDING, **change})


@pytest.mark.parametrize("key", ["route", "after", "count", "first_seen"])
def test_finding_from_dict_refuses_a_missing_field(key):
    d = dict(GOOD_FINDING)
    del d[key]
    with pytest.raises(ValueError):
        Finding.from_dict(d)


def _spoil(d: dict, path: tuple, value: object) -> dict:
    d = copy.deepcopy(d)
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return d


@pytest.mark.parametrize("path, value", [
    (("format",), Baseline.FORMAT + 1),
    (("format",), "1"),
    (("normal",), None),
    (("normal", "documents"), -1),
    (("normal", "shape", "types"), {"float": 3}),
    (("normal", "shape", "types"), {"string": "3"}),
    (("normal", "shape", "fields", "usage", "present"), None),
    (("normal", "shape", "fields", "plan", "values"), [1, 2]),
    (("changed", "shape"), []),
])
def test_baseline_from_dict_refuses_malformed_or_newer_input(path, value):
    good = learned().to_dict()
    assert Baseline.from_dict(good).observations == 5
    with pytest.raises(ValueError):
        Baseline.from_dict(_spoil(good, path, value))
    with pytest.raises(ValueError):
        Baseline.from_dict([good])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(JSON, min_size=1, max_size=6))
def test_any_json_learned_round_trips_and_its_schema_accepts_it(docs):
    b = Baseline()
    for i, doc in enumerate(docs):
        b.observe(doc, now=float(i), flow_id=str(i), **WHERE)
    b.accept()
    again = Baseline.from_dict(json.loads(json.dumps(b.to_dict())))
    assert again.to_dict() == b.to_dict()
    for doc in docs:
        jsonschema.validate(doc, b.schema())

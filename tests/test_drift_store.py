"""Where drift lives: the DriftRecords repository on a real DiskStore (store/drift.py).

Baselines and findings are made the way the proxy makes them, by Baseline.observe on plain
JSON documents.
"""

from __future__ import annotations

from bridge_cli.common.store import make_key
from bridge_cli.engine.drift import Baseline, Finding
from bridge_cli.store import DiskStore, DriftRecords

USERS = "GET /users/{id}"
ORDERS = "GET /orders/{id}"


def records(store) -> DriftRecords:
    return DriftRecords(store, Baseline, Finding)


def learned(route: str = "api", endpoint: str = USERS, docs: int = 3) -> Baseline:
    """A baseline that has seen `docs` bodies of {"id": int, "name": str}."""
    b = Baseline()
    for i in range(docs):
        assert b.observe({"id": i, "name": "ann"}, now=100.0 + i, flow_id=f"learn-{i}",
                         route=route, endpoint=endpoint) == []
    return b


def drifted(b: Baseline, doc: dict, *, now: float, flow: str = "flow-1", route: str = "api",
            endpoint: str = USERS) -> list[Finding]:
    found = b.observe(doc, now=now, flow_id=flow, route=route, endpoint=endpoint)
    assert found, f"{doc} should show a change"
    return found


def test_a_change_seen_again_is_counted_not_raised_again(store):
    recs = records(store)
    b = learned()
    first = drifted(b, {"id": "u-1", "name": "ann"}, now=200.0, flow="flow-1")
    assert recs.record(first) == first
    again = drifted(b, {"id": "u-2", "name": "bob"}, now=300.0, flow="flow-2")
    assert recs.record(again) == []  # nothing new: no second alert for the same change
    [stored] = [f for f in recs.findings() if f.kind == "type_changed"]
    assert (stored.path, stored.before, stored.after) == ("$.id", "integer", "string")
    assert stored.count == 2
    assert (stored.first_seen, stored.example_flow) == (200.0, "flow-1")


def test_a_different_change_of_the_same_field_is_its_own_finding(store):
    recs = records(store)
    b = learned()
    recs.record(drifted(b, {"id": "u-1", "name": "ann"}, now=200.0))
    new = recs.record(drifted(b, {"name": "ann"}, now=300.0))  # now the id is missing
    assert [(f.kind, f.path) for f in new] == [("field_missing", "$.id")]
    assert len(recs.findings()) == 2


def test_findings_list_breaking_first_then_the_newest(store):
    recs = records(store)
    b = learned()
    added = drifted(b, {"id": 1, "name": "ann", "email": "a@x"}, now=500.0)
    retyped = drifted(b, {"id": "u-1", "name": "ann"}, now=200.0)
    nulled = drifted(learned(endpoint=ORDERS), {"id": 1, "name": None}, now=900.0,
                     endpoint=ORDERS)
    recs.record(added + retyped + nulled)
    got = [(f.severity, f.kind) for f in recs.findings()]
    assert got[0] == ("breaking", "type_changed")
    assert [s for s, _ in got] == sorted((s for s, _ in got),
                                         key=["breaking", "additive", "loosening"].index)


def test_baselines_round_trip_through_the_store_and_another_process_view(tmp_path):
    first = DiskStore(tmp_path / "store")
    records(first).save_baseline("api", USERS, learned(docs=4))
    first.close()
    again = DiskStore(tmp_path / "store")  # what the CLI opens while bridge is stopped
    try:
        [(where, b)] = records(again).baselines().items()
        assert where == ("api", USERS)
        assert b.observations == 4
        assert b.schema()["properties"]["id"]["type"] == "integer"
    finally:
        again.close()


def test_route_filters_findings_and_baselines_even_with_a_colon_in_the_name(store):
    recs = records(store)
    for route in ("api", "api:v2"):
        b = learned(route=route)
        recs.save_baseline(route, USERS, b)
        recs.record(drifted(b, {"id": "x", "name": "ann"}, now=200.0, route=route))
    assert {f.route for f in recs.findings("api")} == {"api"}
    assert set(recs.baselines("api")) == {("api", USERS)}
    assert set(recs.baselines("api:v2")) == {("api:v2", USERS)}


def test_accept_adopts_the_new_shape_and_clears_only_that_endpoints_findings(store):
    recs = records(store)
    users, orders = learned(), learned(endpoint=ORDERS)
    recs.record(drifted(users, {"id": "u-1", "name": "ann"}, now=200.0))
    recs.record(drifted(orders, {"id": "o-1", "name": "ann"}, now=200.0, endpoint=ORDERS))
    recs.save_baseline("api", USERS, users)
    recs.save_baseline("api", ORDERS, orders)

    assert recs.accept("api", USERS) == 1
    assert {f.endpoint for f in recs.findings()} == {ORDERS}
    adopted = recs.baselines()[("api", USERS)]
    # the accepted shape is normal now: a string id is no longer a change ...
    assert adopted.observe({"id": "u-9", "name": "cy"}, now=300.0, flow_id="f",
                           route="api", endpoint=USERS) == []
    # ... and the endpoint that was not accepted still reports it
    assert recs.baselines()[("api", ORDERS)].observe(
        {"id": "o-9", "name": "cy"}, now=300.0, flow_id="f", route="api", endpoint=ORDERS)


def test_every_record_carries_a_format_and_a_newer_one_is_skipped_not_fatal(store):
    recs = records(store)
    b = learned()
    recs.save_baseline("api", USERS, b)
    recs.record(drifted(b, {"id": "x", "name": "ann"}, now=200.0))
    keys = list(store.scan(make_key("drift") + ":"))
    assert keys and all(store.get(k)["format"] == DriftRecords.FORMAT for k in keys)

    newer = {"format": DriftRecords.FORMAT + 1, "finding": {"something": "else"}}
    store.set(make_key("drift", "finding", "api", "f" * 32), newer)
    store.set(make_key("drift", "baseline", "api", ORDERS), {"format": 1, "baseline": {}})
    assert len(recs.findings()) == 1  # the newer record is left for a newer bridge
    assert set(recs.baselines()) == {("api", USERS)}  # the malformed one is skipped


def test_clear_forgets_one_routes_records(store):
    recs = records(store)
    for route in ("api", "other"):
        b = learned(route=route)
        recs.save_baseline(route, USERS, b)
        recs.record(drifted(b, {"id": "x", "name": "ann"}, now=200.0, route=route))
    assert recs.clear("api") == 2
    assert {f.route for f in recs.findings()} == {"other"}
    assert set(recs.baselines()) == {("other", USERS)}

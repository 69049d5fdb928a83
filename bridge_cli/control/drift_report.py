"""The drift resource: findings, learned schemas, accepting a change, exporting schemas.

Shared by GET /api/v1/drift and `bridge drift`; it reads the store (store/drift.py), so it
works with no bridge running.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bridge_cli.common.store import Store
from bridge_cli.engine.drift import Baseline, Finding, is_breaking, template
from bridge_cli.errors import UsageError
from bridge_cli.store.drift import SEVERITY_ORDER, DriftRecords

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def records(store: Store) -> DriftRecords[Baseline, Finding]:
    """The drift repository over `store`, with engine/drift.py's codecs."""
    return DriftRecords(store, Baseline, Finding)


def drift_report(store: Store, route: str | None = None) -> dict:
    """Every finding (breaking first, then the newest), counts by severity, each endpoint
    learned or found, and the routes with any record; `breaking`: `bridge drift` exits 1."""
    recs = records(store)
    findings = recs.findings(route)
    baselines = recs.baselines(route)
    per: dict[tuple[str, str], dict] = {
        where: {"route": where[0], "endpoint": where[1], "observations": b.observations,
                "findings": 0, "breaking": 0}
        for where, b in baselines.items()}
    for f in findings:
        e = per.setdefault((f.route, f.endpoint), {
            "route": f.route, "endpoint": f.endpoint, "observations": None,
            "findings": 0, "breaking": 0})
        e["findings"] += 1
        e["breaking"] += f.severity == "breaking"
    counts = dict.fromkeys(SEVERITY_ORDER, 0)
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    return {
        "route": route,
        "routes": recs.routes(),
        "breaking": is_breaking(findings),
        "counts": counts,
        "findings": [f.to_dict() for f in findings],
        "endpoints": [per[k] for k in sorted(per)],
    }


def matching(given: str, known: list[str]) -> list[str]:
    """The endpoints of `known` that `given` names: its exact text, or a concrete request
    line ('get /users/42') that templates to one ('GET /users/{id}')."""
    exact = [k for k in known if k == given]
    if exact:
        return exact
    parts = given.strip().split(None, 2)
    if len(parts) >= 2 and parts[1].startswith("/"):
        parts[:2] = [parts[0].upper(), template(parts[1])]
    normal = " ".join(parts)
    return [k for k in known if k == normal]


def _select(store: Store, endpoint: str | None, route: str | None,
            ) -> dict[tuple[str, str], Baseline]:
    """The baselines `endpoint` names (all when None); UsageError naming the known ones."""
    baselines = records(store).baselines(route)
    if endpoint is None:
        return baselines
    names = matching(endpoint, sorted({e for _, e in baselines}))
    chosen = {k: b for k, b in baselines.items() if k[1] in names}
    if not chosen:
        raise UsageError(_unknown(endpoint, route, sorted({e for _, e in baselines})))
    return chosen


def _unknown(endpoint: str, route: str | None, known: list[str]) -> str:
    where = f" of route '{route}'" if route else ""
    if not known:
        return (f"no endpoint{where} has been learned yet, so {endpoint!r} can't be found; "
                "send traffic through a route with `drift: {learn: true}` first")
    return (f"no learned endpoint{where} is {endpoint!r}; give one as `bridge drift` lists "
            f"it, e.g. {known[0]!r} (known: {', '.join(known[:10])})")


def show(store: Store, endpoint: str, route: str | None = None) -> list[dict]:
    """The learned JSON Schema of each endpoint `endpoint` names (one per route)."""
    return [{"route": r, "endpoint": e, "observations": b.observations, "schema": b.schema()}
            for (r, e), b in sorted(_select(store, endpoint, route).items())]


def accept(store: Store, endpoint: str | None = None, route: str | None = None) -> dict:
    """Adopt the observed shape as the baseline and drop the findings, of the endpoint
    `endpoint` names (or every endpoint); what was accepted."""
    recs = records(store)
    if endpoint is None:
        names: list[str | None] = [None]
    else:
        known = sorted({e for _, e in recs.baselines(route)} | {
            f.endpoint for f in recs.findings(route)})
        names = list(matching(endpoint, known))
        if not names:
            raise UsageError(_unknown(endpoint, route, known))
    return {"accepted": sum(recs.accept(route, n) for n in names), "endpoint": endpoint,
            "route": route}


def file_name(route: str, endpoint: str) -> str:
    """A safe file name for one endpoint's schema: route__METHOD__path[__part].json."""
    method, _, rest = endpoint.partition(" ")
    path, _, part = rest.partition(" ")
    pieces = [route, method, path.strip("/") or "root"] + ([part] if part else [])
    safe = [_UNSAFE.sub("_", p).strip("_.") or "_" for p in pieces]
    return "__".join(safe) + ".json"


def export(store: Store, directory: Path, route: str | None = None,
           force: bool = False) -> list[dict]:
    """Write each learned schema to `directory` (created) as a JSON Schema file; nothing is
    written when a file is in the way, unless `force`. The files written."""
    baselines = records(store).baselines(route)
    if not baselines:
        where = f" for route '{route}'" if route else ""
        raise UsageError(f"no schema has been learned{where} yet, so there is nothing to "
                         "export; send traffic through a route with `drift: {learn: true}`")
    plan: dict[str, tuple[str, str, Baseline]] = {}
    for (r, e), b in sorted(baselines.items()):
        name = file_name(r, e)
        if name in plan:  # two endpoints that differ only in unsafe characters
            name = name[:-5] + "__" + str(len(plan)) + ".json"
        plan[name] = (r, e, b)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file, not a directory: give a directory to "
                         "export the schemas into")
    taken = [n for n in plan if (directory / n).exists()]
    if taken and not force:
        raise UsageError(f"{directory / taken[0]} already exists ({len(taken)} of the "
                         f"{len(plan)} files would be replaced); pass --force to overwrite")
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, (r, e, b) in plan.items():
            (directory / name).write_text(json.dumps(_document(r, e, b), indent=2) + "\n")
            written.append({"route": r, "endpoint": e, "file": str(directory / name)})
    except OSError as err:
        raise UsageError(f"cannot write the schemas into {directory}: "
                         f"{err.strerror or err}; give a directory you can write") from None
    return written


def _document(route: str, endpoint: str, baseline: Baseline) -> dict:
    """One exported schema: the learned one, said to be draft 2020-12, with a title."""
    doc = {"$schema": SCHEMA_DIALECT, "title": f"{route}: {endpoint}",
           "description": f"Learned by bridge from {baseline.observations} bodies of "
                          f"{endpoint} on route {route}."}
    doc.update({k: v for k, v in baseline.schema().items() if k not in doc})
    return doc

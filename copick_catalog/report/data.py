"""Everything the campaign report shows, gathered from a :class:`~copick_catalog.Catalog` as one dict of plain data.

Kept apart from the rendering so that the numbers have one source: every figure comes from a catalog
query (aggregates in SQL, one statement each, most of them read from the summary tables the catalog keeps:
``pick_totals``, ``pick_day_totals``, ``run_objects``, ``object_totals``, ``tomogram_totals``; the heat map
per user is the one that groups ``picks`` itself), the page only arranges them, and tests can compare the
page with the same dict. The dict is JSON-able (it is embedded in the page for its scripts) and holds
names exactly as the files spell them; escaping them is the renderer's job.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..catalog.status import INDEX_RUN_FIELDS

if TYPE_CHECKING:
    from ..catalog import Catalog

#: Bumped when the shape of the dict changes (the page's scripts read it).
DATA_VERSION = 1
DAY_S = 86400.0
WEEK_S = 7 * DAY_S


def gather(cat: Catalog, *, now: float | None = None, max_errors: int = 1000, index_runs: int = 10) -> dict[str, Any]:
    """The report's data for the project of ``cat``: summary, coverage matrix, users, timeline, errors, runs.

    ``now`` fixes the report's time (what "this week" means); ``max_errors`` caps the error rows
    listed (the total is always given); ``index_runs`` is how many recent index runs are shown.
    """
    import sqlalchemy as sa

    from ..catalog.schema import PickableObject, Run

    now = time.time() if now is None else now
    status = cat.status()
    counts = status["counts"]
    configured = sorted(
        cat.find(PickableObject), key=lambda o: (o.label is None, o.label if o.label is not None else 0, o.name)
    )
    with cat.engine.connect() as conn:  # names, not ORM rows: at 100,000 runs the rows cost 10x their names
        runs = sorted(conn.scalars(sa.select(Run.name).where(Run.project_id == cat.project_id)))
    per_run_object = cat.pick_summary(by=("run_name", "object_name"))  # from run_objects (see pick_summary)
    per_run_object_user = cat.pick_summary(by=("run_name", "object_name", "user_id"))
    per_user = cat.pick_summary(by=("user_id",))
    users = sorted(r["user_id"] for r in per_user)
    objects = [o.name for o in configured]
    objects += sorted({r["object_name"] for r in per_run_object} - set(objects))  # picked but not configured
    run_ix = {name: i for i, name in enumerate(runs)}
    obj_ix = {name: i for i, name in enumerate(objects)}
    user_ix = {name: i for i, name in enumerate(users)}
    coverage = cat.object_coverage()
    errors = cat.errors()
    week = _merge(cat.pick_timeline(by=("user_id", "object_name"), since=now - WEEK_S), ("user_id", "object_name"))
    return {
        "version": DATA_VERSION,
        "generated_at": now,
        "project": cat.config.name,
        "config": str(cat.config_path),
        "db": _shown_db(cat),
        "summary": {
            "runs": counts["runs"],
            "tomograms": counts["tomograms"],
            "pick_files": counts["picks"],
            "points": counts["points"],
            "users": len(users),
            "objects": len(configured),
            "meshes": counts["meshes"],
            "segmentations": counts["segmentations"],
            "last_indexed_at": status["last_indexed_at"],
            "last_index": status["last_index"],
            "index_running": status["index_running"],
            "daemon_running": bool(status["daemon"].get("running")),
            "open_errors": status["open_errors"],
            "open_warnings": status["open_warnings"],
        },
        "objects": [
            {"name": o.name, "color": list(o.color) if o.color else None, "configured": True} for o in configured
        ]
        + [{"name": n, "color": None, "configured": False} for n in objects[len(configured) :]],
        "heatmap": {
            "runs": runs,
            "objects": objects,
            "users": users,
            # sparse [run, object, pick files, points] (and [user, run, object, ...]): zeros are implied
            "all": [
                [run_ix[r["run_name"]], obj_ix[r["object_name"]], r["picks"], _int(r["points"])] for r in per_run_object
            ],
            "user_cells": [
                [user_ix[r["user_id"]], run_ix[r["run_name"]], obj_ix[r["object_name"]], r["picks"], _int(r["points"])]
                for r in per_run_object_user
            ],
        },
        "coverage": coverage,
        "lacking": {o.name: cat.runs_lacking(o.name) for o in configured},
        "users": [{"user_id": r["user_id"], "picks": r["picks"], "points": _int(r["points"])} for r in per_user],
        "user_objects": _plain(cat.pick_summary(by=("user_id", "object_name"))),
        "user_sessions": _plain(cat.pick_summary(by=("user_id", "session_id"))),
        "timeline": {"bucket_s": DAY_S, "rows": cat.pick_timeline(by=("user_id",))},
        "week": {"since": now - WEEK_S, "rows": week},
        "tomogram_types": [
            {"voxel_size": float(r["voxel_size"]), "tomo_type": r["tomo_type"], "runs": int(r["runs"])}
            for r in cat.tomogram_types()
        ],
        "errors": {
            "total": len(errors),
            "rows": [
                {
                    "severity": e.severity,
                    "layer": e.layer,
                    "path": e.path,
                    "kind": e.kind,
                    "message": e.message,
                    "first_seen": e.first_seen,
                    "last_seen": e.last_seen,
                }
                for e in errors[:max_errors]
            ],
        },
        "index_runs": [{k: getattr(r, k) for k in INDEX_RUN_FIELDS} for r in cat.last_runs(index_runs)],
    }


def _shown_db(cat: Catalog) -> str:
    """The catalog's URL as people give it (a read-only SQLite engine's ``file:...?mode=ro`` URI shown as its file)."""
    url = cat.engine.url
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database.startswith("file:"):
        return f"sqlite:///{unquote(database[len('file:') :])}"
    return cat.db_url


def _int(value: Any) -> int:
    """SUM() comes back as Decimal on PostgreSQL and None over no rows; the page wants plain ints."""
    return int(value or 0)


def _plain(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "picks": int(r["picks"]), "points": _int(r["points"])} for r in rows]


def _merge(rows: Iterable[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Timeline rows summed over their buckets: one row per ``keys`` (the week's work per user and object)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = tuple(r[k] for k in keys)
        acc = out.setdefault(key, {**{k: r[k] for k in keys}, "picks": 0, "points": 0})
        acc["picks"] += r["picks"]
        acc["points"] += r["points"]
    return [out[k] for k in sorted(out)]


__all__ = ["DATA_VERSION", "gather"]

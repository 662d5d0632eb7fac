"""Benchmark copick URIs answered in SQL (``Catalog.resolve``) on a generated project of many runs.

Prints one JSON document: for each URI, the rows it selects and the median (p50) and p95 time of
``cat.resolve(kind, uri)`` returning ORM rows, and of the same query's SQL alone (its rows counted in
the database, nothing built in Python), so the cost of parsing and translating the URI plus running it
is seen apart from the cost of building one ORM object per row (~5 µs each). ``--copick`` adds the
time copick's own ``resolve_copick_objects`` takes for one URI on ``CopickRootFSSpec`` (it walks every
run directory; minutes at 5,000 runs). Examples::

    python scripts/bench_uri.py --runs 5000
    python scripts/bench_uri.py --runs 5000 --backend postgres
    python scripts/bench_uri.py --runs 500 --copick

The project is ``copick_catalog.sample`` with alice picking in two sessions (as ``scripts/bench.py``):
12 pick files a run, tomograms, segmentations and meshes on the first three runs. It is removed
afterwards unless ``--workdir DIR`` (kept) is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import BENCH_USERS, age, pg_database, run_index_child  # type: ignore[import-not-found]  # noqa: E402

#: (kind, URI, run): from one exact file name to patterns over every run, and one run out of all.
URIS: list[tuple[str, str, str | None]] = [
    ("picks", "ribosome:bob/2", "TS_2500"),
    ("picks", "re:prot.*:b.b/.*", "TS_2500"),
    ("picks", "ribosome:alice/1", None),
    ("picks", "ribosome:b*b/[0-9]", None),
    ("picks", "re:ribo.*:pyt.m/0", None),
    ("picks", "re:prot.*:(bob|pytom)/.*", None),
    ("picks", "ribosome:alice/*", None),
    ("picks", "*:nobody/*", None),
    ("segmentations", "membrane:*/*@10", None),
    ("segmentations", "*:*/*@10?multilabel=true", None),
    ("meshes", "membrane:*/*", None),
    ("tomograms", "wbp@10", None),
    ("tomograms", "re:(wbp|denoised)@1.*", None),
    ("features", "wbp@10:sobel", None),
]


def timed(fn: Callable[[], Any], reps: int) -> tuple[dict[str, float], Any]:
    """p50/p95 milliseconds of ``fn``, the previous answer freed before each call (as in a fresh script)."""
    times, result = [], None
    for _ in range(reps):
        result = None
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(p95, 2)}, result


def sql_only(cat: Any, kind: str, uri: str, run: str | None) -> int:
    """The URI's query, counted by the database: parse, translate and run it, no ORM rows."""
    import sqlalchemy as sa

    from copick_catalog.catalog.schema import Feature, Filament, Mesh, Pick, Run, Segmentation, Tomogram, VoxelSpacing
    from copick_catalog.catalog.uris import copick_kind

    ck = copick_kind(kind)
    if ck in ("tomogram", "feature"):
        model: Any = Tomogram if ck == "tomogram" else Feature
        stmt = sa.select(model.id).join(VoxelSpacing, model.voxel_spacing_id == VoxelSpacing.id).join(Run)
        stmt = stmt.where(model.project_id == cat.project_id)
        if run is not None:
            stmt = stmt.where(Run.name == run)
    else:
        model = {"picks": Pick, "mesh": Mesh, "filaments": Filament, "segmentation": Segmentation}[ck]
        stmt = sa.select(model.id).where(model.project_id == cat.project_id)
        if run is not None:
            stmt = stmt.where(model.run_name == run)
    stmt = cat._uri(stmt, ck, uri)
    with cat.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one())


def bench(config: Path, db: str, reps: int) -> list[dict[str, Any]]:
    from copick_catalog import Catalog

    out = []
    with Catalog.open(config, db=db) as cat:
        for kind, uri, run in URIS:
            cat.resolve(kind, uri, run=run)  # warm: the database's page cache, as in any running session
            rows_t, rows = timed(lambda k=kind, u=uri, r=run: cat.resolve(k, u, run=r), reps)
            sql_t, count = timed(lambda k=kind, u=uri, r=run: sql_only(cat, k, u, r), reps)
            assert count == len(rows), (kind, uri, count, len(rows))
            out.append(
                {
                    "kind": kind,
                    "uri": uri,
                    "run": run,
                    "rows": len(rows),
                    "resolve": rows_t,
                    "sql_only": sql_t,
                    "us_per_row": round(rows_t["p50_ms"] * 1000 / len(rows), 2) if rows else None,
                }
            )
    return out


def bench_copick(config: Path, uri: str) -> dict[str, Any]:
    """copick's own resolve_copick_objects on CopickRootFSSpec, once (it lists every run's directories)."""
    import copick
    from copick.util.uri import resolve_copick_objects

    t = time.perf_counter()
    root = copick.from_file(str(config))
    found = resolve_copick_objects(uri, root, "picks")
    return {"uri": uri, "rows": len(found), "seconds": round(time.perf_counter() - t, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("COPICK_CATALOG_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--copick", action="store_true", help="also time copick's resolve_copick_objects once")
    ap.add_argument("--workdir", type=Path, default=None, help="where the project and catalog go (kept)")
    args = ap.parse_args()
    from copick_catalog.sample import make_sample_project

    with contextlib.ExitStack() as stack:
        work = args.workdir
        if work is None:
            work = Path(tempfile.mkdtemp(prefix="cc-bench-uri-"))
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        config = work / "project" / "copick_config.json"
        if not config.exists():
            make_sample_project(work / "project", runs=args.runs, tomogram_runs=3, size=32, users=BENCH_USERS)
            age(work / "project")
        if args.backend == "sqlite":
            db = f"sqlite:///{work / 'catalog.sqlite'}"
        else:
            db = stack.enter_context(pg_database(args.pg_url))
        index = run_index_child(config, db)
        if args.backend == "postgres":  # the statistics autovacuum gathers within a minute of a bulk load
            import sqlalchemy as sa

            engine = sa.create_engine(db, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
            engine.dispose()
        result: dict[str, Any] = {
            "runs": args.runs,
            "backend": args.backend,
            "machine": {"cpus": os.cpu_count()},
            "index_s": round(index["seconds"], 1),
            "uris": bench(config, db, args.reps),
        }
        if args.copick:
            result["copick"] = bench_copick(config, "ribosome:alice/1")
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

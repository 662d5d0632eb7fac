"""The floors the indexer is measured against: what the same work costs with nothing but the essentials.

- **listing floor**: ``os.scandir`` + ``stat`` of every entry of both roots, nothing else (the least a
  no-op reindex must do to learn that nothing changed);
- **index floor**: every pick file read once and decoded with msgspec into typed structs (the parser
  the indexer uses), then all their points inserted into a fresh SQLite file holding the catalog's
  ``points`` table, in one transaction, with ``executemany`` of plain tuples (the same driver).

Both run in one process on one core, as the simplest program doing the job would. Used by
``scripts/bench.py``, or alone: ``python scripts/bench_floor.py PROJECT_DIR``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _walk(top: str) -> int:
    n = 0
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                e.stat(follow_symlinks=False)
                n += 1
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return n


def listing_floor(project: Path, reps: int = 3) -> dict[str, Any]:
    """The best of ``reps`` scandir + stat walks of the static and overlay roots."""
    times, entries = [], 0
    for _ in range(reps):
        t = time.perf_counter()
        entries = _walk(str(project / "static")) + _walk(str(project / "overlay"))
        times.append(time.perf_counter() - t)
    return {"seconds": round(min(times), 3), "entries": entries}


class _Loc(msgspec.Struct, gc=False):
    x: float
    y: float
    z: float


class _Pt(msgspec.Struct, gc=False):
    location: _Loc
    transformation_: list[list[float]] | None = None
    instance_id: int = 0
    score: float = 1.0


class _File(msgspec.Struct):
    pickable_object_name: str
    user_id: str
    session_id: str
    points: list[_Pt] | None = None


def _pick_files(project: Path) -> list[str]:
    out = []
    for layer in ("static", "overlay"):
        runs = project / layer / "ExperimentRuns"
        if not runs.is_dir():
            continue
        with os.scandir(runs) as it:
            for run in it:
                picks = os.path.join(run.path, "Picks")
                if os.path.isdir(picks):
                    out.extend(os.path.join(picks, f) for f in os.listdir(picks) if f.endswith(".json"))
    return out


def index_floor(project: Path) -> dict[str, Any]:
    """Read + decode every pick file once, then insert all points in one transaction."""
    from copick_catalog.catalog.schema import Point

    files = _pick_files(project)
    decoder = msgspec.json.Decoder(_File)
    t = time.perf_counter()
    rows: list[tuple[Any, ...]] = []
    nbytes = 0
    for pid, path in enumerate(files, 1):
        with open(path, "rb") as fh:
            data = fh.read()
        nbytes += len(data)
        doc = decoder.decode(data)
        for i, p in enumerate(doc.points or ()):
            rows.append((pid, i, p.location.x, p.location.y, p.location.z, p.instance_id, p.score, None))
    read_parse = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="cc-floor-") as tmp:
        from sqlalchemy.dialects import sqlite
        from sqlalchemy.schema import CreateTable

        db = sqlite3.connect(os.path.join(tmp, "floor.sqlite"), isolation_level=None)
        db.execute("PRAGMA journal_mode = wal")
        db.execute("PRAGMA synchronous = NORMAL")
        # the catalog's DDL for points; its foreign key is not checked (SQLite's default), as the floor has no picks
        db.execute(str(CreateTable(Point.__table__).compile(dialect=sqlite.dialect())))
        t = time.perf_counter()
        db.execute("BEGIN")
        db.executemany("INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        insert = time.perf_counter() - t
        db.close()
    return {
        "seconds": round(read_parse + insert, 2),
        "read_parse_s": round(read_parse, 2),
        "insert_s": round(insert, 2),
        "pick_files": len(files),
        "points": len(rows),
        "json_mb": round(nbytes / 1e6),
    }


if __name__ == "__main__":
    where = Path(sys.argv[1])
    print(json.dumps({"listing_floor": listing_floor(where), "index_floor": index_floor(where)}, indent=2))

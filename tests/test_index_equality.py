"""The fast paths of a full index build the same catalog as the plain one, row for row.

A full index of a big project parses pick files in worker processes and inserts their points from
packed blocks; an incremental one reads in-process. Both must produce identical tables: every
column of every row (ids aside, which differ between databases), every point, the packed copies, the
run summaries and the error rows for bad files. The reference is an index with one process; the
pool is forced on for a small project by lowering its threshold, with tasks small enough that files
of one batch land in several workers.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.index import pool
from copick_catalog.sample import SampleSummary

from .conftest import age_tree, fresh_pg_database, packed_points_match, run_object_counts

#: Columns that name a row's identity in one database or when it was written, not what it holds.
VOLATILE = {"id", "indexed_at", "last_seen", "created_at", "first_seen", "last_indexed_at", "started_at"}
#: Foreign keys are ids: compared through what they point at (a pick's path), not their values.
ID_COLUMNS = {"project_id", "run_id", "voxel_spacing_id", "tomogram_id", "pick_id", "index_run_id"}
SKIP_TABLES = {"index_runs", "alembic_version", "catalog_meta", "locks", "projects"}


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table as sorted rows of the columns that describe content; pick ids become pick paths."""
    engine = sa.create_engine(url)
    out: dict[str, list[tuple[Any, ...]]] = {}
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            paths = dict(conn.execute(sa.text("SELECT id, layer || ':' || path FROM picks")).all())
            for name, table in sorted(meta.tables.items()):
                if name in SKIP_TABLES:
                    continue
                cols = [c for c in table.c if c.name not in VOLATILE and c.name not in ID_COLUMNS]
                key = [table.c.pick_id] if "pick_id" in table.c else []
                rows = []
                for row in conn.execute(sa.select(*key, *cols)):
                    values = list(row)
                    if key:
                        values[0] = paths[values[0]]
                    rows.append(
                        tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for v in values)
                    )
                out[name] = sorted(rows, key=repr)
    finally:
        engine.dispose()
    return out


@pytest.fixture
def reference_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty catalog on the same backend as ``db_url``: where the plain index goes."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'reference.sqlite'}"
        return
    with fresh_pg_database() as url:
        yield url


def _add_bad_files(project: Path) -> list[str]:
    """Pick files that must become error rows the same way in both paths."""
    picks = project / "overlay" / "ExperimentRuns"
    run = sorted(p for p in picks.iterdir() if p.is_dir())[0] / "Picks"
    bad = {
        "zoe_1_ribosome.json": b'{"pickable_object_name": "ribosome", "user_id": "zoe", "session_id": "1", "points": [',
        "zoe_2_ribosome.json": json.dumps(
            {
                "pickable_object_name": "ribosome",
                "user_id": "zoe",
                "session_id": "2",
                "points": [{"location": {"x": 1, "y": "a", "z": 3}}],
            }
        ).encode(),
        "zoe_3_ribosome.json": b'{"pickable_object_name": "ribosome", "user_id": "zoe", "session_id": "3", '
        b'"points": [{"location": {"x": 1, "y": 2, "z": 3}, "transformation_": '
        b"[[2,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}",  # valid, not the identity: kept as JSON
    }
    for name, data in bad.items():
        (run / name).write_bytes(data)
    return sorted(bad)


def test_pooled_full_index_equals_the_in_process_one(
    sample: SampleSummary, db_url: str, reference_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = sample.config.parent
    _add_bad_files(project)
    age_tree(project)
    reference = reference_url

    with Catalog.open(sample.config, db=reference) as cat:
        monkeypatch.setenv(pool.WORKERS_ENV, "1")
        plain = cat.index()
    monkeypatch.setattr(pool, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(pool, "TASK_FILES", 7)  # several tasks per batch and layer, spread over the workers
    monkeypatch.setenv(pool.WORKERS_ENV, "2")
    forked: list[int] = []
    real_init = pool.ReadPool.__init__

    def spy(self: pool.ReadPool, *args: Any) -> None:
        real_init(self, *args)
        forked.append(self.workers)

    monkeypatch.setattr(pool.ReadPool, "__init__", spy)
    with Catalog.open(sample.config, db=db_url) as cat:
        pooled = cat.index()
    assert forked == [2], "the full index did not use the worker pool"
    assert (pooled.files_read, pooled.added, pooled.errors) == (plain.files_read, plain.added, plain.errors)
    assert plain.errors == 2

    want, got = _dump(reference), _dump(db_url)
    assert sorted(want) == sorted(got)
    for table in want:
        assert got[table] == want[table], f"table {table} differs between the pooled and the plain index"
    assert len(got["points"]) == sample.points + 1
    engine = sa.create_engine(db_url)
    try:
        assert packed_points_match(engine) == sample.pick_files + 1
        run_object_counts(engine)
    finally:
        engine.dispose()


#: Set by the test below: the first worker task to see this path missing creates it and kills its worker.
DIE_MARK = "CC_TEST_KILL_WORKER_MARK"


def dying_task(layer: str, items: list[Any]) -> list[Any]:
    """A worker task that kills its own process once (module level: tasks are pickled by name)."""
    mark = Path(os.environ[DIE_MARK])
    if not mark.exists():
        mark.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return REAL_TASK(layer, items)


REAL_TASK = pool._read_task


def test_a_dead_worker_costs_only_speed(sample: SampleSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed mid-run (OOM killer, a stray kill): its files are read in-process, nothing is lost."""
    monkeypatch.setattr(pool, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(pool, "TASK_FILES", 5)
    monkeypatch.setenv(pool.WORKERS_ENV, "2")
    killed = tmp_path / "killed"
    monkeypatch.setenv(DIE_MARK, str(killed))
    monkeypatch.setattr(pool, "_read_task", dying_task)
    with Catalog.open(sample.config, db=f"sqlite:///{tmp_path / 'c.sqlite'}") as cat:
        report = cat.index()
        assert killed.exists(), "no worker ran a task"
        assert report.errors == 0
        picks = cat.picks()
        assert len(picks) == sample.pick_files
        assert sum(p.n_points for p in picks) == sample.points


def test_sqlite_and_postgresql_build_the_same_catalog(sample: SampleSummary, pg_url: str, tmp_path: Path) -> None:
    """The two backends take different bulk paths (executemany of tuples under reserved ids on SQLite; COPY,
    binary for points, through a temporary table for new rows on PostgreSQL): the catalogs they build of one
    project, bad files and a non-identity transform included, are the same row for row."""
    project = sample.config.parent
    _add_bad_files(project)
    age_tree(project)
    lite = f"sqlite:///{tmp_path / 'lite.sqlite'}"
    for url in (lite, pg_url):
        with Catalog.open(sample.config, db=url) as cat:
            report = cat.index()
            assert report.errors == 2
    want, got = _dump(lite), _dump(pg_url)
    assert sorted(want) == sorted(got)
    for table in want:
        assert got[table] == want[table], f"table {table} differs between SQLite and PostgreSQL"
    transforms = [row for row in got["points"] if row[-1] is not None]
    assert len(transforms) == 1 and json.loads(transforms[0][-1])[0] == [2, 0, 0, 0]


def test_shared_listing_equals_one_walk(sample: SampleSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big local root is listed in shares of run directories, one per core, the others in forked workers:
    the shares are disjoint, together they are the walk, and the merged scan is the one-process scan,
    before a first index and on a reindex (bad files and names included)."""
    from copick_catalog.index import fanout
    from copick_catalog.index.roots import ListingStats
    from copick_catalog.index.scan import Lister
    from copick_catalog.index.snapshot import load_snapshot

    project = sample.config.parent
    _add_bad_files(project)
    runs = project / "overlay" / "ExperimentRuns"
    (runs / "TS_0002" / "Picks" / "x_y_z_w_q.json").write_text("{}")  # a malformed name
    (runs / os.fsdecode(b"TS_\xff")).mkdir()  # a run name that is not UTF-8
    age_tree(project)
    monkeypatch.setattr(fanout, "PARALLEL_MIN_RUNS", 1)
    monkeypatch.setenv(pool.WORKERS_ENV, "3")

    with Catalog.open(sample.config, db=f"sqlite:///{tmp_path / 'c.sqlite'}") as cat:
        for when in ("first index", "reindex"):
            snapshot = load_snapshot(cat.engine, cat.project_id, [("static", ""), ("overlay", "")])
            for layer, root in cat.roots.items():
                assert fanout.shares_for(root, "") == 3
                whole = [e.path for e in root.walk(ListingStats())]
                parts = [[e.path for e in root.walk_share(ListingStats(), "", (i, 3))] for i in range(3)]
                assert sorted(p for part in parts for p in part) == sorted(whole), (when, layer)
                assert all(parts), "every share holds some runs"

                one = Lister(layer, root.url_of, snapshot, cat.config.object_names)
                one.feed(root.walk(ListingStats()))
                shared = Lister(layer, root.url_of, snapshot, cat.config.object_names)
                with fanout.SharedListing([(root, layer, "")], snapshot, cat.config.object_names) as listing:
                    assert listing.covers(layer, "")
                    listing.feed(root, "", shared, ListingStats())
                assert (shared.listed, shared.found_runs_dir) == (one.listed, one.found_runs_dir)
                for name in ("seen", "unchanged", "runs", "vss", "problems"):
                    assert getattr(shared.scan, name) == getattr(one.scan, name), (when, layer, name)
                assert sorted(shared.scan.unknown) == sorted(one.scan.unknown)
            report = cat.index()
            assert report.errors == 4 if when == "first index" else report.nothing_changed


def dying_share(*task: Any) -> Any:
    """A listing worker that dies (module level: tasks are pickled by name)."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_dead_listing_worker_costs_only_speed(
    sample: SampleSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from copick_catalog.index import fanout

    monkeypatch.setattr(fanout, "PARALLEL_MIN_RUNS", 1)
    monkeypatch.setattr(fanout, "_list_share", dying_share)
    monkeypatch.setenv(pool.WORKERS_ENV, "2")
    with Catalog.open(sample.config, db=f"sqlite:///{tmp_path / 'c.sqlite'}") as cat:
        report = cat.index()
        assert report.errors == 0 and report.added == report.files_read
        assert len(cat.picks()) == sample.pick_files
        assert "a listing worker process died" in caplog.text
        assert cat.index().nothing_changed

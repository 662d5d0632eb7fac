"""The indexer on real projects and real databases (SQLite file and PostgreSQL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.catalog.schema import (
    IndexErrorRow,
    IndexRun,
    Pick,
    Point,
    Run,
    Segmentation,
    Tomogram,
    VoxelSpacing,
)
from copick_catalog.sample import SampleSummary
from tests.conftest import packed_points_match, run_object_counts

TABLES = (
    "runs",
    "voxel_spacings",
    "tomograms",
    "features",
    "picks",
    "meshes",
    "segmentations",
    "filaments",
    "density_maps",
)


def snapshot(cat: Catalog) -> dict[str, set[tuple]]:
    """The catalog's content, independent of row ids and racy fingerprint marks."""
    out: dict[str, set[tuple]] = {}
    with cat.engine.connect() as conn:
        out["runs"] = set(conn.execute(sa.text("SELECT name, in_static, in_overlay FROM runs")).all())
        out["voxel_spacings"] = set(
            conn.execute(
                sa.text(
                    "SELECT r.name, v.voxel_size, v.in_static, v.in_overlay FROM voxel_spacings v JOIN runs r "
                    "ON r.id = v.run_id"
                )
            ).all()
        )
        for t in TABLES[2:]:
            rows = conn.execute(sa.text(f"SELECT layer, path, fingerprint FROM {t}")).all()
            out[t] = {(layer, path, fp.split("|")[0]) for layer, path, fp in rows}
        out["points"] = set(
            conn.execute(
                sa.text(
                    "SELECT p.path, pt.idx, pt.x, pt.y, pt.z, pt.instance_id, pt.score FROM points pt "
                    "JOIN picks p ON p.id = pt.pick_id"
                )
            ).all()
        )
        out["n_points"] = set(conn.execute(sa.text("SELECT path, n_points FROM picks")).all())
        out["run_objects"] = run_object_counts(cat.engine)
        packed_points_match(cat.engine)
    return out


def pick_path(sample: SampleSummary, run: str = "TS_0001", name: str = "alice_1_ribosome.json") -> Path:
    return sample.config.parent / "overlay" / "ExperimentRuns" / run / "Picks" / name


def test_full_index_records_everything(sample: SampleSummary, db_url: str) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        report = cat.index()
        assert report.errors == 0
        assert report.added == report.files_read
        with cat.session() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Run)) == sample.runs
            assert s.scalar(sa.select(sa.func.count()).select_from(Pick)) == sample.pick_files
            assert s.scalar(sa.select(sa.func.sum(Pick.n_points))) == sample.points
            assert s.scalar(sa.select(sa.func.count()).select_from(Point)) == sample.points
            # every run has its static voxel spacing; tomograms only on the first runs
            assert s.scalar(sa.select(sa.func.count()).select_from(VoxelSpacing)) == sample.runs
            tomos = s.scalars(sa.select(Tomogram).order_by(Tomogram.path)).all()
            assert {t.tomo_type for t in tomos} == {"wbp", "denoised"}
            wbp = next(t for t in tomos if t.tomo_type == "wbp")
            assert wbp.shape == [32, 32, 32] and wbp.dtype == "float32" and wbp.n_levels == 3
            assert wbp.layer == "static" and wbp.zarr_format == 2
            segs = s.scalars(sa.select(Segmentation)).all()
            assert {(g.name, g.is_multilabel) for g in segs} == {("membrane", False), ("prediction", True)}
            # tool picks live in static, user picks in the overlay
            layers = dict(s.execute(sa.select(Pick.session_id == "0", Pick.layer).distinct()).all())
            assert layers == {True: "static", False: "overlay"}


def test_noop_reindex_reads_nothing_and_writes_nothing(sample: SampleSummary, db_url: str) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        first = cat.index()
        before = snapshot(cat)
        report = cat.index()
        assert report.files_read == 0
        assert report.nothing_changed
        assert report.unchanged == first.added  # every entity seen again, none re-read
        assert report.added == report.changed == report.removed == 0
        assert snapshot(cat) == before


def test_touching_one_pick_rereads_only_it(sample: SampleSummary, db_url: str) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        p = pick_path(sample)
        data = json.loads(p.read_text())
        data["points"] = data["points"][:3]
        p.write_text(json.dumps(data, indent=4))
        old = time.time() - 30
        os.utime(p, (old, old))  # not racy: a settled edit
        report = cat.index()
        assert report.files_read == 1
        assert report.changed == 1 and report.added == 0 and report.removed == 0
        with cat.session() as s:
            row = s.scalars(sa.select(Pick).where(Pick.path.endswith("TS_0001/Picks/alice_1_ribosome.json"))).one()
            assert row.n_points == 3
            assert len(row.points) == 3
            assert row.points[0].x == data["points"][0]["location"]["x"]


def test_deleting_a_pick_removes_its_row_and_points(sample: SampleSummary, db_url: str) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        p = pick_path(sample)
        p.unlink()
        report = cat.index()
        assert report.removed == 1 and report.files_read == 0
        with cat.session() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Pick)) == sample.pick_files - 1
            assert (
                s.scalar(
                    sa.select(sa.func.count())
                    .select_from(Pick)
                    .where(Pick.path.endswith("TS_0001/Picks/alice_1_ribosome.json"))
                )
                == 0
            )
            orphan = s.scalar(sa.select(sa.func.count()).select_from(Point).outerjoin(Pick).where(Pick.id.is_(None)))
            assert orphan == 0


def test_deleting_a_run_removes_it(sample: SampleSummary, db_url: str) -> None:
    import shutil

    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        for layer in ("static", "overlay"):
            shutil.rmtree(sample.config.parent / layer / "ExperimentRuns" / "TS_0012", ignore_errors=True)
        cat.index()
        with cat.session() as s:
            names = set(s.scalars(sa.select(Run.name)))
            assert "TS_0012" not in names and len(names) == sample.runs - 1


def test_corrupted_pick_keeps_previous_row_and_records_error(sample: SampleSummary, db_url: str) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        with cat.session() as s:
            good = s.scalars(sa.select(Pick).where(Pick.path.endswith("TS_0002/Picks/bob_2_ribosome.json"))).one()
            good_n = good.n_points
        p = pick_path(sample, "TS_0002", "bob_2_ribosome.json")
        p.write_text(p.read_text()[:200])  # truncated mid-write
        old = time.time() - 30
        os.utime(p, (old, old))
        report = cat.index()
        assert report.errors == 1
        errs = cat.errors()
        assert len(errs) == 1 and errs[0].path.endswith("bob_2_ribosome.json") and errs[0].kind == "parse"
        assert "bob_2_ribosome.json" in errs[0].message and "not valid JSON" in errs[0].message
        with cat.session() as s:
            row = s.scalars(sa.select(Pick).where(Pick.path == good.path)).one()
            assert row.n_points == good_n and row.stale  # previous good row kept, marked stale
            assert s.scalar(sa.select(sa.func.count()).select_from(Pick)) == sample.pick_files
        # the error survives a no-op reindex and clears once the file is fixed
        cat.index()
        assert len(cat.errors()) == 1
        p.unlink()
        cat.index()
        assert cat.errors() == []


def test_malformed_names_are_reported_not_fatal(sample: SampleSummary, db_url: str) -> None:
    run = sample.config.parent / "overlay" / "ExperimentRuns" / "TS_0003"
    (run / "Picks" / "foo.json").write_text("{}")
    (run / "Picks" / "x_y_z_w_q.json").write_text("{}")
    bad_vs = sample.config.parent / "static" / "ExperimentRuns" / "TS_0003" / "VoxelSpacingX"
    bad_vs.mkdir()
    (bad_vs / "wbp.zarr").mkdir()
    # a user id with an underscore (possible in copick via root.user_id = ...) resolves via the object name
    src = pick_path(sample, "TS_0003", "alice_1_ribosome.json")
    (run / "Picks" / "my_user_5_ribosome.json").write_text(src.read_text())
    settled = time.time() - 30  # not racily clean: a reindex may trust their fingerprints
    for f in (run / "Picks").iterdir():
        os.utime(f, (settled, settled))
    with Catalog.open(sample.config, db=db_url) as cat:
        report = cat.index()
        errs = {Path(e.path).name: e for e in cat.errors()}
        assert errs["foo.json"].severity == "error" and "<user>_<session>_<object>" in errs["foo.json"].message
        assert errs["x_y_z_w_q.json"].severity == "error"
        assert errs["VoxelSpacingX"].severity == "error" and "VoxelSpacing10.000" in errs["VoxelSpacingX"].message
        assert errs["my_user_5_ribosome.json"].severity == "warning"
        assert report.errors == 3 and report.warnings == 1
        # a reindex confirms unchanged files without parsing their names, except where a name needed a
        # warning: that one is parsed again, so its warning (and every error) stays as it was
        again = cat.index()
        assert again.files_read == 0 and again.nothing_changed
        assert again.errors == 3 and again.warnings == 1
        assert {Path(e.path).name: (e.severity, e.message) for e in cat.errors()} == {
            name: (e.severity, e.message) for name, e in errs.items()
        }
        with cat.session() as s:
            odd = s.scalars(sa.select(Pick).where(Pick.path.endswith("my_user_5_ribosome.json"))).one()
            assert (odd.user_id, odd.session_id, odd.object_name) == ("my_user", "5", "ribosome")
            # the rest of the run is intact
            n = s.scalar(sa.select(sa.func.count()).select_from(Pick).join(Run).where(Run.name == "TS_0003"))
            assert n == len(list((run / "Picks").glob("*_*_*.json"))) - 1 + len(
                list((sample.config.parent / "static/ExperimentRuns/TS_0003/Picks").glob("*.json"))
            )


def test_index_runs_are_recorded(sample: SampleSummary, db_url: str) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index(trigger="cron")
        with cat.session() as s:
            run = s.scalars(sa.select(IndexRun)).one()
            assert run.trigger == "cron" and run.status == "ok" and run.added > 0 and run.duration_s >= 0
            assert s.scalar(sa.select(sa.func.count()).select_from(IndexErrorRow)) == 0


def test_index_run_history_is_pruned_but_keeps_each_triggers_last(
    sample: SampleSummary, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon adds a row per burst; the history keeps the newest rows plus the last run of each trigger."""
    from copick_catalog.index import writes

    monkeypatch.setattr(writes, "KEEP_INDEX_RUNS", 10)
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index(trigger="cron")
        with cat.engine.begin() as conn:  # a day of watch bursts after the nightly cron run
            conn.execute(
                sa.insert(IndexRun),
                [
                    {"project_id": cat.project_id, "trigger": "watch", "status": "ok", "started_at": 1e9 + i}
                    for i in range(30)
                ],
            )
        cat.index(trigger="api")
        with cat.session() as s:
            rows = s.execute(sa.select(IndexRun.id, IndexRun.trigger).order_by(IndexRun.id)).all()
    assert [t for _i, t in rows].count("cron") == 1  # the only cron run survives, however old
    assert len(rows) == 11 and rows[-1].trigger == "api"  # the newest 10, plus cron's last
    assert [t for _i, t in rows[1:]] == ["watch"] * 9 + ["api"]


def test_scope_clause_selects_exactly_the_subtree(sample: SampleSummary, db_url: str) -> None:
    """A scope is its path and what lies under it: not a sibling that shares a prefix, not another case."""
    from copick_catalog.catalog.db import is_sqlite
    from copick_catalog.index.snapshot import scope_clause as _scope_clause

    paths = [
        "ExperimentRuns/TS_1",
        "ExperimentRuns/TS_1/Picks/a.json",
        "ExperimentRuns/TS_1/Picks/b_c.json",
        "ExperimentRuns/TS_10/Picks/a.json",
        "ExperimentRuns/TS_1.bak/x.json",
        "ExperimentRuns/TS_1-x",
        "experimentruns/ts_1/Picks/a.json",
        "ExperimentRuns/TS_1%/a.json",
        "ExperimentRuns/TS_1/Picks%/a.json",
        "ExperimentRuns/TS_1/Picks/é.json",
        "ExperimentRuns/TS_2/Picks/a.json",
    ]
    with Catalog.open(sample.config, db=db_url) as cat, cat.engine.begin() as conn:
        conn.execute(
            sa.insert(IndexErrorRow),
            [
                {
                    "project_id": cat.project_id,
                    "layer": layer,
                    "path": p,
                    "kind": "parse",
                    "message": "-",
                    "first_seen": 0.0,
                    "last_seen": 0.0,
                }
                for p in paths
                for layer in ("overlay", "static")
            ],
        )
        for scopes in (
            [("overlay", "ExperimentRuns/TS_1")],
            [("overlay", "ExperimentRuns/TS_1/Picks")],
            [("overlay", "ExperimentRuns/TS_1%")],
            [("static", "ExperimentRuns/TS_1/Picks/a.json")],
            [("overlay", "ExperimentRuns/TS_10"), ("static", "ExperimentRuns/TS_2")],
            [("static", "")],
        ):
            expect = {
                (layer, p)
                for p in paths
                for layer in ("overlay", "static")
                if any(lay == layer and (not pre or p == pre or p.startswith(pre + "/")) for lay, pre in scopes)
            }
            for bytewise in [True, False] if is_sqlite(conn) else [False]:
                got = set(
                    conn.execute(
                        sa.select(IndexErrorRow.layer, IndexErrorRow.path).where(
                            IndexErrorRow.project_id == cat.project_id, _scope_clause(IndexErrorRow, scopes, bytewise)
                        )
                    ).all()
                )
                if bytewise or not is_sqlite(conn):
                    assert got == expect, (scopes, bytewise)
                else:  # SQLite's LIKE ignores ASCII case: the reason the bytewise form exists
                    assert got >= expect


KILL_SCRIPT = """
import sys, os, signal, threading
from copick_catalog import Catalog
from copick_catalog.index import indexer
indexer.BATCH_FILES = 10  # many small commits, so a kill lands between and inside them
cat = Catalog.open(sys.argv[1], db=sys.argv[2])
batches = 0
orig = indexer.Indexer._write_batch
def counting(self, *a, **k):
    global batches
    orig(self, *a, **k)
    batches += 1
    if batches == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
indexer.Indexer._write_batch = counting
cat.index()
"""


@pytest.mark.parametrize("kill_after", [1, 7])
def test_killed_indexer_then_rerun_equals_clean_run(
    sample: SampleSummary, db_url: str, tmp_path: Path, kill_after: int
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(sample.config), db_url, str(kill_after)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Catalog.open(sample.config, db=db_url) as cat:
        with cat.session() as s:
            partial = s.scalar(sa.select(sa.func.count()).select_from(Pick))
            assert 0 < partial < sample.pick_files  # it really died half-way
            assert s.scalars(sa.select(IndexRun.status)).one() == "running"
        cat.index()
        resumed = snapshot(cat)
        with cat.session() as s:
            assert set(s.scalars(sa.select(IndexRun.status))) == {"interrupted", "ok"}
    clean_db = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    with Catalog.open(sample.config, db=clean_db) as clean:
        clean.index()
        assert snapshot(clean) == resumed


def test_cancelled_index_stops_between_batches_then_completes(
    sample: SampleSummary, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cancel`` (what the daemon uses on SIGTERM) stops a run at a batch boundary: whole batches stay,
    the run is recorded as interrupted, and the next run completes the catalog."""
    from copick_catalog.errors import IndexCancelled
    from copick_catalog.index import indexer

    monkeypatch.setattr(indexer, "BATCH_FILES", 20)
    polls = iter(range(1000))
    with Catalog.open(sample.config, db=db_url) as cat:
        with pytest.raises(IndexCancelled):
            cat.index(cancel=lambda: next(polls) >= 6)  # a few batches in
        with cat.session() as s:
            partial = s.scalar(sa.select(sa.func.count()).select_from(Pick))
            assert 0 < partial < sample.pick_files
            rows = sum(s.scalar(sa.select(sa.func.count()).select_from(sa.table(t))) for t in TABLES[2:])
            assert rows % 20 == 0  # whole batches of 20 files only, of whatever kinds
            assert s.scalar(sa.select(sa.func.sum(Pick.n_points))) == s.scalar(
                sa.select(sa.func.count()).select_from(Point)
            )  # every pick row has all its points
            assert s.scalars(sa.select(IndexRun.status)).one() == "interrupted"
        run_object_counts(cat.engine)  # the summary matches what was written
        cat.index()
        resumed = snapshot(cat)
    with Catalog.open(sample.config, db=f"sqlite:///{tmp_path / 'clean.sqlite'}") as clean:
        clean.index()
        assert snapshot(clean) == resumed


def test_missing_static_root_is_a_clear_error(sample: SampleSummary, tmp_path: Path) -> None:
    cfg = json.loads(sample.config.read_text())
    cfg["static_root"] = f"local://{tmp_path / 'nope'}"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(cfg))
    with Catalog.open(bad) as cat:
        from copick_catalog.errors import RootError

        with pytest.raises(RootError, match="nope"):
            cat.index()


def test_bulk_transactions_skip_key_checks_and_nothing_else_does(sample: SampleSummary, tmp_path: Path) -> None:
    """The indexer's batches run with SQLite's foreign-key lookups off; the very next transaction on the
    same pooled connection checks keys and cascades again."""
    from sqlalchemy.pool import StaticPool

    from copick_catalog.catalog.db import create_engine, ensure_schema, write_tx

    engine = create_engine(f"sqlite:///{tmp_path / 'one.sqlite'}", poolclass=StaticPool)  # one connection
    ensure_schema(engine)
    with Catalog.open(sample.config, db=f"sqlite:///{tmp_path / 'one.sqlite'}") as cat:
        cat.index()
    pragma = "PRAGMA foreign_keys"
    with write_tx(engine, bulk=True) as conn:
        assert conn.exec_driver_sql(pragma).scalar() == 0
    with write_tx(engine) as conn:
        assert conn.exec_driver_sql(pragma).scalar() == 1
        pick_id = conn.execute(sa.select(Pick.id).where(Pick.n_points > 0).limit(1)).scalar_one()
        conn.execute(sa.delete(Pick).where(Pick.id == pick_id))
        assert conn.execute(sa.select(sa.func.count()).select_from(Point).where(Point.pick_id == pick_id)).scalar() == 0
        with pytest.raises(sa.exc.IntegrityError):  # a point of no pick is refused again
            conn.execute(sa.insert(Point).values(pick_id=pick_id, idx=0, x=0, y=0, z=0, instance_id=0, score=1))
    with engine.connect() as conn:  # a plain read transaction checks keys too
        assert conn.exec_driver_sql(pragma).scalar() == 1
    engine.dispose()


def test_fresh_rows_leave_a_path_another_writer_took(sample: SampleSummary, db_url: str) -> None:
    """insert_fresh (the full index's insert) returns what it inserted; a path catalogued by another writer
    after the snapshot stays that writer's; a row clashing with another file's key refuses the batch."""
    from copick_catalog.catalog.db import write_tx
    from copick_catalog.catalog.schema import table_of
    from copick_catalog.index.writes import insert_fresh

    picks = table_of(Pick)
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        t0 = time.time()
        with cat.engine.connect() as conn:
            template = dict(conn.execute(sa.select(picks).where(picks.c.n_points > 0).limit(1)).mappings().one())
        del template["id"]
        theirs = {**template, "path": template["path"] + ".theirs.json", "session_id": "901", "indexed_at": t0 + 5}
        with write_tx(cat.engine) as conn:  # the other writer, after our snapshot
            conn.execute(sa.insert(picks).values(**theirs))
        ours = [
            {**template, "path": theirs["path"], "session_id": "901", "n_points": 1, "indexed_at": t0},
            {**template, "path": template["path"] + ".new.json", "session_id": "902", "indexed_at": t0},
        ]
        with write_tx(cat.engine, bulk=True) as conn:
            written = insert_fresh(conn, picks, ours, picks.c.indexed_at < t0)
        assert [(layer, path) for _id, layer, path in written] == [(template["layer"], ours[1]["path"])]
        with cat.engine.connect() as conn:
            got = conn.execute(sa.select(picks).where(picks.c.path.in_([r["path"] for r in ours]))).mappings().all()
            by_path = {r["path"]: r for r in got}
            assert by_path[theirs["path"]]["n_points"] == theirs["n_points"]  # left as the other writer wrote it
            assert by_path[theirs["path"]]["indexed_at"] == theirs["indexed_at"]
            assert by_path[ours[1]["path"]]["id"] == written[0][0]
        clash = {**template, "path": template["path"] + ".clash.json", "indexed_at": t0}  # same run/user/session/object
        with pytest.raises(sa.exc.IntegrityError), write_tx(cat.engine, bulk=True) as conn:
            insert_fresh(conn, picks, [clash], picks.c.indexed_at < t0)


def test_a_big_index_refreshes_postgresqls_statistics(
    sample: SampleSummary, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a run that changed many rows the planner knows the tables' sizes (not those of empty tables)."""
    from copick_catalog.index import indexer

    def analyzed(cat: Catalog) -> dict[str, Any]:
        with cat.engine.connect() as conn:
            q = "SELECT relname, last_analyze FROM pg_stat_user_tables WHERE relname IN ('picks', 'points', 'runs')"
            return dict(conn.exec_driver_sql(q).all())

    with Catalog.open(sample.config, db=pg_url) as cat:
        monkeypatch.setattr(indexer, "ANALYZE_AFTER_ROWS", 10**9)
        cat.index(scopes=[("overlay", "ExperimentRuns/TS_0001")])  # a small run: no statistics work
        assert set(analyzed(cat).values()) == {None}
        monkeypatch.setattr(indexer, "ANALYZE_AFTER_ROWS", sample.pick_files // 2)
        cat.index()
        stats = analyzed(cat)
        assert all(stats[t] is not None for t in ("picks", "points", "runs")), stats
        with cat.engine.connect() as conn:  # and the tables the next snapshot reads are vacuumed
            q = "SELECT relname FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL"
            assert {"picks", "runs", "tomograms"} <= set(conn.exec_driver_sql(q).scalars())
        with cat.engine.connect() as conn:
            planned = conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE relname = 'picks'").scalar_one()
        assert planned == sample.pick_files


def test_many_scopes_load_the_same_snapshot_as_a_few(
    sample: SampleSummary, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SCOPES_IN_SQL the snapshot is selected by layer and run and filtered in Python: the same rows."""
    from copick_catalog.index import snapshot as snap

    bad = pick_path(sample, "TS_0003", "foo.json")
    bad.write_text("{}")  # an error row inside one scope
    (pick_path(sample, "TS_0004", "x").parent / "bar.json").write_text("{}")  # and one outside them all
    scopes = [
        ("overlay", "ExperimentRuns/TS_0001"),
        ("overlay", "ExperimentRuns/TS_0002/Picks"),
        ("overlay", "ExperimentRuns/TS_0003/Picks"),
        ("static", "ExperimentRuns/TS_0002/Picks/pytom_0_ribosome.json"),
        ("static", "ExperimentRuns/TS_0001"),
        ("static", "ExperimentRuns/TS_001"),  # a prefix of run names, not a run: covers nothing
        ("overlay", "ExperimentRuns/TS_0005/Segmentations"),
    ]
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()

        def load(threshold: int) -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
            monkeypatch.setattr(snap, "SCOPES_IN_SQL", threshold)
            s = snap.load_snapshot(cat.engine, cat.project_id, scopes)
            return {layer: set(rows) for layer, rows in s.files.items()}, set(s.errors)

        in_sql, in_python = load(100), load(0)
        assert in_python == in_sql
        files, errors = in_sql
        assert errors == {("overlay", "ExperimentRuns/TS_0003/Picks/foo.json")}
        assert "ExperimentRuns/TS_0002/Picks/pytom_0_ribosome.json" in files["static"]
        assert not any(p.startswith("ExperimentRuns/TS_0004") for paths in files.values() for p in paths)

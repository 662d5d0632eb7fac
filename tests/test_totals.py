"""The totals tables stay equal to their sources whoever writes: ``pick_totals`` and ``pick_day_totals`` to
``picks``, ``object_totals`` to ``run_objects``, ``tomogram_totals`` to ``tomograms``.

They are kept by database triggers (migrations 0009 and 0010), so every test here writes through a
different path (the indexer's upserts and deletes, a run's cascade, a config change, the copick object
API, plain SQL, a project deleted, a downgrade and upgrade) and then compares the totals with a GROUP BY
over their source computed here (:func:`tests.conftest.assert_totals_exact`). The helpers that read the
totals must answer exactly as the SQL over ``picks`` they replace: both paths are asked the same questions.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.catalog.db import alembic_config, create_engine
from copick_catalog.sample import SampleSummary, pick_json
from tests.conftest import assert_totals_exact, run_object_counts

TRIGGERS = {
    *(
        f"{t}_after_{ev}"
        for t in ("pick_totals", "pick_day_totals", "object_totals", "tomogram_totals")
        for ev in ("insert", "update", "delete")
    ),
    "tomogram_totals_before_voxel_spacing_delete",
}


def _write_pick(path: Path, obj: str, user: str, session: str, run: str, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pts = np.arange(3 * n, dtype=float).reshape(n, 3)
    path.write_text(pick_json(obj, user, session, run, pts, np.arange(n), np.ones(n)))


def test_triggers_exist_at_head(sample: SampleSummary, db_url: str) -> None:
    """A later migration that rebuilds picks or run_objects on SQLite drops their triggers: it must make them again."""
    Catalog.open(sample.config, db=db_url).close()
    engine = create_engine(db_url)
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            names = set(conn.scalars(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")))
        else:
            names = set(conn.scalars(sa.text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")))
    engine.dispose()
    assert names >= TRIGGERS


def test_totals_follow_the_indexer_runs_and_config(sample: SampleSummary, db_url: str) -> None:
    overlay = sample.config.parent / "overlay" / "ExperimentRuns"
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        first = assert_totals_exact(cat.engine)
        assert len(first["picks"]) >= 12 and len(first["objects"]) == len(cat.config.object_names)

        # a changed file, a vanished one, a new key, a new run: one reindex
        changed = overlay / "TS_0001" / "Picks" / "alice_1_ribosome.json"
        _write_pick(changed, "ribosome", "alice", "1", "TS_0001", 2)
        older = time.time() - 5 * 86400  # same content, saved five days earlier: its day moves
        os.utime(overlay / "TS_0003" / "Picks" / "bob_2_ribosome.json", (older, older))
        (overlay / "TS_0002" / "Picks" / "bob_2_ribosome.json").unlink()
        _write_pick(overlay / "TS_0003" / "Picks" / "dave_7_proteasome.json", "proteasome", "dave", "7", "TS_0003", 5)
        _write_pick(overlay / "TS_0999" / "Picks" / "dave_7_ribosome.json", "ribosome", "dave", "7", "TS_0999", 4)
        report = cat.index()
        assert report.removed >= 1 and report.added >= 2
        totals = assert_totals_exact(cat.engine)
        assert (cat.project_id, "proteasome", "dave", "7", "overlay", 1, 5) in totals["picks"]
        assert [t for t in totals["days"] if t[1] == math.floor(older / 86400) * 86400 and t[3] == "bob"]
        run_object_counts(cat.engine)

        # every file of a key gone: its row goes (no zero rows)
        (overlay / "TS_0003" / "Picks" / "dave_7_proteasome.json").unlink()
        cat.index()
        totals = assert_totals_exact(cat.engine)
        assert not [t for t in totals["picks"] if t[1:3] == ("proteasome", "dave")]

        # a tomogram vanishes; then a run with tomograms goes (its voxel spacing and tomograms by cascade)
        static = sample.config.parent / "static" / "ExperimentRuns"
        shutil.rmtree(static / "TS_0001" / "VoxelSpacing10.000" / "denoised.zarr")
        cat.index()
        totals = assert_totals_exact(cat.engine)
        assert {t[2:] for t in totals["tomograms"]} == {("wbp", 2), ("denoised", 1)}
        assert [(r["tomo_type"], r["runs"]) for r in cat.tomogram_types()] == [("denoised", 1), ("wbp", 2)]

        # a run removed from both roots: its picks and run_objects rows go by cascade
        for layer in ("static", "overlay"):
            for run in ("TS_0002", "TS_0004"):
                shutil.rmtree(sample.config.parent / layer / "ExperimentRuns" / run, ignore_errors=True)
        cat.index()
        assert not {"TS_0002", "TS_0004"} & {r.name for r in cat.runs()}
        assert [(r["tomo_type"], r["runs"]) for r in cat.tomogram_types()] == [("wbp", 1)]
        totals = assert_totals_exact(cat.engine)
        ribosome = next(t for t in totals["objects"] if t[1] == "ribosome")
        assert ribosome[2] == len(cat.runs())

    # the config drops proteasome and adds actin: run_objects rows go and come, the totals with them
    config = json.loads(sample.config.read_text())
    config["pickable_objects"] = [o for o in config["pickable_objects"] if o["name"] != "proteasome"] + [
        {"name": "actin", "is_particle": True, "label": 9}
    ]
    sample.config.write_text(json.dumps(config))
    with Catalog.open(sample.config, db=db_url) as cat:
        totals = assert_totals_exact(cat.engine)
        objects = {t[1]: t for t in totals["objects"]}
        assert "proteasome" not in objects and objects["actin"][2:] == (len(cat.runs()), 0, 0, 0)
        coverage = {r["object_name"]: r for r in cat.object_coverage()}
        assert coverage["actin"]["runs_lacking"] == len(cat.runs()) and "proteasome" not in coverage
        # proteasome picks stay in picks (and in pick_totals) though the config no longer lists it
        assert {r["object_name"] for r in cat.pick_summary(by=("object_name",))} >= {"proteasome"}


def test_totals_follow_plain_sql_and_a_deleted_project(sample: SampleSummary, db_url: str) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        pid = cat.project_id
        engine = cat.engine
        statements = [
            "UPDATE picks SET stale = NOT stale",  # no counted column: nothing moves
            # days: files spread over two weeks, moved within their day, undated and dated again, copied
            "UPDATE picks SET mtime = mtime - 86400 * (id % 14) - 3600 * (id % 5)",
            "UPDATE picks SET mtime = mtime + 1 WHERE user_id = 'bob'",
            "UPDATE picks SET mtime = NULL WHERE run_name = 'TS_0003'",
            "UPDATE picks SET mtime = 86400 * 20000 WHERE run_name = 'TS_0003' AND user_id = 'alice'",
            "UPDATE picks SET mtime = 86400 * 20000 - 1e-6, n_points = n_points + 2 WHERE run_name = 'TS_0004'",
            "INSERT INTO picks (project_id, run_id, run_name, layer, path, object_name, user_id, session_id, n_points, "
            "fingerprint, mtime, indexed_at, stale, racy) SELECT project_id, run_id, run_name, layer, path || '.copy', "
            "object_name, 'copy_' || user_id, session_id, n_points, fingerprint, mtime, indexed_at, stale, racy "
            "FROM picks WHERE run_name IN ('TS_0003', 'TS_0005')",
            "DELETE FROM picks WHERE user_id LIKE 'copy_%' AND mtime IS NULL",
            "UPDATE picks SET user_id = 'zed' WHERE run_name IN ('TS_0001', 'TS_0002') AND user_id = 'alice'",
            "UPDATE picks SET n_points = n_points + 1 WHERE object_name = 'ribosome'",
            "UPDATE picks SET layer = 'static' WHERE run_name = 'TS_0005' AND layer = 'overlay'",
            "DELETE FROM picks WHERE run_name = 'TS_0006'",
            "UPDATE run_objects SET n_picks = 0 WHERE run_name = 'TS_0007'",
            "DELETE FROM runs WHERE name = 'TS_0008'",
            # a run's wbp in the overlay too: still one run; then gone from the static layer: still one
            "INSERT INTO tomograms (project_id, run_id, voxel_spacing_id, tomo_type, n_levels, layer, path, "
            "fingerprint, indexed_at, stale) SELECT project_id, run_id, voxel_spacing_id, tomo_type, n_levels, "
            "'overlay', path, fingerprint, indexed_at, stale FROM tomograms WHERE tomo_type = 'wbp'",
            "DELETE FROM tomograms WHERE tomo_type = 'wbp' AND layer = 'static' AND run_id IN "
            "(SELECT id FROM runs WHERE name = 'TS_0001')",
            "UPDATE tomograms SET tomo_type = 'denoised' WHERE tomo_type = 'wbp' AND layer = 'overlay' AND run_id IN "
            "(SELECT id FROM runs WHERE name = 'TS_0002')",  # a run whose denoised exists already: wbp loses a run
            "UPDATE tomograms SET tomo_type = 'isonet' WHERE tomo_type = 'denoised' AND layer = 'static'",
            "DELETE FROM voxel_spacings WHERE run_id IN (SELECT id FROM runs WHERE name = 'TS_0001')",
            "DELETE FROM runs WHERE name = 'TS_0002'",
        ]
        for stmt in statements:
            with engine.begin() as conn:
                conn.execute(sa.text(stmt))
            assert_totals_exact(engine)
        with engine.begin() as conn:  # several statements in one transaction, then rolled back
            conn.execute(sa.text("DELETE FROM picks WHERE user_id = 'bob'"))
            conn.execute(sa.text("UPDATE picks SET session_id = '99' WHERE user_id = 'zed'"))
            conn.rollback()
        assert_totals_exact(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM projects WHERE id = :p"), {"p": pid})
        totals = assert_totals_exact(engine)
        assert totals == {"picks": set(), "days": set(), "objects": set(), "tomograms": set()}


def test_totals_follow_the_object_api(sample: SampleSummary, db_url: str) -> None:
    pytest.importorskip("copick", reason="the copick backend needs copick (pip install 'copick-catalog[copick]')")
    from copick_catalog import from_file

    with from_file(sample.config, db=db_url) as root:
        engine = root.catalog.engine
        assert_totals_exact(engine)
        run = root.get_run("TS_0002")
        new = run.new_picks("ribosome", "9", user_id="dave")
        new.from_numpy(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]))
        totals = assert_totals_exact(engine)
        assert (root.catalog.project_id, "ribosome", "dave", "9", "overlay", 1, 3) in totals["picks"]
        alice = run.get_picks(user_id="alice", object_name="ribosome")[0]
        alice.from_numpy(np.zeros((7, 3)))  # rewritten: same key, other count
        assert_totals_exact(engine)
        alice.delete()
        new.delete()
        totals = assert_totals_exact(engine)
        assert not [t for t in totals["picks"] if t[2] == "dave"]
        vs = run.new_voxel_spacing(5)
        tomo = vs.new_tomogram("wbp")
        tomo.from_numpy(np.zeros((16, 16, 16), np.float32))
        totals = assert_totals_exact(engine)
        assert (root.catalog.project_id, 5.0, "wbp", 1) in totals["tomograms"]
        tomo.delete()
        totals = assert_totals_exact(engine)
        assert not [t for t in totals["tomograms"] if t[1] == 5.0]
        root.new_run("TS_NEW").new_picks("proteasome", "3", user_id="erin").from_numpy(np.ones((2, 3)))
        totals = assert_totals_exact(engine)
        proteasome = next(t for t in totals["objects"] if t[1] == "proteasome")
        assert proteasome[2] == sample.runs + 1
        run_object_counts(engine)  # run_objects too (the per-run summaries read it)
        cat, hour_ago = root.catalog, time.time() - 3600
        recent = cat.pick_timeline(by=("user_id",), since=hour_ago)  # the files just written, from the day totals
        assert recent == cat.pick_timeline(by=("user_id",), since=hour_ago, run=None)
        assert [(r["user_id"], r["picks"], r["points"]) for r in recent if r["user_id"] == "erin"] == [("erin", 1, 2)]


#: (by, filters) asked of both paths: every one of these is answered from pick_totals
QUESTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("object_name", "user_id"), {}),
    (("session_id",), {}),
    (("user_id",), {}),
    (("layer", "session_id", "object_name"), {}),
    ((), {}),
    ((), {"user_id": "nobody"}),
    (("object_name",), {"user_id": "alice"}),
    (("object_name", "user_id"), {"user_id": ["alice", "bob"], "layer": "overlay"}),
    (("session_id",), {"object_name": "ribosome", "session_id": ["1", "0"]}),
    (("object_name", "user_id"), {"uri": "ribo*:alice/*"}),
    (("user_id", "session_id"), {"uri": "re:pro.*:*/[01]"}),
    (("object_name",), {"uri": "*:bob/2", "layer": "overlay"}),
    (("user_id",), {"uri": None}),
]


def test_summaries_answer_as_the_picks_do(sample: SampleSummary, db_url: str) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        with cat.engine.begin() as conn:  # a key in several layers and an uneven spread, so the sums matter
            conn.execute(sa.text("UPDATE picks SET layer = 'static' WHERE run_name = 'TS_0001'"))
        for by, filters in QUESTIONS:
            fast = cat.pick_summary(by=by, **filters)
            # run=None filters nothing but is a column the totals lack: the SQL over picks answers it
            slow = cat.pick_summary(by=by, run=None, **filters)
            assert fast == slow, (by, filters)
            assert all(isinstance(r["picks"], int) and isinstance(r["points"], int | None) for r in fast)
            assert [list(r) for r in fast] == [[*by, "picks", "points"]] * len(fast)
        assert cat.points_by_session() == cat.pick_summary(by=("session_id",), run=None)
        assert cat.pick_summary(by=(), user_id="nobody") == [{"picks": 0, "points": None}]
        assert cat.pick_summary(by=()) == [{"picks": sample.pick_files, "points": sample.points}]
        # what the totals cannot answer still comes from picks: per run, and filtered by run
        per_run = cat.pick_summary(by=("run_name", "object_name"), run=["TS_0001", "TS_0002"])
        assert {r["run_name"] for r in per_run} == {"TS_0001", "TS_0002"}
        assert sum(r["picks"] for r in per_run) == len(cat.picks(run=["TS_0001", "TS_0002"]))


def test_coverage_lacking_and_tomogram_types_as_before(sample: SampleSummary, db_url: str) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        with cat.engine.connect() as conn:  # the former query, over run_objects
            before = [
                dict(r._mapping)
                for r in conn.execute(
                    sa.text(
                        "SELECT object_name, sum(CASE WHEN n_picks > 0 THEN 1 ELSE 0 END) AS runs_with_picks, "
                        "sum(1 - CASE WHEN n_picks > 0 THEN 1 ELSE 0 END) AS runs_lacking, sum(n_picks) AS picks, "
                        "sum(n_points) AS points FROM run_objects WHERE project_id = :p GROUP BY object_name "
                        "ORDER BY object_name"
                    ),
                    {"p": cat.project_id},
                )
            ]
            by_user = {
                user: sorted(
                    conn.scalars(
                        sa.text(
                            "SELECT name FROM runs r WHERE project_id = :p AND NOT EXISTS (SELECT 1 FROM picks k "
                            "WHERE k.run_id = r.id AND k.object_name = 'proteasome' AND k.user_id = :u)"
                        ),
                        {"p": cat.project_id, "u": user},
                    )
                )
                for user in ("alice", "bob", "nobody")
            }
            types_before = [
                dict(r._mapping)
                for r in conn.execute(
                    sa.text(
                        "SELECT v.voxel_size, t.tomo_type, count(DISTINCT t.run_id) AS runs FROM tomograms t "
                        "JOIN voxel_spacings v ON t.voxel_spacing_id = v.id WHERE t.project_id = :p "
                        "GROUP BY v.voxel_size, t.tomo_type ORDER BY v.voxel_size, t.tomo_type"
                    ),
                    {"p": cat.project_id},
                )
            ]
        assert cat.tomogram_types() == types_before and types_before
        assert cat.object_coverage() == [{k: int(v) if k != "object_name" else v for k, v in r.items()} for r in before]
        for user, expected in by_user.items():
            assert cat.runs_lacking("proteasome", user_id=user) == expected
        assert cat.runs_lacking("proteasome", user_id=["alice", "bob"]) == sorted(
            set(by_user["alice"]) & set(by_user["bob"])
        )


def test_downgrade_and_upgrade_refill_the_totals(sample: SampleSummary, tmp_path: Path) -> None:
    from alembic import command

    db = tmp_path / "catalog.sqlite"
    with Catalog.open(sample.config, db=str(db)) as cat:
        cat.index()
        before = assert_totals_exact(cat.engine)
    url = f"sqlite:///{db}"
    command.downgrade(alembic_config(url), "0007")
    engine = create_engine(url)
    with engine.begin() as conn:  # written while no trigger watched
        assert not sa.inspect(conn).has_table("pick_totals")
        conn.execute(sa.text("DELETE FROM picks WHERE user_id = 'bob'"))
    command.upgrade(alembic_config(url), "head")
    after = assert_totals_exact(engine)
    assert after["picks"] == {t for t in before["picks"] if t[2] != "bob"}
    engine.dispose()


@contextmanager
def _sql_sent(engine: sa.Engine) -> Iterator[list[str]]:
    """The statements ``engine`` sends meanwhile (to tell which table answered a helper)."""
    sent: list[str] = []

    def grab(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", grab)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", grab)


#: (by, filters) of the timeline questions pick_day_totals answers for buckets of whole days
TIMELINE_QUESTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    ((), {}),
    (("user_id",), {}),
    (("user_id", "object_name"), {}),
    (("layer", "session_id"), {"object_name": ["ribosome", "proteasome"]}),
    (("object_name",), {"user_id": "alice", "uri": "ribo*:*/*"}),
    ((), {"user_id": "nobody"}),
]


def test_timeline_answers_as_the_picks_do(sample: SampleSummary, db_url: str) -> None:
    """pick_timeline from pick_day_totals (plus the partial day of since= and the undated files) equals the GROUP BY
    over picks, bucket for bucket, for days and multiples of days, since= anywhere in a day or on its edges."""
    day = 86400.0
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        edge = 86400 * 20400  # a midnight (2025-11-08), and files on it, just before it and just after it
        with cat.engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE picks SET mtime = {edge} - 86400 * (id % 17) - 1000.5 * (id % 7)"))
            conn.execute(sa.text(f"UPDATE picks SET mtime = {edge} WHERE run_name = 'TS_0001'"))
            conn.execute(sa.text(f"UPDATE picks SET mtime = {math.nextafter(edge, 0)} WHERE run_name = 'TS_0002'"))
            conn.execute(sa.text(f"UPDATE picks SET mtime = {edge + 0.25} WHERE run_name = 'TS_0003'"))
            conn.execute(sa.text("UPDATE picks SET mtime = NULL WHERE run_name = 'TS_0004' AND user_id = 'alice'"))
        assert_totals_exact(cat.engine)
        sinces = [None, edge, math.nextafter(edge, 0), edge + 0.25, edge - 3 * day + 4321.0, edge - 40 * day, 4e9]
        for bucket_s in (day, 2 * day, 7 * day, 3600.0, 1.5 * day):
            for since in sinces:
                for by, filters in TIMELINE_QUESTIONS:
                    with _sql_sent(cat.engine) as sent:
                        fast = cat.pick_timeline(by, bucket_s=bucket_s, since=since, **filters)
                    # run=None filters nothing but is a column the day totals lack: the SQL over picks answers it
                    slow = cat.pick_timeline(by, bucket_s=bucket_s, since=since, run=None, **filters)
                    assert fast == slow, (bucket_s, since, by, filters)
                    assert any("pick_day_totals" in s for s in sent) is (bucket_s % day == 0), sent
                    assert [list(r) for r in fast] == [["bucket", *by, "picks", "points"]] * len(fast)
                    assert all(isinstance(r["bucket"], float | None) and isinstance(r["picks"], int) for r in fast)
        whole = cat.pick_timeline(("user_id",))
        assert {r["bucket"] for r in whole if r["user_id"] == "alice"} >= {None, edge - day, edge}
        assert sum(r["picks"] for r in whole) == sample.pick_files
        assert sum(r["picks"] for r in cat.pick_timeline(since=edge)) == len(
            [p for p in cat.picks() if p.mtime is not None and p.mtime >= edge]
        )
        assert cat.pick_timeline(since=4e9) == [] and cat.pick_timeline(user_id="nobody") == []


#: (by, filters) of the per-run questions run_objects answers
RUN_QUESTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("run_name", "object_name"), {}),
    (("object_name", "run_name"), {}),
    (("run_name",), {}),
    (("run_name", "object_name"), {"object_name": "ribosome"}),
    (("run_name", "object_name"), {"object_name": ["actin", "proteasome"]}),
    (("run_name",), {"run_name": ["TS_0001", "TS_0003"], "object_name": "actin"}),
    (("run_name", "object_name"), {"run_name": "TS_0099"}),
]


def test_per_run_summaries_answer_as_the_picks_do(sample: SampleSummary, db_url: str) -> None:
    """pick_summary per run and object from run_objects, with the picks of an object the config does not list."""
    overlay = sample.config.parent / "overlay" / "ExperimentRuns"
    for run in ("TS_0001", "TS_0003"):
        _write_pick(overlay / run / "Picks" / "dave_7_actin.json", "actin", "dave", "7", run, 3)
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        assert "actin" not in cat.config.object_names
        for by, filters in RUN_QUESTIONS:
            with _sql_sent(cat.engine) as sent:
                fast = cat.pick_summary(by=by, **filters)
            slow = cat.pick_summary(by=by, layer=None, **filters)  # layer: a column run_objects lacks
            assert fast == slow, (by, filters)
            assert any("run_objects" in s for s in sent)
            assert all(isinstance(r["picks"], int) and isinstance(r["points"], int) for r in fast)
        actin = cat.pick_summary(by=("run_name", "object_name"), object_name="actin")
        assert actin == [
            {"run_name": r, "object_name": "actin", "picks": 1, "points": 3} for r in ("TS_0001", "TS_0003")
        ]


def _trigger_names(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")))


def test_bulk_batches_keep_the_totals_exact_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full index inserts picks in batches big enough that SQLite's insert triggers are set aside for grouped
    statements (summary.sqlite_totals_per_batch): the totals must be what the triggers would have made, the
    triggers back afterwards, and later writes (an update, a small batch) still counted by them."""
    from copick_catalog.catalog.summary import BULK_TOTALS_MIN_ROWS
    from copick_catalog.index import indexer
    from copick_catalog.sample import make_sample_project

    s = make_sample_project(tmp_path / "p", runs=40, picks_per_run=12, points=(1, 4), tomogram_runs=0, size=16)
    assert s.pick_files >= 2 * BULK_TOTALS_MIN_ROWS
    db = f"sqlite:///{tmp_path / 'c.sqlite'}"
    statements: list[str] = []
    with Catalog.open(s.config, db=db) as cat:
        sa.event.listen(cat.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        cat.index()
        assert any("INSERT INTO pick_day_totals" in q and "GROUP BY" in q for q in statements), "bulk path not taken"
        assert _trigger_names(cat.engine) >= TRIGGERS
        totals = assert_totals_exact(cat.engine)
        assert sum(t[-2] for t in totals["picks"]) == s.pick_files
        # the update trigger is back: a row losing its mtime leaves its day
        with cat.engine.begin() as conn:
            conn.execute(sa.text("UPDATE picks SET mtime = NULL WHERE id = (SELECT min(id) FROM picks)"))
        assert_totals_exact(cat.engine)
        # one more file, through the triggers
        overlay = s.config.parent / "overlay" / "ExperimentRuns"
        _write_pick(overlay / "TS_0003" / "Picks" / "zoe_9_ribosome.json", "ribosome", "zoe", "9", "TS_0003", 3)
        statements.clear()
        cat.index()
        assert not any("GROUP BY" in q and "pick_day_totals" in q for q in statements)
        assert (cat.project_id, "ribosome", "zoe", "9", "overlay", 1, 3) in assert_totals_exact(cat.engine)["picks"]

    # a second project's first index into the same catalog adds to keys of its own, in batches smaller than
    # the run (BATCH_FILES), each with its own grouped statements
    t = make_sample_project(tmp_path / "q", runs=30, picks_per_run=12, points=(1, 3), tomogram_runs=0, size=16)
    monkeypatch.setattr(indexer, "BATCH_FILES", 250)
    with Catalog.open(t.config, db=db) as cat:
        cat.index()
        assert_totals_exact(cat.engine)


def test_a_failed_bulk_batch_leaves_the_triggers_in_place(tmp_path: Path, sample: SampleSummary) -> None:
    from copick_catalog.catalog.db import write_tx
    from copick_catalog.catalog.summary import BULK_TOTALS_MIN_ROWS, sqlite_totals_per_batch

    db = f"sqlite:///{tmp_path / 'c.sqlite'}"
    with Catalog.open(sample.config, db=db) as cat:
        cat.index()
        engine = cat.engine
        with (
            pytest.raises(RuntimeError, match="disk full"),
            write_tx(engine) as conn,
            sqlite_totals_per_batch(conn, 10**9, 10**9 + BULK_TOTALS_MIN_ROWS),
        ):
            inside = set(conn.scalars(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")))
            assert not inside & {"pick_totals_after_insert", "pick_day_totals_after_insert"}
            assert _trigger_names(engine) >= TRIGGERS  # another connection never sees them gone
            raise RuntimeError("disk full")
        assert _trigger_names(engine) >= TRIGGERS
        # SQLite answers some errors (a full disk, an I/O error) by rolling the whole transaction back itself:
        # the drop is undone already, and that error, not a failed re-creation, is what the caller must see
        with (
            pytest.raises(sqlite3.OperationalError, match="database or disk is full"),
            write_tx(engine) as conn,
            sqlite_totals_per_batch(conn, 10**9, 10**9 + BULK_TOTALS_MIN_ROWS),
        ):
            conn.connection.driver_connection.execute("ROLLBACK")  # what SQLite did on SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")
        assert _trigger_names(engine) >= TRIGGERS
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM picks WHERE user_id = 'bob'"))
            conn.execute(
                sa.text(
                    "INSERT INTO picks (project_id, run_id, run_name, layer, path, fingerprint, indexed_at, stale, "
                    "racy, object_name, user_id, session_id, n_points, mtime) SELECT project_id, run_id, run_name, "
                    "layer, path || '.x', fingerprint, indexed_at, stale, racy, object_name, 'eve', session_id, "
                    "n_points, mtime FROM picks"
                )
            )
        assert {t[2] for t in assert_totals_exact(engine)["picks"]} >= {"eve"}

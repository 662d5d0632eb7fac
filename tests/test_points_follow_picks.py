"""A pick's points go when the pick goes, on every path a pick can go by.

On SQLite a foreign key with ``ON DELETE CASCADE`` does it; on PostgreSQL a statement trigger on ``picks``
(migration 0011: the key's per-point check was ~30 % of a full index there). Both are checked the same
way: after each kind of delete, no ``points`` or ``packed_points`` row names a pick that is gone, and
every remaining pick still has exactly its ``n_points`` rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.catalog.db import alembic_config, create_engine
from copick_catalog.sample import SampleSummary
from tests.conftest import packed_points_match


def _points_per_pick(engine: sa.Engine) -> tuple[dict[int, int], dict[int, int]]:
    """(n_points per pick as the picks table says, point rows per pick id as points holds them)."""
    with engine.connect() as conn:
        declared = dict(conn.execute(sa.text("SELECT id, n_points FROM picks")).all())
        held = dict(conn.execute(sa.text("SELECT pick_id, count(*) FROM points GROUP BY pick_id")).all())
    return declared, held


def _assert_points_follow(engine: sa.Engine) -> int:
    declared, held = _points_per_pick(engine)
    assert set(held) <= set(declared), f"points of deleted picks remain: {sorted(set(held) - set(declared))[:5]}"
    assert {pid: n for pid, n in declared.items() if n} == held
    packed_points_match(engine)
    return sum(held.values())


def test_points_follow_every_kind_of_pick_delete(sample: SampleSummary, db_url: str) -> None:
    overlay = sample.config.parent / "overlay" / "ExperimentRuns"
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        engine = cat.engine
        total = _assert_points_follow(engine)
        assert total == sample.points

        # a vanished pick file (the indexer's batch delete)
        gone = overlay / "TS_0001" / "Picks" / "alice_1_ribosome.json"
        n_gone = next(p.n_points for p in cat.picks(run="TS_0001", user_id="alice", object_name="ribosome"))
        gone.unlink()
        cat.index()
        after = _assert_points_follow(engine)
        assert after == total - n_gone > 0

        # a run removed from both roots (runs -> picks by cascade, then their points)
        in_run = sum(p.n_points for p in cat.picks(run="TS_0002"))
        for layer in ("static", "overlay"):
            shutil.rmtree(sample.config.parent / layer / "ExperimentRuns" / "TS_0002", ignore_errors=True)
        cat.index()
        assert "TS_0002" not in {r.name for r in cat.runs()}
        assert _assert_points_follow(engine) == after - in_run

        # plain SQL, as any other writer of the database could
        bob = sum(p.n_points for p in cat.picks(user_id="bob"))
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM picks WHERE user_id = 'bob'"))
        assert bob > 0 and _assert_points_follow(engine) == after - in_run - bob

        # the whole project (projects -> runs -> picks -> points)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM projects WHERE id = :id"), {"id": cat.project_id})
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM points")).scalar() == 0
            assert conn.execute(sa.text("SELECT count(*) FROM packed_points")).scalar() == 0


def test_postgres_migration_0011_round_trip(sample: SampleSummary, pg_url: str) -> None:
    """0011 swaps the points' key for the trigger and back without losing or orphaning a point."""
    from alembic import command

    with Catalog.open(sample.config, db=pg_url) as cat:
        cat.index()
    engine = create_engine(pg_url)

    def schema() -> tuple[bool, bool]:
        with engine.connect() as conn:
            fk = conn.execute(
                sa.text("SELECT count(*) FROM pg_constraint WHERE conname = 'fk_points_pick_id_picks'")
            ).scalar()
            trigger = conn.execute(
                sa.text("SELECT count(*) FROM pg_trigger WHERE tgname = 'points_follow_deleted_picks'")
            ).scalar()
        return bool(fk), bool(trigger)

    assert schema() == (False, True)
    before = _assert_points_follow(engine)
    cfg = alembic_config(pg_url)
    command.downgrade(cfg, "0010")
    assert schema() == (True, False)
    assert _assert_points_follow(engine) == before
    command.upgrade(cfg, "head")
    assert schema() == (False, True)
    assert _assert_points_follow(engine) == before == sample.points
    engine.dispose()


def test_the_database_keeps_the_model_key_on_sqlite(tmp_path: Path, sample: SampleSummary) -> None:
    """SQLite keeps the foreign key (the bulk batches switch enforcement off; everything else is checked)."""
    db = tmp_path / "c.sqlite"
    Catalog.open(sample.config, db=str(db)).close()
    engine = create_engine(str(db))
    with engine.connect() as conn:
        fks = conn.exec_driver_sql("PRAGMA foreign_key_list(points)").all()
    engine.dispose()
    assert [(r[2], r[3], r[4], r[6]) for r in fks] == [("picks", "pick_id", "id", "CASCADE")]

"""Shared fixtures: real catalog databases (SQLite files and PostgreSQL), real generated projects.

Every catalog test that takes ``db_url`` runs twice: on a SQLite file and on a fresh PostgreSQL
database. Without a reachable server the PostgreSQL half skips with a loud reason, unless
``COPICK_CATALOG_REQUIRE_PG=1`` (set by ``.ci/run``) turns that into a failure.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from copick_catalog.sample import SampleSummary, make_sample_project

PG_URL = os.environ.get("COPICK_CATALOG_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("COPICK_CATALOG_REQUIRE_PG") == "1"
_pg_state: dict[str, object] = {}


def _pg_admin() -> sa.Engine | None:
    """An AUTOCOMMIT engine on the admin database, or None (with the reason stored) if unreachable."""
    if "engine" in _pg_state:
        return _pg_state["engine"]  # type: ignore[return-value]
    try:
        engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        _pg_state["engine"] = None
        _pg_state["reason"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return None
    _pg_state["engine"] = engine
    return engine


def pg_reachable() -> bool:
    return _pg_admin() is not None


def skip_or_fail_without_pg() -> None:
    if _pg_admin() is None:
        msg = (
            f"PostgreSQL NOT TESTED: no server at {PG_URL} ({_pg_state.get('reason')}). "
            "Start one (see README) or set COPICK_CATALOG_TEST_PG."
        )
        if REQUIRE_PG:
            pytest.fail(msg)
        pytest.skip(msg)


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "cc_test", options: str = "") -> Iterator[str]:
    """A new, empty PostgreSQL database (``CREATE DATABASE … options``), dropped on exit; yields its URL.

    The caller has made sure a server is reachable (:func:`skip_or_fail_without_pg`)."""
    admin = _pg_admin()
    assert admin is not None
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" {options}'.rstrip())
    try:
        yield sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    skip_or_fail_without_pg()
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A catalog database URL: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def _sample_template(tmp_path_factory: pytest.TempPathFactory) -> SampleSummary:
    return make_sample_project(tmp_path_factory.mktemp("sample") / "project", runs=12, tomogram_runs=2, size=32)


@pytest.fixture
def sample(_sample_template: SampleSummary, tmp_path: Path) -> SampleSummary:
    """A private copy of a small generated project (12 runs, tomograms on 2) that a test may change."""
    src = _sample_template.config.parent
    dst = tmp_path / "project"
    shutil.copytree(src, dst, symlinks=True)
    cfg = dst / "copick_config.json"
    text = cfg.read_text().replace(str(src), str(dst))
    cfg.write_text(text)
    age_tree(dst)
    return SampleSummary(
        cfg, _sample_template.runs, _sample_template.pick_files, _sample_template.points, _sample_template.tomograms
    )


def age_tree(root: Path, seconds: float = 3600.0) -> None:
    """Set every mtime under ``root`` into the past, as on a project nobody touched for a while.

    Without it, files written moments ago are "racily clean" and get re-read on the next index.
    """
    past = time.time() - seconds
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (past, past))


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = "reachable, tests use it" if pg_reachable() else f"NOT reachable ({_pg_state.get('reason')})"
    return [
        f"copick-catalog: PostgreSQL at {PG_URL}: {state}; required={REQUIRE_PG}",
        "copick-catalog: s3:// roots are tested against moto's S3 server, started as its own process on 127.0.0.1",
    ]


def run_object_counts(engine: sa.Engine) -> set[tuple[str, str, int, int]]:
    """``run_objects`` as (run, object, picks, points), after checking it against ``picks`` itself.

    The expected rows are computed here by hand (every run times every configured object, with zeros), so a
    summary that drifted from the picks fails every test that snapshots the catalog.
    """
    with engine.connect() as conn:
        table = set(conn.execute(sa.text("SELECT run_name, object_name, n_picks, n_points FROM run_objects")).all())
        runs = conn.execute(sa.text("SELECT id, name, project_id FROM runs")).all()
        objects = conn.execute(sa.text("SELECT project_id, name FROM pickable_objects")).all()
        picks = conn.execute(sa.text("SELECT run_id, object_name, n_points FROM picks")).all()
    per: dict[tuple[int, str], list[int]] = {}
    for run_id, obj, n in picks:
        acc = per.setdefault((run_id, obj), [0, 0])
        acc[0] += 1
        acc[1] += n
    expected = {
        (name, obj, *per.get((rid, obj), (0, 0))) for rid, name, pid in runs for opid, obj in objects if opid == pid
    }
    assert table == expected, (
        f"run_objects drifted from picks: extra {sorted(table - expected)[:5]}, missing {sorted(expected - table)[:5]}"
    )
    assert_totals_exact(engine)
    return table


PICK_KEY = ("project_id", "object_name", "user_id", "session_id", "layer")


def assert_totals_exact(engine: sa.Engine) -> dict[str, set[tuple[Any, ...]]]:
    """The trigger-kept totals tables, after checking each against a GROUP BY over its source table.

    ``pick_totals``, ``object_totals`` and ``tomogram_totals`` against the same grouping in SQL;
    ``pick_day_totals`` against the pick rows grouped here in Python, by the start of each mtime's UTC day
    (files without an mtime left out), so a trigger whose day arithmetic drifted from Python's fails too.
    """
    keys = ", ".join(PICK_KEY)
    with engine.connect() as conn:
        picks = set(conn.execute(sa.text(f"SELECT {keys}, n_picks, n_points FROM pick_totals")).all())
        expect_picks = set(
            conn.execute(sa.text(f"SELECT {keys}, count(*), sum(n_points) FROM picks GROUP BY {keys}")).all()
        )
        days = set(
            conn.execute(
                sa.text(
                    "SELECT project_id, day_start, object_name, user_id, session_id, layer, n_picks, n_points "
                    "FROM pick_day_totals"
                )
            ).all()
        )
        rows = conn.execute(sa.text(f"SELECT {keys}, mtime, n_points FROM picks WHERE mtime IS NOT NULL")).all()
        objects = set(
            conn.execute(
                sa.text(
                    "SELECT project_id, object_name, n_runs, n_runs_with_picks, n_picks, n_points FROM object_totals"
                )
            ).all()
        )
        expect_objects = set(
            conn.execute(
                sa.text(
                    "SELECT project_id, object_name, count(*), sum(CASE WHEN n_picks > 0 THEN 1 ELSE 0 END), "
                    "sum(n_picks), sum(n_points) FROM run_objects GROUP BY project_id, object_name"
                )
            ).all()
        )
        tomograms = set(conn.execute(sa.text("SELECT project_id, voxel_size, tomo_type, n_runs FROM tomogram_totals")))
        expect_tomograms = set(
            conn.execute(
                sa.text(
                    "SELECT v.project_id, v.voxel_size, t.tomo_type, count(DISTINCT t.run_id) FROM tomograms t "
                    "JOIN voxel_spacings v ON v.id = t.voxel_spacing_id "
                    "GROUP BY v.project_id, v.voxel_size, t.tomo_type"
                )
            )
        )
    per_day: dict[tuple[Any, ...], list[int]] = {}
    for project_id, obj, user, session, layer, mtime, n in rows:
        acc = per_day.setdefault((project_id, math.floor(mtime / 86400.0) * 86400.0, obj, user, session, layer), [0, 0])
        acc[0] += 1
        acc[1] += n
    expect_days = {(*k, n, p) for k, (n, p) in per_day.items()}
    assert picks == expect_picks, f"pick_totals drifted: extra {picks - expect_picks}, missing {expect_picks - picks}"
    assert days == expect_days, (
        f"pick_day_totals drifted: extra {sorted(days - expect_days)[:5]}, missing {sorted(expect_days - days)[:5]}"
    )
    assert tomograms == expect_tomograms, (
        f"tomogram_totals drifted: extra {tomograms - expect_tomograms}, missing {expect_tomograms - tomograms}"
    )
    assert objects == expect_objects, (
        f"object_totals drifted: extra {objects - expect_objects}, missing {expect_objects - objects}"
    )
    return {"picks": picks, "days": days, "objects": objects, "tomograms": tomograms}


def packed_points_match(engine: sa.Engine) -> int:
    """Check every pick's ``packed_points`` blob against its ``points`` rows, and that no point outlives its
    pick; return the picks checked.

    The blob is a second copy written in the same transaction as the rows, so any drift between the
    two (a missed rewrite, a leftover after a delete) fails every test that snapshots the catalog.
    """
    import numpy as np

    with engine.connect() as conn:
        picks = [r[0] for r in conn.execute(sa.text("SELECT id FROM picks"))]
        blobs = dict(conn.execute(sa.text("SELECT pick_id, data FROM packed_points")).all())
        rows: dict[int, list[tuple[float, ...]]] = {}
        for pid, *values in conn.execute(
            sa.text("SELECT pick_id, x, y, z, instance_id, score FROM points ORDER BY pick_id, idx")
        ):
            rows.setdefault(pid, []).append(tuple(values))
    assert set(blobs) == set(picks), (
        f"picks without a packed copy: {sorted(set(picks) - set(blobs))[:5]}, "
        f"packed copies without a pick: {sorted(set(blobs) - set(picks))[:5]}"
    )
    orphans = sorted(set(rows) - set(picks))
    assert not orphans, f"points rows of picks that no longer exist: pick ids {orphans[:5]}"
    for pid in picks:
        packed = np.frombuffer(bytes(blobs[pid]), dtype="<f8").reshape(-1, 5)
        expected = np.array(rows.get(pid, []), dtype=np.float64).reshape(-1, 5)
        assert np.array_equal(packed, expected), f"pick {pid}: packed points differ from its points rows"
    return len(picks)

"""``sql`` cannot change anything, on SQLite and PostgreSQL, whatever the statement says.

Each attack is one a user actually tried (issue 9): several statements in one string (``COMMIT;`` to
leave the read-only transaction), data-modifying CTEs, ``COPY … TO`` a server-side file, ``ATTACH`` a
new SQLite file, ``VACUUM INTO``, ``PRAGMA``. After every attempt the catalog must equal a snapshot
taken before, and no file may have appeared.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.catalog.sql import create_readonly_role
from copick_catalog.errors import CatalogError
from copick_catalog.sample import SampleSummary


def _snapshot(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("points", "picks", "runs", "packed_points", "index_runs")
        } | {"n_points": conn.execute(sa.text("SELECT sum(n_points) FROM picks")).scalar_one()}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "copick_catalog.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def cat(sample: SampleSummary, db_url: str) -> Any:
    c = Catalog.open(sample.config, db=db_url)
    c.index()
    yield c
    c.close()


def attacks(target: Path) -> list[str]:
    return [
        "COMMIT; DELETE FROM points; UPDATE picks SET n_points=999",
        "DELETE FROM points",
        "UPDATE picks SET n_points = 999",
        "WITH d AS (DELETE FROM points RETURNING 1) SELECT count(*) FROM d",
        "SELECT 1; DELETE FROM points",
        "DROP TABLE points",
        f"COPY (SELECT 1) TO '{target}'",
        f"ATTACH DATABASE '{target}' AS evil",
        f"VACUUM INTO '{target}'",
        "PRAGMA query_only = OFF",
        "BEGIN",
        "CREATE TEMP TABLE t(x int)",
        "INSERT INTO runs (project_id, name) VALUES (1, 'evil')",
    ]


def test_sql_reads(cat: Catalog, sample: SampleSummary) -> None:
    result = cat.sql("SELECT count(*) AS n FROM picks")
    assert result.columns == ["n"] and result.rows == [(sample.pick_files,)]
    cte = cat.sql("WITH u AS (SELECT DISTINCT user_id FROM picks) SELECT user_id FROM u ORDER BY user_id")
    assert [r[0] for r in cte.rows] == ["alice", "bob", "carol", "pytom"]
    assert cat.sql("VALUES (1, 'a')").rows == [(1, "a")]
    assert len(cat.sql("SELECT pick_id FROM points", max_rows=7).rows) == 7


def test_sql_cannot_write(cat: Catalog, tmp_path: Path) -> None:
    before = _snapshot(cat.engine)
    for i, stmt in enumerate(attacks(tmp_path / "evil.db")):
        with pytest.raises(CatalogError, match="SQL refused"):
            cat.sql(stmt)
        assert _snapshot(cat.engine) == before, f"statement {i} changed the catalog: {stmt}"
    assert not (tmp_path / "evil.db").exists()
    if cat.engine.dialect.name == "postgresql":
        # a query may change its session's settings, but that session is thrown away afterwards
        assert cat.sql("SELECT set_config('default_transaction_read_only', 'off', false)").rows == [("off",)]
        with pytest.raises(CatalogError, match="SQL refused"):
            cat.sql("DELETE FROM points")
        assert _snapshot(cat.engine) == before
    # the catalog is still usable, and still writable through the API
    assert cat.sql("SELECT count(*) FROM runs").rows == [(before["runs"],)]
    assert cat.index().nothing_changed


def test_sql_cli_refuses_the_reported_attack(cat: Catalog, sample: SampleSummary) -> None:
    before = _snapshot(cat.engine)
    out = _cli(
        "sql",
        "COMMIT; DELETE FROM points; UPDATE picks SET n_points=999",
        str(sample.config),
        "--db",
        cat.engine.url.render_as_string(hide_password=False),
    )
    assert out.returncode == 2, out.stdout
    assert "SQL refused" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert _snapshot(cat.engine) == before


def test_sql_timeout(cat: Catalog) -> None:
    runaway = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    with pytest.raises(CatalogError, match="timeout"):
        cat.sql(runaway, timeout=0.5)


def test_readonly_role_can_only_select(sample: SampleSummary, pg_url: str, tmp_path: Path) -> None:
    with Catalog.open(sample.config, db=pg_url) as cat:
        cat.index()
        before = _snapshot(cat.engine)
    role = f"cc_reader_{uuid.uuid4().hex[:8]}"
    out = _cli("db", "readonly-role", role, "--db", pg_url)
    assert out.returncode == 0, out.stderr
    reader_url = sa.make_url(pg_url).set(username=role).render_as_string(hide_password=False)
    try:
        with Catalog.open(sample.config, db=reader_url, read_only=True) as ro:
            assert ro.sql("SELECT count(*) FROM picks").rows == [(before["picks"],)]
            for stmt in [
                "SELECT pg_read_file('/etc/hostname')",
                "SELECT pg_ls_dir('/')",
                *attacks(tmp_path / "evil.db"),
            ]:
                with pytest.raises(CatalogError):
                    ro.sql(stmt)
        # even a plain connection as that role cannot write or read server files
        engine = sa.create_engine(reader_url)
        with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError):
            conn.execute(sa.text("DELETE FROM points"))
        engine.dispose()
        out = _cli(
            "sql", "SELECT count(*) AS n FROM points", str(sample.config), "--db", reader_url, "--format", "json"
        )
        assert out.returncode == 0, out.stderr
        assert f'"n": {before["points"]}' in out.stdout
        admin = sa.create_engine(pg_url)
        assert _snapshot(admin) == before
        # running it again updates the role instead of failing
        assert create_readonly_role(admin, role)[0].startswith("ALTER ROLE")
    finally:
        admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()
    assert not (tmp_path / "evil.db").exists()


def test_readonly_role_refused_on_sqlite(sample: SampleSummary, tmp_path: Path) -> None:
    with (
        Catalog.open(sample.config, db=str(tmp_path / "c.sqlite")) as cat,
        pytest.raises(CatalogError, match="PostgreSQL only"),
    ):
        create_readonly_role(cat.engine, "reader")

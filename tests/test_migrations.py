"""The schema comes only from Alembic migrations, and the migrations match the models."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from copick_catalog import Catalog
from copick_catalog.catalog.db import (
    SCHEMA_DIFFERENCES,
    SCHEMA_HEAD,
    alembic_config,
    create_engine,
    current_revision,
    ensure_schema,
    head_revision,
)
from copick_catalog.catalog.schema import Base
from copick_catalog.errors import SchemaVersionError
from copick_catalog.sample import SampleSummary
from tests.conftest import packed_points_match, run_object_counts

REPO = Path(__file__).resolve().parents[1]


def test_one_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_the_cheap_head_constant_is_the_migrations_head() -> None:
    """Opening a current catalog compares with SCHEMA_HEAD instead of loading alembic; a new migration
    that forgets to move it would make every open run the (no-op) upgrade path."""
    assert head_revision() == SCHEMA_HEAD


def test_models_and_migrations_agree(db_url: str) -> None:
    """Equal but for the differences ``SCHEMA_DIFFERENCES`` declares for this dialect, each of which must be there."""
    engine = create_engine(db_url)
    ensure_schema(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        dialect = conn.dialect.name
    engine.dispose()
    declared = {(table, name) for d, table, name in SCHEMA_DIFFERENCES if d == dialect}
    on_purpose = {
        (item[1].parent.name, item[1].name) for item in diff if isinstance(item, tuple) and item[0] == "add_fk"
    } & declared
    assert on_purpose == declared
    assert [d for d in diff if not (isinstance(d, tuple) and (d[1].parent.name, d[1].name) in on_purpose)] == []


def test_open_creates_schema_and_refuses_newer(sample: SampleSummary, db_url: str) -> None:
    Catalog.open(sample.config, db=db_url).close()
    engine = create_engine(db_url)
    assert current_revision(engine) == head_revision()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="newer version"):
        Catalog.open(sample.config, db=db_url)


def test_emptied_database_is_upgraded_on_open(tmp_path: Path, sample: SampleSummary) -> None:
    db = tmp_path / "old.sqlite"
    engine = create_engine(str(db))
    ensure_schema(engine)
    engine.dispose()
    # take the file back to an empty schema (downgrade to base), then reopen: Catalog.open migrates it
    from alembic import command

    cfg = alembic_config(f"sqlite:///{db}")
    command.downgrade(cfg, "base")
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
    con.commit()
    con.close()
    assert current_revision(create_engine(str(db))) is None
    with Catalog.open(sample.config, db=str(db)) as cat:
        assert cat.index().added > 0
    assert current_revision(create_engine(str(db))) == head_revision()


def test_cli_and_alembic_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    out = subprocess.run(
        [sys.executable, "-m", "copick_catalog.cli", "db", "upgrade", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert head_revision() in out.stdout
    db2 = tmp_path / "alembic.sqlite"
    subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"db={db2}", "upgrade", "head"],
        cwd=REPO,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert current_revision(create_engine(str(db2))) == head_revision()
    tables = set(sa.inspect(create_engine(str(db2))).get_table_names())
    assert {
        "runs",
        "voxel_spacings",
        "tomograms",
        "features",
        "picks",
        "points",
        "meshes",
        "segmentations",
        "index_errors",
        "index_runs",
        "projects",
        "pickable_objects",
    } <= tables


def test_older_catalog_with_rows_is_backed_up_and_upgraded(tmp_path: Path, sample: SampleSummary) -> None:
    from alembic import command

    db = tmp_path / "old.sqlite"
    with Catalog.open(sample.config, db=str(db)) as cat:
        cat.index()
    command.downgrade(alembic_config(f"sqlite:///{db}"), "0001")  # as a 0001-era catalog, with its rows
    assert current_revision(create_engine(str(db))) == "0001"
    with Catalog.open(sample.config, db=str(db)) as cat:
        assert Path(f"{db}.bak-0001").is_file()  # backed up before migrating
        picks = cat.picks(run="TS_0002")
        assert picks and all(p.run_name == "TS_0002" for p in picks)  # backfilled by the migration
        assert len(run_object_counts(cat.engine)) == sample.runs * 4  # filled by 0004, zeros included
        assert packed_points_match(cat.engine) == sample.pick_files  # packed by 0005
        with cat.engine.connect() as conn:  # rebuilt clustered by 0008, every point kept
            ddl = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'points'")).scalar_one()
            assert ddl.rstrip().endswith("WITHOUT ROWID")
            assert conn.execute(sa.text("SELECT count(*) FROM points")).scalar_one() == sample.points
        assert cat.index().nothing_changed

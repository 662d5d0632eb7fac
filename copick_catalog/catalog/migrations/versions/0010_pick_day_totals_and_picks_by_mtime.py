"""pick_day_totals: pick files and points per UTC day of their mtime, kept by triggers; picks indexed by mtime

"Progress over time" (``Catalog.pick_timeline``) buckets every pick file by the day its file was last
saved: at 100,000 runs (1.1 M pick files) that read every ``picks`` row (0.6 s warm on PostgreSQL), and
"this week's work" (``since=``) scanned them too for lack of an index on ``mtime``. ``pick_day_totals``
holds pick files and points per (project, UTC day, object, user, session, layer): the keys of
``pick_totals`` and the day, a few thousand rows for a project annotated over months. Buckets of whole
days are sums of its rows; ``ix_picks_project_id_mtime`` makes the rest of a partial day (``since=``
is rarely midnight) and any timeline the table cannot answer a range of ``picks`` (on PostgreSQL an
index-only range: it carries the table's keys and ``n_points``).

``day_start`` is the start of the file's UTC day in seconds since the epoch, the value
``pick_timeline`` reports as its bucket, computed with the same floating-point steps as its SQL
(PostgreSQL's ``floor``; on SQLite, which may lack ``floor``, a cast that rounds toward zero, stepped
down when above), so both always put a file in the same day. Files whose listing gave no mtime are not
counted here: they are ``pick_totals`` minus this table, and the timeline reads them so.

The triggers are built like those of migration 0009 (see there): row triggers on SQLite, statement
triggers with transition tables on PostgreSQL, deltas applied in key order, keys of a project being
deleted skipped. A later migration that rebuilds ``picks`` on SQLite must create them again (a test
checks that they exist at head).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 23:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The SQL is spelled out here, not imported, so this revision keeps meaning what it meant.

KEY = ("project_id", "day_start", "object_name", "user_id", "session_id", "layer")
#: what the rest of a partial day reads besides the mtime: on PostgreSQL the index carries it, so that range is
#: read from the index alone (cold at 100,000 runs: 19 ms instead of 530 ms of random heap reads)
COVERED = ["object_name", "user_id", "session_id", "layer", "n_points"]
TRIGGERS = ("pick_day_totals_after_insert", "pick_day_totals_after_update", "pick_day_totals_after_delete")
DAY_S = "86400"


def day_start(mtime: str, postgres: bool) -> str:
    """The start of ``mtime``'s UTC day as ``Catalog.pick_timeline`` computes it (NULL for a NULL mtime)."""
    if postgres:
        return f"(floor({mtime} / {DAY_S}::float8) * {DAY_S}::float8)"
    ratio = f"({mtime} / {DAY_S}.0)"
    return f"((CAST({ratio} AS BIGINT) - CAST({ratio} < CAST({ratio} AS BIGINT) AS INTEGER)) * {DAY_S}.0)"


def _key_values(row: str, postgres: bool) -> list[str]:
    """The key of one ``picks`` row (``row`` is ``NEW.``, ``OLD.`` or empty)."""
    return [f"{row}project_id", day_start(f"{row}mtime", postgres), *(f"{row}{c}" for c in KEY[2:])]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "pick_day_totals",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("day_start", sa.Float(), nullable=False),
        sa.Column("object_name", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("layer", sa.String(length=8), nullable=False),
        sa.Column("n_picks", sa.BigInteger(), nullable=False),
        sa.Column("n_points", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_pick_day_totals_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(*KEY, name=op.f("pk_pick_day_totals")),
    )
    op.create_index(
        op.f("ix_picks_project_id_mtime"), "picks", ["project_id", "mtime"], unique=False, postgresql_include=COVERED
    )
    values = ", ".join(_key_values("", postgres))
    op.execute(
        f"INSERT INTO pick_day_totals ({', '.join(KEY)}, n_picks, n_points) "
        f"SELECT {values}, count(*), sum(n_points) FROM picks WHERE mtime IS NOT NULL GROUP BY {values}"
    )
    for stmt in _pg_triggers() if postgres else _sqlite_triggers():
        op.execute(stmt)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON picks" if postgres else f"DROP TRIGGER IF EXISTS {name}")
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_index(op.f("ix_picks_project_id_mtime"), table_name="picks")
    op.drop_table("pick_day_totals")


def _sqlite_triggers() -> list[str]:
    """Row triggers: add the new row's share, take away the old row's, drop a key whose count reaches zero.

    A row without an mtime has a NULL day: it inserts nothing (the SELECT's WHERE) and matches no key."""
    keys = ", ".join(KEY)
    new, old = _key_values("NEW.", False), _key_values("OLD.", False)
    add = (
        f"INSERT INTO pick_day_totals ({keys}, n_picks, n_points) SELECT {', '.join(new)}, 1, NEW.n_points "
        f"WHERE NEW.mtime IS NOT NULL ON CONFLICT ({keys}) DO UPDATE SET n_picks = n_picks + excluded.n_picks, "
        "n_points = n_points + excluded.n_points;"
    )
    match = " AND ".join(f"{c} = {v}" for c, v in zip(KEY, old, strict=True))
    take = (
        f"UPDATE pick_day_totals SET n_picks = n_picks - 1, n_points = n_points - OLD.n_points WHERE {match}; "
        f"DELETE FROM pick_day_totals WHERE {match} AND n_picks = 0;"
    )
    moved = " OR ".join(f"{o} IS NOT {n}" for o, n in zip([*old, "OLD.n_points"], [*new, "NEW.n_points"], strict=True))
    watched = ", ".join([*(c for c in KEY if c != "day_start"), "mtime", "n_points"])
    return [
        f"CREATE TRIGGER pick_day_totals_after_insert AFTER INSERT ON picks BEGIN {add} END",
        f"CREATE TRIGGER pick_day_totals_after_delete AFTER DELETE ON picks BEGIN {take} END",
        # an mtime that moves within its day (every rewrite of a file) changes nothing here
        f"CREATE TRIGGER pick_day_totals_after_update AFTER UPDATE OF {watched} ON picks WHEN {moved} "
        f"BEGIN {take} {add} END",
    ]


def _pg_triggers() -> list[str]:
    """Statement triggers: each statement's rows, grouped by key, applied as one ordered upsert of deltas."""
    keys = ", ".join(KEY)

    def side(table: str, sign: str) -> str:
        return (
            f"SELECT {', '.join(_key_values('', True))}, {sign}1 AS n_picks, {sign}n_points AS n_points "
            f"FROM {table} WHERE mtime IS NOT NULL"
        )

    def apply(sides: list[str], old: bool) -> str:
        grouped = (
            f"SELECT {keys}, sum(n_picks) AS n_picks, sum(n_points) AS n_points FROM ({' UNION ALL '.join(sides)}) "
            f"AS d({keys}, n_picks, n_points) GROUP BY {keys} HAVING sum(n_picks) <> 0 OR sum(n_points) <> 0"
        )
        sql = (
            f"INSERT INTO pick_day_totals AS t ({keys}, n_picks, n_points) SELECT g.* FROM ({grouped}) AS g "
            "WHERE EXISTS (SELECT 1 FROM projects p WHERE p.id = g.project_id) "
            f"ORDER BY {keys} ON CONFLICT ({keys}) DO UPDATE SET n_picks = t.n_picks + excluded.n_picks, "
            "n_points = t.n_points + excluded.n_points;"
        )
        if old:  # only rows that went away can bring a key to zero
            match = " AND ".join(f"t.{c} = o.{c}" for c in KEY)
            gone = f"SELECT DISTINCT {', '.join(_key_values('', True))} FROM old_rows WHERE mtime IS NOT NULL"
            sql += f" DELETE FROM pick_day_totals t USING ({gone}) AS o({keys}) WHERE {match} AND t.n_picks = 0;"
        return sql

    bodies = {
        "insert": ("REFERENCING NEW TABLE AS new_rows", apply([side("new_rows", "+")], old=False)),
        "update": (
            "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
            apply([side("new_rows", "+"), side("old_rows", "-")], old=True),
        ),
        "delete": ("REFERENCING OLD TABLE AS old_rows", apply([side("old_rows", "-")], old=True)),
    }
    out = []
    for event, (referencing, body) in bodies.items():
        name = f"pick_day_totals_after_{event}"
        out.append(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$")
        out.append(
            f"CREATE TRIGGER {name} AFTER {event.upper()} ON picks {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )
    return out

"""pick_totals, object_totals, tomogram_totals: the catalog's aggregates, kept by database triggers

At 100,000 runs (1.1 M pick files) "points by session" and "picks per object per user" read every
``picks`` row (0.2-0.5 s warm on PostgreSQL, 20 s cold), "coverage per object" every ``run_objects`` row
and "tomogram types per voxel size" every tomogram. ``pick_totals`` holds pick files and points per
(project, object, user, session, layer), a few dozen rows; ``object_totals`` runs (with and without
picks), pick files and points per (project, object); ``tomogram_totals`` runs per (project, voxel size,
tomogram type). Those questions then read a handful of rows.

Triggers keep them equal to their source tables after every statement, whoever writes: the indexer's
batched upserts, deletes of vanished files, cascades when a run or a project goes, the object API, or a
person with ``psql``. On SQLite they are row triggers (a few microseconds a row). On PostgreSQL they are
statement-level AFTER triggers with transition tables: one grouped upsert per statement instead of one
plpgsql call per row. Each upsert visits its keys in key order, so two writers cannot deadlock on them,
and it skips keys whose project is being deleted (that cascade takes the totals with it).

A later migration that rebuilds ``picks``, ``run_objects``, ``tomograms`` or ``voxel_spacings`` on SQLite
(``batch_alter_table`` copies the table and drops the old one, triggers included) must create the
triggers again: ``tests/test_totals.py`` checks that they exist at head on both backends.

The upgrade fills the tables from the catalog as it stands, so no reindex is needed. On PostgreSQL it
also asks autovacuum to visit ``run_objects`` after 1 % of its rows changed instead of 20 %: "runs lacking
X" is an index-only scan of it, which reads the table itself for every row of a page that changed since
the last vacuum (11 s cold at 100,000 runs right after a full index).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The SQL is spelled out here, not imported, so this revision keeps meaning what it meant.

PICK_KEY = ("project_id", "object_name", "user_id", "session_id", "layer")
OBJECT_KEY = ("project_id", "object_name")

#: (summary table, source table, key columns, {summary column: what one source row adds, ``{r}`` its alias})
SUMMARIES = (
    ("pick_totals", "picks", PICK_KEY, {"n_picks": "1", "n_points": "{r}n_points"}),
    (
        "object_totals",
        "run_objects",
        OBJECT_KEY,
        {
            "n_runs": "1",
            "n_runs_with_picks": "CASE WHEN {r}n_picks > 0 THEN 1 ELSE 0 END",
            "n_picks": "{r}n_picks",
            "n_points": "{r}n_points",
        },
    ),
)


def upgrade() -> None:
    op.create_table(
        "pick_totals",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("object_name", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("layer", sa.String(length=8), nullable=False),
        sa.Column("n_picks", sa.BigInteger(), nullable=False),
        sa.Column("n_points", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_pick_totals_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(*PICK_KEY, name=op.f("pk_pick_totals")),
    )
    op.create_table(
        "object_totals",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("object_name", sa.String(length=255), nullable=False),
        sa.Column("n_runs", sa.BigInteger(), nullable=False),
        sa.Column("n_runs_with_picks", sa.BigInteger(), nullable=False),
        sa.Column("n_picks", sa.BigInteger(), nullable=False),
        sa.Column("n_points", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_object_totals_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(*OBJECT_KEY, name=op.f("pk_object_totals")),
    )
    op.create_table(
        "tomogram_totals",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("voxel_size", sa.Float(), nullable=False),
        sa.Column("tomo_type", sa.String(length=255), nullable=False),
        sa.Column("n_runs", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_tomogram_totals_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("project_id", "voxel_size", "tomo_type", name=op.f("pk_tomogram_totals")),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute(
        "INSERT INTO tomogram_totals (project_id, voxel_size, tomo_type, n_runs) "
        "SELECT v.project_id, v.voxel_size, t.tomo_type, count(DISTINCT t.voxel_spacing_id) "
        "FROM tomograms t JOIN voxel_spacings v ON v.id = t.voxel_spacing_id GROUP BY v.project_id, v.voxel_size, t.tomo_type"
    )
    for stmt in _pg_tomogram_triggers() if postgres else _sqlite_tomogram_triggers():
        op.execute(stmt)
    for summary, source, key, values in SUMMARIES:
        keys = ", ".join(key)
        sums = ", ".join(f"sum({expr.format(r='')})" for expr in values.values())
        op.execute(
            f"INSERT INTO {summary} ({keys}, {', '.join(values)}) SELECT {keys}, {sums} FROM {source} GROUP BY {keys}"
        )
        for stmt in (_pg_triggers if postgres else _sqlite_triggers)(summary, source, key, values):
            op.execute(stmt)
    if postgres:
        op.execute(
            "ALTER TABLE run_objects SET (autovacuum_vacuum_scale_factor = 0.01, "
            "autovacuum_vacuum_insert_scale_factor = 0.01)"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for summary, source, _key, _values in SUMMARIES:
        for event in ("insert", "update", "delete"):
            name = f"{summary}_after_{event}"
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {source}" if postgres else f"DROP TRIGGER IF EXISTS {name}")
            if postgres:
                op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    for name, table in TOMOGRAM_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}" if postgres else f"DROP TRIGGER IF EXISTS {name}")
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    if postgres:
        op.execute(
            "ALTER TABLE run_objects RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_insert_scale_factor)"
        )
    op.drop_table("tomogram_totals")
    op.drop_table("object_totals")
    op.drop_table("pick_totals")


def _sqlite_triggers(summary: str, source: str, key: Sequence[str], values: dict[str, str]) -> list[str]:
    """Row triggers: add the new row's share, take away the old row's, drop a key whose count reaches zero."""
    keys = ", ".join(key)
    count = next(iter(values))  # n_picks / n_runs: zero means no source row has this key any more
    new_values = ", ".join(expr.format(r="NEW.") for expr in values.values())
    add = (
        f"INSERT INTO {summary} ({keys}, {', '.join(values)}) VALUES ({', '.join('NEW.' + c for c in key)}, "
        f"{new_values}) ON CONFLICT ({keys}) DO UPDATE SET {', '.join(f'{c} = {c} + excluded.{c}' for c in values)};"
    )
    old_key = " AND ".join(f"{c} = OLD.{c}" for c in key)
    minus = ", ".join(f"{c} = {c} - ({expr.format(r='OLD.')})" for c, expr in values.items())
    take = f"UPDATE {summary} SET {minus} WHERE {old_key}; DELETE FROM {summary} WHERE {old_key} AND {count} = 0;"
    watched = [*key, *(c for c in ("n_picks", "n_points") if any("{r}" + c in e for e in values.values()))]
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in watched)
    return [
        f"CREATE TRIGGER {summary}_after_insert AFTER INSERT ON {source} BEGIN {add} END",
        f"CREATE TRIGGER {summary}_after_delete AFTER DELETE ON {source} BEGIN {take} END",
        f"CREATE TRIGGER {summary}_after_update AFTER UPDATE OF {', '.join(watched)} ON {source} "
        f"WHEN {changed} BEGIN {take} {add} END",
    ]


def _pg_triggers(summary: str, source: str, key: Sequence[str], values: dict[str, str]) -> list[str]:
    """Statement triggers: each statement's rows, grouped by key, applied as one ordered upsert of deltas."""
    keys = ", ".join(key)
    count = next(iter(values))

    def side(table: str, sign: str) -> str:
        shares = ", ".join(f"{sign}({expr.format(r='')}) AS {c}" for c, expr in values.items())
        return f"SELECT {keys}, {shares} FROM {table}"

    def apply(sides: list[str], old: bool) -> str:
        sums = ", ".join(f"sum({c}) AS {c}" for c in values)
        nonzero = " OR ".join(f"sum({c}) <> 0" for c in values)
        grouped = f"SELECT {keys}, {sums} FROM ({' UNION ALL '.join(sides)}) AS d GROUP BY {keys} HAVING {nonzero}"
        plus = ", ".join(f"{c} = t.{c} + excluded.{c}" for c in values)
        sql = (
            f"INSERT INTO {summary} AS t ({keys}, {', '.join(values)}) SELECT g.* FROM ({grouped}) AS g "
            f"WHERE EXISTS (SELECT 1 FROM projects p WHERE p.id = g.project_id) "
            f"ORDER BY {keys} ON CONFLICT ({keys}) DO UPDATE SET {plus};"
        )
        if old:  # only rows that went away can bring a key to zero
            match = " AND ".join(f"t.{c} = o.{c}" for c in key)
            gone = f"SELECT DISTINCT {keys} FROM old_rows"
            sql += f" DELETE FROM {summary} t USING ({gone}) AS o WHERE {match} AND t.{count} = 0;"
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
        name = f"{summary}_after_{event}"
        out.append(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$")
        out.append(
            f"CREATE TRIGGER {name} AFTER {event.upper()} ON {source} {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )
    return out


# ------------------------------------------------------------------ tomogram_totals
#
# "In how many runs does each tomogram type exist, per voxel size" counts distinct runs: a run's tomogram
# of one type may be in both layers (two rows, one run), and the voxel size lives in voxel_spacings. So a
# tomogram row counts when it is the first of its (voxel spacing, type) pair, and stops counting when it
# was the last; the voxel size comes from its voxel spacing. When a voxel spacing itself goes (its run
# went, or it vanished), its tomograms can no longer find their voxel size once the cascade reaches them:
# a trigger on voxel_spacings takes its types away just before the row goes, and the tomograms' own
# trigger then finds no voxel spacing and leaves the totals alone. Whichever cascade runs first (runs ->
# tomograms or runs -> voxel_spacings -> tomograms), each pair is taken away once.

#: (trigger, table) of the tomogram_totals triggers
TOMOGRAM_TRIGGERS = (
    ("tomogram_totals_after_insert", "tomograms"),
    ("tomogram_totals_after_update", "tomograms"),
    ("tomogram_totals_after_delete", "tomograms"),
    ("tomogram_totals_before_voxel_spacing_delete", "voxel_spacings"),
)

_PAIR = "SELECT 1 FROM tomograms t WHERE t.voxel_spacing_id = {r}.voxel_spacing_id AND t.tomo_type = {r}.tomo_type"
_VS_GOES = (
    "UPDATE tomogram_totals SET n_runs = n_runs - 1 WHERE project_id = OLD.project_id AND voxel_size = OLD.voxel_size "
    "AND tomo_type IN (SELECT tomo_type FROM tomograms WHERE voxel_spacing_id = OLD.id); "
    "DELETE FROM tomogram_totals WHERE project_id = OLD.project_id AND voxel_size = OLD.voxel_size AND n_runs = 0;"
)


def _sqlite_tomogram_triggers() -> list[str]:
    """Row triggers: +1 for the first row of a pair, -1 when the last one goes (if its voxel spacing is still there)."""
    first = (
        "INSERT INTO tomogram_totals (project_id, voxel_size, tomo_type, n_runs) "
        "SELECT v.project_id, v.voxel_size, NEW.tomo_type, 1 FROM voxel_spacings v WHERE v.id = NEW.voxel_spacing_id "
        f"AND (SELECT count(*) FROM ({_PAIR.format(r='NEW')})) = 1 "
        "ON CONFLICT (project_id, voxel_size, tomo_type) DO UPDATE SET n_runs = n_runs + 1;"
    )
    last = (
        "UPDATE tomogram_totals SET n_runs = n_runs - 1 WHERE (project_id, voxel_size, tomo_type) = "
        "(SELECT v.project_id, v.voxel_size, OLD.tomo_type FROM voxel_spacings v WHERE v.id = OLD.voxel_spacing_id) "
        f"AND NOT EXISTS ({_PAIR.format(r='OLD')}); "
        "DELETE FROM tomogram_totals WHERE project_id = OLD.project_id AND tomo_type = OLD.tomo_type AND n_runs = 0;"
    )
    moved = "OLD.voxel_spacing_id IS NOT NEW.voxel_spacing_id OR OLD.tomo_type IS NOT NEW.tomo_type"
    return [
        f"CREATE TRIGGER tomogram_totals_after_insert AFTER INSERT ON tomograms BEGIN {first} END",
        f"CREATE TRIGGER tomogram_totals_after_delete AFTER DELETE ON tomograms BEGIN {last} END",
        "CREATE TRIGGER tomogram_totals_after_update AFTER UPDATE OF voxel_spacing_id, tomo_type ON tomograms "
        f"WHEN {moved} BEGIN {last} {first} END",
        f"CREATE TRIGGER tomogram_totals_before_voxel_spacing_delete BEFORE DELETE ON voxel_spacings BEGIN {_VS_GOES} END",
    ]


def _pg_tomogram_triggers() -> list[str]:
    """Statement triggers on tomograms (per pair: present now, present before the statement), a row trigger
    on voxel_spacings (deleting voxel spacings is rare: a run or a voxel size went)."""

    def apply(sides: list[str], old: bool) -> str:
        pairs = (
            f"SELECT voxel_spacing_id, tomo_type, sum(dn) AS moved FROM ({' UNION ALL '.join(sides)}) AS d "
            "GROUP BY voxel_spacing_id, tomo_type"
        )
        # present before = (rows now - rows this statement added + rows it removed) > 0
        delta = (
            "SELECT v.project_id, v.voxel_size, p.tomo_type, "
            "sum(CASE WHEN c.n > 0 THEN 1 ELSE 0 END - CASE WHEN c.n - p.moved > 0 THEN 1 ELSE 0 END) AS n_runs "
            f"FROM ({pairs}) AS p JOIN voxel_spacings v ON v.id = p.voxel_spacing_id "
            "CROSS JOIN LATERAL (SELECT count(*) AS n FROM tomograms t "
            "WHERE t.voxel_spacing_id = p.voxel_spacing_id AND t.tomo_type = p.tomo_type) AS c "
            "GROUP BY v.project_id, v.voxel_size, p.tomo_type"
        )
        sql = (
            f"INSERT INTO tomogram_totals AS t (project_id, voxel_size, tomo_type, n_runs) SELECT * FROM ({delta}) AS g "
            "WHERE g.n_runs <> 0 ORDER BY project_id, voxel_size, tomo_type "
            "ON CONFLICT (project_id, voxel_size, tomo_type) DO UPDATE SET n_runs = t.n_runs + excluded.n_runs;"
        )
        if old:
            sql += (
                " DELETE FROM tomogram_totals WHERE n_runs = 0 "
                "AND project_id IN (SELECT DISTINCT project_id FROM old_rows);"
            )
        return sql

    new_side = "SELECT voxel_spacing_id, tomo_type, 1 AS dn FROM new_rows"
    old_side = "SELECT voxel_spacing_id, tomo_type, -1 AS dn FROM old_rows"
    bodies = {
        "insert": ("REFERENCING NEW TABLE AS new_rows", apply([new_side], old=False)),
        "update": ("REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows", apply([new_side, old_side], old=True)),
        "delete": ("REFERENCING OLD TABLE AS old_rows", apply([old_side], old=True)),
    }
    out = []
    for event, (referencing, body) in bodies.items():
        name = f"tomogram_totals_after_{event}"
        out.append(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$")
        out.append(
            f"CREATE TRIGGER {name} AFTER {event.upper()} ON tomograms {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )
    name = "tomogram_totals_before_voxel_spacing_delete"
    out.append(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {_VS_GOES} RETURN OLD; END $$")
    out.append(f"CREATE TRIGGER {name} BEFORE DELETE ON voxel_spacings FOR EACH ROW EXECUTE FUNCTION {name}()")
    return out

"""PostgreSQL: a pick's points go with it through one statement trigger, not a foreign key checked per point

A foreign key on ``points.pick_id`` makes PostgreSQL look up the referenced pick for every point
inserted (a ``SELECT … FOR KEY SHARE`` on ``picks`` per row, run by its internal trigger). Points are
the bulk of every index: at 5,000 runs that check was ~30 % of the full index's wall time (13.4-13.7 s
with it, 9.5-9.6 s without, on the same project and machine). The key bought two things: a point cannot
name a pick that does not exist, and deleting a pick deletes its points. Only the indexer's writer
inserts points, in the transaction that inserted or updated their pick, so the first is kept by
construction; the second is kept here by an ``AFTER DELETE`` trigger on ``picks`` that fires once per
statement with the deleted rows as a transition table (so a cascade from a removed run or project, or
a batch of vanished files, is one ``DELETE … WHERE pick_id IN (…)``).

SQLite keeps its key: the indexer's bulk batches already run there with foreign-key enforcement off,
so it costs nothing on the path that matters, and its row triggers would be dearer than the key.
The models keep declaring the key (the ORM relationship and SQLite's schema come from it);
``catalog.db.SCHEMA_DIFFERENCES`` names this one place where PostgreSQL's schema differs on purpose.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 02:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_points_pick_id_picks"
TRIGGER = "points_follow_deleted_picks"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "DELETE FROM points WHERE pick_id IN (SELECT id FROM old_rows); RETURN NULL; END $$"
    )
    op.execute(
        f"CREATE TRIGGER {TRIGGER} AFTER DELETE ON picks REFERENCING OLD TABLE AS old_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {TRIGGER}()"
    )
    # points left behind by anything that bypassed the key cannot exist yet; the key goes last
    op.drop_constraint(FK, "points", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DELETE FROM points WHERE NOT EXISTS (SELECT 1 FROM picks WHERE picks.id = points.pick_id)")
    op.create_foreign_key(FK, "points", "picks", ["pick_id"], ["id"], ondelete="CASCADE")
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON picks")
    op.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")

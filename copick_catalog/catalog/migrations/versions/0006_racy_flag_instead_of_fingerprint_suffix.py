"""racy: a boolean column instead of a "|racy" suffix on the fingerprint

A file indexed within a couple of seconds of its mtime is "racily clean" (git's rule): the next index
must re-read it even if its fingerprint looks equal. That used to be spelled as a ``|racy`` suffix
written in one module, compared in another and stripped in a third; it is now a column. The upgrade
moves existing suffixes into the column, so no file is re-read because of the change.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("tomograms", "features", "picks", "meshes", "filaments", "segmentations", "density_maps")
SUFFIX = "|racy"


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("racy", sa.Boolean(), nullable=False, server_default=sa.false()))
        t = sa.table(table, sa.column("fingerprint", sa.String), sa.column("racy", sa.Boolean))
        op.execute(
            t.update()
            .where(t.c.fingerprint.like("%" + SUFFIX))
            .values(
                racy=True, fingerprint=sa.func.substr(t.c.fingerprint, 1, sa.func.length(t.c.fingerprint) - len(SUFFIX))
            )
        )
    # (no ALTER of the server default afterwards: on SQLite that would rebuild the tables, and dropping the
    # old ones would cascade to points and packed_points)


def downgrade() -> None:
    for table in TABLES:
        t = sa.table(table, sa.column("fingerprint", sa.String), sa.column("racy", sa.Boolean))
        op.execute(t.update().where(t.c.racy.is_(True)).values(fingerprint=t.c.fingerprint + SUFFIX))
        with op.batch_alter_table(table) as batch:
            batch.drop_column("racy")

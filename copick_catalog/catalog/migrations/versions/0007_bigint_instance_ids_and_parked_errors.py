"""points.instance_id as BIGINT; index_errors.fingerprint, so a file that keeps failing is parked

Instance ids up to 2**53 (what the packed float64 copy holds exactly) overflowed PostgreSQL's 32-bit
integer (SQLite's integers are 64-bit already, so both now store the same values). An error row now
records the fingerprint of the content that failed: an index (or the daemon) reads that file again
only once it changes, instead of on every run.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # SQLite integers are 64-bit already: no table rebuild
        op.alter_column(
            "points", "instance_id", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False
        )
    with op.batch_alter_table("index_errors") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("index_errors") as batch:
        batch.drop_column("fingerprint")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "points", "instance_id", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False
        )

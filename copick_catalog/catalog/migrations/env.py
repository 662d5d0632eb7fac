"""Alembic environment: runs the catalog migrations against a connection or a URL.

Where the URL comes from, first match wins: a connection handed over by ``db.ensure_schema``,
``alembic -x db=URL``, the ``COPICK_CATALOG_DB`` environment variable, ``sqlalchemy.url``.
"""

from __future__ import annotations

import os

from alembic import context

from copick_catalog.catalog.db import create_engine, normalize_url
from copick_catalog.catalog.schema import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("db") or os.environ.get("COPICK_CATALOG_DB")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database: pass -x db=URL or set COPICK_CATALOG_DB")
    return normalize_url(url)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    if connection.dialect.name == "sqlite" and not connection.in_transaction():
        # Batch migrations rebuild SQLite tables (create, copy, drop, rename); with foreign keys on, the
        # drop would cascade to every child row. The caller turns them back on afterwards.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url())
    with engine.connect().execution_options(write=True) as conn:
        _run(conn)
        conn.commit()
    engine.dispose()  # (its connections had foreign keys off; none is reused)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

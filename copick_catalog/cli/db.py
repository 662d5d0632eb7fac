"""``copick-catalog db``: schema upgrades and the read-only role for shared PostgreSQL catalogs."""

from __future__ import annotations

import click
from rich.markup import escape

from .common import console, friendly


@click.group()
def db() -> None:
    """Catalog database maintenance."""


@db.command("upgrade")
@click.option("--db", "url", required=True, metavar="URL", help="Database URL or SQLite file.")
@friendly
def db_upgrade(url: str) -> None:
    """Create or upgrade the catalog schema to the current version."""
    from ..catalog.db import create_engine, current_revision, ensure_schema

    engine = create_engine(url)
    before = current_revision(engine)
    head = ensure_schema(engine)
    console.print(f"schema at {head}" + ("" if before == head else f" (was {before or 'empty'})"))


@db.command("readonly-role")
@click.argument("name")
@click.option(
    "--db", "url", required=True, metavar="URL", help="PostgreSQL catalog URL of a role that may create roles."
)
@click.option("--password", default=None, help="Password for the new role (omit for trust/peer/cert setups).")
@friendly
def db_readonly_role(name: str, url: str, password: str | None) -> None:
    """Create a PostgreSQL role NAME that can only SELECT from the catalog (for `sql` on shared catalogs)."""
    from ..catalog.db import create_engine
    from ..catalog.sql import create_readonly_role

    engine = create_engine(url)
    try:
        for stmt in create_readonly_role(engine, name, password):
            console.print(escape(stmt))
    finally:
        engine.dispose()
    console.print(
        f"role {escape(name)} can only read; use it with: copick-catalog sql '...' CONFIG --db "
        f"{escape(engine.url.set(username=name, password=None).render_as_string(hide_password=True))}"
    )

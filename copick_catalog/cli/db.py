"""``copick-catalog db``: schema upgrades and the read-only role for shared PostgreSQL catalogs."""

from __future__ import annotations

import click
from rich.markup import escape

from .common import FORMAT, console, emit, friendly


@click.group()
def db() -> None:
    """Catalog database maintenance."""


@db.command("upgrade")
@click.option("--db", "url", required=True, metavar="URL", help="Database URL or SQLite file.")
@friendly
def db_upgrade(url: str) -> None:
    """Create or upgrade the catalog schema to the current version."""
    from ..catalog import Catalog

    before, head = Catalog.upgrade(url)
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
    import sqlalchemy as sa

    from ..catalog import Catalog
    from ..catalog.db import normalize_url

    for stmt in Catalog.create_readonly_role(url, name, password):
        console.print(escape(stmt))
    reader = sa.make_url(normalize_url(url)).set(username=name, password=None)
    console.print(
        f"role {escape(name)} can only read; use it with: copick-catalog sql '...' CONFIG --db "
        f"{escape(reader.render_as_string(hide_password=True))}"
    )


@click.command()
@click.option("--db", "url", required=True, metavar="URL", help="Catalog database URL or SQLite file.")
@FORMAT
@friendly
def projects(url: str, fmt: str) -> None:
    """List the projects a catalog database holds: roots, last index, runs, pick files, points, open errors.

    Reads only, and needs no config file: on a lab's shared catalog, the way to see what is there.
    """
    import datetime

    from ..catalog import Catalog

    rows = []
    for p in Catalog.projects(url):
        row = p.as_dict()
        when = p.last_indexed_at
        row["last_indexed_at"] = (
            None if when is None else datetime.datetime.fromtimestamp(when).isoformat(sep=" ", timespec="seconds")
        )
        rows.append(row)
    cols = ["id", "name", "runs", "pick_files", "points", "open_errors", "last_indexed_at", "static_url", "overlay_url"]
    emit(rows, [*cols, "config_path"] if fmt != "table" else cols, fmt, "projects")

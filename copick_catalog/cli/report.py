"""``copick-catalog report`` and ``serve``: the campaign report as a file, or live (thin skins over
:mod:`copick_catalog.report`, imported only when one of them runs)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import ALL_PROJECTS, CONFIG_ARG, DB_OPTION, friendly


@click.command()
@CONFIG_ARG
@DB_OPTION
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write (self-contained: open it anywhere, offline).",
)
@ALL_PROJECTS
@friendly
def report(config: Path, db: str | None, out: Path, all_projects: bool) -> None:
    """Write the campaign report of CONFIG: coverage of runs x objects per user, progress, what is missing.

    One self-contained HTML file, read from the catalog (opened read-only): index first for current numbers.
    With --all-projects, --out lists every project of the catalog database, each linking to its own report.
    """
    from ..catalog import Catalog
    from ..catalog.catalog import default_db_for
    from ..report import write_report, write_reports

    if all_projects:
        pages = write_reports(db or default_db_for(Path(config).expanduser().resolve()), out)
        click.echo(f"wrote {pages[0]} and {len(pages) - 1} project report(s) beside it")
        return
    with Catalog.open(config, db=db, read_only=True) as cat:
        path = write_report(cat, out)
    click.echo(f"wrote {path}")


@click.command()
@CONFIG_ARG
@DB_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: any free one).",
)
@friendly
def serve(config: Path, db: str | None, host: str, port: int) -> None:
    """Serve the campaign report of CONFIG live over HTTP, rebuilt from the catalog (read-only) on every load.

    Runs until Ctrl-C; binds to 127.0.0.1 unless --host says otherwise.
    """
    from ..report import serve as serve_report

    serve_report(
        config, db, host=host, port=port, ready=lambda url: click.echo(f"serving the report on {url} (Ctrl-C stops)")
    )
    click.echo("stopped")

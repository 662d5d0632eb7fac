"""``copick-catalog``: a thin click skin over the Python API (each command calls the library).

Errors a user can cause are printed as one line (no traceback) and exit with status 2; ``--debug``
shows the traceback. Each module here holds a few commands; this one makes the group.
"""

from __future__ import annotations

import logging

import click

from . import db, export, index, query, report, sample, watch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Verbose logging and full tracebacks.")
@click.version_option(package_name="copick-catalog")
def main(debug: bool) -> None:
    """SQL-indexed catalog for copick cryo-ET projects."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


for _command in (
    index.index,
    index.errors,
    query.query,
    query.sql,
    query.stats,
    watch.watch,
    watch.status,
    db.db,
    db.projects,
    sample.sample,
    sample.demo,
    report.report,
    report.serve,
    export.export,
):
    main.add_command(_command)

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    main()

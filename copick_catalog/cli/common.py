"""What every command shares: consoles, the CONFIG/--db options, one-line errors, and printing rows."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import LockBusyError, explain

console = Console(stderr=False)
err_console = Console(stderr=True, soft_wrap=True)  # one-line errors stay one line

DB_OPTION = click.option(
    "--db",
    "db",
    default=None,
    metavar="URL",
    help="Catalog database: SQLAlchemy URL or SQLite file "
    "(default: $COPICK_CATALOG_DB or <config stem>.catalog.sqlite next to the config).",
)
CONFIG_ARG = click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every failure becomes one line: what went wrong and how to fix it (exit 2), or for a bug, that it is
    one (exit 1). ``--debug`` shows the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LockBusyError as exc:
            err_console.print(f"[yellow]busy:[/] {escape(str(exc))}")
            sys.exit(75)  # EX_TEMPFAIL: cron wrappers can tell "busy" from "broken"
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)
        except Exception as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            message = explain(exc)
            if message is None:
                detail = " ".join(str(exc).split())[:300]
                err_console.print(
                    f"[red]internal error:[/] {type(exc).__name__}: {escape(detail)} (run again with "
                    "--debug for the traceback, and please report it)"
                )
                sys.exit(1)
            err_console.print(f"[red]error:[/] {escape(message)}")
            sys.exit(2)

    return wrapper


def open_catalog(config: Path, db: str | None) -> Any:
    from ..catalog import Catalog

    return Catalog.open(config, db=db)


ALL_PROJECTS = click.option(
    "--all-projects",
    is_flag=True,
    help="Answer for every project in the catalog database (CONFIG's, or --db), with a project column.",
)


@contextlib.contextmanager
def each_catalog(config: Path, db: str | None, all_projects: bool) -> Iterator[list[tuple[str | None, Any]]]:
    """CONFIG's catalog as ``[(None, cat)]``, or with ``all_projects`` every project of its database as
    ``[(name, cat), ...]`` (opened read-only from the database: other projects' configs need not be here)."""
    from ..catalog import Catalog
    from ..catalog.catalog import default_db_for

    if not all_projects:
        with Catalog.open(config, db=db) as cat:
            yield [(None, cat)]
        return
    url = db or default_db_for(Path(config).expanduser().resolve())
    cats = Catalog.open_all(url)
    try:
        yield [(c.config.name, c) for c in cats]
    finally:
        for c in cats:
            c.close()


def labelled(project: str | None, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with the project as their first column when answering across projects."""
    return list(rows) if project is None else [{"project": project, **r} for r in rows]


def with_project(all_projects: bool, columns: Sequence[str]) -> list[str]:
    return ["project", *columns] if all_projects else list(columns)


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, title: str | None = None) -> None:
    """Print rows as a rich table, JSON lines-free JSON array, or CSV."""
    if fmt == "json":
        click.echo(json.dumps(list(rows), indent=2, default=str))
    elif fmt == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    elif len(rows) > RICH_TABLE_ROWS:
        _plain_table(rows, columns, title)
    else:
        t = Table(*columns, title=title)
        for r in rows:
            t.add_row(*("" if r.get(c) is None else escape(str(r.get(c))) for c in columns))
        console.print(t)
        console.print(f"{len(rows)} row(s)")


#: Above this many rows a table is printed as aligned plain text: rich lays out 10,000 rows in ~10 s.
RICH_TABLE_ROWS = 300


def _plain_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None) -> None:
    """Aligned columns without rich's layout engine: a whole-project listing prints in milliseconds."""
    cells = [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    out = sys.stdout
    if title:
        out.write(f"{title}\n")
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    out.writelines("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in cells)
    out.write(f"{len(rows)} row(s) (use --format csv or json to process them)\n")
    out.flush()


def print_report(report: Any) -> None:
    t = Table(title="index report", show_header=True)
    for col in ("added", "changed", "removed", "unchanged", "errors", "runs", "files read", "seconds"):
        t.add_column(col, justify="right")
    t.add_row(
        *(
            str(v)
            for v in (
                report.added,
                report.changed,
                report.removed,
                report.unchanged,
                report.errors,
                report.runs,
                report.files_read,
                f"{report.duration_s:.2f}",
            )
        )
    )
    console.print(t)

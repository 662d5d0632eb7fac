"""``copick-catalog index`` and ``errors``: bring the catalog up to date, and see what could not be read."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from .common import CONFIG_ARG, DB_OPTION, console, err_console, friendly, open_catalog, print_report


@click.command()
@CONFIG_ARG
@DB_OPTION
@click.option(
    "--trigger",
    type=click.Choice(["cli", "cron", "watch", "api"]),
    default="cli",
    help="Recorded in index_runs so `status` can tell cron runs from manual ones.",
)
@click.option(
    "--wait/--skip-if-busy",
    default=True,
    help="When another index run holds the lock: queue behind it (default) or exit 75 at once.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--allow-empty-root",
    is_flag=True,
    help="Accept that a root which lists as empty (or lost ExperimentRuns) really is empty, and remove its rows.",
)
@friendly
def index(
    config: Path, db: str | None, trigger: str, wait: bool, as_json: bool, quiet: bool, allow_empty_root: bool
) -> None:
    """Index (incrementally) the project described by CONFIG into the catalog."""
    from rich.progress import Progress

    cat = open_catalog(config, db)
    with cat:
        if quiet or as_json or not console.is_terminal:
            report = cat.index(trigger=trigger, wait=wait, allow_empty_root=allow_empty_root)
        else:
            with Progress(console=err_console, transient=True) as progress:
                task = progress.add_task("reading changed files", total=None)

                def tick(_stage: str, done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                report = cat.index(trigger=trigger, wait=wait, progress=tick, allow_empty_root=allow_empty_root)
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
            return
        print_report(report)
        for msg in report.error_messages[:20]:
            err_console.print(f"[red]  ! {msg}[/]")


@click.command()
@CONFIG_ARG
@DB_OPTION
@click.option("--warnings/--no-warnings", default=True, help="Also list warnings (names resolved with a guess).")
@friendly
def errors(config: Path, db: str | None, warnings: bool) -> None:
    """List files the indexer could not read, and what to do about each."""
    with open_catalog(config, db) as cat:
        rows = cat.errors(None if warnings else "error")
        if not rows:
            console.print("no index errors")
            return
        t = Table("severity", "layer", "path", "problem")
        for e in rows:
            t.add_row(e.severity, e.layer, escape(e.path), escape(e.message))
        console.print(t)

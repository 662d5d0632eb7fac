"""``copick-catalog``: a thin click skin over the Python API (each command calls the library).

Errors a user can cause are printed as one line (no traceback) and exit with status 2; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import CatalogError, LockBusyError

console = Console(stderr=False)
err_console = Console(stderr=True, soft_wrap=True)  # one-line errors stay one line

DB_OPTION = click.option("--db", "db", default=None, metavar="URL",
                         help="Catalog database: SQLAlchemy URL or SQLite file "
                              "(default: $COPICK_CATALOG_DB or <config stem>.catalog.sqlite next to the config).")
CONFIG_ARG = click.argument("config", type=click.Path(dir_okay=False, path_type=Path))


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our own exceptions into a one-line message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LockBusyError as exc:
            err_console.print(f"[yellow]busy:[/] {escape(str(exc))}")
            sys.exit(75)  # EX_TEMPFAIL: cron wrappers can tell "busy" from "broken"
        except CatalogError as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            err_console.print(f"[red]error:[/] {escape(str(exc))}")
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Verbose logging and full tracebacks.")
@click.version_option(package_name="copick-catalog")
def main(debug: bool) -> None:
    """SQL-indexed catalog for copick cryo-ET projects."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def open_catalog(config: Path, db: str | None) -> Any:
    from .catalog import Catalog

    return Catalog.open(config, db=db)


@main.command()
@CONFIG_ARG
@DB_OPTION
@click.option("--trigger", type=click.Choice(["cli", "cron", "watch", "api"]), default="cli",
              help="Recorded in index_runs so `status` can tell cron runs from manual ones.")
@click.option("--wait/--skip-if-busy", default=True,
              help="When another index run holds the lock: queue behind it (default) or exit 75 at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@friendly
def index(config: Path, db: str | None, trigger: str, wait: bool, as_json: bool, quiet: bool) -> None:
    """Index (incrementally) the project described by CONFIG into the catalog."""
    from rich.progress import Progress

    cat = open_catalog(config, db)
    with cat:
        if quiet or as_json or not console.is_terminal:
            report = cat.index(trigger=trigger, wait=wait)
        else:
            with Progress(console=err_console, transient=True) as progress:
                task = progress.add_task("reading changed files", total=None)

                def tick(_stage: str, done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                report = cat.index(trigger=trigger, wait=wait, progress=tick)
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
            return
        print_report(report)
        for msg in report.error_messages[:20]:
            err_console.print(f"[red]  ! {msg}[/]")


def print_report(report: Any) -> None:
    t = Table(title="index report", show_header=True)
    for col in ("added", "changed", "removed", "unchanged", "errors", "runs", "files read", "seconds"):
        t.add_column(col, justify="right")
    t.add_row(*(str(v) for v in (report.added, report.changed, report.removed, report.unchanged, report.errors,
                                 report.runs, report.files_read, f"{report.duration_s:.2f}")))
    console.print(t)


@main.command()
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


@main.group()
def db() -> None:
    """Catalog database maintenance."""


@db.command("upgrade")
@click.option("--db", "url", required=True, metavar="URL", help="Database URL or SQLite file.")
@friendly
def db_upgrade(url: str) -> None:
    """Create or upgrade the catalog schema to the current version."""
    from .db import create_engine, current_revision, ensure_schema

    engine = create_engine(url)
    before = current_revision(engine)
    head = ensure_schema(engine)
    console.print(f"schema at {head}" + ("" if before == head else f" (was {before or 'empty'})"))


@db.command("readonly-role")
@click.argument("name")
@click.option("--db", "url", required=True, metavar="URL",
              help="PostgreSQL catalog URL of a role that may create roles.")
@click.option("--password", default=None,
              help="Password for the new role (omit for trust/peer/cert setups).")
@friendly
def db_readonly_role(name: str, url: str, password: str | None) -> None:
    """Create a PostgreSQL role NAME that can only SELECT from the catalog (for `sql` on shared catalogs)."""
    from .db import create_engine
    from .readonly_sql import create_readonly_role

    engine = create_engine(url)
    try:
        for stmt in create_readonly_role(engine, name, password):
            console.print(escape(stmt))
    finally:
        engine.dispose()
    console.print(f"role {escape(name)} can only read; use it with: copick-catalog sql '...' CONFIG --db "
                  f"{escape(engine.url.set(username=name, password=None).render_as_string(hide_password=True))}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-project"),
              show_default=True, help="Where to write the sample project.")
@click.option("--runs", type=int, default=200, show_default=True)
@click.option("--picks-per-run", type=int, default=12, show_default=True)
@click.option("--tomogram-runs", type=int, default=3, show_default=True)
@friendly
def sample(out: Path, runs: int, picks_per_run: int, tomogram_runs: int) -> None:
    """Write a generated sample copick project (static + overlay roots) to OUT."""
    from .sample import make_sample_project

    s = make_sample_project(out, runs=runs, picks_per_run=picks_per_run, tomogram_runs=tomogram_runs)
    console.print(f"wrote {s.runs} runs, {s.pick_files} pick files ({s.points} points), {s.tomograms} tomograms")
    console.print(f"config: {s.config}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-project"),
              show_default=True, help="Where to write the sample project (reused if it exists).")
@click.option("--runs", type=int, default=500, show_default=True)
@friendly
def demo(out: Path, runs: int) -> None:
    """Generate a sample project, index it into SQLite, and run example queries."""
    import time

    from .catalog import Catalog
    from .sample import make_sample_project

    config = out / "copick_config.json"
    if not config.exists():
        s = make_sample_project(out, runs=runs)
        console.print(f"[bold]1. sample project[/]: {s.runs} runs, {s.pick_files} pick files, {s.points} points "
                      f"-> {config}")
    with Catalog.open(config) as cat:
        console.print(f"[bold]2. index[/] into {cat.db_url}")
        print_report(cat.index(trigger="cli"))
        console.print("[bold]3. reindex[/] (incremental: files written within 2 s of the first pass are re-checked "
                      "once, git's racy-timestamp rule; after that an unchanged project re-reads nothing)")
        cat.index(trigger="cli")
        print_report(cat.index(trigger="cli"))
        t0 = time.perf_counter()
        picks = cat.picks(user_id="alice", object_name="ribosome")
        dt = (time.perf_counter() - t0) * 1000
        console.print(f"[bold]4. alice's ribosome picks[/]: {len(picks)} files, "
                      f"{sum(p.n_points for p in picks)} points ({dt:.1f} ms)")
        first = picks[0].open()
        console.print(f"   {picks[0].run_name}: first point at {first.points[0].location} (read from the file)")
        t = Table("object", "user", "pick files", "points", title="5. picks per object per user")
        for r in cat.pick_summary():
            t.add_row(r["object_name"], r["user_id"], str(r["picks"]), str(r["points"]))
        console.print(t)
        lacking = cat.runs_lacking("proteasome")
        console.print(f"[bold]6. runs without proteasome picks[/]: {len(lacking)} (e.g. {', '.join(lacking[:3])})")
        tomo = cat.tomograms(tomo_type="wbp")[0]
        group = tomo.open()
        console.print(f"[bold]7. tomogram[/] {tomo.voxel_spacing.run.name}/{tomo.tomo_type}: levels "
                      f"{[group[k].shape for k in sorted(group.array_keys())]}, mean {float(group['0'][:].mean()):.3f}")
        import importlib.util

        if importlib.util.find_spec("pandas") is not None:
            df = cat.points_table(object_name="ribosome", user_id="alice")
            console.print(f"[bold]8. points table for ML[/]: a DataFrame of {len(df)} rows, columns {list(df.columns)}")
        else:
            rows = cat.points_table(object_name="ribosome", user_id="alice", format="records")
            console.print(f"[bold]8. points table for ML[/]: {len(rows)} rows, columns {list(cat.POINT_COLUMNS)} "
                          + escape("(pip install 'copick-catalog[pandas]' for a DataFrame or an Arrow table)"))


def _register_optional() -> None:
    """Commands that live in their own modules (query, watch, status) register here."""
    import importlib

    for module in ("cli_query", "cli_watch"):
        try:
            mod = importlib.import_module(f"copick_catalog.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"copick_catalog.{module}":
                raise
            continue
        for cmd in getattr(mod, "COMMANDS", ()):
            main.add_command(cmd)


_register_optional()

if __name__ == "__main__":  # pragma: no cover
    main()

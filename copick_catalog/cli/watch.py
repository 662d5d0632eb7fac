"""``copick-catalog watch`` and ``status``: thin skins over :mod:`copick_catalog.daemon` and ``Catalog.status``."""

from __future__ import annotations

import datetime as dt
import faulthandler
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from .common import CONFIG_ARG, DB_OPTION, console, friendly, open_catalog


@click.command()
@CONFIG_ARG
@DB_OPTION
@click.option(
    "--poll",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between incremental rescans of roots that give no file events (S3, NFS), and between "
    "two looks at each run that does not fit the inotify watch budget.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0.0),
    default=0.02,
    show_default=True,
    help="A lone finished change (a file closed, renamed into place or deleted) on a quiet root is indexed "
    "after this many seconds.",
)
@click.option(
    "--debounce",
    type=click.FloatRange(min=0.0),
    default=0.25,
    show_default=True,
    help="Quiet period (seconds) that ends a burst of file events, a file still being written, or a zarr "
    "group being written, before indexing.",
)
@click.option(
    "--max-delay",
    type=click.FloatRange(min=0.0),
    default=2.0,
    show_default=True,
    help="Index a burst that never goes quiet (a long zarr write) at least this often.",
)
@click.option(
    "--max-watches",
    type=click.IntRange(min=0),
    default=None,
    help="Use at most this many inotify watches (default: fs.inotify.max_user_watches less a tenth for "
    "other programs); runs that do not fit are polled every --poll seconds.",
)
@friendly
def watch(
    config: Path, db: str | None, poll: float, settle: float, debounce: float, max_delay: float, max_watches: int | None
) -> None:
    """Keep the catalog of CONFIG current as files change (runs until SIGTERM/SIGINT).

    Local roots are followed with inotify, other roots rescanned every --poll seconds; each change
    updates only the subtree it touched. Runs past the inotify watch budget are polled (one warning
    says how many and how to raise the limit). Run it under systemd
    (scripts/copick-catalog-watch.service) and keep a cron `index --skip-if-busy` as a safety net.
    `kill -USR1 PID` writes every thread's stack to the log, for a daemon that seems stuck.
    """
    from ..daemon.watcher import WatchOptions, run_watch

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack, to the log
    pkg = logging.getLogger("copick_catalog")
    if not pkg.isEnabledFor(logging.INFO):
        pkg.setLevel(logging.INFO)  # a daemon's log is its only voice (journald keeps it)
    opts = WatchOptions(
        poll=poll,
        settle=min(settle, debounce),
        debounce=debounce,
        max_delay=max(max_delay, debounce),
        max_watches=max_watches,
    )
    run_watch(config, db, opts)
    # Everything is committed, closed and released by now. Skip the interpreter's teardown (freeing a
    # big process's modules and objects takes 0.2-0.5 s, more on a loaded machine) so that SIGTERM to
    # exit stays well under a second, as service managers expect.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@click.command()
@CONFIG_ARG
@DB_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@friendly
def status(config: Path, db: str | None, as_json: bool) -> None:
    """When the catalog of CONFIG was last indexed, what it holds, and whether a daemon is running."""
    with open_catalog(config, db) as cat:
        info = cat.status()
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    print_status(info)


def _when(ts: float | None) -> str:
    if not ts:
        return "never"
    age = time.time() - ts
    stamp = dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")
    if age < 120:
        return f"{stamp} ({age:.0f} s ago)"
    if age < 7200:
        return f"{stamp} ({age / 60:.0f} min ago)"
    return f"{stamp} ({age / 3600:.1f} h ago)"


def _following(d: dict[str, Any]) -> list[str]:
    """One line per root: how the daemon follows it (inotify, mixed with counts, poll, missing)."""
    watching = d.get("watching") or {}
    layers = watching.get("layers") or {}
    poll = watching.get("poll") or {}
    out = []
    for layer, mode in (d.get("roots") or {}).items():
        info = layers.get(layer) or {}
        if mode == "inotify":
            text = f"inotify, {info.get('runs_watched', 0):,} runs ({info.get('watches', 0):,} watches)"
        elif mode == "mixed":
            text = (
                f"[yellow]mixed[/]: {info.get('runs_watched', 0):,} runs by inotify, {info.get('runs_polled', 0):,} "
                f"polled every {poll.get('every_s', 0):g} s"
            )
            if poll.get("last_pass_s") is not None:
                text += f" (last pass {poll['last_pass_s']:.1f} s)"
        elif mode == "poll":
            text = "poll (the whole root rescanned every --poll seconds)"
        else:
            text = f"[red]{mode}[/]"
        out.append(f"{layer}: {text}")
    if watching.get("budget") is not None and any(m == "mixed" for m in (d.get("roots") or {}).values()):
        out.append(
            f"inotify watches: {watching.get('watches', 0):,} of a budget of {watching['budget']:,} "
            f"({watching.get('budget_source', '')})"
        )
    return out


def print_status(info: dict[str, Any]) -> None:
    console.print(f"[bold]{info['project']}[/]  catalog {info['db']}")
    last = info["last_index"]
    if last:
        console.print(
            f"last index: {_when(last['finished_at'] or last['started_at'])} by [bold]{last['trigger']}[/], "
            f"{last['status']}, {last['duration_s'] or 0:.2f} s "
            f"(+{last['added']} ~{last['changed']} -{last['removed']}, {last['errors']} errors)"
        )
    else:
        console.print("last index: never (run `copick-catalog index CONFIG`)")
    for trig, run in info["last_by_trigger"].items():
        console.print(
            f"  last {trig:<5} {_when(run['finished_at'] or run['started_at'])}, {run['status']}, "
            f"{run['duration_s'] or 0:.2f} s"
        )
    console.print(
        "index running now: " + ("[yellow]yes[/] (the project lock is held)" if info["index_running"] else "no")
    )
    d = info["daemon"]
    if d.get("seen_via") == "postgresql":  # a daemon on another machine: its state file is not here
        server = d["server_lock"]
        console.print(
            f"watch daemon: [green]running[/] ({escape(str(server['application_name']))}, seen through "
            f"PostgreSQL from {server.get('client_addr') or 'a local socket'}, connected "
            f"{_when(server.get('since'))})"
        )
    elif d["running"]:
        console.print(
            f"watch daemon: [green]running[/] (pid {d.get('pid')} on {d.get('host')}, since "
            f"{_when(d.get('started_at'))}, heartbeat {d.get('heartbeat_age_s', '?')} s ago, "
            f"{d.get('updates', 0)} updates, {d.get('pending', 0)} pending)"
        )
        for line in _following(d):
            console.print(f"  {line}")
        if d.get("last_error"):
            console.print(f"  [red]last error:[/] {escape(str(d['last_error']))}")
    elif d.get("pid"):
        console.print(f"watch daemon: [red]not running[/] (pid {d['pid']} last seen {_when(d.get('heartbeat_at'))})")
    else:
        console.print("watch daemon: not running")
    errors = info["open_errors"]
    console.print(
        f"open errors: {'[red]' if errors else ''}{errors}{'[/]' if errors else ''}, "
        f"warnings: {info['open_warnings']}" + ("  (see `copick-catalog errors CONFIG`)" if errors else "")
    )
    t = Table("catalog holds", "count", show_header=True)
    t.columns[1].justify = "right"
    for name, n in info["counts"].items():
        t.add_row(name.replace("_", " "), str(n))
    console.print(t)

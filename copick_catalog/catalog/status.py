"""What ``copick-catalog status`` shows: when the catalog was last indexed, what it holds, who watches it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..daemon.claim import daemon_holder
from ..daemon.state import daemon_running, read_state, state_path
from .locks import is_locked
from .schema import FILE_MODELS, FileBacked, IndexErrorRow, IndexRun, Pick, Point, Project, Run, VoxelSpacing, table_of

if TYPE_CHECKING:
    from .catalog import Catalog


def catalog_status(cat: Catalog) -> dict[str, Any]:
    """Everything ``copick-catalog status`` shows, as JSON-able data.

    When the catalog was last indexed and by what (cli, cron, watch, api), how long it took, how
    much it holds, how many files are in error, whether an index run holds the lock right now, and
    whether a watch daemon is alive: its state file is locked (this host), or, on PostgreSQL, its
    advisory lock is held (any host; ``seen_via`` says "postgresql" when only the server knows).
    """
    pid = cat.project_id
    with cat.engine.connect() as conn:
        project = conn.execute(sa.select(Project.name, Project.last_indexed_at).where(Project.id == pid)).one()
        runs = table_of(IndexRun)
        finished = sa.select(runs).where(runs.c.project_id == pid, runs.c.status != "running")
        last = conn.execute(finished.order_by(runs.c.started_at.desc()).limit(1)).mappings().first()
        by_trigger = {}
        for trig in ("cli", "cron", "watch", "api"):
            row = (
                conn.execute(finished.where(runs.c.trigger == trig).order_by(runs.c.started_at.desc()).limit(1))
                .mappings()
                .first()
            )
            if row is not None:
                by_trigger[trig] = _run_dict(row)
        running = [
            _run_dict(r)
            for r in conn.execute(
                sa.select(runs).where(runs.c.project_id == pid, runs.c.status == "running")
            ).mappings()
        ]
        models: tuple[type[Run] | type[VoxelSpacing] | type[FileBacked], ...] = (
            Run,
            VoxelSpacing,
            *FILE_MODELS.values(),
        )
        counts = {
            table_of(m).name: conn.execute(
                sa.select(sa.func.count()).select_from(m).where(m.project_id == pid)
            ).scalar_one()
            for m in models
        }
        counts["points"] = conn.execute(
            sa.select(sa.func.count()).select_from(Point).join(Pick).where(Pick.project_id == pid)
        ).scalar_one()
        errs = dict(
            conn.execute(
                sa.select(IndexErrorRow.severity, sa.func.count())
                .where(IndexErrorRow.project_id == pid)
                .group_by(IndexErrorRow.severity)
            ).all()
        )
    path = state_path(cat.engine, cat.db_url, pid)
    state = read_state(path)
    alive = daemon_running(path)
    daemon: dict[str, Any] = {"running": alive, "state_file": str(path)}
    server = daemon_holder(cat.engine, pid)  # PostgreSQL: a daemon on any machine
    if server is not None:
        daemon["server_lock"] = server
        if not alive:
            daemon.update(running=True, seen_via="postgresql")
    if state:
        daemon.update(
            {
                k: state.get(k)
                for k in (
                    "pid",
                    "host",
                    "started_at",
                    "heartbeat_at",
                    "ready",
                    "pending",
                    "roots",
                    "watching",
                    "updates",
                    "failures",
                    "last_update_at",
                    "last_error",
                )
            }
        )
        if state.get("heartbeat_at"):
            daemon["heartbeat_age_s"] = round(time.time() - float(state["heartbeat_at"]), 1)
    return {
        "project": project.name,
        "config": str(cat.config_path),
        "db": cat.db_url,
        "last_indexed_at": project.last_indexed_at,
        "last_index": _run_dict(last) if last else None,
        "last_by_trigger": by_trigger,
        "index_running": is_locked(cat.engine, pid),
        "running_rows": running,
        "counts": counts,
        "open_errors": errs.get("error", 0),
        "open_warnings": errs.get("warning", 0),
        "daemon": daemon,
    }


#: The ``index_runs`` columns status and the report show of a run.
INDEX_RUN_FIELDS = (
    "id",
    "trigger",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "added",
    "changed",
    "removed",
    "unchanged",
    "errors",
    "host",
    "pid",
    "message",
)


def _run_dict(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in INDEX_RUN_FIELDS}


def daemon_serving(cat: Catalog) -> bool:
    """Whether a watch daemon keeps this catalog current: its state file is locked here, or (PostgreSQL)
    its advisory lock is held by a session anywhere. Cheap: a ``flock`` probe, or one query."""
    if daemon_running(state_path(cat.engine, cat.db_url, cat.project_id)):
        return True
    return cat.engine.dialect.name == "postgresql" and daemon_holder(cat.engine, cat.project_id) is not None


__all__ = ["catalog_status", "daemon_serving"]

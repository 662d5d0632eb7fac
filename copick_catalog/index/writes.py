"""The indexer's writes: upserts that write nothing when nothing changed, points in bulk, history pruning."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..catalog.db import chunks, is_sqlite, upsert_insert
from ..catalog.schema import IndexRun, PackedPoints, Point, table_of
from ..catalog.summary import sqlite_totals_per_batch

if TYPE_CHECKING:  # numpy and the pick readers load with the first batch that writes points
    from ..formats.pickrows import PointBlock
    from ..formats.pickstream import PointStream

PointSource: TypeAlias = "PointBlock | PointStream"

#: index_runs rows kept per project (plus the newest finished run of each trigger); see prune_index_runs.
KEEP_INDEX_RUNS = 1000


def prune_index_runs(conn: Connection, project_id: int) -> None:
    """Keep the newest KEEP_INDEX_RUNS rows of a project, and the newest finished row of each trigger.

    A watch daemon records a row per burst (thousands a day); without pruning the history grows
    forever, and `status` needs only the recent past plus the last run of each kind (the nightly cron).
    """
    runs = table_of(IndexRun)
    mine = runs.c.project_id == project_id
    oldest_kept = (
        sa.select(runs.c.id)
        .where(mine)
        .order_by(runs.c.id.desc())
        .offset(KEEP_INDEX_RUNS - 1)
        .limit(1)
        .scalar_subquery()
    )
    last_of_trigger = sa.select(sa.func.max(runs.c.id)).where(mine, runs.c.status != "running").group_by(runs.c.trigger)
    conn.execute(
        sa.delete(runs).where(
            mine, runs.c.id < oldest_kept, runs.c.id.not_in(last_of_trigger), runs.c.status != "running"
        )
    )


def upsert(
    conn: Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    conflict: list[str],
    update: list[str],
    guard: Any = None,
    returning: tuple[Any, ...] | None = None,
) -> list[Any]:
    """``INSERT … ON CONFLICT DO UPDATE`` that writes nothing when nothing changed.

    ``guard`` restricts which existing rows may be updated (rows newer than the scan are kept).
    """
    stmt = upsert_insert(conn, table)
    distinct = sa.or_(
        *[
            table.c[c].is_distinct_from(stmt.excluded[c])
            for c in update
            if c not in ("indexed_at", "last_seen", "mtime")
        ]
    )
    where = distinct if guard is None else sa.and_(guard, distinct)
    stmt = stmt.on_conflict_do_update(index_elements=conflict, set_={c: stmt.excluded[c] for c in update}, where=where)
    out: list[Any] = []
    for chunk in chunks(rows):
        if returning is not None:
            out.extend(conn.execute(stmt.returning(*returning), list(chunk)).all())
        else:
            conn.execute(stmt, list(chunk))
    return out


def insert_fresh(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]], guard: Any = None
) -> list[tuple[int, str, str]]:
    """Insert rows for files the catalog did not hold; return ``(id, layer, path)`` of each row inserted.

    On SQLite this is one ``executemany`` of plain tuples under ids this transaction assigns itself (it
    holds the write lock, so ``max(id) + 1`` onward are free), which a full index needs for 57,000 pick
    rows: SQLAlchemy's RETURNING insert spends more time preparing parameters than SQLite spends storing
    them. A path another writer catalogued meanwhile is left to it and not returned, as the guarded upsert
    does; a row that clashes with another file's key still refuses the batch (IntegrityError). PostgreSQL
    copies the rows into a temporary table and moves them with one statement (:mod:`.pgcopy`). Tables
    with JSON columns take the guarded upsert (their values need SQLAlchemy's conversion).
    """
    if not rows:
        return []
    key = ["project_id", "layer", "path"]
    if any(isinstance(table.c[c].type, sa.JSON) for c in rows[0]):
        update = [c for c in rows[0] if c not in key]
        returning = (table.c.id, table.c.layer, table.c.path)
        return [tuple(r) for r in upsert(conn, table, rows, key, update, guard=guard, returning=returning)]
    if not is_sqlite(conn):
        from . import pgcopy

        return pgcopy.insert_fresh_rows(conn, table, rows, key)
    cols = list(rows[0])
    dbapi: Any = conn.connection.driver_connection
    first = dbapi.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table.name}").fetchone()[0]
    values = itemgetter(*cols)
    params = [(first + i, *values(r)) for i, r in enumerate(rows)]
    marks = ", ".join("?" * (len(cols) + 1))
    last = first + len(rows) - 1
    # ids first..last are this batch's alone (the write lock is held): new picks count in the totals by batch
    totals = sqlite_totals_per_batch(conn, first, last) if table.name == "picks" else contextlib.nullcontext()
    with totals:
        dbapi.executemany(
            f"INSERT INTO {table.name} (id, {', '.join(cols)}) VALUES ({marks}) ON CONFLICT DO NOTHING", params
        )
    stored = {i for (i,) in dbapi.execute(f"SELECT id FROM {table.name} WHERE id BETWEEN ? AND ?", (first, last))}
    skipped = [r for i, r in enumerate(rows) if first + i not in stored]
    if skipped:  # rare: tell a path another writer took from a clash with another file's key
        _refuse_clashes(conn, table, skipped, guard)
    return [(first + i, r["layer"], r["path"]) for i, r in enumerate(rows) if first + i in stored]


def _refuse_clashes(conn: Connection, table: sa.Table, skipped: list[dict[str, Any]], guard: Any) -> None:
    """Raise IntegrityError for a row ``DO NOTHING`` skipped unless its path is held by a row ``guard`` keeps
    (another writer's, newer than this run): the refusal the guarded upsert would have met."""
    for r in skipped:
        where = sa.and_(table.c.project_id == r["project_id"], table.c.layer == r["layer"], table.c.path == r["path"])
        kept = sa.and_(where, sa.not_(guard)) if guard is not None else where
        if conn.execute(sa.select(table.c.id).where(kept)).first() is None:
            raise sa.exc.IntegrityError(
                f"INSERT INTO {table.name}", r["path"], Exception(f"{r['path']} clashes with a row of {table.name}")
            )


def replace_points(
    conn: Connection,
    ids: dict[tuple[str, str], int],
    points_by_path: dict[tuple[str, str], PointSource],
    new: frozenset[tuple[str, str]] = frozenset(),
) -> None:
    """Rewrite the points of every pick row this batch wrote: the ``points`` rows and the packed copy.

    A streamed file's points (:class:`PointStream`) arrive in batches and are inserted as they come, so a
    million-point file costs one batch of rows in memory (plus its packed copy, 40 bytes a point).
    ``new`` names the picks the catalog did not hold before this run: they have no points to delete.
    """
    from ..formats.pickrows import PointBlock
    from ..formats.pickstream import PointStream
    from . import pgcopy

    if not ids:
        return
    pick_ids = [pid for where, pid in ids.items() if where not in new]
    for chunk in chunks(pick_ids):
        conn.execute(sa.delete(Point).where(Point.pick_id.in_(chunk)))
        conn.execute(sa.delete(PackedPoints).where(PackedPoints.pick_id.in_(chunk)))
    packed: list[tuple[int, bytes]] = []
    blocks: list[tuple[int, PointBlock]] = []
    for where, pid in ids.items():
        source = points_by_path.get(where)
        if isinstance(source, PointStream):
            packed.append((pid, _insert_stream(conn, pid, source)))
            continue
        if source is None:
            source = PointBlock(b"")
        blocks.append((pid, source))
        packed.append((pid, source.packed))
    if not is_sqlite(conn):
        columns = PointBlock.columns(blocks)
        if columns is not None:
            pgcopy.copy_points(conn, columns)
        pgcopy.copy_packed(conn, packed)
        return
    if blocks:
        bulk_insert_points(conn, PointBlock.insert_rows(blocks))
    # plain tuples: SQLAlchemy's per-row processing of a blob costs more than storing it
    conn.connection.driver_connection.executemany(  # type: ignore[union-attr]
        "INSERT INTO packed_points (pick_id, data) VALUES (?, ?)", packed
    )


def _insert_stream(conn: Connection, pick_id: int, stream: PointStream) -> bytes:
    """Insert a streamed file's points batch by batch; return their packed copy."""
    from ..formats.picks import pack_points

    blobs: list[bytes] = []
    n = 0
    for batch in stream.batches():
        bulk_insert_points(conn, [(pick_id, *pt) for pt in batch])
        blobs.append(pack_points([pt[1:6] for pt in batch]))
        n += len(batch)
    if n != stream.n_points:
        raise ValueError(f"{stream.path} changed while it was being indexed ({stream.n_points} points, then {n})")
    return b"".join(blobs)


POINT_COLUMNS = ("pick_id", "idx", "x", "y", "z", "instance_id", "score", "transform")


def bulk_insert_points(conn: Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert point tuples as fast as the driver allows (executemany on SQLite, COPY on PostgreSQL)."""
    cols = ", ".join(POINT_COLUMNS)
    dbapi = conn.connection.driver_connection
    if is_sqlite(conn):
        marks = ", ".join("?" * len(POINT_COLUMNS))
        dbapi.executemany(f"INSERT INTO points ({cols}) VALUES ({marks})", rows)  # type: ignore[union-attr]
        return
    with dbapi.cursor() as cur, cur.copy(f"COPY points ({cols}) FROM STDIN") as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(row)


__all__ = [
    "KEEP_INDEX_RUNS",
    "POINT_COLUMNS",
    "bulk_insert_points",
    "insert_fresh",
    "prune_index_runs",
    "replace_points",
    "upsert",
]

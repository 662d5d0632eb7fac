"""Keep ``run_objects`` (per run, per configured object: pick files and points) equal to ``picks``.

The table is derived data, so the only safe way to keep it right is to recompute it from
``picks`` in the very transaction that changes picks, runs or the configured objects. Every
commit then leaves it consistent, whatever crashes later, and there is no "summary is stale"
state for a reader to trip over. Recomputing a handful of runs is one ``INSERT … SELECT``;
the whole of a 5,000-run project takes about 0.1 s.

Coarser summaries are not refreshed here but kept by triggers inside the database (migrations 0009 and
0010): ``pick_totals`` (pick files and points per object, user, session and layer), ``pick_day_totals``
(the same per UTC day of the files' mtime) and ``object_totals`` (``run_objects`` per object). They have
to follow every write to ``picks`` whoever makes it (the indexer, a run's cascade, the object API, plain
SQL), and a trigger is the one place every write passes; their keys are few, so a trigger's work is a
grouped upsert of a few rows per statement. ``run_objects`` stays here:
its rows are per run, zeros included, and it needs the configured objects, which only a refresh knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .db import chunks, is_sqlite, upsert_insert
from .schema import Pick, PickableObject, PickDayTotal, PickTotal, Run, RunObject, table_of

#: A UTC day in seconds: the default bucket of ``Catalog.pick_timeline`` and the grain of ``pick_day_totals``.
DAY_S = 86400.0

#: The row triggers (migrations 0009 and 0010) that add an inserted pick's share to the totals on SQLite.
PICK_INSERT_TRIGGERS = ("pick_totals_after_insert", "pick_day_totals_after_insert")

#: Below this many new picks a batch leaves the row triggers to it: recreating them costs about what they do.
BULK_TOTALS_MIN_ROWS = 200


def floor_to(value: Any, step: float, dialect: str) -> Any:
    """``floor(value / step) * step`` in SQL, as migration 0010's triggers compute ``pick_day_totals.day_start``:
    PostgreSQL's ``floor``; on SQLite (whose ``floor`` is optional) a cast that rounds toward zero, stepped down
    when it lands above. The same floating-point steps on the same values give the same bucket on both paths."""
    ratio = value / step
    if dialect == "postgresql":
        return sa.func.floor(ratio, type_=sa.Float) * step
    whole = sa.cast(ratio, sa.BigInteger)
    return (whole - sa.cast(ratio < whole, sa.Integer)) * step


@contextmanager
def sqlite_totals_per_batch(conn: Connection, first: int, last: int) -> Iterator[None]:
    """SQLite, inside a write transaction about to insert picks under ids ``first..last`` (every row that range
    will hold is one of them): their totals added by two grouped statements at the end instead of two row
    triggers per pick.

    SQLite has no statement triggers, and a row trigger costs ~10 µs a row whatever its body: in a full index
    the two insert triggers were over half the cost of inserting the pick rows (1.0-1.1 s of a 5,000-run
    index). The triggers are dropped and created again from their own stored SQL inside the caller's
    transaction; DDL is transactional there, so no other connection ever sees the schema without them, and
    an error or a crash rolls the drop back with the rows. Small batches (a write-through, a daemon event)
    keep the triggers: fewer than :data:`BULK_TOTALS_MIN_ROWS` ids, and on PostgreSQL (statement triggers
    already), this does nothing.
    """
    if not is_sqlite(conn) or last - first + 1 < BULK_TOTALS_MIN_ROWS:
        yield
        return
    dbapi: Any = conn.connection.driver_connection
    marks = ", ".join("?" * len(PICK_INSERT_TRIGGERS))
    saved = dbapi.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'picks' AND name IN ({marks})",
        PICK_INSERT_TRIGGERS,
    ).fetchall()
    for name, _sql in saved:
        dbapi.execute(f"DROP TRIGGER {name}")
    try:
        yield
        _add_pick_totals(conn, first, last, {name for name, _sql in saved})
    finally:
        # An error SQLite answers by rolling the whole transaction back (a full disk, an I/O error) has undone
        # the drop already: creating the triggers again would fail and hide that error behind its own.
        if dbapi.in_transaction:
            for _name, sql in saved:
                dbapi.execute(sql)


def _add_pick_totals(conn: Connection, first: int, last: int, which: set[str]) -> None:
    """What the insert triggers named in ``which`` would have added for the picks with ids ``first..last``:
    the rows grouped by each totals table's key (its primary key; ``day_start`` computed from the mtime)."""
    from sqlalchemy.dialects.sqlite import insert

    picks = table_of(Pick)
    counts = [sa.func.count(), sa.func.sum(picks.c.n_points)]
    day = floor_to(picks.c.mtime, DAY_S, "sqlite").label("day_start")
    for trigger, model, where in (
        ("pick_totals_after_insert", PickTotal, []),
        ("pick_day_totals_after_insert", PickDayTotal, [picks.c.mtime.is_not(None)]),  # no mtime, no day
    ):
        if trigger not in which:
            continue
        t = table_of(model)
        names = [c.name for c in t.primary_key]
        key = [day if n == "day_start" else picks.c[n] for n in names]
        grouped = sa.select(*key, *counts).where(picks.c.id.between(first, last), *where).group_by(*key)
        ins = insert(t).from_select([*names, "n_picks", "n_points"], grouped)
        conn.execute(ins.on_conflict_do_update(index_elements=names, set_=_plus(t, ins)))


def _plus(table: sa.Table, ins: Any) -> dict[str, Any]:
    return {c: table.c[c] + ins.excluded[c] for c in ("n_picks", "n_points")}


#: First key of the advisory lock that serialises refreshes of one project's run_objects on PostgreSQL.
SUMMARY_NAMESPACE = 0x0C0C + 2


def refresh_run_objects(conn: Connection, project_id: int, run_ids: Iterable[int] | None = None) -> None:
    """Recompute the rows of ``run_ids`` (every run of the project when ``None``) inside ``conn``'s transaction.

    Rows for objects no longer in the config are dropped; a run deleted from ``runs`` takes its
    rows with it (``ON DELETE CASCADE``).

    On PostgreSQL, refreshes of one project take turns (a transaction-level advisory lock): under READ
    COMMITTED, a config change's refresh running beside an index batch cannot see the rows that batch
    inserts for a new run, so an object just removed from the config would keep rows there for good.
    Waiting for the other transaction to commit first makes each refresh see what the other wrote.
    """
    if not is_sqlite(conn):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:ns, :pid)"), {"ns": SUMMARY_NAMESPACE, "pid": project_id})
    if run_ids is None:
        _refresh(conn, project_id, None)
        return
    for chunk in chunks(sorted(set(run_ids))):
        _refresh(conn, project_id, list(chunk))


def _refresh(conn: Connection, project_id: int, ids: list[int] | None) -> None:
    ro = table_of(RunObject)
    configured = sa.select(PickableObject.name).where(PickableObject.project_id == project_id)
    stale = sa.delete(ro).where(ro.c.project_id == project_id, ro.c.object_name.not_in(configured))
    counts = (
        sa.select(
            Run.id,
            PickableObject.name,
            Run.project_id,
            Run.name,
            sa.func.count(Pick.id),
            sa.func.coalesce(sa.func.sum(Pick.n_points), 0),
        )
        .select_from(Run)
        .join(PickableObject, PickableObject.project_id == Run.project_id)
        .outerjoin(Pick, sa.and_(Pick.run_id == Run.id, Pick.object_name == PickableObject.name))
        .where(Run.project_id == project_id)
        .group_by(Run.id, PickableObject.name)
        # one global row order, so two refreshes racing on PostgreSQL lock rows in the same order
        .order_by(Run.id, PickableObject.name)
    )
    if ids is not None:
        stale = stale.where(ro.c.run_id.in_(ids))
        counts = counts.where(Run.id.in_(ids))
    conn.execute(stale)
    stmt = upsert_insert(conn, ro)
    stmt = stmt.from_select(["run_id", "object_name", "project_id", "run_name", "n_picks", "n_points"], counts)
    changed = sa.or_(
        ro.c.n_picks != stmt.excluded.n_picks,
        ro.c.n_points != stmt.excluded.n_points,
        ro.c.run_name != stmt.excluded.run_name,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["run_id", "object_name"],
            set_={
                "n_picks": stmt.excluded.n_picks,
                "n_points": stmt.excluded.n_points,
                "run_name": stmt.excluded.run_name,
            },
            where=changed,
        )
    )


def count_new_picks(conn: Connection, project_id: int, picks: Iterable[tuple[int, str, int]]) -> None:
    """Add pick rows this transaction has just inserted, ``(run_id, object_name, n_points)``, to ``run_objects``.

    The same result as :func:`refresh_run_objects` for those runs when the rows are new (they had no
    previous counts to take away), at the cost of one small update per (run, object) instead of
    re-aggregating every pick of the runs: a full index adds 57,000 picks in 60 batches. Objects that
    are not configured have no row and are left out, as a refresh leaves them out.
    """
    totals: dict[tuple[int, str], list[int]] = {}
    for run_id, name, n in picks:
        t = totals.setdefault((run_id, name), [0, 0])
        t[0] += 1
        t[1] += n
    if not totals:
        return
    if not is_sqlite(conn):  # take turns with refreshes, as refresh_run_objects does (see there)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:ns, :pid)"), {"ns": SUMMARY_NAMESPACE, "pid": project_id})
    ro = table_of(RunObject)
    deltas = [(r, o, dp, dn) for (r, o), (dp, dn) in sorted(totals.items())]
    if is_sqlite(conn):  # row triggers there: one executemany costs what one statement would
        conn.execute(
            sa.update(ro)
            .where(ro.c.run_id == sa.bindparam("r"), ro.c.object_name == sa.bindparam("o"))
            .values(n_picks=ro.c.n_picks + sa.bindparam("dp"), n_points=ro.c.n_points + sa.bindparam("dn")),
            [{"r": r, "o": o, "dp": dp, "dn": dn} for r, o, dp, dn in deltas],
        )
        return
    # PostgreSQL: one UPDATE per batch joined to the deltas as four arrays, so object_totals' statement trigger
    # runs once per batch, not once per (run, object): an executemany fired it 11,460 times in a 2,000-run full
    # index (6 % of the index's time). Arrays, not a VALUES list: SQLAlchemy compiling 4,000 literal rows was
    # 30 % of the writer's time in a full index. The advisory lock above keeps writers of one project from
    # updating rows in two orders.
    runs, objects, dps, dns = (list(col) for col in zip(*deltas, strict=True))
    conn.execute(
        sa.text(
            "UPDATE run_objects AS t SET n_picks = t.n_picks + d.dp, n_points = t.n_points + d.dn "
            "FROM unnest(CAST(:r AS integer[]), CAST(:o AS varchar[]), CAST(:dp AS bigint[]), "
            "CAST(:dn AS bigint[])) AS d(r, o, dp, dn) WHERE t.run_id = d.r AND t.object_name = d.o"
        ),
        {"r": runs, "o": objects, "dp": dps, "dn": dns},
    )


def runs_with_picks(conn: Connection, pick_ids: Iterable[int]) -> set[int]:
    """The runs that own these pick rows (read before the rows are deleted)."""
    out: set[int] = set()
    for chunk in chunks(list(pick_ids)):
        out.update(conn.scalars(sa.select(Pick.run_id).where(Pick.id.in_(chunk)).distinct()))
    return out


__all__ = [
    "DAY_S",
    "count_new_picks",
    "floor_to",
    "refresh_run_objects",
    "runs_with_picks",
    "sqlite_totals_per_batch",
]

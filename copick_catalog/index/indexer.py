"""Scan -> diff against the catalog -> read what changed -> batched upserts and deletes -> report.

The scan is the truth: each root is listed in one pass (:meth:`Root.walk`), every path is parsed
by the grammar in :mod:`.grammar`, and the result is compared by fingerprint with what the catalog
holds (:mod:`.snapshot`). Only new or changed payloads are read, through each kind's spec
(:mod:`.kinds`). Writes go in short batches, each its own transaction, so a crash at any point leaves
a consistent catalog that the next run completes.

Concurrent writers are respected: the snapshot is taken *before* the listing, and rows whose
``indexed_at`` is newer than the scan start (written by the object API meanwhile) are never
overwritten or deleted by this run. A file that fails to parse keeps its previous good row,
marked stale, and gets an ``index_errors`` row; a file modified within the last few seconds is
re-read once before it counts as broken, because copick writes JSON in place. A directory that
cannot be listed is an error row too, and everything catalogued below it is kept (marked stale),
never taken for deleted; a root that lists as empty while the catalog holds rows for it looks
unmounted, and the run refuses to empty it unless told to.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gc
import logging
import os
import socket
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..catalog.db import chunks, is_sqlite, write_tx
from ..catalog.schema import (
    FILE_MODELS,
    Feature,
    IndexErrorRow,
    IndexRun,
    Project,
    Run,
    Tomogram,
    VoxelSpacing,
    table_of,
)
from ..catalog.summary import count_new_picks, refresh_run_objects, runs_with_picks
from ..errors import IndexCancelled, RootError
from ..gcpause import gc_paused
from . import fanout, grammar
from .grammar import Kind
from .kinds import SPECS, Header, Limits
from .pool import ReadPool, default_workers, env_count, read_entity
from .roots import ListingStats, Root
from .scan import Lister, Problem, Scan, Seen
from .scopes import RunSlice, Scope, covers, minimal_scopes, plan_slices
from .snapshot import DirRow, ErrorRow, FileRow, Snapshot, load_snapshot, runs_clause
from .writes import PointSource, insert_fresh, prune_index_runs, replace_points, upsert

log = logging.getLogger(__name__)

#: A file whose mtime is this close to the scan start is "racily clean": re-checked next time.
RACY_WINDOW_S = 2.0
#: How long after a parse failure on a freshly modified file we look again before giving up.
RETRY_DELAY_S = 0.3
BATCH_FILES = 1000
#: A run that adds, changes or removes this many rows refreshes PostgreSQL's planner statistics.
ANALYZE_AFTER_ROWS = 10_000
#: A whole local project with more runs than this is indexed in passes over slices of this many runs
#: (memory: a pass holds the listing and snapshot of its slice; 5,000 runs peak near 250 MB).
RUNS_PER_PASS = 5000
#: Overrides :data:`RUNS_PER_PASS` (fewer runs a pass: less memory, a few more queries).
RUNS_PER_PASS_ENV = "COPICK_CATALOG_RUNS_PER_PASS"
#: Batches the read workers may run ahead of the writer (memory: a batch of parsed files each).
PREFETCH_BATCHES = 3
#: What a database says when it refuses a value (not when it is unreachable): one file's fault, not the run's.
_REFUSED = (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.StatementError, OverflowError, ValueError)


@dataclass
class IndexReport:
    """What an index run did. ``added + changed + unchanged`` is every entity seen."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    errors: int = 0
    warnings: int = 0
    files_read: int = 0
    entries_listed: int = 0
    list_calls: int = 0
    runs: int = 0
    duration_s: float = 0.0
    by_kind: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    error_messages: list[str] = field(default_factory=list)
    skipped: bool = False

    def count(self, kind: str, what: str, n: int = 1) -> None:
        self.by_kind[kind][what] += n
        setattr(self, what, getattr(self, what) + n)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "errors": self.errors,
            "warnings": self.warnings,
            "files_read": self.files_read,
            "entries_listed": self.entries_listed,
            "list_calls": self.list_calls,
            "runs": self.runs,
            "duration_s": round(self.duration_s, 3),
            "by_kind": {k: dict(v) for k, v in self.by_kind.items()},
        }

    @property
    def nothing_changed(self) -> bool:
        return not (self.added or self.changed or self.removed)


@dataclass(slots=True)
class _Read:
    """A payload read for one entity: its header, or an error message naming the file and the fix."""

    seen: Seen
    header: Header | None = None
    error: str | None = None


#: A batch of the run's work, with the worker tasks already reading its pick files (by layer).
_Batch = tuple[list[tuple[Seen, "FileRow | None"]], dict[str, tuple[list[Seen], list[Any]]]]


class Indexer:
    """Index one project's roots into the catalog. Create one per run; call :meth:`run`."""

    def __init__(
        self,
        engine: Engine,
        project_id: int,
        roots: dict[str, Root],
        objects: Sequence[str],
        *,
        progress: Callable[[str, int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        limits: Limits | None = None,
        allow_empty_root: bool = False,
    ) -> None:
        self.engine = engine
        self.project_id = project_id
        self.roots = roots
        self.objects = list(objects)
        self.progress = progress
        self.cancel = cancel
        self.limits = limits or Limits()
        self.allow_empty_root = allow_empty_root
        self.read_counter = 0  # payload reads, for tests and the benchmark
        self._remote: ThreadPoolExecutor | None = None  # reader threads of remote roots, during a run
        self._ahead: dict[int, Future[_Read]] = {}  # id(Seen) -> its read, started by _submit
        self._slice: RunSlice | None = None  # the slice of runs the current pass covers (None: all)
        self._mounted_checked = False  # set when the passes over slices checked the roots up front
        self._volumes_changed = False  # a pass wrote or removed a tomogram or feature: link features after
        self._progress_base = 0  # files done by earlier passes

    def _checkpoint(self) -> None:
        """Stop here if the caller asked to. Called only between transactions: a stop asked for by
        interrupting the thread instead can land inside one and leave SQLite's write lock held."""
        if self.cancel is not None and self.cancel():
            raise IndexCancelled("index run cancelled by its caller; the next run completes it")

    # ------------------------------------------------------------------ public

    def run(self, trigger: str = "api", scopes: Iterable[Scope] | None = None, record: bool = True) -> IndexReport:
        """Index everything (``scopes=None``) or only the given ``(layer, relative prefix)`` subtrees.

        ``record=False`` skips the ``index_runs`` bookkeeping (used for write-through of single files).
        """
        t0 = time.time()
        report = IndexReport()
        scope_list = [(layer, "") for layer in self.roots] if scopes is None else minimal_scopes(scopes)
        unknown = [layer for layer, _ in scope_list if layer not in self.roots]
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; this project has {sorted(self.roots)}")
        if not record:
            self._index(scope_list, t0, report)
            report.duration_s = time.time() - t0
            return report
        run_id = self._start_run(trigger, t0)
        try:
            self._index(scope_list, t0, report)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, IndexCancelled | KeyboardInterrupt) else "failed"
            self._finish_run(run_id, report, t0, status, f"{type(exc).__name__}: {exc}")
            raise
        self._finish_run(run_id, report, t0, "ok", None)
        return report

    # ------------------------------------------------------------------ run bookkeeping

    def _start_run(self, trigger: str, t0: float) -> int:
        with write_tx(self.engine) as conn:
            # We hold the project lock, so any run still marked running died without finishing.
            conn.execute(
                sa.update(IndexRun)
                .where(IndexRun.project_id == self.project_id, IndexRun.status == "running")
                .values(status="interrupted")
            )
            return int(
                conn.execute(
                    sa.insert(IndexRun)
                    .values(
                        project_id=self.project_id,
                        trigger=trigger,
                        status="running",
                        started_at=t0,
                        host=socket.gethostname(),
                        pid=os.getpid(),
                    )
                    .returning(IndexRun.id)
                ).scalar_one()
            )

    def _finish_run(self, run_id: int, report: IndexReport, t0: float, status: str, message: str | None) -> None:
        t1 = time.time()
        report.duration_s = t1 - t0
        try:
            with write_tx(self.engine) as conn:
                conn.execute(
                    sa.update(IndexRun)
                    .where(IndexRun.id == run_id)
                    .values(
                        status=status,
                        finished_at=t1,
                        duration_s=t1 - t0,
                        added=report.added,
                        changed=report.changed,
                        removed=report.removed,
                        unchanged=report.unchanged,
                        errors=report.errors,
                        message=message,
                    )
                )
                if status == "ok":
                    conn.execute(sa.update(Project).where(Project.id == self.project_id).values(last_indexed_at=t1))
                prune_index_runs(conn, self.project_id)
        except sa.exc.SQLAlchemyError:
            log.exception("could not record the end of index run %s", run_id)

    # ------------------------------------------------------------------ the pass

    def _index(self, scopes: list[Scope], t0: float, report: IndexReport) -> None:
        slices = self._plan(scopes)
        self._volumes_changed = False
        for runs in slices:
            self._checkpoint()
            self._pass(scopes, runs, t0, report)
        if self._volumes_changed or self._dangling_features(scopes):
            self._link_features(scopes)
        if report.added + report.changed + report.removed >= ANALYZE_AFTER_ROWS:
            self._refresh_statistics()

    def _plan(self, scopes: list[Scope]) -> list[RunSlice | None]:
        """The passes of this run: one, or (a whole local project with many runs) one per slice of runs.

        A pass holds its listing and snapshot until it ends, so a project of 100,000 runs in one pass
        needs gigabytes; in slices of :data:`RUNS_PER_PASS` runs it needs what a project of that size
        needs. Object stores are listed in one pass (listing a slice costs as much as listing all).
        """
        if any(prefix for _, prefix in scopes):
            return [None]
        listed: dict[str, list[Any]] = {}
        for layer, _ in scopes:
            found = self.roots[layer].run_entries()
            if found is None:
                return [None]
            listed[layer] = sorted(found, key=_name)
        names = {e.name for entries in listed.values() for e in entries}
        per_pass = runs_per_pass()
        if len(names) <= per_pass:
            # one slice of every run: its size spares the listing fan-out a second listing to count them
            return [RunSlice(size=len(names))]
        with self.engine.connect() as conn:
            names.update(conn.execute(sa.select(Run.name).where(Run.project_id == self.project_id)).scalars())
        for layer, _ in scopes:  # a pass sees a slice: whether a root looks unmounted is decided here, for all
            self._check_mounted(layer, len(listed[layer]))
        self._mounted_checked = True
        slices: list[RunSlice | None] = []
        for cut in plan_slices(names, per_pass):
            mine = {}
            for layer, entries in listed.items():
                lo = 0 if cut.after is None else bisect.bisect_right(entries, cut.after, key=_name)
                hi = len(entries) if cut.upto is None else bisect.bisect_right(entries, cut.upto, key=_name)
                mine[layer] = entries[lo:hi]
            slices.append(dataclasses.replace(cut, listed=mine))
        log.info("indexing %d runs in %d passes of up to %d runs", len(names), len(slices), per_pass)
        return slices

    def _check_mounted(self, layer: str, runs_listed: int) -> None:
        """Before passes over slices: refuse a root that is missing or lists no runs while the catalog
        holds rows for it (the check a single pass makes on its whole listing, in :meth:`_list`)."""
        if not self.roots[layer].exists():
            if layer == "static" or self._has_rows(layer):
                raise self._missing_root(layer)
        elif not runs_listed and not self.allow_empty_root and self._has_rows(layer):
            raise self._unmounted_root(layer, "lists no runs")

    def _missing_root(self, layer: str) -> RootError:
        root = self.roots[layer]
        return RootError(
            f"{layer} root {root.scrub(root.url)} does not exist or is not reachable (unmounted?); the "
            "catalog was left as it was. Fix the path in the config or mount the root, then index again"
        )

    def _unmounted_root(self, layer: str, what: str) -> RootError:
        root = self.roots[layer]
        return RootError(
            f"{layer} root {root.scrub(root.url)} {what}, but the catalog holds rows for it: it looks unmounted. "
            "Nothing was removed. Mount it and index again, or, if the data really is gone, index with "
            "--allow-empty-root (Catalog.index(allow_empty_root=True)) to remove its rows"
        )

    def _has_rows(self, layer: str) -> bool:
        """Whether the catalog holds anything in ``layer`` (a run present there, or a file row)."""
        flag = Run.in_static if layer == "static" else Run.in_overlay
        checks = [sa.exists().where(Run.project_id == self.project_id, flag.is_(True))]
        for model in FILE_MODELS.values():
            m: Any = model
            checks.append(sa.exists().where(m.project_id == self.project_id, m.layer == layer))
        with self.engine.connect() as conn:
            return any(conn.execute(sa.select(check)).scalar() for check in checks)

    def _pass(self, scopes: list[Scope], runs: RunSlice | None, t0: float, report: IndexReport) -> None:
        """List the scopes (within the slice ``runs``), diff against the catalog and apply the difference."""
        self._slice = runs
        snapshot = load_snapshot(self.engine, self.project_id, scopes, runs)  # before listing: see module docstring
        scan = Scan()
        # big local roots are listed on every core; their workers fork first, before an object store's
        # client threads exist
        jobs = [(self.roots[layer], layer, prefix) for layer, prefix in scopes]
        # a first index creates an entity object or three per file: no cyclic collection can free any of them
        with fanout.SharedListing(jobs, snapshot, self.objects, runs) as shared, gc_paused():
            for layer, prefix in scopes:
                self._list(layer, prefix, snapshot, scan, report, shared)
        # The snapshot and the listing live until the pass ends: move them out of the collector's sight, so
        # the collections the batches set off do not walk 100,000s of objects that cannot be garbage.
        gc.freeze()
        try:
            self._apply(scopes, snapshot, scan, t0, report)
        finally:
            gc.unfreeze()

    def _apply(self, scopes: list[Scope], snapshot: Snapshot, scan: Scan, t0: float, report: IndexReport) -> None:
        """Read what changed, write it in batches, remove what vanished, and record the problems."""
        for by_path in scan.unchanged.values():
            for kind_name, n in Counter(by_path.values()).items():
                report.count(kind_name, "unchanged", n)
        todo: list[tuple[Seen, FileRow | None]] = []
        for (layer, path), s in scan.seen.items():
            old = snapshot.file(s.key.kind, layer, path)
            parked = snapshot.parked(layer, path, s.entry.fingerprint)
            if old is not None and old.unchanged(s.entry.fingerprint):
                report.count(s.key.kind.value, "unchanged")
            elif parked is not None:  # failed before with exactly this content: not worth reading again
                scan.problems[(layer, path)] = Problem("parse", "error", parked.message, parked.fingerprint)
            else:
                todo.append((s, old))
        todo.sort(key=lambda t: (t[0].layer, t[0].entry.path))  # stable batches
        run_ids, vs_ids = self._sync_runs(scopes, snapshot, scan, need_ids=bool(todo))
        total = len(todo)
        batches = [todo[i : i + BATCH_FILES] for i in range(0, total, BATCH_FILES)]
        with self._pool_for(todo) as pool, self._remote_threads():
            # with workers (or remote roots' reader threads), the next batches are read while this process
            # writes the current one
            ahead = PREFETCH_BATCHES + 1 if pool or self._remote else 1
            pending = deque(self._submit(pool, b) for b in batches[:ahead])
            queued, done = len(pending), 0
            while pending:
                self._checkpoint()
                batch, futures = pending.popleft()
                if queued < len(batches):
                    pending.append(self._submit(pool, batches[queued]))
                    queued += 1
                reads = self._read_batch([s for s, _ in batch], t0, pool, futures)
                self._checkpoint()
                self._write_batch(batch, reads, run_ids, vs_ids, t0, report, scan.problems)
                done += len(batch)
                if self.progress:
                    self.progress("index", self._progress_base + done, self._progress_base + total)
        self._progress_base += total

        self._checkpoint()
        vanished = [
            (kind, layer, path, old)
            for kind, layer, path, old in snapshot.files_outside(scan.unchanged)
            if (layer, path) not in scan.seen
        ]
        kept = [(kind, old) for kind, layer, path, old in vanished if scan.is_unknown(layer, path)]
        self._mark_stale(kept)
        self._delete_vanished([v for v in vanished if not scan.is_unknown(v[1], v[2])], t0, report)
        self._drop_empty_runs(scopes, snapshot, scan, t0, report)
        volumes = (Kind.TOMOGRAM, Kind.FEATURE)
        if any(k in volumes for k, *_ in vanished) or any(s.key.kind in volumes for s, _ in todo):
            self._volumes_changed = True  # features are linked to tomograms once, after the last pass
        self._sync_errors(snapshot.errors, scan, report)
        report.runs += len(set().union(*scan.runs.values())) if scan.runs else 0

    def _refresh_statistics(self) -> None:
        """Let PostgreSQL see the catalog as it now is, after a run that changed much of it.

        Right after a first index the statistics still describe empty tables, and until autovacuum's
        analyze comes round a join can be planned as if ``picks`` held a few rows (a ``runs_lacking``
        by user took minutes on a fresh 100,000-run catalog, milliseconds after ANALYZE). The tables the
        next index's snapshot reads are vacuumed as well: the first read of a freshly written row sets
        its hint bits, so without it the next no-op reindex rewrote every page of ``picks`` (28 s instead
        of 13 s at 100,000 runs), and the visibility map lets the aggregates scan indexes only. SQLite
        plans without statistics unless asked, and this catalog's queries are written for that.
        """
        if is_sqlite(self.engine):
            return
        read_by_snapshot = ", ".join(table_of(m).name for m in (Run, VoxelSpacing, *FILE_MODELS.values()))
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f"VACUUM (ANALYZE) {read_by_snapshot}, run_objects")
                conn.exec_driver_sql("ANALYZE points, packed_points")
        except sa.exc.SQLAlchemyError as exc:  # statistics are an optimisation: never fail a finished index
            log.warning("could not refresh the planner's statistics (%s); autovacuum will", exc)

    def _list(
        self, layer: str, prefix: str, snapshot: Snapshot, scan: Scan, report: IndexReport, shared: fanout.SharedListing
    ) -> None:
        """Walk one scope, collecting entities, the runs and voxel spacings they imply, and problems."""
        root = self.roots[layer]
        stats = ListingStats()
        root.invalidate()
        root.expect(lambda: iter(snapshot.files.get(layer, {})))  # where to split a listing
        if not prefix and not root.exists():
            if layer == "static" or snapshot.has_rows(layer):
                raise self._missing_root(layer)
            return  # a fresh project whose overlay nobody has written to yet
        lister = Lister(layer, root.url_of, snapshot, self.objects, scan, self._checkpoint)
        if shared.covers(layer, prefix):
            shared.feed(root, prefix, lister, stats)
        else:
            lister.feed(root.walk(stats, under=prefix))
        listed, found_runs_dir = lister.listed, lister.found_runs_dir
        report.entries_listed += stats.entries
        report.list_calls += stats.list_calls
        if (
            not prefix
            and not self.allow_empty_root
            and not self._mounted_checked
            and snapshot.has_rows(layer)
            and (listed == 0 or (not found_runs_dir and any(r.present(layer) for r in snapshot.runs.values())))
        ):
            what = "lists as empty" if listed == 0 else f"has no {grammar.RUNS_DIR} directory any more"
            raise self._unmounted_root(layer, what)

    # ------------------------------------------------------------------ runs and voxel spacings

    def _sync_runs(
        self, scopes: list[Scope], snap: Snapshot, scan: Scan, need_ids: bool = True
    ) -> tuple[dict[str, int], dict[tuple[str, float], int]]:
        """Upsert runs and voxel spacings whose presence flags changed; return id maps (if ``need_ids``).

        When no flag changed, every run and voxel spacing this pass can refer to is in the snapshot, so
        the maps come from it and a no-op reindex opens no write transaction here.
        """
        now = time.time()
        # entities seen in the scopes (and the slice) belong to these runs only
        in_scope = runs_clause(scopes, self._slice, bytewise=is_sqlite(self.engine))
        run_rows = [
            {"project_id": self.project_id, "name": name, **flags, "indexed_at": now}
            for name, flags in _changed_presence(scopes, snap.runs, scan.runs, _run_rel, scan)
        ]
        vs_rows = [
            {"run": key[0], "voxel_size": key[1], **flags, "indexed_at": now}
            for key, flags in _changed_presence(scopes, snap.vss, scan.vss, _vs_rel, scan)
        ]
        if not run_rows and not vs_rows:
            if not need_ids:
                return {}, {}
            return {name: r.id for name, r in snap.runs.items()}, {key: r.id for key, r in snap.vss.items()}
        with write_tx(self.engine) as conn:
            if run_rows:
                upsert(conn, table_of(Run), run_rows, ["project_id", "name"], ["in_static", "in_overlay", "indexed_at"])
            run_ids = {
                name: rid
                for name, rid in conn.execute(
                    sa.select(Run.name, Run.id).where(Run.project_id == self.project_id, in_scope)
                )
            }
            if run_rows:  # a new run starts with zero picks of every object
                refresh_run_objects(conn, self.project_id, [run_ids[r["name"]] for r in run_rows])
            if vs_rows:
                rows = [{"project_id": self.project_id, "run_id": run_ids[r.pop("run")], **r} for r in vs_rows]
                upsert(
                    conn,
                    table_of(VoxelSpacing),
                    rows,
                    ["run_id", "voxel_size"],
                    ["in_static", "in_overlay", "indexed_at"],
                )
            vs_ids = {
                (name, vs): vid
                for vid, name, vs in conn.execute(
                    sa.select(VoxelSpacing.id, Run.name, VoxelSpacing.voxel_size)
                    .join(Run)
                    .where(Run.project_id == self.project_id, in_scope)
                )
            }
        return run_ids, vs_ids

    def _drop_empty_runs(self, scopes: list[Scope], snap: Snapshot, scan: Scan, t0: float, report: IndexReport) -> None:
        """Delete runs and voxel spacings that no longer exist in either root."""
        seen_runs = set().union(*scan.runs.values())
        seen_vss = set().union(*scan.vss.values())
        gone_runs = [
            old.id
            for name, old in snap.runs.items()
            if name not in seen_runs  # seen in some layer: it exists
            and old.indexed_at < t0
            and not any(_layer_presence(scopes, name, old, scan.runs, _run_rel, scan).values())
        ]
        gone_vs = [
            old.id
            for key, old in snap.vss.items()
            if key not in seen_vss
            and old.indexed_at < t0
            and not any(_layer_presence(scopes, key, old, scan.vss, _vs_rel, scan).values())
        ]
        if not gone_runs and not gone_vs:
            return
        with write_tx(self.engine) as conn:
            for chunk in chunks(gone_vs):
                conn.execute(sa.delete(VoxelSpacing).where(VoxelSpacing.id.in_(chunk), VoxelSpacing.indexed_at < t0))
            for chunk in chunks(gone_runs):
                conn.execute(sa.delete(Run).where(Run.id.in_(chunk), Run.indexed_at < t0))
        report.count("run", "removed", len(gone_runs))

    # ------------------------------------------------------------------ reading payloads

    def _pool_for(self, todo: list[tuple[Seen, FileRow | None]]) -> contextlib.AbstractContextManager[ReadPool | None]:
        """Worker processes for this run's pick files, when there are enough of them to repay the fork."""
        workers = default_workers()
        if not ReadPool.usable(len(todo), workers):  # an upper bound: the daemon's small runs count nothing
            return contextlib.nullcontext()
        n = sum(1 for s, _ in todo if self._poolable(s))
        if not ReadPool.usable(n, workers):
            return contextlib.nullcontext()
        return ReadPool(self.roots, self.limits, workers)

    def _poolable(self, s: Seen) -> bool:
        """Whether a worker reads this file (decided once per file: the pool sizing and the batches both ask)."""
        if s.poolable is None:
            s.poolable = ReadPool.poolable(self.roots[s.layer], s.key.kind, s.entry)
        return s.poolable

    @contextlib.contextmanager
    def _remote_threads(self) -> Iterator[None]:
        """Threads reading remote roots' payloads ahead of the writer (S3: GETs in flight while it writes).

        Reads still queued when the run stops early are dropped, not run.
        """
        n = max((r.read_concurrency for r in self.roots.values()), default=1)
        if n <= 1:
            yield
            return
        self._remote = ThreadPoolExecutor(max_workers=n, thread_name_prefix="copick-catalog-read")
        try:
            yield
        finally:
            threads, self._remote = self._remote, None
            self._ahead.clear()
            threads.shutdown(wait=True, cancel_futures=True)

    def _submit(self, pool: ReadPool | None, batch: list[tuple[Seen, FileRow | None]]) -> _Batch:
        """Hand a batch's pick files to the workers (if any), its remote payloads to the reader threads
        (if any); the rest is read when the batch is written."""
        futures: dict[str, tuple[list[Seen], list[Any]]] = {}
        if pool is not None:
            by_layer: dict[str, list[Seen]] = defaultdict(list)
            for s, _ in batch:
                if self._poolable(s):
                    by_layer[s.layer].append(s)
            for layer, seen in by_layer.items():
                futures[layer] = (seen, pool.submit(layer, [(s.key.kind, s.entry) for s in seen]))
        if self._remote is not None:  # after the pool: its workers fork before any reader thread exists
            for s, _ in batch:
                root = self.roots[s.layer]
                if root.read_concurrency > 1:
                    self._ahead[id(s)] = self._remote.submit(self._read_one, root, s)
        return batch, futures

    def _read_batch(
        self,
        batch: list[Seen],
        t0: float,
        pool: ReadPool | None = None,
        futures: dict[str, tuple[list[Seen], list[Any]]] | None = None,
    ) -> list[_Read]:
        out: list[_Read] = []
        pooled: set[int] = set()
        for seen, fs in (futures or {}).values():
            results = pool.results(fs, len(seen)) if pool is not None and fs else None
            if results is None:
                continue  # a worker died: these are read below, in this process
            self.read_counter += len(seen)
            out.extend(_Read(s, header, error) for s, (header, error) in zip(seen, results, strict=True))
            pooled.update(id(s) for s in seen)
        by_root: dict[str, list[Seen]] = defaultdict(list)
        for s in batch:
            if id(s) not in pooled:
                by_root[s.layer].append(s)
        for layer, items in by_root.items():
            root = self.roots[layer]
            if root.read_concurrency <= 1:
                for i, s in enumerate(items):
                    if i % 50 == 49:
                        self._checkpoint()  # no transaction is open while reading: a stop can land here
                    out.append(self._read_one(root, s))
            elif self._remote is not None:  # read ahead by _submit (anything it missed is queued now)
                ahead = [
                    self._ahead.pop(id(s)) if id(s) in self._ahead else self._remote.submit(self._read_one, root, s)
                    for s in items
                ]
                out.extend(f.result() for f in ahead)
            else:
                with ThreadPoolExecutor(max_workers=root.read_concurrency) as threads:
                    out.extend(threads.map(lambda s, r=root: self._read_one(r, s), items))
        # copick writes JSON in place: give freshly modified files one more chance.
        retry = [r for r in out if r.error and r.seen.entry.mtime and t0 - r.seen.entry.mtime < RACY_WINDOW_S * 2]
        if retry:
            time.sleep(RETRY_DELAY_S)
            for r in retry:
                root = self.roots[r.seen.layer]
                fresh = root.fingerprint(r.seen.entry.path)
                if fresh is None or fresh.error is not None:
                    continue
                r.seen.entry = fresh
                again = self._read_one(root, r.seen)
                r.header, r.error = again.header, again.error
        return out

    def _read_one(self, root: Root, s: Seen) -> _Read:
        self.read_counter += 1
        header, error = read_entity(root, s.key.kind, s.entry, self.limits)
        return _Read(s, header, error)

    # ------------------------------------------------------------------ writing

    def _row_values(
        self, s: Seen, values: dict[str, Any], run_ids: dict[str, int], vs_ids: dict[tuple[str, float], int], t0: float
    ) -> dict[str, Any]:
        key, e = s.key, s.entry
        spec = SPECS[key.kind]
        # An exact fingerprint (an S3 ETag) changes with the content, so it cannot be racily clean.
        racy = not e.exact and e.mtime is not None and t0 - e.mtime < RACY_WINDOW_S
        row: dict[str, Any] = {
            "project_id": self.project_id,
            "layer": s.layer,
            "path": e.path,
            "fingerprint": e.fingerprint,
            "racy": racy,
            "mtime": e.mtime,
            "indexed_at": time.time(),
            "stale": False,
            **values,
            **spec.columns(key),
        }
        if "run" in spec.parents:
            row["run_id"] = run_ids[key.run]  # type: ignore[union-attr]
        if "voxel_spacing" in spec.parents:
            row["voxel_spacing_id"] = vs_ids[(key.run, key.voxel_size)]  # type: ignore[union-attr]
        return row

    def _write_batch(
        self,
        batch: list[tuple[Seen, FileRow | None]],
        reads: list[_Read],
        run_ids: dict[str, int],
        vs_ids: dict[tuple[str, float], int],
        t0: float,
        report: IndexReport,
        problems: dict[tuple[str, str], Problem],
    ) -> None:
        olds = {(s.layer, s.entry.path): old for s, old in batch}
        good: list[tuple[_Read, dict[str, Any]]] = []
        stale: list[tuple[Kind, FileRow]] = []
        for r in reads:
            where = (r.seen.layer, r.seen.entry.path)
            report.files_read += 1
            old = olds[where]
            if r.error is not None or r.header is None:
                self._failed(r, r.error or f"{r.seen.entry.path}: no header", t0, report, problems)
                if old is not None and not old.stale:
                    stale.append((r.seen.key.kind, old))
                continue
            good.append((r, self._row_values(r.seen, r.header.values, run_ids, vs_ids, t0)))
        new = frozenset(where for where, old in olds.items() if old is None)
        try:
            self._store(good, stale, t0, new)
        except _REFUSED as exc:
            if len(good) <= 1 and not stale:
                raise
            log.info("a batch of %d files was refused (%s); writing them one at a time", len(good), exc)
            self._store([], stale, t0)
            for item in good:  # one file the database refuses must not keep the others out
                try:
                    self._store([item], [], t0, new)
                except _REFUSED as one:
                    old = olds[(item[0].seen.layer, item[0].seen.entry.path)]
                    reason = " ".join(str(getattr(one, "orig", None) or one).split())[:200]
                    path = item[0].seen.entry.path
                    self._failed(
                        item[0],
                        f"{self.roots[item[0].seen.layer].url_of(path)}: the catalog database "
                        f"refused its values ({reason}); fix the file, or report this",
                        t0,
                        report,
                        problems,
                    )
                    if old is not None and not old.stale:
                        self._store([], [(item[0].seen.key.kind, old)], t0)
                    good.remove(item)
        for r, _row in good:
            old = olds[(r.seen.layer, r.seen.entry.path)]
            if old is None:
                report.count(r.seen.key.kind.value, "added")
            elif old.fingerprint == r.seen.entry.fingerprint:
                report.count(r.seen.key.kind.value, "unchanged")  # a racily-clean or stale re-check, not a change
            else:
                report.count(r.seen.key.kind.value, "changed")

    def _failed(
        self, r: _Read, message: str, t0: float, report: IndexReport, problems: dict[tuple[str, str], Problem]
    ) -> None:
        """Record a file that could not be read or stored; park it unless it was written a moment ago."""
        e = r.seen.entry
        fresh = not e.exact and e.mtime is not None and t0 - e.mtime < RACY_WINDOW_S
        problems[(r.seen.layer, e.path)] = Problem("parse", "error", message, None if fresh else e.fingerprint)
        report.error_messages.append(message)

    def _store(
        self,
        good: list[tuple[_Read, dict[str, Any]]],
        stale: list[tuple[Kind, FileRow]],
        t0: float,
        new: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        """Upsert the rows of ``good`` (with their points and run summaries) and mark ``stale``, in one transaction.

        ``new``: files the snapshot did not hold. A row another writer adds meanwhile is newer than ``t0``,
        so the guarded upsert leaves it alone and never returns it: a returned new row has no old points.
        """
        rows_by_kind: dict[Kind, list[dict[str, Any]]] = defaultdict(list)
        points_by_path: dict[tuple[str, str], PointSource] = {}
        for r, row in good:
            rows_by_kind[r.seen.key.kind].append(row)
            if r.header is not None and r.header.points is not None:
                points_by_path[(r.seen.layer, r.seen.entry.path)] = r.header.points
        with write_tx(self.engine, bulk=True) as conn:  # nothing here deletes through a cascade
            for kind, rows in rows_by_kind.items():
                table = table_of(FILE_MODELS[kind])
                fresh = [r for r in rows if (r["layer"], r["path"]) in new]
                known = [r for r in rows if (r["layer"], r["path"]) not in new] if fresh else rows
                guard = table.c.indexed_at < t0
                written = insert_fresh(conn, table, fresh, guard)
                if known:
                    written += upsert(
                        conn,
                        table,
                        known,
                        ["project_id", "layer", "path"],
                        [c for c in known[0] if c not in ("project_id", "layer", "path")],
                        guard=guard,
                        returning=(table.c.id, table.c.layer, table.c.path),
                    )
                if kind is Kind.PICK:
                    ids = {(layer, path): pid for pid, layer, path in written}
                    replace_points(conn, ids, points_by_path, new)
                    # new rows are added to the run summaries; runs whose existing rows changed are recounted
                    inserted = {(layer, path) for _pid, layer, path in written} & new
                    count_new_picks(
                        conn,
                        self.project_id,
                        (
                            (r["run_id"], r["object_name"], r["n_points"])
                            for r in fresh
                            if (r["layer"], r["path"]) in inserted
                        ),
                    )
                    if known:
                        refresh_run_objects(conn, self.project_id, {r["run_id"] for r in known})
            for kind, old in stale:
                model: Any = FILE_MODELS[kind]
                conn.execute(sa.update(model).where(model.id == old.id).values(stale=True))

    def _mark_stale(self, kept: list[tuple[Kind, FileRow]]) -> None:
        """Rows under a directory that could not be listed: kept, but no longer vouched for."""
        by_kind: dict[Kind, list[int]] = defaultdict(list)
        for kind, old in kept:
            if not old.stale:
                by_kind[kind].append(old.id)
        if not by_kind:
            return
        with write_tx(self.engine) as conn:
            for kind, ids in by_kind.items():
                model: Any = FILE_MODELS[kind]
                for chunk in chunks(ids):
                    conn.execute(sa.update(model).where(model.id.in_(chunk)).values(stale=True))

    def _delete_vanished(self, vanished: list[tuple[Kind, str, str, FileRow]], t0: float, report: IndexReport) -> None:
        by_kind: dict[Kind, list[int]] = defaultdict(list)
        for kind, _layer, _path, old in vanished:
            if old.indexed_at < t0:
                by_kind[kind].append(old.id)
        for kind, ids in by_kind.items():
            model: Any = FILE_MODELS[kind]
            for chunk in chunks(ids):
                with write_tx(self.engine) as conn:
                    runs = runs_with_picks(conn, chunk) if kind is Kind.PICK else set()
                    conn.execute(sa.delete(model).where(model.id.in_(chunk), model.indexed_at < t0))
                    if runs:
                        refresh_run_objects(conn, self.project_id, runs)
            report.count(kind.value, "removed", len(ids))

    def _feature_match(self) -> tuple[Any, Any, Any]:
        t = table_of(Tomogram)
        f = table_of(Feature)
        return t, f, sa.and_(t.c.voxel_spacing_id == f.c.voxel_spacing_id, t.c.tomo_type == f.c.tomo_type)

    def _dangling_features(self, scopes: list[Scope]) -> bool:
        """Whether a feature of the scanned runs lacks the link to a tomogram that exists (a run cut short
        between writing features and linking them, or a tomogram that came back)."""
        t, f, match = self._feature_match()
        runs = sa.select(Run.id).where(Run.project_id == self.project_id, runs_clause(scopes))
        q = (
            sa.select(f.c.id)
            .where(
                f.c.project_id == self.project_id,
                f.c.run_id.in_(runs),
                f.c.tomogram_id.is_(None),
                sa.exists(sa.select(t.c.id).where(match)),
            )
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(q).first() is not None

    def _link_features(self, scopes: list[Scope]) -> None:
        """Point each feature of the scanned runs at its tomogram: the same layer if there is one, else the other."""
        t, f, match = self._feature_match()
        same = sa.select(t.c.id).where(match, t.c.layer == f.c.layer).limit(1).scalar_subquery()
        other = sa.select(sa.func.min(t.c.id)).where(match).scalar_subquery()
        best = sa.func.coalesce(same, other)
        with write_tx(self.engine) as conn:
            runs = sa.select(Run.id).where(Run.project_id == self.project_id, runs_clause(scopes))
            conn.execute(
                sa.update(f).where(f.c.project_id == self.project_id, f.c.run_id.in_(runs)).values(tomogram_id=best)
            )

    def _sync_errors(self, old_errors: dict[tuple[str, str], ErrorRow], scan: Scan, report: IndexReport) -> None:
        """Record this run's problems; clear the ones whose file is now fine or gone."""
        now = time.time()
        problems = scan.problems
        report.errors += sum(1 for p in problems.values() if p.severity == "error")
        report.warnings += sum(1 for p in problems.values() if p.severity == "warning")
        rows = [
            {
                "project_id": self.project_id,
                "layer": layer,
                "path": path,
                "kind": p.kind,
                "severity": p.severity,
                "message": p.message,
                "fingerprint": p.fingerprint,
                "first_seen": now,
                "last_seen": now,
            }
            for (layer, path), p in problems.items()
            # unchanged error rows are left alone, so a no-op index of a project with errors writes nothing
            if (old := old_errors.get((layer, path))) is None
            or (old.kind, old.message, old.fingerprint) != (p.kind, p.message, p.fingerprint)
        ]
        # an error inside a subtree that could not be examined this time stays as it was
        cleared = [k for k in old_errors if k not in problems and not scan.is_unknown(*k)]
        if not rows and not cleared:
            return
        with write_tx(self.engine) as conn:
            if rows:
                upsert(
                    conn,
                    table_of(IndexErrorRow),
                    rows,
                    ["project_id", "layer", "path"],
                    ["kind", "severity", "message", "fingerprint", "last_seen"],
                )
            for layer in {k[0] for k in cleared}:
                paths = [p for lay, p in cleared if lay == layer]
                for chunk in chunks(paths):
                    conn.execute(
                        sa.delete(IndexErrorRow).where(
                            IndexErrorRow.project_id == self.project_id,
                            IndexErrorRow.layer == layer,
                            IndexErrorRow.path.in_(chunk),
                        )
                    )


# ------------------------------------------------------------------------------------------
# presence of runs and voxel spacings after a scan


def runs_per_pass() -> int:
    """Runs a pass over a slice takes: ``$COPICK_CATALOG_RUNS_PER_PASS``, else :data:`RUNS_PER_PASS`."""
    return env_count(RUNS_PER_PASS_ENV, str(RUNS_PER_PASS)) or RUNS_PER_PASS


def _name(entry: Any) -> str:
    return str(entry.name)


def _run_rel(name: str) -> str:
    return grammar.run_dir_unchecked(name)


def _vs_rel(key: tuple[str, float]) -> str:
    return f"{grammar.run_dir_unchecked(key[0])}/{grammar.VS_PREFIX}{grammar.format_voxel_size(key[1])}"


def _layer_presence(
    scopes: list[Scope],
    key: Any,
    old: DirRow | None,
    seen: dict[str, set[Any]],
    rel_of: Callable[[Any], str],
    scan: Scan,
) -> dict[str, bool]:
    """``{"in_static": …, "in_overlay": …}`` for a run or voxel spacing after this scan."""
    return {
        f"in_{layer}": _presence(
            scopes, layer, rel_of(key), key in seen[layer], old.present(layer) if old else False, scan
        )
        for layer in ("static", "overlay")
    }


def _changed_presence(
    scopes: list[Scope], snap: dict[Any, DirRow], seen: dict[str, set[Any]], rel_of: Callable[[Any], str], scan: Scan
) -> Iterator[tuple[Any, dict[str, bool]]]:
    """Runs or voxel spacings that exist after the scan and whose presence flags changed."""
    static, overlay = seen.get("static", set()), seen.get("overlay", set())
    for key in set(snap) | set().union(*seen.values()):
        old = snap.get(key)
        if old is not None and (key in static, key in overlay) == (old.in_static, old.in_overlay):
            continue  # seen where it was and nowhere else: _presence keeps both flags as they are
        flags = _layer_presence(scopes, key, old, seen, rel_of, scan)
        if any(flags.values()) and (
            old is None or (old.in_static, old.in_overlay) != (flags["in_static"], flags["in_overlay"])
        ):
            yield key, flags


def _presence(scopes: list[Scope], layer: str, rel: str, seen: bool, before: bool, scan: Scan) -> bool:
    """Whether an entity directory exists in ``layer`` after a scan of ``scopes``.

    A scan that covered the directory decides; one that only saw inside it proves it exists; a
    directory inside a subtree that could not be listed keeps its previous answer, as does one the
    scan did not cover.
    """
    if seen:
        return True
    if scan.is_unknown(layer, rel):
        return before
    if any(lay == layer and covers(prefix, rel) for lay, prefix in scopes):
        return False
    return before


__all__ = [
    "BATCH_FILES",
    "RACY_WINDOW_S",
    "RUNS_PER_PASS",
    "RUNS_PER_PASS_ENV",
    "IndexReport",
    "Indexer",
    "runs_per_pass",
]

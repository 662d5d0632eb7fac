"""Scan -> diff against the catalog -> read what changed -> batched upserts and deletes -> report.

The scan is the truth: each root is listed in one pass (:meth:`Root.walk`), every path is parsed
by the grammar in :mod:`layout`, and the result is compared by fingerprint with what the catalog
holds. Only new or changed payloads are read. Writes go in short batches, each its own
transaction, so a crash at any point leaves a consistent catalog that the next run completes.

Concurrent writers are respected: the catalog snapshot is taken *before* the listing, and rows
whose ``indexed_at`` is newer than the scan start (written by the object API meanwhile) are never
overwritten or deleted by this run. A file that fails to parse keeps its previous good row,
marked stale, and gets an ``index_errors`` row; a file modified within the last few seconds is
re-read once before it counts as broken, because copick writes JSON in place.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import layout, payloads
from .db import chunks, is_sqlite, upsert_insert, write_tx
from .errors import IndexCancelled, PayloadError, RootError
from .schema import (
    FILE_MODELS,
    Feature,
    IndexErrorRow,
    IndexRun,
    PackedPoints,
    Point,
    Project,
    Run,
    Tomogram,
    VoxelSpacing,
)
from .storage import Entry, ListingStats, Root
from .summary import refresh_run_objects, runs_with_picks

log = logging.getLogger(__name__)

#: A file whose mtime is this close to the scan start is "racily clean": re-checked next time.
RACY_WINDOW_S = 2.0
#: How long after a parse failure on a freshly modified file we look again before giving up.
RETRY_DELAY_S = 0.3
BATCH_FILES = 400
#: index_runs rows kept per project (plus the newest finished run of each trigger); see _prune_index_runs.
KEEP_INDEX_RUNS = 1000
IDENTITY = [list(r) for r in payloads.IDENTITY]

#: The file-backed table of each entity kind (the one mapping, kept in schema.FILE_MODELS).
KIND_MODELS: dict[layout.Kind, Any] = {layout.Kind(kind): model for kind, model in FILE_MODELS.items()}


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
            "added": self.added, "changed": self.changed, "removed": self.removed,
            "unchanged": self.unchanged, "errors": self.errors, "warnings": self.warnings,
            "files_read": self.files_read, "entries_listed": self.entries_listed,
            "list_calls": self.list_calls, "runs": self.runs, "duration_s": round(self.duration_s, 3),
            "by_kind": {k: dict(v) for k, v in self.by_kind.items()},
        }

    @property
    def nothing_changed(self) -> bool:
        return not (self.added or self.changed or self.removed)


@dataclass(slots=True)
class _Seen:
    key: layout.Key
    entry: Entry
    layer: str
    note: str | None = None


@dataclass(slots=True)
class _Old:
    id: int
    fingerprint: str
    indexed_at: float


@dataclass(slots=True)
class _Read:
    """A payload read for one entity: column values, points (picks only) or an error."""

    seen: _Seen
    values: dict[str, Any] | None = None
    points: list[tuple[Any, ...]] | None = None
    error: str | None = None


def covers(prefix: str, path: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + "/")


class Indexer:
    """Index one project's roots into the catalog. Create one per run; call :meth:`run`."""

    def __init__(self, engine: Engine, project_id: int, roots: dict[str, Root], objects: Sequence[str],
                 *, progress: Callable[[str, int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> None:
        self.engine = engine
        self.project_id = project_id
        self.roots = roots
        self.objects = list(objects)
        self.progress = progress
        self.cancel = cancel
        self.read_counter = 0  # payload reads, for tests and the benchmark

    def _checkpoint(self) -> None:
        """Stop here if the caller asked to. Called only between transactions: a stop asked for by
        interrupting the thread instead can land inside one and leave SQLite's write lock held."""
        if self.cancel is not None and self.cancel():
            raise IndexCancelled("index run cancelled by its caller; the next run completes it")

    # ------------------------------------------------------------------ public

    def run(self, trigger: str = "api", scopes: Iterable[tuple[str, str]] | None = None,
            record: bool = True) -> IndexReport:
        """Index everything (``scopes=None``) or only the given ``(layer, relative prefix)`` subtrees.

        ``record=False`` skips the ``index_runs`` bookkeeping (used for write-through of single files).
        """
        t0 = time.time()
        report = IndexReport()
        scope_list = [(layer, "") for layer in self.roots] if scopes is None else _minimal_scopes(scopes)
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
            conn.execute(sa.update(IndexRun).where(IndexRun.project_id == self.project_id,
                                                   IndexRun.status == "running")
                         .values(status="interrupted"))
            return conn.execute(sa.insert(IndexRun).values(
                project_id=self.project_id, trigger=trigger, status="running", started_at=t0,
                host=socket.gethostname(), pid=os.getpid()).returning(IndexRun.id)).scalar_one()

    def _finish_run(self, run_id: int, report: IndexReport, t0: float, status: str, message: str | None) -> None:
        t1 = time.time()
        report.duration_s = t1 - t0
        try:
            with write_tx(self.engine) as conn:
                conn.execute(sa.update(IndexRun).where(IndexRun.id == run_id).values(
                    status=status, finished_at=t1, duration_s=t1 - t0, added=report.added,
                    changed=report.changed, removed=report.removed, unchanged=report.unchanged,
                    errors=report.errors, message=message))
                if status == "ok":
                    conn.execute(sa.update(Project).where(Project.id == self.project_id)
                                 .values(last_indexed_at=t1))
                _prune_index_runs(conn, self.project_id)
        except sa.exc.SQLAlchemyError:
            log.exception("could not record the end of index run %s", run_id)

    # ------------------------------------------------------------------ the pass

    def _index(self, scopes: list[tuple[str, str]], t0: float, report: IndexReport) -> None:
        snapshot = self._load_snapshot(scopes)  # before listing: see module docstring
        seen: dict[tuple[str, str], _Seen] = {}
        runs_seen: dict[str, set[str]] = defaultdict(set)
        vs_seen: dict[str, set[tuple[str, float]]] = defaultdict(set)
        problems: dict[tuple[str, str], tuple[str, str, str]] = {}  # (layer, path) -> kind, severity, msg
        scanned_ok: set[tuple[str, str]] = set()

        for layer, prefix in scopes:
            root = self.roots[layer]
            stats = ListingStats()
            root.invalidate()
            if not prefix and not root.exists():
                has_rows = any(lay == layer for _k, lay, _p in snapshot.files) or any(
                    old[1 if layer == "static" else 2] for old in snapshot.runs.values())
                if layer == "static" or has_rows:
                    raise RootError(
                        f"{layer} root {root.url} does not exist or is not reachable (unmounted?); the catalog "
                        "was left as it was. Fix the path in the config or mount the root, then index again")
                continue  # a fresh project whose overlay nobody has written to yet
            for n, entry in enumerate(root.walk(stats, under=prefix)):
                if n % 1000 == 999:
                    self._checkpoint()
                parsed = layout.parse(entry.path, self.objects, is_dir=entry.is_dir)
                if parsed is None:
                    continue
                if isinstance(parsed, layout.Malformed):
                    problems[(layer, entry.path)] = ("name", "error", parsed.reason)
                    continue
                key = parsed.key
                if isinstance(key, layout.RunKey):
                    runs_seen[layer].add(key.run)
                    continue
                if isinstance(key, layout.VoxelSpacingKey):
                    runs_seen[layer].add(key.run)
                    vs_seen[layer].add((key.run, key.voxel_size))
                    continue
                zarr_kind = key.kind in layout.ZARR_KINDS or (
                    isinstance(key, layout.DensityMapKey) and key.fmt == "zarr")
                if zarr_kind != entry.is_dir:
                    continue  # a stray file named like a group, or a directory named like a file
                for anc in layout.iter_ancestors(key):
                    if isinstance(anc, layout.RunKey):
                        runs_seen[layer].add(anc.run)
                    elif isinstance(anc, layout.VoxelSpacingKey):
                        vs_seen[layer].add((anc.run, anc.voxel_size))
                seen[(layer, entry.path)] = _Seen(key, entry, layer, parsed.note)
                if parsed.note:
                    problems[(layer, entry.path)] = ("ambiguous_name", "warning", parsed.note)
            report.entries_listed += stats.entries
            report.list_calls += stats.list_calls

        run_ids, vs_ids = self._sync_runs(scopes, snapshot, runs_seen, vs_seen, t0, report)

        todo: list[tuple[_Seen, _Old | None]] = []
        for (layer, path), s in seen.items():
            old = snapshot.files.get((s.key.kind, layer, path))
            if old is not None and old.fingerprint == s.entry.fingerprint:
                report.count(s.key.kind.value, "unchanged")
                scanned_ok.add((layer, path))
            else:
                todo.append((s, old))
        # Parents before children is not needed (runs exist already); sort for stable batches.
        todo.sort(key=lambda t: (t[0].layer, t[0].entry.path))
        total = len(todo)
        for start in range(0, total, BATCH_FILES):
            self._checkpoint()
            batch = todo[start:start + BATCH_FILES]
            reads = self._read_batch([s for s, _ in batch], t0)
            self._checkpoint()
            self._write_batch(batch, reads, run_ids, vs_ids, t0, report, problems, scanned_ok)
            if self.progress:
                self.progress("index", min(start + BATCH_FILES, total), total)

        self._checkpoint()
        vanished = [(kind, layer, path, old) for (kind, layer, path), old in snapshot.files.items()
                    if (layer, path) not in seen]
        self._delete_vanished(vanished, t0, report)
        self._drop_empty_runs(scopes, snapshot, runs_seen, vs_seen, t0, report)
        if any(k in (layout.Kind.TOMOGRAM, layout.Kind.FEATURE) for k, *_ in vanished) or any(
                s.key.kind in (layout.Kind.TOMOGRAM, layout.Kind.FEATURE) for s, _ in todo):
            self._link_features(scopes)
        self._sync_errors(scopes, snapshot.errors, problems, scanned_ok, t0, report)
        report.runs = len(set().union(*runs_seen.values())) if runs_seen else 0

    # ------------------------------------------------------------------ snapshot

    @dataclass
    class _Snapshot:
        files: dict[tuple[layout.Kind, str, str], _Old]
        runs: dict[str, tuple[int, bool, bool, float]]
        vss: dict[tuple[str, float], tuple[int, bool, bool, float]]
        errors: set[tuple[str, str]]

    def _load_snapshot(self, scopes: list[tuple[str, str]]) -> Indexer._Snapshot:
        files: dict[tuple[layout.Kind, str, str], _Old] = {}
        in_scope = _runs_clause(scopes)
        bytewise = is_sqlite(self.engine)
        # Rows under ExperimentRuns/<run>/ belong to that run: saying so lets the run_id index find a
        # write-through's handful of rows among 50,000 (PostgreSQL cannot use an index for the LIKE).
        scoped_runs = sa.select(Run.id).where(Run.project_id == self.project_id, in_scope)
        parts = []
        for kind, model in KIND_MODELS.items():
            q = sa.select(sa.literal(kind.value).label("kind"), model.id, model.layer, model.path,
                          model.fingerprint, model.indexed_at).where(
                model.project_id == self.project_id, _scope_clause(model, scopes, bytewise))
            if "run_id" in model.__table__.c and in_scope is not _ALL_RUNS:
                q = q.where(model.run_id.in_(scoped_runs))
            parts.append(q)
        with self.engine.connect() as conn:
            # one statement for all seven tables: a write-through on PostgreSQL pays one round trip, not seven
            for kind_name, rid, layer, path, fp, at in conn.execute(sa.union_all(*parts)):
                files[(layout.Kind(kind_name), layer, path)] = _Old(rid, fp, at)
            runs = {name: (rid, st, ov, at) for rid, name, st, ov, at in conn.execute(
                sa.select(Run.id, Run.name, Run.in_static, Run.in_overlay, Run.indexed_at)
                .where(Run.project_id == self.project_id, in_scope))}
            vss = {(name, vs): (vid, st, ov, at) for vid, name, vs, st, ov, at in conn.execute(
                sa.select(VoxelSpacing.id, Run.name, VoxelSpacing.voxel_size, VoxelSpacing.in_static,
                          VoxelSpacing.in_overlay, VoxelSpacing.indexed_at).join(Run)
                .where(Run.project_id == self.project_id, in_scope))}
            errors = {(layer, path) for layer, path in conn.execute(
                sa.select(IndexErrorRow.layer, IndexErrorRow.path).where(
                    IndexErrorRow.project_id == self.project_id, _scope_clause(IndexErrorRow, scopes, bytewise)))}
        return Indexer._Snapshot(files, runs, vss, errors)

    # ------------------------------------------------------------------ runs and voxel spacings

    def _sync_runs(self, scopes: list[tuple[str, str]], snap: Indexer._Snapshot,
                   runs_seen: dict[str, set[str]], vs_seen: dict[str, set[tuple[str, float]]],
                   t0: float, report: IndexReport) -> tuple[dict[str, int], dict[tuple[str, float], int]]:
        """Upsert runs and voxel spacings whose presence flags changed; return id maps."""
        now = time.time()
        in_scope = _runs_clause(scopes)  # entities seen in the scopes belong to these runs only
        run_rows = [{"project_id": self.project_id, "name": name, **flags, "indexed_at": now}
                    for name, flags in _changed_presence(scopes, snap.runs, runs_seen, _run_rel)]
        vs_rows = [{"run": key[0], "voxel_size": key[1], **flags, "indexed_at": now}
                   for key, flags in _changed_presence(scopes, snap.vss, vs_seen, _vs_rel)]
        with write_tx(self.engine) as conn:
            if run_rows:
                _upsert(conn, Run.__table__, run_rows, ["project_id", "name"],
                        ["in_static", "in_overlay", "indexed_at"])
            run_ids = dict(conn.execute(sa.select(Run.name, Run.id).where(Run.project_id == self.project_id,
                                                                          in_scope)).all())
            if run_rows:  # a new run starts with zero picks of every object
                refresh_run_objects(conn, self.project_id, [run_ids[r["name"]] for r in run_rows])
            if vs_rows:
                rows = [{"project_id": self.project_id, "run_id": run_ids[r.pop("run")], **r} for r in vs_rows]
                _upsert(conn, VoxelSpacing.__table__, rows, ["run_id", "voxel_size"],
                        ["in_static", "in_overlay", "indexed_at"])
            vs_ids = {(name, vs): vid for vid, name, vs in conn.execute(
                sa.select(VoxelSpacing.id, Run.name, VoxelSpacing.voxel_size).join(Run)
                .where(Run.project_id == self.project_id, in_scope))}
        return run_ids, vs_ids

    def _drop_empty_runs(self, scopes: list[tuple[str, str]], snap: Indexer._Snapshot,
                         runs_seen: dict[str, set[str]], vs_seen: dict[str, set[tuple[str, float]]],
                         t0: float, report: IndexReport) -> None:
        """Delete runs and voxel spacings that no longer exist in either root."""
        gone_runs = [old[0] for name, old in snap.runs.items()
                     if old[3] < t0 and not any(_layer_presence(scopes, name, old, runs_seen, _run_rel).values())]
        gone_vs = [old[0] for key, old in snap.vss.items()
                   if old[3] < t0 and not any(_layer_presence(scopes, key, old, vs_seen, _vs_rel).values())]
        if not gone_runs and not gone_vs:
            return
        with write_tx(self.engine) as conn:
            for chunk in chunks(gone_vs):
                conn.execute(sa.delete(VoxelSpacing).where(VoxelSpacing.id.in_(chunk),
                                                           VoxelSpacing.indexed_at < t0))
            for chunk in chunks(gone_runs):
                conn.execute(sa.delete(Run).where(Run.id.in_(chunk), Run.indexed_at < t0))
        report.count("run", "removed", len(gone_runs))

    # ------------------------------------------------------------------ reading payloads

    def _read_batch(self, batch: list[_Seen], t0: float) -> list[_Read]:
        by_root: dict[str, list[_Seen]] = defaultdict(list)
        for s in batch:
            by_root[s.layer].append(s)
        out: list[_Read] = []
        for layer, items in by_root.items():
            root = self.roots[layer]
            if root.is_local:
                out.extend(self._read_one(root, s) for s in items)
            else:
                with ThreadPoolExecutor(max_workers=16) as pool:
                    out.extend(pool.map(lambda s, r=root: self._read_one(r, s), items))
        # copick writes JSON in place: give freshly modified files one more chance.
        retry = [r for r in out if r.error and r.seen.entry.mtime and t0 - r.seen.entry.mtime < RACY_WINDOW_S * 2]
        if retry:
            time.sleep(RETRY_DELAY_S)
            for r in retry:
                root = self.roots[r.seen.layer]
                fresh = root.fingerprint(r.seen.entry.path)
                if fresh is None:
                    continue
                r.seen.entry = fresh
                again = self._read_one(root, r.seen)
                r.values, r.points, r.error = again.values, again.points, again.error
        return out

    def _read_one(self, root: Root, s: _Seen) -> _Read:
        key, path = s.key, s.entry.path
        self.read_counter += 1
        try:
            if isinstance(key, layout.PickKey):
                pf = payloads.parse_picks(root.read_bytes(path), root.full(path))
                pts = [(i, p.location.x, p.location.y, p.location.z, p.instance_id, p.score,
                        None if p.transformation_ == IDENTITY else json.dumps(p.transformation_))
                       for i, p in enumerate(pf.points or [])]
                return _Read(s, {"n_points": len(pts), "unit": pf.unit, "trust_orientation": pf.trust_orientation,
                                 "voxel_spacing": pf.voxel_spacing}, pts)
            if isinstance(key, layout.FilamentKey):
                ff = payloads.parse_filaments(root.read_bytes(path), root.full(path))
                return _Read(s, {"n_filaments": len(ff.filaments or []), "n_points": ff.n_points})
            if isinstance(key, layout.MeshKey):
                nv, nf = payloads.read_glb_counts(root.read_bytes(path), root.full(path))
                return _Read(s, {"n_vertices": nv, "n_faces": nf})
            if isinstance(key, layout.DensityMapKey) and key.fmt == "mrc":
                info = payloads.read_mrc_info(root.read_bytes(path)[:1024], root.full(path))
                return _Read(s, {"shape": info.shape, "dtype": info.dtype, "voxel_size": info.voxel_size})
            # zarr groups: read just their metadata files
            files = root.read_many([f"{path}/{m}" for m in s.entry.meta])
            raw: dict[str, bytes] = {}
            for m in s.entry.meta:
                got = files.get(f"{path}/{m}")
                if isinstance(got, Exception):
                    raise PayloadError(root.full(f"{path}/{m}"), f"cannot read zarr metadata ({got})")
                if got is not None:
                    raw[m] = got
            info = payloads.read_zarr_info(raw, root.full(path))
            values: dict[str, Any] = {"shape": info.shape, "dtype": info.dtype}
            if isinstance(key, layout.DensityMapKey):
                values["voxel_size"] = info.voxel_size
            else:
                values.update(n_levels=info.n_levels, zarr_format=info.zarr_format)
            return _Read(s, values)
        except PayloadError as exc:
            return _Read(s, error=str(exc))
        except OSError as exc:
            return _Read(s, error=f"{root.full(path)}: cannot read ({exc.strerror or exc}); check permissions")

    # ------------------------------------------------------------------ writing

    def _row_values(self, s: _Seen, values: dict[str, Any], run_ids: dict[str, int],
                    vs_ids: dict[tuple[str, float], int], t0: float) -> dict[str, Any]:
        key, e = s.key, s.entry
        # An exact fingerprint (an S3 ETag) changes with the content, so it cannot be racily clean.
        racy = not e.exact and e.mtime is not None and t0 - e.mtime < RACY_WINDOW_S
        row: dict[str, Any] = {
            "project_id": self.project_id, "layer": s.layer, "path": e.path,
            # a racily-clean entry gets a fingerprint that cannot match, so the next run re-reads it
            "fingerprint": e.fingerprint + ("|racy" if racy else ""),
            "mtime": e.mtime, "indexed_at": time.time(), "stale": False, **values,
        }
        run = layout.run_of(key)
        if run is not None:
            row["run_id"] = run_ids[run]
        match key:
            case layout.TomogramKey():
                row.update(voxel_spacing_id=vs_ids[(key.run, key.voxel_size)], tomo_type=key.tomo_type)
            case layout.FeatureKey():
                row.update(voxel_spacing_id=vs_ids[(key.run, key.voxel_size)], tomo_type=key.tomo_type,
                           feature_type=key.feature_type)
            case layout.PickKey() | layout.MeshKey() | layout.FilamentKey():
                row.update(object_name=key.object_name, user_id=key.user_id, session_id=key.session_id,
                           run_name=key.run)
            case layout.SegmentationKey():
                row.update(run_name=key.run, voxel_size=key.voxel_size, name=key.name, user_id=key.user_id,
                           session_id=key.session_id, is_multilabel=key.is_multilabel, kind=key.seg_kind.value)
            case layout.DensityMapKey():
                row.update(object_name=key.object_name, fmt=key.fmt)
        return row

    def _write_batch(self, batch: list[tuple[_Seen, _Old | None]], reads: list[_Read],
                     run_ids: dict[str, int], vs_ids: dict[tuple[str, float], int], t0: float,
                     report: IndexReport, problems: dict[tuple[str, str], tuple[str, str, str]],
                     scanned_ok: set[tuple[str, str]]) -> None:
        olds = {(s.layer, s.entry.path): old for s, old in batch}
        rows_by_kind: dict[layout.Kind, list[dict[str, Any]]] = defaultdict(list)
        points_by_path: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        stale_ids: dict[layout.Kind, list[int]] = defaultdict(list)
        for r in reads:
            where = (r.seen.layer, r.seen.entry.path)
            report.files_read += 1
            if r.error is not None:
                problems[where] = ("parse", "error", r.error)
                report.error_messages.append(r.error)
                old = olds[where]
                if old is not None:
                    stale_ids[r.seen.key.kind].append(old.id)
                continue
            assert r.values is not None
            rows_by_kind[r.seen.key.kind].append(self._row_values(r.seen, r.values, run_ids, vs_ids, t0))
            if r.points is not None:
                points_by_path[where] = r.points
            scanned_ok.add(where)
            old = olds[where]
            if old is None:
                report.count(r.seen.key.kind.value, "added")
            elif old.fingerprint == r.seen.entry.fingerprint + "|racy":
                report.count(r.seen.key.kind.value, "unchanged")  # a racily-clean re-check, not a change
            else:
                report.count(r.seen.key.kind.value, "changed")
        with write_tx(self.engine) as conn:
            for kind, rows in rows_by_kind.items():
                model = KIND_MODELS[kind]
                table = model.__table__
                update_cols = [c for c in rows[0] if c not in ("project_id", "layer", "path")]
                written = _upsert(conn, table, rows, ["project_id", "layer", "path"], update_cols,
                                  guard=table.c.indexed_at < t0, returning=(table.c.id, table.c.layer,
                                                                            table.c.path))
                if kind is layout.Kind.PICK:
                    ids = {(layer, path): pid for pid, layer, path in written}
                    _replace_points(conn, ids, points_by_path)
                    refresh_run_objects(conn, self.project_id, {r["run_id"] for r in rows})
            for kind, ids in stale_ids.items():
                model = KIND_MODELS[kind]
                conn.execute(sa.update(model).where(model.id.in_(ids)).values(stale=True))

    def _delete_vanished(self, vanished: list[tuple[layout.Kind, str, str, _Old]], t0: float,
                         report: IndexReport) -> None:
        by_kind: dict[layout.Kind, list[int]] = defaultdict(list)
        for kind, _layer, _path, old in vanished:
            if old.indexed_at < t0:
                by_kind[kind].append(old.id)
        for kind, ids in by_kind.items():
            model = KIND_MODELS[kind]
            for chunk in chunks(ids):
                with write_tx(self.engine) as conn:
                    runs = runs_with_picks(conn, chunk) if kind is layout.Kind.PICK else set()
                    conn.execute(sa.delete(model).where(model.id.in_(chunk), model.indexed_at < t0))
                    if runs:
                        refresh_run_objects(conn, self.project_id, runs)
            report.count(kind.value, "removed", len(ids))

    def _link_features(self, scopes: list[tuple[str, str]]) -> None:
        """Point each feature of the scanned runs at its tomogram: the same layer if there is one, else the other."""
        t = Tomogram.__table__
        f = Feature.__table__
        match = sa.and_(t.c.voxel_spacing_id == f.c.voxel_spacing_id, t.c.tomo_type == f.c.tomo_type)
        same = sa.select(t.c.id).where(match, t.c.layer == f.c.layer).limit(1).scalar_subquery()
        other = sa.select(sa.func.min(t.c.id)).where(match).scalar_subquery()
        best = sa.func.coalesce(same, other)
        with write_tx(self.engine) as conn:
            runs = sa.select(Run.id).where(Run.project_id == self.project_id, _runs_clause(scopes))
            conn.execute(sa.update(f).where(f.c.project_id == self.project_id, f.c.run_id.in_(runs))
                         .values(tomogram_id=best))

    def _sync_errors(self, scopes: list[tuple[str, str]], old_errors: set[tuple[str, str]],
                     problems: dict[tuple[str, str], tuple[str, str, str]], scanned_ok: set[tuple[str, str]],
                     t0: float, report: IndexReport) -> None:
        """Record this run's problems; clear the ones whose file is now fine or gone."""
        now = time.time()
        rows = [{"project_id": self.project_id, "layer": layer, "path": path, "kind": kind,
                 "severity": sev, "message": msg, "first_seen": now, "last_seen": now}
                for (layer, path), (kind, sev, msg) in problems.items()]
        report.errors += sum(1 for r in rows if r["severity"] == "error")
        report.warnings += sum(1 for r in rows if r["severity"] == "warning")
        cleared = [k for k in old_errors if k not in problems]
        with write_tx(self.engine) as conn:
            if rows:
                _upsert(conn, IndexErrorRow.__table__, rows, ["project_id", "layer", "path"],
                        ["kind", "severity", "message", "last_seen"])
            for layer in {k[0] for k in cleared}:
                paths = [p for lay, p in cleared if lay == layer]
                for chunk in chunks(paths):
                    conn.execute(sa.delete(IndexErrorRow).where(
                        IndexErrorRow.project_id == self.project_id, IndexErrorRow.layer == layer,
                        IndexErrorRow.path.in_(chunk)))


# ------------------------------------------------------------------------------------------
# helpers


def _prune_index_runs(conn: Connection, project_id: int) -> None:
    """Keep the newest KEEP_INDEX_RUNS rows of a project, and the newest finished row of each trigger.

    A watch daemon records a row per burst (thousands a day); without pruning the history grows
    forever, and `status` needs only the recent past plus the last run of each kind (the nightly cron).
    """
    runs = IndexRun.__table__
    mine = runs.c.project_id == project_id
    oldest_kept = (sa.select(runs.c.id).where(mine).order_by(runs.c.id.desc())
                   .offset(KEEP_INDEX_RUNS - 1).limit(1).scalar_subquery())
    last_of_trigger = sa.select(sa.func.max(runs.c.id)).where(mine, runs.c.status != "running").group_by(
        runs.c.trigger)
    conn.execute(sa.delete(runs).where(mine, runs.c.id < oldest_kept, runs.c.id.not_in(last_of_trigger),
                                       runs.c.status != "running"))


def _run_rel(name: str) -> str:
    return layout.run_dir_unchecked(name)


def _vs_rel(key: tuple[str, float]) -> str:
    return f"{layout.run_dir_unchecked(key[0])}/{layout.VS_PREFIX}{layout.format_voxel_size(key[1])}"


def _layer_presence(scopes: list[tuple[str, str]], key: Any, old: tuple[int, bool, bool, float] | None,
                    seen: dict[str, set[Any]], rel_of: Callable[[Any], str]) -> dict[str, bool]:
    """``{"in_static": …, "in_overlay": …}`` for a run or voxel spacing after this scan."""
    return {f"in_{layer}": _presence(scopes, layer, rel_of(key), key in seen[layer],
                                     bool(old[1 if layer == "static" else 2]) if old else False)
            for layer in ("static", "overlay")}


def _changed_presence(scopes: list[tuple[str, str]], snap: dict[Any, tuple[int, bool, bool, float]],
                      seen: dict[str, set[Any]], rel_of: Callable[[Any], str]) -> Iterator[tuple[Any, dict[str, bool]]]:
    """Runs or voxel spacings that exist after the scan and whose presence flags changed."""
    for key in set(snap) | set().union(*seen.values()):
        old = snap.get(key)
        flags = _layer_presence(scopes, key, old, seen, rel_of)
        if any(flags.values()) and (old is None or (old[1], old[2]) != (flags["in_static"], flags["in_overlay"])):
            yield key, flags


def _presence(scopes: list[tuple[str, str]], layer: str, rel: str, seen: bool, before: bool) -> bool:
    """Whether an entity directory exists in ``layer`` after a scan of ``scopes``.

    A scan that covered the directory decides; one that only saw inside it proves it exists;
    otherwise the previous answer stands.
    """
    if seen:
        return True
    if any(lay == layer and covers(prefix, rel) for lay, prefix in scopes):
        return False
    return before


_ALL_RUNS = sa.true()


def _runs_clause(scopes: list[tuple[str, str]]) -> Any:
    """Which runs a scan of ``scopes`` can add, change or remove: all of them for a scope at or above
    ``ExperimentRuns``, else just the runs the scopes lie in (a write-through touches one run, not 5,000)."""
    names: set[str] = set()
    for _layer, prefix in scopes:
        parts = prefix.split("/") if prefix else []
        if len(parts) < 2 and (not parts or parts[0] == layout.RUNS_DIR):
            return _ALL_RUNS
        if parts[0] == layout.RUNS_DIR:
            names.add(parts[1])
    return Run.name.in_(sorted(names)) if names else sa.false()


def _scope_clause(model: Any, scopes: list[tuple[str, str]], bytewise: bool) -> Any:
    """Rows at or under each ``(layer, prefix)``.

    ``bytewise`` (SQLite, whose default collation compares UTF-8 bytes) spells "at or under" as the
    range ``prefix <= path < prefix0`` ('0' follows '/') narrowed to ``path = prefix or path >=
    prefix/``, which the ``(project_id, layer, path)`` index answers directly: a write-through then
    reads one index range instead of scanning every pick (and SQLite's LIKE would also ignore ASCII
    case). PostgreSQL keeps LIKE, since under a locale collation such a range is not the same set of
    strings.
    """
    parts = []
    for layer, prefix in scopes:
        if not prefix:
            parts.append(model.layer == layer)
        elif bytewise:  # one index range [prefix, prefix0), then the exact test inside it
            parts.append(sa.and_(model.layer == layer, model.path >= prefix, model.path < prefix + "0",
                                 sa.or_(model.path == prefix, model.path >= prefix + "/")))
        else:
            like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
            parts.append(sa.and_(model.layer == layer,
                                 sa.or_(model.path == prefix, model.path.like(like, escape="\\"))))
    return sa.or_(*parts) if parts else sa.false()


def _minimal_scopes(scopes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop scopes contained in others, so no subtree is walked twice."""
    out: list[tuple[str, str]] = []
    for layer, prefix in sorted({(lay, p.strip("/")) for lay, p in scopes}, key=lambda s: (s[0], len(s[1]))):
        if not any(lay == layer and covers(p, prefix) for lay, p in out):
            out.append((layer, prefix))
    return out


def _upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], conflict: list[str],
            update: list[str], guard: Any = None, returning: tuple[Any, ...] | None = None) -> list[Any]:
    """``INSERT … ON CONFLICT DO UPDATE`` that writes nothing when nothing changed.

    ``guard`` restricts which existing rows may be updated (rows newer than the scan are kept).
    """
    stmt = upsert_insert(conn, table)
    distinct = sa.or_(*[table.c[c].is_distinct_from(stmt.excluded[c]) for c in update
                        if c not in ("indexed_at", "last_seen", "mtime")])
    where = distinct if guard is None else sa.and_(guard, distinct)
    stmt = stmt.on_conflict_do_update(index_elements=conflict,
                                      set_={c: stmt.excluded[c] for c in update}, where=where)
    out: list[Any] = []
    for chunk in chunks(rows):
        if returning is not None:
            out.extend(conn.execute(stmt.returning(*returning), list(chunk)).all())
        else:
            conn.execute(stmt, list(chunk))
    return out


def _replace_points(conn: Connection, ids: dict[tuple[str, str], int],
                    points_by_path: dict[tuple[str, str], list[tuple[Any, ...]]]) -> None:
    """Rewrite the points of every pick row this batch wrote: the ``points`` rows and the packed copy."""
    if not ids:
        return
    pick_ids = list(ids.values())
    for chunk in chunks(pick_ids):
        conn.execute(sa.delete(Point).where(Point.pick_id.in_(chunk)))
        conn.execute(sa.delete(PackedPoints).where(PackedPoints.pick_id.in_(chunk)))
    rows = [(pid, *pt) for where, pid in ids.items() for pt in points_by_path.get(where, ())]
    if rows:
        bulk_insert_points(conn, rows)
    conn.execute(sa.insert(PackedPoints), [
        {"pick_id": pid, "data": payloads.pack_points([pt[1:6] for pt in points_by_path.get(where, ())])}
        for where, pid in ids.items()])


POINT_COLUMNS = ("pick_id", "idx", "x", "y", "z", "instance_id", "score", "transform")


def bulk_insert_points(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
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

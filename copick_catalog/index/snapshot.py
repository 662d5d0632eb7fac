"""What the catalog holds for the scopes of an index run, read in one go before the tree is listed.

The indexer diffs the listing against this snapshot: new, changed, unchanged, vanished. Taking it
*before* listing is what makes concurrent writers safe: rows whose ``indexed_at`` is newer than the
scan start (written by the object API meanwhile) are never overwritten or deleted by this run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..catalog.db import is_sqlite
from ..catalog.schema import FILE_MODELS, IndexErrorRow, Run, VoxelSpacing
from ..gcpause import gc_paused
from .grammar import IN_VOXEL_SPACING, Kind
from .scopes import RunSlice, Scope, covers, scope_runs


@dataclass(slots=True)
class FileRow:
    """A file-backed row as the diff needs it."""

    id: int
    fingerprint: str
    racy: bool
    stale: bool
    indexed_at: float

    def unchanged(self, fingerprint: str) -> bool:
        """Whether a listed fingerprint means "nothing to read": equal, not racily clean, not left stale."""
        return self.fingerprint == fingerprint and not self.racy and not self.stale


@dataclass(slots=True)
class DirRow:
    """A run or voxel spacing row: which layers hold its directory."""

    id: int
    in_static: bool
    in_overlay: bool
    indexed_at: float

    def present(self, layer: str) -> bool:
        return self.in_static if layer == "static" else self.in_overlay


@dataclass(slots=True)
class ErrorRow:
    """An open ``index_errors`` row: what went wrong, and (for a parse error) the content that failed."""

    kind: str
    message: str
    fingerprint: str | None


#: Up to this many scopes are spelled out in SQL; beyond, rows are selected by layer and run and filtered here.
SCOPES_IN_SQL = 8


class Snapshot:
    """The catalog's side of the diff.

    File rows are kept as the database returned them, by layer and path (``files``), and turned into
    :class:`FileRow` only for the few a pass looks at closely: a no-op reindex of 57,000 files then
    builds no object per file, and confirms each one with a dictionary lookup and a comparison
    (:meth:`clean`) instead of parsing its path again.
    """

    # positions in a file row, as load_snapshot selects them (2 and 3 are its layer and path)
    KIND, ID, FP, RACY, STALE, AT, RUN_ID, VS_ID = 0, 1, 4, 5, 6, 7, 8, 9

    def __init__(
        self,
        files: dict[str, dict[str, Any]],
        runs: dict[str, DirRow],
        vss: dict[tuple[str, float], DirRow],
        errors: dict[tuple[str, str], ErrorRow],
    ) -> None:
        self.files = files
        self.runs = runs
        self.vss = vss
        self.errors = errors
        self._error_paths: dict[str, set[str]] = {}
        for layer, path in errors:
            self._error_paths.setdefault(layer, set()).add(path)
        self.run_names = {r.id: name for name, r in runs.items()}
        self.vs_keys = {r.id: key for key, r in vss.items()}

    def clean(self, layer: str) -> Callable[[str, str], Any]:
        """A test for one layer: the row of ``path`` if the listed ``fingerprint`` confirms it, else None.

        Confirmed means equal, not racily clean, not left stale, and with no ``index_errors`` row (a warning
        about an ambiguous name is raised by parsing the path, so such a path is parsed every time). A
        confirmed path parses to the row's kind, run and voxel spacing, since its row was written from that
        parse; a stored path is valid UTF-8.
        """
        rows = self.files.get(layer, {})
        flagged = self._error_paths.get(layer, set())
        fp_, racy_, stale_ = self.FP, self.RACY, self.STALE

        def check(path: str, fingerprint: str) -> Any:
            row = rows.get(path)
            if row is None or row[fp_] != fingerprint or row[racy_] or row[stale_] or path in flagged:
                return None
            return row

        return check

    def file(self, kind: Kind, layer: str, path: str) -> FileRow | None:
        """The catalog's row for this file, if it holds one of this kind."""
        row = self.files.get(layer, {}).get(path)
        if row is None or row[self.KIND] != kind.value:
            return None
        return self._file_row(row)

    def _file_row(self, row: Any) -> FileRow:
        return FileRow(row[self.ID], row[self.FP], bool(row[self.RACY]), bool(row[self.STALE]), row[self.AT])

    def files_outside(self, confirmed: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[Kind, str, str, FileRow]]:
        """The file rows whose path is not among ``confirmed`` (layer -> paths a listing confirmed).

        A set difference of dictionary keys per layer: after a no-op listing it is empty, however many
        files the project holds.
        """
        kinds = {k.value: k for k in Kind}
        for layer, rows in self.files.items():
            for path in rows.keys() - confirmed.get(layer, {}).keys():
                row = rows[path]
                yield kinds[row[self.KIND]], layer, path, self._file_row(row)

    def parked(self, layer: str, path: str, fingerprint: str) -> ErrorRow | None:
        """The parse error of a file whose content has not changed since it failed (so it is not read again)."""
        err = self.errors.get((layer, path))
        return err if err is not None and err.kind == "parse" and err.fingerprint == fingerprint else None

    def has_rows(self, layer: str) -> bool:
        """Whether anything in ``layer`` is catalogued (a root listing as empty would then be suspicious)."""
        return bool(self.files.get(layer)) or any(r.present(layer) for r in self.runs.values())


def runs_clause(scopes: Sequence[Scope], runs: RunSlice | None = None, *, bytewise: bool = True) -> Any:
    """SQL for the runs a scan of ``scopes`` (within the slice ``runs``, if given) can touch."""
    names = scope_runs(scopes)
    clause: Any = sa.true() if names is None else Run.name.in_(sorted(names)) if names else sa.false()
    return clause if runs is None else sa.and_(clause, slice_clause(Run.name, runs, bytewise=bytewise))


def slice_clause(name: Any, runs: RunSlice, *, bytewise: bool) -> Any:
    """SQL for "the run name in ``name`` lies in the slice ``runs``".

    ``bytewise`` says the database compares names by code point (SQLite); otherwise the bounds compare
    under ``COLLATE "C"``, since PostgreSQL's default collation orders names as no walk does.
    """
    col = name if bytewise else name.collate("C")
    parts = []
    if runs.after is not None:
        parts.append(col > runs.after)
    if runs.upto is not None:
        parts.append(col <= runs.upto)
    return sa.and_(sa.true(), *parts)


def scope_clause(model: Any, scopes: Sequence[Scope], bytewise: bool) -> Any:
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
            parts.append(
                sa.and_(
                    model.layer == layer,
                    model.path >= prefix,
                    model.path < prefix + "0",
                    sa.or_(model.path == prefix, model.path >= prefix + "/"),
                )
            )
        else:
            like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
            parts.append(
                sa.and_(model.layer == layer, sa.or_(model.path == prefix, model.path.like(like, escape="\\")))
            )
    return sa.or_(*parts) if parts else sa.false()


def load_snapshot(engine: Engine, project_id: int, scopes: Sequence[Scope], runs: RunSlice | None = None) -> Snapshot:
    """Every row the scan of ``scopes`` (within the slice ``runs``, if given) may add, change or remove,
    in one read transaction."""
    bytewise = is_sqlite(engine)
    in_scope = runs_clause(scopes, runs, bytewise=bytewise)
    whole_layers = scope_runs(scopes) is None
    every_run = whole_layers and (runs is None or runs.whole)
    sliced = whole_layers and runs is not None and not runs.whole
    # Many scopes (a daemon burst touching hundreds of runs) make one OR branch each, and building,
    # hashing and planning that expression cost more than reading the rows: select by layer (and run)
    # instead, and keep the rows under a scope here.
    by_layer: dict[str, list[str]] | None = None
    if len(scopes) > SCOPES_IN_SQL:
        by_layer = {}
        for layer, prefix in scopes:
            by_layer.setdefault(layer, []).append(prefix)

    def where_path(model: Any) -> Any:
        return model.layer.in_(sorted(by_layer)) if by_layer is not None else scope_clause(model, scopes, bytewise)

    def wanted(layer: str, path: str) -> bool:
        return by_layer is None or any(covers(prefix, path) for prefix in by_layer.get(layer, ()))

    def in_slice(path: str) -> bool:
        return runs is None or runs.keeps(path)

    # Rows under ExperimentRuns/<run>/ belong to that run: saying so lets the run_id index find a
    # write-through's handful of rows among 50,000 (PostgreSQL cannot use an index for the LIKE).
    scoped_runs = sa.select(Run.id).where(Run.project_id == project_id, in_scope)
    parts = []
    for kind, model in FILE_MODELS.items():
        m: Any = model
        cols = m.__table__.c
        if "run_id" not in cols and runs is not None and not runs.outside:
            continue  # outside every run: the first slice's
        run_id = m.run_id if "run_id" in cols else sa.cast(sa.null(), sa.Integer)
        # the voxel spacing a file implies as an ancestor (tomograms and features live inside one)
        vs_id = m.voxel_spacing_id if kind in IN_VOXEL_SPACING else sa.cast(sa.null(), sa.Integer)
        # A pass over a slice reads only its runs' rows, through an index: on SQLite the run_name range (an
        # equality on project and layer would win SQLite's rule-based choice, so likely() hides those two
        # from the planner); on PostgreSQL the run_id index, given the slice's ids as one array (a
        # COLLATE "C" range cannot use the run_name index, and an IN subquery is planned as a scan).
        by_name = sliced and bytewise and "run_name" in cols
        where = [m.project_id == project_id, where_path(m)]
        if by_name:
            where = [sa.func.likely(w) for w in where]
        q = sa.select(
            sa.literal(kind.value).label("kind"),
            m.id,
            m.layer,
            m.path,
            m.fingerprint,
            m.racy,
            m.stale,
            m.indexed_at,
            run_id.label("run_id"),
            vs_id.label("vs_id"),
        ).where(*where)
        if by_name and runs is not None:
            q = q.where(slice_clause(m.run_name, runs, bytewise=bytewise))
        elif sliced and not bytewise and "run_id" in cols:
            q = q.where(m.run_id == sa.any_(sa.func.array(scoped_runs.scalar_subquery())))
        elif "run_id" in cols and not every_run:
            q = q.where(m.run_id.in_(scoped_runs))
        parts.append(q)
    files: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn, conn.begin(), gc_paused():
        dirs = {
            name: DirRow(rid, st, ov, at)
            for rid, name, st, ov, at in conn.execute(
                sa.select(Run.id, Run.name, Run.in_static, Run.in_overlay, Run.indexed_at).where(
                    Run.project_id == project_id, in_scope
                )
            )
        }
        vss = {
            (name, vs): DirRow(vid, st, ov, at)
            for vid, name, vs, st, ov, at in conn.execute(
                sa.select(
                    VoxelSpacing.id,
                    Run.name,
                    VoxelSpacing.voxel_size,
                    VoxelSpacing.in_static,
                    VoxelSpacing.in_overlay,
                    VoxelSpacing.indexed_at,
                )
                .join(Run)
                .where(Run.project_id == project_id, in_scope)
            )
        }
        errors = {
            (layer, path): ErrorRow(kind, message, fp)
            for layer, path, kind, message, fp in conn.execute(
                sa.select(
                    IndexErrorRow.layer,
                    IndexErrorRow.path,
                    IndexErrorRow.kind,
                    IndexErrorRow.message,
                    IndexErrorRow.fingerprint,
                ).where(IndexErrorRow.project_id == project_id, where_path(IndexErrorRow))
            )
            if wanted(layer, path) and in_slice(path)
        }
        # one statement for all seven tables: a write-through on PostgreSQL pays one round trip, not seven.
        # The rows are kept as they come: this is a no-op reindex's largest read (one row per catalogued file).
        result = conn.execute(sa.union_all(*parts))
        rows = result.cursor.fetchall() if result.cursor is not None else []  # driver tuples: no Row per file
        result.close()
        for row in rows:
            if by_layer is not None and not wanted(row[2], row[3]):
                continue
            by_path = files.get(row[2])
            if by_path is None:
                by_path = files[row[2]] = {}
            by_path[row[3]] = row
    return Snapshot(files, dirs, vss, errors)


__all__ = ["DirRow", "ErrorRow", "FileRow", "Snapshot", "load_snapshot", "runs_clause", "scope_clause", "slice_clause"]

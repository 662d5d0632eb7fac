"""What the catalog holds for the scopes of an index run, read in one go before the tree is listed.

The indexer diffs the listing against this snapshot: new, changed, unchanged, vanished. Taking it
*before* listing is what makes concurrent writers safe: rows whose ``indexed_at`` is newer than the
scan start (written by the object API meanwhile) are never overwritten or deleted by this run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..catalog.db import is_sqlite
from ..catalog.schema import FILE_MODELS, IndexErrorRow, Run, VoxelSpacing
from .grammar import Kind
from .scopes import Scope, scope_runs


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


@dataclass
class Snapshot:
    files: dict[tuple[Kind, str, str], FileRow]
    runs: dict[str, DirRow]
    vss: dict[tuple[str, float], DirRow]
    errors: dict[tuple[str, str], ErrorRow]

    def parked(self, layer: str, path: str, fingerprint: str) -> ErrorRow | None:
        """The parse error of a file whose content has not changed since it failed (so it is not read again)."""
        err = self.errors.get((layer, path))
        return err if err is not None and err.kind == "parse" and err.fingerprint == fingerprint else None

    def has_rows(self, layer: str) -> bool:
        """Whether anything in ``layer`` is catalogued (a root listing as empty would then be suspicious)."""
        return any(lay == layer for _k, lay, _p in self.files) or any(r.present(layer) for r in self.runs.values())


def runs_clause(scopes: Sequence[Scope]) -> Any:
    """SQL for the runs a scan of ``scopes`` can touch: all of them, or just the named ones."""
    names = scope_runs(scopes)
    if names is None:
        return sa.true()
    return Run.name.in_(sorted(names)) if names else sa.false()


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


def load_snapshot(engine: Engine, project_id: int, scopes: Sequence[Scope]) -> Snapshot:
    """Every row the scan of ``scopes`` may add, change or remove, in one read transaction."""
    in_scope = runs_clause(scopes)
    every_run = scope_runs(scopes) is None
    bytewise = is_sqlite(engine)
    # Rows under ExperimentRuns/<run>/ belong to that run: saying so lets the run_id index find a
    # write-through's handful of rows among 50,000 (PostgreSQL cannot use an index for the LIKE).
    scoped_runs = sa.select(Run.id).where(Run.project_id == project_id, in_scope)
    parts = []
    for kind, model in FILE_MODELS.items():
        m: Any = model
        q = sa.select(
            sa.literal(kind.value).label("kind"), m.id, m.layer, m.path, m.fingerprint, m.racy, m.stale, m.indexed_at
        ).where(m.project_id == project_id, scope_clause(m, scopes, bytewise))
        if "run_id" in m.__table__.c and not every_run:
            q = q.where(m.run_id.in_(scoped_runs))
        parts.append(q)
    files: dict[tuple[Kind, str, str], FileRow] = {}
    with engine.connect() as conn, conn.begin():
        # one statement for all seven tables: a write-through on PostgreSQL pays one round trip, not seven
        kinds = {k.value: k for k in Kind}
        for kind_name, rid, layer, path, fp, racy, stale, at in conn.execute(sa.union_all(*parts)):
            files[(kinds[kind_name], layer, path)] = FileRow(rid, fp, bool(racy), bool(stale), at)
        runs = {
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
                ).where(IndexErrorRow.project_id == project_id, scope_clause(IndexErrorRow, scopes, bytewise))
            )
        }
    return Snapshot(files, runs, vss, errors)


__all__ = ["DirRow", "ErrorRow", "FileRow", "Snapshot", "load_snapshot", "runs_clause", "scope_clause"]

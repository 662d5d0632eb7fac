"""Writes through the copick backend land in the overlay files and the catalog in one call.

copick writes a file (``_store``), a directory marker (``ensure(create=True)``) or a zarr group
(``new_tomogram``, ``from_numpy``), or removes one (``_delete_data``). Each of those is wrapped here:

1. what the path held before is kept (:meth:`Root.backup` / :meth:`Root.move_aside`);
2. copick writes, and where the filesystem allows it, atomically: on a local overlay the file or group
   is written under a hidden sibling name (which the path grammar ignores) and renamed into place, so no
   reader, indexer or daemon sees it half-written; object stores replace objects whole anyway;
3. the catalog indexes exactly that path (``Catalog.index(scopes=[("overlay", rel)], record=False)``,
   which takes the project lock, so writers in several processes all land) and the row is checked;
4. if 3 fails, the file change is undone and a :class:`~copick_catalog.errors.CatalogError` says so; if
   2 fails, the catalog is never touched. A failure on either side leaves neither behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..catalog.schema import FILE_MODELS, IndexErrorRow, Run, VoxelSpacing
from ..errors import CatalogError
from ..index import grammar
from ..index.roots import Backup, Root
from ..index.roots.base import hidden_sibling

if TYPE_CHECKING:
    from ..catalog import Catalog

log = logging.getLogger(__name__)


class Change:
    """One path being changed: what it held before (``kept``), for the undo."""

    def __init__(self, root: Root, rel: str, group: bool) -> None:
        self.root, self.rel, self.group = root, rel, group
        self.kept: Backup | None = None

    def move_aside(self) -> None:
        """Empty the path, keeping its content (a delete that can be undone)."""
        self.kept = self.root.move_aside(self.rel, self.group)


class Writer:
    """Write-through for one catalog's overlay root."""

    def __init__(self, catalog: Callable[[], Catalog], on_change: Callable[[str], None]) -> None:
        self._catalog = catalog
        self._on_change = on_change  # tells the listing which run changed

    @property
    def catalog(self) -> Catalog:
        return self._catalog()

    @property
    def overlay(self) -> Root:
        return self.catalog.roots["overlay"]

    @property
    def local(self) -> bool:
        """Whether writes can be staged under a hidden name and renamed into place."""
        return self.overlay.local_path is not None

    def rel(self, full: str) -> str:
        """The overlay-relative path of a path copick built (``{root_overlay}/ExperimentRuns/...``)."""
        base = self.overlay.base.rstrip("/")
        full = full.rstrip("/")
        if not full.startswith(base + "/"):
            raise CatalogError(f"{full} is not inside the overlay root {self.overlay.url}; copick wrote elsewhere")
        return full[len(base) + 1 :]

    def staging(self, full: str) -> str:
        """A hidden sibling of ``full`` to write into before the rename."""
        return os.path.join(os.path.dirname(full), os.path.basename(hidden_sibling(full, "new")))

    # ------------------------------------------------------------------ the protocol

    @contextmanager
    def change(self, rel: str, *, group: bool, present: bool | None = True) -> Iterator[Change]:
        """Around copick's write of ``rel``: keep the old content, then record the change or undo it.

        ``present`` says whether ``rel`` exists after the change (False for a delete; None when either is
        right: copick 1.x "creates" an empty zarr group on an object store by writing nothing at all). A
        delete calls :meth:`Change.move_aside` inside the block instead of removing the path (a rename for a
        local group, however big), so the undo can put it back.
        """
        self._check_name(rel)
        change = Change(self.overlay, rel, group)
        change.kept = self.overlay.backup(rel, group) if present is not False else None
        yield change
        if present is None:
            present = self.overlay.exists(rel)
        self._record(rel, group, present, change.kept)

    @contextmanager
    def write(self, rel: str, *, group: bool) -> Iterator[str | None]:
        """Around copick's write of a file or a whole group at ``rel``: the path copick should write to.

        On a local overlay that is a hidden sibling, renamed into place afterwards (a file replaces the old
        one atomically; a group is swapped in after the old one is moved aside); elsewhere None (write in
        place: an object store replaces objects whole). Then the change is recorded, or undone.
        """
        self._check_name(rel)
        root = self.overlay
        if not self.local:
            kept = root.backup(rel, group)
            yield None
            self._record(rel, group, True, kept)
            return
        final = root.full(rel)
        staging = self.staging(final)
        try:
            yield staging
        except BaseException:
            _remove(staging)
            raise
        try:
            if group:
                kept = root.move_aside(rel, group=True)
                os.rename(staging, final)
            else:
                kept = root.backup(rel, group=False)
                os.replace(staging, final)
        except BaseException:
            _remove(staging)
            raise
        self._record(rel, group, True, kept)

    def _record(self, rel: str, group: bool, present: bool, kept: Backup | None) -> None:
        try:
            self.catalog.index(scopes=[("overlay", rel)], record=False)
            problem = self._problem(rel, present)
            if problem:
                raise CatalogError(f"the index did not record it ({problem})")
        except BaseException as exc:
            note = "the file change was undone"
            try:
                self.overlay.restore(kept, rel, group)
            except Exception as undo_exc:  # the catalog error is the one to report; log this one
                log.exception("could not undo the change to %s", self.overlay.url_of(rel))
                note = f"undoing the file change ALSO failed ({undo_exc}); check {self.overlay.url_of(rel)}"
            self._resync(rel)
            if not isinstance(exc, Exception):
                raise
            reason = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
            raise CatalogError(
                f"{self.overlay.url_of(rel)}: the catalog could not record this change "
                f"({type(reason).__name__}: {' '.join(str(reason).split())}); {note}"
            ) from exc
        finally:
            self._on_change(rel)
        self.overlay.discard(kept)

    def _resync(self, rel: str) -> None:
        """After an undo, let the catalog match the restored file again (best effort)."""
        try:
            self.catalog.index(scopes=[("overlay", rel)], record=False)
        except Exception as exc:
            log.warning("catalog not re-synchronised with %s after undo (%s); the next index will", rel, exc)

    # ------------------------------------------------------------------ checks

    def _check_name(self, rel: str) -> None:
        """Refuse a path copick could not read back: one the grammar ignores (a hidden name), cannot read, or
        reads only by guessing (extra underscores, which copick itself splits wrongly)."""
        parsed = grammar.parse(rel, self.catalog.config.object_names)
        where = self.overlay.url_of(rel)
        if parsed is None:
            raise CatalogError(f"{where}: copick would never list this path (a hidden or misplaced name); rename it")
        if isinstance(parsed, grammar.Malformed):
            raise CatalogError(f"{where}: {parsed.reason}")
        if parsed.note:
            raise CatalogError(f"{where}: refused, because copick would read it back wrongly: {parsed.note}")

    def _problem(self, rel: str, present: bool) -> str | None:
        """Why the catalog does not show the change at ``rel`` (None if it does)."""
        cat = self.catalog
        with cat.engine.connect() as conn:
            err = conn.execute(
                sa.select(IndexErrorRow.message).where(
                    IndexErrorRow.project_id == cat.project_id,
                    IndexErrorRow.layer == "overlay",
                    IndexErrorRow.path == rel,
                    IndexErrorRow.severity == "error",
                )
            ).scalar()
            if err and present:
                return str(err)
            parsed = grammar.parse(rel, cat.config.object_names)
            if not isinstance(parsed, grammar.Parsed):
                return None
            key = parsed.key
            if isinstance(key, grammar.RunKey):
                found = conn.execute(
                    sa.select(Run.in_overlay).where(Run.project_id == cat.project_id, Run.name == key.run)
                ).scalar()
            elif isinstance(key, grammar.VoxelSpacingKey):
                found = conn.execute(
                    sa.select(VoxelSpacing.in_overlay)
                    .join(Run)
                    .where(
                        Run.project_id == cat.project_id,
                        Run.name == key.run,
                        sa.func.abs(VoxelSpacing.voxel_size - key.voxel_size) < 5e-4,
                    )
                ).scalar()
            else:
                model: Any = FILE_MODELS[key.kind]
                found = (
                    conn.execute(
                        sa.select(model.id).where(
                            model.project_id == cat.project_id,
                            model.layer == "overlay",
                            model.path == rel,
                            model.stale.is_(False),
                        )
                    ).first()
                    is not None
                )
        if bool(found) != present:
            return "no row for it" if present else "its row is still there"
        return None


def _remove(path: str) -> None:
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


__all__ = ["Change", "Writer"]

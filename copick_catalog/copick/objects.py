"""The seed's copick object API (``root.runs``, ``run.get_picks(...)``, ``run.new_pick(...)``, …) on the catalog.

Why this module exists: copick answers ``root.runs`` and ``run.picks`` by listing directories, which costs
one request per run and kind on S3. Here every *list* comes from the catalog (SQL, no directory listing),
while payloads (points, meshes, volumes) are still read lazily from the files, which stay the truth.

Writes go through, in one call, to the overlay files **and** the catalog (``_Writer``):

1. the file is written atomically (a pick JSON or GLB through a temporary name and a rename; a zarr group
   into a hidden sibling directory that is renamed into place);
2. the catalog re-indexes exactly that path (``Catalog.index(scopes=[("overlay", rel)], record=False)``)
   and we check the row is there (or gone, for a delete);
3. if step 2 fails, the file change is undone (a new file removed, the previous bytes or group put back)
   and a :class:`~copick_catalog.errors.CatalogError` says so; if step 1 fails, the catalog is never
   touched. So a failure in either leaves neither behind: no orphan file, no phantom row.

Writers in several processes are serialised by the catalog's project lock during step 2, so different
entities written at the same time all land. Two processes creating the *same* entity at the same moment
are not arbitrated (the last file wins, as with copick itself). Writing through ``zarr()`` directly
bypasses the catalog until ``refresh()`` on that entity (or the next index).

Rows from the static root are read-only, as in copick: writing to them raises
:class:`~copick_catalog.errors.ReadOnlyError` (a ``PermissionError``).

Argument orders. The seed and copick 1.x disagree, and both spellings are accepted:

* ``new_pick(user_id, session_id, object_name)`` is the seed's; ``new_picks(object_name, session_id,
  user_id=None, exist_ok=False)`` is copick's. Different names, no clash.
* ``new_mesh`` has the same name in both, with ``(user_id, session_id, object_name)`` in the seed and
  ``(object_name, session_id, user_id=None)`` in copick. Keywords always work. Positionally, three
  arguments are read in whichever order puts a known pickable object in the object slot (the seed's
  if the *last* one is an object, copick's if the *first* one is); one or two positional arguments are
  copick's ``(object_name, session_id)``; ``new_mesh(user, session, object_name=...)`` is the seed's.
  When both or neither end is an object name, the call is refused with a message asking for keywords.
* ``new_segmentation`` also clashes: the seed's ``(user_id, session_id, ...)`` against copick's
  ``(voxel_size, name, session_id, is_multilabel, user_id=None, exist_ok=False)``. A number first means
  copick's order; a string first means the seed's ``(user_id, session_id, voxel_size, name,
  is_multilabel=False)``.

Names are sanitised exactly as copick does (``layout.sanitize_name``, with a warning), and names that
would still not read back (empty, hidden, leaving the root, too long) raise
:class:`~copick_catalog.errors.InvalidNameError`.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np
import sqlalchemy as sa

from ..catalog import Catalog
from ..catalog.schema import (
    DensityMap,
    Feature,
    FileBacked,
    IndexErrorRow,
    Mesh,
    Pick,
    Project,
    Provenance,
    Run,
    Segmentation,
    Tomogram,
    VoxelSpacing,
)
from ..config import CopickConfig
from ..config import PickableObject as ObjectConfig
from ..errors import CatalogError, NotFoundError, ReadOnlyError, StaleRowError
from ..formats import glb, mrc, zarrio
from ..formats import picks as payloads
from ..formats import zarr as zarr_fmt
from ..index import grammar as layout
from ..index.roots import Backup, Root

log = logging.getLogger(__name__)

__all__ = [
    "CopickFeatures",
    "CopickMesh",
    "CopickObject",
    "CopickPicks",
    "CopickRoot",
    "CopickRun",
    "CopickSegmentation",
    "CopickTomogram",
    "CopickVoxelSpacing",
    "from_file",
]

#: The text copick writes into ``.meta`` markers of runs and voxel spacings.
META_TEXT = b"meta"
MULTILABEL_COLOR = (128, 128, 128, 0)

Filter = str | Iterable[str] | None


def from_file(config: str | os.PathLike[str], db: str | None = None, *, index: bool | str = "auto") -> CopickRoot:
    """Open a copick project through its catalog, like ``copick.from_file(config)``.

    ``db`` is the catalog (SQLAlchemy URL or SQLite path; default: the SQLite file next to the config).
    ``index="auto"`` indexes the project once if it has never been indexed, so a fresh catalog does not
    look empty; ``True`` always runs an incremental index first; ``False`` never does. After opening,
    nothing on the read paths lists directories.
    """
    catalog = Catalog.open(config, db=db)
    try:
        if index is True or (index == "auto" and _never_indexed(catalog)):
            catalog.index()
    except BaseException:
        catalog.close()
        raise
    return CopickRoot(catalog, owns_catalog=True)


def _never_indexed(catalog: Catalog) -> bool:
    with catalog.engine.connect() as conn:
        return conn.execute(sa.select(Project.last_indexed_at).where(Project.id == catalog.project_id)).scalar() is None


# ------------------------------------------------------------------------------------------------
# helpers


def _as_text(value: Any, what: str) -> str:
    """copick takes ids as strings; accept ints (``session_id=1``) rather than fail in a regex."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    return str(value)


def _clean(value: Any, what: str) -> str:
    """Sanitise like copick (warning when changed), then refuse what would still not read back."""
    cleaned = layout.sanitize_name(_as_text(value, what))
    layout.check_name(cleaned, what)
    return cleaned


def _matches(value: str, wanted: Filter) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return value == wanted
    return value in set(wanted)


def _voxel_matches(value: float, wanted: float | int | Iterable[float] | None) -> bool:
    """Voxel sizes compare as they read back from a path (three decimals), ints included."""
    if wanted is None:
        return True
    items = [wanted] if isinstance(wanted, int | float | np.number | str) else list(wanted)
    norm = layout.normalize_voxel_size(value)
    return any(layout.normalize_voxel_size(float(w)) == norm for w in items)


def _layer_order(col: Any) -> Any:
    """Static rows first, like copick's overlay merge (and its ``exist_ok`` answer)."""
    return sa.case((col == "static", 0), else_=1)


def _hidden_sibling(rel: str, tag: str) -> str:
    """A name next to ``rel`` that the path grammar ignores (hidden, and not ending in ``.zarr``)."""
    parent, _, name = rel.rpartition("/")
    hidden = f".{name}.{tag}-{uuid.uuid4().hex[:12]}"
    return f"{parent}/{hidden}" if parent else hidden


def _read_array(store: Any, zarr_group: str, selection: Any) -> np.ndarray:
    return zarrio.read_level(store, zarr_group, selection)


def _label_dtype(data: np.ndarray, floor: type[np.unsignedinteger]) -> np.dtype:
    """The smallest unsigned type, at least ``floor``, that holds every label (copick 1.31's rule)."""
    top = int(np.max(data)) if data.size else 0
    if np.min(data, initial=0) < 0:
        raise ValueError("segmentation labels must be >= 0")
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if np.dtype(dt).itemsize >= np.dtype(floor).itemsize and top <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"label {top} does not fit any unsigned integer type")


# ------------------------------------------------------------------------------------------------
# write-through


class _Undo:
    """What an overlay path held before a change, so a failed catalog write can put it back."""

    def __init__(self, root: Root, rel: str, group: bool) -> None:
        self.root, self.rel, self.group = root, rel, group
        self.kept: Backup | None = None

    def restore(self) -> None:
        self.root.restore(self.kept, self.rel, self.group)
        self.kept = None

    def discard(self) -> None:
        self.root.discard(self.kept)
        self.kept = None


class _Writer:
    """Overlay file + catalog row in one step; see the module docstring for the protocol."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.overlay: Root = catalog.roots["overlay"]

    # checks that the catalog reflects a change ------------------------------------------------

    def has_row(self, model: type[FileBacked], rel: str) -> bool:
        with self.catalog.engine.connect() as conn:
            return (
                conn.execute(
                    sa.select(model.id).where(  # type: ignore[attr-defined]
                        model.project_id == self.catalog.project_id,  # type: ignore[attr-defined]
                        model.layer == "overlay",
                        model.path == rel,
                        model.stale.is_(False),
                    )
                ).first()
                is not None
            )

    def row_check(self, model: type[FileBacked], rel: str, present: bool = True) -> Callable[[], bool]:
        return lambda: self.has_row(model, rel) is present

    def run_check(self, run: str) -> Callable[[], bool]:
        def check() -> bool:
            with self.catalog.engine.connect() as conn:
                return bool(
                    conn.execute(
                        sa.select(Run.in_overlay).where(Run.project_id == self.catalog.project_id, Run.name == run)
                    ).scalar()
                )

        return check

    def vs_check(self, run: str, voxel_size: float) -> Callable[[], bool]:
        def check() -> bool:
            with self.catalog.engine.connect() as conn:
                return bool(
                    conn.execute(
                        sa.select(VoxelSpacing.in_overlay)
                        .join(Run)
                        .where(
                            Run.project_id == self.catalog.project_id,
                            Run.name == run,
                            VoxelSpacing.voxel_size == voxel_size,
                        )
                    ).scalar()
                )

        return check

    # operations ---------------------------------------------------------------------------------

    def put_file(self, rel: str, data: bytes, check: Callable[[], bool]) -> None:
        """Write a small file (pick JSON, GLB, ``.meta``) and record it."""
        undo = _Undo(self.overlay, rel, group=False)
        undo.kept = self.overlay.backup(rel, group=False)
        self.overlay.write_bytes(rel, data)  # atomic: on failure nothing changed, catalog untouched
        self._record(rel, check, undo)

    def put_group(self, rel: str, fill: Callable[[Any], object], check: Callable[[], bool]) -> None:
        """Write a whole zarr group with ``fill(store)`` and record it (atomically where the root can)."""
        undo = _Undo(self.overlay, rel, group=True)
        undo.kept = self.overlay.write_group(rel, fill)
        self._record(rel, check, undo)

    def delete(self, rel: str, group: bool, check: Callable[[], bool]) -> None:
        """Remove a file or group from the overlay and its row from the catalog."""
        undo = _Undo(self.overlay, rel, group=group)
        undo.kept = self.overlay.move_aside(rel, group)
        self._record(rel, check, undo)

    def reindex(self, layer: str, rel: str) -> None:
        self.catalog.index(scopes=[(layer, rel)], record=False)

    def _record(self, rel: str, check: Callable[[], bool], undo: _Undo) -> None:
        try:
            self.reindex("overlay", rel)
            if not check():
                raise CatalogError(f"the index did not record it{self._index_error(rel)}")
        except BaseException as exc:
            undo_note = "the file change was undone"
            try:
                undo.restore()
            except Exception as undo_exc:  # the catalog error is the one to report; log this one
                log.exception("could not undo the change to %s", self.overlay.url_of(rel))
                undo_note = f"undoing the file change ALSO failed ({undo_exc}); check {self.overlay.url_of(rel)}"
            self._resync(rel)
            if not isinstance(exc, Exception):
                raise
            # the driver's message, not SQLAlchemy's multi-line dump of the statement and parameters
            reason = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
            raise CatalogError(
                f"{self.overlay.url_of(rel)}: the catalog could not record this change "
                f"({type(reason).__name__}: {' '.join(str(reason).split())}); {undo_note}"
            ) from exc
        undo.discard()

    def _index_error(self, rel: str) -> str:
        try:
            with self.catalog.engine.connect() as conn:
                msg = conn.execute(
                    sa.select(IndexErrorRow.message).where(
                        IndexErrorRow.project_id == self.catalog.project_id,
                        IndexErrorRow.layer == "overlay",
                        IndexErrorRow.path == rel,
                    )
                ).scalar()
        except sa.exc.SQLAlchemyError:
            return ""
        return f": {msg}" if msg else ""

    def _resync(self, rel: str) -> None:
        """After an undo, let the catalog match the restored file again (best effort)."""
        try:
            self.reindex("overlay", rel)
        except Exception as exc:
            log.warning("catalog not re-synchronised with %s after undo (%s); the next index will", rel, exc)


# ------------------------------------------------------------------------------------------------
# entities backed by one file or group


class _Entity:
    """A file-backed entity: which root (``layer``) holds it and where (``path``, relative)."""

    _model: ClassVar[type[FileBacked]]
    _what: ClassVar[str] = "entity"
    _group: ClassVar[bool] = False

    def __init__(self, root: CopickRoot, layer: str, path: str) -> None:
        self._root = root
        self.layer = layer
        self.path = path

    @property
    def read_only(self) -> bool:
        """Static rows are read-only, like copick's static layer."""
        return self.layer == "static"

    @property
    def url(self) -> str:
        return self._fsroot.url_of(self.path)

    @property
    def _fsroot(self) -> Root:
        return self._root.catalog.roots[self.layer]

    def _require_writable(self, action: str) -> None:
        if self.read_only:
            raise ReadOnlyError(
                f"cannot {action} {self._what} {self.url}: it is in the project's static (read-only) root. "
                "Write a new one to the overlay instead (e.g. with another session_id)"
            )

    def _read_bytes(self) -> bytes:
        try:
            return self._fsroot.read_bytes(self.path)
        except FileNotFoundError:
            raise StaleRowError(f"{self.url} has vanished since it was indexed; run root.refresh(index=True)") from None

    def _delete_through(self) -> None:
        self._require_writable("delete")
        w = self._root._writer
        w.delete(self.path, self._group, w.row_check(self._model, self.path, present=False))

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other._root is self._root  # type: ignore[attr-defined]
            and (other.layer, other.path) == (self.layer, self.path)
        )  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.layer, self.path))


class _ZarrEntity(_Entity):
    """An entity stored as a zarr group: ``zarr()`` hands out the store, writes go through ``from_numpy``."""

    _group = True

    def zarr(self) -> Any:
        """The zarr store of the group: read-only for static rows, writable for overlay rows.

        Writing through this store bypasses the catalog; call :meth:`refresh` afterwards so the catalog
        sees the new shape and dtype (``from_numpy`` does that for you).
        """
        return self._fsroot.zarr_store(self.path, read_only=self.read_only)

    def _write_group(self, fill: Callable[[Any], object]) -> None:
        w = self._root._writer
        w.put_group(self.path, fill, w.row_check(self._model, self.path))

    def refresh(self) -> None:
        """Re-index this group (after writing through :meth:`zarr` directly)."""
        self._root._writer.reindex(self.layer, self.path)


# ------------------------------------------------------------------------------------------------
# picks and meshes


class CopickPicks(Provenance, _Entity):
    """A pick file. Points are read from the file on first use; ``store()`` writes file and row."""

    _model = Pick
    _what = "picks"

    def __init__(
        self,
        run: CopickRun,
        layer: str,
        path: str,
        user_id: str,
        session_id: str,
        object_name: str,
        meta: payloads.PickFile | None = None,
    ) -> None:
        super().__init__(run.root, layer, path)
        self.run = run
        self._user_id, self._session_id, self._object_name = user_id, session_id, object_name
        self._meta = meta

    def __repr__(self) -> str:
        n = None if self._meta is None else len(self._meta.points or [])
        return (
            f"CopickPicks(pickable_object_name={self.pickable_object_name}, user_id={self.user_id}, "
            f"session_id={self.session_id}, len(points)={n}, {self.layer})"
        )

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def pickable_object_name(self) -> str:
        return self._object_name

    @property
    def meta(self) -> payloads.PickFile:
        """The pick file's content (loaded on first access)."""
        if self._meta is None:
            self.load()
        assert self._meta is not None
        return self._meta

    @property
    def trust_orientation(self) -> bool:
        return self.meta.trust_orientation

    @property
    def color(self) -> tuple[int, int, int, int] | None:
        obj = self._root.get_object(self.pickable_object_name)
        return None if obj is None else obj.color

    def load(self) -> payloads.PickFile:
        """Read the pick file (replacing ``meta``), as copick's ``load()``."""
        self._meta = payloads.parse_picks(self._read_bytes(), self.url)
        return self._meta

    def refresh(self) -> None:
        self.load()

    @property
    def points(self) -> list[payloads.PickPoint]:
        return self.meta.points or []

    @points.setter
    def points(self, value: Iterable[Any]) -> None:
        pts = []
        for p in value:
            if isinstance(p, payloads.PickPoint):
                pts.append(p)
            elif isinstance(p, dict):
                pts.append(payloads.PickPoint.model_validate(p))
            else:  # a copick CopickPoint or anything pydantic-like
                pts.append(payloads.PickPoint.model_validate(p.model_dump()))
        self.meta.points = pts

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 3)`` positions in Å and ``(N, 4, 4)`` transforms."""
        return self.meta.numpy()

    def from_numpy(
        self,
        positions: np.ndarray,
        transforms: np.ndarray | None = None,
        instance_ids: np.ndarray | Iterable[int] | None = None,
        scores: np.ndarray | Iterable[float] | None = None,
    ) -> None:
        """Replace the points and store them at once (like copick)."""
        self._require_writable("write")
        pts = payloads.points_from_numpy(positions, transforms, instance_ids, scores)  # type: ignore[arg-type]
        if self._meta is None:
            try:
                self.load()
            except (StaleRowError, CatalogError):
                self._meta = self._fresh_meta()
        self.meta.points = pts
        self.store()

    def _fresh_meta(self) -> payloads.PickFile:
        return payloads.PickFile(
            pickable_object_name=self.pickable_object_name,
            user_id=self.user_id,
            session_id=self.session_id,
            run_name=self.run.name,
        )

    def store(self) -> None:
        """Write the pick file to the overlay and its row (with points) to the catalog."""
        self._require_writable("store")
        w = self._root._writer
        w.put_file(self.path, self.meta.to_json(), w.row_check(Pick, self.path))

    def delete(self) -> None:
        self._delete_through()
        self.run._forget(self)


class CopickMesh(Provenance, _Entity):
    """A GLB mesh; ``mesh`` is a ``trimesh.Scene`` loaded on first access and settable."""

    _model = Mesh
    _what = "mesh"

    def __init__(
        self, run: CopickRun, layer: str, path: str, user_id: str, session_id: str, object_name: str, scene: Any = None
    ) -> None:
        super().__init__(run.root, layer, path)
        self.run = run
        self._user_id, self._session_id, self._object_name = user_id, session_id, object_name
        self._scene = scene

    def __repr__(self) -> str:
        return (
            f"CopickMesh(pickable_object_name={self.pickable_object_name}, user_id={self.user_id}, "
            f"session_id={self.session_id}, {self.layer})"
        )

    user_id = property(lambda self: self._user_id)
    session_id = property(lambda self: self._session_id)
    pickable_object_name = property(lambda self: self._object_name)

    @property
    def color(self) -> tuple[int, int, int, int] | None:
        obj = self._root.get_object(self.pickable_object_name)
        return None if obj is None else obj.color

    def load(self) -> Any:
        self._scene = glb.load_scene(self._read_bytes())
        return self._scene

    def refresh(self) -> None:
        self.load()

    @property
    def mesh(self) -> Any:
        if self._scene is None:
            self.load()
        return self._scene

    @mesh.setter
    def mesh(self, value: Any) -> None:
        import trimesh

        self._scene = value if isinstance(value, trimesh.Scene) else trimesh.Scene(value)

    def store(self) -> None:
        """Export the scene as GLB into the overlay and record its row."""
        self._require_writable("store")
        w = self._root._writer
        w.put_file(self.path, glb.scene_to_glb(self.mesh), w.row_check(Mesh, self.path))

    def delete(self) -> None:
        self._delete_through()
        self.run._forget(self)


# ------------------------------------------------------------------------------------------------
# segmentations


class CopickSegmentation(Provenance, _ZarrEntity):
    """A label volume (semantic single-label or multilabel; copick 1.31 instance/panoptic too)."""

    _model = Segmentation
    _what = "segmentation"

    def __init__(
        self,
        run: CopickRun,
        layer: str,
        path: str,
        voxel_size: float,
        name: str,
        user_id: str,
        session_id: str,
        is_multilabel: bool,
        kind: str,
    ) -> None:
        super().__init__(run.root, layer, path)
        self.run = run
        self.voxel_size = voxel_size
        self.name = name
        self.user_id = user_id
        self.session_id = session_id
        self.is_multilabel = is_multilabel
        self.kind = kind

    def __repr__(self) -> str:
        return (
            f"CopickSegmentation(voxel_size={self.voxel_size:.3f}, user_id={self.user_id}, "
            f"session_id={self.session_id}, name={self.name}, is_multilabel={self.is_multilabel}, "
            f"kind={self.kind}, {self.layer})"
        )

    is_instance = property(lambda self: self.kind == layout.SegKind.INSTANCE)
    is_panoptic = property(lambda self: self.kind == layout.SegKind.PANOPTIC)

    @property
    def color(self) -> tuple[int, int, int, int] | None:
        if self.is_multilabel or self.is_panoptic:
            return MULTILABEL_COLOR
        obj = self._root.get_object(self.name)
        return None if obj is None else obj.color

    def numpy(
        self, zarr_group: str = "0", x: slice = slice(None), y: slice = slice(None), z: slice = slice(None)
    ) -> np.ndarray:
        """The labels as ``[z, y, x]`` (``[c, z, y, x]`` for panoptic)."""
        sel = (slice(None), z, y, x) if self.is_panoptic else (z, y, x)
        return _read_array(self._fsroot.zarr_store(self.path, read_only=True), zarr_group, sel)

    def from_numpy(self, data: np.ndarray, levels: int = 1, dtype: Any = None) -> None:
        """Replace the group with ``data`` (``levels`` pyramid levels, nearest-neighbour for labels).

        ``dtype=None`` picks uint8 (uint16 for instance/panoptic) or larger when labels need it.
        """
        self._require_writable("write")
        arr = np.asarray(data)
        floor = np.uint16 if (self.is_instance or self.is_panoptic) else np.uint8
        dt = _label_dtype(arr, floor) if dtype is None else np.dtype(dtype)
        vs = self.voxel_size
        if arr.ndim == 3:
            self._write_group(
                lambda store: zarr_fmt.write_ome_zarr(store, arr, vs, levels=levels, dtype=dt, labels=True)
            )
        else:
            self._write_group(lambda store: zarr_fmt.write_nd_zarr(store, arr.astype(dt), vs))

    def delete(self) -> None:
        self._delete_through()
        self.run._forget(self)


# ------------------------------------------------------------------------------------------------
# voxel spacings, tomograms, features


class CopickFeatures(_ZarrEntity):
    """A feature map computed from a tomogram (``<tomo_type>_<feature_type>_features.zarr``)."""

    _model = Feature
    _what = "features"

    def __init__(self, tomogram: CopickTomogram, layer: str, path: str, feature_type: str) -> None:
        super().__init__(tomogram.voxel_spacing.run.root, layer, path)
        self.tomogram = tomogram
        self.feature_type = feature_type

    @property
    def tomo_type(self) -> str:
        return self.tomogram.tomo_type

    def __repr__(self) -> str:
        return f"CopickFeatures(tomo_type={self.tomo_type}, feature_type={self.feature_type}, {self.layer})"

    def numpy(self, zarr_group: str = "0", slices: tuple[slice, ...] | None = None) -> np.ndarray:
        """The features (any dimensionality, e.g. channel-major 4D)."""
        sel = slices if slices is not None else ...
        return _read_array(self._fsroot.zarr_store(self.path, read_only=True), zarr_group, sel)

    def from_numpy(self, data: np.ndarray) -> None:
        """Replace the group with a one-level array (3D, or channel-major 4D)."""
        self._require_writable("write")
        arr = np.asarray(data)
        vs = self.tomogram.voxel_spacing.voxel_size
        self._write_group(lambda store: zarr_fmt.write_nd_zarr(store, arr, vs))

    def delete(self) -> None:
        self._delete_through()
        self.tomogram._forget(self)


class CopickTomogram(_ZarrEntity):
    """A reconstructed volume (multiscale OME-Zarr) and the features computed from it."""

    _model = Tomogram
    _what = "tomogram"

    def __init__(self, voxel_spacing: CopickVoxelSpacing, layer: str, path: str, tomo_type: str) -> None:
        super().__init__(voxel_spacing.run.root, layer, path)
        self.voxel_spacing = voxel_spacing
        self.tomo_type = tomo_type
        self._features: list[CopickFeatures] | None = None

    def __repr__(self) -> str:
        return f"CopickTomogram(tomo_type={self.tomo_type}, {self.layer})"

    @property
    def features(self) -> list[CopickFeatures]:
        """Features of this tomo_type in this voxel spacing, from both roots (static first), as copick."""
        if self._features is None:
            vs = self.voxel_spacing
            rows = self._root._rows(
                sa.select(Feature.layer, Feature.path, Feature.feature_type)
                .where(Feature.voxel_spacing_id == vs._id_query(), Feature.tomo_type == self.tomo_type)
                .order_by(_layer_order(Feature.layer), Feature.feature_type)
            )
            self._features = [CopickFeatures(self, r.layer, r.path, r.feature_type) for r in rows]
        return self._features

    @features.setter
    def features(self, value: list[CopickFeatures]) -> None:
        self._features = list(value)

    def get_features(self, feature_type: str) -> CopickFeatures | None:
        """The first features of that type (static first), or None — copick returns one object here."""
        return next((f for f in self.features if f.feature_type == feature_type), None)

    def new_features(self, feature_type: str, exist_ok: bool = False) -> CopickFeatures:
        """Create an empty features group in the overlay (write data with ``from_numpy``)."""
        ft = _clean(feature_type, "feature_type")
        existing = self.get_features(ft)
        if existing is not None:
            if exist_ok:
                return existing
            raise ValueError(f"features {ft!r} of tomogram {self.tomo_type!r} already exist")
        vs = self.voxel_spacing
        rel = layout.path_of(layout.FeatureKey(vs.run.name, vs.voxel_size, self.tomo_type, ft))
        found = self._root._adopt_existing(rel, lambda: self._refetch_features(ft))
        if found is not None:
            if exist_ok:
                return found
            raise ValueError(f"features {ft!r} of tomogram {self.tomo_type!r} already exist ({found.url})")
        w = self._root._writer
        w.put_group(rel, _empty_group, w.row_check(Feature, rel))
        feat = CopickFeatures(self, "overlay", rel, ft)
        if self._features is not None:
            self._features.append(feat)
        return feat

    def _refetch_features(self, ft: str) -> CopickFeatures | None:
        self._features = None
        return self.get_features(ft)

    def delete_features(self, feature_type: str | None = None) -> None:
        todo = [f for f in self.features if feature_type is None or f.feature_type == feature_type]
        _refuse_static(todo, "delete")
        for f in todo:
            f.delete()

    def _forget(self, feat: CopickFeatures) -> None:
        if self._features is not None and feat in self._features:
            self._features.remove(feat)

    def numpy(
        self, zarr_group: str = "0", x: slice = slice(None), y: slice = slice(None), z: slice = slice(None)
    ) -> np.ndarray:
        """A region of one scale level as ``[z, y, x]``."""
        return _read_array(self._fsroot.zarr_store(self.path, read_only=True), zarr_group, (z, y, x))

    def from_numpy(self, data: np.ndarray, levels: int = 3, dtype: Any = np.float32) -> None:
        """Replace the group with ``data`` and a ``levels``-level pyramid (2x mean downsampling)."""
        self._require_writable("write")
        arr = np.asarray(data)
        vs = self.voxel_spacing.voxel_size
        self._write_group(lambda store: zarr_fmt.write_ome_zarr(store, arr, vs, levels=levels, dtype=dtype))

    def refresh(self) -> None:
        super().refresh()
        self._features = None

    def refresh_features(self) -> None:
        self._features = None

    def delete(self) -> None:
        self._delete_through()
        self.voxel_spacing._forget(self)


class CopickVoxelSpacing:
    """One voxel size of a run, merged over both roots (no read-only flag, like copick)."""

    def __init__(self, run: CopickRun, voxel_size: float) -> None:
        self.run = run
        self.voxel_size = voxel_size
        self._tomograms: list[CopickTomogram] | None = None

    def __repr__(self) -> str:
        return f"CopickVoxelSpacing(voxel_size={self.voxel_size:.3f}, run={self.run.name})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CopickVoxelSpacing)
            and other.run == self.run
            and layout.normalize_voxel_size(other.voxel_size) == layout.normalize_voxel_size(self.voxel_size)
        )

    def __hash__(self) -> int:
        return hash((self.run.name, layout.normalize_voxel_size(self.voxel_size)))

    def _id_query(self) -> Any:
        return (
            sa.select(VoxelSpacing.id)
            .where(VoxelSpacing.run_id == self.run._id_query(), VoxelSpacing.voxel_size == self.voxel_size)
            .scalar_subquery()
        )

    @property
    def tomograms(self) -> list[CopickTomogram]:
        if self._tomograms is None:
            rows = self.run.root._rows(
                sa.select(Tomogram.layer, Tomogram.path, Tomogram.tomo_type)
                .where(Tomogram.voxel_spacing_id == self._id_query())
                .order_by(_layer_order(Tomogram.layer), Tomogram.tomo_type)
            )
            self._tomograms = [CopickTomogram(self, r.layer, r.path, r.tomo_type) for r in rows]
        return self._tomograms

    def get_tomograms(self, tomo_type: str) -> list[CopickTomogram]:
        return [t for t in self.tomograms if t.tomo_type == tomo_type]

    def get_tomogram(self, tomo_type: str) -> CopickTomogram | None:
        """The first tomogram of that type (static first), or None (the seed's spelling)."""
        found = self.get_tomograms(tomo_type)
        return found[0] if found else None

    def new_tomogram(self, tomo_type: str, exist_ok: bool = False) -> CopickTomogram:
        """Create an empty tomogram group in the overlay (write data with ``from_numpy``)."""
        tt = _clean(tomo_type, "tomo_type")
        if found := self.get_tomograms(tt):
            if exist_ok:
                return found[0]
            raise ValueError(
                f"tomogram {tt!r} already exists at voxel size {self.voxel_size:.3f} in run {self.run.name!r}"
            )
        rel = layout.path_of(layout.TomogramKey(self.run.name, self.voxel_size, tt))
        adopted = self.run.root._adopt_existing(rel, lambda: self._refetch(tt))
        if adopted is not None:
            if exist_ok:
                return adopted
            raise ValueError(f"tomogram {tt!r} already exists ({adopted.url})")
        w = self.run.root._writer
        w.put_group(rel, _empty_group, w.row_check(Tomogram, rel))
        tomo = CopickTomogram(self, "overlay", rel, tt)
        if self._tomograms is not None:
            self._tomograms.append(tomo)
        return tomo

    def _refetch(self, tt: str) -> CopickTomogram | None:
        self._tomograms = None
        return self.get_tomogram(tt)

    def delete_tomograms(self, tomo_type: str | None = None) -> None:
        todo = [t for t in self.tomograms if tomo_type is None or t.tomo_type == tomo_type]
        _refuse_static(todo, "delete")
        for t in todo:
            t.delete()

    def _forget(self, tomo: CopickTomogram) -> None:
        if self._tomograms is not None and tomo in self._tomograms:
            self._tomograms.remove(tomo)

    def refresh(self) -> None:
        self._tomograms = None

    refresh_tomograms = refresh


def _empty_group(store: Any) -> None:
    """A zarr format 2 group with no arrays: what ``new_tomogram``/``new_segmentation`` leave behind."""
    import zarr

    zarr.open_group(store, mode="w", zarr_format=2)


def _refuse_static(items: Iterable[_Entity], action: str) -> None:
    """Check up front, so a bulk delete does all or nothing instead of stopping on the first static item."""
    static = [i.url for i in items if i.read_only]
    if static:
        raise ReadOnlyError(
            f"cannot {action} {len(static)} item(s) in the static (read-only) root: "
            f"{', '.join(static[:5])}{' …' if len(static) > 5 else ''}; narrow the filter "
            "to overlay items"
        )


# ------------------------------------------------------------------------------------------------
# runs


class CopickRun:
    """One run. Every list comes from the catalog and is cached until ``refresh()``."""

    def __init__(self, root: CopickRoot, name: str) -> None:
        self.root = root
        self.name = name
        self._picks: list[CopickPicks] | None = None
        self._meshes: list[CopickMesh] | None = None
        self._segmentations: list[CopickSegmentation] | None = None
        self._voxel_spacings: list[CopickVoxelSpacing] | None = None

    def __repr__(self) -> str:
        return f"CopickRun(name={self.name})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CopickRun) and other.root is self.root and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def _id_query(self) -> Any:
        return (
            sa.select(Run.id)
            .where(Run.project_id == self.root.catalog.project_id, Run.name == self.name)
            .scalar_subquery()
        )

    # ---------------------------------------------------------------- listing (catalog only)

    @property
    def picks(self) -> list[CopickPicks]:
        if self._picks is None:
            rows = self.root._rows(
                sa.select(Pick.layer, Pick.path, Pick.user_id, Pick.session_id, Pick.object_name)
                .where(Pick.run_id == self._id_query())
                .order_by(_layer_order(Pick.layer), Pick.path)
            )
            self._picks = [CopickPicks(self, r.layer, r.path, r.user_id, r.session_id, r.object_name) for r in rows]
        return self._picks

    @property
    def meshes(self) -> list[CopickMesh]:
        if self._meshes is None:
            rows = self.root._rows(
                sa.select(Mesh.layer, Mesh.path, Mesh.user_id, Mesh.session_id, Mesh.object_name)
                .where(Mesh.run_id == self._id_query())
                .order_by(_layer_order(Mesh.layer), Mesh.path)
            )
            self._meshes = [CopickMesh(self, r.layer, r.path, r.user_id, r.session_id, r.object_name) for r in rows]
        return self._meshes

    @property
    def segmentations(self) -> list[CopickSegmentation]:
        """Every segmentation, of every kind (``get_segmentations()`` defaults to semantic ones, like copick)."""
        if self._segmentations is None:
            s = Segmentation
            rows = self.root._rows(
                sa.select(s.layer, s.path, s.voxel_size, s.name, s.user_id, s.session_id, s.is_multilabel, s.kind)
                .where(s.run_id == self._id_query())
                .order_by(_layer_order(s.layer), s.path)
            )
            self._segmentations = [
                CopickSegmentation(
                    self, r.layer, r.path, r.voxel_size, r.name, r.user_id, r.session_id, bool(r.is_multilabel), r.kind
                )
                for r in rows
            ]
        return self._segmentations

    @property
    def voxel_spacings(self) -> list[CopickVoxelSpacing]:
        if self._voxel_spacings is None:
            sizes = self.root._rows(
                sa.select(VoxelSpacing.voxel_size)
                .where(VoxelSpacing.run_id == self._id_query())
                .order_by(VoxelSpacing.voxel_size)
            )
            self._voxel_spacings = [CopickVoxelSpacing(self, r.voxel_size) for r in sizes]
        return self._voxel_spacings

    def refresh_picks(self) -> None:
        self._picks = None

    def refresh_meshes(self) -> None:
        self._meshes = None

    def refresh_segmentations(self) -> None:
        self._segmentations = None

    def refresh_voxel_spacings(self) -> None:
        self._voxel_spacings = None

    def refresh(self) -> None:
        """Forget cached lists; the next access re-reads them from the catalog."""
        self.refresh_picks()
        self.refresh_meshes()
        self.refresh_segmentations()
        self.refresh_voxel_spacings()

    # ---------------------------------------------------------------- queries

    def get_picks(
        self, object_name: Filter = None, user_id: Filter = None, session_id: Filter = None
    ) -> list[CopickPicks]:
        """Picks matching every given filter (each a string or an iterable of strings)."""
        return [
            p
            for p in self.picks
            if _matches(p.pickable_object_name, object_name)
            and _matches(p.user_id, user_id)
            and _matches(p.session_id, session_id)
        ]

    def get_meshes(
        self, object_name: Filter = None, user_id: Filter = None, session_id: Filter = None
    ) -> list[CopickMesh]:
        return [
            m
            for m in self.meshes
            if _matches(m.pickable_object_name, object_name)
            and _matches(m.user_id, user_id)
            and _matches(m.session_id, session_id)
        ]

    def get_segmentations(
        self,
        user_id: Filter = None,
        session_id: Filter = None,
        is_multilabel: bool | None = None,
        name: Filter = None,
        voxel_size: float | Iterable[float] | None = None,
        *,
        is_instance: bool | None = False,
        is_panoptic: bool | None = False,
    ) -> list[CopickSegmentation]:
        """Segmentations matching the filters; voxel sizes may be ints or floats (compared at 3 decimals).

        Without ``is_instance``/``is_panoptic`` only semantic (single-label and multilabel) ones are
        returned, as in copick 1.31; pass ``None`` for any kind.
        """
        return [
            s
            for s in self.segmentations
            if _matches(s.user_id, user_id)
            and _matches(s.session_id, session_id)
            and (is_multilabel is None or s.is_multilabel == is_multilabel)
            and (is_instance is None or s.is_instance == is_instance)
            and (is_panoptic is None or s.is_panoptic == is_panoptic)
            and _matches(s.name, name)
            and _voxel_matches(s.voxel_size, voxel_size)
        ]

    def get_voxel_spacing(self, voxel_size: float) -> CopickVoxelSpacing | None:
        """The voxel spacing with that size (compared at three decimals, as the directory name has it)."""
        return next((vs for vs in self.voxel_spacings if _voxel_matches(vs.voxel_size, voxel_size)), None)

    def _uid(self) -> str | None:
        return self.root.config.user_id

    def user_picks(self) -> list[CopickPicks]:
        uid = self._uid()
        return self.get_picks(user_id=uid) if uid is not None else [p for p in self.picks if p.from_user]

    def tool_picks(self) -> list[CopickPicks]:
        return [p for p in self.picks if p.from_tool]

    def user_meshes(self) -> list[CopickMesh]:
        uid = self._uid()
        return self.get_meshes(user_id=uid) if uid is not None else [m for m in self.meshes if m.from_user]

    def tool_meshes(self) -> list[CopickMesh]:
        return [m for m in self.meshes if m.from_tool]

    def user_segmentations(self) -> list[CopickSegmentation]:
        uid = self._uid()
        if uid is not None:
            return self.get_segmentations(user_id=uid, is_instance=None, is_panoptic=None)
        return [s for s in self.segmentations if s.from_user]

    def tool_segmentations(self) -> list[CopickSegmentation]:
        return [s for s in self.segmentations if s.from_tool]

    # ---------------------------------------------------------------- creating

    def _identity(self, user_id: Any, session_id: Any, caller: str) -> tuple[str, str]:
        uid = user_id if user_id is not None else self.root.config.user_id
        if uid is None:
            raise ValueError(f"{caller}: user_id must be given or set in the project config (user_id)")
        if session_id is None:
            raise ValueError(f"{caller}: session_id is required (use '0' for tool output)")
        return _clean(uid, "user_id"), _clean(session_id, "session_id")

    def _object(self, object_name: Any, caller: str, hint: str = "") -> str:
        name = layout.sanitize_name(_as_text(object_name, "object_name"))
        if name not in self.root.config.object_names:
            raise ValueError(
                f"{caller}: {name!r} is not a pickable object of this project "
                f"({', '.join(self.root.config.object_names)}){hint}"
            )
        layout.check_name(name, "object name")
        return name

    def new_picks(
        self, object_name: str, session_id: str, user_id: str | None = None, exist_ok: bool = False
    ) -> CopickPicks:
        """Create an empty pick file in the overlay (copick's argument order) and its catalog row."""
        obj = self._object(
            object_name,
            "new_picks",
            " (copick's order is new_picks(object_name, session_id, "
            "user_id); the seed's is new_pick(user_id, session_id, "
            "object_name))",
        )
        uid, sid = self._identity(user_id, session_id, "new_picks")
        if existing := self.get_picks(object_name=obj, user_id=uid, session_id=sid):
            return _existing(existing[0], exist_ok, f"picks of {obj!r} by {uid!r} in session {sid!r}")
        rel = layout.path_of(layout.PickKey(self.name, uid, sid, obj))
        adopted = self.root._adopt_existing(rel, lambda: self._refetch("_picks", self.get_picks, obj, uid, sid))
        if adopted is not None:
            return _existing(adopted, exist_ok, f"picks of {obj!r} by {uid!r} in session {sid!r}")
        picks = CopickPicks(self, "overlay", rel, uid, sid, obj)
        picks._meta = picks._fresh_meta()
        picks.store()
        if self._picks is not None:
            self._picks.append(picks)
        return picks

    def new_pick(
        self,
        user_id: str | None = None,
        session_id: str | None = None,
        object_name: str | None = None,
        exist_ok: bool = False,
    ) -> CopickPicks:
        """The seed's spelling: ``new_pick(user_id, session_id, object_name)``."""
        if object_name is None:
            raise TypeError("new_pick(user_id, session_id, object_name): object_name is required")
        return self.new_picks(object_name, session_id, user_id=user_id, exist_ok=exist_ok)  # type: ignore[arg-type]

    def new_mesh(
        self,
        *args: Any,
        object_name: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        exist_ok: bool = False,
    ) -> CopickMesh:
        """Create a mesh (an empty scene) in the overlay and its row.

        Accepts the seed's ``new_mesh(user_id, session_id, object_name)`` and copick's
        ``new_mesh(object_name, session_id, user_id=None, exist_ok=False)``; see the module docstring
        for how a positional call is told apart (by which end is a known pickable object).
        """
        obj, sid, uid = self._mesh_args(args, object_name, session_id, user_id)
        obj = self._object(obj, "new_mesh")
        uid, sid = self._identity(uid, sid, "new_mesh")
        if existing := self.get_meshes(object_name=obj, user_id=uid, session_id=sid):
            return _existing(existing[0], exist_ok, f"mesh of {obj!r} by {uid!r} in session {sid!r}")
        rel = layout.path_of(layout.MeshKey(self.name, uid, sid, obj))
        adopted = self.root._adopt_existing(rel, lambda: self._refetch("_meshes", self.get_meshes, obj, uid, sid))
        if adopted is not None:
            return _existing(adopted, exist_ok, f"mesh of {obj!r} by {uid!r} in session {sid!r}")
        import trimesh

        mesh = CopickMesh(self, "overlay", rel, uid, sid, obj, scene=trimesh.Trimesh().scene())
        mesh.store()
        if self._meshes is not None:
            self._meshes.append(mesh)
        return mesh

    def _is_object(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        names = self.root.config.object_names
        return value in names or layout.FORBIDDEN_NAME_CHARS.sub("-", value).strip("-") in names

    def _mesh_args(
        self, args: tuple[Any, ...], object_name: Any, session_id: Any, user_id: Any
    ) -> tuple[Any, Any, Any]:
        """Map positional arguments of either spelling onto (object_name, session_id, user_id)."""
        if len(args) > 3:
            raise TypeError(f"new_mesh takes at most 3 positional arguments ({len(args)} given)")
        if object_name is not None:
            order = ("user_id", "session_id")  # new_mesh(user, session, object_name=...): the seed's order
            if len(args) > 2:
                raise TypeError("new_mesh: object_name given twice (positionally and by keyword)")
        elif len(args) == 3:
            first, last = self._is_object(args[0]), self._is_object(args[2])
            if last and not first:
                order = ("user_id", "session_id", "object_name")  # the seed's
            elif first and not last:
                order = ("object_name", "session_id", "user_id")  # copick's
            elif first and last and args[0] == args[2]:
                order = ("object_name", "session_id", "user_id")
            else:
                what = "both" if first else "neither"
                raise TypeError(
                    f"new_mesh{args!r}: {what} of the first and last arguments is a pickable object, so the "
                    "argument order is ambiguous; call it with keywords, e.g. "
                    "new_mesh(object_name=..., session_id=..., user_id=...)"
                )
        else:
            order = ("object_name", "session_id", "user_id")[: len(args)]  # copick's
        got: dict[str, Any] = {"object_name": object_name, "session_id": session_id, "user_id": user_id}
        for key, value in zip(order, args, strict=False):
            if got[key] is not None:
                raise TypeError(f"new_mesh: {key} given twice (positionally and by keyword)")
            got[key] = value
        if got["object_name"] is None:
            raise TypeError("new_mesh: object_name is required")
        return got["object_name"], got["session_id"], got["user_id"]

    def new_segmentation(
        self,
        *args: Any,
        voxel_size: float | None = None,
        name: str | None = None,
        session_id: str | None = None,
        is_multilabel: bool | None = None,
        user_id: str | None = None,
        exist_ok: bool = False,
        is_instance: bool = False,
        is_panoptic: bool = False,
    ) -> CopickSegmentation:
        """Create an empty segmentation group in the overlay and its row.

        copick's order ``new_segmentation(voxel_size, name, session_id, is_multilabel, user_id=None,
        exist_ok=False)`` when the first argument is a number; the seed's ``new_segmentation(user_id,
        session_id, voxel_size, name, is_multilabel=False)`` when it is a string. Single-label and
        instance segmentations must be named after a pickable object; multilabel names are free.
        """
        got: dict[str, Any] = {
            "voxel_size": voxel_size,
            "name": name,
            "session_id": session_id,
            "is_multilabel": is_multilabel,
            "user_id": user_id,
        }
        if args and isinstance(args[0], int | float | np.number) and not isinstance(args[0], bool):
            order: tuple[str, ...] = ("voxel_size", "name", "session_id", "is_multilabel", "user_id", "exist_ok")
        else:
            order = ("user_id", "session_id", "voxel_size", "name", "is_multilabel", "exist_ok")
        if len(args) > len(order):
            raise TypeError(f"new_segmentation takes at most {len(order)} positional arguments")
        for key, value in zip(order, args, strict=False):
            if key == "exist_ok":
                exist_ok = bool(value)
                continue
            if got[key] is not None:
                raise TypeError(f"new_segmentation: {key} given twice (positionally and by keyword)")
            got[key] = value
        if got["voxel_size"] is None or got["name"] is None:
            raise TypeError(
                "new_segmentation needs voxel_size and name (copick: new_segmentation(voxel_size, "
                "name, session_id, is_multilabel, user_id=None))"
            )
        multilabel = bool(got["is_multilabel"])
        if sum((multilabel, is_instance, is_panoptic)) > 1:
            raise ValueError("a segmentation is one of multilabel, instance or panoptic, not several")
        vs = float(got["voxel_size"])
        seg_name = layout.sanitize_name(_as_text(got["name"], "name"))
        if not (multilabel or is_panoptic) and seg_name not in self.root.config.object_names:
            raise ValueError(
                f"new_segmentation: single-label and instance segmentations are named after a "
                f"pickable object; {seg_name!r} is not one ({', '.join(self.root.config.object_names)})"
            )
        layout.check_name(seg_name, "segmentation name")
        uid, sid = self._identity(got["user_id"], got["session_id"], "new_segmentation")
        kind = (
            layout.SegKind.INSTANCE
            if is_instance
            else layout.SegKind.PANOPTIC
            if is_panoptic
            else layout.SegKind.SEMANTIC
        )
        flt = {
            "user_id": uid,
            "session_id": sid,
            "name": seg_name,
            "voxel_size": vs,
            "is_multilabel": multilabel,
            "is_instance": is_instance,
            "is_panoptic": is_panoptic,
        }
        what = f"segmentation {seg_name!r} at {vs:.3f} by {uid!r} in session {sid!r}"
        if existing := self.get_segmentations(**flt):
            return _existing(existing[0], exist_ok, what)
        rel = layout.path_of(layout.SegmentationKey(self.name, vs, uid, sid, seg_name, multilabel, kind))

        def refetch() -> CopickSegmentation | None:
            self._segmentations = None
            found = self.get_segmentations(**flt)
            return found[0] if found else None

        adopted = self.root._adopt_existing(rel, refetch)
        if adopted is not None:
            return _existing(adopted, exist_ok, what)
        w = self.root._writer
        w.put_group(rel, _empty_group, w.row_check(Segmentation, rel))
        seg = CopickSegmentation(
            self, "overlay", rel, layout.normalize_voxel_size(vs), seg_name, uid, sid, multilabel, kind.value
        )
        if self._segmentations is not None:
            self._segmentations.append(seg)
        return seg

    def new_voxel_spacing(self, voxel_size: float, exist_ok: bool = False) -> CopickVoxelSpacing:
        """Create ``VoxelSpacing<vs:.3f>/.meta`` in the overlay and the catalog row."""
        found = self.get_voxel_spacing(voxel_size)
        if found is not None:
            return _existing(found, exist_ok, f"voxel spacing {float(voxel_size):.3f} of run {self.name!r}")
        vs = layout.normalize_voxel_size(voxel_size)
        rel = f"{layout.path_of(layout.VoxelSpacingKey(self.name, vs))}/{layout.META_MARKER}"
        w = self.root._writer
        w.put_file(rel, META_TEXT, w.vs_check(self.name, vs))
        spacing = CopickVoxelSpacing(self, vs)
        if self._voxel_spacings is not None:
            self._voxel_spacings.append(spacing)
            self._voxel_spacings.sort(key=lambda v: v.voxel_size)
        return spacing

    def _refetch(self, cache: str, getter: Callable[..., list[Any]], obj: str, uid: str, sid: str) -> Any:
        setattr(self, cache, None)
        found = getter(object_name=obj, user_id=uid, session_id=sid)
        return found[0] if found else None

    # ---------------------------------------------------------------- deleting

    def delete_picks(self, object_name: Filter = None, user_id: Filter = None, session_id: Filter = None) -> None:
        """Delete matching picks (files and rows); refuses, deleting nothing, if any match is static."""
        todo = self.get_picks(object_name, user_id, session_id)
        _refuse_static(todo, "delete")
        for p in todo:
            p.delete()

    def delete_meshes(self, object_name: Filter = None, user_id: Filter = None, session_id: Filter = None) -> None:
        todo = self.get_meshes(object_name, user_id, session_id)
        _refuse_static(todo, "delete")
        for m in todo:
            m.delete()

    def delete_segmentations(
        self,
        user_id: Filter = None,
        session_id: Filter = None,
        is_multilabel: bool | None = None,
        name: Filter = None,
        voxel_size: float | Iterable[float] | None = None,
        *,
        is_instance: bool | None = False,
        is_panoptic: bool | None = False,
    ) -> None:
        todo = self.get_segmentations(
            user_id, session_id, is_multilabel, name, voxel_size, is_instance=is_instance, is_panoptic=is_panoptic
        )
        _refuse_static(todo, "delete")
        for s in todo:
            s.delete()

    def _forget(self, item: _Entity) -> None:
        for cache in (self._picks, self._meshes, self._segmentations):
            if cache is not None and item in cache:
                cache.remove(item)  # type: ignore[arg-type]


def _existing(item: Any, exist_ok: bool, what: str) -> Any:
    if exist_ok:
        return item
    where = f" ({item.url})" if isinstance(item, _Entity) else ""
    raise ValueError(f"{what} already exists{where}; pass exist_ok=True to get it")


# ------------------------------------------------------------------------------------------------
# pickable objects


class CopickObject:
    """A pickable object of the config, with its density map (``Objects/<name>.zarr``) if any."""

    def __init__(self, root: CopickRoot, meta: ObjectConfig) -> None:
        self.root = root
        self.meta = meta
        self._maps: list[tuple[str, str, str]] | None = None

    def __repr__(self) -> str:
        return f"CopickObject(name={self.name}, is_particle={self.is_particle}, label={self.label})"

    name = property(lambda self: self.meta.name)
    is_particle = property(lambda self: self.meta.is_particle)
    label = property(lambda self: self.meta.label)
    color = property(lambda self: self.meta.color)
    emdb_id = property(lambda self: self.meta.emdb_id)
    pdb_id = property(lambda self: self.meta.pdb_id)
    identifier = property(lambda self: self.meta.identifier)
    go_id = identifier
    map_threshold = property(lambda self: self.meta.map_threshold)
    radius = property(lambda self: self.meta.radius)
    metadata = property(lambda self: self.meta.metadata)

    def _density_maps(self) -> list[tuple[str, str, str]]:
        """``(layer, path, fmt)`` of this object's density maps, from the catalog."""
        if self._maps is None:
            rows = self.root._rows(
                sa.select(DensityMap.layer, DensityMap.path, DensityMap.fmt)
                .where(DensityMap.project_id == self.root.catalog.project_id, DensityMap.object_name == self.name)
                .order_by(_layer_order(DensityMap.layer), DensityMap.path)
            )
            self._maps = [(r.layer, r.path, r.fmt) for r in rows]
        return self._maps

    def has_density_map(self) -> bool:
        """Whether the catalog knows a density map for this particle (copick 2.0's spelling)."""
        return bool(self.is_particle and self._density_maps())

    @property
    def read_only(self) -> bool:
        """copick's rule: read-only when the map exists in static and not in the overlay."""
        layers = {layer for layer, _path, fmt in self._density_maps() if fmt == "zarr"}
        return "static" in layers and "overlay" not in layers

    @property
    def _rel(self) -> str:
        return layout.path_of(layout.DensityMapKey(self.name))

    def zarr(self) -> Any:
        """The density-map store (None for non-particles): the static one if read-only, else the overlay's."""
        if not self.is_particle:
            return None
        layer = "static" if self.read_only else "overlay"
        return self.root.catalog.roots[layer].zarr_store(self._rel, read_only=self.read_only)

    def numpy(
        self, zarr_group: str = "0", x: slice = slice(None), y: slice = slice(None), z: slice = slice(None)
    ) -> np.ndarray | None:
        """The density map as ``[z, y, x]``, or None when the object has none (a seed MRC map also counts)."""
        maps = self._density_maps()
        if not self.is_particle or not maps:
            return None
        zarrs = [m for m in maps if m[2] == "zarr"]
        if not zarrs:
            layer, path, _ = maps[0]
            root = self.root.catalog.roots[layer]
            return mrc.read_mrc_array(root.read_bytes(path), root.url_of(path))[z, y, x]
        layer = "static" if self.read_only else "overlay"
        return _read_array(self.root.catalog.roots[layer].zarr_store(self._rel, read_only=True), zarr_group, (z, y, x))

    def from_numpy(self, data: np.ndarray, voxel_size: float, dtype: Any = np.float32) -> None:
        """Write the density map (one level) into the overlay and record it."""
        if not self.is_particle:
            raise ValueError(f"{self.name!r} is not a particle; only particles have density maps")
        if self.read_only:
            raise ReadOnlyError(f"the density map of {self.name!r} is in the static (read-only) root")
        arr = np.asarray(data)
        w = self.root._writer
        w.put_group(
            self._rel,
            lambda store: zarr_fmt.write_ome_zarr(store, arr, voxel_size, levels=1, dtype=dtype),
            w.row_check(DensityMap, self._rel),
        )
        self._maps = None

    def delete(self) -> None:
        """Delete the overlay density map (static ones are read-only)."""
        if not any(layer == "overlay" and fmt == "zarr" for layer, _p, fmt in self._density_maps()):
            if self.read_only:
                raise ReadOnlyError(f"the density map of {self.name!r} is in the static (read-only) root")
            raise NotFoundError(f"{self.name!r} has no density map in the overlay")
        w = self.root._writer
        w.delete(self._rel, True, w.row_check(DensityMap, self._rel, present=False))
        self._maps = None


# ------------------------------------------------------------------------------------------------
# the root


class CopickRoot:
    """A copick project served from its catalog: the seed's ``CopickRootFSSpec``, without listings."""

    def __init__(self, catalog: Catalog, *, owns_catalog: bool = False) -> None:
        self.catalog = catalog
        self._owns_catalog = owns_catalog
        self._writer = _Writer(catalog)
        self._runs: list[CopickRun] | None = None
        self._run_cache: dict[str, CopickRun] = {}
        self._objects: list[CopickObject] | None = None

    def __repr__(self) -> str:
        return f"CopickRoot({self.config.name!r}, catalog={self.catalog.db_url})"

    def close(self) -> None:
        if self._owns_catalog:
            self.catalog.close()

    def __enter__(self) -> CopickRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- config

    @property
    def config(self) -> CopickConfig:
        return self.catalog.config

    @property
    def user_id(self) -> str | None:
        return self.config.user_id

    @user_id.setter
    def user_id(self, value: str | None) -> None:
        self.config.user_id = value

    @property
    def session_id(self) -> str | None:
        return self.config.session_id

    @session_id.setter
    def session_id(self, value: str | None) -> None:
        self.config.session_id = value

    @property
    def pickable_objects(self) -> list[CopickObject]:
        if self._objects is None:
            self._objects = [CopickObject(self, o) for o in self.config.pickable_objects]
        return self._objects

    def get_object(self, name: str) -> CopickObject | None:
        return next((o for o in self.pickable_objects if o.name == name), None)

    # ---------------------------------------------------------------- runs

    def _rows(self, stmt: Any) -> list[Any]:
        with self.catalog.engine.connect() as conn:
            return list(conn.execute(stmt).all())

    def _run(self, name: str) -> CopickRun:
        run = self._run_cache.get(name)
        if run is None:
            run = self._run_cache[name] = CopickRun(self, name)
        return run

    @property
    def runs(self) -> list[CopickRun]:
        """Every run in the catalog, sorted by name (one query; no directory listing)."""
        if self._runs is None:
            names = self._rows(sa.select(Run.name).where(Run.project_id == self.catalog.project_id).order_by(Run.name))
            self._runs = [self._run(r.name) for r in names]
        return self._runs

    def get_run(self, name: str) -> CopickRun | None:
        """The run called ``name``, or None (one indexed lookup when the run list is not loaded)."""
        if self._runs is not None:
            return next((r for r in self._runs if r.name == name), None)
        if name in self._run_cache:
            return self._run_cache[name]
        found = self._rows(sa.select(Run.name).where(Run.project_id == self.catalog.project_id, Run.name == name))
        return self._run(name) if found else None

    def new_run(self, name: str, exist_ok: bool = False) -> CopickRun:
        """Create ``ExperimentRuns/<name>/.meta`` in the overlay (as copick does) and the run's row."""
        layout.check_run_name(name)
        existing = self.get_run(name)
        if existing is not None:
            return _existing(existing, exist_ok, f"run {name!r}")
        rel = f"{layout.path_of(layout.RunKey(name))}/{layout.META_MARKER}"
        self._writer.put_file(rel, META_TEXT, self._writer.run_check(name))
        run = self._run(name)
        if self._runs is not None:
            self._runs.append(run)
            self._runs.sort(key=lambda r: r.name)
        return run

    def refresh(self, index: bool = False) -> None:
        """Forget cached runs and objects; with ``index=True`` run an incremental index first."""
        if index:
            self.catalog.index()
        self._runs = None
        self._run_cache = {}
        self._objects = None

    def _adopt_existing(self, rel: str, refetch: Callable[[], Any]) -> Any:
        """An overlay file the catalog has not seen yet (written outside the API): index it and return it.

        Without this, ``new_*`` would silently overwrite someone's file that the last index missed.
        """
        if not self._writer.overlay.exists(rel):
            return None
        self._writer.reindex("overlay", rel)
        found = refetch()
        if found is None:
            raise CatalogError(
                f"{self._writer.overlay.url_of(rel)} already exists but the catalog cannot read it"
                f"{self._writer._index_error(rel)}; fix or remove it first (it was not overwritten)"
            )
        return found

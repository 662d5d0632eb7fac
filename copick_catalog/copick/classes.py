"""copick's own filesystem classes, with listings answered by the catalog and writes that go through to it.

Every class here subclasses its copick counterpart (``CopickRootFSSpec``, ``CopickRunFSSpec``, …), so
``isinstance`` checks in copick, copick-utils, copick-torch and the napari/ChimeraX plugins hold, and
everything that reads or writes a payload (``picks.points``, ``.numpy()``, ``mesh.mesh``, ``.zarr()``,
``from_numpy``) is copick's own code. What changes:

* **listing** (``root.runs``, ``run.picks``, ``run.voxel_spacings``, ``vs.tomograms``, ``tomogram.features``,
  ``run.segmentations``, ``run.meshes``, ``run.filaments``, ``root.pickable_objects``) comes from the catalog
  (:class:`~copick_catalog.copick.listing.Listing`: one query per kind for the whole project), and no
  directory is listed or globbed. Static entities are read-only exactly as in copick.
* **writes** (``_store``, ``ensure(create=True)``, ``new_tomogram`` / ``new_features`` /
  ``new_segmentation``, ``from_numpy``, ``_delete_data``) go through
  :class:`~copick_catalog.copick.writes.Writer`: staged and renamed into place where the filesystem
  allows, recorded in the catalog in the same call, undone if the catalog cannot record them.

These classes work with copick 1.31 (zarr 2) and copick 2.x (zarr 3): they override only the hooks both
generations share (``spec/stack-notes.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from copick.impl.filesystem import (
    CopickFeaturesFSSpec,
    CopickFilamentsFSSpec,
    CopickMeshFSSpec,
    CopickObjectFSSpec,
    CopickPicksFSSpec,
    CopickRunFSSpec,
    CopickSegmentationFSSpec,
    CopickTomogramFSSpec,
    CopickVoxelSpacingFSSpec,
)
from copick.models import (
    CopickFeaturesMeta,
    CopickFilamentsFile,
    CopickMeshMeta,
    CopickPicksFile,
    CopickSegmentationMeta,
    CopickTomogramMeta,
    CopickVoxelSpacingMeta,
    PickableObject,
)

from .seed import SeedRunMixin

if TYPE_CHECKING:
    from .listing import Listing
    from .root import CatalogRoot
    from .writes import Writer


def _root_of(obj: Any) -> CatalogRoot:
    """The catalog root an entity belongs to (runs hold it; everything else reaches it through its run)."""
    while not hasattr(obj, "_listing"):
        obj = (
            obj.root
            if hasattr(obj, "root")
            else obj.run
            if hasattr(obj, "run")
            else (obj.voxel_spacing if hasattr(obj, "voxel_spacing") else obj.tomogram)
        )
    return obj  # type: ignore[no-any-return]


def _listing(obj: Any) -> Listing:
    return _root_of(obj)._listing


def _writer(obj: Any) -> Writer:
    return _root_of(obj)._writer


class _Staged:
    """An entity copick can be made to write under a hidden name first (see :meth:`Writer.write`)."""

    _staging: str | None = None

    @contextmanager
    def _staged(self, final: str, group: bool) -> Iterator[None]:
        writer = _writer(self)
        with writer.write(writer.rel(final), group=group) as staging:
            self._staging = staging
            try:
                yield
            finally:
                self._staging = None


# --------------------------------------------------------------------------------------------
# files: picks, meshes, filaments


class CatalogPicks(_Staged, CopickPicksFSSpec):
    """A pick file. Listed from the catalog; ``store()`` writes it and records it in one call."""

    @property
    def path(self) -> str:
        return self._staging or super().path

    def _store(self) -> None:
        with self._staged(super().path, group=False):
            super()._store()

    def _delete_data(self) -> None:
        _delete(self, super().path, group=False)


class CatalogMesh(_Staged, CopickMeshFSSpec):
    """A GLB mesh, written and recorded like picks."""

    @property
    def path(self) -> str:
        return self._staging or super().path

    def _store(self) -> None:
        with self._staged(super().path, group=False):
            super()._store()

    def _delete_data(self) -> None:
        _delete(self, super().path, group=False)


class CatalogFilaments(_Staged, CopickFilamentsFSSpec):
    """A filament file, written and recorded like picks."""

    @property
    def path(self) -> str:
        return self._staging or super().path

    def _store(self) -> None:
        with self._staged(super().path, group=False):
            super()._store()

    def _delete_data(self) -> None:
        _delete(self, super().path, group=False)


def _delete(entity: Any, full: str, *, group: bool) -> None:
    """``_delete_data`` of any entity: move the path aside, record the removal, drop the copy (or undo)."""
    fs = entity.fs if hasattr(entity, "fs") else entity.fs_overlay  # the overlay: copick deletes nothing else
    if not fs.exists(full):
        raise FileNotFoundError(f"File not found: {full}")
    writer = _writer(entity)
    with writer.change(writer.rel(full), group=group, present=False) as change:
        change.move_aside()


def _from_numpy(entity: Any, final: str, write: Any, *args: Any, **kwargs: Any) -> Any:
    """Run copick's ``from_numpy`` into a staged group, then swap it in and record it."""
    with entity._staged(final, group=True):
        return write(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# zarr groups: segmentations, features, tomograms, objects


class CatalogSegmentation(_Staged, CopickSegmentationFSSpec):
    """A segmentation group; ``from_numpy`` writes a staged group and records it."""

    @property
    def path(self) -> str:
        return self._staging or super().path

    def from_numpy(self, *args: Any, **kwargs: Any) -> Any:
        return _from_numpy(self, super().path, super().from_numpy, *args, **kwargs)

    def _delete_data(self) -> None:
        _delete(self, super().path, group=True)


class CatalogFeatures(_Staged, CopickFeaturesFSSpec):
    """A feature map group."""

    @property
    def path(self) -> str:
        return self._staging or super().path

    def from_numpy(self, *args: Any, **kwargs: Any) -> Any:  # copick 2.x only; 1.31 has none
        return _from_numpy(self, super().path, super().from_numpy, *args, **kwargs)  # type: ignore[misc]

    def _delete_data(self) -> None:
        _delete(self, super().path, group=True)


class CatalogTomogram(_Staged, CopickTomogramFSSpec):
    """A tomogram; its features are listed from the catalog."""

    def _feature_factory(self) -> tuple[type, type]:
        return CatalogFeatures, CopickFeaturesMeta

    @property
    def overlay_path(self) -> str:
        return self._staging or super().overlay_path

    def _features_of(self, layer: str) -> list[CatalogFeatures]:
        vs = self.voxel_spacing
        names = _listing(self).features(vs.run.name, vs.voxel_size, self.tomo_type, layer)
        return [
            CatalogFeatures(
                tomogram=self,
                meta=CopickFeaturesMeta(tomo_type=self.tomo_type, feature_type=ft),
                read_only=layer == "static",
            )
            for ft in names
            if not ft.startswith(".")
        ]

    def _query_static_features(self) -> list[CatalogFeatures]:  # type: ignore[override]
        return self._features_of("static")

    def _query_overlay_features(self) -> list[CatalogFeatures]:  # type: ignore[override]
        return self._features_of("overlay")

    def new_features(self, feature_type: str, exist_ok: bool = False, **kwargs: Any) -> Any:
        ft = _clean(feature_type)
        return _new_group(
            self,
            super().new_features,
            self.get_features(ft) is not None,
            lambda: (
                CatalogFeatures(tomogram=self, meta=CopickFeaturesMeta(tomo_type=self.tomo_type, feature_type=ft)).path
            ),
            feature_type,
            exist_ok,
            **kwargs,
        )

    def refresh_features(self) -> None:
        _listing(self).touch(self.voxel_spacing.run.name)
        super().refresh_features()

    def from_numpy(self, *args: Any, **kwargs: Any) -> Any:
        return _from_numpy(self, super().overlay_path, super().from_numpy, *args, **kwargs)

    def _delete_data(self) -> None:
        _delete(self, super().overlay_path, group=True)


_CACHES = {"CatalogTomogram": "_features", "CatalogVoxelSpacing": "_tomograms", "CatalogRun": "_segmentations"}


def _new_group(entity: Any, create: Any, exists: bool, path_of: Any, *args: Any, **kwargs: Any) -> Any:
    """copick's ``new_tomogram`` / ``new_features`` / ``new_segmentation`` with the new group recorded.

    An existing entity goes straight to copick (which returns it with ``exist_ok`` or raises); a new one
    is created by copick (an empty group) inside a write-through.
    """
    if exists:
        return create(*args, **kwargs)
    writer = _writer(entity)
    # present=None: on an object store, copick 1.x's empty new group is no object at all (nothing to record)
    with (
        _cache_kept(entity, _CACHES[type(entity).__name__]),
        writer.change(writer.rel(path_of()), group=True, present=None),
    ):
        return create(*args, **kwargs)


def _clean(name: str) -> str:
    """A name as copick's ``new_*`` will sanitise it (copick warns about it then; this does not)."""
    from copick.util.escape import sanitize_name

    return str(sanitize_name(name, suppress_warnings=True))


class CatalogVoxelSpacing(CopickVoxelSpacingFSSpec):
    """A voxel spacing; its tomograms are listed from the catalog, ``ensure(create=True)`` is recorded."""

    def _tomogram_factory(self) -> tuple[type, type]:
        return CatalogTomogram, CopickTomogramMeta

    def _tomograms_of(self, layer: str) -> list[CatalogTomogram]:
        names = _listing(self).tomograms(self.run.name, self.voxel_size, layer)
        return [
            CatalogTomogram(voxel_spacing=self, meta=CopickTomogramMeta(tomo_type=tt), read_only=layer == "static")
            for tt in names
            if "features" not in tt and not tt.startswith(".")
        ]

    def _query_static_tomograms(self) -> list[CatalogTomogram]:  # type: ignore[override]
        return self._tomograms_of("static")

    def _query_overlay_tomograms(self) -> list[CatalogTomogram]:  # type: ignore[override]
        return self._tomograms_of("overlay")

    def new_tomogram(self, tomo_type: str, exist_ok: bool = False, **kwargs: Any) -> Any:
        tt = _clean(tomo_type)
        return _new_group(
            self,
            super().new_tomogram,
            bool(self.get_tomograms(tt)),
            lambda: CatalogTomogram(voxel_spacing=self, meta=CopickTomogramMeta(tomo_type=tt)).overlay_path,
            tomo_type,
            exist_ok,
            **kwargs,
        )

    def refresh_tomograms(self) -> None:
        _listing(self).touch(self.run.name)
        super().refresh_tomograms()

    def ensure(self, create: bool = False) -> bool:
        from ..index import grammar

        spacings = {grammar.normalize_voxel_size(vs) for vs, _st, _ov in _listing(self).voxel_spacings(self.run.name)}
        exists = grammar.normalize_voxel_size(self.voxel_size) in spacings
        if exists or not create:
            return exists
        return _ensure(self, super().ensure, self.overlay_path)

    def _delete_data(self) -> None:
        _delete(self, self.overlay_path, group=True)


def _ensure(entity: Any, create: Any, overlay_path: str) -> bool:
    """``ensure(create=True)`` of a run or voxel spacing that is not there: copick writes the directory and
    its ``.meta``; recorded, and on failure the directory goes again (or only ``.meta``, if it was there)."""
    writer = _writer(entity)
    rel = writer.rel(overlay_path)
    made = not writer.overlay.exists(rel)
    with writer.change(rel if made else f"{rel}/.meta", group=made):
        return bool(create(create=True))


@contextmanager
def _cache_kept(owner: Any, attr: str) -> Iterator[None]:
    """copick appends a new entity to its parent's cached list before writing it: on failure, take it out."""
    before = getattr(owner, attr, None)
    before = list(before) if before is not None else None
    try:
        yield
    except BaseException:
        setattr(owner, attr, before)
        raise


class CatalogObject(CopickObjectFSSpec):
    """A pickable object; whether it is read-only comes from the catalog's density maps."""

    def from_numpy(self, *args: Any, **kwargs: Any) -> Any:
        writer = _writer(self)
        with writer.change(writer.rel(self.overlay_path), group=True, present=True):
            return super().from_numpy(*args, **kwargs)


class CatalogRun(SeedRunMixin, CopickRunFSSpec):
    """A run; everything in it is listed from the catalog."""

    root: CatalogRoot

    def _voxel_spacing_factory(self) -> tuple[type, type]:
        return CatalogVoxelSpacing, CopickVoxelSpacingMeta

    def _picks_factory(self) -> type:
        return CatalogPicks

    def _mesh_factory(self) -> tuple[type, type]:
        return CatalogMesh, CopickMeshMeta

    def _segmentation_factory(self) -> tuple[type, type]:
        return CatalogSegmentation, CopickSegmentationMeta

    def _filaments_factory(self) -> type:
        return CatalogFilaments

    # -- listings

    def _spacings(self, layer: str) -> list[CatalogVoxelSpacing]:
        rows = self.root._listing.voxel_spacings(self.name)
        return [
            CatalogVoxelSpacing(meta=CopickVoxelSpacingMeta(voxel_size=vs), run=self)
            for vs, in_static, in_overlay in rows
            if (in_static if layer == "static" else in_overlay)
        ]

    def _query_static_voxel_spacings(self) -> list[CatalogVoxelSpacing]:  # type: ignore[override]
        return self._spacings("static")

    def _query_overlay_voxel_spacings(self) -> list[CatalogVoxelSpacing]:  # type: ignore[override]
        return self._spacings("overlay")

    def _picks_of(self, layer: str) -> list[CatalogPicks]:
        return [
            CatalogPicks(
                run=self,
                file=CopickPicksFile(pickable_object_name=o, user_id=u, session_id=s),
                read_only=layer == "static",
            )
            for o, u, s in self.root._listing.annotations("picks", self.name, layer)
        ]

    def _query_static_picks(self) -> list[CatalogPicks]:  # type: ignore[override]
        return self._picks_of("static")

    def _query_overlay_picks(self) -> list[CatalogPicks]:  # type: ignore[override]
        return self._picks_of("overlay")

    def _meshes_of(self, layer: str) -> list[CatalogMesh]:
        return [
            CatalogMesh(
                run=self,
                meta=CopickMeshMeta(pickable_object_name=o, user_id=u, session_id=s),
                read_only=layer == "static",
            )
            for o, u, s in self.root._listing.annotations("meshes", self.name, layer)
        ]

    def _query_static_meshes(self) -> list[CatalogMesh]:  # type: ignore[override]
        return self._meshes_of("static")

    def _query_overlay_meshes(self) -> list[CatalogMesh]:  # type: ignore[override]
        return self._meshes_of("overlay")

    def _filaments_of(self, layer: str) -> list[CatalogFilaments]:
        return [
            CatalogFilaments(
                run=self,
                file=CopickFilamentsFile(pickable_object_name=o, user_id=u, session_id=s),
                read_only=layer == "static",
            )
            for o, u, s in self.root._listing.annotations("filaments", self.name, layer)
        ]

    def _query_static_filaments(self) -> list[CatalogFilaments]:  # type: ignore[override]
        return self._filaments_of("static")

    def _query_overlay_filaments(self) -> list[CatalogFilaments]:  # type: ignore[override]
        return self._filaments_of("overlay")

    def _segmentations_of(self, layer: str) -> list[CatalogSegmentation]:
        return [
            CatalogSegmentation(
                run=self,
                meta=CopickSegmentationMeta(
                    voxel_size=vs,
                    user_id=u,
                    session_id=s,
                    name=n,
                    is_multilabel=ml,
                    is_instance=kind == "instance",
                    is_panoptic=kind == "panoptic",
                ),
                read_only=layer == "static",
            )
            for _layer, vs, u, s, n, ml, kind in self.root._listing.segmentations(self.name, layer)
        ]

    def _query_static_segmentations(self) -> list[CatalogSegmentation]:  # type: ignore[override]
        return self._segmentations_of("static")

    def _query_overlay_segmentations(self) -> list[CatalogSegmentation]:  # type: ignore[override]
        return self._segmentations_of("overlay")

    # -- refreshes re-read the catalog, not the tree

    def _touch(self) -> None:
        self.root._listing.touch(self.name)

    def refresh_voxel_spacings(self) -> None:
        self._touch()
        super().refresh_voxel_spacings()

    def refresh_picks(self) -> None:
        self._touch()
        super().refresh_picks()

    def refresh_meshes(self) -> None:
        self._touch()
        super().refresh_meshes()

    def refresh_filaments(self) -> None:
        self._touch()
        super().refresh_filaments()

    def refresh_segmentations(self) -> None:
        self._touch()
        super().refresh_segmentations()

    # -- writes

    _FILES = {
        "picks": ("Picks", ".json", "_picks"),
        "meshes": ("Meshes", ".glb", "_meshes"),
        "filaments": ("Filaments", ".json", "_filaments"),
    }

    def _before_new(self, kind: str, object_name: Any, session_id: Any, user_id: Any) -> None:
        """A file another program wrote since the catalog was last indexed is indexed before copick's
        existence check, so ``new_*`` returns it (``exist_ok``) or refuses, instead of overwriting it."""
        user = user_id if user_id is not None else self.root.config.user_id
        if user is None or session_id is None:
            return  # copick raises its own error
        folder, ext, cache = self._FILES[kind]
        names = _clean(str(user)), _clean(str(session_id)), _clean(str(object_name))
        if (names[2], names[0], names[1]) in self.root._listing.annotations(kind, self.name, "overlay"):
            return
        writer = self.root._writer
        rel = writer.rel(f"{self.overlay_path}/{folder}/{'_'.join(names)}{ext}")
        if writer.overlay.exists(rel):
            self.root.catalog.index(scopes=[("overlay", rel)], record=False)
            self.root._listing.touch(self.name)
            setattr(self, cache, None)

    def new_picks(
        self, object_name: str, session_id: str, user_id: str | None = None, exist_ok: bool = False, **kwargs: Any
    ) -> Any:
        self._before_new("picks", object_name, session_id, user_id)
        with _cache_kept(self, "_picks"):
            return super().new_picks(object_name, session_id, user_id=user_id, exist_ok=exist_ok, **kwargs)

    def new_mesh(self, *args: Any, **kwargs: Any) -> Any:
        with _cache_kept(self, "_meshes"):
            return super().new_mesh(*args, **kwargs)

    def new_voxel_spacing(self, voxel_size: float, exist_ok: bool = False, **kwargs: Any) -> Any:
        with _cache_kept(self, "_voxel_spacings"):
            return super().new_voxel_spacing(voxel_size, exist_ok=exist_ok, **kwargs)

    def new_filaments(
        self, object_name: str, session_id: str, user_id: str | None = None, exist_ok: bool = False, **kwargs: Any
    ) -> Any:
        self._before_new("filaments", object_name, session_id, user_id)
        with _cache_kept(self, "_filaments"):
            return super().new_filaments(object_name, session_id, user_id=user_id, exist_ok=exist_ok, **kwargs)

    def new_segmentation(self, *args: Any, **kwargs: Any) -> Any:
        got = self._segmentation_args(args, kwargs)
        user = got["user_id"] if got["user_id"] is not None else self.root.config.user_id
        if user is None:  # copick's own check, raised before anything is written
            return CopickRunFSSpec.new_segmentation(self, **got)
        meta = CopickSegmentationMeta(
            voxel_size=got["voxel_size"],
            user_id=_clean(str(user)),
            session_id=_clean(str(got["session_id"])),
            name=_clean(str(got["name"])),
            is_multilabel=got["is_multilabel"],
            is_instance=got["is_instance"],
            is_panoptic=got["is_panoptic"],
        )
        found = self.get_segmentations(
            user_id=meta.user_id,
            session_id=meta.session_id,
            name=meta.name,
            voxel_size=float(meta.voxel_size),
            is_multilabel=meta.is_multilabel,
            is_instance=meta.is_instance,
            is_panoptic=meta.is_panoptic,
        )
        return _new_group(
            self,
            lambda **kw: CopickRunFSSpec.new_segmentation(self, **kw),
            bool(found),
            lambda: CatalogSegmentation(run=self, meta=meta).path,
            **got,
        )

    def ensure(self, create: bool = False) -> bool:
        exists = self.root._listing.has_run(self.name)
        if exists or not create:
            return exists
        return _ensure(self, super().ensure, self.overlay_path)

    def _delete_data(self) -> None:
        _delete(self, self.overlay_path, group=True)


def object_read_only(listing: Listing, name: str, static_is_overlay: bool) -> bool:
    """copick's rule: read-only when the static root has the object's map and the overlay does not."""
    if static_is_overlay:
        return False
    layers = listing.density_map_layers(name)
    return "static" in layers and "overlay" not in layers


__all__ = [
    "CatalogFeatures",
    "CatalogFilaments",
    "CatalogMesh",
    "CatalogObject",
    "CatalogPicks",
    "CatalogRun",
    "CatalogSegmentation",
    "CatalogTomogram",
    "CatalogVoxelSpacing",
    "PickableObject",
    "object_read_only",
]

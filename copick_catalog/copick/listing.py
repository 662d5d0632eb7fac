"""What the copick backend lists, loaded from the catalog one kind at a time for the whole project.

copick asks per run (``run.picks``, ``run.voxel_spacings``, ``vs.tomograms``, …); answering each with its
own query would cost a round trip per run and kind. Instead, the first question about a kind loads that
kind for every run in one SQL statement and files the rows under their run (as copick's data-portal
backend does with its project cache); every later question is a dictionary lookup. A write through the
object API marks its run dirty, and the next question about that run re-reads just that run.

Nothing here imports copick: the rows are plain tuples, turned into copick objects by the classes in
:mod:`copick_catalog.copick.classes`.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from ..catalog.schema import DensityMap, Feature, Filament, Mesh, Pick, Run, Segmentation, Tomogram, VoxelSpacing
from ..index import grammar

#: (layer, object_name, user_id, session_id)
AnnotationRow = tuple[str, str, str, str]
#: (layer, voxel_size, user_id, session_id, name, is_multilabel, kind)
SegmentationRow = tuple[str, float, str, str, str, bool, str]
#: (voxel_size, in_static, in_overlay)
SpacingRow = tuple[float, bool, bool]


def _by_run(rows: Iterable[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for run, *rest in rows:
        out[run].append(tuple(rest))
    return out


class Listing:
    """Project-wide listings by kind, loaded on first use. ``engine`` is asked for lazily (roots pickle)."""

    KINDS = (
        "runs",
        "voxel_spacings",
        "tomograms",
        "features",
        "picks",
        "meshes",
        "filaments",
        "segmentations",
        "density_maps",
    )

    def __init__(self, engine: Callable[[], sa.Engine], project_id: Callable[[], int]) -> None:
        self._engine = engine
        self._project_id = project_id
        self._data: dict[str, Any] = {}
        self._dirty: set[str] = set()  # runs whose rows must be re-read
        self._lock = threading.Lock()  # copick's map_runs lists runs from threads

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self._data, "dirty": self._dirty}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._data, self._dirty = state["data"], state["dirty"]
        self._lock = threading.Lock()
        self._engine = self._project_id = _unbound  # set again by the root that owns it

    def bind(self, engine: Callable[[], sa.Engine], project_id: Callable[[], int]) -> None:
        self._engine, self._project_id = engine, project_id

    # ------------------------------------------------------------------ invalidation

    def forget(self) -> None:
        """Drop everything (``root.refresh()``): the next question reloads from the catalog."""
        with self._lock:
            self._data.clear()
            self._dirty.clear()

    def touch(self, run: str | None) -> None:
        """The catalog changed for ``run`` (a write-through): re-read that run when it is next asked about."""
        with self._lock:
            if run is None:
                self._data.pop("density_maps", None)
            else:
                self._dirty.add(run)
                self._data.pop("runs", None)  # a new run, or one that is gone

    # ------------------------------------------------------------------ questions

    def run_names(self) -> list[str]:
        return list(self._load("runs"))

    def has_run(self, name: str) -> bool:
        if "runs" in self._data and name not in self._dirty:
            return name in self._data["runs"]
        with self._engine().connect() as conn:
            return (
                conn.execute(sa.select(Run.id).where(Run.project_id == self._project_id(), Run.name == name)).first()
                is not None
            )

    def voxel_spacings(self, run: str) -> list[SpacingRow]:
        return self._run_rows("voxel_spacings", run)

    def tomograms(self, run: str, voxel_size: float, layer: str) -> list[str]:
        key = (run, grammar.normalize_voxel_size(voxel_size))
        return [tt for vs, tt, lay in self._run_rows("tomograms", run) if (run, vs) == key and lay == layer]

    def features(self, run: str, voxel_size: float, tomo_type: str, layer: str) -> list[str]:
        vs = grammar.normalize_voxel_size(voxel_size)
        return [ft for v, tt, ft, lay in self._run_rows("features", run) if (v, tt, lay) == (vs, tomo_type, layer)]

    def annotations(self, kind: str, run: str, layer: str) -> list[tuple[str, str, str]]:
        """``(object_name, user_id, session_id)`` of the picks, meshes or filaments of one run and layer."""
        return [(o, u, s) for lay, o, u, s in self._run_rows(kind, run) if lay == layer]

    def segmentations(self, run: str, layer: str) -> list[SegmentationRow]:
        return [row for row in self._run_rows("segmentations", run) if row[0] == layer]

    def density_map_layers(self, object_name: str) -> set[str]:
        return set(self._load("density_maps").get(object_name, ()))

    # ------------------------------------------------------------------ loading

    def _run_rows(self, kind: str, run: str) -> list[Any]:
        if run in self._dirty:
            self._reload_run(run)
        return list(self._load(kind).get(run, ()))

    def _load(self, kind: str) -> Any:
        data = self._data.get(kind)
        if data is None:
            with self._lock:
                data = self._data.get(kind)
                if data is None:
                    data = self._data[kind] = self._query(kind, None)
        return data

    def _reload_run(self, run: str) -> None:
        """Re-read one run's rows of every kind already loaded (after a write-through in that run)."""
        with self._lock:
            self._dirty.discard(run)
            for kind in [k for k in self._data if k not in ("runs", "density_maps")]:
                fresh = self._query(kind, run)
                self._data[kind][run] = fresh.get(run, [])

    def _query(self, kind: str, run: str | None) -> Any:
        pid = self._project_id()
        stmt = _STATEMENTS[kind](pid)
        if run is not None:
            stmt = stmt.where(Run.name == run) if kind != "runs" else stmt
        with self._engine().connect() as conn:
            rows = conn.execute(stmt).all()
        if kind == "runs":
            return {name: None for (name,) in rows}  # ordered like copick's sorted(set(names))
        if kind == "density_maps":
            out: dict[str, list[str]] = defaultdict(list)
            for name, layer in rows:
                out[name].append(layer)
            return out
        return _by_run(rows)


def _unbound() -> Any:
    raise RuntimeError("listing used before its root re-bound it to a catalog")


def _runs(pid: int) -> Any:
    return sa.select(Run.name).where(Run.project_id == pid).order_by(Run.name)


def _voxel_spacings(pid: int) -> Any:
    return (
        sa.select(Run.name, VoxelSpacing.voxel_size, VoxelSpacing.in_static, VoxelSpacing.in_overlay)
        .join(Run, VoxelSpacing.run_id == Run.id)
        .where(VoxelSpacing.project_id == pid)
        .order_by(Run.name, VoxelSpacing.voxel_size)
    )


def _tomograms(pid: int) -> Any:
    return (
        sa.select(Run.name, VoxelSpacing.voxel_size, Tomogram.tomo_type, Tomogram.layer)
        .join(VoxelSpacing, Tomogram.voxel_spacing_id == VoxelSpacing.id)
        .join(Run, Tomogram.run_id == Run.id)
        .where(Tomogram.project_id == pid)
        .order_by(Run.name, Tomogram.tomo_type)
    )


def _features(pid: int) -> Any:
    return (
        sa.select(Run.name, VoxelSpacing.voxel_size, Feature.tomo_type, Feature.feature_type, Feature.layer)
        .join(VoxelSpacing, Feature.voxel_spacing_id == VoxelSpacing.id)
        .join(Run, Feature.run_id == Run.id)
        .where(Feature.project_id == pid)
        .order_by(Run.name, Feature.feature_type)
    )


def _annotation(model: Any) -> Callable[[int], Any]:
    def stmt(pid: int) -> Any:
        return (
            sa.select(Run.name, model.layer, model.object_name, model.user_id, model.session_id)
            .join(Run, model.run_id == Run.id)
            .where(model.project_id == pid)
            .order_by(Run.name, model.path)
        )

    return stmt


def _segmentations(pid: int) -> Any:
    s = Segmentation
    return (
        sa.select(Run.name, s.layer, s.voxel_size, s.user_id, s.session_id, s.name, s.is_multilabel, s.kind)
        .join(Run, s.run_id == Run.id)
        .where(s.project_id == pid)
        .order_by(Run.name, s.path)
    )


def _density_maps(pid: int) -> Any:
    return sa.select(DensityMap.object_name, DensityMap.layer).where(
        DensityMap.project_id == pid, DensityMap.fmt == "zarr"
    )


_STATEMENTS: dict[str, Callable[[int], Any]] = {
    "runs": _runs,
    "voxel_spacings": _voxel_spacings,
    "tomograms": _tomograms,
    "features": _features,
    "picks": _annotation(Pick),
    "meshes": _annotation(Mesh),
    "filaments": _annotation(Filament),
    "segmentations": _segmentations,
    "density_maps": _density_maps,
}

__all__ = ["Listing"]

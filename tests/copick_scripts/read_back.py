"""Print, as JSON, the payloads the REAL copick package reads from a project (runs inside the copick venv).

Usage: python read_back.py CONFIG [RUN ...]

Where ``dump_listing.py`` reports what copick *lists*, this reports what it *reads*: every point (location,
transform, instance id, score), mesh vertex/face counts, and the shape, dtype, levels and sum of every
segmentation, tomogram, feature map and density map. The object-API round-trip tests compare it with what
copick-catalog wrote. Only the given runs are read (all runs when none are given).

Shape::

    {"runs": {RUN: {
        "picks": [{"user_id", "session_id", "object_name", "read_only", "points": [[x, y, z]], "transforms",
                   "instance_ids", "scores", "trust_orientation"}],
        "meshes": [{"user_id", "session_id", "object_name", "read_only", "n_vertices", "n_faces"}],
        "segmentations": [{"voxel_size", "user_id", "session_id", "name", "is_multilabel", "is_instance",
                           "is_panoptic", "read_only", "shape", "dtype", "levels", "sum"}],
        "voxel_spacings": {"10.000": [{"tomo_type", "read_only", "shape", "dtype", "levels", "sum",
                                       "features": [{"feature_type", "read_only", "shape", "dtype", "sum"}]}]}}},
     "objects": {NAME: {"shape", "dtype", "sum"}}}     # particles that have a density map
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import copick
import numpy as np
import zarr


def _group_info(store: Any) -> dict[str, Any]:
    """Shape/dtype/sum of level "0" and the list of levels, or Nones for an empty group."""
    try:
        group = zarr.open_group(store, mode="r")
    except (ValueError, FileNotFoundError, zarr.errors.GroupNotFoundError):
        return {"shape": None, "dtype": None, "levels": [], "sum": None}
    levels = sorted(group.array_keys(), key=lambda k: (len(k), k))
    if "0" not in levels:
        return {"shape": None, "dtype": None, "levels": levels, "sum": None}
    arr = np.asarray(group["0"][...])
    return {
        "shape": [int(s) for s in arr.shape],
        "dtype": str(arr.dtype),
        "levels": levels,
        "sum": float(arr.astype(np.float64).sum()),
    }


def _picks(p: Any) -> dict[str, Any]:
    pos, tr = p.numpy()
    return {
        "user_id": p.user_id,
        "session_id": p.session_id,
        "object_name": p.pickable_object_name,
        "read_only": bool(p.read_only),
        "points": pos.tolist(),
        "transforms": tr.tolist(),
        "instance_ids": [int(pt.instance_id) for pt in p.points],
        "scores": [float(pt.score) for pt in p.points],
        "trust_orientation": bool(p.trust_orientation),
    }


def _mesh(m: Any) -> dict[str, Any]:
    scene = m.mesh
    geometries = scene.geometry.values() if hasattr(scene, "geometry") else [scene]
    return {
        "user_id": m.user_id,
        "session_id": m.session_id,
        "object_name": m.pickable_object_name,
        "read_only": bool(m.read_only),
        "n_vertices": int(sum(len(g.vertices) for g in geometries)),
        "n_faces": int(sum(len(g.faces) for g in geometries)),
    }


def _segmentation(s: Any) -> dict[str, Any]:
    return {
        "voxel_size": float(s.voxel_size),
        "user_id": s.user_id,
        "session_id": s.session_id,
        "name": s.name,
        "is_multilabel": bool(s.is_multilabel),
        "is_instance": bool(getattr(s, "is_instance", False)),
        "is_panoptic": bool(getattr(s, "is_panoptic", False)),
        "read_only": bool(s.read_only),
        **_group_info(s.zarr()),
    }


def _run(run: Any) -> dict[str, Any]:
    key = lambda d: tuple(str(d.get(k)) for k in ("user_id", "session_id", "object_name", "name", "read_only"))  # noqa: E731
    vss: dict[str, Any] = {}
    for vs in sorted(run.voxel_spacings, key=lambda v: v.voxel_size):
        tomos = []
        for t in vs.tomograms:
            feats = [
                {"feature_type": f.feature_type, "read_only": bool(f.read_only), **_group_info(f.zarr())}
                for f in t.features
            ]
            feats.sort(key=lambda f: (f["feature_type"], f["read_only"]))
            tomos.append(
                {"tomo_type": t.tomo_type, "read_only": bool(t.read_only), **_group_info(t.zarr()), "features": feats}
            )
        tomos.sort(key=lambda t: (t["tomo_type"], not t["read_only"]))
        vss[f"{vs.voxel_size:.3f}"] = tomos
    segs = run.get_segmentations(is_instance=None, is_panoptic=None)
    return {
        "picks": sorted((_picks(p) for p in run.picks), key=key),
        "meshes": sorted((_mesh(m) for m in run.meshes), key=key),
        "segmentations": sorted((_segmentation(s) for s in segs), key=lambda d: (d["voxel_size"], *key(d))),
        "voxel_spacings": vss,
    }


def _density_map(obj: Any) -> dict[str, Any] | None:
    """Read a density map without creating one (``zarr()`` on a writable object creates the directory)."""
    if not obj.is_particle:
        return None
    for fs, path in ((obj.fs_overlay, obj.overlay_path), (obj.fs_static, obj.static_path)):
        if fs.exists(f"{path}/.zgroup") or fs.exists(f"{path}/zarr.json"):
            arr = np.asarray(obj.numpy())
            return {
                "shape": [int(s) for s in arr.shape],
                "dtype": str(arr.dtype),
                "sum": float(arr.astype(np.float64).sum()),
            }
    return None


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: read_back.py CONFIG [RUN ...]", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    root = copick.from_file(argv[0])
    names = argv[1:] or sorted(r.name for r in root.runs)
    runs = {}
    for name in names:
        run = root.get_run(name)
        if run is None:
            raise SystemExit(f"copick does not see run {name!r}")
        runs[name] = _run(run)
    objects = {o.name: info for o in root.pickable_objects if (info := _density_map(o)) is not None}
    json.dump({"runs": runs, "objects": objects}, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Print, as one JSON document, what the REAL copick package lists for a project (runs in the copick venv).

Usage: python dump_listing.py CONFIG

The catalog's tests compare their own index against this: it is copick's view of the project, obtained only
through copick's public API (``copick.from_file`` and the entity properties), never by walking directories.
Every list is sorted so the output is deterministic and can be compared with ``==``.

Shape (voxel-spacing keys are ``f"{voxel_size:.3f}"``; segmentation ``voxel_size`` is a float)::

    {"copick_version": "1.31.0",
     "runs": {RUN: {
        "voxel_spacings": {"10.000": {"voxel_size": 10.0, "tomograms": [
            {"tomo_type", "read_only", "features": [feature_type, ...],
             "features_detail": [{"feature_type", "read_only"}, ...]}]}},
        "picks": [{"user_id", "session_id", "object_name", "n_points", "read_only"}],
        "meshes": [{"user_id", "session_id", "object_name", "read_only", "n_vertices", "n_faces"}],
        "segmentations": [{"voxel_size", "user_id", "session_id", "name", "is_multilabel", "read_only",
                           "shape", "dtype"}],                      # binary + multilabel only
        "instance_segmentations": [... same keys ...],
        "panoptic_segmentations": [... same keys ...],
        "filaments": [{"user_id", "session_id", "object_name", "n_filaments", "read_only"}]}},
     "objects": [{"name", "is_particle", "label", "read_only", "has_density_map"}]}

Duplicates (the same file in static and overlay) appear twice, as copick lists them; ``read_only`` tells them
apart. Sort keys put the static (read-only) copy first, matching copick's own order.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import copick
import zarr


def _array_info(entity: Any) -> tuple[list[int] | None, str | None]:
    """Shape and dtype of level "0" of a zarr-backed entity, or (None, None) when it holds no data yet.

    ``entity.zarr()`` is copick's store for the entity (mode "r" for read-only ones); it already exists for
    every listed segmentation, so opening it does not create anything."""
    try:
        group = zarr.open_group(entity.zarr(), mode="r")
        arr = group["0"]
    except (KeyError, ValueError, FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None, None
    return [int(s) for s in arr.shape], str(arr.dtype)


def _segmentation(seg: Any) -> dict[str, Any]:
    shape, dtype = _array_info(seg)
    return {
        "voxel_size": float(seg.voxel_size),
        "user_id": seg.user_id,
        "session_id": seg.session_id,
        "name": seg.name,
        "is_multilabel": bool(seg.is_multilabel),
        "read_only": bool(seg.read_only),
        "shape": shape,
        "dtype": dtype,
    }


def _seg_key(s: dict[str, Any]) -> tuple:
    return (s["voxel_size"], s["user_id"], s["session_id"], s["name"], s["is_multilabel"], not s["read_only"])


def _mesh_counts(mesh: Any) -> tuple[int, int]:
    """Vertex and face totals over the geometries of the loaded scene (copick loads GLB as trimesh.Scene)."""
    scene = mesh.mesh
    geometries = scene.geometry.values() if hasattr(scene, "geometry") else [scene]
    n_vertices = sum(len(getattr(g, "vertices", ())) for g in geometries)
    n_faces = sum(len(getattr(g, "faces", ())) for g in geometries)
    return int(n_vertices), int(n_faces)


def _has_density_map(obj: Any) -> bool:
    """Whether an object has an OME-Zarr density map in either root.

    copick 1.31 has no ``has_density_map()`` and ``obj.zarr()`` on a writable object *creates* the overlay
    directory, so this uses the object's own store locations (``fs_static``/``static_path`` and
    ``fs_overlay``/``overlay_path``) and looks for a zarr group marker there instead."""
    if not obj.is_particle:
        return False
    for fs, path in ((obj.fs_overlay, obj.overlay_path), (obj.fs_static, obj.static_path)):
        if fs.exists(f"{path}/.zgroup") or fs.exists(f"{path}/zarr.json"):
            return True
    return False


def dump_run(run: Any) -> dict[str, Any]:
    vs_out: dict[str, Any] = {}
    for vs in sorted(run.voxel_spacings, key=lambda v: v.voxel_size):
        tomos = []
        for tomo in vs.tomograms:
            detail = sorted(
                ({"feature_type": f.feature_type, "read_only": bool(f.read_only)} for f in tomo.features),
                key=lambda d: (d["feature_type"], not d["read_only"]),
            )
            tomos.append(
                {
                    "tomo_type": tomo.tomo_type,
                    "read_only": bool(tomo.read_only),
                    "features": sorted(d["feature_type"] for d in detail),
                    "features_detail": detail,
                },
            )
        tomos.sort(key=lambda t: (t["tomo_type"], not t["read_only"]))
        vs_out[f"{vs.voxel_size:.3f}"] = {"voxel_size": float(vs.voxel_size), "tomograms": tomos}

    picks = [
        {
            "user_id": p.user_id,
            "session_id": p.session_id,
            "object_name": p.pickable_object_name,
            "n_points": len(p.points),
            "read_only": bool(p.read_only),
        }
        for p in run.picks
    ]
    picks.sort(key=lambda p: (p["user_id"], p["session_id"], p["object_name"], not p["read_only"]))

    meshes = []
    for m in run.meshes:
        n_vertices, n_faces = _mesh_counts(m)
        meshes.append(
            {
                "user_id": m.user_id,
                "session_id": m.session_id,
                "object_name": m.pickable_object_name,
                "read_only": bool(m.read_only),
                "n_vertices": n_vertices,
                "n_faces": n_faces,
            },
        )
    meshes.sort(key=lambda m: (m["user_id"], m["session_id"], m["object_name"], not m["read_only"]))

    # run.segmentations lists every type; get_segmentations() defaults to binary + multilabel only.
    segs = sorted((_segmentation(s) for s in run.get_segmentations()), key=_seg_key)
    out: dict[str, Any] = {"voxel_spacings": vs_out, "picks": picks, "meshes": meshes, "segmentations": segs}
    if hasattr(run, "get_segmentations"):
        try:
            out["instance_segmentations"] = sorted(
                (_segmentation(s) for s in run.get_segmentations(is_instance=True)),
                key=_seg_key,
            )
            out["panoptic_segmentations"] = sorted(
                (_segmentation(s) for s in run.get_segmentations(is_panoptic=True)),
                key=_seg_key,
            )
        except TypeError:  # copick < 1.31: no instance/panoptic types
            pass
    if hasattr(run, "filaments"):
        fils = [
            {
                "user_id": f.user_id,
                "session_id": f.session_id,
                "object_name": f.pickable_object_name,
                "n_filaments": len(f.filaments),
                "read_only": bool(f.read_only),
            }
            for f in run.filaments
        ]
        fils.sort(key=lambda f: (f["user_id"], f["session_id"], f["object_name"], not f["read_only"]))
        out["filaments"] = fils
    return out


def dump(config_path: str) -> dict[str, Any]:
    root = copick.from_file(config_path)
    runs = {run.name: dump_run(run) for run in sorted(root.runs, key=lambda r: r.name)}
    objects = sorted(
        (
            {
                "name": o.name,
                "is_particle": bool(o.is_particle),
                "label": o.label,
                "read_only": bool(o.read_only),
                "has_density_map": _has_density_map(o),
            }
            for o in root.pickable_objects
        ),
        key=lambda o: o["name"],
    )
    return {"copick_version": copick.__version__, "runs": runs, "objects": objects}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: dump_listing.py CONFIG", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    json.dump(dump(argv[0]), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Write into an existing project with the REAL copick package, and print what was written (copick venv).

Usage: python write_more.py CONFIG RUN DELETE_PICK_USER

The "copick writes, the catalog reads" half of the object-API round trip: after the catalog has indexed a
project, copick adds picks, a mesh, a segmentation, a tomogram with features and a density map, and deletes
the overlay picks of one user; the test then re-indexes incrementally and reads everything back through
copick-catalog's object API. Every array is deterministic and its sum is printed, so the test compares
numbers, not files. The last stdout line is one JSON document.
"""

from __future__ import annotations

import json
import sys
import warnings

import copick
import numpy as np
import trimesh
from copick.util.ome import write_ome_zarr_3d

USER, SESSION = "carol", "5"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: write_more.py CONFIG RUN DELETE_PICK_USER", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    config, run_name, delete_user = argv
    root = copick.from_file(config)
    run = root.get_run(run_name)
    out: dict = {}

    points = np.array([[10.0, 20.0, 30.0], [40.5, 50.25, 60.0], [1.0, 2.0, 3.0]])
    transforms = np.tile(np.eye(4), (3, 1, 1))
    transforms[1, :3, 3] = [1.5, -2.0, 0.25]
    picks = run.new_picks("ribosome", SESSION, user_id=USER)
    picks.from_numpy(points, transforms=transforms, instance_ids=np.array([3, 4, 5]), scores=np.array([0.5, 0.75, 1]))
    out["picks"] = {
        "points": points.tolist(),
        "transforms": transforms.tolist(),
        "instance_ids": [3, 4, 5],
        "scores": [0.5, 0.75, 1.0],
    }

    mesh = run.new_mesh("membrane", SESSION, user_id=USER)
    mesh.mesh = trimesh.Scene(trimesh.creation.box(extents=(100.0, 80.0, 10.0)))
    mesh.store()
    out["mesh"] = {"n_vertices": 8, "n_faces": 12}

    labels = np.zeros((16, 16, 16), dtype=np.uint8)
    labels[4:9, 3:12, 2:7] = 1
    seg = run.new_segmentation(10.0, "membrane", SESSION, is_multilabel=False, user_id=USER)
    seg.from_numpy(labels)
    out["segmentation"] = {"shape": list(labels.shape), "dtype": "uint8", "sum": float(labels.sum())}

    vs = run.get_voxel_spacing(10.0) or run.new_voxel_spacing(10.0)
    volume = np.arange(16 * 16 * 16, dtype=np.float32).reshape(16, 16, 16) / 100.0
    tomo = vs.new_tomogram("isonet")
    tomo.from_numpy(volume, levels=2)
    out["tomogram"] = {
        "shape": [16, 16, 16],
        "dtype": "float32",
        "sum": float(volume.astype(np.float64).sum()),
        "levels": 2,
    }
    feat = tomo.new_features("grad")
    write_ome_zarr_3d(feat.zarr(), {10.0: volume * 2})
    out["features"] = {"shape": [16, 16, 16], "sum": float((volume * 2).astype(np.float64).sum())}

    density = np.ones((8, 8, 8), dtype=np.float32) * 0.5
    root.get_object("ribosome").from_numpy(density, 10.0)
    out["density_map"] = {"shape": [8, 8, 8], "sum": float(density.sum())}

    deleted = [p for p in run.get_picks(user_id=delete_user) if not p.read_only]
    out["deleted_picks"] = sorted(p.pickable_object_name for p in deleted)
    run.delete_picks(user_id=delete_user)

    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Write a small but realistic copick project with the REAL copick package (runs inside the copick venv).

Usage: python write_project.py OUTDIR [--runs N]

This script is executed by ``tests/copick_env.run_copick`` with the python of a virtual environment that has
``copick==1.31.0`` (which pins zarr<3, so it cannot be imported by the test process itself). It uses only
copick's public API plus numpy/trimesh (both copick dependencies), so the tree it produces is exactly what
copick itself writes -- the ground truth the catalog must index.

Layout produced:
    OUTDIR/static/             static (read-only) root, written through a second config whose overlay root is
                               this directory (copick's ``new_*`` always write to the overlay root)
    OUTDIR/overlay/            overlay (writable) root
    OUTDIR/copick_config.json  the project config (static + overlay, ``local://`` absolute roots)

Contents (default 4 runs): ``TS_001``, ``TS_002`` and ``run.with-dots_3`` exist in static (plus overlay data);
``TS_004`` exists only in the overlay. Extra runs (``--runs N`` > 4) are static runs ``TS_005``...
Deterministic (seeded); the last stdout line is the config path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import copick
import numpy as np
import trimesh
from copick.util.ome import write_ome_zarr_3d

# Names chosen to exercise the parser: underscores in run names (legal), dots/dashes in everything else.
STATIC_RUN_NAMES = ["TS_001", "TS_002", "run.with-dots_3"]
OVERLAY_ONLY_RUN = "TS_004"
ODD_VOXEL_SPACING = 7.84  # -> VoxelSpacing7.840, on run.with-dots_3 only
TOMO_SHAPE = (32, 32, 32)
SEG_SHAPE_10 = (32, 32, 32)
SEG_SHAPE_20 = (16, 16, 16)

OBJECTS = [
    {
        "name": "ribosome",
        "is_particle": True,
        "label": 1,
        "color": [0, 117, 220, 255],
        "pdb_id": "7P6Z",
        "radius": 150.0,
        "map_threshold": 0.037,
    },
    {
        "name": "proteasome",
        "is_particle": True,
        "label": 2,
        "color": [255, 0, 0, 255],
        "pdb_id": "3J9I",
        "identifier": "GO:0000502",
        "radius": 60.0,
        "map_threshold": 0.0418,
    },
    {
        "name": "membrane",
        "is_particle": False,
        "label": 3,
        "color": [0, 0, 0, 255],
        "identifier": "GO:0016020",
    },
    {
        "name": "thyroglobulin-x.1",
        "is_particle": True,
        "label": 4,
        "color": [0, 200, 0, 255],
        "radius": 130.0,
    },
    {
        "name": "microtubule",
        "is_particle": True,
        "label": 5,
        "color": [200, 200, 0, 255],
        "radius": 125.0,
        # copick >= 1.31 declares filament objects through the reserved metadata namespace.
        "metadata": {"copick": {"filament": {"polar": True, "helical_rise_a": 9.5}}},
    },
]


def _config(overlay_root: str, static_root: str | None) -> dict:
    cfg: dict = {
        "config_type": "filesystem",
        "name": "copick-catalog fixture",
        "description": "Fixture project written by tests/copick_scripts/write_project.py",
        "version": copick.__version__,
        "pickable_objects": OBJECTS,
        "user_id": "test.user",
        "session_id": "1234",
        "overlay_root": f"local://{overlay_root}",
        "overlay_fs_args": {"auto_mkdir": True},
    }
    if static_root is not None:
        cfg["static_root"] = f"local://{static_root}"
        cfg["static_fs_args"] = {"auto_mkdir": False}
    return cfg


def _points(rng: np.random.Generator, n: int, extent: float = 320.0) -> np.ndarray:
    return rng.uniform(0.0, extent, size=(n, 3)).round(2)


def _rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random proper rotations (QR of a Gaussian matrix) with a small translation column."""
    out = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        if np.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        out[i, :3, :3] = q
        out[i, :3, 3] = rng.uniform(-2.0, 2.0, size=3).round(3)
    return out


def _write_picks(run, rng, object_name, user_id, session_id, n, *, orient=False, ids=False, scores=False):
    picks = run.new_picks(object_name, session_id, user_id=user_id)
    if n == 0:
        return picks  # new_picks already stored an empty pick file
    picks.from_numpy(
        _points(rng, n),
        transforms=_rotations(rng, n) if orient else None,
        instance_ids=np.arange(1, n + 1) if ids else None,
        scores=rng.uniform(0.1, 1.0, size=n).round(4) if scores else None,
    )
    return picks


def _write_mesh(run, object_name, user_id, session_id, geometry: trimesh.Trimesh) -> None:
    mesh = run.new_mesh(object_name, session_id, user_id=user_id)
    mesh.mesh = trimesh.Scene(geometry)
    mesh.store()


def _blob(shape, center, radius) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    c = np.asarray(center)
    return ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= radius**2


def _tomogram(rng: np.random.Generator, shape=TOMO_SHAPE) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


def write_static(root, rng: np.random.Generator, run_names: list[str]) -> None:
    """Static side: runs, voxel spacings, tomograms (+ sobel features), some picks, a mesh, a segmentation and
    the proteasome density map."""
    for i, name in enumerate(run_names):
        run = root.new_run(name)
        spacings = [10.0, 20.0] + ([ODD_VOXEL_SPACING] if name == "run.with-dots_3" else [])
        for vs_size in spacings:
            vs = run.new_voxel_spacing(vs_size)
            shape = TOMO_SHAPE if vs_size != 20.0 else SEG_SHAPE_20
            wbp = vs.new_tomogram("wbp")
            wbp.from_numpy(_tomogram(rng, shape), levels=3)
            if vs_size == 10.0:
                vs.new_tomogram("denoised").from_numpy(_tomogram(rng, shape), levels=3)
                # Features: new_features() only creates the (empty) store; the data is a one-level OME-Zarr
                # written with copick's own writer, as copick.ops.add.add_features does.
                feat = wbp.new_features("sobel")
                write_ome_zarr_3d(feat.zarr(), {vs_size: _tomogram(rng, shape)})

        # Tool and user picks in static
        _write_picks(run, rng, "proteasome", "pytom", "0", 5 + i, orient=True, scores=True)
        _write_picks(run, rng, "ribosome", "test.user", "1234", 3 + i, ids=True)

        if i == 0:
            # Also written (same file name) to the overlay later -> listed twice by copick.
            _write_picks(run, rng, "thyroglobulin-x.1", "ArtiaX", "19", 2)
            _write_mesh(run, "membrane", "membrain", "0", trimesh.creation.box(extents=(300.0, 300.0, 20.0)))
            seg = run.new_segmentation(20.0, "membrane", "0", is_multilabel=False, user_id="membrain")
            seg.from_numpy(_blob(SEG_SHAPE_20, (8, 8, 8), 5).astype(np.uint8))

    # Density map of one particle, in static (read-only in the project)
    root.get_object("proteasome").from_numpy(_blob((24, 20, 20), (12, 10, 10), 8).astype(np.float32), 10.0)


def write_overlay(root, overlay_only_root, rng: np.random.Generator, static_runs: list[str]) -> None:
    """Overlay side, written through the project config (static + overlay) so that copick sees the static
    data while writing; except one pick file duplicated in both layers (the merged API refuses to create
    it)."""
    run_names = [*static_runs[:3], OVERLAY_ONLY_RUN]
    for i, name in enumerate(run_names):
        run = root.get_run(name)
        if run is None:
            run = root.new_run(name)  # overlay-only run
            vs = run.new_voxel_spacing(10.0)
            vs.new_tomogram("wbp").from_numpy(_tomogram(rng), levels=3)
            _write_picks(run, rng, "ribosome", "alice", "1", 4)
            continue

        # Picks: several users/sessions, varied counts, one empty file
        _write_picks(run, rng, "ribosome", "alice", "1", 10 + 3 * i, orient=True, ids=True, scores=True)
        _write_picks(run, rng, "thyroglobulin-x.1", "bob", "2", 1 + i, scores=True)
        _write_picks(run, rng, "ribosome", "gapstop", "0", 20 + i, orient=True, scores=True)
        if i == 0:
            _write_picks(run, rng, "proteasome", "alice", "3", 0)  # empty pick file
            _write_picks(run, rng, "microtubule", "alice", "1", 6, ids=True)

        # Meshes
        _write_mesh(run, "membrane", "alice", "1", trimesh.creation.box(extents=(200.0, 150.0, 30.0)))
        if i == 1:
            _write_mesh(run, "ribosome", "meshtool", "0", trimesh.creation.icosphere(subdivisions=1, radius=150.0))

        # Segmentations at two voxel sizes: single-label (name = object) and multilabel
        labels10 = np.zeros(SEG_SHAPE_10, dtype=np.uint8)
        labels10[_blob(SEG_SHAPE_10, (8, 8, 8), 4)] = 1
        labels10[_blob(SEG_SHAPE_10, (20, 20, 20), 5)] = 2
        labels10[:2] = 3
        seg = run.new_segmentation(10.0, "prediction", "0", is_multilabel=True, user_id="cellcanvas")
        seg.from_numpy(labels10)
        seg = run.new_segmentation(10.0, "membrane", "1", is_multilabel=False, user_id="alice")
        seg.from_numpy((labels10 == 3).astype(np.uint8))
        if i == 0:
            seg = run.new_segmentation(20.0, "painting", "123", is_multilabel=True, user_id="test.user")
            seg.from_numpy(labels10[::2, ::2, ::2])
            seg = run.new_segmentation(20.0, "ribosome", "0", is_multilabel=False, user_id="membrain")
            seg.from_numpy((labels10[::2, ::2, ::2] == 1).astype(np.uint8), levels=2)

            # copick 1.31: instance and panoptic segmentations (own run-level directories)
            inst = np.zeros(SEG_SHAPE_10, dtype=np.uint16)
            inst[_blob(SEG_SHAPE_10, (8, 8, 8), 4)] = 1
            inst[_blob(SEG_SHAPE_10, (20, 20, 20), 4)] = 300  # > 255 -> stays uint16
            seg = run.new_segmentation(10.0, "ribosome", "0", user_id="instseg", is_instance=True)
            seg.from_numpy(inst)
            pan_labels = np.where(inst > 0, 1, 0).astype(np.uint16)
            pan_labels[:2] = 3
            pan_inst = np.where(pan_labels == 3, 1, inst).astype(np.uint16)
            seg = run.new_segmentation(10.0, "scene", "1", user_id="alice", is_panoptic=True)
            seg.from_numpy(np.stack([pan_labels, pan_inst]))

            # copick 1.31: traced filaments
            fil = run.new_filaments("microtubule", "1", user_id="alice")
            fil.from_numpy(
                [
                    np.linspace([10.0, 10.0, 10.0], [300.0, 40.0, 60.0], 12),
                    np.array([[5.0, 5, 5], [50, 60, 70]]),
                ],
                voxel_spacing=10.0,
            )
            run.new_filaments("microtubule", "0", user_id="tracer")  # empty filaments file

            # Features written in the overlay for a STATIC tomogram (copick lists them, writable)
            wbp = run.get_voxel_spacing(10.0).get_tomograms("wbp")[0]
            assert wbp.read_only
            feat = wbp.new_features("edge")
            write_ome_zarr_3d(feat.zarr(), {10.0: _tomogram(rng)})

        if i == 1:
            # Overlay-only tomogram type inside a static voxel spacing
            vs = run.get_voxel_spacing(10.0)
            vs.new_tomogram("ctfdeconv").from_numpy(_tomogram(rng), levels=2)

    # Same pick file name in static and overlay: must go through an overlay-only root, because the merged
    # API refuses to create (or, with exist_ok, returns the read-only static copy of) an existing pick.
    dup_run = overlay_only_root.get_run(static_runs[0]) or overlay_only_root.new_run(static_runs[0])
    _write_picks(dup_run, rng, "thyroglobulin-x.1", "ArtiaX", "19", 7, scores=True)

    # A density map in the overlay (writable)
    root.get_object("thyroglobulin-x.1").from_numpy(_blob((16, 16, 16), (8, 8, 8), 6).astype(np.float32), 10.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("--runs", type=int, default=4, help="number of runs (>= 4; extra runs are static)")
    args = parser.parse_args(argv)
    if args.runs < 4:
        parser.error("--runs must be >= 4")

    warnings.simplefilter("ignore")  # sanitize/deprecation warnings are noise here
    outdir = os.path.abspath(args.outdir)
    static_dir = os.path.join(outdir, "static")
    overlay_dir = os.path.join(outdir, "overlay")
    os.makedirs(static_dir, exist_ok=True)
    os.makedirs(overlay_dir, exist_ok=True)

    rng = np.random.default_rng(20240611)
    static_runs = STATIC_RUN_NAMES + [f"TS_{k:03d}" for k in range(5, args.runs + 1)]

    # Writer roots that exist only in memory: copick writes to a root's overlay, so "static" data is written
    # through a root whose overlay is the static directory.
    static_writer = copick.from_string(json.dumps(_config(static_dir, None)))
    write_static(static_writer, rng, static_runs)

    overlay_only = copick.from_string(json.dumps(_config(overlay_dir, None)))
    config_path = os.path.join(outdir, "copick_config.json")
    with open(config_path, "w") as f:
        json.dump(_config(overlay_dir, static_dir), f, indent=4)
    project = copick.from_file(config_path)
    write_overlay(project, overlay_only, rng, static_runs)

    print(config_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

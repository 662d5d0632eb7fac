"""Generate realistic copick sample projects (static + overlay) quickly, for demos, tests and benchmarks.

A 5,000-run project has ~60,000 pick files, so pick JSON is produced by string templates in the
exact layout ``json.dump(model_dump(), indent=4)`` gives (copick's own output), not through
pydantic; tomograms, features, segmentations and meshes are written with the real writers in
:mod:`copick_catalog.formats` on the first few runs only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import CopickConfig, PickableObject, save_config
from .errors import CatalogError
from .formats import glb, zarrio
from .formats.picks import IDENTITY
from .formats.zarr import write_ome_zarr
from .index import grammar as layout

USERS = (("alice", "1"), ("bob", "2"), ("carol", "3"), ("pytom", "0"))
OBJECTS = (
    PickableObject(name="ribosome", is_particle=True, label=1, color=(0, 117, 220, 255), pdb_id="7P6Z", radius=150.0),
    PickableObject(name="proteasome", is_particle=True, label=2, color=(255, 0, 0, 255), pdb_id="3J9I", radius=60.0),
    PickableObject(name="apo-ferritin", is_particle=True, label=3, color=(0, 200, 80, 255), radius=65.0),
    PickableObject(name="membrane", is_particle=False, label=4, color=(120, 120, 120, 255)),
)
PARTICLES = tuple(o.name for o in OBJECTS if o.is_particle)
IDENTITY_JSON = ",\n".join(
    "                [\n" + ",\n".join(f"                    {v:.1f}" for v in row) + "\n                ]"
    for row in IDENTITY
)


@dataclass
class SampleSummary:
    config: Path
    runs: int
    pick_files: int
    points: int
    tomograms: int


def pick_json(obj: str, user: str, session: str, run: str, pts: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> str:
    """Pick JSON laid out exactly like copick writes it (indent 4, every field)."""
    points = ",\n".join(
        "        {\n"
        '            "location": {\n'
        f'                "x": {x!r},\n                "y": {y!r},\n                "z": {z!r}\n'
        "            },\n"
        '            "transformation_": [\n' + IDENTITY_JSON + "\n            ],\n"
        f'            "instance_id": {int(i)},\n            "score": {float(s)!r}\n'
        "        }"
        for (x, y, z), i, s in zip(pts.tolist(), ids.tolist(), scores.tolist(), strict=True)
    )
    body = f"[\n{points}\n    ]" if len(pts) else "[]"
    return (
        "{\n"
        f'    "pickable_object_name": {json.dumps(obj)},\n    "user_id": {json.dumps(user)},\n'
        f'    "session_id": {json.dumps(session)},\n    "run_name": {json.dumps(run)},\n'
        '    "voxel_spacing": null,\n    "unit": "angstrom",\n'
        f'    "points": {body},\n    "trust_orientation": true\n'
        "}"
    )


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(path, mode) as fh:
        fh.write(text)


def make_sample_project(
    out: str | os.PathLike[str],
    runs: int = 20,
    *,
    picks_per_run: int = 12,
    points: tuple[int, int] = (10, 40),
    tomogram_runs: int = 3,
    size: int = 64,
    seed: int = 0,
    voxel_size: float = 10.0,
    users: Sequence[tuple[str, str]] = USERS,
    overwrite: bool = False,
) -> SampleSummary:
    """Write a project under ``out`` (``static/``, ``overlay/``, ``copick_config.json``).

    Static: run directories with a voxel spacing each, tomograms (``wbp`` with 3 levels,
    ``denoised``), ``sobel`` features, and tool picks (session ``0``). Overlay: user picks
    (``picks_per_run`` files a run in total, taken from ``users`` x particles in that order, some
    objects missing on some runs), and on the tomogram runs meshes and single-label/multilabel
    segmentations.

    An ``out`` that already holds anything is refused unless ``overwrite`` (a sample written over a
    real project would replace its config and mix fake annotations into it).
    """
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise CatalogError(f"{out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CatalogError(
            f"{out} is not empty; write the sample project to a new directory (or pass --overwrite "
            "to replace what is there)"
        )
    static, overlay = out / "static", out / "overlay"
    rng = np.random.default_rng(seed)
    combos = [(u, s, o) for u, s in users for o in PARTICLES]  # 12 combinations by default
    n_files = n_points = n_tomos = 0
    vs_name = f"{layout.VS_PREFIX}{layout.format_voxel_size(voxel_size)}"
    width = max(4, len(str(runs)))
    extent = size * voxel_size
    for r in range(runs):
        run = f"TS_{r + 1:0{width}d}"
        run_static = static / layout.run_dir(run)
        _write(run_static / layout.META_MARKER, "meta")
        _write(run_static / vs_name / layout.META_MARKER, "meta")
        chosen = combos[:picks_per_run] if picks_per_run <= len(combos) else combos
        if r % 7 == 3:  # some runs lack proteasome picks entirely, for "runs lacking X" queries
            chosen = [c for c in chosen if c[2] != "proteasome"]
        for user, session, obj in chosen:
            n = int(rng.integers(points[0], points[1] + 1))
            pts = rng.uniform(0, extent, size=(n, 3)).round(2)
            ids = np.zeros(n, dtype=int) if session == "0" else np.arange(n)
            scores = rng.uniform(0.5, 1.0, size=n).round(3)
            root = static if session == "0" else overlay  # tool picks are part of the static release
            rel = layout.path_of(layout.PickKey(run, user, session, obj))
            _write(root / rel, pick_json(obj, user, session, run, pts, ids, scores))
            n_files += 1
            n_points += n
        if r < tomogram_runs:
            n_tomos += _write_volumes(static, overlay, run, voxel_size, size, rng)
    config = CopickConfig(
        name="sample-project",
        description="Generated by copick-catalog (copick_catalog.sample)",
        version="1.31.0",
        pickable_objects=list(OBJECTS),
        overlay_root=f"local://{overlay}",
        static_root=f"local://{static}",
        overlay_fs_args={"auto_mkdir": True},
    )
    overlay.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "copick_config.json"
    save_config(config, cfg_path)
    return SampleSummary(cfg_path, runs, n_files, n_points, n_tomos)


def _write_volumes(static: Path, overlay: Path, run: str, vs: float, size: int, rng: np.random.Generator) -> int:
    vol = rng.normal(size=(size, size, size)).astype(np.float32)
    for tomo_type in ("wbp", "denoised"):
        rel = layout.path_of(layout.TomogramKey(run, vs, tomo_type))
        write_ome_zarr(zarrio.local_store(str(static / rel), read_only=False), vol, vs, levels=3, chunks=64)
    rel = layout.path_of(layout.FeatureKey(run, vs, "wbp", "sobel"))
    write_ome_zarr(zarrio.local_store(str(static / rel), read_only=False), np.abs(vol), vs, levels=1, chunks=64)
    mask = (vol > 1.0).astype(np.uint8)
    for seg_key, data in (
        (layout.SegmentationKey(run, vs, "alice", "1", "membrane"), mask),
        (layout.SegmentationKey(run, vs, "cellcanvas", "0", "prediction", True), mask * 2),
    ):
        write_ome_zarr(
            zarrio.local_store(str(overlay / layout.path_of(seg_key)), read_only=False),
            data,
            vs,
            levels=1,
            dtype=np.uint8,
            labels=True,
            chunks=64,
        )
    import trimesh

    for mesh_key, mesh in (
        (layout.MeshKey(run, "alice", "1", "membrane"), trimesh.creation.icosphere(2)),
        (layout.MeshKey(run, "membrain", "0", "membrane"), trimesh.creation.box()),
    ):
        _write(overlay / layout.path_of(mesh_key), glb.scene_to_glb(mesh))
    return 2

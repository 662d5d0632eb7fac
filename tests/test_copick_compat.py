"""A project written by the real copick package indexes to exactly what copick's own API lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.catalog.schema import Feature, Filament, Mesh, Pick, Run, Segmentation, Tomogram, VoxelSpacing
from tests.copick_env import run_copick


@pytest.fixture(scope="module")
def copick_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("copick_written")
    config = Path(run_copick("write_project.py", str(out)).strip().splitlines()[-1])
    listing = json.loads(run_copick("dump_listing.py", str(config)))
    return config, listing


def layer(read_only: bool) -> str:
    return "static" if read_only else "overlay"


def copick_view(listing: dict[str, Any]) -> dict[str, set[tuple]]:
    out: dict[str, set[tuple]] = {
        k: set() for k in ("runs", "vs", "tomograms", "features", "picks", "meshes", "segmentations", "filaments")
    }
    for run, r in listing["runs"].items():
        out["runs"].add(run)
        for vs in r["voxel_spacings"].values():
            out["vs"].add((run, vs["voxel_size"]))
            for t in vs["tomograms"]:
                out["tomograms"].add((run, vs["voxel_size"], t["tomo_type"], layer(t["read_only"])))
                for f in t["features_detail"]:
                    out["features"].add(
                        (run, vs["voxel_size"], t["tomo_type"], f["feature_type"], layer(f["read_only"]))
                    )
        for p in r["picks"]:
            out["picks"].add(
                (run, p["user_id"], p["session_id"], p["object_name"], p["n_points"], layer(p["read_only"]))
            )
        for m in r["meshes"]:
            out["meshes"].add(
                (
                    run,
                    m["user_id"],
                    m["session_id"],
                    m["object_name"],
                    m["n_vertices"],
                    m["n_faces"],
                    layer(m["read_only"]),
                )
            )
        for kind, key in (
            ("semantic", "segmentations"),
            ("instance", "instance_segmentations"),
            ("panoptic", "panoptic_segmentations"),
        ):
            for s in r.get(key, []):
                out["segmentations"].add(
                    (
                        run,
                        kind,
                        s["voxel_size"],
                        s["user_id"],
                        s["session_id"],
                        s["name"],
                        s["is_multilabel"],
                        layer(s["read_only"]),
                        tuple(s["shape"] or ()),
                        s["dtype"],
                    )
                )
        for f in r.get("filaments", []):
            out["filaments"].add(
                (run, f["user_id"], f["session_id"], f["object_name"], f["n_filaments"], layer(f["read_only"]))
            )
    return out


def catalog_view(cat: Catalog) -> dict[str, set[tuple]]:
    with cat.session() as s:
        rn = Run.name
        return {
            "runs": set(s.scalars(sa.select(Run.name))),
            "vs": set(s.execute(sa.select(rn, VoxelSpacing.voxel_size).join(Run))),
            "tomograms": set(
                s.execute(
                    sa.select(rn, VoxelSpacing.voxel_size, Tomogram.tomo_type, Tomogram.layer)
                    .select_from(Tomogram)
                    .join(VoxelSpacing)
                    .join(Run, Run.id == Tomogram.run_id)
                )
            ),
            "features": set(
                s.execute(
                    sa.select(rn, VoxelSpacing.voxel_size, Feature.tomo_type, Feature.feature_type, Feature.layer)
                    .select_from(Feature)
                    .join(VoxelSpacing)
                    .join(Run, Run.id == Feature.run_id)
                )
            ),
            "picks": set(
                s.execute(
                    sa.select(rn, Pick.user_id, Pick.session_id, Pick.object_name, Pick.n_points, Pick.layer).join(Run)
                )
            ),
            "meshes": set(
                s.execute(
                    sa.select(
                        rn, Mesh.user_id, Mesh.session_id, Mesh.object_name, Mesh.n_vertices, Mesh.n_faces, Mesh.layer
                    ).join(Run)
                )
            ),
            "segmentations": {
                (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], tuple(r[8] or ()), r[9])
                for r in s.execute(
                    sa.select(
                        rn,
                        Segmentation.kind,
                        Segmentation.voxel_size,
                        Segmentation.user_id,
                        Segmentation.session_id,
                        Segmentation.name,
                        Segmentation.is_multilabel,
                        Segmentation.layer,
                        Segmentation.shape,
                        Segmentation.dtype,
                    ).join(Run)
                )
            },
            "filaments": set(
                s.execute(
                    sa.select(
                        rn,
                        Filament.user_id,
                        Filament.session_id,
                        Filament.object_name,
                        Filament.n_filaments,
                        Filament.layer,
                    ).join(Run)
                )
            ),
        }


def test_catalog_equals_copick_listing(copick_project: tuple[Path, dict[str, Any]], db_url: str) -> None:
    config, listing = copick_project
    expected = copick_view(listing)
    with Catalog.open(config, db=db_url) as cat:
        report = cat.index()
        assert report.errors == 0, cat.errors()
        got = catalog_view(cat)
    for kind in expected:
        assert got[kind] == expected[kind], kind
    # the fixture really exercises the awkward parts
    assert any(p[-1] == "static" for p in expected["picks"]) and any(p[4] == 0 for p in expected["picks"])
    assert {s[1] for s in expected["segmentations"]} == {"semantic", "instance", "panoptic"}
    assert any(f[-1] == "overlay" for f in expected["features"])
    assert expected["filaments"]


def test_density_maps_indexed(copick_project: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    config, listing = copick_project
    with Catalog.open(config, db=str(tmp_path / "c.sqlite")) as cat:
        cat.index()
        from copick_catalog.catalog.schema import DensityMap

        with cat.session() as s:
            maps = {(m.object_name, m.layer) for m in s.scalars(sa.select(DensityMap))}
    expected = {(o["name"], layer(o["read_only"])) for o in listing["objects"] if o["has_density_map"]}
    assert maps == expected and maps

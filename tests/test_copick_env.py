"""The copick subprocess tooling works: the real copick writes a fixture project and lists it back.

These assertions pin down both our fixture contents and copick 1.31's listing behaviour that the catalog must
reproduce (duplicates across layers, empty pick files, overlay features of static tomograms, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.copick_env import COPICK_VERSION, run_copick


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("copick_project")
    stdout = run_copick("write_project.py", str(out))
    config = Path(stdout.strip().splitlines()[-1])
    listing = json.loads(run_copick("dump_listing.py", str(config)))
    return config, listing


def _find(items: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [i for i in items if all(i.get(k) == v for k, v in match.items())]


def test_config_and_roots(project: tuple[Path, dict[str, Any]]) -> None:
    config, listing = project
    assert listing["copick_version"] == COPICK_VERSION
    cfg = json.loads(config.read_text())
    assert cfg["config_type"] == "filesystem"
    assert cfg["overlay_root"] == f"local://{config.parent / 'overlay'}"
    assert cfg["static_root"] == f"local://{config.parent / 'static'}"
    assert cfg["overlay_fs_args"] == {"auto_mkdir": True}
    # Static data really is in the static root, overlay data in the overlay root.
    assert (config.parent / "static/ExperimentRuns/TS_001/Picks/pytom_0_proteasome.json").is_file()
    assert (config.parent / "overlay/ExperimentRuns/TS_001/Picks/alice_1_ribosome.json").is_file()
    assert (config.parent / "static/Objects/proteasome.zarr/.zgroup").is_file()


def test_runs_and_voxel_spacings(project: tuple[Path, dict[str, Any]]) -> None:
    _, listing = project
    runs = listing["runs"]
    assert sorted(runs) == ["TS_001", "TS_002", "TS_004", "run.with-dots_3"]
    assert sorted(runs["run.with-dots_3"]["voxel_spacings"]) == ["10.000", "20.000", "7.840"]
    assert runs["run.with-dots_3"]["voxel_spacings"]["7.840"]["voxel_size"] == pytest.approx(7.84)
    assert sorted(runs["TS_001"]["voxel_spacings"]) == ["10.000", "20.000"]
    assert sorted(runs["TS_004"]["voxel_spacings"]) == ["10.000"]  # overlay-only run


def test_tomograms_and_features(project: tuple[Path, dict[str, Any]]) -> None:
    _, listing = project
    tomos = listing["runs"]["TS_001"]["voxel_spacings"]["10.000"]["tomograms"]
    assert [(t["tomo_type"], t["read_only"]) for t in tomos] == [("denoised", True), ("wbp", True)]
    wbp = _find(tomos, tomo_type="wbp")[0]
    # static feature + a feature copick wrote into the OVERLAY for the static tomogram: both listed
    assert wbp["features"] == ["edge", "sobel"]
    assert wbp["features_detail"] == [
        {"feature_type": "edge", "read_only": False},
        {"feature_type": "sobel", "read_only": True},
    ]
    ts2 = listing["runs"]["TS_002"]["voxel_spacings"]["10.000"]["tomograms"]
    assert ("ctfdeconv", False) in [(t["tomo_type"], t["read_only"]) for t in ts2]
    ts4 = listing["runs"]["TS_004"]["voxel_spacings"]["10.000"]["tomograms"]
    assert [(t["tomo_type"], t["read_only"], t["features"]) for t in ts4] == [("wbp", False, [])]


def test_picks(project: tuple[Path, dict[str, Any]]) -> None:
    _, listing = project
    picks = listing["runs"]["TS_001"]["picks"]
    # Same file name in static and overlay: copick lists both, static (read-only) first.
    dup = _find(picks, user_id="ArtiaX", session_id="19", object_name="thyroglobulin-x.1")
    assert [(p["read_only"], p["n_points"]) for p in dup] == [(True, 2), (False, 7)]
    empty = _find(picks, user_id="alice", session_id="3", object_name="proteasome")
    assert empty == [
        {
            "user_id": "alice",
            "session_id": "3",
            "object_name": "proteasome",
            "n_points": 0,
            "read_only": False,
        },
    ]
    assert _find(picks, user_id="gapstop", session_id="0")[0]["n_points"] == 20
    assert _find(picks, user_id="pytom")[0]["read_only"] is True
    assert len(picks) == 9
    assert listing["runs"]["TS_004"]["picks"] == [
        {"user_id": "alice", "session_id": "1", "object_name": "ribosome", "n_points": 4, "read_only": False},
    ]


def test_meshes(project: tuple[Path, dict[str, Any]]) -> None:
    _, listing = project
    meshes = listing["runs"]["TS_001"]["meshes"]
    assert [(m["user_id"], m["object_name"], m["read_only"], m["n_vertices"], m["n_faces"]) for m in meshes] == [
        ("alice", "membrane", False, 8, 12),
        ("membrain", "membrane", True, 8, 12),
    ]
    ico = _find(listing["runs"]["TS_002"]["meshes"], user_id="meshtool")[0]
    assert (ico["n_vertices"], ico["n_faces"]) == (42, 80)  # icosphere, 1 subdivision


def test_segmentations(project: tuple[Path, dict[str, Any]]) -> None:
    _, listing = project
    run = listing["runs"]["TS_001"]
    segs = {
        (s["voxel_size"], s["user_id"], s["name"], s["is_multilabel"], s["read_only"]): s for s in run["segmentations"]
    }
    assert set(segs) == {
        (10.0, "alice", "membrane", False, False),
        (10.0, "cellcanvas", "prediction", True, False),
        (20.0, "membrain", "membrane", False, True),
        (20.0, "membrain", "ribosome", False, False),
        (20.0, "test.user", "painting", True, False),
    }
    assert segs[(10.0, "cellcanvas", "prediction", True, False)]["shape"] == [32, 32, 32]
    assert segs[(20.0, "test.user", "painting", True, False)]["dtype"] == "uint8"
    # copick 1.31 types live in their own directories and are not in the default segmentation list
    assert [(s["name"], s["dtype"], s["shape"]) for s in run["instance_segmentations"]] == [
        ("ribosome", "uint16", [32, 32, 32]),
    ]
    assert [(s["name"], s["shape"]) for s in run["panoptic_segmentations"]] == [("scene", [2, 32, 32, 32])]
    assert [(f["user_id"], f["n_filaments"]) for f in run["filaments"]] == [("alice", 2), ("tracer", 0)]
    assert listing["runs"]["TS_002"]["instance_segmentations"] == []


def test_objects(project: tuple[Path, dict[str, Any]]) -> None:
    _, listing = project
    objs = {o["name"]: o for o in listing["objects"]}
    assert set(objs) >= {"ribosome", "proteasome", "membrane", "thyroglobulin-x.1"}
    assert objs["ribosome"]["label"] == 1 and objs["ribosome"]["is_particle"] is True
    assert objs["membrane"]["is_particle"] is False and objs["membrane"]["has_density_map"] is False
    assert objs["proteasome"] == {
        "name": "proteasome",
        "is_particle": True,
        "label": 2,
        "read_only": True,
        "has_density_map": True,
    }
    assert objs["thyroglobulin-x.1"]["has_density_map"] is True
    assert objs["thyroglobulin-x.1"]["read_only"] is False
    assert objs["ribosome"]["has_density_map"] is False


def test_run_copick_reports_stderr(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"FileNotFoundError|No such file"):
        run_copick("dump_listing.py", str(tmp_path / "missing.json"))


def test_dump_is_read_only_and_deterministic(project: tuple[Path, dict[str, Any]]) -> None:
    config, listing = project
    before = sorted(str(p.relative_to(config.parent)) for p in config.parent.rglob("*"))
    again = json.loads(run_copick("dump_listing.py", str(config)))
    after = sorted(str(p.relative_to(config.parent)) for p in config.parent.rglob("*"))
    assert again == listing
    assert after == before

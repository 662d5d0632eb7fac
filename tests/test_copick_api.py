"""The seed's copick object API served from the catalog, against the REAL copick package and real databases.

* listings equal copick's own (``dump_listing.py``) on a copick-written project and on the sample project;
* what we write, copick reads back (``read_back.py``), and what copick writes, we index and read;
* write-through is all-or-nothing: a failing catalog write (an SQL trigger) leaves no file behind and
  restores previous content; a failing file write leaves no row; static rows refuse writes;
* two processes writing different picks at once both land (SQLite and PostgreSQL);
* the read paths never list a directory (os/fsspec listing calls counted by wrapping them).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec.implementations.local
import numpy as np
import pytest
import sqlalchemy as sa
import trimesh
import zarr

from copick_catalog.copick.objects import CopickRoot, from_file
from copick_catalog.errors import CatalogError, InvalidNameError, ReadOnlyError
from copick_catalog.index.roots import Root
from copick_catalog.sample import SampleSummary
from tests.conftest import age_tree
from tests.copick_env import run_copick

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def copick_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A project written by copick 1.31 and copick's own listing of it (shared, never written to)."""
    out = tmp_path_factory.mktemp("copick_written")
    config = Path(run_copick("write_project.py", str(out)).strip().splitlines()[-1])
    return config, json.loads(run_copick("dump_listing.py", str(config)))


@pytest.fixture(scope="module")
def sample_listing(_sample_template: SampleSummary) -> dict[str, Any]:
    """copick's listing of the sample project (every ``sample`` copy has the same content)."""
    return json.loads(run_copick("dump_listing.py", str(_sample_template.config)))


def copy_project(config: Path, dst: Path) -> Path:
    """A private copy of a project whose config names absolute roots."""
    shutil.copytree(config.parent, dst, symlinks=True)
    new = dst / config.name
    new.write_text(config.read_text().replace(str(config.parent), str(dst)))
    age_tree(dst)
    return new


@pytest.fixture
def root(sample: SampleSummary, db_url: str) -> Iterator[CopickRoot]:
    with from_file(sample.config, db=db_url) as r:
        yield r


def _array_info(entity: Any) -> tuple[list[int] | None, str | None]:
    try:
        arr = zarr.open_group(entity.zarr(), mode="r")["0"]
    except (KeyError, FileNotFoundError):
        return None, None
    return [int(s) for s in arr.shape], str(arr.dtype)


def _seg(s: Any) -> dict[str, Any]:
    shape, dtype = _array_info(s)
    return {
        "voxel_size": float(s.voxel_size),
        "user_id": s.user_id,
        "session_id": s.session_id,
        "name": s.name,
        "is_multilabel": s.is_multilabel,
        "read_only": s.read_only,
        "shape": shape,
        "dtype": dtype,
    }


def _seg_key(s: dict[str, Any]) -> tuple:
    return (s["voxel_size"], s["user_id"], s["session_id"], s["name"], s["is_multilabel"], not s["read_only"])


def _mesh_counts(scene: Any) -> tuple[int, int]:
    geoms = list(scene.geometry.values())
    return sum(len(g.vertices) for g in geoms), sum(len(g.faces) for g in geoms)


def our_listing(root: CopickRoot) -> dict[str, Any]:
    """Our object API's view in the shape of ``dump_listing.py`` (filaments aside: not in the seed API)."""
    runs: dict[str, Any] = {}
    for run in root.runs:
        vss: dict[str, Any] = {}
        for vs in run.voxel_spacings:
            tomos = []
            for t in vs.tomograms:
                detail = sorted(
                    ({"feature_type": f.feature_type, "read_only": f.read_only} for f in t.features),
                    key=lambda d: (d["feature_type"], not d["read_only"]),
                )
                tomos.append(
                    {
                        "tomo_type": t.tomo_type,
                        "read_only": t.read_only,
                        "features": sorted(d["feature_type"] for d in detail),
                        "features_detail": detail,
                    }
                )
            tomos.sort(key=lambda t: (t["tomo_type"], not t["read_only"]))
            vss[f"{vs.voxel_size:.3f}"] = {"voxel_size": float(vs.voxel_size), "tomograms": tomos}
        picks = sorted(
            (
                {
                    "user_id": p.user_id,
                    "session_id": p.session_id,
                    "object_name": p.pickable_object_name,
                    "n_points": len(p.points),
                    "read_only": p.read_only,
                }
                for p in run.picks
            ),
            key=lambda p: (p["user_id"], p["session_id"], p["object_name"], not p["read_only"]),
        )
        meshes = []
        for m in run.meshes:
            nv, nf = _mesh_counts(m.mesh)
            meshes.append(
                {
                    "user_id": m.user_id,
                    "session_id": m.session_id,
                    "object_name": m.pickable_object_name,
                    "read_only": m.read_only,
                    "n_vertices": nv,
                    "n_faces": nf,
                }
            )
        meshes.sort(key=lambda m: (m["user_id"], m["session_id"], m["object_name"], not m["read_only"]))
        runs[run.name] = {
            "voxel_spacings": vss,
            "picks": picks,
            "meshes": meshes,
            "segmentations": sorted(map(_seg, run.get_segmentations()), key=_seg_key),
            "instance_segmentations": sorted(map(_seg, run.get_segmentations(is_instance=True)), key=_seg_key),
            "panoptic_segmentations": sorted(map(_seg, run.get_segmentations(is_panoptic=True)), key=_seg_key),
        }
    objects = sorted(
        (
            {
                "name": o.name,
                "is_particle": o.is_particle,
                "label": o.label,
                "read_only": o.read_only,
                "has_density_map": o.has_density_map(),
            }
            for o in root.pickable_objects
        ),
        key=lambda o: o["name"],
    )
    return {"runs": runs, "objects": objects}


def copick_listing(listing: dict[str, Any]) -> dict[str, Any]:
    out = {
        "runs": {name: {k: v for k, v in r.items() if k != "filaments"} for name, r in listing["runs"].items()},
        "objects": listing["objects"],
    }
    return json.loads(json.dumps(out))


def overlay_dir(config: Path) -> Path:
    return config.parent / "overlay"


def table_rows(root: CopickRoot, table: str) -> set[tuple]:
    with root.catalog.engine.connect() as conn:
        return set(conn.execute(sa.text(f"SELECT layer, path FROM {table}")).all())


def add_failing_trigger(root: CopickRoot, table: str, event: str = "INSERT") -> None:
    """Make every ``event`` on ``table`` fail inside the database, as a full disk or a lost server would."""
    name = f"cc_fail_{table}_{event.lower()}"
    with root.catalog.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE {event} ON {table} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION cc_injected_failure() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION cc_injected_failure()"
            )
        conn.commit()


def drop_failing_trigger(root: CopickRoot, table: str, event: str = "INSERT") -> None:
    name = f"cc_fail_{table}_{event.lower()}"
    with root.catalog.engine.connect() as conn:
        suffix = "" if conn.dialect.name == "sqlite" else f" ON {table}"
        conn.exec_driver_sql(f"DROP TRIGGER {name}{suffix}")
        conn.commit()


def hidden_leftovers(base: Path) -> list[Path]:
    """Temporary or backup names our writer uses; none may survive a finished call."""
    return [p for p in base.rglob(".*") if ".tmp" in p.name or ".bak-" in p.name]


# ------------------------------------------------------------------------------------------------
# listings: the same answers as copick


def test_listing_matches_copick_on_copick_written_project(
    copick_project: tuple[Path, dict[str, Any]], db_url: str
) -> None:
    config, listing = copick_project
    with from_file(config, db=db_url) as root:
        assert our_listing(root) == copick_listing(listing)


def test_listing_matches_copick_on_sample(sample: SampleSummary, sample_listing: dict[str, Any], db_url: str) -> None:
    with from_file(sample.config, db=db_url) as root:
        assert our_listing(root) == copick_listing(sample_listing)


def test_queries(root: CopickRoot, sample: SampleSummary) -> None:
    assert [r.name for r in root.runs] == [f"TS_{i:04d}" for i in range(1, sample.runs + 1)]
    assert root.get_run("nope") is None
    run = root.get_run("TS_0001")
    assert run is root.get_run("TS_0001") and run in root.runs
    assert sum(len(p.points) for r in root.runs for p in r.picks) == sample.points
    assert {p.user_id for p in run.get_picks(object_name="ribosome")} == {"alice", "bob", "carol", "pytom"}
    two = run.get_picks(object_name=["ribosome", "proteasome"], user_id=("alice", "bob"))
    assert sorted((p.user_id, p.pickable_object_name) for p in two) == [
        ("alice", "proteasome"),
        ("alice", "ribosome"),
        ("bob", "proteasome"),
        ("bob", "ribosome"),
    ]
    assert [p.session_id for p in run.get_picks(user_id="bob", session_id="2")] == ["2"] * 3
    # tool vs user (no user_id in the config: every user pick)
    assert {p.user_id for p in run.tool_picks()} == {"pytom"} and all(p.read_only for p in run.tool_picks())
    assert {p.user_id for p in run.user_picks()} == {"alice", "bob", "carol"}
    root.user_id = "carol"
    assert {p.user_id for p in run.user_picks()} == {"carol"}
    pos, tr = run.get_picks(user_id="alice", object_name="ribosome")[0].numpy()
    assert pos.shape[1] == 3 and tr.shape[1:] == (4, 4) and np.allclose(tr, np.eye(4))
    # voxel spacings and tomograms; int voxel sizes work
    vs = run.get_voxel_spacing(10)
    assert vs is run.get_voxel_spacing(10.0004) and run.get_voxel_spacing(20) is None
    assert [t.tomo_type for t in vs.tomograms] == ["denoised", "wbp"]
    wbp = vs.get_tomogram("wbp")
    assert wbp.read_only and [f.feature_type for f in wbp.features] == ["sobel"]
    assert wbp.numpy(zarr_group="2").shape == (8, 8, 8)
    assert wbp.numpy(x=slice(0, 4), y=slice(0, 5), z=slice(0, 6)).shape == (6, 5, 4)
    assert root.get_run("TS_0005").get_voxel_spacing(10).tomograms == []
    # segmentations and meshes
    segs = run.get_segmentations(voxel_size=10)
    assert sorted((s.name, s.is_multilabel) for s in segs) == [("membrane", False), ("prediction", True)]
    assert run.get_segmentations(voxel_size=[20, 10.0], is_multilabel=True)[0].name == "prediction"
    assert run.get_segmentations(voxel_size=20) == []
    assert [s.user_id for s in run.tool_segmentations()] == ["cellcanvas"]
    assert run.get_segmentations(name="membrane")[0].numpy().dtype == np.uint8
    assert sorted(m.user_id for m in run.meshes) == ["alice", "membrain"]
    assert [m.user_id for m in run.tool_meshes()] == ["membrain"]
    assert _mesh_counts(run.get_meshes(user_id="membrain")[0].mesh) == (8, 12)
    assert root.get_object("ribosome").zarr() is not None and root.get_object("membrane").zarr() is None
    assert root.get_object("ribosome").numpy() is None  # no density map in the sample


# ------------------------------------------------------------------------------------------------
# round trips with the real copick


def test_we_write_copick_reads(copick_project: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    config = copy_project(copick_project[0], tmp_path / "project")
    rng = np.random.default_rng(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sanitising warnings are checked elsewhere
        root = from_file(config, db=str(tmp_path / "catalog.sqlite"))
    run = root.get_run("TS_001")

    pos = rng.uniform(0, 300, size=(6, 3)).round(3)
    tr = np.tile(np.eye(4), (6, 1, 1))
    tr[:, :3, 3] = rng.uniform(-1, 1, size=(6, 3)).round(3)
    picks = run.new_pick("dave", "1", "ribosome")  # the seed's order
    picks.from_numpy(pos, tr, instance_ids=np.arange(6), scores=np.linspace(0.1, 0.6, 6))
    run.new_picks("proteasome", "2", user_id="dave")  # copick's order, left empty
    mesh = run.new_mesh("dave", "1", "membrane")  # the seed's order
    mesh.mesh = trimesh.creation.icosphere(subdivisions=2)
    mesh.store()
    labels = np.zeros((32, 32, 32), np.uint8)
    labels[2:10, 3:11, 4:12] = 1
    run.new_segmentation(10.0, "membrane", "1", False, user_id="dave").from_numpy(labels)  # copick's order
    multi = (np.arange(32**3).reshape(32, 32, 32) % 4).astype(np.uint8)
    run.new_segmentation("dave", "1", 10, "labels", True).from_numpy(multi, levels=2)  # the seed's order
    vs = run.new_voxel_spacing(5)
    volume = rng.normal(size=(16, 16, 16)).astype(np.float32)
    tomo = vs.new_tomogram("wbp")
    tomo.from_numpy(volume, levels=2)
    tomo.new_features("sobel").from_numpy(np.abs(volume))
    root.get_object("ribosome").from_numpy(np.full((8, 8, 8), 0.25, np.float32), 10.0)
    new_run = root.new_run("TS_900")
    new_run.new_picks("ribosome", "3", user_id="erin").from_numpy(np.array([[1.0, 2.0, 3.0]]))
    root.close()
    assert hidden_leftovers(config.parent) == []

    back = json.loads(run_copick("read_back.py", str(config), "TS_001", "TS_900"))
    r = back["runs"]["TS_001"]
    got = {(p["user_id"], p["session_id"], p["object_name"]): p for p in r["picks"]}
    dave = got[("dave", "1", "ribosome")]
    assert np.allclose(dave["points"], pos) and np.allclose(dave["transforms"], tr)
    assert dave["instance_ids"] == list(range(6)) and np.allclose(dave["scores"], np.linspace(0.1, 0.6, 6))
    assert got[("dave", "2", "proteasome")]["points"] == []
    assert {(m["user_id"], m["n_vertices"], m["n_faces"]) for m in r["meshes"] if m["user_id"] == "dave"} == {
        ("dave", 162, 320)
    }
    segs = {(s["name"], s["is_multilabel"]): s for s in r["segmentations"] if s["user_id"] == "dave"}
    assert segs[("membrane", False)] | {"sum": None} == segs[("membrane", False)] | {
        "shape": [32, 32, 32],
        "dtype": "uint8",
        "levels": ["0"],
        "sum": None,
    }
    assert segs[("membrane", False)]["sum"] == labels.sum()
    assert segs[("labels", True)]["sum"] == multi.sum() and segs[("labels", True)]["levels"] == ["0", "1"]
    five = r["voxel_spacings"]["5.000"]
    assert [(t["tomo_type"], t["read_only"], t["shape"], t["levels"]) for t in five] == [
        ("wbp", False, [16, 16, 16], ["0", "1"])
    ]
    assert five[0]["sum"] == pytest.approx(float(volume.astype(np.float64).sum()), rel=1e-5)
    assert five[0]["features"][0]["feature_type"] == "sobel"
    assert five[0]["features"][0]["sum"] == pytest.approx(float(np.abs(volume).astype(np.float64).sum()), rel=1e-5)
    assert back["objects"]["ribosome"] == {"shape": [8, 8, 8], "dtype": "float32", "sum": 128.0}
    assert [(p["user_id"], p["points"]) for p in back["runs"]["TS_900"]["picks"]] == [("erin", [[1.0, 2.0, 3.0]])]

    # ... and copick's reading of the whole run equals ours, item for item
    with from_file(config, db=str(tmp_path / "catalog.sqlite")) as again:
        ours = again.get_run("TS_001")
        assert sorted(
            (p.user_id, p.session_id, p.pickable_object_name, p.read_only, len(p.points)) for p in ours.picks
        ) == sorted(
            (p["user_id"], p["session_id"], p["object_name"], p["read_only"], len(p["points"])) for p in r["picks"]
        )
        assert sorted(
            (s.user_id, s.name, s.voxel_size, s.read_only, s.is_instance, s.is_panoptic) for s in ours.segmentations
        ) == sorted(
            (s["user_id"], s["name"], s["voxel_size"], s["read_only"], s["is_instance"], s["is_panoptic"])
            for s in r["segmentations"]
        )


def test_copick_writes_we_read(sample: SampleSummary, tmp_path: Path) -> None:
    with from_file(sample.config, db=str(tmp_path / "catalog.sqlite")) as root:
        run = root.get_run("TS_0001")
        assert run.get_picks(user_id="alice")  # about to be deleted by copick
        assert run.get_picks(user_id="carol") and not run.get_picks(user_id="carol", session_id="5")
        wrote = json.loads(run_copick("write_more.py", str(sample.config), "TS_0001", "alice").splitlines()[-1])
        # Until the catalog is re-indexed, we still answer from it (no listing behind its back) ...
        assert run.get_picks(user_id="alice")
        root.refresh(index=True)
        run = root.get_run("TS_0001")
        assert run.get_picks(user_id="alice") == [] and wrote["deleted_picks"]
        carol = run.get_picks(user_id="carol", session_id="5", object_name="ribosome")[0]
        pos, tr = carol.numpy()
        assert np.allclose(pos, wrote["picks"]["points"]) and np.allclose(tr, wrote["picks"]["transforms"])
        assert [p.instance_id for p in carol.points] == wrote["picks"]["instance_ids"]
        assert [p.score for p in carol.points] == wrote["picks"]["scores"]
        mesh = run.get_meshes(user_id="carol")[0]
        assert _mesh_counts(mesh.mesh) == (wrote["mesh"]["n_vertices"], wrote["mesh"]["n_faces"])
        seg = run.get_segmentations(user_id="carol", voxel_size=10)[0]
        data = seg.numpy()
        assert list(data.shape) == wrote["segmentation"]["shape"] and data.dtype == np.uint8
        assert data.sum() == wrote["segmentation"]["sum"]
        iso = run.get_voxel_spacing(10).get_tomogram("isonet")
        assert not iso.read_only and iso.numpy().sum() == pytest.approx(wrote["tomogram"]["sum"], rel=1e-6)
        assert iso.numpy(zarr_group="1").shape == (8, 8, 8)
        assert iso.get_features("grad").numpy().sum() == pytest.approx(wrote["features"]["sum"], rel=1e-6)
        ribo = root.get_object("ribosome")
        assert ribo.has_density_map() and not ribo.read_only
        assert ribo.numpy().sum() == pytest.approx(wrote["density_map"]["sum"])


# ------------------------------------------------------------------------------------------------
# write-through: all or nothing


def test_catalog_failure_undoes_the_file(root: CopickRoot, sample: SampleSummary) -> None:
    overlay = overlay_dir(sample.config)
    run = root.get_run("TS_0002")
    picks_before, segs_before = table_rows(root, "picks"), table_rows(root, "segmentations")

    # a new pick file: the insert fails -> no file, no row
    add_failing_trigger(root, "picks")
    with pytest.raises(CatalogError, match=r"injected failure.*file change was undone"):
        run.new_picks("ribosome", "9", user_id="dave")
    assert not (overlay / "ExperimentRuns/TS_0002/Picks/dave_9_ribosome.json").exists()
    assert table_rows(root, "picks") == picks_before and run.get_picks(user_id="dave") == []
    # storing over an existing pick file: the previous bytes come back
    alice = run.get_picks(user_id="alice", object_name="ribosome")[0]
    path = overlay / alice.path
    before = path.read_bytes()
    n_before = len(alice.points)
    with pytest.raises(CatalogError):
        alice.from_numpy(np.zeros((2, 3)))
    assert path.read_bytes() == before
    assert len(alice.load().points) == n_before
    drop_failing_trigger(root, "picks")

    # deleting: the row cannot go -> the file comes back
    add_failing_trigger(root, "picks", "DELETE")
    with pytest.raises(CatalogError):
        alice.delete()
    assert path.read_bytes() == before and alice in run.picks
    drop_failing_trigger(root, "picks", "DELETE")

    # a zarr group: a new one disappears, a rewritten one gets its old data back
    add_failing_trigger(root, "segmentations")
    with pytest.raises(CatalogError):
        run.new_segmentation(10.0, "ribosome", "9", user_id="dave")
    assert not list((overlay / "ExperimentRuns/TS_0002/Segmentations").glob("*dave*"))
    seg = run.get_segmentations(user_id="alice")[0]
    old = seg.numpy()
    with pytest.raises(CatalogError):
        seg.from_numpy(np.full(old.shape, 7, np.uint8))
    assert np.array_equal(seg.numpy(), old)
    assert table_rows(root, "segmentations") == segs_before
    drop_failing_trigger(root, "segmentations")

    # a new run: its .meta marker goes away with the failed row
    add_failing_trigger(root, "runs")
    with pytest.raises(CatalogError):
        root.new_run("TS_NEW")
    assert not (overlay / "ExperimentRuns/TS_NEW/.meta").exists() and root.get_run("TS_NEW") is None
    drop_failing_trigger(root, "runs")

    assert hidden_leftovers(sample.config.parent) == []
    # with the database healthy again the same calls work, and a full index finds nothing to fix
    run.new_picks("ribosome", "9", user_id="dave").from_numpy(np.ones((3, 3)))
    seg.from_numpy(np.full(old.shape, 7, np.uint8))
    assert root.new_run("TS_NEW").name == "TS_NEW"
    report = root.catalog.index()
    assert (report.added, report.changed, report.removed, report.errors) == (0, 0, 0, 0)


def test_file_failure_touches_no_catalog_row(root: CopickRoot, sample: SampleSummary) -> None:
    overlay = overlay_dir(sample.config)
    run = root.get_run("TS_0005")
    before = {t: table_rows(root, t) for t in ("picks", "meshes", "segmentations", "tomograms")}
    # A plain file where the directory should be: the overlay write fails like on a full or broken disk.
    # (chmod cannot stand in: the tests may run as root, who ignores permission bits.)
    (overlay / "ExperimentRuns/TS_0005/Meshes").write_text("not a directory")
    (overlay / "ExperimentRuns/TS_0005/Segmentations").write_text("not a directory")
    (overlay / "ExperimentRuns/TS_0005/VoxelSpacing10.000").write_text("not a directory")
    with pytest.raises(OSError):
        run.new_mesh(object_name="membrane", session_id="1", user_id="dave")
    with pytest.raises(OSError):
        run.new_segmentation(10.0, "membrane", "1", user_id="dave")
    with pytest.raises(OSError):
        run.get_voxel_spacing(10).new_tomogram("denoised")
    new_run = root.new_run("TS_BLOCKED")
    (overlay / "ExperimentRuns/TS_BLOCKED/Picks").write_text("not a directory")
    with pytest.raises(OSError):
        new_run.new_picks("ribosome", "1", user_id="dave")
    assert {t: table_rows(root, t) for t in before} == before
    root.refresh()
    assert root.get_run("TS_0005").meshes == [] and root.get_run("TS_BLOCKED").picks == []
    assert hidden_leftovers(sample.config.parent) == []


def test_static_rows_refuse_writes(root: CopickRoot, sample: SampleSummary) -> None:
    static = sample.config.parent / "static"
    snapshot = {p: p.stat().st_mtime_ns for p in static.rglob("*") if p.is_file()}
    run = root.get_run("TS_0001")
    tool = run.get_picks(user_id="pytom", object_name="ribosome")[0]
    assert tool.read_only and tool.from_tool
    for action in (
        lambda: tool.from_numpy(np.zeros((1, 3))),
        tool.store,
        tool.delete,
        lambda: run.delete_picks(object_name="ribosome"),
    ):
        with pytest.raises(ReadOnlyError, match="static"):
            action()
    assert issubclass(ReadOnlyError, PermissionError)
    # delete_picks refuses as a whole: the overlay ribosome picks of the same filter survive
    assert len(run.get_picks(object_name="ribosome")) == 4
    # new_* of an existing static entity: ValueError, or the static (read-only) instance with exist_ok
    with pytest.raises(ValueError, match="already exists"):
        run.new_picks("ribosome", "0", user_id="pytom")
    assert run.new_picks("ribosome", "0", user_id="pytom", exist_ok=True) == tool
    wbp = run.get_voxel_spacing(10).get_tomogram("wbp")
    assert wbp.new_features("sobel", exist_ok=True).read_only
    with pytest.raises(ReadOnlyError):
        wbp.from_numpy(np.zeros((4, 4, 4)))
    with pytest.raises(ReadOnlyError):
        wbp.delete()
    with pytest.raises(ReadOnlyError):
        wbp.get_features("sobel").from_numpy(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError):  # zarr 3's read-only store refuses writes too
        zarr.open_group(wbp.zarr(), mode="r+")["0"][0, 0, 0] = 1.0
    assert {p: p.stat().st_mtime_ns for p in static.rglob("*") if p.is_file()} == snapshot


# ------------------------------------------------------------------------------------------------
# names and argument orders


def test_names_are_sanitised_or_refused(root: CopickRoot, sample: SampleSummary) -> None:
    run = root.get_run("TS_0003")
    with pytest.warns(UserWarning, match="sanitised"):
        p = run.new_picks("ribosome", "my session", user_id="dr_who")
    assert (p.user_id, p.session_id) == ("dr-who", "my-session")
    assert p.path == "ExperimentRuns/TS_0003/Picks/dr-who_my-session_ribosome.json"
    with pytest.raises(InvalidNameError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run.new_picks("ribosome", "___", user_id="dave")
    with pytest.raises(InvalidNameError, match="copick hides"):
        run.new_picks("ribosome", "1", user_id=".dave")
    with pytest.raises(InvalidNameError):
        root.new_run("../escape")
    with pytest.raises(ValueError, match="not a pickable object"):
        run.new_picks("ribosom", "1", user_id="dave")
    with pytest.raises(ValueError, match="user_id must be given"):
        run.new_picks("ribosome", "1")
    root.user_id = "erin"
    assert run.new_picks("ribosome", 4).path.endswith("/erin_4_ribosome.json")  # ints are fine
    with pytest.raises(ValueError, match="already exists"):
        run.new_picks("ribosome", "4")
    with pytest.raises(ValueError, match="already exists"):
        root.new_run("TS_0003")
    assert root.new_run("TS_0003", exist_ok=True) is run
    assert not hidden_leftovers(sample.config.parent)


def test_argument_orders(root: CopickRoot) -> None:
    run = root.get_run("TS_0004")
    seed = run.new_mesh("dave", "1", "membrane")
    copick = run.new_mesh("membrane", "2", "dave")
    keywords = run.new_mesh(user_id="dave", session_id="3", object_name="membrane")
    mixed = run.new_mesh("dave", "4", object_name="membrane")
    assert [m.path.rsplit("/", 1)[1] for m in (seed, copick, keywords, mixed)] == [
        "dave_1_membrane.glb",
        "dave_2_membrane.glb",
        "dave_3_membrane.glb",
        "dave_4_membrane.glb",
    ]
    assert all((m.user_id, m.pickable_object_name) == ("dave", "membrane") for m in (seed, copick, keywords, mixed))
    with pytest.raises(TypeError, match="ambiguous"):
        run.new_mesh("ribosome", "1", "membrane")  # a user called like an object: say it with keywords
    with pytest.raises(ValueError, match="user_id must be given"):
        run.new_mesh("membrane", "5")  # copick's short form needs the config's user_id
    root.user_id = "erin"
    assert run.new_mesh("membrane", "5").user_id == "erin"
    assert run.new_mesh("membrane", "5", exist_ok=True) == run.get_meshes(user_id="erin")[0]
    with pytest.raises(ValueError, match="new_pick\\(user_id, session_id, object_name\\)"):
        run.new_pick("ribosome", "1", "dave")  # swapped: told which order each spelling takes
    assert run.new_pick("dave", "1", "ribosome").user_id == "dave"
    a = run.new_segmentation(10.0, "ribosome", "1", False, "dave")  # copick's
    b = run.new_segmentation("dave", "2", 10, "ribosome")  # the seed's
    c = run.new_segmentation(voxel_size=10, name="cells", session_id="3", is_multilabel=True, user_id="dave")
    assert [s.path.rsplit("/", 1)[1] for s in (a, b, c)] == [
        "10.000_dave_1_ribosome.zarr",
        "10.000_dave_2_ribosome.zarr",
        "10.000_dave_3_cells-multilabel.zarr",
    ]
    with pytest.raises(ValueError, match="named after a pickable object"):
        run.new_segmentation(10.0, "cells", "4", False, "dave")
    inst = run.new_segmentation(10.0, "ribosome", "5", user_id="dave", is_instance=True)
    assert inst.path.startswith("ExperimentRuns/TS_0004/InstanceSegmentations/") and inst.is_instance
    assert inst not in run.get_segmentations() and inst in run.get_segmentations(is_instance=True)
    assert run.new_segmentation("dave", "1", 10.0, "ribosome", exist_ok=True) == a


def test_files_written_outside_the_api_are_not_overwritten(root: CopickRoot, sample: SampleSummary) -> None:
    run = root.get_run("TS_0006")
    run.picks  # listed before someone else writes a file  # noqa: B018
    foreign = overlay_dir(sample.config) / "ExperimentRuns/TS_0006/Picks/zoe_1_ribosome.json"
    foreign.write_text(
        json.dumps(
            {
                "pickable_object_name": "ribosome",
                "user_id": "zoe",
                "session_id": "1",
                "points": [{"location": {"x": 1, "y": 2, "z": 3}}],
            }
        )
    )
    with pytest.raises(ValueError, match="already exists"):
        run.new_picks("ribosome", "1", user_id="zoe")
    got = run.new_picks("ribosome", "1", user_id="zoe", exist_ok=True)
    assert len(got.points) == 1 and json.loads(foreign.read_text())["points"]


# ------------------------------------------------------------------------------------------------
# concurrency


WRITER = """
import os, sys, time
import numpy as np
from copick_catalog.copick.objects import from_file

config, db, user, go = sys.argv[1:5]
root = from_file(config, db=db, index=False)
run = root.get_run("TS_0003")
open(f"{go}.{user}", "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
for i in range(6):
    picks = run.new_picks("ribosome", str(i + 1), user_id=user)
    picks.from_numpy(np.full((i + 1, 3), float(i)))
root.close()
"""


def test_two_processes_write_different_picks(sample: SampleSummary, db_url: str, tmp_path: Path) -> None:
    with from_file(sample.config, db=db_url):
        pass  # schema and first index, before the writers start
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(sample.config), db_url, user, str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for user in ("procA", "procB")
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.{u}").exists() for u in ("procA", "procB")):
        assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    go.touch()  # both start writing at the same moment
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with from_file(sample.config, db=db_url, index=False) as root:
        run = root.get_run("TS_0003")
        for user in ("procA", "procB"):
            got = sorted((int(p.session_id), len(p.points)) for p in run.get_picks(user_id=user))
            assert got == [(i, i) for i in range(1, 7)]
        with root.catalog.engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM picks WHERE user_id IN ('procA', 'procB')")).scalar()
        assert n == 12
        report = root.catalog.index()  # the files and the catalog agree
        assert (report.added, report.changed, report.removed) == (0, 0, 0)


# ------------------------------------------------------------------------------------------------
# no directory listing on the read paths


def test_read_paths_list_no_directories(root: CopickRoot, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {}

    def counting(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)

        return wrapper

    local = fsspec.implementations.local.LocalFileSystem
    for owner, attr in (
        (os, "scandir"),
        (os, "listdir"),
        (os, "walk"),
        (glob, "glob"),
        (glob, "iglob"),
        (Root, "walk"),
        (local, "ls"),
        (local, "find"),
        (local, "glob"),
        (local, "walk"),
    ):
        monkeypatch.setattr(owner, attr, counting(f"{getattr(owner, '__name__', owner)}.{attr}", getattr(owner, attr)))
    root.refresh()
    seen = 0
    for run in root.runs:
        seen += len(run.picks) + len(run.meshes) + len(run.segmentations)
        seen += len(run.get_picks(user_id="alice")) + len(run.get_segmentations(voxel_size=10))
        seen += len(run.user_picks()) + len(run.tool_meshes())
        for vs in run.voxel_spacings:
            for tomo in vs.tomograms:
                seen += len(tomo.features) + (tomo.get_features("sobel") is not None)
            seen += len(vs.get_tomograms("wbp"))
    assert root.get_run("TS_0002") is not None and root.get_run("missing") is None
    seen += sum(o.read_only + o.has_density_map() for o in root.pickable_objects)
    assert seen > 100
    assert calls == {}, f"read paths listed directories: {calls}"
    # The instrumentation does see listings: an index walks the trees.
    root.refresh(index=True)
    assert calls.get("os.scandir", 0) > 0

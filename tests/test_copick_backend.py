"""The catalog as a copick backend, against the copick package installed here (1.31 or 2.x), on real databases.

* ``CatalogRoot`` and everything under it are copick's own classes (isinstance holds down the tree);
* listings equal ``CopickRootFSSpec``'s on a copick-written project and on the sample project;
* what we write copick reads back, and what copick writes behind our back shows up on refresh;
* write-through is all-or-nothing: a failing catalog write (an SQL trigger) leaves no file behind and
  restores previous content; a failing file write leaves no row; static entities refuse writes as in copick;
* the seed's spellings (``new_pick``, ``new_mesh`` and ``new_segmentation`` in either order) still work;
* two processes writing different picks at once both land;
* the read paths never list a directory or glob (os/fsspec listing calls counted by wrapping them);
* roots pickle without their database connections, and opening one prints nothing.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

copick = pytest.importorskip("copick", reason="the copick backend needs copick (pip install 'copick-catalog[copick]')")
import fsspec.implementations.local  # noqa: E402
import trimesh  # noqa: E402
from copick.impl.filesystem import CopickRootFSSpec  # noqa: E402
from copick.models import CopickPicks, CopickRoot, CopickRun, CopickSegmentation, CopickTomogram  # noqa: E402

from copick_catalog import CatalogRoot, from_file  # noqa: E402
from copick_catalog.errors import CatalogError  # noqa: E402
from copick_catalog.index.roots import Root  # noqa: E402
from copick_catalog.sample import SampleSummary  # noqa: E402
from tests.conftest import age_tree  # noqa: E402
from tests.copick_env import SCRIPTS_DIR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def copick_written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project written by the copick installed here (its own zarr format), never written to by tests."""
    out = tmp_path_factory.mktemp("copick_written")
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS_DIR / "write_project.py"), str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    config = Path(proc.stdout.strip().splitlines()[-1])
    age_tree(config.parent)
    return config


def copy_project(config: Path, dst: Path) -> Path:
    """A private copy of a project whose config names absolute roots."""
    shutil.copytree(config.parent, dst, symlinks=True)
    new = dst / config.name
    new.write_text(config.read_text().replace(str(config.parent), str(dst)))
    age_tree(dst)
    return new


@pytest.fixture
def root(sample: SampleSummary, db_url: str) -> Iterator[CatalogRoot]:
    with from_file(sample.config, db=db_url) as r:
        yield r


def _shape(entity: Any) -> tuple[list[int] | None, str | None]:
    try:
        arr = entity.numpy()
    except Exception:
        return None, None
    return [int(s) for s in arr.shape], str(arr.dtype)


def listing(root: Any) -> dict[str, Any]:
    """Everything a copick user sees of a project, through copick's public API only."""
    runs: dict[str, Any] = {}
    for run in root.runs:
        vss = {}
        for vs in run.voxel_spacings:
            vss[f"{vs.voxel_size:.3f}"] = sorted(
                (t.tomo_type, t.read_only, sorted((f.feature_type, f.read_only) for f in t.features))
                for t in vs.tomograms
            )
        meshes = []
        for m in run.meshes:
            geoms = list(m.mesh.geometry.values()) if hasattr(m.mesh, "geometry") else [m.mesh]
            meshes.append(
                (m.user_id, m.session_id, m.pickable_object_name, m.read_only, sum(len(g.vertices) for g in geoms))
            )
        runs[run.name] = {
            "voxel_spacings": vss,
            "picks": sorted(
                (p.user_id, p.session_id, p.pickable_object_name, p.read_only, len(p.points)) for p in run.picks
            ),
            "meshes": sorted(meshes),
            "segmentations": sorted(
                (s.voxel_size, s.user_id, s.session_id, s.name, s.is_multilabel, s.read_only, *_shape(s))
                for s in run.get_segmentations()
            ),
            "instance": sorted(
                (s.voxel_size, s.user_id, s.name, s.read_only) for s in run.get_segmentations(is_instance=True)
            ),
            "panoptic": sorted(
                (s.voxel_size, s.user_id, s.name, s.read_only) for s in run.get_segmentations(is_panoptic=True)
            ),
            "filaments": sorted((f.user_id, f.session_id, f.pickable_object_name, f.read_only) for f in run.filaments),
        }
    objects = sorted((o.name, o.is_particle, o.label, o.read_only) for o in root.pickable_objects)
    return json.loads(json.dumps({"runs": runs, "objects": objects}, default=str))


def copick_root(config: Path) -> CopickRootFSSpec:
    return copick.from_file(str(config))


def table_rows(root: CatalogRoot, table: str) -> set[tuple]:
    with root.catalog.engine.connect() as conn:
        return set(conn.execute(sa.text(f"SELECT layer, path FROM {table}")).all())


def add_failing_trigger(root: CatalogRoot, table: str, event: str = "INSERT") -> None:
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


def drop_failing_trigger(root: CatalogRoot, table: str, event: str = "INSERT") -> None:
    name = f"cc_fail_{table}_{event.lower()}"
    with root.catalog.engine.connect() as conn:
        suffix = "" if conn.dialect.name == "sqlite" else f" ON {table}"
        conn.exec_driver_sql(f"DROP TRIGGER {name}{suffix}")
        conn.commit()


def hidden_leftovers(base: Path) -> list[Path]:
    """Staging or backup names our writer uses; none may survive a finished call."""
    return [p for p in base.rglob(".*") if any(t in p.name for t in (".new-", ".bak-", ".tmp"))]


# ------------------------------------------------------------------------------------------------
# copick's classes, copick's answers


def test_catalog_root_is_copicks_own_class(root: CatalogRoot) -> None:
    assert isinstance(root, CopickRoot) and isinstance(root, CopickRootFSSpec)
    run = root.runs[0]
    assert isinstance(run, CopickRun)
    assert all(isinstance(p, CopickPicks) for p in run.picks) and run.picks
    assert all(isinstance(s, CopickSegmentation) for s in run.segmentations) and run.segmentations
    tomos = [t for vs in run.voxel_spacings for t in vs.tomograms]
    assert tomos and all(isinstance(t, CopickTomogram) for t in tomos)
    assert root.catalog.picks(run=run.name)  # the same project, in the catalog's own API


def test_listing_matches_copick_on_copick_written_project(copick_written: Path, db_url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copick warns about its own deprecations
        with from_file(copick_written, db=db_url) as root:
            assert listing(root) == listing(copick_root(copick_written))


def test_listing_matches_copick_on_sample(sample: SampleSummary, db_url: str) -> None:
    with from_file(sample.config, db=db_url) as root:
        assert listing(root) == listing(copick_root(sample.config))


def test_queries_answer_like_copick(root: CatalogRoot, sample: SampleSummary) -> None:
    ref = copick_root(sample.config)
    assert [r.name for r in root.runs] == [r.name for r in ref.runs]
    assert root.get_run("nope") is None
    run, rrun = root.get_run("TS_0001"), ref.get_run("TS_0001")
    assert run is root.get_run("TS_0001") and run in root.runs
    assert sum(len(p.points) for r in root.runs for p in r.picks) == sample.points

    def key(items: list[Any]) -> list[tuple[str, str, str]]:
        return sorted((p.user_id, p.session_id, p.pickable_object_name) for p in items)

    for kwargs in (
        {"object_name": "ribosome"},
        {"object_name": ["ribosome", "proteasome"], "user_id": ("alice", "bob")},
        {"user_id": "bob", "session_id": "2"},
    ):
        assert key(run.get_picks(**kwargs)) == key(rrun.get_picks(**kwargs))
    assert key(run.tool_picks()) == key(rrun.tool_picks()) and all(p.read_only for p in run.tool_picks())
    assert key(run.user_picks()) == key(rrun.user_picks())
    pos, tr = run.get_picks(user_id="alice", object_name="ribosome")[0].numpy()
    assert pos.shape[1] == 3 and tr.shape[1:] == (4, 4) and np.allclose(tr, np.eye(4))
    vs = run.get_voxel_spacing(10)
    assert vs is not None and run.get_voxel_spacing(20) is None
    assert sorted(t.tomo_type for t in vs.tomograms) == ["denoised", "wbp"]
    wbp = vs.get_tomograms("wbp")[0]
    assert wbp.read_only and [f.feature_type for f in wbp.features] == ["sobel"]
    assert wbp.numpy(zarr_group="2").shape == (8, 8, 8)
    assert np.array_equal(wbp.numpy(), ref.get_run("TS_0001").get_voxel_spacing(10).get_tomograms("wbp")[0].numpy())
    assert root.get_run("TS_0005").get_voxel_spacing(10).tomograms == []
    assert sorted(m.user_id for m in run.meshes) == ["alice", "membrain"]
    # random access before the runs are listed, as copick's map_runs does it in workers
    with from_file(sample.config, db=root.catalog.db_url, index=False) as fresh:
        assert fresh._runs is None and fresh.get_run("TS_0002").name == "TS_0002" and fresh._runs is None
        assert fresh.get_run("TS_9999") is None
        assert fresh.get_run("TS_0002").get_voxel_spacing(10.0) is not None


# ------------------------------------------------------------------------------------------------
# round trips with copick


def test_we_write_copick_reads(copick_written: Path, tmp_path: Path) -> None:
    config = copy_project(copick_written, tmp_path / "project")
    rng = np.random.default_rng(7)
    db = str(tmp_path / "catalog.sqlite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = from_file(config, db=db)
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
        run.new_segmentation("dave", "1", 10, "labels", True).from_numpy(multi)  # the seed's order
        vs = run.new_voxel_spacing(5)
        volume = rng.normal(size=(16, 16, 16)).astype(np.float32)
        tomo = vs.new_tomogram("wbp")
        tomo.from_numpy(volume, levels=2)
        tomo.new_features("sobel")
        root.get_object("ribosome").from_numpy(np.full((8, 8, 8), 0.25, np.float32), 10.0)
        new_run = root.new_run("TS_900")
        new_run.new_picks("ribosome", "3", user_id="erin").from_numpy(np.array([[1.0, 2.0, 3.0]]))
        root.close()
    assert hidden_leftovers(config.parent) == []

    ref = copick_root(config)
    r = ref.get_run("TS_001")
    dave = r.get_picks(user_id="dave", object_name="ribosome")[0]
    p2, t2 = dave.numpy()
    assert np.allclose(p2, pos) and np.allclose(t2, tr)
    assert [p.instance_id for p in dave.points] == list(range(6))
    assert np.allclose([p.score for p in dave.points], np.linspace(0.1, 0.6, 6))
    assert r.get_picks(user_id="dave", object_name="proteasome")[0].points == []
    geoms = list(r.get_meshes(user_id="dave")[0].mesh.geometry.values())
    assert (sum(len(g.vertices) for g in geoms), sum(len(g.faces) for g in geoms)) == (162, 320)
    seg = r.get_segmentations(user_id="dave", name="membrane")[0]
    assert seg.numpy().sum() == labels.sum() and seg.numpy().dtype == np.uint8
    assert r.get_segmentations(user_id="dave", name="labels", is_multilabel=True)[0].numpy().sum() == multi.sum()
    five = r.get_voxel_spacing(5.0).get_tomograms("wbp")[0]
    assert not five.read_only and five.numpy().sum() == pytest.approx(float(volume.astype(np.float64).sum()), rel=1e-5)
    assert five.numpy(zarr_group="1").shape == (8, 8, 8)
    assert [f.feature_type for f in five.features] == ["sobel"]
    assert ref.get_object("ribosome").numpy().sum() == pytest.approx(128.0)
    assert [len(p.points) for p in ref.get_run("TS_900").picks] == [1]
    # ... and a fresh catalog of the result lists exactly what copick lists
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with from_file(config, db=str(tmp_path / "fresh.sqlite")) as again:
            assert listing(again) == listing(ref)
        report = from_file(config, db=db, index=False).catalog.index()
    assert (report.added, report.changed, report.removed, report.errors) == (0, 0, 0, 0)


def test_copick_writes_behind_our_back_show_on_refresh(sample: SampleSummary, tmp_path: Path) -> None:
    with from_file(sample.config, db=str(tmp_path / "catalog.sqlite"), index=True) as root:
        run = root.get_run("TS_0001")
        assert run.get_picks(user_id="alice") and not run.get_picks(user_id="carol", session_id="5")
        other = copick_root(sample.config)  # another program, through copick itself
        orun = other.get_run("TS_0001")
        for p in orun.get_picks(user_id="alice"):
            p.delete()
        orun.new_picks("ribosome", "5", user_id="carol").from_numpy(np.array([[1.0, 2.0, 3.0], [4, 5, 6]]))
        assert run.get_picks(user_id="alice")  # until refresh, the catalog as it was
        root.refresh()
        run = root.get_run("TS_0001")
        assert run.get_picks(user_id="alice") == []
        assert len(run.get_picks(user_id="carol", session_id="5")[0].points) == 2
        assert listing(root) == listing(copick_root(sample.config))


# ------------------------------------------------------------------------------------------------
# write-through: all or nothing


def test_catalog_failure_undoes_the_file(root: CatalogRoot, sample: SampleSummary) -> None:
    overlay = sample.config.parent / "overlay"
    run = root.get_run("TS_0002")
    picks_before, segs_before = table_rows(root, "picks"), table_rows(root, "segmentations")

    add_failing_trigger(root, "picks")  # a new pick file: the insert fails -> no file, no row
    with pytest.raises(CatalogError, match=r"injected failure.*file change was undone"):
        run.new_picks("ribosome", "9", user_id="dave")
    assert not (overlay / "ExperimentRuns/TS_0002/Picks/dave_9_ribosome.json").exists()
    assert table_rows(root, "picks") == picks_before and run.get_picks(user_id="dave", session_id="9") == []
    alice = run.get_picks(user_id="alice", object_name="ribosome")[0]  # storing over an existing file
    path = Path(alice.path)
    before = path.read_bytes()
    with pytest.raises(CatalogError):
        alice.from_numpy(np.zeros((2, 3)))
    assert path.read_bytes() == before
    drop_failing_trigger(root, "picks")

    add_failing_trigger(root, "picks", "DELETE")  # deleting: the row cannot go -> the file comes back
    with pytest.raises(CatalogError):
        alice.delete()
    assert path.read_bytes() == before
    drop_failing_trigger(root, "picks", "DELETE")

    add_failing_trigger(root, "segmentations")  # a zarr group: a new one disappears, a rewritten one comes back
    with pytest.raises(CatalogError):
        run.new_segmentation(10.0, "ribosome", "9", user_id="dave")
    assert not list((overlay / "ExperimentRuns/TS_0002/Segmentations").glob("*dave*"))
    seg = run.get_segmentations(user_id="alice")[0]
    old = seg.numpy()
    with pytest.raises(CatalogError):
        seg.from_numpy(np.full(old.shape, 1, np.uint8))
    assert np.array_equal(seg.numpy(), old)
    assert table_rows(root, "segmentations") == segs_before
    drop_failing_trigger(root, "segmentations")

    add_failing_trigger(root, "runs")  # a new run: its .meta marker goes away with the failed row
    with pytest.raises(CatalogError):
        root.new_run("TS_NEW")
    assert not (overlay / "ExperimentRuns/TS_NEW").exists() and root.get_run("TS_NEW") is None
    drop_failing_trigger(root, "runs")

    assert hidden_leftovers(sample.config.parent) == []
    # with the database healthy again the same calls work, and a full index finds nothing to fix
    root.refresh()
    run = root.get_run("TS_0002")
    run.new_picks("ribosome", "9", user_id="dave").from_numpy(np.ones((3, 3)))
    run.get_segmentations(user_id="alice")[0].from_numpy(np.full(old.shape, 1, np.uint8))
    assert root.new_run("TS_NEW").name == "TS_NEW"
    report = root.catalog.index()
    assert (report.added, report.changed, report.removed, report.errors) == (0, 0, 0, 0)


def test_file_failure_touches_no_catalog_row(root: CatalogRoot, sample: SampleSummary) -> None:
    overlay = sample.config.parent / "overlay"
    run = root.get_run("TS_0005")
    before = {t: table_rows(root, t) for t in ("picks", "meshes", "segmentations", "tomograms")}
    # A plain file where the directory should be: the overlay write fails like on a full or broken disk.
    # (chmod cannot stand in: the tests may run as root, who ignores permission bits.)
    (overlay / "ExperimentRuns/TS_0005/Meshes").write_text("not a directory")
    (overlay / "ExperimentRuns/TS_0005/Segmentations").write_text("not a directory")
    with pytest.raises(OSError):
        run.new_mesh(object_name="membrane", session_id="1", user_id="dave")
    with pytest.raises((OSError, ValueError)):
        run.new_segmentation(10.0, "membrane", "1", user_id="dave")
    assert {t: table_rows(root, t) for t in before} == before
    assert hidden_leftovers(sample.config.parent) == []


def test_static_entities_refuse_writes(root: CatalogRoot, sample: SampleSummary) -> None:
    static = sample.config.parent / "static"
    snapshot = {p: p.stat().st_mtime_ns for p in static.rglob("*") if p.is_file()}
    run = root.get_run("TS_0001")
    tool = run.get_picks(user_id="pytom", object_name="ribosome")[0]
    assert tool.read_only and tool.from_tool
    for action in (lambda: tool.from_numpy(np.zeros((1, 3))), tool.store, tool.delete):
        with pytest.raises(PermissionError):
            action()
    with pytest.raises(ValueError, match="already exist"):
        run.new_picks("ribosome", "0", user_id="pytom")
    assert run.new_picks("ribosome", "0", user_id="pytom", exist_ok=True).read_only
    wbp = run.get_voxel_spacing(10).get_tomograms("wbp")[0]
    with pytest.raises(PermissionError):
        wbp.delete()
    assert {p: p.stat().st_mtime_ns for p in static.rglob("*") if p.is_file()} == snapshot


# ------------------------------------------------------------------------------------------------
# names and argument orders


def test_names_copick_could_not_read_back_are_refused(root: CatalogRoot, sample: SampleSummary) -> None:
    run = root.get_run("TS_0003")
    with pytest.warns(UserWarning):
        p = run.new_picks("ribosome", "my session", user_id="dr_who")  # copick sanitises, with a warning
    assert (p.user_id, p.session_id) == ("dr-who", "my-session")
    assert root.catalog.picks(user_id="dr-who", session_id="my-session")
    root.user_id = "a_b"  # copick does not validate this assignment, and would write a_b_1_... .json
    with pytest.raises(CatalogError, match="copick would read it back wrongly"):
        run.new_picks("ribosome", "1")
    assert not list((sample.config.parent / "overlay").rglob("a_b_*"))
    root.user_id = None
    assert hidden_leftovers(sample.config.parent) == []


def test_seed_argument_orders(root: CatalogRoot) -> None:
    run = root.get_run("TS_0004")
    seed = run.new_mesh("dave", "1", "membrane")
    copicks = run.new_mesh("membrane", "2", "dave")
    keywords = run.new_mesh(user_id="dave", session_id="3", object_name="membrane")
    mixed = run.new_mesh("dave", "4", object_name="membrane")
    assert [m.path.rsplit("/", 1)[1] for m in (seed, copicks, keywords, mixed)] == [
        "dave_1_membrane.glb",
        "dave_2_membrane.glb",
        "dave_3_membrane.glb",
        "dave_4_membrane.glb",
    ]
    with pytest.raises(TypeError, match="ambiguous"):
        run.new_mesh("ribosome", "1", "membrane")
    assert run.new_pick("dave", "1", "ribosome").user_id == "dave"
    a = run.new_segmentation(10.0, "ribosome", "1", False, "dave")  # copick's
    b = run.new_segmentation("dave", "2", 10, "ribosome")  # the seed's
    c = run.new_segmentation(voxel_size=10, name="cells", session_id="3", is_multilabel=True, user_id="dave")
    assert [s.path.rsplit("/", 1)[1] for s in (a, b, c)] == [
        "10.000_dave_1_ribosome.zarr",
        "10.000_dave_2_ribosome.zarr",
        "10.000_dave_3_cells-multilabel.zarr",
    ]
    inst = run.new_segmentation(10.0, "ribosome", "5", user_id="dave", is_instance=True)
    assert "/InstanceSegmentations/" in inst.path and inst.is_instance
    assert run.new_segmentation("dave", "1", 10.0, "ribosome", exist_ok=True).path == a.path
    assert {(s.user_id, s.session_id) for s in root.catalog.segmentations(run="TS_0004", user_id="dave")} == {
        ("dave", "1"),
        ("dave", "2"),
        ("dave", "3"),
        ("dave", "5"),
    }


def test_new_picks_never_overwrites_a_file_written_outside(root: CatalogRoot, sample: SampleSummary) -> None:
    run = root.get_run("TS_0006")
    assert not run.get_picks(user_id="zoe")  # listed before someone else writes a file
    foreign = sample.config.parent / "overlay/ExperimentRuns/TS_0006/Picks/zoe_1_ribosome.json"
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
    with pytest.raises(ValueError, match="already exist"):
        run.new_picks("ribosome", "1", user_id="zoe")
    got = run.new_picks("ribosome", "1", user_id="zoe", exist_ok=True)
    assert len(got.points) == 1 and json.loads(foreign.read_text())["points"]


# ------------------------------------------------------------------------------------------------
# concurrency


WRITER = """
import os, sys, time
import numpy as np
from copick_catalog import from_file

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
            assert sorted((int(p.session_id), len(p.points)) for p in run.get_picks(user_id=user)) == [
                (i, i) for i in range(1, 7)
            ]
        report = root.catalog.index()  # the files and the catalog agree
        assert (report.added, report.changed, report.removed) == (0, 0, 0)


# ------------------------------------------------------------------------------------------------
# no directory listing on the read paths; pickling; quiet


def test_read_paths_list_no_directories(root: CatalogRoot, monkeypatch: pytest.MonkeyPatch) -> None:
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
    fresh = CatalogRoot.from_file(str(root._config_path), db=root.catalog.db_url, index=False)
    seen = 0
    for run in fresh.runs:
        seen += len(run.picks) + len(run.meshes) + len(run.segmentations) + len(run.filaments)
        seen += len(run.get_picks(user_id="alice")) + len(run.get_segmentations(voxel_size=10.0))
        seen += len(run.user_picks()) + len(run.tool_meshes())
        for vs in run.voxel_spacings:
            for tomo in vs.tomograms:
                seen += len(tomo.features) + (tomo.get_features("sobel") is not None)
            seen += len(vs.get_tomograms("wbp"))
        run.refresh()
    assert fresh.get_run("TS_0002") is not None and fresh.get_run("missing") is None
    seen += sum(o.read_only for o in fresh.pickable_objects)
    assert seen > 100
    assert calls == {}, f"read paths listed directories: {calls}"
    fresh.catalog.index()  # the instrumentation does see listings: an index walks the trees
    assert calls.get("os.scandir", 0) > 0


def test_roots_pickle_without_their_database(root: CatalogRoot) -> None:
    names = [r.name for r in root.runs]
    picks = len(root.get_run("TS_0001").picks)
    clone = pickle.loads(pickle.dumps(root))
    assert clone._catalog is None  # no engine, session or lock travels
    assert [r.name for r in clone.runs] == names and len(clone.get_run("TS_0001").picks) == picks
    assert clone.catalog.db_url == root.catalog.db_url  # reconnects on first use
    run = pickle.loads(pickle.dumps(root.get_run("TS_0002")))
    assert run.name == "TS_0002" and isinstance(run.root, CatalogRoot) and run.picks
    clone.close()


def test_opening_a_root_prints_nothing(sample: SampleSummary, tmp_path: Path) -> None:
    code = (
        "import copick, copick.impl.filesystem\nfrom copick_catalog import from_file\n"
        f"r = from_file({str(sample.config)!r}, db={str(tmp_path / 'quiet.sqlite')!r})\n"
        "n = len(r.runs)\nr.refresh()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_catalog_root_built_like_copicks(
    sample: SampleSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CatalogRoot(config)`` from a copick config model, as code that builds ``CopickRootFSSpec(config)`` does."""
    from copick.impl.filesystem import CopickConfigFSSpec

    monkeypatch.setenv("COPICK_CATALOG_DB", str(tmp_path / "env.sqlite"))
    config = CopickConfigFSSpec(**json.loads(sample.config.read_text()))
    root = CatalogRoot(config)
    assert root.catalog.db_url.endswith("env.sqlite") and len(root.runs) == sample.runs
    monkeypatch.delenv("COPICK_CATALOG_DB")
    monkeypatch.setenv("COPICK_CATALOG_CACHE", str(tmp_path / "cache"))
    second = CatalogRoot(config)
    assert str(tmp_path / "cache") in second.catalog.db_url and len(second.runs) == sample.runs

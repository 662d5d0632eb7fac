"""Query helpers, find(), aggregates, .open() payloads and the query CLI, on real catalogs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import trimesh
import zarr

from copick_catalog import Catalog
from copick_catalog.catalog.schema import Pick, Point, Run, Tomogram
from copick_catalog.errors import CatalogError, StaleRowError
from copick_catalog.formats.picks import PickFile
from copick_catalog.sample import SampleSummary, pick_json
from tests.conftest import run_object_counts
from tests.test_copick_compat import copick_project, copick_view  # noqa: F401 - module fixture reused


@pytest.fixture
def cat(sample: SampleSummary, db_url: str) -> Any:
    c = Catalog.open(sample.config, db=db_url)
    c.index()
    yield c
    c.close()


def _walk_picks(sample: SampleSummary) -> list[dict[str, Any]]:
    out = []
    for layer in ("static", "overlay"):
        for p in (sample.config.parent / layer).glob("ExperimentRuns/*/Picks/*.json"):
            u, s, o = p.stem.split("_", 2)
            out.append(
                {
                    "run": p.parts[-3],
                    "user": u,
                    "session": s,
                    "object": o,
                    "layer": layer,
                    "n": len(json.loads(p.read_text())["points"]),
                }
            )
    return out


def test_helpers_filter_like_the_files(cat: Catalog, sample: SampleSummary) -> None:
    files = _walk_picks(sample)
    alice = cat.picks(user_id="alice", object_name="ribosome")
    assert sorted((p.run.name, p.n_points) for p in alice) == sorted(
        (f["run"], f["n"]) for f in files if f["user"] == "alice" and f["object"] == "ribosome"
    )
    several = cat.picks(user_id=["alice", "bob"], run=["TS_0001", "TS_0002"])
    assert len(several) == sum(1 for f in files if f["user"] in ("alice", "bob") and f["run"] in ("TS_0001", "TS_0002"))
    assert {p.layer for p in cat.picks(session_id="0")} == {"static"}
    assert [r.name for r in cat.runs(name="TS_0003")] == ["TS_0003"]
    assert {t.tomo_type for t in cat.tomograms(voxel_size=10)} == {"wbp", "denoised"}
    assert cat.tomograms(voxel_size=20.0) == []
    feats = cat.features(feature_type="sobel")
    assert feats and all(f.tomogram is not None and f.tomogram.tomo_type == "wbp" for f in feats)
    assert {s.name for s in cat.segmentations(is_multilabel=True)} == {"prediction"}
    assert len(cat.voxel_spacings(run="TS_0001")) == 1
    assert {m.n_faces for m in cat.meshes(user_id="membrain")} == {12}  # the box


def test_find_adds_joins_and_explains_bad_columns(cat: Catalog, sample: SampleSummary) -> None:
    rows = cat.find(Pick, Pick.user_id == "alice", Run.name.like("TS_001%"))
    assert rows and all(p.user_id == "alice" and p.run.name.startswith("TS_001") for p in rows)
    pts = cat.find(Point, Point.x < 50, Pick.object_name == "ribosome", Run.name == "TS_0001")
    assert pts and all(p.x < 50 and p.pick.object_name == "ribosome" for p in pts)
    tomos = cat.find(Tomogram, Run.name == "TS_0001")
    assert {t.tomo_type for t in tomos} == {"wbp", "denoised"}
    assert len(cat.find(Pick, user_id=["alice", "bob"], object_name="ribosome")) == 2 * sample.runs
    with pytest.raises(CatalogError, match=r"no column 'usr'.*user_id"):
        cat.find(Pick, usr="alice")
    with pytest.raises(AttributeError, match=r"no column or attribute 'usr'.*user_id"):
        _ = Pick.usr  # type: ignore[attr-defined]


def test_aggregates_match_the_files(cat: Catalog, sample: SampleSummary) -> None:
    files = _walk_picks(sample)
    summary = {(r["object_name"], r["user_id"]): (r["picks"], r["points"]) for r in cat.pick_summary()}
    expect: dict[tuple[str, str], list[int]] = {}
    for f in files:
        e = expect.setdefault((f["object"], f["user"]), [0, 0])
        e[0] += 1
        e[1] += f["n"]
    assert summary == {k: tuple(v) for k, v in expect.items()}
    by_session = {r["session_id"]: r["points"] for r in cat.points_by_session()}
    assert sum(by_session.values()) == sample.points
    have = {f["run"] for f in files if f["object"] == "proteasome"}
    lacking = cat.runs_lacking("proteasome")
    assert lacking and set(lacking) == {r.name for r in cat.runs()} - have
    coverage = {r["object_name"]: r for r in cat.object_coverage()}
    assert set(coverage) == set(cat.config.object_names)
    for obj, row in coverage.items():
        runs_with = {f["run"] for f in files if f["object"] == obj}
        assert row == {
            "object_name": obj,
            "runs_with_picks": len(runs_with),
            "runs_lacking": sample.runs - len(runs_with),
            "picks": sum(1 for f in files if f["object"] == obj),
            "points": sum(f["n"] for f in files if f["object"] == obj),
        }
    assert coverage["proteasome"]["runs_lacking"] == len(lacking) and coverage["membrane"]["picks"] == 0
    assert {(r["tomo_type"], r["runs"]) for r in cat.tomogram_types()} == {("wbp", 2), ("denoised", 2)}
    df = cat.points_table(user_id="alice", object_name="ribosome")
    assert len(df) == expect[("ribosome", "alice")][1]
    assert list(df.columns) == list(cat.POINT_COLUMNS)
    table = cat.points_table(run="TS_0001", format="arrow")
    assert table.num_rows == sum(f["n"] for f in files if f["run"] == "TS_0001")
    assert table.column_names == list(cat.POINT_COLUMNS)
    # every value, in file order, exactly as the files hold it
    from_files = []
    for p in sorted(cat.picks(run=["TS_0001", "TS_0002"]), key=lambda p: p.id):
        raw = json.loads((sample.config.parent / p.layer / p.path).read_text())
        from_files += [
            (
                p.run_name,
                p.object_name,
                p.user_id,
                p.session_id,
                p.layer,
                pt["location"]["x"],
                pt["location"]["y"],
                pt["location"]["z"],
                pt["instance_id"],
                pt["score"],
            )
            for pt in raw["points"]
        ]
    arrow = cat.points_table(run=["TS_0001", "TS_0002"], format="arrow")
    assert list(zip(*(arrow.column(c).to_pylist() for c in cat.POINT_COLUMNS), strict=True)) == from_files
    frame = cat.points_table(run=["TS_0001", "TS_0002"])
    assert [tuple(r) for r in frame.itertuples(index=False)] == from_files
    assert frame["user_id"].dtype == "category" and set(frame["user_id"].cat.categories) == {
        "alice",
        "bob",
        "carol",
        "pytom",
    }
    records = cat.points_table(run=["TS_0001", "TS_0002"], format="records")
    assert [tuple(r[c] for c in cat.POINT_COLUMNS) for r in records] == from_files
    with cat.engine.begin() as conn:  # picks whose packed copy is missing are read from the points rows
        conn.execute(
            sa.text(
                "DELETE FROM packed_points WHERE pick_id IN (SELECT id FROM picks WHERE run_name = "
                "'TS_0002' AND user_id IN ('alice', 'pytom'))"
            )
        )
    fallback = cat.points_table(run=["TS_0001", "TS_0002"], format="arrow")
    assert list(zip(*(fallback.column(c).to_pylist() for c in cat.POINT_COLUMNS), strict=True)) == from_files
    assert (
        len(cat.points_table(user_id="nobody")) == 0
        and cat.points_table(user_id="nobody", format="arrow").num_rows == 0
    )
    with pytest.raises(CatalogError, match="unknown format 'xls'"):
        cat.points_table(format="xls")


def _anti_join_lacking(cat: Catalog, obj: str) -> list[str]:
    """The same question asked of ``picks`` directly, as the summary-free reference answer."""
    have = {p.run_name for p in cat.picks(object_name=obj)}
    return sorted(r.name for r in cat.runs() if r.name not in have)


def test_runs_lacking_follows_files_and_config(sample: SampleSummary, db_url: str) -> None:
    project = sample.config.parent
    picks_dir = project / "overlay" / "ExperimentRuns" / "{run}" / "Picks"
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        lacking = cat.runs_lacking("proteasome")
        assert lacking and lacking == _anti_join_lacking(cat, "proteasome")
        run = lacking[0]
        new = Path(str(picks_dir).format(run=run)) / "dave_7_proteasome.json"
        new.write_text(
            pick_json("proteasome", "dave", "7", run, np.array([[1.0, 2.0, 3.0]]), np.array([0]), np.array([1.0]))
        )
        cat.index()
        assert run not in cat.runs_lacking("proteasome")
        assert run in cat.runs_lacking("proteasome", user_id="alice")  # by alice: still none
        assert cat.runs_lacking("proteasome") == _anti_join_lacking(cat, "proteasome")
        assert (run, "proteasome", 1, 1) in run_object_counts(cat.engine)
        new.unlink()
        fresh = project / "overlay" / "ExperimentRuns" / "TS_9999" / "Picks" / "alice_1_ribosome.json"
        fresh.parent.mkdir(parents=True)
        fresh.write_text(pick_json("ribosome", "alice", "1", "TS_9999", np.zeros((2, 3)), np.arange(2), np.ones(2)))
        cat.index()
        assert run in cat.runs_lacking("proteasome")  # its only proteasome pick is gone
        assert "TS_9999" in cat.runs_lacking("proteasome") and "TS_9999" not in cat.runs_lacking("ribosome")
        run_object_counts(cat.engine)

    config = json.loads(sample.config.read_text())
    config["pickable_objects"] = [o for o in config["pickable_objects"] if o["name"] != "proteasome"] + [
        {"name": "actin", "is_particle": False, "label": 9}
    ]
    sample.config.write_text(json.dumps(config))
    with Catalog.open(sample.config, db=db_url) as cat:  # the config changed: counts follow at once
        everything = [r.name for r in cat.runs()]
        assert cat.runs_lacking("actin") == sorted(everything)
        # no longer configured, so answered from the picks themselves
        assert cat.runs_lacking("proteasome") == _anti_join_lacking(cat, "proteasome")
        with pytest.raises(CatalogError, match=r"no pickable object 'no-such-object'.*objects are: actin"):
            cat.runs_lacking("no-such-object")  # a typo is an error, not "every run lacks it"
        assert {obj for _r, obj, _n, _p in run_object_counts(cat.engine)} == {
            "ribosome",
            "apo-ferritin",
            "membrane",
            "actin",
        }


def test_rows_held_across_another_writer_show_current_values(sample: SampleSummary, db_url: str) -> None:
    """Rows a caller still holds are refreshed by the next query, even when another process changed them."""
    with Catalog.open(sample.config, db=db_url) as reader, Catalog.open(sample.config, db=db_url) as writer:
        reader.index()
        held = reader.picks(run="TS_0003", user_id="alice", object_name="ribosome")
        assert len(held) == 1 and held[0].n_points > 3
        path = sample.config.parent / "overlay" / held[0].path
        path.write_text(pick_json("ribosome", "alice", "1", "TS_0003", np.zeros((3, 3)), np.arange(3), np.ones(3)))
        writer.index()  # another catalog (process) indexes the change
        again = reader.picks(run="TS_0003", user_id="alice", object_name="ribosome")
        assert again[0] is held[0] and held[0].n_points == 3  # the same object, now current
        fresh = reader.picks(run="TS_0004", user_id="bob")  # rows nobody held load as usual
        assert fresh and all(p.user_id == "bob" and p.run_name == "TS_0004" for p in fresh)


def test_config_objects_change_while_indexing(sample: SampleSummary, db_url: str) -> None:
    """Re-opening with a config whose objects changed, while another catalog indexes new picks, neither
    fails nor leaves run_objects out of step with the picks and the objects configured last."""
    import threading

    base = json.loads(sample.config.read_text())
    extra = dict(base, pickable_objects=[*base["pickable_objects"], {"name": "actin", "is_particle": True, "label": 9}])
    variants = [sample.config.parent / "a.json", sample.config.parent / "b.json"]
    variants[0].write_text(json.dumps(extra))
    variants[1].write_text(json.dumps(base))
    errors: list[BaseException] = []
    picks_dir = sample.config.parent / "overlay" / "ExperimentRuns"
    with Catalog.open(sample.config, db=db_url) as indexer:
        indexer.index()

        def keep_indexing() -> None:
            try:
                for i in range(12):
                    run = f"TS_{i % 12 + 1:04d}"
                    (picks_dir / run / "Picks" / f"racer_{i}_ribosome.json").write_text(
                        pick_json("ribosome", "racer", str(i), run, np.ones((2, 3)), np.arange(2), np.ones(2))
                    )
                    indexer.index(scopes=[("overlay", f"ExperimentRuns/{run}/Picks")])
            except BaseException as exc:  # reported below, in the test thread
                errors.append(exc)

        t = threading.Thread(target=keep_indexing)
        t.start()
        for i in range(8):  # same project name and config path: the objects flip between the two variants
            sample.config.write_text(variants[i % 2].read_text())
            Catalog.open(sample.config, db=db_url).close()
        t.join(60)
    assert not errors, errors
    with Catalog.open(sample.config, db=db_url) as cat:
        counts = run_object_counts(cat.engine)  # equal to the picks, for the objects configured last
        assert {obj for _r, obj, _n, _p in counts} == set(cat.config.object_names)
        assert len(cat.picks(user_id="racer")) == 12


def test_open_returns_payloads(cat: Catalog, sample: SampleSummary) -> None:
    pick = cat.picks(run="TS_0001", user_id="alice", object_name="ribosome")[0]
    model = pick.open()
    assert isinstance(model, PickFile) and len(model.points) == pick.n_points
    raw = json.loads((sample.config.parent / "overlay" / pick.path).read_text())
    assert model.points[0].location.x == raw["points"][0]["location"]["x"]
    assert pick.points[0].x == raw["points"][0]["location"]["x"]  # the points table agrees with the file
    tomo = cat.tomograms(run="TS_0001", tomo_type="wbp")[0]
    group = tomo.open()
    assert isinstance(group, zarr.Group) and group["0"].shape == (32, 32, 32) and group["2"].shape == (8, 8, 8)
    assert group.read_only  # static rows open read-only
    assert zarr.open_group(tomo.zarr(), mode="r")["1"].shape == (16, 16, 16)
    seg = cat.segmentations(run="TS_0001", is_multilabel=True)[0]
    arr = seg.open()["0"][:]
    assert arr.dtype == np.uint8 and set(np.unique(arr)) <= {0, 2}
    feat = cat.features(run="TS_0001")[0]
    assert feat.open()["0"].shape == (32, 32, 32)
    mesh = cat.meshes(run="TS_0001", user_id="alice")[0].open()
    assert isinstance(mesh, trimesh.Scene) and len(next(iter(mesh.geometry.values())).faces) == 320


def test_open_refuses_stale_rows(cat: Catalog, sample: SampleSummary) -> None:
    pick = cat.picks(run="TS_0002", user_id="bob", object_name="ribosome")[0]
    path = sample.config.parent / "overlay" / pick.path
    data = json.loads(path.read_text())
    data["points"] = data["points"][:1]
    path.write_text(json.dumps(data))
    with pytest.raises(StaleRowError, match="changed since it was indexed"):
        pick.open()
    fresh = cat.refresh(pick)
    assert fresh is not None and fresh.n_points == 1 and len(fresh.open().points) == 1
    path.unlink()
    with pytest.raises(StaleRowError, match="vanished"):
        fresh.open()
    assert cat.refresh(fresh) is None


def test_rows_from_a_session_open_too(cat: Catalog) -> None:
    with cat.session() as s:
        pick = s.scalars(sa.select(Pick).where(Pick.n_points > 0).limit(1)).one()
        assert len(pick.open().points) == pick.n_points


def test_catalog_equals_copick_for_each_helper(
    copick_project: tuple[Path, dict[str, Any]],  # noqa: F811
    tmp_path: Path,
) -> None:
    config, listing = copick_project
    expected = copick_view(listing)
    with Catalog.open(config, db=str(tmp_path / "c.sqlite")) as cat:
        cat.index()
        assert {r.name for r in cat.runs()} == expected["runs"]
        assert {
            (p.run.name, p.user_id, p.session_id, p.object_name, p.n_points, p.layer) for p in cat.picks()
        } == expected["picks"]
        for user in ("alice", "ArtiaX"):
            assert {p.object_name for p in cat.picks(user_id=user)} == {e[3] for e in expected["picks"] if e[1] == user}
        assert {
            (t.voxel_spacing.run.name, t.voxel_spacing.voxel_size, t.tomo_type, t.layer) for t in cat.tomograms()
        } == expected["tomograms"]
        assert {
            (m.run.name, m.user_id, m.session_id, m.object_name, m.n_vertices, m.n_faces, m.layer) for m in cat.meshes()
        } == expected["meshes"]
        got_segs = {
            (s.run.name, s.kind, s.voxel_size, s.user_id, s.session_id, s.name, s.is_multilabel, s.layer)
            for s in cat.segmentations()
        }
        assert got_segs == {e[:8] for e in expected["segmentations"]}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "copick_catalog.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_cli_index_query_sql_stats(sample: SampleSummary, tmp_path: Path) -> None:
    cfg, db = str(sample.config), str(tmp_path / "cli.sqlite")
    out = cli("index", cfg, "--db", db, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["added"] > sample.pick_files
    out = cli("query", "picks", cfg, "--db", db, "--user", "alice", "--object", "ribosome", "--format", "json")
    rows = json.loads(out.stdout)
    assert len(rows) == sample.runs and {r["user_id"] for r in rows} == {"alice"}
    out = cli("query", "picks", cfg, "--db", db, "--run", "TS_0001", "--format", "csv")
    assert out.stdout.splitlines()[0].startswith("run,object_name,user_id") and "TS_0001" in out.stdout
    out = cli("sql", "SELECT count(*) AS n FROM picks", cfg, "--db", db, "--format", "json")
    assert json.loads(out.stdout) == [{"n": sample.pick_files}]
    out = cli("sql", "DELETE FROM picks", cfg, "--db", db)
    assert out.returncode == 2 and "SQL refused" in out.stderr and "Traceback" not in out.stderr
    out = cli("stats", cfg, "--db", db, "--format", "json")
    assert sum(r["points"] for r in json.loads(out.stdout)) == sample.points
    (sample.config.parent / "overlay/ExperimentRuns/TS_0002/Picks/bob_2_ribosome.json").unlink()
    assert cli("index", cfg, "--db", db).returncode == 0
    out = cli("query", "runs", cfg, "--db", db, "--lacking", "proteasome", "--format", "json")
    with Catalog.open(sample.config, db=db) as cat:
        assert [r["name"] for r in json.loads(out.stdout)] == cat.runs_lacking("proteasome") != []
    out = cli("query", "runs", cfg, "--db", db, "--lacking", "ribosome", "--user", "bob", "--format", "json")
    assert [r["name"] for r in json.loads(out.stdout)] == ["TS_0002"]
    out = cli("query", "runs", cfg, "--db", db, "--lacking", "ribosome", "--format", "json")
    assert json.loads(out.stdout) == []  # alice, carol and pytom still picked ribosomes there
    out = cli("query", "runs", cfg, "--db", db, "--user", "alice")
    assert out.returncode == 2 and "--lacking" in out.stderr
    out = cli("stats", cfg, "--db", db)
    assert out.returncode == 0 and "coverage per object" in out.stdout and "runs_lacking" in out.stdout
    cells = next(ln for ln in out.stdout.splitlines() if "proteasome" in ln and "│" in ln and ln.count("│") == 6)
    with Catalog.open(sample.config, db=db) as cat:
        lacking = len(cat.runs_lacking("proteasome"))
    assert [c.strip() for c in cells.split("│")[1:4]] == ["proteasome", str(sample.runs - lacking), str(lacking)]
    out = cli("index", str(tmp_path / "missing.json"), "--db", db)
    assert out.returncode == 2 and "config file not found" in out.stderr and "Traceback" not in out.stderr


def test_env_var_and_default_db_location(sample: SampleSummary, tmp_path: Path) -> None:
    with Catalog.open(sample.config) as cat:
        assert cat.db_url.endswith(f"{sample.config.parent}/copick_config.catalog.sqlite")
    os.environ["COPICK_CATALOG_DB"] = str(tmp_path / "env.sqlite")
    try:
        with Catalog.open(sample.config) as cat:
            assert cat.db_url.endswith("env.sqlite")
    finally:
        del os.environ["COPICK_CATALOG_DB"]
    assert time.time() > 0


def test_sample_script_writes_an_indexable_project(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_sample_project.py"
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            "--runs",
            "5",
            "--out",
            str(tmp_path / "p"),
            "--tomogram-runs",
            "1",
            "--size",
            "16",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    with Catalog.open(tmp_path / "p" / "copick_config.json", db=str(tmp_path / "c.sqlite")) as c:
        report = c.index()
        assert report.errors == 0 and len(c.runs()) == 5 and c.tomograms(tomo_type="wbp")

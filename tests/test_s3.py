"""Projects on S3 (a real S3 protocol server, moto, in its own process): indexing, request counts, ``.open()``.

Request counts come from the server's own log, so they are the HTTP requests that really happened.
Local files of the generated projects are aged by an hour first, as in a project nobody touched for
a while, so the racy-timestamp rule of the *local* overlay does not re-read them; S3 entries need no
such help (their ETag fingerprints are exact).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.catalog.schema import IndexErrorRow, IndexRun, Mesh, Pick, Project, Segmentation, Tomogram
from copick_catalog.errors import CatalogError, PayloadError, RootError, StaleRowError
from copick_catalog.formats import zarrio
from copick_catalog.index.roots import ListingStats, WalkSettings, open_root
from copick_catalog.index.roots import flat as storage_mod
from copick_catalog.sample import make_sample_project, pick_json
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.s3server import s3_server as s3_server  # the session fixture, imported so pytest finds it

pytestmark = pytest.mark.s3


def _age(root: Path, seconds: float = 3600) -> None:
    past = time.time() - seconds
    for d, _dirs, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(d, f), (past, past))


def _s3_project(
    server: S3Server,
    tmp_path: Path,
    *,
    runs: int = 12,
    tomogram_runs: int = 2,
    overlay_on_s3: bool = False,
    **extra: Any,
) -> tuple[Path, str]:
    """A generated project with its static root (and optionally overlay) uploaded to a fresh bucket."""
    summary = make_sample_project(tmp_path / "project", runs=runs, tomogram_runs=tomogram_runs, size=32, **extra)
    project = summary.config.parent
    _age(project)
    bucket = server.new_bucket()
    server.upload_dir(project / "static", bucket, "static")
    cfg = json.loads(summary.config.read_text())
    cfg["static_root"] = f"s3://{bucket}/static"
    cfg["static_fs_args"] = server.fs_args()
    if overlay_on_s3:
        server.upload_dir(project / "overlay", bucket, "overlay")
        cfg["overlay_root"] = f"s3://{bucket}/overlay"
        cfg["overlay_fs_args"] = server.fs_args()
    summary.config.write_text(json.dumps(cfg, indent=4))
    return summary.config, bucket


def _local_reference(config: Path, tmp_path: Path) -> dict[str, dict[str, int]]:
    """What the same project indexes to from local disk (the uploaded directories)."""
    cfg = json.loads(config.read_text())
    project = config.parent
    cfg["static_root"] = f"local://{project / 'static'}"
    cfg["overlay_root"] = f"local://{project / 'overlay'}"
    cfg["static_fs_args"], cfg["overlay_fs_args"] = {}, {}
    local_cfg = project / "local_config.json"
    local_cfg.write_text(json.dumps(cfg))
    with Catalog.open(local_cfg, db=f"sqlite:///{tmp_path / 'reference.sqlite'}") as cat:
        return {k: dict(v) for k, v in cat.index().by_kind.items()}


def _assert_no_secret(*texts: Any) -> None:
    for text in texts:
        assert SECRET_KEY not in str(text)
        assert ACCESS_KEY not in str(text)


def _secrets_absent_from_catalog(cat: Catalog) -> None:
    with cat.engine.connect() as conn:
        for table in (Project, IndexRun, IndexErrorRow):
            _assert_no_secret(conn.execute(sa.select(table.__table__)).all())
        config = conn.execute(sa.select(Project.config)).scalar_one()
    config = json.loads(config) if isinstance(config, str) else config
    assert config["static_fs_args"]["secret"] == "***"
    assert config["static_fs_args"]["key"] == "***"


# ------------------------------------------------------------------------------------------


def test_static_on_s3_overlay_local(s3_server: S3Server, db_url: str, tmp_path: Path) -> None:
    config, bucket = _s3_project(s3_server, tmp_path)
    reference = _local_reference(config, tmp_path)
    client = s3_server.client()
    with Catalog.open(config, db=db_url) as cat:
        mark = s3_server.mark()
        report = cat.index()
        requests = s3_server.count_since(mark)
        assert report.errors == 0, report.error_messages
        assert {k: dict(v) for k, v in report.by_kind.items()} == reference
        stats = cat.roots["static"].last_stats
        assert stats is not None and stats.strategy == "flat"
        assert stats.list_calls == 1  # ~100 keys: one page
        # every request the server saw: the root check, one listing page, and one GET per payload file
        assert requests["list"] == 2 and requests["head"] == 0
        assert requests["total"] == requests["list"] + requests["get"]
        with cat.session() as s:
            static_rows = s.scalar(sa.select(sa.func.count()).select_from(Pick).where(Pick.layer == "static"))
        assert requests["get"] >= static_rows + 4 > 4  # every static pick, plus zarr metadata files

        # a no-op reindex lists and reads nothing else
        mark = s3_server.mark()
        again = cat.index()
        assert again.nothing_changed and again.files_read == 0
        assert s3_server.count_since(mark) == {"list": 2, "total": 2}

        # open a tomogram (zarr group on S3), a tool pick (S3) and a mesh (local overlay)
        with cat.session() as s:
            tomo = s.scalars(sa.select(Tomogram).where(Tomogram.tomo_type == "wbp").order_by(Tomogram.path)).first()
            assert tomo is not None and tomo.layer == "static"
            group = tomo.open()
            data = group["0"][:]
            assert data.shape == (32, 32, 32) and data.dtype == np.float32
            import zarr

            local = zarr.open_group(str(config.parent / "static" / tomo.path), mode="r")
            np.testing.assert_array_equal(data, local["0"][:])
            assert group["2"].shape == (8, 8, 8)
            tool = s.scalars(sa.select(Pick).where(Pick.layer == "static").order_by(Pick.path)).first()
            assert tool is not None
            assert len(tool.open().points) == tool.n_points > 0
            mesh = s.scalars(sa.select(Mesh)).first()
            assert mesh is not None and type(mesh.open()).__name__ == "Scene"

        # change one object and delete another behind the catalog's back
        key = f"static/{tool.path}"
        body = pick_json(
            tool.object_name,
            tool.user_id,
            tool.session_id,
            tool.path.split("/")[1],
            np.ones((3, 3)),
            np.arange(3),
            np.full(3, 0.9),
        )
        client.put_object(Bucket=bucket, Key=key, Body=body.encode())
        with cat.session() as s:
            with pytest.raises(StaleRowError):
                s.scalars(sa.select(Pick).where(Pick.path == tool.path, Pick.layer == "static")).one().open()
            victim = s.scalars(sa.select(Pick).where(Pick.layer == "static").order_by(Pick.path.desc())).first()
            assert victim is not None and victim.path != tool.path
        client.delete_object(Bucket=bucket, Key=f"static/{victim.path}")
        third = cat.index()
        assert (third.changed, third.removed, third.added, third.files_read) == (1, 1, 0, 1)
        with cat.session() as s:
            fresh = s.scalars(sa.select(Pick).where(Pick.path == tool.path, Pick.layer == "static")).one()
            assert fresh.n_points == 3
            assert s.scalars(sa.select(Pick).where(Pick.path == victim.path, Pick.layer == "static")).first() is None
        _secrets_absent_from_catalog(cat)


def test_both_roots_on_s3(s3_server: S3Server, db_url: str, tmp_path: Path) -> None:
    config, bucket = _s3_project(s3_server, tmp_path, overlay_on_s3=True)
    reference = _local_reference(config, tmp_path)
    client = s3_server.client()
    with Catalog.open(config, db=db_url) as cat:
        report = cat.index()
        assert report.errors == 0, report.error_messages
        assert {k: dict(v) for k, v in report.by_kind.items()} == reference
        mark = s3_server.mark()
        again = cat.index()
        assert again.nothing_changed and again.files_read == 0
        assert s3_server.count_since(mark) == {"list": 4, "total": 4}  # two roots: check + one page each

        with cat.session() as s:
            mesh = s.scalars(sa.select(Mesh).order_by(Mesh.path)).first()
            assert mesh is not None and mesh.layer == "overlay"
            scene = mesh.open()
            assert type(scene).__name__ == "Scene" and mesh.n_vertices == sum(
                len(g.vertices) for g in scene.geometry.values()
            )
            seg = s.scalars(sa.select(Segmentation).where(Segmentation.is_multilabel.is_(False))).first()
            assert seg is not None
            assert seg.open()["0"][:].shape == tuple(seg.shape)
            user_pick = s.scalars(
                sa.select(Pick).where(Pick.layer == "overlay", Pick.user_id == "alice").order_by(Pick.path)
            ).first()
            assert user_pick is not None and len(user_pick.open().points) == user_pick.n_points

        # rewrite a user's pick, delete a mesh, add a pick: all in the overlay bucket prefix
        body = pick_json(
            user_pick.object_name,
            "alice",
            "1",
            user_pick.path.split("/")[1],
            np.ones((5, 3)),
            np.arange(5),
            np.full(5, 0.5),
        )
        client.put_object(Bucket=bucket, Key=f"overlay/{user_pick.path}", Body=body.encode())
        client.delete_object(Bucket=bucket, Key=f"overlay/{mesh.path}")
        new_path = user_pick.path.replace("alice_1_", "dave_7_")
        client.put_object(Bucket=bucket, Key=f"overlay/{new_path}", Body=body.encode())
        third = cat.index()
        assert (third.added, third.changed, third.removed, third.files_read) == (1, 1, 1, 2)
        assert cat.index().files_read == 0
        with cat.session() as s:
            assert s.scalars(sa.select(Pick.n_points).where(Pick.path == user_pick.path)).one() == 5
            assert s.scalars(sa.select(Mesh).where(Mesh.path == mesh.path)).first() is None
        _secrets_absent_from_catalog(cat)


def test_listing_requests_do_not_grow_with_runs(s3_server: S3Server, tmp_path: Path) -> None:
    """20 vs 200 runs: the flat listing costs a page per 1,000 keys, not a request per directory."""
    counts = {}
    for runs in (20, 200):
        config, _bucket = _s3_project(s3_server, tmp_path / f"r{runs}", runs=runs, tomogram_runs=1)
        with Catalog.open(config, db=f"sqlite:///{tmp_path / f'r{runs}.sqlite'}") as cat:
            mark = s3_server.mark()
            first = cat.index()
            full = s3_server.count_since(mark)
            mark = s3_server.mark()
            noop = cat.index()
            counts[runs] = (full, s3_server.count_since(mark), first, noop)
            assert noop.files_read == 0 and noop.nothing_changed
            assert first.runs == runs
    (full20, noop20, _, _), (full200, noop200, _, _) = counts[20], counts[200]
    assert full200["list"] <= full20["list"] + 1 <= 3
    assert noop200 == {"list": full200["list"], "total": full200["list"]}
    assert noop20 == {"list": full20["list"], "total": full20["list"]}
    # payload reads, not listings, are what grows with the project
    assert full200["get"] > 5 * full20["get"] > 0


def _v3_group_by_hand(path: Path, vol: np.ndarray, chunk: int, voxel_size: float) -> None:
    """A one-level OME-NGFF 0.5 / zarr v3 group with '.'-separated chunk keys, written file by file.

    Each level's zarr.json then sorts after its chunk keys (``0.0.0`` < ``zarr.json``). Written by hand
    (uncompressed little-endian chunks), so that zarr 2.18 environments can build it too.
    """
    shape = vol.shape
    from copick_catalog.formats import zarr as payloads

    ms = payloads.ome_multiscales(voxel_size, 1)
    ms[0].pop("version")
    (path / "0").mkdir(parents=True)
    (path / "zarr.json").write_text(
        json.dumps(
            {"zarr_format": 3, "node_type": "group", "attributes": {"ome": {"version": "0.5", "multiscales": ms}}}
        )
    )
    (path / "0" / "zarr.json").write_text(
        json.dumps(
            {
                "zarr_format": 3,
                "node_type": "array",
                "shape": list(shape),
                "data_type": "float32",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk] * len(shape)}},
                "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "."}},
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                "fill_value": 0.0,
            }
        )
    )
    for idx in np.ndindex(*(s // chunk for s in shape)):
        block = vol[tuple(slice(i * chunk, (i + 1) * chunk) for i in idx)]
        (path / "0" / ".".join(map(str, idx))).write_bytes(np.ascontiguousarray(block, dtype="<f4").tobytes())


def _chunky_project(server: S3Server, tmp_path: Path) -> tuple[Path, str, np.ndarray]:
    """12 runs; two tomograms of the first run have 4³ chunks (~600 chunk keys each), zarr v2 and v3."""
    from copick_catalog.formats import zarr as payloads
    from copick_catalog.formats import zarrio
    from copick_catalog.index import grammar as layout

    summary = make_sample_project(tmp_path / "project", runs=12, tomogram_runs=0)
    static = summary.config.parent / "static"
    vol = np.random.default_rng(1).normal(size=(32, 32, 32)).astype(np.float32)
    rel = layout.path_of(layout.TomogramKey("TS_0001", 10.0, "wbp"))
    payloads.write_ome_zarr(zarrio.local_store(str(static / rel), read_only=False), vol, 10.0, levels=3, chunks=4)
    rel3 = layout.path_of(layout.TomogramKey("TS_0001", 10.0, "denoised"))
    _v3_group_by_hand(static / rel3, vol, 4, 10.0)
    _age(summary.config.parent)
    bucket = server.new_bucket()
    server.upload_dir(static, bucket, "static")
    cfg = json.loads(summary.config.read_text())
    cfg["static_root"] = f"s3://{bucket}/static"
    cfg["static_fs_args"] = server.fs_args()
    summary.config.write_text(json.dumps(cfg, indent=4))
    return summary.config, bucket, vol


def test_pruned_walk_matches_flat_and_auto_switches_when_chunks_dominate(s3_server: S3Server, tmp_path: Path) -> None:
    config, bucket, vol = _chunky_project(s3_server, tmp_path)
    listings: dict[str, set[tuple[Any, ...]]] = {}
    stats: dict[str, ListingStats] = {}
    requests = {}
    for strategy in ("flat", "pruned", "auto", "auto-measured"):
        # small pages: this ~1,300-key tree then behaves like a big one; plain "auto": the model alone
        settings = WalkSettings(strategy=strategy.split("-")[0], page_keys=50, calibrate=strategy == "auto-measured")
        root = open_root(f"s3://{bucket}/static", "static", s3_server.fs_args(), settings=settings)
        st = ListingStats()
        mark = s3_server.mark()
        listings[strategy] = {(e.path, e.is_dir, e.fingerprint, e.meta, e.exact) for e in root.walk(st)}
        requests[strategy] = s3_server.count_since(mark)
        stats[strategy] = st
        assert requests[strategy]["list"] == st.list_calls and requests[strategy]["head"] == st.stat_calls
    assert listings["flat"] == listings["pruned"] == listings["auto"] == listings["auto-measured"]
    groups = {e[0]: e for e in listings["flat"] if e[0].endswith(".zarr")}
    assert set(groups["ExperimentRuns/TS_0001/VoxelSpacing10.000/denoised.zarr"][3]) == {"zarr.json", "0/zarr.json"}
    # the metadata files are those written (zarr 2.18 leaves out an empty .zattrs of an array, 3.x not)
    client = s3_server.client()
    prefix = "static/ExperimentRuns/TS_0001/VoxelSpacing10.000/wbp.zarr/"
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    written = {o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])}
    meta_files = {k for k in written if k.rsplit("/", 1)[-1] in (".zarray", ".zattrs", ".zgroup", "zarr.json")}
    assert {".zgroup", "0/.zarray", "2/.zarray"} <= meta_files
    assert set(groups["ExperimentRuns/TS_0001/VoxelSpacing10.000/wbp.zarr"][3]) == meta_files
    assert stats["flat"].chunk_keys > 1000 and stats["flat"].list_calls > 20
    # the pruned walk never lists chunks: the two groups cost 1 + levels listings and one HEAD (v3 zarr.json)
    assert stats["pruned"].stat_calls == 1
    assert stats["auto"].strategy == "pruned" and 0 < stats["auto"].probe_list_calls < stats["flat"].list_calls
    assert "zarr chunks" in stats["auto"].reason, stats
    # with measurements, moto (one request at a time) may or may not be worth pruning; it did measure
    assert "measured" in stats["auto-measured"].reason, stats

    # Fingerprints agree across strategies, so switching never re-reads anything.
    with Catalog.open(config, db=f"sqlite:///{tmp_path / 'chunky.sqlite'}") as cat:
        cat.roots["static"].settings.strategy = "flat"
        first = cat.index()
        assert first.errors == 0, first.error_messages
        assert first.by_kind["tomogram"]["added"] == 2
        cat.roots["static"].settings.strategy = "pruned"
        second = cat.index()
        assert second.nothing_changed and second.files_read == 0
        with cat.session() as s:
            shapes = dict(s.execute(sa.select(Tomogram.tomo_type, Tomogram.shape)).all())
            assert {k: tuple(v) for k, v in shapes.items()} == {"wbp": (32, 32, 32), "denoised": (32, 32, 32)}
            for tomo in s.scalars(sa.select(Tomogram)):
                if tomo.tomo_type == "denoised" and zarrio.zarr_major() < 3:  # zarr v3 data, zarr 2.18 here
                    with pytest.raises(PayloadError, match=r"zarr v3 group.*install zarr>=3"):
                        tomo.open()
                    continue
                block = np.asarray(tomo.open()["0"][:4, :4, :4])
                assert np.array_equal(block, vol[:4, :4, :4]), tomo.tomo_type
        # a changed level's metadata is seen by the pruned walk (it reads .zarray, never chunks)
        key = "static/ExperimentRuns/TS_0001/VoxelSpacing10.000/wbp.zarr/2/.zarray"
        meta = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        meta["shape"] = [8, 8, 9]
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(meta).encode())
        third = cat.index()
        assert (third.changed, third.files_read) == (1, 1)


def test_auto_decision_model() -> None:
    """The cost model alone: many chunk keys per directory switch, a tree of small files does not."""
    listing = storage_mod.FlatListing(())
    for r in range(400):  # 400 runs, 5 small files each: the flat listing is the cheap one
        for name in (".meta", "VoxelSpacing10.000/.meta", "Picks/a_1_x.json", "Picks/b_1_x.json", "Picks/c_1_x.json"):
            listing.add(f"ExperimentRuns/TS_{r}/{name}", {"ETag": "e", "size": 1}, False)
    assert listing.prefer_pruned(pages=2, concurrency=32) == ""
    chunky = storage_mod.FlatListing(())
    chunky.add("ExperimentRuns/TS_1/.meta", {"ETag": "e", "size": 1}, False)
    for i in range(4000):
        chunky.add(
            f"ExperimentRuns/TS_1/VoxelSpacing10.000/wbp.zarr/0/{i // 100}/{i % 100}/0", {"ETag": "e", "size": 1}, False
        )
    assert chunky.prefer_pruned(pages=4, concurrency=32)
    assert chunky.chunk_keys == 4000 and chunky.pruned_requests() == 6  # root, ER, run, VS, group, level
    # measured: against 4 pages that took 0.1 s, 6 requests at 10 ms each (a server answering one at a
    # time) plus 6 sequential ones are not clearly cheaper; against 1 s, at 1 ms each (32 at a time) they are
    assert chunky.prefer_pruned_measured(4, 0.1, latency=0.01, per_request=0.01, concurrency=32) == ""
    assert chunky.prefer_pruned_measured(4, 1.0, latency=0.03, per_request=0.001, concurrency=32)


def test_credentials_never_leak(s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config, _bucket = _s3_project(s3_server, tmp_path, runs=3, tomogram_runs=1)
    caplog.set_level(logging.DEBUG)
    with Catalog.open(config, db=f"sqlite:///{tmp_path / 'c.sqlite'}") as cat:
        assert cat.index().errors == 0
        _secrets_absent_from_catalog(cat)
    # a root that cannot be listed: the error names the root and the fix, not the credentials
    cfg = json.loads(config.read_text())
    cfg["static_root"] = "s3://no-such-bucket-copick/static"
    config.write_text(json.dumps(cfg))
    with Catalog.open(config, db=f"sqlite:///{tmp_path / 'd.sqlite'}") as cat:
        with pytest.raises(CatalogError) as err:
            cat.index()
        assert "no-such-bucket-copick" in str(err.value)
        _assert_no_secret(str(err.value), repr(err.value), err.value.__cause__, err.value.__context__)
        _secrets_absent_from_catalog(cat)
        root = cat.roots["static"]
        with pytest.raises(RootError) as walk_err:
            list(root.walk())
        assert "bucket does not exist" in str(walk_err.value)
        _assert_no_secret(str(walk_err.value))
        # whatever a backend puts in its exception text, RootError messages are scrubbed
        scrubbed = root.root_error("list", OSError(f"denied for {ACCESS_KEY}:{SECRET_KEY}"))
        _assert_no_secret(str(scrubbed))
    _assert_no_secret(caplog.text, *(r.getMessage() for r in caplog.records))
    assert "no-such-bucket-copick" in caplog.text or caplog.records  # logging was on


def test_object_api_writes_through_to_an_s3_overlay(s3_server: S3Server, db_url: str, tmp_path: Path) -> None:
    """``new_picks``/``store``/``delete`` with the overlay on S3: the object lands (and leaves) under the
    overlay prefix, the catalog row with it, and a later index finds nothing to re-read."""
    import trimesh

    from copick_catalog import from_file

    config, bucket = _s3_project(s3_server, tmp_path, runs=4, tomogram_runs=1, overlay_on_s3=True)
    client = s3_server.client()

    def dave_keys() -> set[str]:
        listing = client.list_objects_v2(Bucket=bucket, Prefix="overlay/ExperimentRuns/TS_0001/")
        return {
            o["Key"].removeprefix("overlay/ExperimentRuns/TS_0001/")
            for o in listing.get("Contents", [])
            if "dave" in o["Key"] or ".tmp" in o["Key"]
        }

    with from_file(config, db=db_url) as root:
        run = root.get_run("TS_0001")
        picks = run.new_picks("ribosome", "9", user_id="dave")
        picks.from_numpy(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        mesh = run.new_mesh("dave", "9", "membrane")
        mesh.mesh = trimesh.creation.box()
        mesh.store()
        run.new_segmentation(10.0, "membrane", "9", False, user_id="dave").from_numpy(np.ones((8, 8, 8), np.uint8))
        assert {k for k in dave_keys() if not k.startswith("Segmentations/")} == {
            "Picks/dave_9_ribosome.json",
            "Meshes/dave_9_membrane.glb",
        }
        level0 = {f"Segmentations/10.000_dave_9_membrane.zarr/0/{m}" for m in (".zarray", "zarr.json")}
        assert level0 & dave_keys()  # zarr 2 (copick 1.x) or zarr 3 (copick 2.x) metadata
        body = json.loads(
            client.get_object(Bucket=bucket, Key="overlay/ExperimentRuns/TS_0001/Picks/dave_9_ribosome.json")[
                "Body"
            ].read()
        )
        assert [p["location"] for p in body["points"]] == [
            {"x": 1.0, "y": 2.0, "z": 3.0},
            {"x": 4.0, "y": 5.0, "z": 6.0},
        ]
        cat = root.catalog
        assert [(p.layer, p.n_points) for p in cat.picks(user_id="dave")] == [("overlay", 2)]
        assert [m.n_faces for m in cat.meshes(user_id="dave")] == [12]
        assert [s.shape for s in cat.segmentations(user_id="dave")] == [[8, 8, 8]]
        again = cat.index()
        assert again.nothing_changed and again.files_read == 0  # the rows carry the objects' real ETags
        picks.delete()
        assert "Picks/dave_9_ribosome.json" not in dave_keys() and cat.picks(user_id="dave") == []
        assert run.get_picks(user_id="dave") == []
    with Catalog.open(config, db=db_url) as cat:
        assert cat.index().nothing_changed
        assert {m.user_id for m in cat.meshes(user_id="dave")} == {"dave"} and cat.picks(user_id="dave") == []


# ------------------------------------------------------------------------------------------
# listing in key ranges at once, and payload reads through obstore


def _walk(root: Any) -> tuple[list[tuple[Any, ...]], ListingStats]:
    stats = ListingStats()
    entries = [(e.path, e.is_dir, e.fingerprint, e.meta, e.exact) for e in root.walk(stats)]
    return entries, stats


def test_listing_in_key_ranges_equals_one_listing(s3_server: S3Server, tmp_path: Path) -> None:
    """Small pages make a 40-run tree ~30 pages: split at its runs (no hints) or at the catalog's paths
    (hints, stale ones too), it lists the same entries in the same order as one paginated listing, with
    requests in flight at once, about as many requests as pages, and every request counted."""
    config, bucket = _s3_project(s3_server, tmp_path, runs=40, tomogram_runs=1, overlay_on_s3=True)
    url, args = f"s3://{bucket}/overlay", s3_server.fs_args()
    whole, _ = _walk(open_root(url, "overlay", args, settings=WalkSettings(strategy="flat")))
    keys = sum(1 for e in whole if not e[1])

    def small_pages() -> Any:
        return open_root(url, "overlay", args, settings=WalkSettings(strategy="flat", page_keys=20))

    # no hints: the first pages one after another, then key ranges of whole runs, all at once
    root = small_pages()
    mark = s3_server.mark()
    runs_split, stats = _walk(root)
    assert runs_split == whole
    assert s3_server.count_since(mark)["list"] == stats.list_calls
    assert root.walker.last_ranges > 5 and root.walker.last_peak > 1
    # the pages, at most a partial page more a range, and the run names (20 a page here)
    assert stats.list_calls <= keys // 20 + root.walker.last_ranges + 40 // 20 + 1
    assert "key ranges" in stats.reason and "runs" in stats.reason

    # hints: ranges cut at the paths the catalog held, one of them first to size the others
    paths = [e[0] for e in whole if not e[1]]
    root = small_pages()
    root.expect(lambda: iter(paths))
    mark = s3_server.mark()
    hinted, stats = _walk(root)
    assert hinted == whole
    assert s3_server.count_since(mark)["list"] == stats.list_calls <= keys // 20 + root.walker.last_ranges
    assert root.walker.last_ranges > 5 and root.walker.last_peak > 1
    assert "catalog held" in stats.reason

    # stale hints (paths gone, paths never there) and keys added and removed since: still every key
    client = s3_server.client()
    for run in ("TS_0007", "TS_9999"):
        body = pick_json("ribosome", "zed", "1", run, np.ones((2, 3)), np.arange(2), np.full(2, 0.5)).encode()
        client.put_object(Bucket=bucket, Key=f"overlay/ExperimentRuns/{run}/Picks/zed_1_ribosome.json", Body=body)
    client.put_object(Bucket=bucket, Key="overlay/AAA/Picks/zed_1_ribosome.json", Body=b"{}")
    client.delete_object(Bucket=bucket, Key=f"overlay/{paths[len(paths) // 2]}")
    fresh, _ = _walk(open_root(url, "overlay", args, settings=WalkSettings(strategy="flat")))
    assert fresh != whole
    root = small_pages()
    root.expect(lambda: iter([*paths[::3], "ExperimentRuns/TS_0003/Picks/gone_1_x.json", "Z"]))
    assert _walk(root)[0] == fresh
    # a hint is used by the next walk only, and only below the walk's start
    assert root.walker._known is None
    root.expect(lambda: iter(paths))
    assert [e for e in _walk(root)[0]] == fresh

    # through the catalog: the no-op reindex lists in ranges cut at its own paths, and changes nothing
    with Catalog.open(config, db=f"sqlite:///{tmp_path / 'ranges.sqlite'}") as cat:
        for r in cat.roots.values():
            r.settings.page_keys = 20
        first = cat.index()
        assert first.errors == 0, first.error_messages
        mark = s3_server.mark()
        again = cat.index()
        assert again.nothing_changed and again.files_read == 0
        assert s3_server.count_since(mark)["get"] == 0
        overlay = cat.roots["overlay"]
        assert overlay.walker.last_ranges > 5 and "catalog held" in overlay.last_stats.reason


def test_payload_reads_through_obstore(s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Payloads are fetched by obstore (many at once), with one-line errors naming the key; size limits
    are checked before a body is read; empty objects, missing keys and refused GETs behave as on s3fs."""
    from copick_catalog.index.roots.s3get import FastGetter, fast_getter, unsupported_args

    config, bucket = _s3_project(s3_server, tmp_path, runs=6, tomogram_runs=1, overlay_on_s3=True)
    with Catalog.open(config, db=f"sqlite:///{tmp_path / 'fast.sqlite'}") as cat:
        mark = s3_server.mark()
        report = cat.index()
        assert report.errors == 0, report.error_messages
        roots = cat.roots.values()
        assert sum(r.fast_reads for r in roots) == s3_server.count_since(mark)["get"] > report.files_read > 0
        assert sum(r.slow_reads for r in roots) == 0
        assert all(r.read_concurrency == 64 for r in roots)

    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="static/empty.mrc", Body=b"")
    client.put_object(Bucket=bucket, Key="static/ten.json", Body=b"0123456789")
    root = open_root(f"s3://{bucket}/static", "static", s3_server.fs_args())
    assert root.read_bytes("ten.json") == b"0123456789" and root.read_bytes("ten.json", limit=10) == b"0123456789"
    with pytest.raises(PayloadError, match=r"ten\.json: is over the 9-byte limit"):
        root.read_bytes("ten.json", limit=9)
    assert root.read_head("ten.json", 4) == b"0123" and root.read_head("empty.mrc", 1024) == b""
    with pytest.raises(FileNotFoundError) as missing:
        root.read_bytes("nope/missing.json")
    assert "static/nope/missing.json" in str(missing.value) and "\n" not in str(missing.value)
    many = root.read_many(["ten.json", "empty.mrc", "nope.json"], limit=100)
    assert many["ten.json"] == b"0123456789" and many["empty.mrc"] == b""
    assert isinstance(many["nope.json"], FileNotFoundError)
    assert root.slow_reads == 0

    # an endpoint that refuses every GET: each read is served by s3fs instead, and after a few in a row
    # the root stops trying obstore (one log line, no credentials)
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<Error><Code>InvalidRequest</Code><Message>refused</Message></Error>"
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    refuse = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=refuse.serve_forever, daemon=True).start()
    try:
        caplog.set_level(logging.INFO)
        bad_args = {**s3_server.fs_args(), "endpoint_url": f"http://127.0.0.1:{refuse.server_address[1]}"}
        root._fast = FastGetter(root.fs, bucket, bad_args)
        for _ in range(10):
            assert root.read_bytes("ten.json") == b"0123456789"
        assert root._fast is None and root.read_concurrency == 16 and root.slow_reads == 10
        assert "reading through s3fs from now on" in caplog.text and "InvalidRequest" in caplog.text
        _assert_no_secret(caplog.text)
    finally:
        refuse.shutdown()

    # fs_args obstore would not honour keep a root on s3fs
    assert unsupported_args(s3_server.fs_args()) == []
    odd = {**s3_server.fs_args(), "s3_additional_kwargs": {"SSECustomerAlgorithm": "AES256"}}
    assert unsupported_args(odd) == ["s3_additional_kwargs"]
    assert fast_getter(root.fs, bucket, odd) is None
    plain = open_root(f"s3://{bucket}/static", "static", {**s3_server.fs_args(), "config_kwargs": {"s3": {"x": 1}}})
    assert plain.read_bytes("ten.json") == b"0123456789" and plain.slow_reads == 1 and plain.read_concurrency == 16


def test_cancelled_s3_index_drops_queued_reads_then_completes(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads of the next batches are in flight while a batch is written; a cancelled run stops at a
    batch boundary, its queued GETs are dropped (the reader threads are gone when ``index`` returns),
    and the next run completes the catalog exactly as a local index of the same files."""
    import threading

    from copick_catalog.errors import IndexCancelled
    from copick_catalog.index import indexer

    config, _bucket = _s3_project(s3_server, tmp_path, runs=30, tomogram_runs=1, overlay_on_s3=True)
    reference = _local_reference(config, tmp_path)
    models = {"pick": Pick, "mesh": Mesh, "segmentation": Segmentation, "tomogram": Tomogram}
    monkeypatch.setattr(indexer, "BATCH_FILES", 20)
    polls = iter(range(10_000))
    with Catalog.open(config, db=f"sqlite:///{tmp_path / 'cancel.sqlite'}") as cat:
        mark = s3_server.mark()
        with pytest.raises(IndexCancelled):
            cat.index(cancel=lambda: next(polls) >= 4)  # a couple of batches in
        assert not [t for t in threading.enumerate() if t.name.startswith("copick-catalog-read")]
        gets = s3_server.count_since(mark)["get"]
        with cat.session() as s:
            written = s.scalar(sa.select(sa.func.count()).select_from(Pick))
        # the batches written, and at most the batches read ahead of the writer (not the whole project)
        assert written > 0 and gets <= written + (indexer.PREFETCH_BATCHES + 2) * 20 + 64
        report = cat.index()
        assert report.errors == 0, report.error_messages
        assert cat.index().nothing_changed
        with cat.session() as s:
            counts = {kind: s.scalar(sa.select(sa.func.count()).select_from(m)) for kind, m in models.items()}
    assert counts == {kind: reference[kind]["added"] for kind in models}

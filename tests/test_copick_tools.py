"""copick's own tools, unchanged, on a catalog root: the same answers as on copick's ``CopickRootFSSpec``.

copick's helpers check types (``map_runs`` raises "Invalid run type" for foreign runs, URI serialisation
raises, napari-copick dispatches on ``isinstance``), so these are the proof that the catalog root *is* a
copick root: URI resolution (globs, ``re:`` patterns, tomograms, segmentations), ``map_runs`` with threads
and with processes (the root is pickled into each worker), ``ops.get.get_picks``, ``ops.stats.picks_stats``,
and a copick-utils converter that reads picks and writes a segmentation, which the catalog then lists.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

copick = pytest.importorskip("copick", reason="copick's tools need copick (pip install 'copick-catalog[copick]')")
from copick.ops.get import get_picks  # noqa: E402
from copick.ops.run import map_runs  # noqa: E402
from copick.ops.stats import picks_stats  # noqa: E402
from copick.util.uri import resolve_copick_objects, serialize_copick_uri  # noqa: E402

from copick_catalog import CatalogRoot, from_file  # noqa: E402
from copick_catalog.sample import SampleSummary  # noqa: E402
from tests.s3server import s3_server as s3_server  # noqa: E402  (the session fixture, for the S3 cases)


@pytest.fixture(params=["local", "s3"])
def roots(request: pytest.FixtureRequest, sample: SampleSummary, db_url: str) -> Iterator[tuple[CatalogRoot, Any]]:
    """A catalog root and copick's own root on the same project: local, or its static root on the S3 server."""
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = server.new_bucket()
        server.upload_dir(sample.config.parent / "static", bucket, "static")
        cfg = json.loads(sample.config.read_text())
        cfg["static_root"] = f"s3://{bucket}/static"
        cfg["static_fs_args"] = server.fs_args()
        sample.config.write_text(json.dumps(cfg, indent=4))
    with from_file(sample.config, db=db_url) as ours:
        if request.param == "s3":
            assert ours.catalog.roots["static"].url.startswith("s3://")
        yield ours, copick.from_file(str(sample.config))


def _run_of(obj: Any) -> str:
    for attr in ("run", "voxel_spacing", "tomogram"):
        if hasattr(obj, attr):
            parent = getattr(obj, attr)
            return parent.name if attr == "run" else _run_of(parent)
    raise AssertionError(f"no run for {obj!r}")


def _key(obj: Any) -> tuple[Any, ...]:
    run = _run_of(obj)
    return (type(obj).__mro__[-2].__name__, run, serialize_copick_uri(obj), getattr(obj, "read_only", None))


PICK_URIS = [
    "ribosome:alice/*",
    "ribosome",
    "*:*/0",
    "ribosome:*/1",
    "re:ribo.*:alice/*",
    "re:pro.*:(bob|carol)/.*",
    "proteasome:pytom/0",
    "*:alice/1",
    "nosuch:*/*",
]
SEG_URIS = ["membrane:alice/1@10", "*:*/*@10.0", "prediction:*/*?multilabel=true", "*:*/*@20", "re:mem.*:.*/.*"]
TOMO_URIS = ["wbp@10", "wbp", "*@10.000", "re:(wbp|denoised)@.*", "denoised@20"]


def test_uris_resolve_like_copick(roots: tuple[CatalogRoot, Any]) -> None:
    ours, ref = roots
    for kind, uris in (
        ("picks", PICK_URIS),
        ("segmentation", SEG_URIS),
        ("tomogram", TOMO_URIS),
        ("mesh", ["membrane:*/*", "re:.*:alice/.*"]),
        ("feature", ["wbp@10:sobel", "wbp@10:*"]),
    ):
        for uri in uris:
            got = sorted(map(_key, resolve_copick_objects(uri, ours, kind)))
            want = sorted(map(_key, resolve_copick_objects(uri, ref, kind)))
            assert got == want, f"{kind} {uri}"
    assert resolve_copick_objects("ribosome:alice/*", ours, "picks")  # not vacuously equal
    one = resolve_copick_objects("ribosome:*/*", ours, "picks", run_name="TS_0002")
    assert one and {p.run.name for p in one} == {"TS_0002"}


def _count_picks(run: Any, **kwargs: Any) -> int:
    return sum(len(p.points) for p in run.get_picks(**kwargs))


@pytest.mark.parametrize("parallelism", ["thread", "process"])
def test_map_runs(roots: tuple[CatalogRoot, Any], parallelism: str) -> None:
    ours, ref = roots
    names = [r.name for r in ours.runs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = map_runs(
            _count_picks, ours, names, workers=2, parallelism=parallelism, show_progress=False, object_name="ribosome"
        )
        want = map_runs(
            _count_picks, ref, names, workers=2, parallelism="thread", show_progress=False, object_name="ribosome"
        )
    assert got == want and set(got) == set(names) and all(v is not None and v > 0 for v in got.values())
    # runs themselves (not names) are accepted too: copick checks they are copick runs
    got_runs = map_runs(_count_picks, ours, ours.runs[:3], workers=2, parallelism="thread", show_progress=False)
    assert got_runs == {r.name: _count_picks(r) for r in ours.runs[:3]}


def test_get_picks_and_picks_stats(roots: tuple[CatalogRoot, Any]) -> None:
    ours, ref = roots

    def key(picks: list[Any]) -> list[tuple[str, ...]]:
        return sorted((p.run.name, p.user_id, p.session_id, p.pickable_object_name) for p in picks)

    for kwargs in ({"user_id": "alice"}, {"object_name": "ribosome", "session_id": ["1", "2"]}, {}):
        assert key(get_picks(ours, show_progress=False, **kwargs)) == key(get_picks(ref, show_progress=False, **kwargs))
    assert key(get_picks(ours, runs="TS_0003", show_progress=False)) == key(ref.get_run("TS_0003").picks)
    four = [ours.get_run("TS_0004")]  # (copick's get_picks takes one name, or run objects)
    assert key(get_picks(ours, runs=four, parallel=True, workers=2, show_progress=False)) == key(four[0].picks)
    stats = picks_stats(ours, show_progress=False)
    assert stats == picks_stats(ref, show_progress=False)
    assert stats["total_picks"] == sum(p.n_points for p in ours.catalog.picks()) > 0
    assert stats["total_pick_files"] == len(ours.catalog.picks())


def test_copick_utils_paints_picks_into_a_segmentation_the_catalog_lists(sample: SampleSummary, db_url: str) -> None:
    converters = pytest.importorskip("copick_utils.converters.segmentation_from_picks")
    with from_file(sample.config, db=db_url) as root:
        run = root.get_run("TS_0001")  # a run with a wbp tomogram
        picks = run.get_picks(user_id="alice", object_name="ribosome")[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = converters.segmentation_from_picks(
                picks=picks,
                run=run,
                object_name="ribosome",
                session_id="7",
                user_id="picks2seg",
                radius=40.0,
                voxel_spacing=10.0,
                tomo_type="wbp",
            )
        assert result is not None, "copick-utils returned None (it logs and swallows its errors)"
        _seg, counts = result
        assert counts["points_converted"] == len(picks.points) > 0
        rows = root.catalog.segmentations(user_id="picks2seg")
        assert [(s.run_name, s.name, s.session_id, s.is_multilabel) for s in rows] == [
            ("TS_0001", "ribosome", "7", True)
        ]
        assert rows[0].shape == list(run.get_voxel_spacing(10.0).get_tomograms("wbp")[0].numpy().shape)
        volume = rows[0].open()["0"][:]
        assert (np.asarray(volume) > 0).sum() > 0
        # and copick itself lists it, from the files
        ref = copick.from_file(str(sample.config)).get_run("TS_0001")
        assert [s.user_id for s in ref.get_segmentations(user_id="picks2seg", is_multilabel=True)] == ["picks2seg"]

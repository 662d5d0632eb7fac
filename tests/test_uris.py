"""copick URIs answered in SQL: the same rows as copick's ``resolve_copick_objects``, on SQLite and PostgreSQL.

The reference is copick itself (``copick.from_file`` on the same project, walking the files), for
over thirty URIs per kind that use every part of the grammar: globs with ``*``, ``?`` (which copick
reads as the start of a query string), sets, names holding ``%``, ``_``, ``[``, ``]``, ``^``, ``*``,
upper case and accents, ``re:`` patterns, voxel sizes written ``10``, ``10.0``, ``10.000`` and as
patterns, segmentation type flags, missing and empty parts. The parser runs without copick; only
the comparisons need it. Globs are also checked against :func:`fnmatch.fnmatchcase` in SQL on both
backends.
"""

from __future__ import annotations

import fnmatch
import json
import re
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copick_catalog import Catalog
from copick_catalog.catalog.uri_sql import _glob, float_text
from copick_catalog.catalog.uris import GRAMMAR, InvalidURIError, copick_kind, parse_uri
from copick_catalog.cli import main as cli_main
from copick_catalog.errors import CatalogError, NotFoundError
from copick_catalog.formats import zarrio
from copick_catalog.formats.zarr import write_ome_zarr
from copick_catalog.index import grammar as layout
from copick_catalog.sample import make_sample_project, pick_json
from tests.conftest import age_tree, fresh_pg_database, skip_or_fail_without_pg

# --------------------------------------------------------------------------------------------
# The project: the sample, plus names that exercise every corner of the grammar


#: Extra pick files (run, layer, user, session, object): SQL wildcards, glob metacharacters, case, accents.
EXTRA_PICKS = [
    ("TS_0001", "overlay", "al%ce", "1", "ribosome"),
    ("TS_0001", "overlay", "alice", "1%", "ribosome"),
    ("TS_0001", "overlay", "ALICE", "1", "ribosome"),
    ("TS_0001", "overlay", "Alice", "11", "proteasome"),
    ("TS_0001", "overlay", "andré", "1", "ribosome"),
    ("TS_0002", "overlay", "br]ck", "2", "ribosome"),
    ("TS_0002", "overlay", "c^t", "3", "proteasome"),
    ("TS_0002", "overlay", "st*r", "1", "apo-ferritin"),
    ("TS_0002", "overlay", "x[1]", "1", "ribosome"),
    ("TS_0002", "overlay", "a.b", "1", "Ribosome"),
    ("TS_0003", "overlay", "alice", "1", "ribo[1]"),
    ("TS_0003", "overlay", "bob", "2", "ribo%some"),
    ("TS_0003", "static", "alice", "1", "ribosome"),  # the same key in both layers
]
EXTRA_MESHES = [
    ("TS_0001", "al%ce", "1", "membrane"),
    ("TS_0001", "ALICE", "2", "membrane"),
    ("TS_0002", "bob", "2", "ribosome"),
    ("TS_0003", "alice", "1", "membrane"),
]
EXTRA_FILAMENTS = [
    ("TS_0001", "overlay", "alice", "1", "microtubule"),
    ("TS_0001", "overlay", "tracer", "0", "microtubule"),
    ("TS_0001", "overlay", "al%ce", "1", "actin"),
    ("TS_0002", "overlay", "Bob", "2", "microtubule"),
    ("TS_0002", "overlay", "alice", "1", "actin"),
    ("TS_0003", "static", "tracer", "0", "microtubule"),
]
#: Extra segmentations (run, voxel size, user, session, name, multilabel, kind).
EXTRA_SEGMENTATIONS = [
    ("TS_0001", 7.84, "alice", "2", "membrane", False, layout.SegKind.SEMANTIC),
    ("TS_0001", 10.0, "al%ce", "1", "membrane", False, layout.SegKind.SEMANTIC),
    ("TS_0001", 10.0, "instseg", "0", "ribosome", False, layout.SegKind.INSTANCE),
    ("TS_0002", 10.0, "alice", "1", "scene", False, layout.SegKind.PANOPTIC),
    ("TS_0003", 13.48, "bob", "2", "membrane", True, layout.SegKind.SEMANTIC),
    ("TS_0003", 10.0, "Alice", "1", "Membrane", False, layout.SegKind.SEMANTIC),
]
#: Extra tomograms (run, layer, voxel size, tomo_type) and features (run, layer, voxel size, tomo_type, feature).
EXTRA_TOMOGRAMS = [
    ("TS_0001", "static", 10.0, "wbp_a"),
    ("TS_0001", "static", 10.0, "wbpXa"),
    ("TS_0001", "static", 10.0, "wbp%x"),
    ("TS_0002", "overlay", 10.0, "wbp"),  # the same tomogram type in both layers
    ("TS_0003", "static", 7.84, "wbp"),
    ("TS_0003", "static", 7.84, "Denoised"),
    ("TS_0003", "static", 13.48, "wbp"),
]
EXTRA_FEATURES = [
    ("TS_0001", "overlay", 10.0, "wbp", "edge"),  # overlay features of a static tomogram
    ("TS_0003", "static", 7.84, "wbp", "sobel"),
    ("TS_0003", "static", 13.48, "wbp", "Sobel"),
    ("TS_0001", "static", 10.0, "orphan", "sobel"),  # no tomogram of its type: copick never finds it
]


def _volume(root: Path, rel: str, labels: bool = False) -> None:
    data = np.zeros((8, 8, 8), dtype=np.uint8 if labels else np.float32)
    write_ome_zarr(
        zarrio.local_store(str(root / rel), read_only=False),
        data,
        10.0,
        levels=1,
        chunks=8,
        **({"dtype": np.uint8, "labels": True} if labels else {}),
    )


def _filaments_json(obj: str, user: str, session: str, run: str) -> str:
    filament = {"instance_id": 1, "points": [[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]], "polarity_known": False}
    return json.dumps(
        {
            "pickable_object_name": obj,
            "user_id": user,
            "session_id": session,
            "run_name": run,
            "voxel_spacing": None,
            "unit": "angstrom",
            "version": 1,
            "filaments": [filament],
        },
        indent=4,
    )


def add_odd_names(project: Path) -> None:
    """Write the EXTRA_* entities into a sample project (with copick's file names, by our path grammar)."""
    rng = np.random.default_rng(7)
    layers = {"static": project / "static", "overlay": project / "overlay"}
    for run, layer, user, session, obj in EXTRA_PICKS:
        path = layers[layer] / layout.run_dir(run) / "Picks" / f"{user}_{session}_{obj}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 3
        path.write_text(pick_json(obj, user, session, run, rng.uniform(0, 300, (n, 3)), np.arange(n), np.ones(n)))
    import trimesh

    from copick_catalog.formats import glb

    for run, user, session, obj in EXTRA_MESHES:
        path = layers["overlay"] / layout.run_dir(run) / "Meshes" / f"{user}_{session}_{obj}.glb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(glb.scene_to_glb(trimesh.creation.box()))
    for run, layer, user, session, obj in EXTRA_FILAMENTS:
        path = layers[layer] / layout.run_dir(run) / "Filaments" / f"{user}_{session}_{obj}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_filaments_json(obj, user, session, run))
    for run, vs, user, session, name, multilabel, kind in EXTRA_SEGMENTATIONS:
        key = layout.SegmentationKey(run, vs, user, session, name, multilabel, kind)
        _volume(layers["overlay"], layout.path_of(key), labels=True)
    for run, layer, vs, tomo_type in EXTRA_TOMOGRAMS:
        vs_dir = layers[layer] / layout.run_dir(run) / f"{layout.VS_PREFIX}{layout.format_voxel_size(vs)}"
        vs_dir.mkdir(parents=True, exist_ok=True)
        (vs_dir / layout.META_MARKER).write_text("meta")
        _volume(layers[layer], str((vs_dir / f"{tomo_type}.zarr").relative_to(layers[layer])))
    for run, layer, vs, tomo_type, feature in EXTRA_FEATURES:
        rel = layout.path_of(layout.FeatureKey(run, vs, tomo_type, feature))
        _volume(layers[layer], rel)


# --------------------------------------------------------------------------------------------
# The URIs: every part of the grammar, per kind (copick's object type names)

PICK_URIS = [
    "*", "ribosome", "ribosome:alice", "ribosome:alice/*", "ribosome:alice/1", "ribosome:*/1", "*:*/0",
    "ribo*", "ribo*:al*", "*some:*/1*", "ribosome:al?ce/1", "ribosome:al%ce/1", "ribosome:al%ce",
    "ribosome:al_ce/*", "ribosome:al_ce/1", "ribosome:alice/1%", "ribosome:alice/1%*", "ribo%some:*/*",
    "ribo[1]:alice/1", "ribo[[]1]:*/*", "ribo[[]1[]]:*/*", "ribosome:x[[]1]/*", "ribosome:[ab]*/*",
    "ribosome:[!ab]*/*", "ribosome:[A-Z]*/*", "*:br]ck/*", "*:br[]]ck/*", "*:c^t/*", "*:c[\\^]t/*", "*:st*r/*",
    "*:st[*]r/*", "*:a.b/*", "*:a?b/*", "Ribosome:*/*", "RIBOSOME", "ribosome:ALICE/1", "ribosome:andré/*",
    "ribosome:andr?/*", "ribosome:", "ribosome:/1", ":alice/1", ":alice/*", "re:ribo.*",
    "re:ribo", "re:bosome", "re:.*:alice/1", "re:.*:al.ce/.*", "re:(ribosome|proteasome):(bob|carol)/.*",
    "re:ribosome$:alice", "re:.*:[A-Z].*/.*", "re:.*:a\\.b/.*", "re:.*:.*/1$", "re:.*:.*/\\d+$",
    "re:ribo\\[1\\]", "re:ribo%", "re::alice/1", "nosuch", "ribosome:alice/1?x", "  ribosome:alice/1  ",
    "ribosome:alice/[12]", "ribosome:alice/[!1]*", "*:*/[0-1]", "ribosome:[b-a]*/*", "*:*/[]]",
    "ribosome:alice[/1", "*:al\\ce/*", "*:*/1[%]", "*:[%]*/*", "apo-ferritin:*/*", "apo[-]ferritin:*/*",
    "[a-c]*:*/*", "*:*/*", "ribosome:*", "*:alice", "*:alice/1", "re:.*", "re:.*:.*", "re:.*:.*/.*",
]  # fmt: skip
MESH_URIS = [
    "*", "membrane", "membrane:*/*", "membrane:alice/1", "membrane:alice", "membrane:*/0", "*:*/2",
    "mem*", "*brane:al*", "membrane:al%ce/1", "membrane:al%ce", "membrane:al_ce/*", "membrane:al?ce/*",
    "membrane:ALICE/2", "membrane:[A-Z]*/*", "membrane:[!a]*/*", "membrane:[a-c]*/[12]", "ribosome:bob/2",
    "ribosome", "Membrane", "membrane:", "membrane:/1", ":alice/1", "re:mem", "re:.*:alice/.*",
    "re:.*:(bob|ALICE)/.*", "re:brane", "re:.*:al.ce/1$", "re:.*:.*/0", "nosuch", "membrane:alice/1?foo=bar",
    "membrane:membra?n/0", "*:memb*/*", "membrane:[m]embrain/0", "re:membrane:membrain/0", "*:*/*",
]  # fmt: skip
FILAMENT_URIS = [
    "*", "microtubule", "microtubule:*/*", "microtubule:alice/1", "microtubule:tracer", "microtubule:tracer/0",
    "actin", "actin:al%ce/1", "actin:al_ce/*", "actin:al?ce/*", "*:Bob/*", "*:bob/*", "*:[Bb]ob/*",
    "*:[!B]*/*", "micro*", "*tubule:*/[0-1]", "microtubule:", "microtubule:/0", ":tracer/0", ":alice/1",
    "re:micro", "re:.*:(alice|Bob)/.*", "re:.*:.*/0$", "re:tubule", "re:actin:al.ce", "re:.*:al%ce/.*",
    "nosuch", "microtubule:tracer/0?x", "*:*/*", "Microtubule", "[ma]*:*/1", "*:tr*r/0",
]  # fmt: skip
SEG_URIS = [
    "*", "membrane", "membrane:alice/1@10", "membrane:alice/1@10.0", "membrane:alice/1@10.000", "membrane:*/*@10",
    "*:*/*@7.84", "*:*/*@13.48", "*:*/*@13.480", "*@10", "*:*/*@1*", "*:*/*@*.84", "*:*/*@10.0?multilabel=true",
    "prediction?multilabel=true", "*?multilabel=false", "*?instance=true", "*?panoptic=true", "*?instance=false",
    "scene?panoptic=true", "ribosome:instseg/0@10?instance=true", "ribosome:instseg/0@10", "membrane:al%ce/1@10",
    "membrane:al_ce/*", "Membrane:*/*", "[Mm]embrane:*/*", "re:mem.*", "re:.*:.*/.*@10", "re:.*@10\\.0",
    "re:.*@1.*", "re:.*:.*/.*@7\\.84", "re:.*?multilabel=true", "re:.*?panoptic=true", "membrane:alice/1@abc",
    "membrane:alice/1@nan", "membrane:alice/1@1e1", "*:*/*@ 10", "*:*/*@", "membrane:alice/1@",
    "re:membrane:alice/1@10", "*:*/*@10.00?multilabel=1", "*?multilabel=yes", "*?multilabel=TRUE",
    "membrane:alice/2@7.84", "membrane:bob/2@13.48?multilabel=true", "membrane:bob/2@13.48", "*:*/*@abc",
    "*:*/*@10.0", "*:*/*@[17]*", "re:.*@13", "re:brane", "membrane:alice", ":alice/1@10", "membrane:/1@10",
    "*:cellcanvas/0@10?multilabel=true", "nosuch@10", "*:*/*@10?instance=true", "*:*/*@10?panoptic=false",
]  # fmt: skip
TOMO_URIS = [
    "*", "wbp", "wbp@10", "wbp@10.0", "wbp@10.000", "wbp@7.84", "wbp@13.48", "*@10", "*@7.84", "wbp@*", "wbp*",
    "wbp?a", "wbp_a", "wbp_*", "wbp%x", "wbp%*", "wbp[_X]a", "wbp[!_]a", "[dD]*", "Denoised", "denoised",
    "DENOISED", "re:wbp", "re:wbp$", "re:wbp.a", "re:(wbp|denoised)@10", "re:.*@7", "re:.*@1[03]",
    "re:.*@10\\.0", "*@1*", "*@*4*", "wbp@1e1", "wbp@abc", "wbp@", "@10", "nosuch@10", "wbp@10.0001",
    "re:bp", "re:.*@.*", "wbp@[17]*", "wbp@10.0?x=1", "*@13.480", "wbp@ 7.84", "*@nan",
]  # fmt: skip
FEATURE_URIS = [
    "*", "wbp", "wbp@10", "wbp@10:sobel", "wbp@10.000:sobel", "wbp@*:sobel", "*@*:sobel", "*@*:Sobel",
    "*@*:[sS]obel", "*@*:*obel", "wbp@7.84:*", "wbp@13.48", "wbp@10:edge", "*@10:edge", "orphan",
    "orphan@10:sobel", "*@*:e*", "re:wbp@10:sob", "re:.*@.*:[Ss]obel", "re:.*@.*:S", "re:wbp@1.*:.*",
    "wbp_a@10:*", "denoised@10:sobel", "wbp@10:sobel?x=1", "wbp@abc:sobel", "wbp@:sobel", "@10:sobel",
    "wbp@10:", "wbp@1*:*", "*:sobel", "re:bp@10:obel", "wbp@7.840:sobel", "w?p", "[w]bp@10:sobel",
    "*@1e1:*", "re:.*@.*:edge$", "*@*:*",
]  # fmt: skip
URIS = {
    "picks": PICK_URIS,
    "mesh": MESH_URIS,
    "filaments": FILAMENT_URIS,
    "segmentation": SEG_URIS,
    "tomogram": TOMO_URIS,
    "feature": FEATURE_URIS,
}
#: URIs copick's parser refuses (ours must too, in one line that shows the grammar).
INVALID = [
    ("picks", "ribosome::1"),
    ("picks", "a:b:c"),
    ("mesh", "re:.*:[[:upper:]]+/.*"),
    ("filaments", "actin::1"),
    ("segmentation", "a:b:c@10"),
    ("segmentation", "*?multilabel=true&instance=true"),
    ("segmentation", "*?instance=1&panoptic=yes"),
]
#: URIs copick parses but whose regular expression does not compile (copick raises when it matches).
BAD_REGEX = [("picks", "re:rib(o"), ("tomogram", "re:wbp[@10"), ("feature", "re:wbp@10:so)bel")]


# --------------------------------------------------------------------------------------------
# Fixtures: one project per module, indexed once per backend, and copick's own root on it


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample (4 runs, volumes on 3) plus the odd names above; returns its config path."""
    out = tmp_path_factory.mktemp("uris") / "project"
    summary = make_sample_project(out, runs=4, tomogram_runs=3, size=8)
    add_odd_names(out)
    age_tree(out)
    return summary.config


@pytest.fixture(scope="module")
def reference(project: Path) -> Any:
    """copick's own root on the project (``CopickRootFSSpec``: walks the files)."""
    copick = pytest.importorskip("copick", reason="the reference answers come from copick (pip install copick)")
    return copick.from_file(str(project))


@pytest.fixture(scope="module")
def _pg_module_db() -> Iterator[str]:
    skip_or_fail_without_pg()
    with fresh_pg_database("cc_uris") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def catalog(request: pytest.FixtureRequest, project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The project indexed into a SQLite file, or into a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('uris-db') / 'catalog.sqlite'}"
    else:
        url = request.getfixturevalue("_pg_module_db")
    cat = Catalog.open(project, db=url)
    report = cat.index()
    assert report.errors == 0, report.error_messages
    yield cat
    cat.close()


# --------------------------------------------------------------------------------------------
# Comparable keys: what a copick object and a catalog row say about the file they stand for


def _seg_type(seg: Any) -> str:
    return "instance" if seg.is_instance else "panoptic" if seg.is_panoptic else "semantic"


def copick_key(kind: str, o: Any) -> tuple[Any, ...]:
    """A copick object as (run, names..., voxel size, type, read-only)."""
    ro = bool(o.read_only)
    if kind in ("picks", "mesh", "filaments"):
        return (o.run.name, o.pickable_object_name, o.user_id, o.session_id, ro)
    if kind == "segmentation":
        return (o.run.name, o.name, o.user_id, o.session_id, round(o.voxel_size, 3), o.is_multilabel, _seg_type(o), ro)
    if kind == "tomogram":
        return (o.voxel_spacing.run.name, round(o.voxel_spacing.voxel_size, 3), o.tomo_type, ro)
    vs = o.tomogram.voxel_spacing
    return (vs.run.name, round(vs.voxel_size, 3), o.tomo_type, o.feature_type, ro)


def row_key(kind: str, r: Any) -> tuple[Any, ...]:
    """A catalog row in the same shape as :func:`copick_key` (static rows are copick's read-only ones)."""
    ro = r.layer == "static"
    if kind in ("picks", "mesh", "filaments"):
        return (r.run_name, r.object_name, r.user_id, r.session_id, ro)
    if kind == "segmentation":
        return (r.run_name, r.name, r.user_id, r.session_id, round(r.voxel_size, 3), r.is_multilabel, str(r.kind), ro)
    if kind == "tomogram":
        return (r.voxel_spacing.run.name, round(r.voxel_spacing.voxel_size, 3), r.tomo_type, ro)
    return (r.voxel_spacing.run.name, round(r.voxel_spacing.voxel_size, 3), r.tomo_type, r.feature_type, ro)


def copick_answer(reference: Any, kind: str, uri: str, run: str | None = None) -> Counter[tuple[Any, ...]]:
    from copick.util.uri import resolve_copick_objects

    keys = [copick_key(kind, o) for o in resolve_copick_objects(uri, reference, kind, run_name=run)]
    if kind == "feature":  # copick lists a feature once per tomogram of its type (twice if in both layers)
        return Counter(set(keys))
    return Counter(keys)


def catalog_answer(cat: Any, kind: str, uri: str, run: str | None = None) -> Counter[tuple[Any, ...]]:
    return Counter(row_key(kind, r) for r in cat.resolve(kind, uri, run=run))


# --------------------------------------------------------------------------------------------
# The same answers as copick


@pytest.mark.parametrize("kind", list(URIS))
def test_resolve_like_copick(catalog: Any, reference: Any, kind: str) -> None:
    uris = URIS[kind]
    assert len(uris) >= 30
    differ, non_empty = [], 0
    for uri in uris:
        want = copick_answer(reference, kind, uri)
        got = catalog_answer(catalog, kind, uri)
        non_empty += bool(want)
        if got != want:
            differ.append(f"{uri!r}: copick {sorted(want)} catalog {sorted(got)}")
    assert not differ, f"{len(differ)} of {len(uris)} {kind} URIs differ:\n" + "\n".join(differ)
    assert non_empty >= 0.6 * len(uris), "most URIs must select something, or equality proves little"
    everything = copick_answer(reference, kind, "*")
    assert len(everything) > 0  # and the "*" answer is not the answer to every URI:
    assert sum(copick_answer(reference, kind, u) != everything for u in uris) >= len(uris) // 2


def test_resolve_in_one_run_like_copick(catalog: Any, reference: Any) -> None:
    for kind, uri in [("picks", "ribosome:*/*"), ("picks", "re:.*:al.*"), ("segmentation", "*"), ("tomogram", "wbp")]:
        for run in ("TS_0001", "TS_0002", "TS_0004"):
            assert catalog_answer(catalog, kind, uri, run) == copick_answer(reference, kind, uri, run), (kind, uri, run)
    assert catalog_answer(catalog, "picks", "ribosome", "TS_0002")  # not vacuous
    with pytest.raises(ValueError, match="not found"):  # copick: "Run 'TS_9999' not found"
        copick_answer(reference, "picks", "*", "TS_9999")
    with pytest.raises(NotFoundError, match=r"TS_9999.*query runs"):
        catalog.resolve("picks", "*", run="TS_9999")
    assert catalog.resolve("picks", "nosuch", run="TS_0001") == []  # a known run with nothing: no error


def test_parse_like_copick() -> None:
    """Our parser (which runs without copick) reads every URI as copick's does, and refuses what it refuses."""
    pytest.importorskip("copick")
    from copick.util.uri import parse_copick_uri

    cases = [(k, u) for k, uris in URIS.items() for u in uris] + INVALID
    for kind, uri in cases:
        try:
            want: Any = parse_copick_uri(uri, kind)
        except ValueError:
            with pytest.raises(InvalidURIError):
                parse_uri(uri, kind)
            continue
        assert parse_uri(uri, kind).as_dict() == want, (kind, uri)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(list(URIS)),
    text=st.text(alphabet=":/@?=&*ab1.[]! ", max_size=14).map(lambda t: t.replace("=", "multilabel=")),
)
def test_parse_like_copick_any_text(kind: str, text: str) -> None:
    pytest.importorskip("copick")
    from copick.util.uri import parse_copick_uri

    try:
        want: Any = parse_copick_uri(text, kind)
    except ValueError:
        with pytest.raises(InvalidURIError):
            parse_uri(text, kind)
        return
    assert parse_uri(text, kind).as_dict() == want


def test_every_uri_is_one_query(catalog: Any) -> None:
    """A URI is one SQL statement, parents included: reading the keys of its rows issues no further query."""
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append(statement)

    sa.event.listen(catalog.engine, "before_cursor_execute", count)
    try:
        for kind, uri in [
            ("picks", "re:ribo.*:al.*/1"),
            ("mesh", "mem*"),
            ("filaments", "*:[Bb]ob/*"),
            ("segmentation", "*:*/*@1*?multilabel=false"),
            ("tomogram", "wbp*@10"),
            ("feature", "*@*:[sS]obel"),
        ]:
            statements.clear()
            keys = [row_key(kind, r) for r in catalog.resolve(kind, uri)]
            assert keys and len(statements) == 1, (kind, uri, statements)
    finally:
        sa.event.remove(catalog.engine, "before_cursor_execute", count)


# --------------------------------------------------------------------------------------------
# Every helper takes a URI, ANDed with its filters


def test_helpers_take_a_uri(catalog: Any) -> None:
    cat = catalog
    uri = "re:(ribosome|proteasome):.*/.*"
    every = {row_key("picks", r) for r in cat.resolve("picks", uri)}
    alice = {row_key("picks", r) for r in cat.picks(user_id="alice")}
    both = {row_key("picks", r) for r in cat.picks(uri=uri, user_id="alice")}
    assert both and both == every & alice and both != every
    assert {row_key("mesh", r) for r in cat.meshes(uri="membrane", run="TS_0001")} == {
        k for k in (row_key("mesh", r) for r in cat.resolve("mesh", "membrane")) if k[0] == "TS_0001"
    }
    assert {row_key("filaments", r) for r in cat.filaments(uri="*:tracer", layer="static")} == {
        ("TS_0003", "microtubule", "tracer", "0", True)
    }
    segs = cat.segmentations(uri="*:*/*@10", is_multilabel=True)
    assert segs and all(s.is_multilabel and s.voxel_size == 10.0 for s in segs)
    assert [row_key("tomogram", t) for t in cat.tomograms(uri="wbp@*", voxel_size=7.84)] == [
        ("TS_0003", 7.84, "wbp", True)
    ]
    assert {f.feature_type for f in cat.features(uri="*@*:*obel", tomo_type="wbp")} == {"sobel", "Sobel"}
    # aggregates and the points table read the same selection
    rows = cat.resolve("picks", "ribosome:*/1")
    summary = cat.pick_summary(by=("user_id",), uri="ribosome:*/1")
    assert {r["user_id"]: (r["picks"], r["points"]) for r in summary} == {
        u: (sum(1 for p in rows if p.user_id == u), sum(p.n_points for p in rows if p.user_id == u))
        for u in {p.user_id for p in rows}
    }
    table = cat.points_table(uri="ribosome:*/1", format="records")
    assert len(table) == sum(p.n_points for p in rows) > 0
    assert {(t["run"], t["user_id"]) for t in table} == {(p.run_name, p.user_id) for p in rows}


# --------------------------------------------------------------------------------------------
# Bad input: one line that shows the grammar


@pytest.mark.parametrize(("kind", "uri"), INVALID + BAD_REGEX)
def test_invalid_uri_is_one_line_with_the_grammar(catalog: Any, kind: str, uri: str) -> None:
    with pytest.raises(InvalidURIError) as info:
        catalog.resolve(kind, uri)
    message = str(info.value)
    assert "\n" not in message and repr(uri) in message and GRAMMAR[copick_kind(kind)] in message


def test_unknown_kind_names_the_kinds(catalog: Any) -> None:
    with pytest.raises(CatalogError, match=r"unknown kind 'pickz'.*picks, meshes, filaments, segmentations"):
        catalog.resolve("pickz", "*")
    with pytest.raises(InvalidURIError, match="is text"):
        parse_uri(42, "picks")  # type: ignore[arg-type]


def test_postgres_regex_it_cannot_read_is_a_uri_error(catalog: Any, reference: Any) -> None:
    """A pattern Python reads but PostgreSQL's engine does not (possessive ``*+``) is a one-line URI error there."""
    if catalog.engine.dialect.name != "postgresql":  # SQLite runs Python's re, as copick does
        want = copick_answer(reference, "picks", "re:ri*+bosome")
        assert want and catalog_answer(catalog, "picks", "re:ri*+bosome") == want
        return
    with pytest.raises(InvalidURIError, match="PostgreSQL refuses a regular expression"):
        catalog.resolve("picks", "re:ri*+bosome")
    assert catalog.resolve("picks", "ribosome:alice/1")  # the session is usable afterwards


# --------------------------------------------------------------------------------------------
# The command line


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli_main, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("command", "kind", "uri"),
    [
        ("picks", "picks", "ribosome:al%ce/*"),
        ("picks", "picks", "re:.*:[A-Z].*/.*"),
        ("meshes", "mesh", "membrane:[A-Z]*/*"),
        ("filaments", "filaments", "*:[Bb]ob/*"),
        ("segmentations", "segmentation", "*?multilabel=true"),
        ("tomograms", "tomogram", "wbp@7.84"),
        ("features", "feature", "*@*:[sS]obel"),
    ],
)
def test_query_command_takes_a_uri(catalog: Any, project: Path, command: str, kind: str, uri: str) -> None:
    result = _cli("query", command, str(project), uri, "--db", catalog.db_url, "--format", "json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    rows = catalog.resolve(kind, uri)
    assert printed and len(printed) == len(rows)
    assert sorted(p["path"] for p in printed if "path" in p) == sorted(r.path for r in rows if "path" in printed[0])
    name = {"segmentation": "name", "tomogram": "tomo_type", "feature": "feature_type"}.get(kind, "object_name")
    attr = {"picks": "object_name", "mesh": "object_name", "filaments": "object_name"}.get(kind, name)
    assert Counter(p[name] for p in printed) == Counter(getattr(r, attr) for r in rows)


def test_query_command_uri_and_options_combine(catalog: Any, project: Path) -> None:
    result = _cli(
        "query", "picks", str(project), "ribosome", "--user", "alice", "--db", catalog.db_url, "--format", "json"
    )
    printed = json.loads(result.output)
    assert printed and {(p["object_name"], p["user_id"]) for p in printed} == {("ribosome", "alice")}
    assert len(printed) == len(catalog.picks(uri="ribosome", user_id="alice"))


@pytest.mark.parametrize(("command", "uri"), [("picks", "ribosome::1"), ("segmentations", "*?instance=1&panoptic=1")])
def test_query_command_invalid_uri_is_one_line(catalog: Any, project: Path, command: str, uri: str) -> None:
    result = CliRunner().invoke(cli_main, ["query", command, str(project), uri, "--db", catalog.db_url])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "error: invalid" in lines[0] and "the grammar is" in lines[0], result.output


# --------------------------------------------------------------------------------------------
# The SQL pieces against Python itself, on both backends: globs (fnmatch) and voxel sizes as text

GLOB_ALPHABET = "ab%_[]!^-*?\\.é"


@pytest.fixture(scope="module")
def names_table(catalog: Any) -> Iterator[tuple[Any, list[str]]]:
    """A table of awkward names in the catalog's database (its engine: REGEXP registered on SQLite)."""
    names = sorted(
        {"", "a", "b", "ab", "ba", "aab", "a%b", "a_b", "a[b", "a]b", "a[b]", "[", "]", "!", "^a", "a-b", "a*b", "a?b"}
        | {"a\\b", "\\", "a.b", "é", "aé", "A", "AB", "%", "_", "ab%", "a_", "-", "b-a", "[!a]", "é_%"}
    )
    table = sa.Table(f"uri_names_{uuid.uuid4().hex[:8]}", sa.MetaData(), sa.Column("name", sa.Text))
    table.create(catalog.engine)
    with catalog.engine.begin() as conn:
        conn.execute(table.insert(), [{"name": n} for n in names])
    yield table, names
    table.drop(catalog.engine)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.text(alphabet=GLOB_ALPHABET, max_size=6))
def test_globs_in_sql_select_what_fnmatch_does(catalog: Any, names_table: tuple[Any, list[str]], pattern: str) -> None:
    table, names = names_table
    uri = parse_uri("x", "picks")
    try:
        want = {n for n in names if fnmatch.fnmatchcase(n, pattern)}
    except re.error:  # fnmatch itself cannot read it (a reversed range in a set): so neither may we
        with pytest.raises(InvalidURIError):
            _glob(table.c.name, pattern, catalog.engine.dialect.name, uri)
        return
    cond = _glob(table.c.name, pattern, catalog.engine.dialect.name, uri)
    with catalog.engine.connect() as conn:
        got = set(conn.scalars(sa.select(table.c.name).where(cond)))
    assert got == want, pattern


def test_voxel_size_as_text_is_pythons(catalog: Any) -> None:
    values = [10.0, 7.84, 13.48, 0.1, 1e-05, 123456.789, 2.5, 1e16, 3e20, 100.0, 0.30000000000000004]
    stmt = sa.select(*(float_text(sa.literal(v, sa.Float), catalog.engine.dialect.name) for v in values))
    with catalog.engine.connect() as conn:
        got = list(conn.execute(stmt).one())
    assert got == [str(float(v)) for v in values]


def test_the_fixture_exercises_the_corners(catalog: Any, reference: Any) -> None:
    """The odd names are really in the project and in copick's listing, so the URI tests reach them."""
    users = {p.user_id for run in reference.runs for p in run.picks}
    assert {"al%ce", "br]ck", "c^t", "st*r", "x[1]", "a.b", "andré", "ALICE"} <= users
    assert {r.user_id for r in catalog.picks()} == users
    assert np.isclose(sorted({s.voxel_size for s in catalog.segmentations()}), [7.84, 10.0, 13.48]).all()


@settings(max_examples=400, deadline=None)
@given(
    pattern=st.one_of(
        st.text(alphabet="ab.*+{}1,|()^$\\[]-", max_size=7),
        st.tuples(
            st.text(alphabet="ab1-", min_size=1, max_size=3), st.sampled_from([".*", "b*", "", "(a|b)*", ".+", "$"])
        ).map("".join),
    ),
    names=st.lists(st.text(alphabet="ab.1-\n", max_size=5), max_size=12),
)
def test_regex_shortcuts_are_exact(pattern: str, names: list[str]) -> None:
    """The two shortcuts of ``re:`` parts: "matches every name" and "every match starts with this prefix"."""
    from copick_catalog.catalog.uri_sql import literal_prefix, matches_everything, prefix_only

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "possible nested set": still a valid pattern
            compiled = re.compile(pattern)
    except re.error:
        return
    matched = [n for n in names if compiled.match(n)]
    if matches_everything(pattern):
        assert matched == names
    assert all(n.startswith(literal_prefix(pattern)) for n in matched)
    prefix = prefix_only(pattern)
    if prefix is not None:
        assert matched == [n for n in names if n.startswith(prefix)]

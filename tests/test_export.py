"""``Catalog.export`` and ``copick-catalog export points``: the picks a URI selects, out of the catalog.

Parquet and CSV are compared point by point with what copick itself reads from the same pick files
(``resolve_copick_objects`` + ``picks.points`` on ``CopickRootFSSpec``); the STAR files are read back
with starfile and compared with copick's own export of the same picks from a plain copick root, per
run and combined; EM, Dynamo and copick CSV files must be byte-identical to copick's. Memory is
measured in a child process: streamed in small batches it stays a fraction of the whole table.
"""

from __future__ import annotations

import csv
import filecmp
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from copick_catalog import Catalog
from copick_catalog.catalog.export import COLUMNS, ExportError
from copick_catalog.cli import main as cli_main
from copick_catalog.errors import CatalogError
from copick_catalog.sample import make_sample_project
from tests.conftest import age_tree, fresh_pg_database, skip_or_fail_without_pg

pa = pytest.importorskip("pyarrow", reason="Parquet export needs pyarrow (pip install 'copick-catalog[export]')")
pq = pytest.importorskip("pyarrow.parquet")

URIS = ["ribosome:*/*", "re:.*:(alice|bob)/.*", "*:pytom/0", "proteasome:carol", "*"]
INDEX = {f"TS_{i:04d}": i for i in range(1, 5)}


def _exporters() -> Any:
    """copick's exporters, or a skip saying why (copick missing, or a copick without copick.ops.export)."""
    pytest.importorskip("copick", reason="the reference answers come from copick")
    return pytest.importorskip(
        "copick.ops.export", reason="this copick has no copick.ops.export: the star/em/dynamo formats are refused"
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sample project (4 runs, tomograms on 2); returns its config path."""
    summary = make_sample_project(tmp_path_factory.mktemp("export") / "project", runs=4, tomogram_runs=2, size=8)
    age_tree(summary.config.parent)
    return summary.config


@pytest.fixture(scope="module")
def reference(project: Path) -> Any:
    copick = pytest.importorskip("copick", reason="the reference answers come from copick")
    return copick.from_file(str(project))


@pytest.fixture(scope="module")
def _pg_module_db() -> Iterator[str]:
    skip_or_fail_without_pg()
    with fresh_pg_database("cc_export") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def catalog(request: pytest.FixtureRequest, project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('export-db') / 'catalog.sqlite'}"
    else:
        url = request.getfixturevalue("_pg_module_db")
    cat = Catalog.open(project, db=url)
    assert cat.index().errors == 0
    yield cat
    cat.close()


def copick_points(reference: Any, uri: str) -> list[tuple[Any, ...]]:
    """Every point of the picks copick selects with ``uri``, as the rows of our table (sorted)."""
    from copick.util.uri import resolve_copick_objects

    rows = []
    for picks in resolve_copick_objects(uri, reference, "picks"):
        layer = "static" if picks.read_only else "overlay"
        names = (picks.run.name, picks.pickable_object_name, picks.user_id, picks.session_id, layer)
        for p in picks.points:
            rows.append((*names, p.location.x, p.location.y, p.location.z, p.instance_id, p.score))
    return sorted(rows)


def table_rows(table: Any) -> list[tuple[Any, ...]]:
    columns = [table.column(c).to_pylist() for c in COLUMNS]
    return sorted(zip(*columns, strict=True))


# --------------------------------------------------------------------------------------------
# Parquet and CSV: every point, streamed


@pytest.mark.parametrize("uri", URIS)
def test_parquet_has_the_points_copick_reads(catalog: Any, reference: Any, tmp_path: Path, uri: str) -> None:
    out = tmp_path / "points.parquet"
    report = catalog.export(uri, out, batch_points=37)
    want = copick_points(reference, uri)
    assert want, "the URI selects something"
    table = pq.read_table(out)
    assert table.column_names == list(COLUMNS)
    for name in ("run", "object_name", "user_id", "session_id", "layer"):
        assert pa.types.is_dictionary(table.schema.field(name).type), name
    assert table_rows(table) == want
    assert report.points == len(want) == table.num_rows and report.picks == len(catalog.resolve("picks", uri))
    assert pq.ParquetFile(out).metadata.num_row_groups == report.batches > 1  # written batch by batch
    assert all(b <= 37 for b in (len(g) for g in pq.ParquetFile(out).iter_batches(batch_size=10**6)))
    assert not list(tmp_path.glob(".*partial"))


def test_csv_has_the_same_rows(catalog: Any, reference: Any, tmp_path: Path) -> None:
    uri = "re:.*:(alice|bob)/.*"
    catalog.export(uri, tmp_path / "points.csv", format="csv", batch_points=50)
    with open(tmp_path / "points.csv", newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == list(COLUMNS)
        rows = sorted(
            (*r[:5], float(r[5]), float(r[6]), float(r[7]), int(r[8]), float(r[9])) for r in reader
        )  # floats read back exactly: the CSV holds each double's shortest round-trip text
    assert rows == copick_points(reference, uri)


def test_run_filter_and_empty_selection(catalog: Any, reference: Any, tmp_path: Path) -> None:
    report = catalog.export("ribosome", tmp_path / "one.parquet", run="TS_0002")
    got = table_rows(pq.read_table(tmp_path / "one.parquet"))
    assert got and got == [r for r in copick_points(reference, "ribosome") if r[0] == "TS_0002"]
    assert report.points == len(got)
    empty = catalog.export("nosuch:*/*", tmp_path / "none.parquet")
    assert empty.points == 0 and pq.read_table(tmp_path / "none.parquet").num_rows == 0
    with pytest.raises(CatalogError, match="TS_9999"):
        catalog.export("*", tmp_path / "x.parquet", run="TS_9999")


MEMORY_CHILD = r"""
import json, sys, tracemalloc
import pyarrow as pa
from copick_catalog import Catalog
cat = Catalog.open(sys.argv[1], db=sys.argv[2])
cat.export("*", sys.argv[3], run="TS_0001", batch_points=100)  # warm up: imports are not the export's memory
tracemalloc.start()
report = cat.export("*", sys.argv[3], batch_points=int(sys.argv[4]))
peak = tracemalloc.get_traced_memory()[1] + pa.default_memory_pool().max_memory()
print(json.dumps({"peak": peak, "points": report.points, "batches": report.batches}))
"""


def test_memory_stays_flat_when_streamed(tmp_path: Path) -> None:
    """150,000 points: in batches of 2,000 the export's peak is a small fraction of the same export in one batch."""
    summary = make_sample_project(tmp_path / "big", runs=40, tomogram_runs=0, points=(300, 320))
    db = f"sqlite:///{tmp_path / 'big.sqlite'}"
    with Catalog.open(summary.config, db=db) as cat:
        cat.index()

    def child(batch: int) -> dict[str, int]:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                MEMORY_CHILD,
                str(summary.config),
                db,
                str(tmp_path / f"b{batch}.parquet"),
                str(batch),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    streamed, whole = child(2_000), child(10**9)
    assert streamed["points"] == whole["points"] == summary.points > 100_000
    assert streamed["batches"] >= summary.points // 2_000 and whole["batches"] == 1
    assert whole["peak"] > 40 * summary.points  # the measure sees a whole table (5 float64 per point at least)
    assert streamed["peak"] < whole["peak"] / 8, (streamed, whole)


# --------------------------------------------------------------------------------------------
# STAR, EM, Dynamo, copick CSV: copick's exporters on the catalog root, equal to copick's own export


def _star(path: Path) -> dict[str, Any]:
    import starfile

    blocks = starfile.read(path, always_dict=True)
    return {name: df.sort_values(list(df.columns)).reset_index(drop=True) for name, df in blocks.items()}


def _same_star(a: Path, b: Path) -> None:
    import pandas as pd

    ours, theirs = _star(a), _star(b)
    assert ours.keys() == theirs.keys()
    for name in ours:
        pd.testing.assert_frame_equal(ours[name], theirs[name])


@pytest.mark.parametrize("uri", ["ribosome:*/*", "re:.*:(alice|bob)/.*"])
def test_star_combined_equals_copicks_own(catalog: Any, reference: Any, tmp_path: Path, uri: str) -> None:
    ops = _exporters()
    ops.export_relion_particles(reference, uri, str(tmp_path / "copick.star"), voxel_spacing=10.0)
    report = catalog.export(uri, tmp_path / "ours.star", format="star", voxel_size=10.0)
    assert report.files == [str(tmp_path / "ours.star")]
    _same_star(tmp_path / "ours.star", tmp_path / "copick.star")
    particles = _star(tmp_path / "ours.star")["particles"]
    assert len(particles) == len(copick_points(reference, uri)) > 0
    assert set(particles["rlnTomoName"]) == {r[0] for r in copick_points(reference, uri)}


def test_star_per_run_equals_copicks_own(catalog: Any, project: Path, tmp_path: Path) -> None:
    ops = _exporters()
    uri = "ribosome:*/*"
    ops.export(str(project), str(tmp_path / "copick"), picks_uri=uri, output_format="star", voxel_spacing=10.0)
    report = catalog.export(uri, tmp_path / "ours", format="star", voxel_size=10.0, per_run=True)
    names = sorted(os.listdir(tmp_path / "copick"))
    assert names and sorted(os.listdir(tmp_path / "ours")) == names
    assert sorted(Path(f).name for f in report.files) == names
    for name in names:
        _same_star(tmp_path / "ours" / name, tmp_path / "copick" / name)


@pytest.mark.parametrize(
    ("ours", "theirs", "ext"), [("em", "em", ".em"), ("dynamo", "dynamo", ".tbl"), ("copick-csv", "csv", ".csv")]
)
def test_em_dynamo_csv_equal_copicks_own(
    catalog: Any, project: Path, tmp_path: Path, ours: str, theirs: str, ext: str
) -> None:
    ops = _exporters()
    uri = "re:(ribosome|proteasome):.*/.*"
    vs = None if theirs == "csv" else 10.0
    index = None if theirs == "csv" else INDEX
    ops.export_picks_combined(
        str(project), str(tmp_path / f"copick{ext}"), uri, theirs, voxel_spacing=vs, run_to_index=index
    )
    catalog.export(uri, tmp_path / f"ours{ext}", format=ours, voxel_size=vs, run_to_index=index)
    assert filecmp.cmp(tmp_path / f"ours{ext}", tmp_path / f"copick{ext}", shallow=False)
    ops.export(str(project), str(tmp_path / "copick"), picks_uri=uri, output_format=theirs, voxel_spacing=vs)
    catalog.export(uri, tmp_path / "ours", format=ours, voxel_size=vs, per_run=True)
    names = sorted(os.listdir(tmp_path / "copick"))
    assert len(names) > 4 and sorted(os.listdir(tmp_path / "ours")) == names
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "ours", tmp_path / "copick", names, shallow=False)
    assert (mismatch, errors) == ([], []) and match == names


def test_copick_format_errors(catalog: Any, tmp_path: Path) -> None:
    _exporters()
    with pytest.raises(ExportError, match="needs --voxel-size"):
        catalog.export("*", tmp_path / "x.star", format="star")
    with pytest.raises(ExportError, match="--index-map"):
        catalog.export("*", tmp_path / "x.em", format="em", voxel_size=10.0)
    with pytest.raises(ExportError, match="nothing to export"):
        catalog.export("nosuch", tmp_path / "x.star", format="star", voxel_size=10.0)
    catalog.export("ribosome:alice/1", tmp_path / "em", format="em", voxel_size=10.0, per_run=True)
    with pytest.raises(ExportError, match="do not overwrite"):  # copick's EM writer refuses an existing file
        catalog.export("ribosome:alice/1", tmp_path / "em", format="em", voxel_size=10.0, per_run=True)


def test_point_format_errors(catalog: Any, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"unknown export format 'xml'; use one of: parquet, csv, star"):
        catalog.export("*", tmp_path / "x", format="xml")
    with pytest.raises(ExportError, match="voxel_size apply to the star"):
        catalog.export("*", tmp_path / "x.parquet", voxel_size=10.0)
    with pytest.raises(ExportError, match="batch_points"):
        catalog.export("*", tmp_path / "x.parquet", batch_points=-1)
    with pytest.raises(CatalogError, match="the grammar is"):
        catalog.export("a:b:c", tmp_path / "x.parquet")
    assert not list(tmp_path.iterdir()) or all(p.suffix != ".parquet" for p in tmp_path.iterdir())


def test_without_copicks_exporters_the_formats_are_refused(
    catalog: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In an environment whose copick has no copick.ops.export: a one-line error naming the fix."""
    monkeypatch.setitem(sys.modules, "copick.ops.export", None)  # import fails, as there
    with pytest.raises(ExportError) as info:
        catalog.export("*", tmp_path / "x.star", format="star", voxel_size=10.0)
    message = str(info.value)
    assert "\n" not in message and "copick.ops.export" in message and "--format parquet|csv" in message
    catalog.export("*", tmp_path / "x.parquet")  # the catalog's own formats still work


# --------------------------------------------------------------------------------------------
# The command line


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli_main, [str(a) for a in args])


def test_export_points_command(catalog: Any, project: Path, reference: Any, tmp_path: Path) -> None:
    uri = "ribosome:*/1"
    result = _cli("export", "points", project, uri, "-o", tmp_path / "p.parquet", "--db", catalog.db_url)
    assert result.exit_code == 0, result.output
    assert table_rows(pq.read_table(tmp_path / "p.parquet")) == copick_points(reference, uri)
    assert f"wrote {len(copick_points(reference, uri))} points" in result.output
    result = _cli("export", "points", project, uri, "-o", tmp_path / "p.csv", "--format", "csv", "--db", catalog.db_url)
    assert result.exit_code == 0 and (tmp_path / "p.csv").read_text().startswith('"run",')
    _exporters()
    args = ["export", "points", project, uri, "--format", "star", "--voxel-size", "10", "--db", catalog.db_url]
    result = _cli(*args, "-o", tmp_path / "p.star")
    assert result.exit_code == 0, result.output
    direct = tmp_path / "direct.star"
    catalog.export(uri, direct, format="star", voxel_size=10.0)
    _same_star(tmp_path / "p.star", direct)
    result = _cli(*args, "--output-dir", tmp_path / "dir", "--run", "TS_0002")
    assert result.exit_code == 0 and sorted(os.listdir(tmp_path / "dir")) == ["TS_0002_ribosome_alice_1.star"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["a:b:c", "-o", "x.parquet"], "the grammar is object:user/session"),
        (["*", "-o", "x.parquet", "--run", "TS_9999"], "TS_9999"),
        (["*", "-o", "x.parquet", "--format", "xml"], "'xml' is not one of"),
        (["*"], "exactly one of --output-file"),
        (["*", "-o", "x.star", "--output-dir", "d"], "exactly one of --output-file"),
        (["*", "--output-dir", "d"], "use --output-file"),
        (["*", "-o", "x.star", "--format", "star"], "needs --voxel-size"),
        (["*", "-o", "x.em", "--format", "em", "--voxel-size", "10"], "--index-map"),
        (["*", "-o", "x.parquet", "--voxel-size", "10"], "apply to star"),
    ],
)
def test_export_points_bad_input_is_one_line(
    catalog: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _cli("export", "points", project, *extra, "--db", catalog.db_url)
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.output.splitlines() if "rror" in line]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert not list(tmp_path.glob("x.*"))


def test_export_points_in_copicks_cli(catalog: Any, project: Path, reference: Any, tmp_path: Path) -> None:
    """``copick catalog export points -c CONFIG URI``: the same command with copick's conventions."""
    pytest.importorskip("copick")
    from copick_catalog.copick.plugin import catalog as plugin

    out = tmp_path / "p.parquet"
    args = ["export", "points", "-c", str(project), "ribosome:*/1", "-o", str(out), "--db", catalog.db_url]
    result = CliRunner().invoke(plugin, args)
    assert result.exit_code == 0, result.output
    assert table_rows(pq.read_table(out)) == copick_points(reference, "ribosome:*/1")

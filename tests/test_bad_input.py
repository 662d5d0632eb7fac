"""Bad input of every kind, on real projects and real databases: hostile or broken payloads, odd file
types, unreadable directories, an unmounted root, leaked credentials, and command lines that must fail
with one clear line.

Each broken thing must cost exactly one ``index_errors`` row (naming the file and what is wrong with it)
and nothing else: the other files index normally, the run completes, a file that keeps failing is not
read again until it changes, and fixing it clears the error.

Permission cases run the indexer as ``nobody`` (``setpriv``) in a subprocess, in a world-accessible
directory under /tmp (pytest's own temporary directories are private to root). The venv's interpreter
may not be usable by ``nobody``: on the development machine it is a symlink into /root/.pyenv, and /root
is mode 0700, so its standard library cannot be read. A system interpreter of the same Python version
then runs the venv's site-packages (which every user may read); without either, those tests skip and
say why.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.catalog.schema import FILE_MODELS, Feature, IndexRun, Mesh, Pick, Point, Run, Tomogram
from copick_catalog.catalog.sql import create_readonly_role
from copick_catalog.errors import CatalogError, IndexCancelled, RootError
from copick_catalog.formats import zarrio
from copick_catalog.formats.zarr import write_ome_zarr
from copick_catalog.index.grammar import Kind
from copick_catalog.sample import SampleSummary
from tests.conftest import age_tree, packed_points_match, run_object_counts

NOBODY = 65534
SECRETS = ("SEKRET1", "SEKRET2", "SEKRET3", "SEKRET4", "SEKRET5")


# ------------------------------------------------------------------------------------------
# helpers


def _age(path: Path, seconds: float = 600.0) -> None:
    """Set a file's mtime into the past: a settled edit, not one the indexer re-checks as racy."""
    past = time.time() - seconds
    os.utime(path, (past, past))


def _run_dir(sample: SampleSummary, layer: str, run: str) -> Path:
    return sample.config.parent / layer / "ExperimentRuns" / run


def _point(x: float, y: float, z: float, instance_id: int = 0, score: float = 1.0) -> dict[str, Any]:
    """One point as copick dumps it (``model_dump()`` then ``json.dump``)."""
    identity = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    return {
        "location": {"x": x, "y": y, "z": z},
        "transformation_": identity,
        "instance_id": instance_id,
        "score": score,
    }


def _pick_doc(user: str, session: str, run: str, points: list[dict[str, Any]], obj: str = "ribosome") -> dict:
    return {
        "pickable_object_name": obj,
        "user_id": user,
        "session_id": session,
        "run_name": run,
        "voxel_spacing": None,
        "unit": "angstrom",
        "points": points,
        "trust_orientation": True,
    }


def _write_old(path: Path, data: str | bytes, seconds: float = 600.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    _age(path, seconds)


def _errors(cat: Catalog) -> dict[tuple[str, str], str]:
    return {(e.layer, e.path): e.message for e in cat.errors()}


def _count(cat: Catalog, model: Any, *where: Any) -> int:
    with cat.session() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)


COUNTED = ("runs", "voxel_spacings", *(m.__tablename__ for m in FILE_MODELS.values()), "points", "index_errors")


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in COUNTED}


def _file_rows(engine: sa.Engine) -> set[tuple[str, str, str, str, bool]]:
    """Every file-backed row as (table, layer, path, fingerprint, stale)."""
    out = set()
    with engine.connect() as conn:
        for model in FILE_MODELS.values():
            t = model.__tablename__
            for layer, path, fp, stale in conn.execute(sa.text(f"SELECT layer, path, fingerprint, stale FROM {t}")):
                out.add((t, layer, path, fp, bool(stale)))
    return out


def _content(engine: sa.Engine) -> dict[str, Any]:
    """What the catalog says about the project, independent of row ids and timestamps."""
    with engine.connect() as conn:
        return {
            "files": _file_rows(engine),
            "runs": set(conn.execute(sa.text("SELECT name, in_static, in_overlay FROM runs")).all()),
            "tomograms": {
                (path, tuple(json.loads(shape) if isinstance(shape, str) else shape), dtype, levels, fmt)
                for path, shape, dtype, levels, fmt in conn.execute(
                    sa.text("SELECT path, shape, dtype, n_levels, zarr_format FROM tomograms")
                )
            },
            "points": conn.execute(sa.text("SELECT count(*), sum(x), sum(instance_id) FROM points")).one(),
            "run_objects": run_object_counts(engine),
        }


def _stale_rows(engine: sa.Engine) -> set[tuple[str, str, str]]:
    return {(t, layer, path) for t, layer, path, _fp, stale in _file_rows(engine) if stale}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COPICK_CATALOG_DB"}
    env.update(extra)
    return env


def _cli(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "copick_catalog.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(),
        **kw,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, exactly one line on stderr, no traceback; returns that line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------
# running as an unprivileged user


@functools.cache
def _nobody_python() -> tuple[tuple[str, ...], str] | str:
    """(argv prefix, code preamble) that runs this venv's Python code as ``nobody``, or why that is impossible."""
    if os.geteuid() != 0:
        return "the tests do not run as root, so they cannot switch to another user"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return "setpriv is not installed"
    drop = (setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    site_dir = sysconfig.get_paths()["purelib"]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates: list[tuple[tuple[str, ...], str]] = [((*drop, sys.executable), "")]
    # The venv's interpreter may be a symlink into a private home (/root/.pyenv): then a system
    # interpreter of the same version runs the venv's packages (no site: only the venv's packages).
    boot = f"import site; site.addsitedir({site_dir!r})\n"
    for exe in dict.fromkeys(p for p in (f"/usr/bin/python{version}", shutil.which(f"python{version}")) if p):
        if os.path.realpath(exe) != os.path.realpath(sys.executable):
            candidates.append(((*drop, exe, "-S"), boot))
    probe = "import sys, copick_catalog, sqlalchemy, numpy, msgspec, psycopg, zarr\nprint(sys.prefix, sys.base_prefix)"
    for argv, pre in candidates:
        try:
            out = subprocess.run([*argv, "-c", pre + probe], capture_output=True, text=True, timeout=60, cwd="/")
        except OSError:
            continue
        if out.returncode != 0:
            continue
        if not pre and out.stdout.split() != [sys.prefix, sys.base_prefix]:
            # it started, but could not reach its own installation (its stdlib then comes from elsewhere):
            # run a whole system interpreter instead of such a hybrid
            continue
        return argv, pre
    return (
        f"neither {sys.executable} nor a system python{version} can import this venv's packages as nobody "
        "(is the venv readable by other users?)"
    )


@pytest.fixture
def nobody() -> tuple[tuple[str, ...], str]:
    how = _nobody_python()
    if isinstance(how, str):
        pytest.skip(f"cannot run as an unprivileged user: {how}")
    return how


def _as_nobody(
    how: tuple[tuple[str, ...], str], code: str, *args: str, cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    argv, pre = how
    return subprocess.run(
        [*argv, "-c", pre + code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_clean_env(HOME=str(cwd), **env),
    )


_CLI_CODE = "import sys\nfrom copick_catalog.cli import main\nsys.argv[0] = 'copick-catalog'\nmain()\n"
_INDEX_CODE = """
import json, logging, sys
from copick_catalog import Catalog
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
with Catalog.open(sys.argv[1], db=sys.argv[2]) as cat:
    r = cat.index()
    print(json.dumps({"errors": r.errors, "files_read": r.files_read, "read_only": cat.read_only}))
"""


def _nobody_cli(how: tuple[tuple[str, ...], str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _as_nobody(how, _CLI_CODE, *args, cwd=cwd)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory under /tmp that every user may enter and write (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="cc-bad-input-", dir="/tmp"))
    os.chmod(d, 0o777)
    try:
        yield d
    finally:
        for dirpath, dirnames, _files in os.walk(d):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o755)
        shutil.rmtree(d, ignore_errors=True)


def _shared_project(sample: SampleSummary, shared: Path) -> Path:
    """A copy of the sample project in ``shared`` that every user may read; returns its config."""
    src = sample.config.parent
    dst = shared / "project"
    shutil.copytree(src, dst, symlinks=True)  # copy2: mtimes (aged by the fixture) are kept
    for dirpath, _dirnames, files in os.walk(dst):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    cfg = dst / "copick_config.json"
    text = cfg.read_text().replace(str(src), str(dst))
    cfg.write_text(text)
    os.chmod(cfg, 0o644)
    return cfg


def _share_sqlite(db_file: Path) -> None:
    """Let every user write the SQLite catalog (and its WAL files, if any); the lock file is left alone."""
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{db_file}{suffix}")
        if p.exists():
            os.chmod(p, 0o666)


# ------------------------------------------------------------------------------------------
# 1. numbers a pick file must not hold (NaN, Infinity, instance ids past float64's exact range)


def _bad_picks() -> dict[str, tuple[Callable[[list[dict[str, Any]]], None], str]]:
    """name -> (how the points are broken, the field the error must name)."""

    def loc(i: int, axis: str, value: float) -> Callable[[list[dict[str, Any]]], None]:
        return lambda pts: pts[i]["location"].__setitem__(axis, value)

    def key(i: int, name: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
        return lambda pts: pts[i].__setitem__(name, value)

    return {
        "nanloc_7_ribosome.json": (loc(1, "x", float("nan")), "points.1.location.x"),
        "infloc_7_ribosome.json": (loc(2, "y", float("inf")), "points.2.location.y"),
        "hugeid_7_ribosome.json": (key(1, "instance_id", 2**63), "points.1.instance_id"),
        "nanscore_7_ribosome.json": (key(0, "score", float("nan")), "points.0.score"),
    }


def _three_points() -> list[dict[str, Any]]:
    return [_point(10.0 * (i + 1), 20.0, 30.0, instance_id=i) for i in range(3)]


def _write_bad_pick(picks_dir: Path, name: str) -> None:
    breaks, _field = _bad_picks()[name]
    pts = _three_points()
    breaks(pts)
    # json.dumps writes NaN and Infinity as the bare words, exactly as copick's json.dump does
    _write_old(picks_dir / name, json.dumps(_pick_doc(name.split("_")[0], "7", "TS_0003", pts), indent=4))


@pytest.mark.parametrize("name", list(_bad_picks()))
def test_bad_number_in_pick_is_one_error_naming_the_field(sample: SampleSummary, db_url: str, name: str) -> None:
    _write_bad_pick(_run_dir(sample, "overlay", "TS_0003") / "Picks", name)
    field = _bad_picks()[name][1]
    with Catalog.open(sample.config, db=db_url) as cat:
        report = cat.index()
        errs = _errors(cat)
        assert set(errs) == {("overlay", f"ExperimentRuns/TS_0003/Picks/{name}")}, errs
        (message,) = errs.values()
        assert name in message, message
        assert field in message, f"the error does not name the field {field}: {message}"
        assert report.errors == 1
        assert _count(cat, Pick) == sample.pick_files


def test_bad_numbers_in_picks_are_parked_then_picked_up(sample: SampleSummary, db_url: str) -> None:
    picks_dir = _run_dir(sample, "overlay", "TS_0003") / "Picks"
    bad = _bad_picks()
    for name in bad:
        _write_bad_pick(picks_dir, name)
    big_ids = [0, 2**40, -(2**40)]
    big = [_point(1.5, 2.5, 3.5, instance_id=i) for i in big_ids]
    _write_old(picks_dir / "bigid_7_ribosome.json", json.dumps(_pick_doc("bigid", "7", "TS_0003", big), indent=4))

    with Catalog.open(sample.config, db=db_url) as cat:
        report = cat.index()
        errs = _errors(cat)
        assert set(errs) == {("overlay", f"ExperimentRuns/TS_0003/Picks/{n}") for n in bad}, errs
        for name in bad:
            message = errs[("overlay", f"ExperimentRuns/TS_0003/Picks/{name}")]
            assert name in message and "invalid pick file" in message, message
        assert report.errors == len(bad)
        # everything else is indexed normally, and the run finished
        assert _count(cat, Pick) == sample.pick_files + 1
        assert _count(cat, Pick, Pick.user_id.in_([n.split("_")[0] for n in bad])) == 0
        assert packed_points_match(cat.engine) == sample.pick_files + 1
        with cat.session() as s:
            assert s.scalars(sa.select(IndexRun.status).order_by(IndexRun.id.desc())).first() == "ok"
            assert s.scalar(sa.select(sa.func.sum(Pick.n_points))) == sample.points + len(big)

        # 2**40 is a whole number float64 holds exactly: stored as it is, on both backends
        with cat.engine.connect() as conn:
            stored = conn.execute(
                sa.select(Point.instance_id)
                .join(Pick, Pick.id == Point.pick_id)
                .where(Pick.user_id == "bigid")
                .order_by(Point.idx)
            ).all()
        assert [r[0] for r in stored] == big_ids
        records = cat.points_table(format="records", user_id="bigid")
        assert [r["instance_id"] for r in records] == big_ids
        assert all(type(r["instance_id"]) is int for r in records)

        # a file that keeps failing is parked: not read again until it changes
        again = cat.index()
        assert again.files_read == 0
        assert again.errors == len(bad)
        assert _errors(cat) == errs

        # fixing the files makes the next run read them and clear their errors
        for name in bad:
            doc = _pick_doc(name.split("_")[0], "7", "TS_0003", _three_points())
            _write_old(picks_dir / name, json.dumps(doc, indent=4), seconds=120)
        fixed = cat.index()
        assert fixed.files_read == len(bad)
        assert fixed.errors == 0
        assert _errors(cat) == {}
        assert _count(cat, Pick) == sample.pick_files + 1 + len(bad)
        assert packed_points_match(cat.engine) == sample.pick_files + 1 + len(bad)


# ------------------------------------------------------------------------------------------
# 2. a file name that is not UTF-8


def test_file_name_not_utf8(sample: SampleSummary, db_url: str) -> None:
    picks_dir = _run_dir(sample, "overlay", "TS_0001") / "Picks"
    raw = os.fsencode(picks_dir) + b"/d\xff_1_ribosome.json"
    doc = json.dumps(_pick_doc("d", "1", "TS_0001", _three_points()), indent=4).encode()
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, doc)
    finally:
        os.close(fd)
    past = time.time() - 600
    os.utime(raw, (past, past))

    with Catalog.open(sample.config, db=db_url) as cat:
        report = cat.index()
        errs = cat.errors()
        assert len(errs) == 1, [(e.path, e.message) for e in errs]
        assert "not valid UTF-8" in errs[0].message
        assert errs[0].layer == "overlay" and errs[0].path == "ExperimentRuns/TS_0001/Picks/d\\xff_1_ribosome.json"
        assert report.errors == 1
        assert _count(cat, Pick) == sample.pick_files
        assert _count(cat, Run) == sample.runs
        assert packed_points_match(cat.engine) == sample.pick_files
        again = cat.index()
        assert again.files_read == 0 and len(cat.errors()) == 1


# ------------------------------------------------------------------------------------------
# 3. zarr metadata with the wrong types


def _zarr_breaks() -> dict[str, tuple[str, Callable[[dict[str, Any]], Any], str]]:
    """tomo_type -> (metadata file in the group, what it becomes, a word the error must say)."""

    def zattrs(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], Any]:
        def apply(meta: dict[str, Any]) -> Any:
            change(meta["multiscales"][0])
            return meta

        return apply

    def scale_strings(ms: dict[str, Any]) -> None:
        ms["datasets"][0]["coordinateTransformations"][0]["scale"] = ["10", "10", "10"]

    return {
        "garbagedtype": ("0/.zarray", lambda meta: {"shape": [4], "dtype": "garbage"}, "dtype"),
        "intshape": ("0/.zarray", lambda meta: {**meta, "shape": 4}, "shape"),
        "stringscale": (".zattrs", zattrs(scale_strings), "scale"),
        "intdatasets": (".zattrs", zattrs(lambda ms: ms.__setitem__("datasets", 5)), "datasets"),
        "listattrs": (
            "zarr.json",
            lambda meta: {"zarr_format": 3, "node_type": "group", "attributes": [1]},
            "attributes",
        ),
    }


def test_zarr_metadata_with_wrong_types(sample: SampleSummary, db_url: str) -> None:
    static = sample.config.parent / "static" / "ExperimentRuns"
    source = static / "TS_0001" / "VoxelSpacing10.000" / "wbp.zarr"
    target_vs = "ExperimentRuns/TS_0003/VoxelSpacing10.000"
    breaks = _zarr_breaks()
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        before = _content(cat.engine)
        for tomo_type, (meta, change, _word) in breaks.items():
            group = sample.config.parent / "static" / target_vs / f"{tomo_type}.zarr"
            shutil.copytree(source, group)
            target = group / meta
            old = json.loads(target.read_text()) if target.exists() else {}
            target.write_text(json.dumps(change(old)))
            age_tree(group, 600)
        report = cat.index()
        errs = _errors(cat)
        assert set(errs) == {("static", f"{target_vs}/{t}.zarr") for t in breaks}, errs
        for tomo_type, (_meta, _change, word) in breaks.items():
            message = errs[("static", f"{target_vs}/{tomo_type}.zarr")]
            assert f"{tomo_type}.zarr" in message and word in message, message
        assert report.errors == len(breaks)
        assert _content(cat.engine) == before  # nothing else touched, no row for a broken group
        again = cat.index()
        assert again.files_read == 0 and again.errors == len(breaks)


# ------------------------------------------------------------------------------------------
# 4. GLB meshes with a hostile JSON chunk


def _glb(doc: Any) -> bytes:
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js)
    return b"glTF" + struct.pack("<II", 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js


def _prim(position: Any, indices: Any = None) -> dict[str, Any]:
    prim: dict[str, Any] = {"attributes": {"POSITION": position}}
    if indices is not None:
        prim["indices"] = indices
    return {"primitives": [prim]}


GLB_BREAKS = {
    "jsonlist": [1, 2, 3],
    "stringindex": {"accessors": [{"count": 3}], "meshes": [_prim("0")]},
    "meshesint": {"accessors": [], "meshes": 5},
    "countx": {"accessors": [{"count": "x"}], "meshes": [_prim(0)]},
    "counthuge": {"accessors": [{"count": 2**70}], "meshes": [_prim(0)]},
}


def test_glb_json_chunk_with_wrong_types(sample: SampleSummary, db_url: str) -> None:
    meshes = _run_dir(sample, "overlay", "TS_0001") / "Meshes"
    rel = "ExperimentRuns/TS_0001/Meshes"
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        before = _file_rows(cat.engine)
        for user, doc in GLB_BREAKS.items():
            _write_old(meshes / f"{user}_1_membrane.glb", _glb(doc))
        # the same hand-made layout, valid: 9 vertices, 12 indices (4 triangles)
        valid = {"accessors": [{"count": 9}, {"count": 12}], "meshes": [_prim(0, 1)]}
        _write_old(meshes / "handmade_1_membrane.glb", _glb(valid))
        report = cat.index()
        errs = _errors(cat)
        assert set(errs) == {("overlay", f"{rel}/{u}_1_membrane.glb") for u in GLB_BREAKS}, errs
        for user in GLB_BREAKS:
            assert f"{user}_1_membrane.glb" in errs[("overlay", f"{rel}/{user}_1_membrane.glb")]
        assert report.errors == len(GLB_BREAKS)
        with cat.session() as s:
            made = s.scalars(sa.select(Mesh).where(Mesh.user_id == "handmade")).one()
            assert (made.n_vertices, made.n_faces) == (9, 4)
        after = {r for r in _file_rows(cat.engine) if r[2] != f"{rel}/handmade_1_membrane.glb"}
        assert after == before  # nothing else touched, no row for a broken mesh
        again = cat.index()
        assert again.files_read == 0 and again.errors == len(GLB_BREAKS)


# ------------------------------------------------------------------------------------------
# 5. a FIFO and a device named like pick files


def test_fifo_and_device_named_like_picks(sample: SampleSummary, db_url: str) -> None:
    picks_dir = _run_dir(sample, "overlay", "TS_0001") / "Picks"
    fifo = picks_dir / "fifo_1_ribosome.json"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", picks_dir / "zero_1_ribosome.json")
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            with Catalog.open(sample.config, db=db_url) as cat:
                result["report"] = cat.index()
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():  # let a reader stuck on the FIFO go, so the process can end
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert not t.is_alive(), "the index hung on a FIFO or a device"
    assert "error" not in result, result.get("error")
    with Catalog.open(sample.config, db=db_url) as cat:
        errs = _errors(cat)
        rel = "ExperimentRuns/TS_0001/Picks"
        assert set(errs) == {("overlay", f"{rel}/fifo_1_ribosome.json"), ("overlay", f"{rel}/zero_1_ribosome.json")}
        for message in errs.values():
            assert "not a regular file" in message, message
        assert result["report"].errors == 2
        assert _count(cat, Pick) == sample.pick_files


# ------------------------------------------------------------------------------------------
# 6. directories the indexing user may not read


UNREADABLE = {
    "picks_dir": "ExperimentRuns/TS_0001/Picks",
    "run_dir": "ExperimentRuns/TS_0002",
    "runs_dir": "ExperimentRuns",
}


@pytest.mark.parametrize("passes", ["one pass", "slices of 3 runs"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("target", list(UNREADABLE))
def test_unreadable_directory_keeps_rows_stale(
    request: pytest.FixtureRequest,
    sample: SampleSummary,
    shared_dir: Path,
    nobody: tuple[tuple[str, ...], str],
    target: str,
    backend: str,
    passes: str,
) -> None:
    """A directory the indexing user cannot list is an error row, and what the catalog holds below it is kept
    (stale), whether the project is indexed in one pass or in passes over slices of runs."""
    per_pass = {"one pass": "100000", "slices of 3 runs": "3"}[passes]
    config = _shared_project(sample, shared_dir)
    db_file = shared_dir / "catalog.sqlite"
    db = f"sqlite:///{db_file}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    rel = UNREADABLE[target]
    with Catalog.open(config, db=db) as cat:
        assert cat.index().errors == 0
        engine = cat.engine
        before = _counts(engine)
        under = {
            (t, layer, path)
            for t, layer, path, _fp, _stale in _file_rows(engine)
            if layer == "overlay" and (path == rel or path.startswith(rel + "/"))
        }
        runs_before = set(cat.sql("SELECT name, in_static, in_overlay FROM runs").rows)
    assert under, "nothing was indexed below the directory"
    _share_sqlite(db_file)
    directory = config.parent / "overlay" / rel
    os.chmod(directory, 0)
    try:
        out = _as_nobody(nobody, _INDEX_CODE, str(config), db, cwd=shared_dir, COPICK_CATALOG_RUNS_PER_PASS=per_pass)
    finally:
        os.chmod(directory, 0o755)
    assert out.returncode == 0, out.stderr
    # an unreadable ExperimentRuns cannot be cut into slices: that index is one pass, which reports it
    sliced = per_pass == "3" and target != "runs_dir"
    assert ("runs in 4 passes of up to 3 runs" in out.stderr) == sliced, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) | {"files_read": 0} == {
        "errors": 1,
        "files_read": 0,
        "read_only": False,
    }
    with Catalog.open(config, db=db) as cat:
        errs = _errors(cat)
        assert set(errs) == {("overlay", rel)}, errs
        assert "permission denied" in errs[("overlay", rel)]
        assert _counts(cat.engine) == {**before, "index_errors": 1}  # nothing deleted
        assert _stale_rows(cat.engine) == under  # exactly what lies below it, marked stale
        assert set(cat.sql("SELECT name, in_static, in_overlay FROM runs").rows) == runs_before

    _share_sqlite(db_file)
    out = _as_nobody(nobody, _INDEX_CODE, str(config), db, cwd=shared_dir, COPICK_CATALOG_RUNS_PER_PASS=per_pass)
    assert out.returncode == 0, out.stderr
    with Catalog.open(config, db=db) as cat:
        assert _errors(cat) == {}
        assert _stale_rows(cat.engine) == set()
        assert _counts(cat.engine) == before


# ------------------------------------------------------------------------------------------
# 7. a root that looks unmounted


def test_empty_static_root_looks_unmounted(sample: SampleSummary, db_url: str, tmp_path: Path) -> None:
    static = sample.config.parent / "static"
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        before = _counts(cat.engine)
        static_picks = _count(cat, Pick, Pick.layer == "static")
        overlay_picks = _count(cat, Pick, Pick.layer == "overlay")
        assert static_picks > 0 and overlay_picks > 0
        aside = tmp_path / "aside"
        aside.mkdir()
        for child in list(static.iterdir()):
            shutil.move(str(child), str(aside / child.name))
        assert static.is_dir() and not any(static.iterdir())
        with pytest.raises(RootError) as info:
            cat.index()
        assert "looks unmounted" in str(info.value) and "static root" in str(info.value)
        assert _counts(cat.engine) == before
    out = _cli("index", str(sample.config), "--db", db_url)
    line = _assert_one_line_error(out)
    assert "unmounted" in line
    with Catalog.open(sample.config, db=db_url) as cat:
        assert _counts(cat.engine) == before
        report = cat.index(allow_empty_root=True)
        assert report.removed > 0
        for model in FILE_MODELS.values():
            assert _count(cat, model, model.layer == "static") == 0, model.__tablename__
        assert _count(cat, Pick, Pick.layer == "overlay") == overlay_picks
        assert _count(cat, Run, Run.in_static.is_(True)) == 0


def test_vanished_experiment_runs_next_to_objects(sample: SampleSummary, db_url: str, tmp_path: Path) -> None:
    static = sample.config.parent / "static"
    density = static / "Objects" / "ribosome.zarr"
    write_ome_zarr(zarrio.local_store(str(density), read_only=False), np.zeros((8, 8, 8), np.float32), 10.0, levels=1)
    age_tree(static / "Objects")
    with Catalog.open(sample.config, db=db_url) as cat:
        assert cat.index().errors == 0
        before = _counts(cat.engine)
        assert before["density_maps"] == 1
        overlay_picks = _count(cat, Pick, Pick.layer == "overlay")
        shutil.move(str(static / "ExperimentRuns"), str(tmp_path / "ExperimentRuns"))
        with pytest.raises(RootError) as info:
            cat.index()
        assert "unmounted" in str(info.value) and "ExperimentRuns" in str(info.value)
        assert _counts(cat.engine) == before
    out = _cli("index", str(sample.config), "--db", db_url, "--allow-empty-root", "-q")
    assert out.returncode == 0, out.stderr
    with Catalog.open(sample.config, db=db_url) as cat:
        assert _count(cat, Pick, Pick.layer == "static") == 0
        assert _count(cat, Tomogram) == 0
        assert _counts(cat.engine)["density_maps"] == 1  # Objects/ is still there
        assert _count(cat, Pick, Pick.layer == "overlay") == overlay_picks


# ------------------------------------------------------------------------------------------
# 8. the stale flag goes away when the original content comes back


def _pick_row(cat: Catalog, path: str) -> tuple[bool, int, str]:
    """(stale, n_points, fingerprint) of one pick row."""
    with cat.session() as s:
        return s.execute(sa.select(Pick.stale, Pick.n_points, Pick.fingerprint).where(Pick.path == path)).one()


def test_stale_pick_recovers_with_identical_bytes_and_mtime(sample: SampleSummary, db_url: str, tmp_path: Path) -> None:
    p = _run_dir(sample, "overlay", "TS_0002") / "Picks" / "bob_2_ribosome.json"
    rel = "ExperimentRuns/TS_0002/Picks/bob_2_ribosome.json"
    saved = tmp_path / "saved.json"
    shutil.copy2(p, saved)
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        good = _pick_row(cat, rel)
        p.write_bytes(p.read_bytes()[:200])  # truncated
        _age(p, 120)
        assert cat.index().errors == 1
        stale, n_points, _fp = _pick_row(cat, rel)
        assert stale and n_points == good.n_points
        assert set(_errors(cat)) == {("overlay", rel)}
        shutil.copy2(saved, p)  # the very bytes and mtime it had when it was indexed
        assert os.stat(p).st_mtime_ns == os.stat(saved).st_mtime_ns
        report = cat.index()
        assert _pick_row(cat, rel) == (False, good.n_points, good.fingerprint)
        assert _errors(cat) == {}
        assert report.errors == 0
        assert cat.index().files_read == 0


def test_stale_tomogram_recovers_when_stray_zarr_json_goes(sample: SampleSummary, db_url: str) -> None:
    rel = "ExperimentRuns/TS_0001/VoxelSpacing10.000/wbp.zarr"
    group = sample.config.parent / "static" / rel

    def row(cat: Catalog) -> Any:
        with cat.session() as s:
            columns = (Tomogram.stale, Tomogram.fingerprint, Tomogram.shape, Tomogram.dtype, Tomogram.zarr_format)
            return s.execute(sa.select(*columns).where(Tomogram.path == rel)).one()

    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        good = row(cat)
        assert good.zarr_format == 2 and not good.stale
        stray = group / "zarr.json"
        _write_old(stray, "{")  # a stray, broken format-3 metadata file
        assert cat.index().errors == 1
        assert set(_errors(cat)) == {("static", rel)}
        broken = row(cat)
        assert broken.stale and (broken.shape, broken.dtype) == (good.shape, good.dtype)
        stray.unlink()
        report = cat.index()
        fixed = row(cat)
        assert not fixed.stale and fixed.fingerprint == good.fingerprint
        assert _errors(cat) == {}
        assert report.errors == 0
        assert cat.index().files_read == 0


# ------------------------------------------------------------------------------------------
# 9. a cancelled index leaves features without their tomogram link; the next run must link them


def _feature_links(cat: Catalog) -> dict[tuple[str, str], tuple[str, str] | None]:
    with cat.session() as s:
        return {
            (f.layer, f.path): (f.tomogram.layer, f.tomogram.path) if f.tomogram is not None else None
            for f in s.scalars(sa.select(Feature))
        }


@pytest.mark.parametrize("cancel_after", ["first_batch", "feature_batch"])
def test_cancelled_index_then_full_index_links_features(
    sample: SampleSummary, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cancel_after: str
) -> None:
    from copick_catalog.index import indexer

    monkeypatch.setattr(indexer, "BATCH_FILES", 20)
    written: list[set[Kind]] = []
    original = indexer.Indexer._write_batch

    def recording(self: Any, batch: Any, *args: Any, **kwargs: Any) -> None:
        original(self, batch, *args, **kwargs)
        written.append({seen.key.kind for seen, _old in batch})

    monkeypatch.setattr(indexer.Indexer, "_write_batch", recording)

    def cancel() -> bool:
        if cancel_after == "first_batch":
            return bool(written)
        return any(Kind.FEATURE in kinds for kinds in written)

    with Catalog.open(sample.config, db=db_url) as cat:
        with pytest.raises(IndexCancelled):
            cat.index(cancel=cancel)
        if cancel_after == "first_batch":
            assert len(written) == 1
        else:  # the features are written, but the run stopped before linking them
            links = _feature_links(cat)
            assert links and all(v is None for v in links.values())
        cat.index()
        resumed = _feature_links(cat)
    monkeypatch.undo()
    with Catalog.open(sample.config, db=f"sqlite:///{tmp_path / 'clean.sqlite'}") as clean:
        clean.index()
        expected = _feature_links(clean)
    assert expected and all(v is not None for v in expected.values())
    assert resumed == expected


# ------------------------------------------------------------------------------------------
# 10. `sample` must not write over a project


def test_sample_refuses_to_overwrite_a_project(sample: SampleSummary) -> None:
    out = sample.config.parent
    cfg = json.loads(sample.config.read_text())
    cfg["description"] = "my real project"
    sample.config.write_text(json.dumps(cfg, indent=4))
    pick = _run_dir(sample, "overlay", "TS_0001") / "Picks" / "alice_1_ribosome.json"
    pick.write_text(json.dumps(_pick_doc("alice", "1", "TS_0001", [_point(1.0, 2.0, 3.0)]), indent=4))
    config_bytes, pick_bytes = sample.config.read_bytes(), pick.read_bytes()

    refused = _cli("sample", "--out", str(out), "--runs", "2", "--tomogram-runs", "0")
    line = _assert_one_line_error(refused)
    assert "--overwrite" in line
    assert sample.config.read_bytes() == config_bytes
    assert pick.read_bytes() == pick_bytes

    written = _cli("sample", "--out", str(out), "--runs", "2", "--tomogram-runs", "0", "--overwrite")
    assert written.returncode == 0, written.stderr
    assert json.loads(sample.config.read_text())["description"] != "my real project"
    assert pick.read_bytes() != pick_bytes and len(json.loads(pick.read_text())["points"]) > 1


# ------------------------------------------------------------------------------------------
# 11. credentials never reach the catalog or the terminal


def _secret_config(sample: SampleSummary, tmp_path: Path) -> Path:
    cfg = json.loads(sample.config.read_text())
    cfg["static_root"] = "s3://KEYID:SEKRET5@bucket/p"
    cfg["static_fs_args"] = {
        "headers": {"Authorization": "Bearer SEKRET1"},
        "endpoint_url": "http://user:SEKRET2@127.0.0.1:1/",
        "sessionToken": "SEKRET3",
        "secret_access_key": "SEKRET4",
    }
    path = tmp_path / "secret_config.json"
    path.write_text(json.dumps(cfg, indent=4))
    return path


def test_credentials_are_never_stored_or_printed(sample: SampleSummary, db_url: str, tmp_path: Path) -> None:
    config = _secret_config(sample, tmp_path)
    try:
        Catalog.open(config, db=db_url).close()
    except Exception as exc:  # the root is not reachable; the project is registered before that matters
        assert not any(s in str(exc) for s in SECRETS), str(exc)
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            projects = conn.execute(sa.text("SELECT config, static_url, overlay_url FROM projects")).all()
            others = [
                conn.execute(sa.text(f"SELECT * FROM {t}")).all()
                for t in ("index_runs", "index_errors", "pickable_objects")
            ]
    finally:
        engine.dispose()
    assert len(projects) == 1
    config_value, static_url, overlay_url = projects[0]
    stored = json.dumps([config_value, static_url, overlay_url], default=str) + repr(others)
    for secret in SECRETS:
        assert secret not in stored, f"{secret} stored in the catalog"
    assert static_url is not None and "bucket/p" in static_url

    out = _cli("index", str(config), "--db", db_url, timeout=240)
    _assert_one_line_error(out)
    for secret in SECRETS:
        assert secret not in out.stdout and secret not in out.stderr, (secret, out.stderr)


# ------------------------------------------------------------------------------------------
# 12. command lines that must fail with one clear line


def _deep_config(sample: SampleSummary, tmp_path: Path) -> list[str]:
    p = tmp_path / "deep.json"
    n = 100_000
    p.write_text('{"a":' * n + "1" + "}" * n)
    return ["index", str(p), "--db", str(tmp_path / "c.sqlite")]


def _latin1_config(sample: SampleSummary, tmp_path: Path) -> list[str]:
    cfg = json.loads(sample.config.read_text())
    cfg["description"] = "caf\xe9 proteins"
    p = tmp_path / "latin1.json"
    p.write_bytes(json.dumps(cfg, ensure_ascii=False).encode("latin-1"))
    return ["index", str(p), "--db", str(tmp_path / "c.sqlite")]


def _huge_label_config(sample: SampleSummary, tmp_path: Path) -> list[str]:
    cfg = json.loads(sample.config.read_text())
    cfg["pickable_objects"][0]["label"] = 2**80
    p = tmp_path / "label.json"
    p.write_text(json.dumps(cfg))
    return ["index", str(p), "--db", str(tmp_path / "c.sqlite")]


def _not_a_database(sample: SampleSummary, tmp_path: Path) -> list[str]:
    p = tmp_path / "random.sqlite"
    p.write_bytes(os.urandom(8192))
    return ["index", str(sample.config), "--db", str(p)]


def _blank_db(sample: SampleSummary, tmp_path: Path) -> list[str]:
    return ["index", str(sample.config), "--db", "   "]


def _mysql_db(sample: SampleSummary, tmp_path: Path) -> list[str]:
    return ["index", str(sample.config), "--db", "mysql://u@h/db"]


def _http_root(sample: SampleSummary, tmp_path: Path) -> list[str]:
    cfg = json.loads(sample.config.read_text())
    cfg["static_root"] = "http://127.0.0.1:1/static"
    p = tmp_path / "http.json"
    p.write_text(json.dumps(cfg))
    return ["index", str(p), "--db", str(tmp_path / "c.sqlite")]


CLI_CASES: dict[str, Callable[[SampleSummary, Path], list[str]]] = {
    "nested_100000_deep": _deep_config,
    "config_not_utf8": _latin1_config,
    "label_2_80": _huge_label_config,
    "db_not_a_database": _not_a_database,
    "db_blank": _blank_db,
    "db_mysql": _mysql_db,
    "http_root": _http_root,
}


def _check_cli_case(case: str, line: str) -> None:
    low = line.lower()
    if case == "nested_100000_deep":
        assert "deep" in low
    elif case == "config_not_utf8":
        assert "utf-8" in low
    elif case == "label_2_80":
        assert "label" in low
    elif case == "db_not_a_database":
        assert "not a" in low and "database" in low
    elif case == "db_blank":
        assert "--db" in line
    elif case == "db_mysql":
        assert "mysql" in low and "[postgres]" not in line
    elif case == "http_root":
        assert "http://http://" not in line
        assert line.count("http://127.0.0.1:1/static") == 1, line


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_is_one_line(sample: SampleSummary, tmp_path: Path, case: str) -> None:
    out = _cli(*CLI_CASES[case](sample, tmp_path), timeout=120)
    line = _assert_one_line_error(out)
    _check_cli_case(case, line)
    if case == "http_root":  # the project was registered before the root failed: its URL is stored once too
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT static_url FROM projects")).scalar_one() == (
                    "http://127.0.0.1:1/static"
                )
        finally:
            engine.dispose()


def test_cli_lacking_unknown_object(sample: SampleSummary, db_url: str) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
    out = _cli("query", "runs", str(sample.config), "--db", db_url, "--lacking", "TYPO")
    line = _assert_one_line_error(out)
    assert "TYPO" in line


# ------------------------------------------------------------------------------------------
# 13. a PostgreSQL role that may only read


def test_readonly_role_opens_read_only_by_itself(sample: SampleSummary, pg_url: str) -> None:
    with Catalog.open(sample.config, db=pg_url) as cat:
        cat.index()
        before = _counts(cat.engine)
    role = f"cc_reader_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url)
    try:
        create_readonly_role(admin, role)
        reader = sa.make_url(pg_url).set(username=role).render_as_string(hide_password=False)
        with Catalog.open(sample.config, db=reader) as ro:
            assert len(ro.picks()) == sample.pick_files
            assert len(ro.runs()) == sample.runs
            with pytest.raises(CatalogError):
                ro.index()
            assert ro.read_only
        assert _counts(admin) == before
    finally:
        admin.dispose()
        auto = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with auto.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        auto.dispose()


# ------------------------------------------------------------------------------------------
# 14. a SQLite catalog another user may only read, and a lock file made by someone else


def _check_picks_json(out: subprocess.CompletedProcess[str], sample: SampleSummary) -> None:
    assert len(json.loads(out.stdout)) == sample.pick_files


def _check_sql_json(out: subprocess.CompletedProcess[str], sample: SampleSummary) -> None:
    assert json.loads(out.stdout) == [{"n": sample.pick_files}]


def _check_status(out: subprocess.CompletedProcess[str], sample: SampleSummary) -> None:
    assert "PermissionError" not in out.stderr
    assert "sample-project" in out.stdout


READ_ONLY_COMMANDS: dict[str, tuple[list[str], Callable[[subprocess.CompletedProcess[str], SampleSummary], None]]] = {
    "query_picks": (["query", "picks", "{config}", "--db", "{db}", "--format", "json"], _check_picks_json),
    "sql": (
        ["sql", "SELECT count(*) AS n FROM picks", "{config}", "--db", "{db}", "--format", "json"],
        _check_sql_json,
    ),
    "status": (["status", "{config}", "--db", "{db}"], _check_status),
}


@pytest.mark.parametrize("command", list(READ_ONLY_COMMANDS))
def test_read_only_sqlite_catalog_for_another_user(
    sample: SampleSummary, shared_dir: Path, nobody: tuple[tuple[str, ...], str], command: str
) -> None:
    config = _shared_project(sample, shared_dir)
    ro_dir = shared_dir / "ro"
    ro_dir.mkdir()
    os.chmod(ro_dir, 0o755)  # nobody may read and enter it, not write it
    db_file = ro_dir / "catalog.sqlite"
    with Catalog.open(config, db=str(db_file)) as cat:
        cat.index()
    os.chmod(db_file, 0o444)
    mtime = os.stat(db_file).st_mtime_ns
    template, check = READ_ONLY_COMMANDS[command]
    args = [a.format(config=config, db=db_file) for a in template]
    out = _nobody_cli(nobody, *args, cwd=shared_dir)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    check(out, sample)
    assert os.stat(db_file).st_mtime_ns == mtime


def test_lock_file_made_by_another_user(
    sample: SampleSummary, shared_dir: Path, nobody: tuple[tuple[str, ...], str]
) -> None:
    config = _shared_project(sample, shared_dir)
    db_file = shared_dir / "catalog.sqlite"
    first = _cli("index", str(config), "--db", str(db_file), "-q", umask=0o022)
    assert first.returncode == 0, first.stderr
    locks = list(shared_dir.glob("catalog.sqlite.project*.lock"))
    assert len(locks) == 1 and os.stat(locks[0]).st_uid == 0
    _share_sqlite(db_file)  # the catalog itself is shared; its lock file stays as root made it

    second = _nobody_cli(nobody, "index", str(config), "--db", str(db_file), "--json", cwd=shared_dir)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["errors"] == 0
    engine = sa.create_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            statuses = [r[0] for r in conn.execute(sa.select(IndexRun.status).order_by(IndexRun.id))]
    finally:
        engine.dispose()
    assert statuses == ["ok", "ok"]


# ------------------------------------------------------------------------------------------
# A very large pick file costs a batch of memory, not the file's size

_BIG_INDEX = r"""
import json, os, resource, sys
from copick_catalog import Catalog
from copick_catalog.formats import pickstream
if sys.argv[5] == "whole":
    pickstream.STREAM_BYTES = 2**62  # what reading the file in one piece costs, for comparison
cat = Catalog.open(sys.argv[1], db=sys.argv[2])
cat.index()  # everything but the big file: imports, schema, caches
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
os.replace(sys.argv[3], sys.argv[4])
report = cat.index()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"base_mb": base, "peak_mb": peak, "errors": report.errors}))
"""


def _big_pick_file(path: Path, n: int) -> tuple[float, float, float]:
    """``n`` points in copick's own layout (indented, a 4x4 matrix each), written in slices; the last point."""
    head = {"pickable_object_name": "ribosome", "user_id": "bulk", "session_id": "1", "unit": "angstrom"}
    identity = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    rng = np.random.default_rng(7)
    last = (0.0, 0.0, 0.0)
    with path.open("w") as fh:
        fh.write(json.dumps(head, indent=4)[:-2] + ',\n    "points": [\n')
        for start in range(0, n, 10_000):
            xyz = rng.uniform(0, 5000, size=(min(10_000, n - start), 3)).round(3).tolist()
            points = (
                {"location": {"x": x, "y": y, "z": z}, "transformation_": identity, "instance_id": 0, "score": 1.0}
                for x, y, z in xyz
            )
            fh.write(",\n".join(json.dumps(p, indent=4) for p in points) + (",\n" if start + 10_000 < n else "\n"))
            last = tuple(xyz[-1])
        fh.write('    ],\n    "trust_orientation": true\n}\n')
    return last


@pytest.mark.slow
def test_huge_pick_file_is_streamed_in_bounded_memory(sample: SampleSummary, tmp_path: Path) -> None:
    """A 400,000-point file (about 200 MB as copick writes it) is indexed exactly, and costs the indexer less
    memory than the file's size; reading the same file whole costs more than twice as much (so the bound
    is what streaming buys, not a property of the machine). Memory is the child's ``ru_maxrss``; this process
    stays small, since a forked child starts from its parent's resident size."""
    n = 400_000
    staged = tmp_path / "staged.json"
    last = _big_pick_file(staged, n)
    size_mb = staged.stat().st_size / 1024**2
    assert size_mb > 3 * 16  # well past the size from which files are streamed
    target = _run_dir(sample, "overlay", "TS_0001") / "Picks" / "bulk_1_ribosome.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    grew = {}
    for mode in ("stream", "whole"):
        db = f"sqlite:///{tmp_path / f'{mode}.sqlite'}"
        shutil.copy(staged, tmp_path / "again.json")
        argv = [sys.executable, "-c", _BIG_INDEX, str(sample.config), db, str(tmp_path / "again.json"), str(target)]
        out = subprocess.run([*argv, mode], capture_output=True, text=True, timeout=600, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["errors"] == 0
        grew[mode] = result["peak_mb"] - result["base_mb"]
        with Catalog.open(sample.config, db=db) as cat:
            (pick,) = cat.picks(user_id="bulk")
            assert pick.n_points == n
            with cat.session() as s:
                assert s.scalar(sa.select(sa.func.count()).select_from(Point).where(Point.pick_id == pick.id)) == n
                end = s.scalars(sa.select(Point).where(Point.pick_id == pick.id, Point.idx == n - 1)).one()
            assert (end.x, end.y, end.z) == last
        target.unlink()
    # a batch of rows plus the packed copy (40 bytes a point), not the file: well under its size, and
    # well under what the same file costs read whole
    assert grew["stream"] < 0.75 * size_mb, (grew, size_mb)
    assert grew["stream"] * 2 < grew["whole"], grew

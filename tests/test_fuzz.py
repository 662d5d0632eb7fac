"""Property-based fuzzing of what the indexer reads: pick JSON, zarr headers, GLB headers and pick file names.

Every property builds a small project per example (four pickable objects, one run, only the files under
test), indexes it into the test's catalog database (a SQLite file, or a fresh PostgreSQL database: each
example is a new project in it) and checks, for every generated input:

* the index finishes (no exception comes out of ``Catalog.index``);
* the catalog holds exactly what an oracle written here from the formats' rules expects from the files
  it knows to be valid (for picks: ``n_points`` and every point value as ``json.loads`` reads it);
* each bad file has exactly one ``index_errors`` row, for its own path (or its zarr group), and good
  files have none.

The oracles decide validity from the bytes written, never by asking the package. The streaming pick
reader is checked separately: with :data:`copick_catalog.formats.pickstream.STREAM_BYTES` at 1 and tiny
windows and batches, every file goes through it, and its catalog must equal the whole-file path's.

The ``@example`` pins on a property are the minimal falsifying examples Hypothesis found for it, one per
finding (see the comment above them). Hypothesis runs them first and, while one fails, reports the first
failure of each kind and generates nothing more: the suite fails fast and the same way every time. Once
they pass, the random examples run. ``COPICK_CATALOG_FUZZ_EXPLORE=1`` skips the pins to look for more, and
``COPICK_CATALOG_FUZZ_EXAMPLES=N`` sets the examples per property and backend (25 by default).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, event, example, given, note, settings
from hypothesis import strategies as st

from copick_catalog import Catalog
from copick_catalog.catalog.catalog import register_project
from copick_catalog.catalog.schema import IndexErrorRow, Mesh, PackedPoints, Pick, Point, Tomogram
from copick_catalog.config import load_config
from copick_catalog.formats import pickstream
from tests.conftest import age_tree, packed_points_match, run_object_counts

# "virus_like" is not a name copick would allow (the config loader warns), but it exercises the grammar's
# resolution of file names with extra underscores against the project's objects; "like" ends it.
OBJECTS = ("ribosome", "apo-ferritin", "virus_like", "like")
RUN = "TS_1"
VS_DIR = "VoxelSpacing10.000"
PICKS = f"ExperimentRuns/{RUN}/Picks"
MESHES = f"ExperimentRuns/{RUN}/Meshes"
VOXELS = f"ExperimentRuns/{RUN}/{VS_DIR}"
MAX_INSTANCE_ID = 2**53
MAX_COUNT = 2**31 - 1

pytestmark = pytest.mark.filterwarnings("ignore:pickable object name:UserWarning")

#: examples per property and backend; raise it (COPICK_CATALOG_FUZZ_EXAMPLES=500) for a longer hunt
FUZZ_EXAMPLES = int(os.environ.get("COPICK_CATALOG_FUZZ_EXAMPLES", "25"))
EXPLORE = os.environ.get("COPICK_CATALOG_FUZZ_EXPLORE") == "1"
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    # No explain phase: on a failing property it re-runs hundreds of examples to list the lines they cover.
    # The @example pins below are the minimal falsifying examples found so far; while one fails, Hypothesis
    # reports it at once and generates nothing more (fast, deterministic). COPICK_CATALOG_FUZZ_EXPLORE=1
    # skips them, to hunt for what else fails.
    phases=[*([] if EXPLORE else [Phase.explicit]), Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ============================================================================================
# A project per example, and what the catalog holds for it


class Project:
    """A throwaway copick project: one run in each root, and only the files an example writes."""

    def __init__(self, base: Path) -> None:
        self.root = base / uuid.uuid4().hex[:12]
        self.static = self.root / "static"
        self.overlay = self.root / "overlay"
        for layer in (self.static, self.overlay):
            (layer / "ExperimentRuns" / RUN).mkdir(parents=True)

    def put(self, layer: str, rel: str, data: bytes) -> None:
        path = (self.static if layer == "static" else self.overlay) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def mkdir(self, layer: str, rel: str) -> None:
        ((self.static if layer == "static" else self.overlay) / rel).mkdir(parents=True, exist_ok=True)

    def config(self, tag: str = "main") -> Path:
        cfg = {
            "name": "fuzz",
            "pickable_objects": [{"name": o, "is_particle": True, "label": i + 1} for i, o in enumerate(OBJECTS)],
            "overlay_root": f"local://{self.overlay}",
            "static_root": f"local://{self.static}",
        }
        path = self.root / f"copick_config_{tag}.json"
        path.write_text(json.dumps(cfg))
        return path

    def settle(self) -> None:
        """Files written a moment ago are racily clean and re-read after a pause; these are settled."""
        age_tree(self.root)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class State:
    """One project's catalog: rows by (layer, path), and its error rows."""

    picks: dict[tuple[str, str], dict[str, Any]]
    points: dict[tuple[str, str], list[tuple[Any, ...]]]
    packed: dict[tuple[str, str], bytes]
    meshes: dict[tuple[str, str], dict[str, Any]]
    tomograms: dict[tuple[str, str], dict[str, Any]]
    errors: list[tuple[str, str, str, str, str]]  # layer, path, kind, severity, message
    report_errors: int

    def error_paths(self, severity: str = "error") -> Counter[tuple[str, str]]:
        return Counter((layer, path) for layer, path, _k, sev, _m in self.errors if sev == severity)


class Catalogs:
    """The examples' projects, each registered in the test's database and indexed through one engine.

    The first example goes through ``Catalog.open`` (which creates the schema); later ones only register
    their project on the same engine: a new engine per example costs as much as the index itself.
    """

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.engine: sa.Engine | None = None

    def open(self, config: Path) -> Catalog:
        config = config.resolve()
        if self.engine is None:
            cat = Catalog.open(config, db=self.db_url)
            self.engine = cat.engine
            return cat
        cfg = load_config(config)
        return Catalog(cfg, config, self.engine, register_project(self.engine, cfg, config))

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


@pytest.fixture
def catalogs(db_url: str) -> Iterator[Catalogs]:
    cats = Catalogs(db_url)
    yield cats
    cats.close()


def index(config: Path, catalogs: Catalogs) -> State:
    """Index a project (this must not raise) and read back what the catalog holds for it."""
    cat = catalogs.open(config)
    report = cat.index()
    pid = cat.project_id
    with cat.engine.connect() as conn:
        picks = {
            (r.layer, r.path): dict(r._mapping)
            for r in conn.execute(
                sa.select(
                    Pick.layer,
                    Pick.path,
                    Pick.user_id,
                    Pick.session_id,
                    Pick.object_name,
                    Pick.n_points,
                    Pick.unit,
                    Pick.trust_orientation,
                    Pick.voxel_spacing,
                ).where(Pick.project_id == pid)
            )
        }
        points: dict[tuple[str, str], list[tuple[Any, ...]]] = {k: [] for k in picks}
        for r in conn.execute(
            sa.select(
                Pick.layer,
                Pick.path,
                Point.idx,
                Point.x,
                Point.y,
                Point.z,
                Point.instance_id,
                Point.score,
                Point.transform,
            )
            .join(Pick, Pick.id == Point.pick_id)
            .where(Pick.project_id == pid)
            .order_by(Pick.layer, Pick.path, Point.idx)
        ):
            points[(r[0], r[1])].append(tuple(r[2:]))
        packed = {
            (r[0], r[1]): bytes(r[2])
            for r in conn.execute(
                sa.select(Pick.layer, Pick.path, PackedPoints.data)
                .join(Pick, Pick.id == PackedPoints.pick_id)
                .where(Pick.project_id == pid)
            )
        }
        meshes = {
            (r.layer, r.path): dict(r._mapping)
            for r in conn.execute(
                sa.select(Mesh.layer, Mesh.path, Mesh.n_vertices, Mesh.n_faces).where(Mesh.project_id == pid)
            )
        }
        tomograms = {
            (r.layer, r.path): dict(r._mapping)
            for r in conn.execute(
                sa.select(
                    Tomogram.layer,
                    Tomogram.path,
                    Tomogram.tomo_type,
                    Tomogram.shape,
                    Tomogram.dtype,
                    Tomogram.n_levels,
                    Tomogram.zarr_format,
                ).where(Tomogram.project_id == pid)
            )
        }
        errors = [
            tuple(r)
            for r in conn.execute(
                sa.select(
                    IndexErrorRow.layer,
                    IndexErrorRow.path,
                    IndexErrorRow.kind,
                    IndexErrorRow.severity,
                    IndexErrorRow.message,
                ).where(IndexErrorRow.project_id == pid)
            )
        ]
    run_object_counts(cat.engine)
    packed_points_match(cat.engine)
    return State(picks, points, packed, meshes, tomograms, errors, report.errors)  # type: ignore[arg-type]


def check_errors(
    state: State, bad: dict[tuple[str, str], str], warned: frozenset[tuple[str, str]] = frozenset()
) -> None:
    """Exactly one error row per bad path and none for any other; warnings only where expected."""
    got = state.error_paths("error")
    assert not [p for p, n in got.items() if n > 1], f"several error rows for one path: {got}"
    refused = {p for p in got if p not in bad}
    assert not refused, f"error rows for good or unknown paths: {[e for e in state.errors if e[:2] in refused]}"
    missing = {p: why for p, why in bad.items() if p not in got}
    assert not missing, f"bad files without an error row (accepted or ignored): {missing}"
    assert set(state.error_paths("warning")) == set(warned), f"warnings {state.errors} but expected {warned}"
    assert state.report_errors == len(bad)


# ============================================================================================
# JSON written token by token: the generators control every byte (number spelling, escapes, commas)


@dataclass
class Raw:
    """Bytes written verbatim: a number literal, NaN, a string that is not UTF-8, a truncated value."""

    text: bytes


@dataclass
class Str:
    """A string with its escaping style: plain UTF-8, ASCII with \\u escapes, every character escaped, or \\/."""

    value: str
    esc: str = "plain"


@dataclass
class Obj:
    pairs: list[list[Any]]  # [key (str | Str | Raw), value]
    trailing_comma: bool = False


@dataclass
class Arr:
    items: list[Any]
    trailing_comma: bool = False


@dataclass(frozen=True)
class Style:
    indent: int | str | None = None
    item_sep: str = ","
    key_sep: str = ":"


def _escape(s: str, esc: str) -> bytes:
    if esc == "u":
        out = []
        for ch in s:
            cp = ord(ch)
            if cp > 0xFFFF:
                cp -= 0x10000
                out.append(f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}")
            else:
                out.append(f"\\u{cp:04x}")
        return ('"' + "".join(out) + '"').encode()
    text = json.dumps(s, ensure_ascii=esc == "ascii")
    if esc == "slash":
        text = text.replace("/", "\\/")
    return text.encode("utf-8")


def dump(v: Any, style: Style, level: int = 0) -> bytes:
    """Serialise the AST (or plain JSON data) with ``style``."""
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, Str):
        return _escape(v.value, v.esc)
    if isinstance(v, str):
        return _escape(v, "plain")
    if v is None:
        return b"null"
    if v is True:
        return b"true"
    if v is False:
        return b"false"
    if isinstance(v, int):
        return str(v).encode()
    if isinstance(v, float):
        return repr(v).encode()
    if isinstance(v, dict):
        v = Obj([[k, x] for k, x in v.items()])
    if isinstance(v, list):
        v = Arr(v)
    if isinstance(v, Obj):
        parts = [dump(k, style) + style.key_sep.encode() + dump(x, style, level + 1) for k, x in v.pairs]
        return _container(b"{", b"}", parts, v.trailing_comma, style, level)
    if isinstance(v, Arr):
        parts = [dump(x, style, level + 1) for x in v.items]
        return _container(b"[", b"]", parts, v.trailing_comma, style, level)
    raise TypeError(v)


def _container(open_: bytes, close: bytes, parts: list[bytes], trailing: bool, style: Style, level: int) -> bytes:
    if not parts:
        return open_ + (b"," if trailing else b"") + close
    sep = style.item_sep.encode()
    tail = b"," if trailing else b""
    if style.indent is None:
        return open_ + sep.join(parts) + tail + close
    unit = (" " * style.indent if isinstance(style.indent, int) else style.indent).encode()
    inner, outer = b"\n" + unit * (level + 1), b"\n" + unit * level
    return open_ + inner + (sep.rstrip() + inner).join(parts) + tail + outer + close


# ============================================================================================
# The pick oracle: copick's pick file rules, applied to what json.loads reads


class Refused(Exception):
    pass


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes) -> Any:
    """JSON as RFC 8259 defines it: UTF-8, no NaN or Infinity literals; ``Refused`` otherwise."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Refused(f"not JSON: {type(exc).__name__}: {str(exc)[:80]}") from None


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _number(v: Any, where: str) -> float:
    if isinstance(v, str) and _JSON_NUMBER.fullmatch(v):  # lax, as copick's pydantic models read: "1" is 1.0
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Refused(f"{where}: not a number ({v!r:.40})")
    try:
        f = float(v)
    except OverflowError:
        raise Refused(f"{where}: out of float range") from None
    if not math.isfinite(f):
        raise Refused(f"{where}: not finite")
    return f


def _string(doc: dict[str, Any], key: str, *, required: bool = False, nullable: bool = False, default: Any = None):
    if key not in doc:
        if required:
            raise Refused(f"{key} missing")
        return default
    v = doc[key]
    if isinstance(v, str) or (nullable and v is None):
        return v
    raise Refused(f"{key}: not a string ({v!r:.40})")


IDENTITY = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]


@dataclass
class PickExpect:
    unit: str
    trust_orientation: bool
    voxel_spacing: float | None
    points: list[tuple[Any, ...]]  # idx, x, y, z, instance_id, score, transform (None for the identity)


def pick_oracle(data: bytes) -> PickExpect:
    """What the catalog must hold for a pick file, or ``Refused`` when copick's rules refuse it."""
    doc = strict_json(data)
    if not isinstance(doc, dict):
        raise Refused(f"top level is {type(doc).__name__}, not an object")
    for key in ("pickable_object_name", "user_id", "session_id"):
        _string(doc, key, required=True)
    _string(doc, "run_name", nullable=True)
    unit = _string(doc, "unit", default="angstrom")
    if "\x00" in unit:  # copick reads it; no SQL text column stores it on both backends, so the catalog refuses
        raise Refused("unit: holds NUL")
    vs = doc.get("voxel_spacing")
    vs = None if vs is None else _number(vs, "voxel_spacing")
    trust = doc.get("trust_orientation", True)
    if not isinstance(trust, bool):
        raise Refused(f"trust_orientation: not a boolean ({trust!r:.40})")
    points = doc.get("points")
    points = [] if points is None else points
    if not isinstance(points, list):
        raise Refused("points: not a list")
    rows = []
    for i, p in enumerate(points):
        if not isinstance(p, dict):
            raise Refused(f"points.{i}: not an object")
        loc = p.get("location")
        if not isinstance(loc, dict):
            raise Refused(f"points.{i}.location: missing or not an object")
        xyz = []
        for axis in "xyz":
            if axis not in loc:
                raise Refused(f"points.{i}.location.{axis} missing")
            xyz.append(_number(loc[axis], f"points.{i}.location.{axis}"))
        transform = None
        if "transformation_" in p:
            m = p["transformation_"]
            if not isinstance(m, list) or len(m) != 4 or not all(isinstance(r, list) and len(r) == 4 for r in m):
                raise Refused(f"points.{i}.transformation_: not 4x4")
            m = [[_number(v, f"points.{i}.transformation_") for v in r] for r in m]
            if m[3] != [0.0, 0.0, 0.0, 1.0]:
                raise Refused(f"points.{i}.transformation_: last row {m[3]}")
            transform = None if m == IDENTITY else m
        iid = p.get("instance_id", 0)
        if isinstance(iid, float) and iid.is_integer():  # lax: 3.0 is the integer 3
            iid = int(iid)
        if isinstance(iid, bool) or not isinstance(iid, int):
            raise Refused(f"points.{i}.instance_id: not an integer ({iid!r:.40})")
        if abs(iid) > MAX_INSTANCE_ID:
            raise Refused(f"points.{i}.instance_id: beyond 2**53")
        score = _number(p.get("score", 1.0), f"points.{i}.score")
        rows.append((i, *xyz, iid, score, transform))
    return PickExpect(unit, trust, vs, rows)


# ============================================================================================
# Pick file generators


def _short(data: bytes, limit: int = 600) -> str:
    if len(data) <= limit:
        return repr(data)
    return f"{data[: limit // 2]!r} + ... + {data[-limit // 4 :]!r} ({len(data)} bytes)"


@dataclass
class PickCase:
    """One generated pick file; ``why`` says what the generator did (the oracle decides from ``data``)."""

    data: bytes
    why: str

    def __repr__(self) -> str:
        return f"PickCase(why={self.why!r}, data={_short(self.data)})"


ESC = st.sampled_from(["plain", "ascii", "u", "slash"])
TEXT = st.text(st.characters(exclude_categories=("Cs",)) | st.sampled_from('"\\/\n\t'), max_size=8)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
NUMBER = st.one_of(
    FINITE,
    st.floats(-1e4, 1e4, allow_nan=False),
    st.integers(-(10**6), 10**6),
    st.integers(-(2**80), 2**80),
)
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), FINITE, TEXT)
EXTRA_VALUE = st.recursive(LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=6)
#: number spellings that are not finite numbers (NaN and Infinity are not JSON at all)
NONFINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1E400", str(10**400).encode()]
#: strings no lax number parser reads as a finite number
NOT_A_NUMBER = st.text("abcnxyz", max_size=4)
#: bytes that are not UTF-8: a lone continuation byte, a truncated sequence, an encoded surrogate, an overlong '/'
BAD_UTF8 = [b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]
KNOWN_TOP = ("pickable_object_name", "user_id", "session_id", "run_name", "voxel_spacing", "unit", "points")
KNOWN_TOP_ALL = (*KNOWN_TOP, "trust_orientation")
KNOWN_POINT = ("location", "transformation_", "instance_id", "score")
#: keys whose JSON text ends like the key "points" (escaped quotes, backslashes) but that decode to other names
TRICKY_KEYS = ['a"points', 'a\\"points', "\\points", 'x"y"points', "points\\", " points", "Points", "points\x00"]


def number_token(draw: st.DrawFn, v: float | int) -> Raw:
    """A number as one of the spellings JSON allows."""
    if isinstance(v, int):
        return Raw(str(v).encode())
    how = draw(st.sampled_from(["repr", "g17", "E17"]))
    text = repr(v) if how == "repr" else f"{v:.17g}" if how == "g17" else f"{v:.17E}"
    return Raw(text.encode())


def identity_node(draw: st.DrawFn) -> Any:
    form = draw(st.sampled_from(["ints", "floats", "raw-compact", "raw-spaced", "mixed"]))
    if form == "raw-compact":
        return Raw(b"[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]")
    if form == "raw-spaced":
        return Raw(b"[ [1.0, 0.0, 0.0, 0.0],\n [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0] ]")
    if form == "ints":
        return Arr([Arr([Raw(b"1" if i == j else b"0") for j in range(4)]) for i in range(4)])
    spell = {0: [b"0", b"0.0", b"-0.0", b"0e5"], 1: [b"1", b"1.0", b"1e0", b"10E-1"]}
    return Arr([Arr([Raw(draw(st.sampled_from(spell[int(i == j)]))) for j in range(4)]) for i in range(4)])


def transform_node(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return identity_node(draw)
    rows = [Arr([number_token(draw, draw(st.one_of(FINITE, st.integers(-5, 5)))) for _ in range(4)]) for _ in range(3)]
    last = Arr([Raw(draw(st.sampled_from([b"0", b"0.0", b"-0.0"]))) for _ in range(3)] + [Raw(b"1.0")])
    return Arr([*rows, last])


def instance_id_node(draw: st.DrawFn) -> Raw:
    v = draw(
        st.one_of(
            st.integers(-MAX_INSTANCE_ID, MAX_INSTANCE_ID),
            st.sampled_from([MAX_INSTANCE_ID, -MAX_INSTANCE_ID, 0, 1]),
            st.integers(0, 100),
        )
    )
    if abs(v) < 2**40 and draw(st.integers(0, 4)) == 0:  # lax: an integral float is an integer
        return Raw(f"{v}.0".encode())
    return Raw(str(v).encode())


def extras(draw: st.DrawFn, known: tuple[str, ...], tricky: bool) -> list[list[Any]]:
    """Unknown fields: ignored by copick, so they must change nothing."""
    keys = draw(st.lists(TEXT | (st.sampled_from(TRICKY_KEYS) if tricky else TEXT), max_size=2, unique=True))
    out = []
    for k in keys:
        if k in known:
            continue
        if draw(st.integers(0, 5)) == 0:
            n = draw(st.integers(1, 30))
            value: Any = Raw(b"[" * n + b"]" * n)  # nested, but not deeply
        elif tricky and draw(st.booleans()):
            value = Arr([Obj([["location", {"x": 1, "y": 2, "z": 3}]])])  # looks like points
        else:
            value = draw(EXTRA_VALUE)
        out.append([Str(k, draw(ESC)), value])
    return out


def point_node(draw: st.DrawFn, tricky: bool) -> Obj:
    loc = [[axis, number_token(draw, draw(NUMBER.filter(_fits_float)))] for axis in "xyz"]
    if draw(st.integers(0, 4)) == 0:
        loc += extras(draw, ("x", "y", "z"), tricky)
    pairs: list[list[Any]] = [["location", Obj(draw(st.permutations(loc)))]]
    if draw(st.booleans()):
        pairs.append(["transformation_", transform_node(draw)])
    if draw(st.booleans()):
        pairs.append(["instance_id", instance_id_node(draw)])
    if draw(st.booleans()):
        pairs.append(["score", number_token(draw, draw(NUMBER.filter(_fits_float)))])
    if draw(st.integers(0, 3)) == 0:
        pairs += extras(draw, KNOWN_POINT, tricky)
    return Obj([[Str(k, draw(ESC)) if isinstance(k, str) else k, v] for k, v in draw(st.permutations(pairs))])


def _fits_float(v: float | int) -> bool:
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def base_doc(draw: st.DrawFn, n_points: tuple[int, int], tricky: bool) -> Obj:
    """A valid pick file: required fields, some optional ones, points, unknown fields, keys in any order."""
    pairs: list[list[Any]] = [
        [k, Str(draw(TEXT), draw(ESC))] for k in ("pickable_object_name", "user_id", "session_id")
    ]
    optional = {
        "run_name": st.one_of(st.none(), TEXT.map(Str)),
        "voxel_spacing": st.one_of(st.none(), NUMBER.filter(_fits_float).map(lambda v: Raw(repr(v).encode()))),
        "unit": TEXT.map(Str),
        "trust_orientation": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            pairs.append([key, draw(strategy)])
    shape = draw(st.sampled_from(["list", "list", "list", "null", "absent"]))
    if shape == "list":
        pairs.append(["points", Arr([point_node(draw, tricky) for _ in range(draw(st.integers(*n_points)))])])
    elif shape == "null":
        pairs.append(["points", None])
    pairs += extras(draw, KNOWN_TOP_ALL, tricky)
    return Obj([[Str(k, draw(ESC)) if isinstance(k, str) else k, v] for k, v in draw(st.permutations(pairs))])


def _field(obj: Obj, name: str) -> list[Any] | None:
    for pair in obj.pairs:
        key = pair[0]
        if (key.value if isinstance(key, Str) else key) == name:
            return pair
    return None


def _a_point(draw: st.DrawFn, doc: Obj) -> Obj:
    """A point of ``doc`` to break (one is added when the file has none)."""
    pts = _field(doc, "points")
    if pts is None or not isinstance(pts[1], Arr) or not pts[1].items:
        new = Arr([Obj([["location", {"x": 1.0, "y": 2.0, "z": 3.0}]])])
        if pts is None:
            doc.pairs.append(["points", new])
        else:
            pts[1] = new
        pts = _field(doc, "points")
    assert pts is not None
    return pts[1].items[draw(st.integers(0, len(pts[1].items) - 1))]


def _set(obj: Obj, name: str, value: Any) -> None:
    pair = _field(obj, name)
    if pair is None:
        obj.pairs.append([name, value])
    else:
        pair[1] = value


def _location(draw: st.DrawFn, doc: Obj) -> Obj:
    point = _a_point(draw, doc)
    loc = _field(point, "location")
    assert loc is not None
    if not isinstance(loc[1], Obj):
        loc[1] = Obj([[k, v] for k, v in loc[1].items()])
    return loc[1]


def _numeric_slot(draw: st.DrawFn, doc: Obj) -> tuple[Obj, str]:
    """An object and the name of one of its numeric fields (``__transform__``: an entry of a point's matrix)."""
    where = draw(st.sampled_from(["x", "y", "z", "score", "voxel_spacing", "instance_id", "transform"]))
    if where in "xyz":
        return _location(draw, doc), where
    if where == "voxel_spacing":
        return doc, where
    point = _a_point(draw, doc)
    if where == "transform":
        row, col = draw(st.integers(0, 2)), draw(st.integers(0, 3))
        m = Obj([])  # a holder: the matrix is rebuilt with one entry replaced by the caller's value
        m.pairs = [["__transform__", (point, row, col)]]
        return m, "__transform__"
    return point, where


def _put_numeric(obj: Obj, name: str, value: Any) -> None:
    if name == "__transform__":
        point, row, col = obj.pairs[0][1]
        rows = [[Raw(b"1" if i == j else b"0") for j in range(4)] for i in range(4)]
        rows[row][col] = value
        _set(point, "transformation_", Arr([Arr(r) for r in rows]))
    else:
        _set(obj, name, value)


WRONG_FOR_STRING = st.one_of(
    st.integers(-5, 5).map(lambda v: Raw(str(v).encode())),
    st.sampled_from([Raw(b"1.5"), Raw(b"true"), Raw(b"[]"), Raw(b'{"a": "b"}'), Raw(b'["x"]')]),
)
WRONG_FOR_NUMBER = st.one_of(
    NOT_A_NUMBER.map(Str), st.sampled_from([Raw(b"[]"), Raw(b"{}"), Raw(b"[1.0]"), Raw(b'{"x": 1}')])
)
WRONG = {
    "pickable_object_name": WRONG_FOR_STRING | st.just(Raw(b"null")),
    "user_id": WRONG_FOR_STRING | st.just(Raw(b"null")),
    "session_id": WRONG_FOR_STRING | st.just(Raw(b"null")),
    "run_name": WRONG_FOR_STRING,
    "unit": WRONG_FOR_STRING | st.just(Raw(b"null")),
    "trust_orientation": st.sampled_from([Raw(b"[]"), Raw(b"{}"), Raw(b'"maybe"'), Raw(b"2.5"), Raw(b"null")]),
    "points": st.sampled_from([Raw(b"{}"), Raw(b'"abc"'), Raw(b"5"), Raw(b"true"), Raw(b'{"location": {}}')]),
    "voxel_spacing": WRONG_FOR_NUMBER,
    "location": st.sampled_from([Raw(b"[1, 2, 3]"), Raw(b'"abc"'), Raw(b"null"), Raw(b"5")]),
    "point": st.sampled_from([Raw(b"5"), Raw(b'"abc"'), Raw(b"[]"), Raw(b"null"), Raw(b"[1, 2, 3]")]),
    "x": WRONG_FOR_NUMBER | st.just(Raw(b"null")),
    "score": WRONG_FOR_NUMBER | st.just(Raw(b"null")),
    "instance_id": NOT_A_NUMBER.map(Str) | st.sampled_from([Raw(b"3.5"), Raw(b"[]"), Raw(b"null"), Raw(b"-0.25")]),
    "transformation_": st.sampled_from([Raw(b'"identity"'), Raw(b"5"), Raw(b"null"), Raw(b"{}"), Raw(b"[1, 0]")]),
}
BAD_TRANSFORMS = [
    b"[[1,0,0],[0,1,0],[0,0,1],[0,0,0]]",  # 4x3
    b"[[1,0,0,0],[0,1,0,0],[0,0,1,0]]",  # 3x4
    b"[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1],[0,0,0,1]]",  # 5x4
    b"[[1,0,0,0,0],[0,1,0,0,0],[0,0,1,0,0],[0,0,0,1,0]]",  # 4x5
    b"[]",
    b"[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,2]]",  # bad last row
    b"[[1,0,0,0],[0,1,0,0],[0,0,1,0],[1,0,0,1]]",
    b"[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0]]",  # jagged
    b"[[1,0,0,0],[0,1,0,0],[0,0,1,0],5]",
    b'[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,"1"]]',
]

BAD_PICK_MUTATIONS = (
    "nonfinite",
    "wrong_type",
    "missing",
    "instance_id_range",
    "transform_shape",
    "truncate",
    "trailing_comma",
    "top_level",
    "bad_utf8",
    "control_char",
    "deep_nesting",
    "garbage",
)


def mutate(draw: st.DrawFn, doc: Obj, kind: str) -> tuple[Any, str]:
    """Break ``doc`` in one way; returns the new top-level node and a description."""
    if kind == "nonfinite":
        obj, name = _numeric_slot(draw, doc)
        token = draw(st.sampled_from(NONFINITE))
        _put_numeric(obj, name, Raw(token))
        return doc, f"{name} = {token[:12]!r}"
    if kind == "wrong_type":
        name = draw(st.sampled_from(sorted(WRONG)))
        value = draw(WRONG[name])
        if name in ("x", "location"):
            target = _location(draw, doc) if name == "x" else _a_point(draw, doc)
            _set(target, draw(st.sampled_from("xyz")) if name == "x" else name, value)
        elif name == "point":
            _a_point(draw, doc)  # makes sure there is one
            pts = _field(doc, "points")
            assert pts is not None
            pts[1].items[draw(st.integers(0, len(pts[1].items) - 1))] = value
        elif name in ("score", "instance_id", "transformation_"):
            _set(_a_point(draw, doc), name, value)
        else:
            _set(doc, name, value)
        return doc, f"{name} = {dump(value, Style())[:30]!r}"
    if kind == "missing":
        name = draw(st.sampled_from(["pickable_object_name", "user_id", "session_id", "location", "x", "y", "z"]))
        if name in "xyz":
            holder = _location(draw, doc)
        elif name == "location":
            holder = _a_point(draw, doc)
        else:
            holder = doc
        holder.pairs = [p for p in holder.pairs if (p[0].value if isinstance(p[0], Str) else p[0]) != name]
        return doc, f"no {name}"
    if kind == "instance_id_range":
        v = draw(
            st.one_of(
                st.sampled_from([MAX_INSTANCE_ID + 1, -MAX_INSTANCE_ID - 1, 2**63, 2**64, -(2**63) - 1, 10**20]),
                st.integers(MAX_INSTANCE_ID + 1, 2**70),
            )
        )
        _set(_a_point(draw, doc), "instance_id", Raw(str(v).encode()))
        return doc, f"instance_id = {v}"
    if kind == "transform_shape":
        text = draw(st.sampled_from(BAD_TRANSFORMS))
        _set(_a_point(draw, doc), "transformation_", Raw(text))
        return doc, f"transformation_ = {text!r}"
    if kind == "trailing_comma":
        containers = [doc, *_containers(doc)]
        containers = [c for c in containers if (c.pairs if isinstance(c, Obj) else c.items)]
        target = containers[draw(st.integers(0, len(containers) - 1))]
        target.trailing_comma = True
        return doc, f"trailing comma in a {type(target).__name__}"
    if kind == "top_level":
        new = draw(st.sampled_from([Arr([doc]), Raw(b'"pick"'), Raw(b"5"), Raw(b"null"), Raw(b"[]"), Raw(b"")]))
        return new, f"top level {dump(new, Style())[:20]!r}"
    if kind == "bad_utf8":
        seq = draw(st.sampled_from(BAD_UTF8))
        bad = Raw(b'"ab' + seq + b'cd"')
        where = draw(st.sampled_from(["user_id", "unit", "extra", "point-extra", "key"]))
        if where == "extra":
            doc.pairs.append([Str("comment"), bad])
        elif where == "point-extra":
            _a_point(draw, doc).pairs.append([Str("comment"), bad])
        elif where == "key":
            doc.pairs.append([bad, Raw(b"1")])
        else:
            _set(doc, where, bad)
        return doc, f"{seq!r} in {where}"
    if kind == "control_char":
        ch = draw(st.sampled_from([b"\x00", b"\x01", b"\x1f", b"\n", b"\t"]))
        bad = Raw(b'"ab' + ch + b'cd"')
        where = draw(st.sampled_from(["user_id", "extra", "point-extra"]))
        if where == "extra":
            doc.pairs.append([Str("comment"), bad])
        elif where == "point-extra":
            _a_point(draw, doc).pairs.append([Str("comment"), bad])
        else:
            _set(doc, where, bad)
        return doc, f"raw {ch!r} in a string ({where})"
    if kind == "deep_nesting":
        n = draw(st.sampled_from([5000, 20000, 100000]))
        deep = Raw(b"[" * n + b"]" * n)
        where = draw(st.sampled_from(["extra", "point-extra", "points"]))
        if where == "extra":
            doc.pairs.append([Str("deep"), deep])
        elif where == "point-extra":
            _a_point(draw, doc).pairs.append([Str("deep"), deep])
        else:
            _set(doc, "points", deep)
        return doc, f"nesting {n} deep in {where}"
    raise AssertionError(kind)


def _containers(node: Any) -> list[Obj | Arr]:
    out: list[Obj | Arr] = []
    children = [v for _k, v in node.pairs] if isinstance(node, Obj) else node.items if isinstance(node, Arr) else []
    for c in children:
        if isinstance(c, Obj | Arr):
            out.append(c)
            out += _containers(c)
    return out


STYLES = st.sampled_from(
    [Style(), Style(indent=4, item_sep=", ", key_sep=": "), Style(None, ", ", ": "), Style("\t", " ,", " : ")]
)


@st.composite
def pick_files(draw: st.DrawFn, tricky: bool = False, n_points: tuple[int, int] = (0, 4)) -> PickCase:
    """A pick file, valid (about half the time) or broken in one way."""
    kind = draw(st.one_of(st.just("valid"), st.sampled_from(BAD_PICK_MUTATIONS)))
    if kind == "garbage":
        data = draw(st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
        return PickCase(data, "garbage")
    doc = base_doc(draw, n_points, tricky)
    style = draw(STYLES)
    why = f"valid, {style}"
    node: Any = doc
    if kind not in ("valid", "truncate"):
        node, what = mutate(draw, doc, kind)
        why = f"{kind}: {what}"
    data = dump(node, style)
    if kind == "truncate":
        cut = draw(st.integers(0, max(0, data.rstrip().rfind(b"}"))))
        data, why = data[:cut], f"truncated at {cut} of {len(data)}"
    return PickCase(data, why)


# ============================================================================================
# 1. pick files, whole-file path


def as_floats(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Point rows with the transform as floats: JSONB (PostgreSQL) keeps a number's decimal, not its JSON
    spelling, so 3.602879701896397e+16 reads back as the integer 36028797018963970 (the same number)."""
    return [(*r[:6], None if r[6] is None else [[float(v) for v in row] for row in r[6]]) for r in rows]


def _pick_names(n: int) -> list[str]:
    return [f"u{i}_s{i}_{OBJECTS[i % 2]}.json" for i in range(n)]


HEAD = b'"pickable_object_name":"","user_id":"","session_id":""'


@FUZZ
@given(files=st.lists(pick_files(), min_size=1, max_size=3), static_first=st.booleans())
# Finding: bytes that are not UTF-8 inside a field copick does not know (or in its key) are accepted: msgspec
# skips unknown fields without checking their bytes; pydantic (copick), json and the streaming reader refuse.
@example(
    files=[PickCase(b"{" + HEAD + b',"points":[],"comment":"ab\xffcd"}', "bad UTF-8 in an extra")], static_first=False
)
# Finding (CI): a unit holding NUL stopped the PostgreSQL batch (text cannot hold NUL) while SQLite stored it.
@example(files=[PickCase(b"{" + HEAD + b',"unit":"\\u0000","points":[]}', "NUL in unit")], static_first=False)
def test_pick_files_index_as_the_oracle_says(
    files: list[PickCase], static_first: bool, catalogs: Catalogs, tmp_path: Path
) -> None:
    project = Project(tmp_path)
    try:
        expect: dict[tuple[str, str], PickExpect] = {}
        bad: dict[tuple[str, str], str] = {}
        for i, (case, name) in enumerate(zip(files, _pick_names(len(files)), strict=True)):
            where = ("static" if static_first and i == 0 else "overlay", f"{PICKS}/{name}")
            project.put(*where, case.data)
            try:
                expect[where] = pick_oracle(case.data)
                event("pick file: valid")
            except Refused as exc:
                bad[where] = str(exc)
                event("pick file: invalid")
        project.settle()
        state = index(project.config(), catalogs)
        note(f"errors: {state.errors}")
        accepted_bad = {p: bad[p] for p in state.picks if p in bad}
        assert not accepted_bad, f"files the rules refuse were catalogued: {accepted_bad}"
        refused_good = {p: [e[4] for e in state.errors if e[:2] == p] for p in expect if p not in state.picks}
        assert not refused_good, f"valid files were not catalogued: {refused_good}"
        for where, exp in expect.items():
            row = state.picks[where]
            user, session, obj = where[1].rsplit("/", 1)[1][: -len(".json")].split("_")
            assert (row["user_id"], row["session_id"], row["object_name"]) == (user, session, obj)
            got = (row["n_points"], row["unit"], bool(row["trust_orientation"]), row["voxel_spacing"])
            assert got == (len(exp.points), exp.unit, exp.trust_orientation, exp.voxel_spacing), where
            assert as_floats(state.points[where]) == exp.points, where
        check_errors(state, bad)
    finally:
        project.remove()


# ============================================================================================
# 1b. the streaming reader against the whole-file path

#: more ways to be odd than the oracle test uses: these need only the two paths to agree
STREAM_ODDITIES = (
    "escaped_points_key",
    "duplicate_points",
    "inf_in_extra",
    "long_int_in_extra",
    "bad_utf8_in_extra",
    "lone_surrogate_in_extra",
    "nan_in_extra",
    "points_like_extra",
    "malformed_extra_container",
)


def stream_oddity(draw: st.DrawFn, doc: Obj, kind: str) -> str:
    if kind == "escaped_points_key":
        pts = _field(doc, "points")
        if pts is None:
            doc.pairs.append([Str("points", "u"), Arr([Obj([["location", {"x": 1, "y": 2, "z": 3}]])])])
        else:
            pts[0] = Str("points", "u")
        return "the key points spelt with \\u escapes"
    if kind == "duplicate_points":
        doc.pairs.append(["points", Arr([Obj([["location", {"x": 4, "y": 5, "z": 6}]])])])
        return "points twice"
    extra = {
        "inf_in_extra": Raw(b"1e999"),
        "long_int_in_extra": Raw(b"7" * 5000),
        "bad_utf8_in_extra": Raw(b'"\xff\xfe"'),
        "lone_surrogate_in_extra": Raw(b'"\\ud800"'),
        "nan_in_extra": Raw(b"NaN"),
        "points_like_extra": Arr([Obj([["location", {"x": 7, "y": 8, "z": 9}]]), 5]),
        "malformed_extra_container": Raw(
            draw(st.sampled_from([b"[1,,2]", b'{"a" 1}', b'["a\x01"]', b"[1 2]", b'{"a":}', b"[,]", b"[tru]"]))
        ),
    }[kind]
    key = draw(st.sampled_from(["comment", *TRICKY_KEYS]))
    if draw(st.booleans()):
        doc.pairs.insert(draw(st.integers(0, len(doc.pairs))), [Str(key), extra])
    else:
        _a_point(draw, doc).pairs.append([Str(key), extra])
    return f"{kind} under key {key!r}"


@st.composite
def stream_files(draw: st.DrawFn) -> PickCase:
    """Pick files for the stream comparison: the oracle test's, plus oddities only the two paths must agree on."""
    if draw(st.booleans()):
        return draw(pick_files(tricky=True, n_points=(0, 9)))
    doc = base_doc(draw, (0, 9), tricky=True)
    kind = draw(st.sampled_from(STREAM_ODDITIES))
    why = stream_oddity(draw, doc, kind)
    return PickCase(dump(doc, draw(STYLES)), why)


def _catalog_of(state: State) -> dict[str, Any]:
    return {
        "picks": state.picks,
        "points": state.points,
        "packed": state.packed,
        "errors": {(layer, path, sev) for layer, path, _k, sev, _m in state.errors},
    }


def _streamed(why: str, data: bytes) -> Any:
    """A pinned falsifying example of the stream comparison (windows of one byte, batches of one point)."""
    return example(files=[PickCase(data, why)], window=1, batch=1)


@FUZZ
@given(
    files=st.lists(stream_files(), min_size=1, max_size=3),
    window=st.one_of(st.integers(1, 16), st.sampled_from([64, 4096])),
    batch=st.integers(1, 4),
)
# Findings: the streaming reader finds "points" by its raw text (pickstream._ends_with_key), checks the other
# top-level fields by a json.loads/json.dumps round trip (_Reader.finish), never reads inside their arrays or
# objects (_Reader._inner), and re-reads batches msgspec refuses with json.loads (pickrows._lenient_points),
# so it disagrees with the whole-file reader both ways.
@_streamed("the key points spelt with \\u escapes", b"{" + HEAD + b',"\\u0070\\u006f\\u0069\\u006e\\u0074\\u0073":[]}')
@_streamed(
    "a key ending in an escaped quote and points",
    b'{"a\\"points":[{"location":{"x":7,"y":8,"z":9}},5],' + HEAD + b',"points":[]}',
)
@_streamed(
    "that key's array catalogued as the points", b"{" + HEAD + b',"a\\"points":[{"location":{"x":7,"y":8,"z":9}}]}'
)
@_streamed("points twice", b"{" + HEAD + b',"points":[],"points":[{"location":{"x":4,"y":5,"z":6}}]}')
@_streamed("1e999 in an extra", b'{"comment":1e999,' + HEAD + b',"points":[]}')
@_streamed("an integer of 5000 digits in an extra", b'{"comment":' + b"7" * 5000 + b"," + HEAD + b',"points":[]}')
@_streamed("NaN in an extra", b'{"comment":NaN,' + HEAD + b',"trust_orientation":false,"points":null}')
@_streamed("bad UTF-8 in an extra", b'{"comment":"\xff\xfe",' + HEAD + b',"unit":"","points":null}')
@_streamed(
    "a lone surrogate in a point's extra",
    b"{" + HEAD + b',"points":[{"location":{"x":1.0,"y":2.0,"z":3.0},"comment":"\\ud800"}]}',
)
@_streamed("broken JSON inside an extra array", b'{"comment":[1,,2],' + HEAD + b',"points":[]}')
@_streamed("nesting 5000 deep in an extra", b"{" + HEAD + b',"points":null,"deep":' + b"[" * 5000 + b"]" * 5000 + b"}")
def test_streamed_pick_files_catalogue_as_whole_files(
    files: list[PickCase], window: int, batch: int, catalogs: Catalogs, tmp_path: Path
) -> None:
    # a window of a few bytes on a file of 200 kB would cost minutes (numpy's overhead per window)
    window = max(window, max(len(f.data) for f in files) // 400)
    project = Project(tmp_path)
    try:
        for case, name in zip(files, _pick_names(len(files)), strict=True):
            project.put("overlay", f"{PICKS}/{name}", case.data)
        project.settle()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pickstream, "STREAM_BYTES", 2**62)
            whole = index(project.config("whole"), catalogs)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pickstream, "STREAM_BYTES", 1)
            mp.setattr(pickstream, "WINDOW", window)
            mp.setattr(pickstream, "BATCH_POINTS", batch)
            streamed = index(project.config("stream"), catalogs)
        w, s = _catalog_of(whole), _catalog_of(streamed)
        note(f"whole-file errors: {whole.errors}\nstreamed errors: {streamed.errors}")
        only_whole = sorted(set(w["picks"]) - set(s["picks"]))
        assert not only_whole, f"valid as a whole file, refused when streamed: {only_whole} {streamed.errors}"
        only_stream = sorted(set(s["picks"]) - set(w["picks"]))
        assert not only_stream, f"refused as a whole file, accepted when streamed: {only_stream} {whole.errors}"
        assert w["errors"] == s["errors"]
        assert w["picks"] == s["picks"], "pick rows differ"
        assert w["points"] == s["points"], "points differ"
        assert w["packed"] == s["packed"], "packed points differ"
    finally:
        project.remove()


# ============================================================================================
# 2. zarr headers of tomograms


V2_DTYPES = {
    "<f4": "float32",
    "<f8": "float64",
    "|u1": "uint8",
    "|i1": "int8",
    "<i2": "int16",
    "<u2": "uint16",
    "<i4": "int32",
    "<u8": "uint64",
    "|b1": "bool",
    ">f4": ">f4",
    ">i2": ">i2",
    "<c8": "complex64",
}
V3_DTYPES = ("float32", "float64", "uint8", "int8", "int16", "uint16", "int32", "uint64", "bool", "complex64")


@dataclass
class ZarrCase:
    """A zarr group's files (metadata and a few chunks) and what the generator did to them."""

    files: dict[str, bytes]
    why: str

    def __repr__(self) -> str:
        files = ", ".join(f"{k!r}: {_short(v, 200)}" for k, v in self.files.items())
        return f"ZarrCase(why={self.why!r}, files={{{files}}})"


@dataclass
class ZarrExpect:
    shape: list[int]
    dtype: str
    n_levels: int
    zarr_format: int


def _meta(files: dict[str, bytes], name: str) -> dict[str, Any] | None:
    if name not in files:
        return None
    value = strict_json(files[name])
    if not isinstance(value, dict):
        raise Refused(f"{name} is not a JSON object")
    return value


def _is_dims(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v)


def zarr_oracle(files: dict[str, bytes]) -> ZarrExpect:
    """The level-0 summary of a tomogram group from the zarr v2/v3 and OME-NGFF rules, or ``Refused``.

    Groups without their group-level metadata (``.zgroup``/``.zattrs``, or v3's root ``zarr.json``) are read
    from the arrays they hold, as the indexer documents; missing level-0 array metadata is damage.
    """
    meta = {k: v for k, v in files.items() if k.count("/") == 0 or k.split("/", 1)[1] in (".zarray", "zarr.json")}
    root3 = _meta(meta, "zarr.json")
    fmt = None
    if root3 is not None:
        fmt = 3
        attrs = root3.get("attributes", {})
        if not isinstance(attrs, dict):
            raise Refused("attributes is not an object")
        if "ome" in attrs:
            if not isinstance(attrs["ome"], dict):
                raise Refused("attributes.ome is not an object")
            attrs = attrs["ome"]
    else:
        zgroup = _meta(meta, ".zgroup")
        if zgroup is not None and zgroup.get("zarr_format") != 2:
            raise Refused(".zgroup does not say zarr_format 2")
        attrs = _meta(meta, ".zattrs") or {}
        fmt = 2 if ".zattrs" in meta or ".zgroup" in meta else None
    levels: list[str]
    if "multiscales" in attrs:
        ms = attrs["multiscales"]
        if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict):
            raise Refused("multiscales is not a list of objects")
        datasets = ms[0].get("datasets")
        if not isinstance(datasets, list) or not all(isinstance(d, dict) and "path" in d for d in datasets):
            raise Refused("multiscales[0].datasets is not a list of datasets")
        levels = [str(d["path"]) for d in datasets]
        for tr in (datasets[0].get("coordinateTransformations") or []) if datasets else []:
            if isinstance(tr, dict) and tr.get("type") == "scale":
                scale = tr.get("scale")
                ok = isinstance(scale, list) and scale
                ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in scale)
                if not ok or not all(math.isfinite(float(v)) and v > 0 for v in scale):
                    raise Refused(f"scale {scale!r:.40} is not a list of positive numbers")
    else:
        levels = sorted({k.split("/")[0] for k in meta if "/" in k}, key=lambda s: (len(s), s))
    if not levels:
        raise Refused("no levels")
    v2, v3 = _meta(meta, f"{levels[0]}/.zarray"), _meta(meta, f"{levels[0]}/zarr.json")
    if v2 is not None:
        if not _is_dims(v2.get("shape")):
            raise Refused(f"shape {v2.get('shape')!r:.40}")
        dtype = v2.get("dtype")
        if not isinstance(dtype, str) or dtype not in V2_DTYPES:
            raise Refused(f"dtype {dtype!r:.40}")
        return ZarrExpect(v2["shape"], V2_DTYPES[dtype], len(levels), fmt or 2)
    if v3 is not None:
        if not _is_dims(v3.get("shape")):
            raise Refused(f"shape {v3.get('shape')!r:.40}")
        dt = v3.get("data_type")
        dt = dt.get("name") if isinstance(dt, dict) else dt
        if dt not in V3_DTYPES:
            raise Refused(f"data_type {dt!r:.40}")
        return ZarrExpect(v3["shape"], dt, len(levels), fmt or 3)
    raise Refused(f"level {levels[0]} has no array metadata")


def _js(v: Any) -> bytes:
    return json.dumps(v).encode()


ZARR_GARBAGE = st.one_of(
    st.sampled_from([b"[]", b"5", b'"x"', b"null", b"true", b"[" * 5000 + b"]" * 5000]),
    st.binary(max_size=16).map(lambda b: b"\xff\x00" + b),
    st.just("truncate"),
)
WRONG_DIMS = st.sampled_from(["abc", 5, None, {}, [1.5, 2], [True, 2], [-1, 3], [[1]], ["1"], [2.0, 3.0]])
ZARR_WRONG: dict[str, st.SearchStrategy[Any]] = {
    "multiscales": st.sampled_from(["abc", 5, {"a": 1}, True, 0, False, [5], ["abc"]]),
    "datasets": st.sampled_from(["abc", 5, True, {}, 0, False, None, {"path": "0"}]),
    "scale": st.sampled_from([[0, 0, 0], [-1, -1, -1], ["a", "a", "a"], [], "abc", 5, None, [True] * 3]),
    "v2_dtype": st.sampled_from([5, None, {}, "notadtype", True, "<f99"]),
    "v3_data_type": st.sampled_from([5, [], True, None, {"name": 5}, {}, {"name": None}]),
    "attributes": st.sampled_from([[1], "abc", 5, True, [], 0, False]),
    "ome": st.sampled_from(["abc", [1], 5, [], True, 0]),
}


@st.composite
def zarr_groups(draw: st.DrawFn) -> ZarrCase:
    fmt = draw(st.sampled_from([2, 3]))
    n_levels = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(0, 2**20) | st.sampled_from([0, 1, 2**40]), min_size=1, max_size=4))
    vs = draw(st.floats(0.1, 100, allow_nan=False))
    datasets = [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [vs * 2**i] * len(shape)}]}
        for i in range(n_levels)
    ]
    ms: list[dict[str, Any]] = [
        {"name": "/", "axes": [{"name": a, "type": "space"} for a in "zyx"[: len(shape)]], "datasets": datasets}
    ]
    files: dict[str, bytes] = {}
    level_shapes = [[max(1, n >> i) if n else 0 for n in shape] for i in range(n_levels)]
    if fmt == 2:
        dtype = draw(st.sampled_from(sorted(V2_DTYPES)))
        ms[0]["version"] = "0.4"
        files[".zgroup"] = _js({"zarr_format": 2})
        files[".zattrs"] = _js({"multiscales": ms, **draw(st.dictionaries(st.sampled_from(["a", "b"]), LEAF))})
        for i, sh in enumerate(level_shapes):
            files[f"{i}/.zarray"] = _js(
                {
                    "zarr_format": 2,
                    "shape": sh,
                    "chunks": [max(1, min(n, 64)) for n in sh],
                    "dtype": dtype,
                    "compressor": None,
                    "fill_value": 0,
                    "order": "C",
                    "filters": None,
                    "dimension_separator": "/",
                }
            )
    else:
        dtype = draw(st.sampled_from(V3_DTYPES))
        dt_node: Any = {"name": dtype, "configuration": {}} if draw(st.booleans()) else dtype
        attrs = {"ome": {"version": "0.5", "multiscales": ms}} if draw(st.integers(0, 3)) else {"multiscales": ms}
        files["zarr.json"] = _js({"zarr_format": 3, "node_type": "group", "attributes": attrs})
        for i, sh in enumerate(level_shapes):
            files[f"{i}/zarr.json"] = _js(
                {
                    "zarr_format": 3,
                    "node_type": "array",
                    "shape": sh,
                    "data_type": dt_node,
                    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [max(1, n) for n in sh]}},
                    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                    "fill_value": 0,
                    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                }
            )
    if draw(st.booleans()):  # a chunk: never read by the indexer, whatever it holds
        files["0/0" if fmt == 2 else "0/c/0"] = draw(st.binary(max_size=16))
    root, level0 = (".zattrs", "0/.zarray") if fmt == 2 else ("zarr.json", "0/zarr.json")
    mutations = ["drop_group_meta", "drop_level0_meta", "garbage", "wrong_type", "missing_key"]
    kind = draw(st.one_of(st.just("valid"), st.sampled_from(mutations)))
    why = f"valid v{fmt}"
    if kind == "drop_group_meta":
        name = draw(st.sampled_from([".zgroup", ".zattrs"] if fmt == 2 else ["zarr.json"]))
        del files[name]
        why = f"v{fmt} without {name}"
    elif kind == "drop_level0_meta":
        del files[level0]
        why = f"v{fmt} without {level0}"
    elif kind == "garbage":
        name = draw(st.sampled_from([root, level0, ".zgroup"] if fmt == 2 else [root, level0]))
        junk = draw(ZARR_GARBAGE)
        if junk == "truncate":
            junk = files[name][: draw(st.integers(0, len(files[name]) - 1))]
        files[name] = junk
        why = f"v{fmt} {name} = {junk[:40]!r}"
    elif kind == "wrong_type":
        choices = ["multiscales", "datasets", "scale", "shape"]
        choices += ["v2_dtype"] if fmt == 2 else ["v3_data_type", "attributes", "ome"]
        what = draw(st.sampled_from(choices))
        value = draw(WRONG_DIMS if what == "shape" else ZARR_WRONG[what])
        root_doc = json.loads(files[root])
        holder = root_doc if fmt == 2 else root_doc["attributes"]
        holder = holder.get("ome", holder)
        if what == "multiscales":
            holder["multiscales"] = value
        elif what == "datasets":
            holder["multiscales"][0]["datasets"] = value
        elif what == "scale":
            holder["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = value
        elif what == "attributes":
            root_doc["attributes"] = value
        elif what == "ome":
            root_doc["attributes"] = {"ome": value}
        files[root] = _js(root_doc)
        if what in ("shape", "v2_dtype", "v3_data_type"):
            arr = json.loads(files[level0])
            arr[{"shape": "shape", "v2_dtype": "dtype", "v3_data_type": "data_type"}[what]] = value
            files[level0] = _js(arr)
        why = f"v{fmt} {what} = {value!r:.40}"
    elif kind == "missing_key":
        key = draw(st.sampled_from(["shape", "dtype" if fmt == 2 else "data_type"]))
        arr = json.loads(files[level0])
        del arr[key]
        files[level0] = _js(arr)
        why = f"v{fmt} {level0} without {key!r}"
    return ZarrCase(files, why)


TOMO_TYPES = ("wbp", "denoised", "raw-ctf")


def _v2(zgroup: Any = None, zattrs: Any = None, zarray: Any = None, why: str = "") -> ZarrCase:
    """A minimal v2 tomogram group (one level of shape [1], float32), with some metadata replaced."""
    ms = {"multiscales": [{"version": "0.4", "datasets": [{"path": "0"}]}]}
    files = {
        ".zgroup": zgroup if zgroup is not None else _js({"zarr_format": 2}),
        ".zattrs": _js(ms if zattrs is None else zattrs),
        "0/.zarray": _js({"zarr_format": 2, "shape": [1], "chunks": [1], "dtype": "<f4"} if zarray is None else zarray),
    }
    return ZarrCase(files, why)


def _v3(attributes: Any = None, array: Any = None, why: str = "") -> ZarrCase:
    """A minimal v3 tomogram group (one level of shape [1], float32), with some metadata replaced."""
    ome = {"ome": {"version": "0.5", "multiscales": [{"datasets": [{"path": "0"}]}]}}
    files = {
        "zarr.json": _js(
            {"zarr_format": 3, "node_type": "group", "attributes": ome if attributes is None else attributes}
        ),
        "0/zarr.json": _js(
            {"zarr_format": 3, "node_type": "array", "shape": [1], "data_type": "float32"} if array is None else array
        ),
    }
    return ZarrCase(files, why)


@FUZZ
@given(groups=st.lists(zarr_groups(), min_size=1, max_size=3))
# Findings: read_zarr_info accepts damaged or mistyped metadata (every one a group zarr cannot open as such).
@example(groups=[_v2(zgroup=b"[]", why=".zgroup is not a JSON object (it is never read)")])
@example(groups=[_v2(zarray={"zarr_format": 2, "chunks": [1], "dtype": "<f4"}, why="no shape: catalogued as []")])
@example(groups=[_v2(zarray={"zarr_format": 2, "shape": [1], "chunks": [1]}, why="no dtype: catalogued as float64")])
@example(groups=[_v3(array={"zarr_format": 3, "node_type": "array", "shape": [1]}, why="v3 without data_type")])
@example(groups=[_v2(zattrs={"multiscales": [5]}, why="multiscales [5]: silently read from the arrays")])
@example(groups=[_v2(zattrs={"multiscales": [{"datasets": {}}]}, why="datasets {}: taken as no datasets")])
@example(groups=[_v3(attributes=[], why="attributes []: taken as no attributes")])
def test_zarr_tomogram_headers_index_as_the_oracle_says(
    groups: list[ZarrCase], catalogs: Catalogs, tmp_path: Path
) -> None:
    project = Project(tmp_path)
    try:
        expect: dict[tuple[str, str], ZarrExpect] = {}
        bad: dict[tuple[str, str], str] = {}
        for case, tomo_type in zip(groups, TOMO_TYPES, strict=False):
            rel = f"{VOXELS}/{tomo_type}.zarr"
            project.mkdir("static", rel)
            for name, data in case.files.items():
                project.put("static", f"{rel}/{name}", data)
            try:
                expect[("static", rel)] = zarr_oracle(case.files)
                event("zarr group: valid")
            except Refused as exc:
                bad[("static", rel)] = str(exc)
                event("zarr group: invalid")
        project.settle()
        state = index(project.config(), catalogs)
        accepted_bad = {p: (bad[p], state.tomograms[p]) for p in state.tomograms if p in bad}
        assert not accepted_bad, f"damaged groups were catalogued: {accepted_bad}"
        refused_good = {p: [e[4] for e in state.errors if e[:2] == p] for p in expect if p not in state.tomograms}
        assert not refused_good, f"valid groups were not catalogued: {refused_good}"
        for where, exp in expect.items():
            row = state.tomograms[where]
            got = (row["tomo_type"], row["shape"], row["dtype"], row["n_levels"], row["zarr_format"])
            tomo_type = where[1].rsplit("/", 1)[1][: -len(".zarr")]
            assert got == (tomo_type, exp.shape, exp.dtype, exp.n_levels, exp.zarr_format), where
        check_errors(state, bad)
    finally:
        project.remove()


# ============================================================================================
# 3. GLB headers of meshes

GLB_JSON, GLB_BIN = 0x4E4F534A, 0x004E4942


@dataclass
class GlbCase:
    data: bytes
    why: str
    gltf: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"GlbCase(why={self.why!r}, gltf={self.gltf!r}, data={self.data[:60]!r}...{len(self.data)} bytes)"


def glb_bytes(
    chunk: bytes,
    bin_chunk: bytes | None = None,
    *,
    magic: bytes = b"glTF",
    version: int = 2,
    length_delta: int = 0,
    chunk_len_delta: int = 0,
    chunk_type: int = GLB_JSON,
) -> bytes:
    """A GLB container: 12-byte header, the JSON chunk (space-padded), an optional BIN chunk."""
    chunk += b" " * (-len(chunk) % 4)
    body = struct.pack("<II", len(chunk) + chunk_len_delta, chunk_type) + chunk
    if bin_chunk is not None:
        bin_chunk += b"\0" * (-len(bin_chunk) % 4)
        body += struct.pack("<II", len(bin_chunk), GLB_BIN) + bin_chunk
    return magic + struct.pack("<II", version, 12 + len(body) + length_delta) + body


def glb_oracle(data: bytes) -> tuple[int, int]:
    """(vertices, triangles) from a GLB's JSON chunk by the glTF 2.0 rules, or ``Refused``."""
    if len(data) < 20:
        raise Refused("shorter than a GLB header")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2:
        raise Refused(f"magic {magic!r} version {version}")
    if length > len(data):
        raise Refused("truncated (header length)")
    chunk_len, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != GLB_JSON or 20 + chunk_len > length:
        raise Refused("first chunk is not a whole JSON chunk")
    gltf = strict_json(data[20 : 20 + chunk_len])
    if not isinstance(gltf, dict):
        raise Refused("JSON chunk is not an object")
    accessors, meshes = gltf.get("accessors", []), gltf.get("meshes", [])
    if not isinstance(accessors, list) or not isinstance(meshes, list):
        raise Refused("accessors/meshes are not lists")

    def count(index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(accessors):
            raise Refused(f"accessor index {index!r}")
        acc = accessors[index]
        c = acc.get("count") if isinstance(acc, dict) else None
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= MAX_COUNT:
            raise Refused(f"accessor count {c!r}")
        return c

    nv = nf = 0
    for mesh in meshes:
        for prim in mesh["primitives"]:
            n_pos = count(prim["attributes"]["POSITION"]) if "POSITION" in prim.get("attributes", {}) else 0
            nv += n_pos
            if prim.get("mode", 4) == 4:
                nf += (count(prim["indices"]) if "indices" in prim else n_pos) // 3
    if nv > MAX_COUNT or nf > MAX_COUNT:
        raise Refused("totals beyond 32 bits")
    return nv, nf


COUNT = st.one_of(st.integers(0, 5000), st.sampled_from([0, 3, MAX_COUNT, MAX_COUNT - 1, 2**30]))
GLB_MUTATIONS = (
    "truncate",
    "length_field",
    "chunk_length",
    "chunk_type",
    "magic",
    "version",
    "short",
    "json_list",
    "json_garbage",
    "lists_wrong",
    "index_wrong",
    "count_wrong",
    "totals_overflow",
)


@st.composite
def glb_files(draw: st.DrawFn) -> GlbCase:
    accessors: list[dict[str, Any]] = []
    meshes = []
    for _ in range(draw(st.integers(0, 3))):
        prims = []
        for _ in range(draw(st.integers(1, 3))):
            prim: dict[str, Any] = {"attributes": {}}
            if draw(st.integers(0, 5)):
                accessors.append({"count": draw(COUNT), "type": "VEC3", "componentType": 5126})
                prim["attributes"]["POSITION"] = len(accessors) - 1
            if draw(st.booleans()):
                accessors.append({"count": draw(COUNT), "type": "SCALAR", "componentType": 5125})
                prim["indices"] = len(accessors) - 1
            mode = draw(st.sampled_from(["absent", 4, 4, 0, 1, 5]))
            if mode != "absent":
                prim["mode"] = mode
            prims.append(prim)
        meshes.append({"primitives": prims})
    gltf: Any = {"asset": {"version": "2.0"}, "accessors": accessors, "meshes": meshes}
    if not meshes and draw(st.booleans()):
        del gltf["meshes"]
    binary = draw(st.none() | st.binary(max_size=24))
    opts: dict[str, Any] = {}
    kind = draw(st.one_of(st.just("valid"), st.sampled_from(GLB_MUTATIONS)))
    why = "valid"
    prims_all = [p for m in meshes for p in m["primitives"]]
    if kind == "json_list":
        gltf = [gltf]
    elif kind == "lists_wrong":
        key = draw(st.sampled_from(["accessors", "meshes"]))
        gltf[key] = draw(st.sampled_from(["abc", 5, True, {}, 0, {"0": {"count": 3}}]))
        why = f"{key} = {gltf[key]!r}"
    elif kind == "index_wrong" and prims_all:
        prim = draw(st.sampled_from(prims_all))
        bad = draw(st.sampled_from(["0", "1", -1, True, len(accessors), len(accessors) + 7]))
        if "indices" in prim and draw(st.booleans()):
            prim["indices"] = bad
        else:
            prim["attributes"]["POSITION"] = bad
        why = f"accessor index {bad!r}"
    elif kind == "count_wrong" and accessors:
        bad = draw(st.sampled_from([MAX_COUNT + 1, 2**40, 10**30, -1, "5", 5.5, None, True]))
        accessors[draw(st.integers(0, len(accessors) - 1))]["count"] = bad
        why = f"count {bad!r}"
    elif kind == "totals_overflow":
        accessors += [{"count": MAX_COUNT}, {"count": MAX_COUNT}]
        n = len(accessors)
        gltf["meshes"] = [
            *meshes,
            {"primitives": [{"attributes": {"POSITION": n - 2}}, {"attributes": {"POSITION": n - 1}}]},
        ]
        why = "two primitives of 2**31-1 vertices"
    chunk = json.dumps(gltf, indent=draw(st.sampled_from([None, 2]))).encode()
    if kind == "json_garbage":
        chunk = draw(
            st.sampled_from([chunk[: len(chunk) // 2], b"\xff" + chunk, b"[" * 5000 + b"]" * 5000, b"", b"NaN"])
        )
        why = f"JSON chunk {chunk[:20]!r}"
    if kind == "length_field":
        opts["length_delta"] = draw(st.integers(1, 2**16))
    elif kind == "chunk_length":
        opts["chunk_len_delta"] = draw(st.integers(1, 2**16))
    elif kind == "chunk_type":
        opts["chunk_type"] = draw(st.sampled_from([GLB_BIN, 0, GLB_JSON + 1]))
    elif kind == "magic":
        opts["magic"] = draw(st.sampled_from([b"glTf", b"GLTF", b"\0\0\0\0", b"gltf"]))
    elif kind == "version":
        opts["version"] = draw(st.sampled_from([1, 3, 0, 2**32 - 1]))
    if opts:
        why = f"{kind}: {opts}"
    data = glb_bytes(chunk, binary, **opts)
    if kind == "truncate":
        cut = draw(st.integers(0, len(data) - 1))
        data, why = data[:cut], f"truncated at {cut} of {len(data)}"
    elif kind == "short":
        data, why = data[: draw(st.integers(0, 19))], "shorter than a header"
    elif kind in ("index_wrong", "count_wrong") and why == "valid":
        why = f"{kind} (nothing to break: valid)"
    return GlbCase(data, why if kind != "json_list" else "JSON chunk is a list", gltf)


def _glb(gltf: dict[str, Any], why: str, version: int = 2) -> Any:
    return example(meshes=[GlbCase(glb_bytes(json.dumps(gltf).encode(), version=version), why, gltf)])


@FUZZ
@given(meshes=st.lists(glb_files(), min_size=1, max_size=3))
# Findings: read_glb_counts never checks the container version, and takes falsy non-lists for empty lists.
@_glb({"asset": {"version": "2.0"}, "accessors": [], "meshes": []}, "GLB container version 1", version=1)
@_glb({"asset": {"version": "2.0"}, "accessors": {}, "meshes": []}, "accessors = {}")
@_glb({"asset": {"version": "2.0"}, "accessors": [], "meshes": {}}, "meshes = {}")
def test_glb_mesh_headers_index_as_the_oracle_says(meshes: list[GlbCase], catalogs: Catalogs, tmp_path: Path) -> None:
    project = Project(tmp_path)
    try:
        expect: dict[tuple[str, str], tuple[int, int]] = {}
        bad: dict[tuple[str, str], str] = {}
        for i, case in enumerate(meshes):
            where = ("overlay", f"{MESHES}/u{i}_1_{OBJECTS[i % 2]}.glb")
            project.put(*where, case.data)
            try:
                expect[where] = glb_oracle(case.data)
                event("glb: valid")
            except Refused as exc:
                bad[where] = str(exc)
                event("glb: invalid")
        project.settle()
        state = index(project.config(), catalogs)
        accepted_bad = {p: (bad[p], state.meshes[p]) for p in state.meshes if p in bad}
        assert not accepted_bad, f"damaged GLB files were catalogued: {accepted_bad}"
        refused_good = {p: [e[4] for e in state.errors if e[:2] == p] for p in expect if p not in state.meshes}
        assert not refused_good, f"valid GLB files were not catalogued: {refused_good}"
        for where, (nv, nf) in expect.items():
            row = state.meshes[where]
            assert (row["n_vertices"], row["n_faces"]) == (nv, nf), where
        check_errors(state, bad)
    finally:
        project.remove()


# ============================================================================================
# 4. pick file names

NAME_CHARS = st.one_of(
    st.sampled_from("_" * 6 + ".-  abcxyz019"),
    st.sampled_from(
        ["é", "ü", "日", "本", "🧬", "\t", "\u00a0", "\u200b", "%", "'", '"', "\\", "*", "?", "<", "|", ":"]
    ),
    st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"),
)
NAME_PART = st.text(NAME_CHARS, max_size=6)
EXTENSIONS = st.sampled_from([".json"] * 6 + [".JSON", ".json.bak", "", ".json ", ".glb", "json"])


@st.composite
def pick_file_names(draw: st.DrawFn) -> str:
    how = draw(st.sampled_from(["parts", "parts", "random", "long"]))
    if how == "random":
        stem = draw(st.text(NAME_CHARS, min_size=1, max_size=20))
    else:
        user = draw(NAME_PART)
        session = draw(NAME_PART)
        obj = draw(st.sampled_from(OBJECTS) | NAME_PART)
        stem = f"{user}_{session}_{obj}"
    if draw(st.integers(0, 5)) == 0:
        stem = "." + stem
    name = stem + draw(EXTENSIONS)
    if how == "long":  # up to the file system's 255 bytes, grown before the object so the suffix stays
        user, rest = name.split("_", 1) if "_" in name else ("", name)
        filler = draw(st.sampled_from(["a", "é", "_", "-", "日"]))
        while len((user + filler + "_" + rest).encode()) <= 255:
            user += filler
        name = f"{user}_{rest}" if user else rest
    if name in (".", "..") or not name or len(name.encode()) > 255:
        name = "x_y_ribosome.json"
    return name


def name_oracle(fname: str) -> tuple[str, ...]:
    """What the catalog makes of a file name in Picks/, from copick's rule and the grammar's resolution:

    ``("ignored",)`` for hidden names and other extensions, ``("error",)`` for names that cannot be split,
    ``("pick", user, session, object, warned)`` otherwise. ``<user>_<session>_<object>`` with three non-empty
    parts is read as it is; with more underscores the object is the longest configured object that ends the
    stem and leaves at least two non-empty parts before it (the last is the session), and the row then
    carries a warning, as it does when the object resolved contains an underscore.
    """
    if fname.startswith(".") or not fname.endswith(".json"):
        return ("ignored",)
    stem = fname[: -len(".json")]
    parts = stem.split("_")
    if len(parts) == 3 and all(parts):
        return ("pick", *parts, False)
    if len(parts) < 3:
        return ("error",)
    candidates = [o for o in OBJECTS if stem.endswith("_" + o) and len(stem) > len(o) + 1]
    for obj in sorted(candidates, key=len, reverse=True):
        pp = stem[: -len(obj) - 1].split("_")
        if len(pp) >= 2 and all(pp):
            return ("pick", "_".join(pp[:-1]), pp[-1], obj, len(pp) > 2 or "_" in obj)
    return ("error",)


VALID_PICK = json.dumps(
    {
        "pickable_object_name": "ribosome",
        "user_id": "u",
        "session_id": "1",
        "points": [{"location": {"x": 1.5, "y": -2.0, "z": 3.0}, "instance_id": 7, "score": 0.5}],
    },
    indent=4,
).encode()


@FUZZ
@given(names=st.lists(pick_file_names(), min_size=1, max_size=6, unique=True))
def test_pick_file_names_index_as_the_grammar_says(names: list[str], catalogs: Catalogs, tmp_path: Path) -> None:
    project = Project(tmp_path)
    try:
        project.mkdir("overlay", PICKS)
        expect: dict[tuple[str, str], tuple[str, ...]] = {}
        bad: dict[tuple[str, str], str] = {}
        warned = set()
        for name in names:
            where = ("overlay", f"{PICKS}/{name}")
            project.put(*where, VALID_PICK)
            verdict = name_oracle(name)
            event(f"pick name: {verdict[0]}{' (warned)' if verdict[-1] is True else ''}")
            if verdict[0] == "pick":
                expect[where] = verdict[1:4]
                if verdict[4]:
                    warned.add(where)
            elif verdict[0] == "error":
                bad[where] = "name"
        project.settle()
        state = index(project.config(), catalogs)
        got = {p: (r["user_id"], r["session_id"], r["object_name"]) for p, r in state.picks.items()}
        assert got == expect
        assert all(r["n_points"] == 1 for r in state.picks.values())
        check_errors(state, bad, frozenset(warned))
        assert all(kind == "name" for _l, p, kind, sev, _m in state.errors if sev == "error")
    finally:
        project.remove()


# ============================================================================================
# The oracles themselves, on fixed cases (so a failure above is not a mistake of the oracle)


@pytest.mark.parametrize(
    ("name", "verdict"),
    [
        ("alice_1_ribosome.json", ("pick", "alice", "1", "ribosome", False)),
        ("alice_1_unknown.json", ("pick", "alice", "1", "unknown", False)),
        ("my_user_5_ribosome.json", ("pick", "my_user", "5", "ribosome", True)),
        ("a_b_virus_like.json", ("pick", "a", "b", "virus_like", True)),
        ("a_virus_like.json", ("pick", "a", "virus", "like", False)),
        ("x_y_z_w_q.json", ("error",)),
        ("foo.json", ("error",)),
        ("a__ribosome.json", ("error",)),
        (".alice_1_ribosome.json", ("ignored",)),
        ("alice_1_ribosome.JSON", ("ignored",)),
    ],
)
def test_name_oracle(name: str, verdict: tuple[str, ...]) -> None:
    assert name_oracle(name) == verdict


def test_pick_oracle_on_fixed_cases() -> None:
    head = b'"pickable_object_name": "r", "user_id": "u", "session_id": "s"'
    ok: Callable[[bytes], PickExpect] = pick_oracle
    assert ok(b"{" + head + b"}").points == []
    pt = b'{"location": {"x": 1, "y": 2.5, "z": -3e2}, "instance_id": 9007199254740992, "score": 0}'
    assert ok(b"{" + head + b', "points": [' + pt + b"]}").points == [(0, 1.0, 2.5, -300.0, 2**53, 0.0, None)]
    for bad in (
        b"{" + head + b', "points": [{"location": {"x": NaN, "y": 0, "z": 0}}]}',
        b"{" + head + b', "points": [{"location": {"x": 1e999, "y": 0, "z": 0}}]}',
        b"{" + head + b', "points": [{"location": {"x": 0, "y": 0, "z": 0}, "instance_id": 9007199254740993}]}',
        b"{" + head + b', "points": [],}',
        b"{" + head + b', "extra": "\xff"}',
        b"[{" + head + b"}]",
        b'{"user_id": "u", "session_id": "s"}',
    ):
        with pytest.raises(Refused):
            pick_oracle(bad)


def test_glb_and_zarr_oracles_on_fixed_cases() -> None:
    gltf = {
        "accessors": [{"count": 8}, {"count": 36}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1, "mode": 4}]}],
    }
    assert glb_oracle(glb_bytes(json.dumps(gltf).encode(), b"\0" * 8)) == (8, 12)
    with pytest.raises(Refused):
        glb_oracle(glb_bytes(json.dumps(gltf).encode())[:-1])
    files = {
        ".zgroup": _js({"zarr_format": 2}),
        ".zattrs": _js({"multiscales": [{"datasets": [{"path": "0"}, {"path": "1"}]}]}),
        "0/.zarray": _js({"shape": [4, 5, 6], "dtype": "<f4"}),
    }
    assert zarr_oracle(files) == ZarrExpect([4, 5, 6], "float32", 2, 2)
    with pytest.raises(Refused):
        zarr_oracle({**files, "0/.zarray": _js({"shape": [4, 5, 6]})})

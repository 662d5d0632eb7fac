"""Pick points as the catalog stores them, decoded with msgspec and checked in bulk.

The indexer reads every pick file of a project; validating each with pydantic models costs a third of
a full index. Here a file (or a batch of a streamed file's points) is decoded by msgspec into typed
structs, the rules of :class:`~copick_catalog.formats.picks.PickFile` are checked on whole arrays with
numpy (finite coordinates and scores, instance ids within
:data:`~copick_catalog.formats.picks.MAX_INSTANCE_ID`, a 4x4 ``transformation_`` with last row
``[0, 0, 0, 1]``), and the result is the list of point rows the catalog inserts. Errors name the field
exactly as the pydantic models do (``points.3.location.x``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import msgspec
import numpy as np
from pydantic import TypeAdapter, ValidationError

from ..gcpause import gc_paused
from .picks import IDENTITY, MAX_INSTANCE_ID, PickFile, PickPoint

#: ``(idx, x, y, z, instance_id, score, transform JSON or None for the identity)``
PointRow = tuple[int, float, float, float, int, float, str | None]
_IDENTITY = [list(r) for r in IDENTITY]


# gc=False: structs hold only numbers and strings, so the cyclic collector need not track them
class _Location(msgspec.Struct, gc=False):
    x: float
    y: float
    z: float


class _Point(msgspec.Struct, gc=False):
    location: _Location
    # kept as raw JSON: nearly every point has the identity, recognised from its text without decoding
    transformation_: msgspec.Raw = msgspec.Raw(b"")
    instance_id: int = 0
    score: float = 1.0


class _PickFile(msgspec.Struct):
    pickable_object_name: str
    user_id: str
    session_id: str
    run_name: str | None = None
    voxel_spacing: float | None = None
    unit: str = "angstrom"
    points: list[_Point] | None = None
    trust_orientation: bool = True


class _Header(msgspec.Struct):
    """The top-level fields of a streamed file; its points, decoded batch by batch, are left as ``[]``
    (so a ``points`` that is not an array is refused with the same words as in a whole file)."""

    pickable_object_name: str
    user_id: str
    session_id: str
    run_name: str | None = None
    voxel_spacing: float | None = None
    unit: str = "angstrom"
    points: list[Any] | None = None
    trust_orientation: bool = True


class InvalidPicks(ValueError):
    """A pick file breaks a rule; ``field`` is the dotted path of the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field '{field}': {message}" if field else message)
        self.field = field


@dataclass(slots=True)
class PickHeader:
    """What the ``picks`` row records besides the points."""

    unit: str
    trust_orientation: bool
    voxel_spacing: float | None


_PACKED_WIDTH = 5  # x, y, z, instance_id, score: the layout of ``packed_points.data``


@dataclass(slots=True)
class PointColumns:
    """A batch of points as columns: pick ids, indices in their files, the packed values (one row of
    ``x, y, z, instance_id, score`` per point) and the non-identity transforms by row."""

    pick_ids: np.ndarray
    idx: np.ndarray
    values: np.ndarray
    transforms: dict[int, str]

    def __len__(self) -> int:
        return len(self.idx)


@dataclass(slots=True)
class PointBlock:
    """A file's points, compact: one ``(n, 5)`` little-endian float64 array (x, y, z, instance_id, score:
    exactly ``packed_points.data``) plus the transforms that are not the identity, by point index.

    Why: the indexer reads pick files in worker processes; 25 points as 25 Python tuples cost more to
    send back than to parse, while this is one bytes object. Floats survive it exactly, and instance ids
    too (float64 holds every integer up to :data:`~copick_catalog.formats.picks.MAX_INSTANCE_ID`).
    """

    packed: bytes
    transforms: dict[int, str] = field(default_factory=dict)
    offset: int = 0

    def __len__(self) -> int:
        return len(self.packed) // (8 * _PACKED_WIDTH)

    @classmethod
    def from_rows(cls, rows: list[PointRow], offset: int = 0) -> PointBlock:
        """The block of point rows made elsewhere (the pydantic reading of a lenient file)."""
        packed = np.array([r[1:6] for r in rows], dtype="<f8").reshape(-1, _PACKED_WIDTH).tobytes()
        return cls(packed, {r[0] - offset: r[6] for r in rows if r[6] is not None}, offset)

    def rows(self, pick_id: int) -> Iterator[tuple[Any, ...]]:
        """``(pick_id, idx, x, y, z, instance_id, score, transform)`` tuples for an insert, built in C."""
        n = len(self)
        arr = np.frombuffer(self.packed, dtype="<f8").reshape(n, _PACKED_WIDTH)
        x, y, z, _ids, score = arr.T.tolist()
        ids = arr[:, 3].astype(np.int64).tolist()
        tr: list[str | None] = [None] * n
        for i, text in self.transforms.items():
            tr[i] = text
        return zip(repeat(pick_id, n), range(self.offset, self.offset + n), x, y, z, ids, score, tr, strict=True)

    @staticmethod
    def columns(blocks: list[tuple[int, PointBlock]]) -> PointColumns | None:
        """The points of many ``(pick_id, block)`` as numpy columns: a handful of numpy calls for a whole
        batch of files instead of a handful per file. None when there are no points."""
        blocks = [(pid, b) for pid, b in blocks if b.packed]
        if not blocks:
            return None
        counts = np.fromiter((len(b) for _, b in blocks), dtype=np.int64, count=len(blocks))
        total = int(counts.sum())
        arr = np.frombuffer(b"".join(b.packed for _, b in blocks), dtype="<f8").reshape(total, _PACKED_WIDTH)
        pids = np.repeat(np.fromiter((pid for pid, _ in blocks), dtype=np.int64, count=len(blocks)), counts)
        starts = np.cumsum(counts) - counts  # where each block begins in the batch
        offsets = np.fromiter((b.offset for _, b in blocks), dtype=np.int64, count=len(blocks))
        idx = np.arange(total, dtype=np.int64) - np.repeat(starts - offsets, counts)
        transforms = {
            start + i: text
            for start, (_, b) in zip(starts.tolist(), blocks, strict=True)
            for i, text in b.transforms.items()
        }
        return PointColumns(pids, idx, arr, transforms)

    @staticmethod
    def insert_rows(blocks: list[tuple[int, PointBlock]]) -> Iterator[tuple[Any, ...]]:
        """``(pick_id, idx, x, y, z, instance_id, score, transform)`` tuples of many blocks, for an insert."""
        cols = PointBlock.columns(blocks)
        if cols is None:
            return iter(())
        x, y, z, _ids, score = cols.values.T.tolist()
        ids = cols.values[:, 3].astype(np.int64).tolist()
        tr: list[str | None] = [None] * len(cols)
        for i, text in cols.transforms.items():
            tr[i] = text
        return zip(cols.pick_ids.tolist(), cols.idx.tolist(), x, y, z, ids, score, tr, strict=True)

    def as_rows(self) -> list[PointRow]:
        """The block as :data:`PointRow` tuples (tests, and callers that want plain rows)."""
        return [r[1:] for r in self.rows(0)]


# strict=False: lax conversions as pydantic does them (1.0 for an int, "2.5" for a float), so a file copick
# reads is not refused here
_FILE_DECODER = msgspec.json.Decoder(_PickFile, strict=False)
_HEADER_DECODER = msgspec.json.Decoder(_Header, strict=False)
_POINTS_DECODER = msgspec.json.Decoder(list[_Point], strict=False)
_AT = re.compile(r"`\$(?P<path>[^`]*)`")
_POINT_LIST = TypeAdapter(list[PickPoint])


def _field_of(exc: msgspec.ValidationError, offset: int = 0, prefix: str = "") -> InvalidPicks:
    """msgspec's ``Expected `float`, got `str` - at `$.points[3].location.x``` as our field path."""
    text = str(exc)
    m = _AT.search(text)
    path = m["path"] if m else ""
    if prefix == "points" and path.startswith("["):  # a batch of points: its index is relative to the batch
        idx, _, rest = path[1:].partition("]")
        path = f".points[{int(idx) + offset}]{rest}"
    dotted = re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")
    return InvalidPicks(dotted, text.split(" - at ")[0])


def _header(value: _PickFile | _Header) -> PickHeader:
    vs = value.voxel_spacing
    if vs is not None and not math.isfinite(vs):
        raise InvalidPicks("voxel_spacing", f"Input should be a finite number (got {vs!r})")
    return PickHeader(_storable("unit", value.unit), value.trust_orientation, vs)


def _storable(field: str, text: str) -> str:
    """Refuse a stored string holding NUL: PostgreSQL text cannot hold it and SQLite would, so the two
    catalogs of one project would differ; copick itself reads such a file, but nothing writes one on purpose."""
    if "\x00" in text:
        raise InvalidPicks(field, "contains a NUL character (\\u0000), which no catalog database stores; remove it")
    return text


def point_rows(points: list[_Point], offset: int = 0) -> list[PointRow]:
    """Check decoded points in bulk and turn them into catalog rows (``offset``: index of the first)."""
    return point_block(points, offset).as_rows() if points else []


def point_block(points: list[_Point], offset: int = 0) -> PointBlock:
    """Check decoded points in bulk (the rules of the pydantic models, on whole arrays) into a :class:`PointBlock`."""
    n = len(points)
    if n == 0:
        return PointBlock(b"", {}, offset)
    with gc_paused():
        locs = [p.location for p in points]
        x = [loc.x for loc in locs]
        y = [loc.y for loc in locs]
        z = [loc.z for loc in locs]
        score = [p.score for p in points]
        ids = [p.instance_id for p in points]
        values = np.array((x, y, z, score), dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row, i = (int(v) for v in np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])])
            name = ("location.x", "location.y", "location.z", "score")[row]
            got = (x, y, z, score)[row][i]
            raise InvalidPicks(f"points.{offset + i}.{name}", f"Input should be a finite number (got {got})")
        if max(ids) > MAX_INSTANCE_ID or min(ids) < -MAX_INSTANCE_ID:
            i = next(k for k, v in enumerate(ids) if abs(v) > MAX_INSTANCE_ID)
            raise InvalidPicks(
                f"points.{offset + i}.instance_id", f"Input should be within +-{MAX_INSTANCE_ID} (got {ids[i]})"
            )
        transforms = {}
        for i, p in enumerate(points):
            text = _transform(p.transformation_, offset + i)
            if text is not None:
                transforms[i] = text
        packed = np.empty((n, _PACKED_WIDTH), dtype="<f8")
        packed[:, :3] = values[:3].T
        packed[:, 3] = ids
        packed[:, 4] = values[3]
        return PointBlock(packed.tobytes(), transforms, offset)


_IDENTITY_TEXT = frozenset(
    {
        b"[[1.0,0.0,0.0,0.0],[0.0,1.0,0.0,0.0],[0.0,0.0,1.0,0.0],[0.0,0.0,0.0,1.0]]",
        b"[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]",
    }
)
_MATRIX = msgspec.json.Decoder(list[list[float]], strict=False)


def _transform(raw: msgspec.Raw, i: int) -> str | None:
    """None for the identity (what nearly every point has, recognised from its text), else the matrix as JSON."""
    text = bytes(raw)
    if not text or text.translate(None, b" \t\n\r") in _IDENTITY_TEXT:
        return None
    where = f"points.{i}.transformation_"
    try:
        m = _MATRIX.decode(text)
    except msgspec.ValidationError as exc:
        raise InvalidPicks(where, str(exc).split(" - at ")[0]) from None
    if len(m) != 4 or any(len(row) != 4 for row in m):
        raise InvalidPicks(where, "transformation_ must be a 4x4 matrix")
    if not all(math.isfinite(v) for row in m for v in row):
        raise InvalidPicks(where, "Input should be a finite number")
    if m[3] != [0.0, 0.0, 0.0, 1.0]:
        raise InvalidPicks(where, "the last row of transformation_ must be [0, 0, 0, 1]")
    return None if m == _IDENTITY else json.dumps(m)


def require_utf8(data: bytes | bytearray | memoryview) -> None:
    """Refuse text that is not UTF-8, as copick (pydantic) does; msgspec never looks inside the fields it skips."""
    if (data if isinstance(data, bytes | bytearray) else bytes(data)).isascii():  # nearly every file: no decode
        return
    try:
        str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None


def _zero(_text: str) -> int:
    return 0


def top_level_values(data: bytes) -> list[tuple[str, object]]:
    """The top level of a JSON object as (key, value) pairs in file order, repeated keys kept (numbers are
    read as 0: only the structure matters). Only for small texts: a streamed file's fields besides points."""
    pairs: list[tuple[str, object]] = []

    def hook(found: list[tuple[str, object]]) -> None:
        pairs[:] = found  # the outermost object is the last one finished

    try:
        json.loads(data, object_pairs_hook=hook, parse_int=_zero, parse_float=_zero, parse_constant=_zero)
    except (ValueError, RecursionError):
        return []
    return list(pairs)


def decode_file(data: bytes | memoryview) -> tuple[PickHeader, list[PointRow]]:
    """A whole pick file: its header and its point rows; :class:`InvalidPicks` or ``msgspec.DecodeError``."""
    head, block = decode_block(data)
    return head, block.as_rows()


def decode_block(data: bytes | memoryview) -> tuple[PickHeader, PointBlock]:
    """A whole pick file: its header and its points as a :class:`PointBlock` (what the indexer stores).

    Text msgspec will not parse (``NaN`` and ``Infinity``, which Python's ``json.dump`` writes for
    non-finite floats, are not JSON) is read again with the pydantic models, so the error names the field.
    """
    require_utf8(data)
    try:
        with gc_paused():
            value = _FILE_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise _field_of(exc) from None
    except msgspec.DecodeError:
        head, rows = _lenient_file(bytes(data))
        return head, PointBlock.from_rows(rows)
    return _header(value), point_block(value.points or [])


def _lenient_file(data: bytes) -> tuple[PickHeader, list[PointRow]]:
    """The pydantic reading of a file msgspec refused: either its field-naming error, or its rows."""
    try:
        model = PickFile.model_validate_json(data)
    except ValidationError as exc:
        raise _pydantic_field(exc, 0) from None
    head = PickHeader(_storable("unit", model.unit), model.trust_orientation, model.voxel_spacing)
    return head, _model_rows(model.points or [], 0)


def _lenient_points(data: bytes, offset: int) -> list[PointRow]:
    """The pydantic reading of a batch msgspec refused (the same JSON parser as :func:`_lenient_file`)."""
    try:
        points = _POINT_LIST.validate_json(data)
    except ValidationError as exc:
        raise _pydantic_field(exc, offset, points=True) from None
    return _model_rows(points, offset)


def _pydantic_field(exc: ValidationError, offset: int, points: bool = False) -> Exception:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return msgspec.DecodeError(first["msg"])
    loc = [str(p) for p in first["loc"]]
    if points and loc:
        loc = ["points", str(int(loc[0]) + offset), *loc[1:]]
    got = first.get("input")
    shown = f" (got {got!r:.40})" if isinstance(got, int | float | str | bool) or got is None else ""
    return InvalidPicks(".".join(loc), f"{first['msg']}{shown}")


def _model_rows(points: list[PickPoint], offset: int) -> list[PointRow]:
    rows: list[PointRow] = []
    for i, p in enumerate(points):
        tr = p.transformation_
        transform = None if [[float(v) for v in row] for row in tr] == _IDENTITY else json.dumps(tr)
        rows.append((offset + i, p.location.x, p.location.y, p.location.z, p.instance_id, p.score, transform))
    return rows


def decode_header(data: bytes) -> PickHeader:
    """The top-level fields of a streamed file: the file's own bytes, with its ``points`` array emptied.

    The same checks as :func:`decode_file` (UTF-8, pydantic's reading of what msgspec will not parse), so
    a file is valid streamed exactly when it is valid whole.
    """
    require_utf8(data)
    try:
        return _header(_HEADER_DECODER.decode(data))
    except msgspec.ValidationError as exc:
        raise _field_of(exc) from None
    except msgspec.DecodeError:
        return _lenient_file(data)[0]


def decode_points(data: bytes, offset: int) -> list[PointRow]:
    """A JSON array holding a batch of a streamed file's points; ``offset`` is the index of its first point."""
    require_utf8(data)
    try:
        with gc_paused():
            points = _POINTS_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise _field_of(exc, offset, "points") from None
    except msgspec.DecodeError:
        return _lenient_points(data, offset)
    return point_rows(points, offset)


def describe(exc: Exception) -> str:
    """The reason a file was refused, as the error row words it."""
    if isinstance(exc, InvalidPicks):
        return str(exc)
    if isinstance(exc, msgspec.DecodeError):
        return f"not valid JSON ({exc}) (the file may be half-written or truncated)"
    return f"{type(exc).__name__}: {exc}"


__all__ = [
    "InvalidPicks",
    "PickHeader",
    "PointBlock",
    "PointRow",
    "decode_block",
    "decode_file",
    "decode_header",
    "decode_points",
    "describe",
    "point_block",
    "point_rows",
    "require_utf8",
    "top_level_values",
]

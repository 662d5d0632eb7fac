"""Pick and filament JSON: the pydantic models copick validates with, parsing, and the packed points format.

A pick file is what copick writes with ``json.dump(meta.model_dump(), indent=4)``: who picked
(``user_id``, ``session_id``), which object, and a list of points in Å from the volume corner, each
with a 4x4 ``transformation_``, an ``instance_id`` and a ``score``. Parsing errors name the file and
the field, because the person reading them has to find and fix that file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, field_validator

from ..errors import PayloadError

IDENTITY = ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))
#: Instance ids must be whole numbers a float64 holds exactly: the catalog packs points as float64
#: for bulk reads, and both backends then store the same value (PostgreSQL as BIGINT).
MAX_INSTANCE_ID = 2**53


# ------------------------------------------------------------------------------------------
# Picks


class Location(BaseModel):
    """A point in Å from the volume corner. NaN and infinities are refused: neither backend can compare
    them, and SQLite cannot even store NaN."""

    model_config = ConfigDict(extra="allow")
    x: FiniteFloat
    y: FiniteFloat
    z: FiniteFloat


class PickPoint(BaseModel):
    """One picked particle: location in Å from the volume corner, plus orientation and identity."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    location: Location
    transformation_: list[list[FiniteFloat]] = Field(default_factory=lambda: [list(r) for r in IDENTITY])
    instance_id: int = Field(default=0, ge=-MAX_INSTANCE_ID, le=MAX_INSTANCE_ID)
    score: FiniteFloat = 1.0

    @field_validator("transformation_")
    @classmethod
    def _transform(cls, value: list[list[float]]) -> list[list[float]]:
        if len(value) != 4 or any(len(row) != 4 for row in value):
            raise ValueError("transformation_ must be a 4x4 matrix")
        if [float(v) for v in value[3]] != [0.0, 0.0, 0.0, 1.0]:
            raise ValueError("the last row of transformation_ must be [0, 0, 0, 1]")
        return value

    @property
    def transformation(self) -> np.ndarray:
        return np.asarray(self.transformation_, dtype=float)


class PickFile(BaseModel):
    """The content of a copick pick (or filament) JSON file."""

    model_config = ConfigDict(extra="allow")

    pickable_object_name: str
    user_id: str
    session_id: str
    run_name: str | None = None
    voxel_spacing: FiniteFloat | None = None
    unit: str = "angstrom"
    points: list[PickPoint] | None = Field(default_factory=list)
    trust_orientation: bool = True

    @field_validator("points", mode="before")
    @classmethod
    def _points(cls, value: Any) -> Any:
        return [] if value is None else value

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 3)`` xyz positions in Å and ``(N, 4, 4)`` transforms, as copick returns them."""
        pts = self.points or []
        if not pts:
            return np.zeros((0, 3)), np.zeros((0, 4, 4))
        pos = np.array([[p.location.x, p.location.y, p.location.z] for p in pts], dtype=float)
        tr = np.array([p.transformation_ for p in pts], dtype=float)
        return pos, tr

    def to_json(self) -> bytes:
        """Bytes exactly as copick writes them (``json.dump(model_dump(), indent=4)``)."""
        return json.dumps(self.model_dump(mode="json"), indent=4).encode("utf-8")


class FilamentFile(BaseModel):
    """A copick 1.31 filament file: picks-like metadata and a list of filaments with points."""

    model_config = ConfigDict(extra="allow")

    pickable_object_name: str
    user_id: str
    session_id: str
    run_name: str | None = None
    unit: str = "angstrom"
    filaments: list[dict[str, Any]] | None = Field(default_factory=list)

    @property
    def n_points(self) -> int:
        return sum(len(f.get("points") or []) for f in self.filaments or [])


def parse_filaments(data: bytes, path: str) -> FilamentFile:
    try:
        return FilamentFile.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PayloadError(
            path,
            f"invalid filament file: {first['msg']} at "
            f"'{'.'.join(str(p) for p in first['loc'])}'; fix or remove it, then reindex",
        ) from None


def parse_picks(data: bytes, path: str) -> PickFile:
    """Validate pick JSON; the error names the file and what is wrong with it."""
    try:
        return PickFile.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        got = first.get("input")
        shown = f" (got {got!r:.40})" if isinstance(got, int | float | str | bool) or got is None else ""
        kind = "not valid JSON" if first["type"] == "json_invalid" else f"field '{where}': {first['msg']}{shown}"
        hint = " (the file may be half-written or truncated)" if first["type"] == "json_invalid" else ""
        raise PayloadError(path, f"invalid pick file: {kind}{hint}; fix or remove the file, then reindex") from None


#: ``packed_points.data``: a pick's points as one little-endian float64 array, a row per point with
#: these fields (instance ids are whole numbers, exact in float64 up to :data:`MAX_INSTANCE_ID`).
PACKED_POINT_FIELDS = ("x", "y", "z", "instance_id", "score")
_PACKED = np.dtype("<f8")


def pack_points(rows: Sequence[Sequence[float]]) -> bytes:
    """``[(x, y, z, instance_id, score), ...]`` -> the bytes stored in ``packed_points.data``."""
    return np.asarray(rows, dtype=_PACKED).reshape(-1, len(PACKED_POINT_FIELDS)).tobytes()


def unpack_points(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Packed blobs of several picks -> (an (n, 5) float64 array of all their points, points per blob)."""
    width = _PACKED.itemsize * len(PACKED_POINT_FIELDS)
    counts = np.fromiter((len(b) // width for b in blobs), dtype=np.int64, count=len(blobs))
    values = np.frombuffer(b"".join(blobs), dtype=_PACKED).reshape(-1, len(PACKED_POINT_FIELDS))
    return values, counts


def points_from_numpy(
    positions: np.ndarray,
    transforms: np.ndarray | None = None,
    instance_ids: Sequence[int] | np.ndarray | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
) -> list[PickPoint]:
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    n = len(pos)
    tr = np.broadcast_to(np.eye(4), (n, 4, 4)) if transforms is None else np.asarray(transforms, float)
    if tr.shape != (n, 4, 4):
        raise ValueError(f"transforms must have shape ({n}, 4, 4), got {tr.shape}")
    ids = np.zeros(n, int) if instance_ids is None else np.asarray(instance_ids, int)
    sc = np.ones(n) if scores is None else np.asarray(scores, float)
    return [
        PickPoint(
            location=Location(x=p[0], y=p[1], z=p[2]), transformation_=t.tolist(), instance_id=int(i), score=float(s)
        )
        for p, t, i, s in zip(pos, tr, ids, sc, strict=True)
    ]


# ------------------------------------------------------------------------------------------
# Zarr headers

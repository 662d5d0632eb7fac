"""Payload formats: pick JSON models, zarr/GLB/MRC header readers, and writers copick can read.

The indexer only needs headers (point lists, array shapes, mesh sizes), so readers here parse the
few bytes that hold them — a pick JSON, a ``.zarray``/``zarr.json``, a GLB's JSON chunk, an MRC's
1024-byte header — without loading volumes. Writers produce what copick 1.x reads: pick JSON as
``json.dump(model_dump(), indent=4)``, OME-NGFF 0.4 multiscale groups in zarr format 2 with nested
``/`` chunk keys and Blosc-lz4, and binary glTF meshes.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import PayloadError

IDENTITY = ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))


# ------------------------------------------------------------------------------------------
# Picks


class Location(BaseModel):
    model_config = ConfigDict(extra="allow")
    x: float
    y: float
    z: float


class PickPoint(BaseModel):
    """One picked particle: location in Å from the volume corner, plus orientation and identity."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    location: Location
    transformation_: list[list[float]] = Field(default_factory=lambda: [list(r) for r in IDENTITY])
    instance_id: int = 0
    score: float = 1.0

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
    voxel_spacing: float | None = None
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
        raise PayloadError(path, f"invalid filament file: {first['msg']} at "
                           f"'{'.'.join(str(p) for p in first['loc'])}'; fix or remove it, then reindex") from None


def parse_picks(data: bytes, path: str) -> PickFile:
    """Validate pick JSON; the error names the file and what is wrong with it."""
    try:
        return PickFile.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        kind = "not valid JSON" if first["type"] == "json_invalid" else f"field '{where}': {first['msg']}"
        hint = " (the file may be half-written or truncated)" if first["type"] == "json_invalid" else ""
        raise PayloadError(
            path, f"invalid pick file: {kind}{hint}; fix or remove the file, then reindex"
        ) from None


#: ``packed_points.data``: a pick's points as one little-endian float64 array, a row per point with
#: these fields (instance ids are whole numbers, exact in float64 below 2**53).
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
        PickPoint(location=Location(x=p[0], y=p[1], z=p[2]), transformation_=t.tolist(),
                  instance_id=int(i), score=float(s))
        for p, t, i, s in zip(pos, tr, ids, sc, strict=True)
    ]


# ------------------------------------------------------------------------------------------
# Zarr headers


@dataclass(slots=True)
class ArrayInfo:
    """What the catalog stores about a zarr group: level-0 shape and dtype, and its levels."""

    shape: list[int] | None
    dtype: str | None
    n_levels: int
    zarr_format: int | None
    voxel_size: float | None = None


def _dtype_of_v3(meta: Mapping[str, Any]) -> str | None:
    dt = meta.get("data_type")
    if isinstance(dt, dict):
        dt = dt.get("name")
    return str(np.dtype(dt)) if isinstance(dt, str) and dt in np.sctypeDict else (str(dt) if dt else None)


def read_zarr_info(files: Mapping[str, bytes], path: str) -> ArrayInfo:
    """Summarise a group from its metadata files (keys relative to the group, e.g. ``0/.zarray``).

    The level list comes from the OME ``multiscales`` datasets when present (both NGFF 0.4 and
    0.5 layouts), else from the array subdirectories found.
    """
    def load(name: str) -> dict[str, Any] | None:
        raw = files.get(name)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PayloadError(f"{path}/{name}", f"invalid zarr metadata JSON ({exc}); the group is damaged "
                               "or half-written: rewrite it or remove it, then reindex") from None
        if not isinstance(value, dict):
            raise PayloadError(f"{path}/{name}", "zarr metadata must be a JSON object")
        return value

    if not files:
        return ArrayInfo(None, None, 0, None)
    root_v3 = load("zarr.json")
    attrs: dict[str, Any] = {}
    fmt: int | None = None
    if root_v3 is not None:
        fmt = 3
        attrs = dict(root_v3.get("attributes") or {})
        attrs = dict(attrs.get("ome") or attrs)
    else:
        zattrs = load(".zattrs")
        if zattrs is not None or ".zgroup" in files:
            fmt = 2
        attrs = zattrs or {}
    levels: list[str] = []
    voxel_size = None
    ms = attrs.get("multiscales")
    if isinstance(ms, list) and ms and isinstance(ms[0], dict):
        datasets = ms[0].get("datasets") or []
        levels = [str(d.get("path")) for d in datasets if isinstance(d, dict) and d.get("path") is not None]
        if datasets and isinstance(datasets[0], dict):
            for tr in datasets[0].get("coordinateTransformations") or []:
                if isinstance(tr, dict) and tr.get("type") == "scale" and tr.get("scale"):
                    voxel_size = float(tr["scale"][-1])
    if not levels:
        levels = sorted({n.split("/")[0] for n in files if "/" in n}, key=lambda s: (len(s), s))
    shape = dtype = None
    for level in levels[:1]:
        v2 = load(f"{level}/.zarray")
        v3 = load(f"{level}/zarr.json")
        if v2 is not None:
            shape, dtype, fmt = list(v2.get("shape") or []), str(np.dtype(v2.get("dtype"))), fmt or 2
        elif v3 is not None:
            shape, dtype, fmt = list(v3.get("shape") or []), _dtype_of_v3(v3), fmt or 3
    if shape is None and levels and files:
        raise PayloadError(path, f"zarr group lists level {levels[0]!r} but its array metadata is missing "
                           "(truncated copy?); rewrite the group or remove it, then reindex")
    return ArrayInfo(shape, dtype, len(levels), fmt, voxel_size)


# ------------------------------------------------------------------------------------------
# GLB (binary glTF) header


def read_glb_counts(data: bytes, path: str) -> tuple[int, int]:
    """Vertex and triangle counts from a GLB's JSON chunk, without decoding the buffers."""
    if len(data) < 20 or data[:4] != b"glTF":
        raise PayloadError(path, "not a binary glTF (GLB) file; export meshes as .glb")
    _magic, _version, length = struct.unpack_from("<4sII", data, 0)
    chunk_len, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != 0x4E4F534A or 20 + chunk_len > len(data) or length > len(data):
        raise PayloadError(path, "truncated GLB file (header says more bytes than the file has)")
    try:
        gltf = json.loads(data[20:20 + chunk_len])
    except json.JSONDecodeError as exc:
        raise PayloadError(path, f"GLB JSON chunk is invalid ({exc})") from None
    accessors = gltf.get("accessors") or []
    n_vertices = n_faces = 0
    for mesh in gltf.get("meshes") or []:
        for prim in mesh.get("primitives") or []:
            pos = (prim.get("attributes") or {}).get("POSITION")
            if pos is not None and pos < len(accessors):
                n_vertices += int(accessors[pos].get("count", 0))
            idx = prim.get("indices")
            if prim.get("mode", 4) == 4:
                if idx is not None and idx < len(accessors):
                    n_faces += int(accessors[idx].get("count", 0)) // 3
                elif pos is not None and pos < len(accessors):
                    n_faces += int(accessors[pos].get("count", 0)) // 3
    return n_vertices, n_faces


def load_scene(data: bytes) -> Any:
    import trimesh

    return trimesh.load(io.BytesIO(data), file_type="glb", force="scene")


def scene_to_glb(scene_or_mesh: Any) -> bytes:
    import trimesh

    scene = scene_or_mesh if isinstance(scene_or_mesh, trimesh.Scene) else trimesh.Scene(scene_or_mesh)
    return scene.export(file_type="glb")


# ------------------------------------------------------------------------------------------
# MRC header (the seed's ParticleMrcs density maps)

_MRC_MODES = {0: "int8", 1: "int16", 2: "float32", 4: "complex64", 6: "uint16", 12: "float16"}


def read_mrc_info(header: bytes, path: str) -> ArrayInfo:
    if len(header) < 1024:
        raise PayloadError(path, "MRC file shorter than its 1024-byte header")
    nx, ny, nz, mode = struct.unpack_from("<4i", header, 0)
    if header[208:211] != b"MAP" or mode not in _MRC_MODES or min(nx, ny, nz) <= 0:
        raise PayloadError(path, "not a valid MRC2014 file (bad MAP tag, mode or dimensions)")
    mx = struct.unpack_from("<i", header, 28)[0]
    xlen = struct.unpack_from("<f", header, 40)[0]
    vs = float(xlen / mx) if mx else None
    return ArrayInfo([nz, ny, nx], _MRC_MODES[mode], 1, None, vs)


# ------------------------------------------------------------------------------------------
# Writers


def ome_multiscales(voxel_size: float, n_levels: int, name: str = "/") -> list[dict[str, Any]]:
    """OME-NGFF 0.4 ``multiscales`` metadata as copick writes it (z, y, x in Å, 2x per level)."""
    return [{
        "version": "0.4",
        "name": name,
        "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in ("z", "y", "x")],
        "datasets": [
            {"path": str(i), "coordinateTransformations": [
                {"type": "scale", "scale": [voxel_size * 2**i] * 3}]}
            for i in range(n_levels)
        ],
        "metadata": {},
    }]


def pyramid(data: np.ndarray, levels: int, labels: bool = False) -> list[np.ndarray]:
    """Downsample by 2 per level: mean for intensities, nearest (stride) for label masks."""
    out = [data]
    for _ in range(1, levels):
        prev = out[-1]
        if labels:
            out.append(prev[::2, ::2, ::2])
            continue
        z, y, x = (s - s % 2 for s in prev.shape)
        if min(z, y, x) == 0:
            break
        p = prev[:z, :y, :x].astype(np.float32)
        out.append(p.reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5)).astype(prev.dtype))
    return out


def write_ome_zarr(
    store: Any,
    data: np.ndarray,
    voxel_size: float,
    levels: int = 3,
    dtype: Any = np.float32,
    labels: bool = False,
    chunks: int = 256,
    zarr_format: int = 2,
) -> Any:
    """Write an OME-NGFF multiscale group that copick 1.x (zarr 2) reads; returns the group.

    Format 2 uses nested ``/`` chunk keys and Blosc-lz4 like copick; format 3 writes NGFF 0.5
    (metadata under ``ome``) for the copick 2.0 line.
    """
    import zarr

    arr = np.asarray(data, dtype=dtype)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) array, got shape {arr.shape}")
    pyr = pyramid(arr, levels, labels=labels)
    group = zarr.open_group(store, mode="w", zarr_format=zarr_format)
    ms = ome_multiscales(voxel_size, len(pyr))
    if zarr_format == 2:
        from numcodecs import Blosc

        group.attrs["multiscales"] = ms
        kwargs: dict[str, Any] = {"compressors": Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE),
                                  "chunk_key_encoding": {"name": "v2", "separator": "/"}}
    else:
        ms[0]["version"] = "0.5"
        ms[0].pop("version")
        group.attrs["ome"] = {"version": "0.5", "multiscales": ms}
        kwargs = {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    for i, level in enumerate(pyr):
        a = group.create_array(str(i), shape=level.shape, dtype=level.dtype,
                               chunks=tuple(min(chunks, s) for s in level.shape), fill_value=0, **kwargs)
        a[...] = level
    return group


def write_nd_zarr(store: Any, data: np.ndarray, voxel_size: float, chunks: int = 256) -> Any:
    """Write a one-level group for feature stacks, which may be 3D or channel-major 4D."""
    import zarr
    from numcodecs import Blosc

    arr = np.asarray(data)
    if arr.ndim == 3:
        return write_ome_zarr(store, arr, voxel_size, levels=1, dtype=arr.dtype, chunks=chunks)
    group = zarr.open_group(store, mode="w", zarr_format=2)
    ms = ome_multiscales(voxel_size, 1)
    axes = [{"name": "c", "type": "channel"}] * (arr.ndim - 3) + ms[0]["axes"]
    ms[0]["axes"] = axes
    ms[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1.0] * (arr.ndim - 3) + [voxel_size] * 3
    group.attrs["multiscales"] = ms
    a = group.create_array("0", shape=arr.shape, dtype=arr.dtype,
                           chunks=tuple(min(chunks, s) for s in arr.shape), fill_value=0,
                           compressors=Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE),
                           chunk_key_encoding={"name": "v2", "separator": "/"})
    a[...] = arr
    return group


def read_mrc_array(data: bytes, path: str) -> np.ndarray:
    """The volume of an MRC file as a ``(z, y, x)`` array (for the seed's ParticleMrcs maps)."""
    info = read_mrc_info(data[:1024], path)
    ext = struct.unpack_from("<i", data, 92)[0]
    offset = 1024 + max(ext, 0)
    assert info.shape is not None
    count = int(np.prod(info.shape))
    arr = np.frombuffer(data, dtype=np.dtype(info.dtype).newbyteorder("<"), count=count, offset=offset)
    return arr.reshape(info.shape)

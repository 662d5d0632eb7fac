"""Zarr groups: the header reader the indexer uses, and OME-NGFF writers that copick reads.

The indexer summarises a group (level-0 shape and dtype, levels, format) from its metadata files
alone (``.zattrs``/``.zgroup``/``0/.zarray`` in format 2, ``zarr.json`` in format 3), which are plain
JSON: reading them needs no zarr library and never touches a chunk. Writers produce OME-NGFF 0.4
multiscale groups in zarr format 2 with nested ``/`` chunk keys and Blosc-lz4, as copick 1.x writes
them (copick 2.x reads them too); see :mod:`copick_catalog.formats.zarrio` for the zarr-library calls.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PayloadError


@dataclass(slots=True)
class ArrayInfo:
    """What the catalog stores about a zarr group: level-0 shape and dtype, and its levels."""

    shape: list[int] | None
    dtype: str | None
    n_levels: int
    zarr_format: int | None
    voxel_size: float | None = None


#: Largest dimension and number of levels believed: anything bigger is a damaged or hostile header.
MAX_DIM = 2**40
MAX_LEVELS = 64
_FIX = "rewrite the group's metadata or remove the group, then index again"


def _bad(where: str, what: str) -> PayloadError:
    return PayloadError(where, f"{what}; {_FIX}")


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        raise _bad(where, f"'shape' must be a list of integers, got {value!r:.60}")
    if any(n < 0 or n > MAX_DIM for n in value) or len(value) > 32:
        raise _bad(where, f"'shape' {value!r:.60} is not a plausible array shape")
    return list(value)


def _dtype_v2(value: Any, where: str) -> str:
    if isinstance(value, list) and value:  # a structured dtype: name it, do not interpret it
        return "structured"
    if not isinstance(value, str):  # np.dtype(None) would be float64
        raise _bad(where, f"'dtype' must be a numpy type string, got {value!r:.40}")
    try:
        return str(np.dtype(value))
    except (TypeError, ValueError):
        raise _bad(where, f"'dtype' {value!r:.40} is not a numpy data type") from None


def _dtype_v3(meta: Mapping[str, Any], where: str) -> str:
    dt = meta.get("data_type")
    if isinstance(dt, dict):
        dt = dt.get("name")
    if not isinstance(dt, str) or not dt:
        raise _bad(where, f"'data_type' must be a string, got {dt!r:.40}")
    try:
        return str(np.dtype(dt))
    except (TypeError, ValueError):
        return dt[:32]  # zarr 3 names numpy does not know (e.g. "r16"): keep the name


def _voxel_size(datasets: list[Any], where: str) -> float | None:
    first = datasets[0] if datasets else None
    transforms = first.get("coordinateTransformations") if isinstance(first, dict) else None
    if not isinstance(transforms, list):
        return None
    for tr in transforms:
        if isinstance(tr, dict) and tr.get("type") == "scale":
            scale = tr.get("scale")
            if (
                not isinstance(scale, list)
                or not scale
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in scale)
            ):
                raise _bad(where, f"multiscales scale must be a list of numbers, got {scale!r:.60}")
            value = float(scale[-1])
            if not math.isfinite(value) or value <= 0:
                raise _bad(where, f"multiscales scale {value!r} is not a positive finite voxel size")
            return value
    return None


def read_zarr_info(files: Mapping[str, bytes], path: str) -> ArrayInfo:
    """Summarise a group from its metadata files (keys relative to the group, e.g. ``0/.zarray``).

    The level list comes from the OME ``multiscales`` datasets when present (both NGFF 0.4 and
    0.5 layouts), else from the array subdirectories found. Every field is type-checked, so a
    damaged or hostile header is a :class:`PayloadError` naming the file and the field.
    """

    def load(name: str) -> dict[str, Any] | None:
        raw = files.get(name)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise _bad(
                f"{path}/{name}", f"invalid zarr metadata JSON ({reason}); the group is damaged or half-written"
            ) from None
        if not isinstance(value, dict):
            raise _bad(f"{path}/{name}", f"zarr metadata must be a JSON object, not {type(value).__name__}")
        return value

    if not files:
        return ArrayInfo(None, None, 0, None)
    root_v3 = load("zarr.json")
    fmt: int | None = None
    if root_v3 is not None:
        fmt = 3
        where = f"{path}/zarr.json"
        attrs = root_v3.get("attributes", {})
        if not isinstance(attrs, dict):
            raise _bad(where, f"'attributes' must be a JSON object, not {type(attrs).__name__}")
        ome = attrs.get("ome")
        if ome is not None and not isinstance(ome, dict):
            raise _bad(where, f"'attributes.ome' must be a JSON object, not {type(ome).__name__}")
        attrs = ome or attrs
    else:
        where = f"{path}/.zattrs"
        zattrs = load(".zattrs")
        zgroup = load(".zgroup")  # read, not only seen: a damaged .zgroup is a damaged group
        if zgroup is not None and zgroup.get("zarr_format", 2) != 2:
            raise _bad(f"{path}/.zgroup", f"zarr_format {zgroup.get('zarr_format')!r:.20} in a .zgroup (must be 2)")
        if zattrs is not None or zgroup is not None:
            fmt = 2
        attrs = zattrs or {}
    levels: list[str] = []
    voxel_size = None
    ms = attrs.get("multiscales")
    if ms is not None and not isinstance(ms, list):
        raise _bad(where, f"'multiscales' must be a list, not {type(ms).__name__}")
    if ms and not all(isinstance(m, dict) for m in ms):
        raise _bad(where, "'multiscales' must be a list of objects")
    if ms:
        datasets = ms[0].get("datasets", [])
        if not isinstance(datasets, list):
            raise _bad(where, f"'multiscales[0].datasets' must be a list, not {type(datasets).__name__}")
        levels = [str(d["path"]) for d in datasets if isinstance(d, dict) and isinstance(d.get("path"), str | int)]
        voxel_size = _voxel_size(datasets, where)
    if not levels:
        levels = sorted({n.split("/")[0] for n in files if "/" in n}, key=lambda s: (len(s), s))
    if len(levels) > MAX_LEVELS:
        raise _bad(where, f"{len(levels)} levels is not a plausible multiscale pyramid")
    shape = dtype = None
    for level in levels[:1]:
        v2 = load(f"{level}/.zarray")
        v3 = load(f"{level}/zarr.json")
        if v2 is not None:
            at = f"{path}/{level}/.zarray"
            shape, dtype, fmt = _shape(v2.get("shape"), at), _dtype_v2(v2.get("dtype"), at), fmt or 2
        elif v3 is not None:
            at = f"{path}/{level}/zarr.json"
            shape, dtype, fmt = _shape(v3.get("shape"), at), _dtype_v3(v3, at), fmt or 3
    if shape is None and levels and files:
        raise _bad(path, f"zarr group lists level {levels[0]!r} but its array metadata is missing (truncated copy?)")
    return ArrayInfo(shape, dtype, len(levels), fmt, voxel_size)


# ------------------------------------------------------------------------------------------

# Writers


def ome_multiscales(voxel_size: float, n_levels: int, name: str = "/") -> list[dict[str, Any]]:
    """OME-NGFF 0.4 ``multiscales`` metadata as copick writes it (z, y, x in Å, 2x per level)."""
    return [
        {
            "version": "0.4",
            "name": name,
            "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in ("z", "y", "x")],
            "datasets": [
                {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [voxel_size * 2**i] * 3}]}
                for i in range(n_levels)
            ],
            "metadata": {},
        }
    ]


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

    Format 2 uses nested ``/`` chunk keys and Blosc-lz4 like copick; format 3 (zarr 3 only) writes
    NGFF 0.5 (metadata under ``ome``) for the copick 2.0 line.
    """
    from . import zarrio

    arr = np.asarray(data, dtype=dtype)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) array, got shape {arr.shape}")
    pyr = pyramid(arr, levels, labels=labels)
    group = zarrio.new_group(store, zarr_format)
    ms = ome_multiscales(voxel_size, len(pyr))
    if zarr_format == 2:
        group.attrs["multiscales"] = ms
    else:
        ms[0].pop("version")
        group.attrs["ome"] = {"version": "0.5", "multiscales": ms}
    for i, level in enumerate(pyr):
        zarrio.write_array(group, str(i), level, tuple(min(chunks, s) for s in level.shape), zarr_format=zarr_format)
    return group


def write_nd_zarr(store: Any, data: np.ndarray, voxel_size: float, chunks: int = 256) -> Any:
    """Write a one-level group for feature stacks, which may be 3D or channel-major 4D."""
    from . import zarrio

    arr = np.asarray(data)
    if arr.ndim == 3:
        return write_ome_zarr(store, arr, voxel_size, levels=1, dtype=arr.dtype, chunks=chunks)
    group = zarrio.new_group(store, 2)
    ms = ome_multiscales(voxel_size, 1)
    ms[0]["axes"] = [{"name": "c", "type": "channel"}] * (arr.ndim - 3) + ms[0]["axes"]
    ms[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1.0] * (arr.ndim - 3) + [voxel_size] * 3
    group.attrs["multiscales"] = ms
    zarrio.write_array(group, "0", arr, tuple(min(chunks, s) for s in arr.shape))
    return group

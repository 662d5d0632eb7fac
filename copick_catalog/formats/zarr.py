"""Zarr groups: the header reader the indexer uses, and OME-NGFF writers that copick reads.

The indexer summarises a group (level-0 shape and dtype, levels, format) from its metadata files
alone (``.zattrs``/``.zgroup``/``0/.zarray`` in format 2, ``zarr.json`` in format 3), which are plain
JSON: reading them needs no zarr library and never touches a chunk. Writers produce OME-NGFF 0.4
multiscale groups in zarr format 2 with nested ``/`` chunk keys and Blosc-lz4, as copick 1.x writes
them (copick 2.x reads them too); see :mod:`copick_catalog.formats.zarrio` for the zarr-library calls.
"""

from __future__ import annotations

import json
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
            raise PayloadError(
                f"{path}/{name}",
                f"invalid zarr metadata JSON ({exc}); the group is damaged "
                "or half-written: rewrite it or remove it, then reindex",
            ) from None
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
        raise PayloadError(
            path,
            f"zarr group lists level {levels[0]!r} but its array metadata is missing "
            "(truncated copy?); rewrite the group or remove it, then reindex",
        )
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

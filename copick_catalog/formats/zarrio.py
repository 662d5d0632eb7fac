"""The zarr library calls the catalog makes, for zarr 2.18 (copick 1.x) and zarr 3 (copick 2.x) alike.

copick 1.31 pins ``zarr<3``; copick 2.x needs zarr 3. Installing copick-catalog next to either must not
move its zarr, so every call into the zarr library goes through this module, which speaks both APIs:
stores for a local directory or an fsspec URL, a format-2 group, and format-2 arrays with nested ``/``
chunk keys and Blosc-lz4 (what copick 1.x writes and both generations read). Nothing else in the
package imports zarr; reading headers needs no zarr at all (:mod:`copick_catalog.formats.zarr`).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal, cast

import numpy as np


@cache
def zarr_major() -> int:
    """The installed zarr's major version (2 or 3)."""
    import zarr

    return int(str(zarr.__version__).split(".")[0])


def local_store(path: str, *, read_only: bool = True) -> Any:
    """A store for a group in a local directory."""
    if zarr_major() >= 3:
        from zarr.storage import LocalStore

        return LocalStore(path, read_only=read_only)
    from zarr.storage import DirectoryStore  # type: ignore[attr-defined]  # zarr 2 only; the typed zarr is 3

    return DirectoryStore(path, dimension_separator="/")


def fsspec_store(url: str, storage_options: dict[str, Any], *, read_only: bool = True) -> Any:
    """A store for a group at an fsspec URL (S3 and others); listing caches are the caller's choice."""
    if zarr_major() >= 3:
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)
    from zarr.storage import FSStore  # type: ignore[attr-defined]  # zarr 2 only; the typed zarr is 3

    return FSStore(url, mode="r" if read_only else "w", key_separator="/", dimension_separator="/", **storage_options)


def open_group(store: Any, *, read_only: bool = True) -> Any:
    """An existing group, for reading (``mode="r"``) or writing in place (``"r+"``).

    zarr 2.18 cannot read a zarr v3 group (a ``zarr.json`` and no ``.zgroup``); it would say "group not
    found", which sends people looking for a missing file. Say instead what the group is and what reads it.
    """
    import zarr

    try:
        return zarr.open_group(store, mode="r" if read_only else "r+")
    except Exception as exc:
        if zarr_major() < 3 and type(exc).__name__ == "GroupNotFoundError" and _has_key(store, "zarr.json"):
            from ..errors import PayloadError

            raise PayloadError(
                str(getattr(store, "path", store)),
                f"a zarr v3 group, which zarr {zarr.__version__} cannot read: install zarr>=3 (copick 2.x) to open it",
            ) from None
        raise


def _has_key(store: Any, key: str) -> bool:
    """Whether a zarr 2 store holds ``key``, asked of its filesystem (FSStore would rewrite a dotted key)."""
    try:
        fs = getattr(store, "fs", None)
        if fs is not None:
            return bool(fs.exists(f"{store.path.rstrip('/')}/{key}"))
        return key in store
    except Exception:  # a store that cannot even be asked: let the original error speak
        return False


def new_group(store: Any, zarr_format: int = 2) -> Any:
    """An empty group that replaces whatever the store held."""
    import zarr

    if zarr_major() >= 3:
        # an int for callers; zarr's own check refuses anything but 2 or 3
        return zarr.open_group(store, mode="w", zarr_format=cast(Literal[2, 3], zarr_format))
    if zarr_format != 2:
        raise ValueError("writing zarr format 3 needs zarr 3 (pip install 'zarr>=3'); this environment has zarr 2")
    return zarr.open_group(store, mode="w")


def blosc_lz4() -> Any:
    """The compressor copick 1.x writes with (zarr 2's default): Blosc lz4, level 5, byte shuffle."""
    from numcodecs import Blosc

    return Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)


def create_array(
    group: Any, name: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...], *, zarr_format: int = 2
) -> Any:
    """An empty array ``name`` in ``group`` with nested ``/`` chunk keys (Blosc-lz4 in format 2, like copick's)."""
    if zarr_major() >= 3:
        kwargs: dict[str, Any] = {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
        if zarr_format == 2:
            kwargs["compressors"] = blosc_lz4()
        return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, **kwargs)
    return group.create_dataset(
        name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, compressor=blosc_lz4(), dimension_separator="/"
    )


def write_array(group: Any, name: str, data: np.ndarray, chunks: tuple[int, ...], *, zarr_format: int = 2) -> Any:
    """Create array ``name`` in ``group`` (see :func:`create_array`) and fill it with ``data``."""
    arr = create_array(group, name, data.shape, data.dtype, chunks, zarr_format=zarr_format)
    arr[...] = data
    return arr


def read_level(store: Any, level: str, selection: Any = Ellipsis) -> np.ndarray:
    """``group[level][selection]`` as a numpy array."""
    return np.asarray(open_group(store)[level][selection])


__all__ = [
    "create_array",
    "fsspec_store",
    "local_store",
    "new_group",
    "open_group",
    "read_level",
    "write_array",
    "zarr_major",
]

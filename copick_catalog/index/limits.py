"""The size caps on files read while indexing (a module of its own: opening a catalog needs them, and
nothing else of the readers in :mod:`.kinds`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Size caps (bytes) per kind of file read while indexing: one huge or hostile file cannot exhaust memory."""

    pick: int = 512 * 1024**2
    filament: int = 256 * 1024**2
    mesh: int = 256 * 1024**2
    zarr_meta: int = 4 * 1024**2
    mrc_header: int = 1024


__all__ = ["Limits"]

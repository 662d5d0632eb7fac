"""copick-catalog: an SQL-indexed catalog for copick cryo-ET projects, with file-backed payloads.

``Catalog.open(config)`` for the catalog (index, queries, ``.open()`` on rows); ``from_file(config)``
for copick's object API served from the catalog. Names are imported on first use, so ``import
copick_catalog`` (and every command-line call) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import CatalogError

if TYPE_CHECKING:
    from .catalog import Catalog
    from .catalog.schema import (
        DensityMap,
        Feature,
        Filament,
        Mesh,
        Pick,
        Point,
        Run,
        Segmentation,
        Tomogram,
        VoxelSpacing,
    )
    from .copick.root import CatalogRoot, from_file

__version__ = "0.1.0"

_LAZY = {
    "Catalog": "copick_catalog.catalog",
    "from_file": "copick_catalog.copick",
    "CatalogRoot": "copick_catalog.copick",
    **{
        name: "copick_catalog.catalog.schema"
        for name in (
            "DensityMap",
            "Feature",
            "Filament",
            "Mesh",
            "Pick",
            "Point",
            "Run",
            "Segmentation",
            "Tomogram",
            "VoxelSpacing",
        )
    },
}

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogRoot",
    "DensityMap",
    "Feature",
    "Filament",
    "Mesh",
    "Pick",
    "Point",
    "Run",
    "Segmentation",
    "Tomogram",
    "VoxelSpacing",
    "from_file",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'copick_catalog' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value

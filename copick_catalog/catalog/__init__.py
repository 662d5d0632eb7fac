"""What stores and answers: the schema, engines and migrations, the :class:`Catalog`, queries, status, SQL.

``Catalog.open(config)`` is the entry point; the ORM models here (``Pick``, ``Run``, ``Tomogram``, …) are
what its queries return and what ``cat.find(...)`` and ``cat.session()`` work with.
"""

from .catalog import Catalog
from .schema import (
    DensityMap,
    Feature,
    Filament,
    IndexErrorRow,
    IndexRun,
    Mesh,
    PackedPoints,
    Pick,
    PickableObject,
    Point,
    Project,
    Run,
    RunObject,
    Segmentation,
    Tomogram,
    VoxelSpacing,
)

__all__ = [
    "Catalog",
    "DensityMap",
    "Feature",
    "Filament",
    "IndexErrorRow",
    "IndexRun",
    "Mesh",
    "PackedPoints",
    "Pick",
    "PickableObject",
    "Point",
    "Project",
    "Run",
    "RunObject",
    "Segmentation",
    "Tomogram",
    "VoxelSpacing",
]

"""The copick backend: copick's own object model, served from the catalog (needs the ``[copick]`` extra).

``copick_catalog.copick.from_file(config)`` (also ``copick_catalog.from_file``) returns a
:class:`~copick_catalog.copick.root.CatalogRoot`, a subclass of copick's ``CopickRootFSSpec`` whose runs,
picks, meshes, segmentations, voxel spacings, tomograms and features are listed from the catalog and whose
writes go to the overlay files and the catalog together. The catalog core never imports this package.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .root import CatalogRoot, from_file

__all__ = ["CatalogRoot", "from_file"]


def require_copick() -> None:
    """Raise a one-line error saying how to install copick when it is missing."""
    from ..errors import CatalogError

    if find_spec("copick") is None:
        raise CatalogError(
            "the copick object API needs the copick package: pip install 'copick-catalog[copick]' "
            "(the catalog itself, its queries and the CLI work without it)"
        )


def __getattr__(name: str) -> Any:
    if name in __all__:
        require_copick()
        from . import root

        return getattr(root, name)
    raise AttributeError(f"module 'copick_catalog.copick' has no attribute {name!r}")

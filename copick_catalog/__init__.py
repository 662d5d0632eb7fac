"""copick-catalog: an SQL-indexed catalog for copick cryo-ET projects, with file-backed payloads.

``Catalog.open(config)`` for the catalog (index, queries, ``.open()`` on rows);
``from_file(config)`` for copick's object API served from the catalog.
"""

from .catalog import Catalog
from .copick_api import from_file
from .errors import CatalogError

__all__ = ["Catalog", "CatalogError", "from_file"]
__version__ = "0.1.0"

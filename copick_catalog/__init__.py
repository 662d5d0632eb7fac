"""copick-catalog: an SQL-indexed catalog for copick cryo-ET projects, with file-backed payloads."""

from .catalog import Catalog
from .errors import CatalogError

__all__ = ["Catalog", "CatalogError"]
__version__ = "0.1.0"

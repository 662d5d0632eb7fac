"""The export formats by name: what ``copick-catalog export points`` offers, known without importing the catalog.

Kept apart from :mod:`copick_catalog.catalog.export` (which writes them) so the command line can build
its options without loading SQLAlchemy, pyarrow or copick: ``--help`` stays instant.
"""

from __future__ import annotations

#: Formats written by the catalog itself, from the points table.
POINT_FORMATS = ("parquet", "csv")
#: Formats written by copick's exporters, and the name copick gives each.
COPICK_FORMATS = {"star": "star", "em": "em", "dynamo": "dynamo", "copick-csv": "csv"}
#: Every format ``Catalog.export`` and ``copick-catalog export points`` accept.
FORMATS = (*POINT_FORMATS, *COPICK_FORMATS)
#: Points per batch by default: ~16 MB of Arrow arrays.
BATCH_POINTS = 262_144

__all__ = ["BATCH_POINTS", "COPICK_FORMATS", "FORMATS", "POINT_FORMATS"]

"""Query helpers on :class:`~copick_catalog.catalog.Catalog` (filled in by the query API)."""

from __future__ import annotations


class QueryMixin:
    """Placeholder mixin; query helpers live here."""

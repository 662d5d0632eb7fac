"""Python functions registered on every SQLite connection of a catalog engine, for copick URIs in SQL.

SQLite has no regular expressions of its own: ``X REGEXP Y`` calls a function ``regexp(Y, X)`` that
the application must provide. Ours is Python's :func:`re.match`, anchored at the start only,
because that is how copick matches ``re:`` URI parts (``re:ribo`` selects ``ribosome``). PostgreSQL
needs none of this (``~`` is built in; :mod:`~copick_catalog.catalog.uri_sql` anchors the pattern).

``copick_float_text(x)`` is ``str(float(x))``: copick matches voxel patterns that are not numbers
(``re:10\\.0``, ``1*``) against the voxel size written the way Python writes a float.
"""

from __future__ import annotations

import functools
import re
import sqlite3

#: The name under which :func:`float_text` is registered.
FLOAT_TEXT_FUNCTION = "copick_float_text"


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def regexp(pattern: str | None, value: object) -> bool | None:
    """``value REGEXP pattern``: whether :func:`re.match` finds ``pattern`` at the start of ``value``."""
    if pattern is None or value is None:
        return None
    return _compiled(pattern).match(value if isinstance(value, str) else str(value)) is not None


def float_text(value: object) -> str | None:
    """``str(float(value))`` (``10.0``, ``7.84``), NULL for NULL."""
    if value is None:
        return None
    return str(float(value))  # type: ignore[arg-type]


def register(conn: sqlite3.Connection) -> None:
    """Register the functions on one DB-API connection (called from the engine's connect hook)."""
    conn.create_function("regexp", 2, regexp, deterministic=True)
    conn.create_function(FLOAT_TEXT_FUNCTION, 1, float_text, deterministic=True)


__all__ = ["FLOAT_TEXT_FUNCTION", "float_text", "regexp", "register"]

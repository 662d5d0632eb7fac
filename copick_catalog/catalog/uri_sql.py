"""A parsed copick URI as SQL conditions: the same rows ``copick.util.uri.resolve_copick_objects`` finds.

copick resolves a URI in Python, run by run; here each part becomes one condition of the query a
helper already runs, so a URI costs no more than the equivalent filters. Which condition follows
copick's code, per object type:

* a glob without wildcards is ``=`` (an index lookup); ``*`` is no condition at all; ``*`` and ``?``
  become ``LIKE`` (PostgreSQL) or ``GLOB`` (SQLite, whose ``LIKE`` ignores case); sets (``[abc]``)
  a regular expression (:mod:`~copick_catalog.catalog.globs`);
* ``re:`` parts use the backend's regex operator with :func:`re.match` semantics (anchored at the
  start only): PostgreSQL's ``~`` on ``^(?:pattern)``, SQLite's ``REGEXP``, which
  :mod:`~copick_catalog.catalog.db` registers as Python's :func:`re.match` on every connection. On
  PostgreSQL the pattern is read by PostgreSQL's own engine, which agrees with Python's on the
  usual syntax (classes, ``*``, ``+``, ``{m,n}``, groups, alternation, anchors) but not on
  everything (``\\b`` is ``\\y`` there). No part can hold ``?``: copick ends the URI there;
* shortcuts that change no answer: a ``re:`` part that matches every name (``.*``) is no condition,
  one that is a prefix test (``ribo``, ``ribo.*``) is ``GLOB``/``LIKE 'ribo%'``; on SQLite, whose
  ``REGEXP`` is a Python call per row, a literal start of a pattern is also an indexable ``GLOB`` first;
* voxel sizes compare as numbers (``float(part) == voxel_size``); a part that is not a number is
  matched against the voxel size as Python writes it (``str(10.0) == "10.0"``), as copick does;
* an empty part (``ribosome:/1``) selects anything where copick matches patterns, and the empty
  name where it takes the shortcut of plain names (picks, meshes, segmentations whose parts hold no
  pattern); untyped segmentation URIs select binary and multilabel segmentations only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .globs import (
    LIKE_ESCAPE,
    AnyString,
    GlobError,
    Literal,
    Never,
    Token,
    has_sets,
    like_pattern,
    literal_text,
    parse_glob,
    postgres_regex,
    python_regex,
    sqlite_glob,
)
from .schema import Feature, Filament, Mesh, Pick, Segmentation, Tomogram, VoxelSpacing
from .sqlfuncs import FLOAT_TEXT_FUNCTION
from .uris import CopickURI, InvalidURIError, is_pattern


@dataclass(frozen=True)
class URIColumns:
    """The columns a URI's parts compare with, for one table (None: the table has no such part)."""

    names: dict[str, Any]  # URI part -> text column (object_name, user_id, session_id, name, tomo_type, ...)
    voxel_size: Any = None
    is_multilabel: Any = None
    seg_kind: Any = None


#: Characters with a meaning in a regular expression; a pattern's literal prefix ends at the first one.
_REGEX_SPECIAL = frozenset(".^$*+?{}[]\\|()")


def matches_everything(pattern: str) -> bool:
    """Whether :func:`re.match` finds ``pattern`` at the start of every string (``.*``, ``a*``, ``x|``).

    A URI part cannot hold ``?``, so there are no lookarounds, lazy quantifiers or inline flags: with
    no ``$`` and no escape (``\\b``, ``\\Z``, back references), a pattern that matches the empty
    string at position 0 matches there in every string. Such a part is no condition at all.
    """
    if "$" in pattern or "\\" in pattern:
        return False
    try:
        return re.match(pattern, "") is not None
    except re.error:
        return False


def literal_prefix(pattern: str) -> str:
    """The text every match of ``pattern`` (by :func:`re.match`) starts with: ``prot`` for ``prot.*``.

    Empty when the pattern has a top-level choice (``|``) or starts with anything but literal
    characters; a literal followed by a quantifier (``ab*``, ``ab{0,1}``) is not part of it.
    """
    if "|" in pattern:
        return ""
    body = pattern[1:] if pattern.startswith("^") else pattern
    n = 0
    while n < len(body) and body[n] not in _REGEX_SPECIAL:
        n += 1
    if n < len(body) and body[n] in "*?{":  # the last literal may repeat zero times
        n -= 1
    return body[: max(n, 0)]


def _regex(column: Any, pattern: str, dialect: str) -> Any | None:
    """``column`` matches ``pattern`` from its start (:func:`re.match`), in the backend's regex dialect.

    None where every name matches. On SQLite, where ``REGEXP`` is a Python function called per row,
    a literal prefix also becomes a ``GLOB 'prefix*'`` the planner answers from an index, so the
    function only sees the rows that can match.
    """
    if matches_everything(pattern):
        return None
    prefix = literal_prefix(pattern)
    starts: list[Token] = [Literal(prefix), AnyString()]
    if prefix_only(pattern) is not None:  # ``ribo``, ``ribo.*``: a prefix test, no regex needed
        if dialect == "sqlite":
            return column.op("GLOB")(sqlite_glob(starts))
        return column.like(like_pattern(starts), escape=LIKE_ESCAPE)
    if dialect == "sqlite":
        match = column.regexp_match(pattern)  # REGEXP: Python's re.match, registered on connect
        return sa.and_(column.op("GLOB")(sqlite_glob(starts)), match) if prefix else match
    return column.regexp_match(_anchored(pattern))


def prefix_only(pattern: str) -> str | None:
    """The prefix when matching ``pattern`` from the start is just ``startswith(prefix)`` (``ribo.*``), else None."""
    prefix = literal_prefix(pattern)
    body = pattern[1:] if pattern.startswith("^") else pattern
    return prefix if prefix and matches_everything(body[len(prefix) :]) else None


def _anchored(pattern: str) -> str:
    """``^(?:pattern)`` for PostgreSQL's ``~`` (a URI part never holds ``(?flags)``: ``?`` starts the query)."""
    return f"^(?:{pattern})"


def _glob(column: Any, pattern: str, dialect: str, uri: CopickURI) -> Any:
    try:
        tokens = parse_glob(pattern)
    except GlobError as exc:
        raise InvalidURIError(f"invalid {uri.kind} URI {uri.text!r}: glob {pattern!r}: {exc}") from None
    name = literal_text(tokens)
    if name is not None:
        return column == name
    if any(isinstance(t, Never) for t in tokens):
        return sa.false()
    if has_sets(tokens):
        if dialect == "sqlite":  # a literal start narrows first, by index, what the Python REGEXP sees
            match = column.regexp_match(python_regex(tokens))
            if isinstance(tokens[0], Literal):
                return sa.and_(column.op("GLOB")(sqlite_glob([tokens[0], AnyString()])), match)
            return match
        return column.regexp_match(postgres_regex(tokens))
    if dialect == "sqlite":
        return column.op("GLOB")(sqlite_glob(tokens))
    return column.like(like_pattern(tokens), escape=LIKE_ESCAPE)


def _text(column: Any, value: str, uri: CopickURI, dialect: str) -> Any | None:
    """A part against a name column; None where it selects anything (``*``)."""
    if value == "*":
        return None
    if uri.regex:
        return _regex(column, value, dialect)
    return _glob(column, value, dialect, uri)


def float_text(column: Any, dialect: str) -> Any:
    """``str(column)`` as Python writes a float (``10.0``, ``7.84``): what copick matches voxel patterns against."""
    if dialect == "sqlite":
        return getattr(sa.func, FLOAT_TEXT_FUNCTION)(column)
    whole = sa.and_(column == sa.func.trunc(column), sa.func.abs(column) < 1e16)
    return sa.case(
        (whole, sa.cast(sa.cast(column, sa.BigInteger), sa.Text) + ".0"),
        else_=sa.cast(column, sa.Text),  # PostgreSQL 12+ prints the shortest text that reads back, as Python does
    )


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _voxel(column: Any, value: str, uri: CopickURI, dialect: str) -> Any | None:
    """A voxel part against a voxel size column, in copick's pattern path (``_matches_numeric_pattern``)."""
    if value == "*":
        return None
    if not uri.regex:
        number = _number(value)
        if number is not None:
            return sa.false() if math.isnan(number) else column == number
    return _text(float_text(column, dialect), value, uri, dialect)


def _plain(uri: CopickURI, parts: tuple[str, ...]) -> bool:
    """Whether copick answers with its get_* shortcut: no part is a pattern (empty parts do not count)."""
    return not any(uri[p] and is_pattern(uri[p], uri.regex) for p in parts)


def uri_conditions(uri: CopickURI, columns: URIColumns, dialect: str) -> list[Any]:
    """The WHERE conditions (ANDed) that select what ``uri`` selects in copick, for one table's columns."""
    names = [p for p in columns.names if p in uri.parts]
    out: list[Any] = []
    if uri.kind in ("picks", "mesh") and _plain(uri, tuple(names)):
        # copick's get_picks/get_meshes shortcut: every part, the empty one included, is a name to compare
        out.extend(columns.names[p] == uri[p] for p in names)
        return out
    if uri.kind == "segmentation":
        out.extend(_segmentation_flags(uri, columns))
        voxel = uri["voxel_spacing"]
        if _plain(uri, (*names, "voxel_spacing")):
            out.extend(columns.names[p] == uri[p] for p in names)
            number = _number(voxel) if voxel and voxel != "*" else None
            if number is not None:  # a voxel part that is no number (and no pattern) filters nothing here
                out.append(sa.false() if math.isnan(number) else columns.voxel_size == number)
            return out
    for p in names:
        if uri[p]:
            cond = _text(columns.names[p], uri[p], uri, dialect)
            if cond is not None:
                out.append(cond)
    if "voxel_spacing" in uri.parts and columns.voxel_size is not None and uri["voxel_spacing"]:
        cond = _voxel(columns.voxel_size, uri["voxel_spacing"], uri, dialect)
        if cond is not None:
            out.append(cond)
    return out


def _segmentation_flags(uri: CopickURI, columns: URIColumns) -> list[Any]:
    """Type conditions: an untyped URI selects binary and multilabel segmentations (copick's default)."""
    multilabel, instance, panoptic = (uri.flags.get(f) for f in ("multilabel", "instance", "panoptic"))
    if instance is None and panoptic is None:
        instance, panoptic = False, False
    out = []
    if multilabel is not None:
        out.append(columns.is_multilabel == multilabel)
    for kind, wanted in (("instance", instance), ("panoptic", panoptic)):
        if wanted is not None:
            out.append(columns.seg_kind == kind if wanted else columns.seg_kind != kind)
    return out


def columns_for(kind: str) -> URIColumns:
    """The columns of the catalog table behind copick object type ``kind`` (tomograms and features take
    their voxel size from ``voxel_spacings``, which their queries join)."""
    if kind in ("picks", "mesh", "filaments"):
        model: Any = {"picks": Pick, "mesh": Mesh, "filaments": Filament}[kind]
        return URIColumns({"object_name": model.object_name, "user_id": model.user_id, "session_id": model.session_id})
    if kind == "segmentation":
        s = Segmentation
        return URIColumns(
            {"name": s.name, "user_id": s.user_id, "session_id": s.session_id}, s.voxel_size, s.is_multilabel, s.kind
        )
    if kind == "tomogram":
        return URIColumns({"tomo_type": Tomogram.tomo_type}, VoxelSpacing.voxel_size)
    return URIColumns({"tomo_type": Feature.tomo_type, "feature_type": Feature.feature_type}, VoxelSpacing.voxel_size)


__all__ = ["URIColumns", "columns_for", "float_text", "uri_conditions"]

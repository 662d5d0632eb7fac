"""copick URIs: the grammar copick's CLI and copick-utils select data with, parsed without copick.

The catalog core must work without copick installed, so this is our own parser of copick's
grammar (``copick.util.uri.parse_copick_uri``), written to read every input the way copick does,
quirks included, because a URI must select the same files whether copick or the catalog answers it:

=============  ======================================================  ======================
kind           grammar                                                 example
=============  ======================================================  ======================
picks          ``object:user/session``                                 ``ribosome:alice/*``
meshes         ``object:user/session``                                 ``membrane:*/0``
filaments      ``object:user/session``                                 ``microtubule``
segmentations  ``name:user/session@voxel?multilabel=true``             ``membrane:*/*@10``
               (or ``?instance=true``, ``?panoptic=true``)
tomograms      ``tomo_type@voxel``                                     ``wbp@10.0``
features       ``tomo_type@voxel:feature_type``                        ``wbp@10:sobel``
=============  ======================================================  ======================

Parts are globs (``*``, ``?``, ``[abc]``, ``[!abc]``, as :mod:`fnmatch`, case-sensitive) unless the
URI starts with ``re:``: then every part is a regular expression matched from the start of the
name (:func:`re.match`). Missing parts mean ``*``. Voxel sizes compare as numbers (``10`` selects
``10.000``); a voxel part that is not a number is matched against the voxel size written as Python
writes a float (``10.0``). The query string is split off at the *first* ``?``, for every kind, as
copick does, so a ``?`` meant as a glob ends the URI there.

How the parts become SQL lives in :mod:`copick_catalog.catalog.uri_sql`; this module only reads text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from ..errors import CatalogError

#: Our kind names (the CLI's and the query helpers') -> copick's object types.
KINDS: dict[str, str] = {
    "picks": "picks",
    "pick": "picks",
    "meshes": "mesh",
    "mesh": "mesh",
    "filaments": "filaments",
    "filament": "filaments",
    "segmentations": "segmentation",
    "segmentation": "segmentation",
    "tomograms": "tomogram",
    "tomogram": "tomogram",
    "features": "feature",
    "feature": "feature",
}

#: The grammar of each copick object type, as the one-line error for a bad URI shows it.
GRAMMAR: dict[str, str] = {
    "picks": "object:user/session (e.g. ribosome:alice/*)",
    "mesh": "object:user/session (e.g. membrane:*/0)",
    "filaments": "object:user/session (e.g. microtubule:tracer/*)",
    "segmentation": "name:user/session@voxel[?multilabel=true|?instance=true|?panoptic=true] (e.g. membrane:*/*@10)",
    "tomogram": "tomo_type@voxel (e.g. wbp@10)",
    "feature": "tomo_type@voxel:feature_type (e.g. wbp@10:sobel)",
}

#: Segmentation type flags of the query string; at most one may be true (copick's rule).
SEGMENTATION_FLAGS = ("multilabel", "instance", "panoptic")

#: The parts of each object type, in copick's names, in the order the grammar writes them.
PARTS: dict[str, tuple[str, ...]] = {
    "picks": ("object_name", "user_id", "session_id"),
    "mesh": ("object_name", "user_id", "session_id"),
    "filaments": ("object_name", "user_id", "session_id"),
    "segmentation": ("name", "user_id", "session_id", "voxel_spacing"),
    "tomogram": ("tomo_type", "voxel_spacing"),
    "feature": ("tomo_type", "voxel_spacing", "feature_type"),
}


class InvalidURIError(CatalogError, ValueError):
    """A copick URI that does not parse (or whose regular expression does not compile)."""


def copick_kind(kind: str) -> str:
    """copick's object type for one of our kind names (``"picks"``, ``"meshes"``, ... or copick's own)."""
    try:
        return KINDS[kind]
    except KeyError:
        raise InvalidURIError(
            f"unknown kind {kind!r} for a copick URI; use one of: picks, meshes, filaments, segmentations, "
            "tomograms, features"
        ) from None


@dataclass(frozen=True)
class CopickURI:
    """A parsed URI: the text of each part (``*`` where the URI left it out) and the segmentation flags.

    ``regex`` is True for ``re:`` URIs. A part may be the empty string (``ribosome:/1``): copick
    treats that as "any" where it matches patterns and as a name to compare where every part is a
    plain name; :mod:`~copick_catalog.catalog.uri_sql` follows it.
    """

    kind: str
    text: str
    regex: bool
    parts: dict[str, str]
    flags: dict[str, bool | None] = field(default_factory=dict)

    def __getitem__(self, part: str) -> str:
        return self.parts[part]

    def as_dict(self) -> dict[str, Any]:
        """The same dictionary ``copick.util.uri.parse_copick_uri`` returns for this URI."""
        out: dict[str, Any] = {"object_type": self.kind, "pattern_type": "regex" if self.regex else "glob"}
        out.update(self.parts)
        if self.kind == "segmentation":
            out.update(self.flags)
        return out


def _bad(kind: str, uri: str, why: str) -> InvalidURIError:
    # a '?' meant as a glob (not a ?flag=value query) is the likeliest cause of a surprise: say what it does
    hint = " ('?' starts the query string, so no part can hold it)" if "?" in uri and "=" not in uri else ""
    return InvalidURIError(
        f"invalid {kind} URI {uri!r}: {why}{hint}; the grammar is {GRAMMAR[kind]}, parts are globs (or regular "
        "expressions after 're:'), and missing parts mean *"
    )


def _object_user_session(kind: str, original: str, main: str, first: str) -> tuple[str, str, str]:
    """``first:user/session`` with the user and session optional (``first``'s name differs by kind)."""
    pieces = main.split(":")
    if len(pieces) > 2:
        raise _bad(kind, original, f"more than one ':' (expected one between the {first} and user/session)")
    if len(pieces) == 1:
        return pieces[0], "*", "*"
    user, sep, session = pieces[1].partition("/")
    return pieces[0], user, session if sep else "*"


def parse_uri(uri: str, kind: str) -> CopickURI:
    """Parse ``uri`` as a copick URI of ``kind`` (ours or copick's spelling); :class:`InvalidURIError` if it is not one.

    Reads like ``copick.util.uri.parse_copick_uri`` (tested against it on the same inputs), and
    also compiles every regular expression now, so a bad pattern is an error even where nothing
    would have been matched against it.
    """
    kind = copick_kind(kind)
    if not isinstance(uri, str):
        raise InvalidURIError(f"a copick URI is text, not {type(uri).__name__}; the grammar is {GRAMMAR[kind]}")
    original = uri
    text = uri.strip()
    regex = text.startswith("re:")
    if regex:
        text = text[3:]
    query: dict[str, Any] = {}
    if "?" in text:
        text, query_string = text.split("?", 1)
        query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(query_string).items()}
    parts: dict[str, str]
    flags: dict[str, bool | None] = {}
    if kind in ("picks", "mesh", "filaments"):
        obj, user, session = _object_user_session(kind, original, text, "object")
        parts = {"object_name": obj, "user_id": user, "session_id": session}
    elif kind == "segmentation":
        main, sep, voxel = text.partition("@")
        name, user, session = _object_user_session(kind, original, main, "name")
        parts = {"name": name, "user_id": user, "session_id": session, "voxel_spacing": voxel if sep else "*"}
        flags = {flag: None for flag in SEGMENTATION_FLAGS}
        for flag in SEGMENTATION_FLAGS:
            if flag in query:
                flags[flag] = str(query[flag]).lower() in ("true", "1", "yes")
        if sum(bool(v) for v in flags.values()) > 1:
            raise _bad(kind, original, "a segmentation has one type, so at most one of multilabel, instance, panoptic")
    elif kind == "tomogram":
        tomo_type, sep, voxel = text.partition("@")
        parts = {"tomo_type": tomo_type, "voxel_spacing": voxel if sep else "*"}
    else:  # feature
        tomo_type, sep, rest = text.partition("@")
        voxel, sep2, feature_type = rest.partition(":") if sep else ("*", "", "*")
        parts = {"tomo_type": tomo_type, "voxel_spacing": voxel, "feature_type": feature_type if sep2 else "*"}
    if regex:
        for name, value in parts.items():
            if value and value != "*":
                try:
                    re.compile(value)
                except re.error as exc:
                    raise _bad(
                        kind, original, f"the {name} pattern {value!r} is not a regular expression ({exc})"
                    ) from None
    return CopickURI(kind, original, regex, parts, flags)


def is_pattern(value: str, regex: bool) -> bool:
    """Whether copick matches ``value`` as a pattern rather than comparing it as a name.

    ``*`` always is; with ``re:`` every part is; a glob is when it holds ``*``, ``?`` or ``[``.
    """
    return value == "*" or regex or any(c in value for c in "*?[")


__all__ = [
    "GRAMMAR",
    "KINDS",
    "PARTS",
    "CopickURI",
    "InvalidURIError",
    "copick_kind",
    "is_pattern",
    "parse_uri",
]

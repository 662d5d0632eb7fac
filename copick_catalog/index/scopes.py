"""Scopes: the subtrees an index run looks at, as ``(layer, relative prefix)`` pairs.

A full index has one scope per layer (prefix ``""``); the object API's write-through and the watch
daemon index only what they touched. Three rules live here and nowhere else: which prefix covers which
path (:func:`covers`), how a set of prefixes shrinks to the few that cover it (:func:`minimal`), and
which subtree a change to one path dirties (:func:`entity_scope`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import grammar

Scope = tuple[str, str]

#: Above this many dirty subtrees in one layer, coarsen them (run directories, then the whole layer):
#: one walk is cheaper than thousands of scopes, and SQLite caps expression depth at 1000.
MAX_SCOPES_PER_LAYER = 200


def covers(prefix: str, path: str) -> bool:
    """Whether ``path`` is ``prefix`` or lies below it (``""`` covers everything)."""
    return not prefix or path == prefix or path.startswith(prefix + "/")


def minimal(prefixes: Iterable[str], limit: int | None = None) -> list[str]:
    """Drop prefixes inside others; above ``limit``, coarsen to run directories, then to the root."""
    out = _drop_covered(prefixes)
    if limit is not None:
        for depth in (2, 1, 0):
            if len(out) <= limit:
                break
            out = _drop_covered("/".join(p.split("/")[:depth]) for p in out)
    return out


def minimal_scopes(scopes: Iterable[Scope], limit: int | None = None) -> list[Scope]:
    """:func:`minimal` per layer, so no subtree is walked twice."""
    by_layer: dict[str, list[str]] = {}
    for layer, prefix in scopes:
        by_layer.setdefault(layer, []).append(prefix)
    return [(layer, p) for layer in sorted(by_layer) for p in minimal(by_layer[layer], limit)]


def _drop_covered(prefixes: Iterable[str]) -> list[str]:
    out: list[str] = []
    for p in sorted({p.strip("/") for p in prefixes}, key=lambda s: (s.count("/") if s else -1, s)):
        if not any(covers(q, p) for q in out):
            out.append(p)
    return out


def scope_runs(scopes: Iterable[Scope]) -> set[str] | None:
    """The runs a scan of ``scopes`` can add, change or remove; None means all of them.

    A scope at or above ``ExperimentRuns`` reaches every run; a write-through touches one run, not 5,000.
    """
    names: set[str] = set()
    for _layer, prefix in scopes:
        parts = prefix.split("/") if prefix else []
        if len(parts) < 2 and (not parts or parts[0] == grammar.RUNS_DIR):
            return None
        if parts[0] == grammar.RUNS_DIR:
            names.add(parts[1])
    return names


@dataclass(frozen=True, slots=True)
class RunSlice:
    """A contiguous range of run names, for indexing a big project a few thousand runs at a time.

    Holding the listing and the snapshot of 100,000 runs at once costs gigabytes; a pass over one slice
    holds only its own. The range is half-open, ``after < name <= upto`` in code-point order (Python's
    ``str`` order, SQLite's BINARY collation and PostgreSQL's ``"C"``, so the walk and the SQL agree),
    and open at the ends, so the slices of a plan cover every name, including a run created while the
    passes go on. The first slice also takes what lies outside the run directories (``Objects``).
    """

    after: str | None = None
    upto: str | None = None
    #: how many runs the plan counted in it (sizes the listing fan-out without listing again)
    size: int = 0
    #: layer -> the entries of ``ExperimentRuns`` in this slice, as the plan listed them (``os.DirEntry``
    #: of a local root): each pass walks its own runs without listing all 100,000 names again
    listed: Mapping[str, Sequence[Any]] = field(default_factory=dict, compare=False, hash=False)

    @property
    def whole(self) -> bool:
        """Whether this slice is every run (a plan of one slice)."""
        return self.after is None and self.upto is None

    @property
    def outside(self) -> bool:
        """Whether this slice takes the paths outside ``ExperimentRuns/<run>`` (the first slice does)."""
        return self.after is None

    def __contains__(self, name: object) -> bool:
        return (
            isinstance(name, str)
            and (self.after is None or name > self.after)
            and (self.upto is None or name <= self.upto)
        )

    def keeps(self, path: str) -> bool:
        """Whether a relative path belongs to this slice: under one of its runs, or outside every run."""
        parts = path.split("/", 2)
        if len(parts) > 1 and parts[0] == grammar.RUNS_DIR:
            return parts[1] in self
        return self.outside


def plan_slices(names: Iterable[str], per_slice: int) -> list[RunSlice]:
    """Cut the run ``names`` into slices of about ``per_slice`` runs (one slice if fewer).

    The bounds are names the catalog can store (a directory name that is not UTF-8 cannot be bound to
    SQL); such a name still falls in one slice by comparison, where the walk reports it.
    """
    ordered = sorted({n for n in names if _storable(n)})
    groups = [ordered[i : i + per_slice] for i in range(0, len(ordered), per_slice)] or [[]]
    return [
        RunSlice(
            after=groups[i - 1][-1] if i else None,
            upto=group[-1] if i < len(groups) - 1 else None,
            size=len(group),
        )
        for i, group in enumerate(groups)
    ]


def _storable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def entity_scope(rel: str, is_dir: bool) -> str | None:
    """The smallest subtree whose rescan captures a change at ``rel``, or None if the grammar ignores it.

    Paths inside a zarr group map to the group, so thousands of chunk writes become one update.
    Files map to their directory rather than to themselves: the walker lists directories, and a
    directory of a run is a handful of entries. Paths the grammar ignores (temporary files, stray
    directories) map to None; a temp file renamed into place arrives as a move whose destination
    counts.
    """
    parts = tuple(p for p in rel.split("/") if p)
    if not parts:
        return ""
    depth = grammar.group_depth(parts)
    if depth is not None:
        return "/".join(parts[:depth])
    if is_dir:
        if grammar.descend(parts) or grammar.parse("/".join(parts), is_dir=True) is not None:
            return "/".join(parts)
        return None
    if len(parts) < 2 or grammar.parse("/".join(parts), is_dir=False) is None:
        return None
    return "/".join(parts[:-1])


__all__ = [
    "MAX_SCOPES_PER_LAYER",
    "RunSlice",
    "Scope",
    "covers",
    "entity_scope",
    "minimal",
    "minimal_scopes",
    "plan_slices",
    "scope_runs",
]

"""Scopes: the subtrees an index run looks at, as ``(layer, relative prefix)`` pairs.

A full index has one scope per layer (prefix ``""``); the object API's write-through and the watch
daemon index only what they touched. Three rules live here and nowhere else: which prefix covers which
path (:func:`covers`), how a set of prefixes shrinks to the few that cover it (:func:`minimal`), and
which subtree a change to one path dirties (:func:`entity_scope`).
"""

from __future__ import annotations

from collections.abc import Iterable

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


__all__ = ["MAX_SCOPES_PER_LAYER", "Scope", "covers", "entity_scope", "minimal", "minimal_scopes", "scope_runs"]

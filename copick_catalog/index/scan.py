"""What a listing found, and the loop that finds it: one layer's entries compared with the snapshot.

:class:`Lister` turns the entries a root's walk yields into a :class:`Scan`: files the catalog already
holds with the same fingerprint are merely counted (a no-op reindex parses no path), everything else
is parsed by the grammar into the entity it names, and names that cannot be stored or read become
problems. The same loop runs in this process or, for a big local root, once per share of the run
directories in forked processes (:mod:`.fanout`), whose scans are merged here.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from . import grammar
from .kinds import SPECS
from .roots import Entry, ListingStats
from .scopes import covers
from .snapshot import Snapshot


class Problem(NamedTuple):
    """Something wrong with one path, for ``index_errors``; ``fingerprint`` is set for content that failed
    to parse (the file is then parked: read again only once it changes)."""

    kind: str
    severity: str
    message: str
    fingerprint: str | None = None


@dataclass(slots=True)
class Seen:
    """A listed entity the catalog does not hold as it is: its key, the listing entry, its layer."""

    key: grammar.Key
    entry: Entry
    layer: str
    note: str | None = None
    poolable: bool | None = None


@dataclass
class Scan:
    """What listing the scopes found."""

    seen: dict[tuple[str, str], Seen] = field(default_factory=dict)
    #: layer -> path -> kind (its value) of files whose fingerprint confirmed the catalog's row (never parsed)
    unchanged: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    runs: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    vss: dict[str, set[tuple[str, float]]] = field(default_factory=lambda: defaultdict(set))
    #: (layer, path) -> (error kind, severity, message)
    problems: dict[tuple[str, str], Problem] = field(default_factory=dict)
    #: (layer, prefix) of subtrees that could not be examined: what the catalog knows there is kept
    unknown: list[tuple[str, str]] = field(default_factory=list)

    def is_unknown(self, layer: str, path: str) -> bool:
        return any(lay == layer and covers(prefix, path) for lay, prefix in self.unknown)

    def merge(self, other: Scan) -> None:
        """Add a scan of other paths (another share of the same layer, or another layer)."""
        self.seen.update(other.seen)
        for layer, paths in other.unchanged.items():
            self.unchanged[layer].update(paths)
        for layer, names in other.runs.items():
            self.runs[layer].update(names)
        for layer, keys in other.vss.items():
            self.vss[layer].update(keys)
        self.problems.update(other.problems)
        self.unknown.extend(other.unknown)


class Lister:
    """Compares one layer's entries with the snapshot, filling ``scan``.

    ``listed`` counts the entries and ``found_runs_dir`` says whether any lay under ``ExperimentRuns``:
    the indexer's test for a root that looks unmounted. ``checkpoint`` is called every thousand entries
    (the indexer's cancellation point).
    """

    def __init__(
        self,
        layer: str,
        url_of: Callable[[str], str],
        snapshot: Snapshot,
        objects: list[str],
        scan: Scan | None = None,
        checkpoint: Callable[[], None] | None = None,
    ) -> None:
        self.layer = layer
        self.url_of = url_of
        self.snapshot = snapshot
        self.objects = objects
        self.scan = scan if scan is not None else Scan()
        self.checkpoint = checkpoint
        self.listed = 0
        self.found_runs_dir = False
        self._undecodable: list[str] = []

    def feed(self, entries: Iterable[Entry]) -> None:
        # The loop a reindex spends its time in (90,000 entries at 5,000 runs): locals, not attributes.
        scan, snapshot, layer, checkpoint = self.scan, self.snapshot, self.layer, self.checkpoint
        confirm = snapshot.clean(layer)
        unchanged = scan.unchanged[layer]
        runs, vss = scan.runs[layer], scan.vss[layer]
        run_names, vs_keys = snapshot.run_names, snapshot.vs_keys
        kind_at, run_at, vs_at = Snapshot.KIND, Snapshot.RUN_ID, Snapshot.VS_ID
        listed, found_runs_dir = self.listed, self.found_runs_dir
        try:
            for entry in entries:
                listed += 1
                if checkpoint is not None and listed % 1000 == 0:
                    checkpoint()
                path = entry.path
                if not found_runs_dir:
                    found_runs_dir = path.split("/", 1)[0] == grammar.RUNS_DIR
                # The common case of a reindex: a file the catalog holds, with the same fingerprint, is not
                # parsed again (see Snapshot.clean); only the run and voxel spacing it proves are noted.
                row = confirm(path, entry.fingerprint)
                if row is not None:
                    unchanged[path] = row[kind_at]
                    if row[run_at] is not None:
                        runs.add(run_names[row[run_at]])
                    if row[vs_at] is not None:
                        vss.add(vs_keys[row[vs_at]])
                    continue
                shown = printable(path)
                if shown is not None:  # a name that is not UTF-8 cannot be stored, compared or shown as it is
                    if not any(covers(p, shown) for p in self._undecodable):
                        self._undecodable.append(shown)
                        scan.problems[(layer, shown)] = Problem(
                            "name",
                            "error",
                            f"{self.url_of(shown)}: this name is not valid UTF-8, so it cannot be catalogued; "
                            "rename it",
                        )
                    continue
                if entry.error is not None:
                    scan.problems[(layer, path)] = Problem("io", "error", entry.error)
                    scan.unknown.append((layer, path))
                    continue
                self._note(entry)
        finally:
            self.listed, self.found_runs_dir = listed, found_runs_dir

    def _note(self, entry: Entry) -> None:
        layer, scan = self.layer, self.scan
        parsed = grammar.parse(entry.path, self.objects, is_dir=entry.is_dir)
        if parsed is None:
            return
        if isinstance(parsed, grammar.Malformed):
            scan.problems[(layer, entry.path)] = Problem("name", "error", parsed.reason)
            return
        key = parsed.key
        if isinstance(key, grammar.RunKey):
            scan.runs[layer].add(key.run)
            return
        if isinstance(key, grammar.VoxelSpacingKey):
            scan.runs[layer].add(key.run)
            scan.vss[layer].add((key.run, key.voxel_size))
            return
        if SPECS[key.kind].is_group(key) != entry.is_dir:
            return  # a stray file named like a group, or a directory named like a file
        for anc in grammar.iter_ancestors(key):
            if isinstance(anc, grammar.RunKey):
                scan.runs[layer].add(anc.run)
            elif isinstance(anc, grammar.VoxelSpacingKey):
                scan.vss[layer].add((anc.run, anc.voxel_size))
        scan.seen[(layer, entry.path)] = Seen(key, entry, layer, parsed.note)
        if parsed.note:
            scan.problems[(layer, entry.path)] = Problem("ambiguous_name", "warning", parsed.note)


@dataclass
class Share:
    """One share of a layer's listing as a worker sends it back: the scan with its confirmed paths packed
    as one string per kind (57,000 paths cost a split, not 57,000 pickled dictionary entries)."""

    scan: Scan
    unchanged: dict[str, str]
    listed: int
    found_runs_dir: bool
    stats: ListingStats

    @classmethod
    def pack(cls, lister: Lister, stats: ListingStats) -> Share:
        by_kind: dict[str, list[str]] = defaultdict(list)
        for path, kind in lister.scan.unchanged.pop(lister.layer, {}).items():
            by_kind[kind].append(path)
        return cls(
            lister.scan, {k: "\0".join(v) for k, v in by_kind.items()}, lister.listed, lister.found_runs_dir, stats
        )

    def unpack_into(self, lister: Lister, stats: ListingStats) -> None:
        """Merge this share into the in-process lister of the same layer."""
        lister.scan.merge(self.scan)
        confirmed = lister.scan.unchanged[lister.layer]
        for kind, joined in self.unchanged.items():
            if joined:
                confirmed.update(dict.fromkeys(joined.split("\0"), kind))
        lister.listed += self.listed
        lister.found_runs_dir = lister.found_runs_dir or self.found_runs_dir
        for name in ("list_calls", "stat_calls", "entries", "keys", "chunk_keys"):
            setattr(stats, name, getattr(stats, name) + getattr(self.stats, name))


def printable(path: str) -> str | None:
    """None for a path that is valid UTF-8; else the path with its undecodable bytes shown as ``\\xNN``."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return None


__all__ = ["Lister", "Problem", "Scan", "Seen", "Share", "printable"]

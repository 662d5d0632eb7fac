"""Listing big local roots on every core.

A reindex of a project nobody touched is nothing but a listing: a ``stat`` of every file compared with
the catalog. One process does that at the speed of one core, so for a root with many runs the run
directories are dealt out by a hash of their names into one share per core. One pool of forked workers
is started per index run and given the other shares of every big root at once; this process walks
share 0 of each root meanwhile, so workers and this process stay busy across both layers. Each worker
compares its entries with the snapshot it inherited (:class:`~copick_catalog.index.scan.Lister`) and
sends back only what it found (the confirmed paths packed per kind, and the entities to read). A worker
that dies costs only speed: its share is walked here instead.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..gcpause import gc_paused
from . import grammar
from .pool import default_workers, quiet_worker
from .roots import ListingStats, Root
from .scan import Lister, Share
from .scopes import RunSlice
from .snapshot import Snapshot

log = logging.getLogger(__name__)

#: A root with fewer run directories is listed in this process: a fork costs more than it saves.
PARALLEL_MIN_RUNS = 1000

#: What the workers inherit from the run that forked them: the roots by (layer, prefix), the snapshot
#: and object names every share compares against, and the slice of runs of this pass (if any).
_STATE: tuple[dict[tuple[str, str], Root], Snapshot, list[str], RunSlice | None] | None = None


def shares_for(root: Root, prefix: str, runs: RunSlice | None = None) -> int:
    """How many shares to list ``prefix`` of ``root`` in: the worker count for a whole local root with
    many runs (in the slice ``runs``, if given), else 1 (scoped listings, object stores, small projects,
    one core)."""
    workers = default_workers()
    if (
        workers < 2
        or prefix not in ("", grammar.RUNS_DIR)
        or not root.shareable
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return 1
    count = runs.size if runs is not None else root.count_runs()
    return workers if count >= PARALLEL_MIN_RUNS else 1


class SharedListing:
    """The worker pool of one index run's shared listings (a context manager).

    ``jobs`` are the ``(root, layer, prefix)`` scopes to share; the workers start on all of them at
    once. :meth:`feed` then lists one of them into a lister: share 0 here, the rest collected from the
    workers (or walked here if a worker died).
    """

    def __init__(
        self,
        jobs: Sequence[tuple[Root, str, str]],
        snapshot: Snapshot,
        objects: list[str],
        runs: RunSlice | None = None,
    ) -> None:
        global _STATE
        self.runs = runs
        self.shares = {(layer, prefix): shares_for(root, prefix, runs) for root, layer, prefix in jobs}
        self.shares = {k: n for k, n in self.shares.items() if n > 1}
        self._futures: dict[tuple[str, str], list[Future[Share]]] = {}
        self._pool: ProcessPoolExecutor | None = None
        if not self.shares:
            return
        _STATE = ({(layer, prefix): root for root, layer, prefix in jobs}, snapshot, objects, runs)
        self._pool = ProcessPoolExecutor(
            max_workers=max(self.shares.values()) - 1,
            mp_context=multiprocessing.get_context("fork"),
            initializer=quiet_worker,
        )
        for (layer, prefix), n in self.shares.items():
            self._futures[(layer, prefix)] = [self._pool.submit(_list_share, layer, prefix, i, n) for i in range(1, n)]

    def covers(self, layer: str, prefix: str) -> bool:
        """Whether this listing is shared or sliced (else the caller walks it in one piece)."""
        return (layer, prefix) in self.shares or self.runs is not None

    def feed(self, root: Root, prefix: str, lister: Lister, stats: ListingStats) -> None:
        """Fill ``lister`` (and ``stats``) with the listing of ``prefix``: share 0 here, the others from the workers."""
        n = self.shares.get((lister.layer, prefix), 1)
        lister.feed(root.walk_share(stats, prefix, (0, n), self.runs))
        for i, future in enumerate(self._futures.get((lister.layer, prefix), ()), start=1):
            try:
                share = future.result()
            except BrokenProcessPool:
                log.warning("a listing worker process died; listing its share of %s here", root.url)
                lister.feed(root.walk_share(stats, prefix, (i, n), self.runs))
                continue
            share.unpack_into(lister, stats)

    def __enter__(self) -> SharedListing:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        global _STATE
        if self._pool is not None:
            self._pool.shutdown(wait=exc_type is None, cancel_futures=True)
            self._pool = None
        _STATE = None


def _list_share(layer: str, prefix: str, index: int, shares: int) -> Share:
    """A worker's task: walk share ``index`` of ``prefix`` in ``layer`` with the inherited root and snapshot."""
    assert _STATE is not None, "listing workers are forked from an index run"
    roots, snapshot, objects, runs = _STATE
    root = roots[(layer, prefix)]
    stats = ListingStats()
    lister = Lister(layer, root.url_of, snapshot, objects)
    with gc_paused():  # as in the parent: objects made per entry, none of them garbage
        lister.feed(root.walk_share(stats, prefix, (index, shares), runs))
        return Share.pack(lister, stats)


__all__ = ["PARALLEL_MIN_RUNS", "SharedListing", "shares_for"]

"""Listing a big local root on every core.

A reindex of a project nobody touched is nothing but a listing: a ``stat`` of every file compared with
the catalog. One process does that at the speed of one core, so for a root with many runs the run
directories are dealt out by a hash of their names into one share per core: this process walks share
0 while forked workers walk the others, each comparing its entries with the snapshot it inherited
(:class:`~copick_catalog.index.scan.Lister`), and send back only what they found (the confirmed paths
packed per kind, and the entities to read). A worker that dies costs only speed: its share is walked
here instead.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from . import grammar
from .pool import default_workers, quiet_worker
from .roots import ListingStats, Root
from .scan import Lister, Share
from .snapshot import Snapshot

log = logging.getLogger(__name__)

#: A root with fewer run directories is listed in this process: a fork costs more than it saves.
PARALLEL_MIN_RUNS = 1000

#: What the workers inherit from the run that forked them: (root, layer, prefix, snapshot, objects, shares).
_STATE: tuple[Root, str, str, Snapshot, list[str], int] | None = None


def shares_for(root: Root, prefix: str) -> int:
    """How many shares to list ``prefix`` of ``root`` in: the worker count for a whole local root with
    many runs, else 1 (scoped listings, object stores, small projects, one core)."""
    workers = default_workers()
    if (
        workers < 2
        or prefix not in ("", grammar.RUNS_DIR)
        or not root.shareable
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return 1
    return workers if root.count_runs() >= PARALLEL_MIN_RUNS else 1


def list_shares(root: Root, prefix: str, lister: Lister, stats: ListingStats, shares: int) -> None:
    """Fill ``lister`` (and ``stats``) with the listing of ``prefix``, walked in ``shares`` parts at once."""
    global _STATE
    _STATE = (root, lister.layer, prefix, lister.snapshot, lister.objects, shares)
    pool = ProcessPoolExecutor(
        max_workers=shares - 1, mp_context=multiprocessing.get_context("fork"), initializer=quiet_worker
    )
    finished = False
    try:
        futures = {i: pool.submit(_list_share, i) for i in range(1, shares)}
        lister.feed(root.walk_share(stats, prefix, (0, shares)))
        for i, future in futures.items():
            try:
                share = future.result()
            except BrokenProcessPool:
                log.warning("a listing worker process died; listing its share of %s here", root.url)
                lister.feed(root.walk_share(stats, prefix, (i, shares)))
                continue
            share.unpack_into(lister, stats)
        finished = True
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)
        _STATE = None


def _list_share(index: int) -> Share:
    """A worker's task: walk share ``index`` with the inherited root and snapshot."""
    assert _STATE is not None, "listing workers are forked from an index run"
    root, layer, prefix, snapshot, objects, shares = _STATE
    stats = ListingStats()
    lister = Lister(layer, root.url_of, snapshot, objects)
    lister.feed(root.walk_share(stats, prefix, (index, shares)))
    return Share.pack(lister, stats)


__all__ = ["PARALLEL_MIN_RUNS", "list_shares", "shares_for"]

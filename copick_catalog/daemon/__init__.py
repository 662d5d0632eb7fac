"""What keeps a catalog current while files change: the watch daemon and its pieces.

:mod:`.events` maps a file event to the smallest subtree to re-scan, :mod:`.state` is the daemon's
state file (what ``status`` reads), :mod:`.claim` makes sure one daemon serves a catalog, and
:mod:`.watcher` is the loop that collects dirty subtrees and runs the incremental indexer on them.
:func:`run_watch` is what ``copick-catalog watch`` calls.
"""

from .watcher import WatchOptions, run_watch

__all__ = ["WatchOptions", "run_watch"]

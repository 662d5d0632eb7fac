"""What keeps a catalog current while files change: the watch daemon and its pieces.

:mod:`.inotify` is the kernel interface (inotify_simple's one instance, one watch per directory;
Linux only, elsewhere local roots are polled), :mod:`.watches` decides which directories are watched
within the per-user budget and turns events into dirty subtrees, :mod:`.poller` follows the runs past
the budget by listing them in turn, :mod:`.events` is the dirty set and when a layer is due,
:mod:`.state` is the daemon's state file (what ``status`` reads), :mod:`.claim` makes sure one daemon
serves a catalog, and :mod:`.watcher` is the loop that runs the incremental indexer on the dirty
subtrees. :func:`run_watch` is what ``copick-catalog watch`` calls.
"""

from .watcher import WatchOptions, run_watch

__all__ = ["WatchOptions", "run_watch"]

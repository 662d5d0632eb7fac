"""From changes to index runs: the set of subtrees waiting to be indexed, and when each layer is due.

File events are hints, never the truth (DESIGN §4): every change is mapped to the smallest subtree
whose re-scan captures it (:func:`copick_catalog.index.scopes.entity_scope`), the subtrees collect in
a :class:`DirtySet`, and the daemon indexes them as scopes once the layer is due.

When a layer is due decides both latency and batching:

* A lone, complete change (a file closed after writing, renamed into place or deleted; a directory
  created or removed) on a layer that has been quiet is indexed after a short *settle* period (20 ms),
  which only gathers the few events of one save. One saved pick file is then queryable within tens
  of milliseconds instead of a debounce period.
* Everything else waits for the *debounce* quiet period (0.25 s), bounded by *max_delay* (2 s) for a
  stream that never goes quiet: a file still open for writing (modified, not yet closed), anything
  inside a zarr group (written file by file, so no single event says it is complete), and any change
  arriving while the layer is *hot*, i.e. within one debounce period of its previous index. A tool
  writing hundreds of files thus gets one prompt index for its first file, then one per quiet
  period or per max_delay, never one per file.

The indexer's own safety stays underneath: a file that fails to parse right after being modified is
re-read, and the daemon retries fresh parse errors (:mod:`.watcher`).
"""

from __future__ import annotations

import enum
import threading
import time
from typing import Protocol


class Change(enum.Enum):
    """What one event says about the state of the thing it touched."""

    DONE = "done"  # complete: closed after writing, renamed into place, deleted, a directory event
    WRITING = "writing"  # a file created or modified and not closed yet: more is probably coming
    GROUP = "group"  # inside a zarr group, written file by file: only quiet says it is complete


class Sink(Protocol):
    """What the change sources (inotify, the poller) report to (the daemon)."""

    def mark_dirty(self, layer: str, prefix: str, change: Change = Change.DONE, path: str | None = None) -> None: ...

    def events_lost(self, why: str) -> None: ...

    def root_moved(self, layer: str) -> None: ...


class DirtySet:
    """Subtrees waiting to be indexed, per layer, with what the due time needs (thread-safe).

    Per layer: the monotonic times of the oldest pending change and of the newest, the files opened
    for writing and not closed since, and whether a zarr group is among the changes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, set[str]] = {}
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._open: dict[str, set[str]] = {}
        self._slow: set[str] = set()

    def add(
        self,
        layer: str,
        prefix: str,
        *,
        at: float | None = None,
        change: Change = Change.DONE,
        path: str | None = None,
    ) -> None:
        now = time.monotonic() if at is None else at
        with self._lock:
            self._items.setdefault(layer, set()).add(prefix)
            self._first[layer] = min(self._first.get(layer, now), now)
            self._last[layer] = max(self._last.get(layer, now), now)
            if change is Change.GROUP:
                self._slow.add(layer)
            elif path is not None:
                opened = self._open.setdefault(layer, set())
                if change is Change.WRITING:
                    opened.add(path)
                else:
                    opened.discard(path)

    def layers(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def due_at(
        self, layer: str, *, settle: float, debounce: float, max_delay: float, hot_until: float = float("-inf")
    ) -> float | None:
        """When the layer's pending changes become due (monotonic), or None if there are none.

        ``hot_until``: changes that began before this time are part of a burst (the layer was indexed
        a moment ago) and wait for the full debounce.
        """
        with self._lock:
            if layer not in self._items:
                return None
            first, last = self._first[layer], self._last[layer]
            quick = first >= hot_until and layer not in self._slow and not self._open.get(layer)
            return min(last + (settle if quick else debounce), first + max_delay)

    def take(self, layer: str) -> set[str]:
        """Remove and return a layer's subtrees (events arriving meanwhile start a new set)."""
        with self._lock:
            self._first.pop(layer, None)
            self._last.pop(layer, None)
            self._open.pop(layer, None)
            self._slow.discard(layer)
            return self._items.pop(layer, set())

    def restore(self, layer: str, items: set[str]) -> None:
        """Put back subtrees whose index failed; they stay due (no new debounce), merged with newer ones."""
        if not items:
            return
        with self._lock:
            self._items.setdefault(layer, set()).update(items)
            self._first[layer] = float("-inf")
            self._last.setdefault(layer, float("-inf"))

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._items.values())


__all__ = ["Change", "DirtySet", "Sink"]

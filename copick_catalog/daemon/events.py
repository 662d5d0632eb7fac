"""From file events to dirty subtrees: the observer's handler and the set of subtrees waiting to be indexed.

File events are hints, never the truth (DESIGN §4): every event is mapped to the smallest subtree
whose re-scan captures it (:func:`copick_catalog.index.scopes.entity_scope`), the subtrees collect in
a :class:`DirtySet`, and after a short quiet period the daemon indexes them as scopes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from ..index.scopes import entity_scope

#: The events worth a rescan. No opened / closed-without-write events: with those in the mask the
#: observer's own directory walk floods the inotify queue on big trees (stack-notes, watchdog 7.1).
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


class Sink(Protocol):
    """What the handlers report to (the daemon)."""

    def mark_dirty(self, layer: str, prefix: str) -> None: ...

    def events_lost(self, why: str) -> None: ...


class DirtySet:
    """Subtrees waiting to be indexed, per layer, with the timing the debounce needs (thread-safe).

    Each layer keeps the monotonic time of its oldest pending change and of its newest event: a layer
    is due once it has been quiet for the debounce period, or has waited the maximum delay.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, set[str]] = {}
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def add(self, layer: str, prefix: str, *, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        with self._lock:
            self._items.setdefault(layer, set()).add(prefix)
            self._first[layer] = min(self._first.get(layer, now), now)
            self._last[layer] = max(self._last.get(layer, now), now)

    def layers(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def due_at(self, layer: str, debounce: float, max_delay: float) -> float | None:
        """When the layer's pending changes become due (monotonic), or None if there are none."""
        with self._lock:
            if layer not in self._items:
                return None
            return min(self._last[layer] + debounce, self._first[layer] + max_delay)

    def take(self, layer: str) -> set[str]:
        """Remove and return a layer's subtrees (events arriving meanwhile start a new set)."""
        with self._lock:
            self._first.pop(layer, None)
            self._last.pop(layer, None)
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


class EventHandler(FileSystemEventHandler):
    """Runs on the observer thread: map each event to a dirty subtree and wake the main loop."""

    def __init__(self, layer: str, base: str, watcher: Sink) -> None:
        self.layer = layer
        self.base = base.rstrip("/")
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path]
        if getattr(event, "dest_path", ""):
            paths.append(event.dest_path)
        for path in paths:
            rel = self._relative(os.fsdecode(path))
            if rel is None:
                continue
            scope = entity_scope(rel, event.is_directory)
            if scope is not None:
                self.watcher.mark_dirty(self.layer, scope)

    def _relative(self, path: str) -> str | None:
        if not path:
            return None
        if path == self.base:
            return ""
        if path.startswith(self.base + "/"):
            return path[len(self.base) + 1 :]
        return None


class OverflowSpy(logging.Handler):
    """watchdog rebuilds its watches after an inotify overflow but only *logs* that events were lost;
    this turns that log record into a full incremental index."""

    def __init__(self, watcher: Sink) -> None:
        super().__init__(level=logging.WARNING)
        self.watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage().lower()
        if "overflow" in msg or "unable to rebuild" in msg:
            self.watcher.events_lost(f"watchdog: {record.getMessage()}")


__all__ = ["EVENT_FILTER", "DirtySet", "EventHandler", "OverflowSpy", "Sink"]

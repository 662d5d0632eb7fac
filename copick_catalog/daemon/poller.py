"""Following the runs that inotify does not watch: list each in turn, report the ones that changed.

A polled run is listed exactly as the index lists it (:meth:`Root.walk` of its directory: names,
sizes, modification times, zarr metadata), reduced to a signature. A run whose signature differs
from the previous one is handed to the daemon as a dirty scope, so the index (which does the real
diff) runs only for runs that changed; an unchanged run costs one listing and no database work.

The signature is taken when a run *becomes* polled, before anything indexes it, so every later
change shows. A listing that contained something modified within the last two seconds is looked at
again on the next pass whatever its signature (git's "racily clean" rule: a second write within the
same timestamp tick and of the same size would otherwise look unchanged).

Passes are spread evenly over the poll interval (each run is listed about once per interval), in
small chunks so the event-driven updates never wait long for the thread, and the poller spends at
most half of the wall time listing: when a pass takes longer than the interval, freshness becomes
the pass time, and ``status`` shows it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..index import grammar
from ..index.roots import Root
from .events import Change, Sink

log = logging.getLogger(__name__)

RACY_WINDOW_S = 2.0
CHUNK = 32  # runs listed between two looks at the stop flag and the pace
DUTY = 0.5  # at most this share of wall time spent listing

Signature = tuple[int, bool]  # (hash of the listing, whether it held something modified just now)


def run_signature(root: Root, run: str, now: float | None = None) -> Signature:
    """What a run's directory holds, as the index sees it, reduced to a hash."""
    now = time.time() if now is None else now
    items = []
    racy = False
    for e in root.walk(under=f"{grammar.RUNS_DIR}/{run}"):
        items.append((e.path, e.fingerprint, e.is_dir, e.error))
        if e.mtime is not None and e.mtime >= now - RACY_WINDOW_S:
            racy = True
    items.sort()
    return hash(tuple(items)), racy


class Poller:
    """The polling thread. ``source`` lists what to poll ((layer, root, run), in order), ``is_polled``
    says whether a run still is, ``promote`` watches polled runs again when room frees up."""

    def __init__(self, sink: Sink, every: float) -> None:
        self.sink = sink
        self.every = every
        self.source: Callable[[], list[tuple[str, Root, str]]] = list
        self.is_polled: Callable[[str, str], bool] = lambda _layer, _run: False
        self.promote: Callable[[], int] = lambda: 0
        self._sigs: dict[tuple[str, str], Signature] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="copick-catalog-poll", daemon=True)
        self.passes = 0
        self.last_pass_s: float | None = None
        self.listing_s = 0.0  # wall time spent listing since the start
        self.runs_listed = 0
        self.changes = 0

    # ------------------------------------------------------------------ the runs

    def adopt(self, layer: str, root: Root, run: str) -> None:
        """A run becomes polled: record its listing now, so anything after this shows as a change."""
        sig = self._signature(root, run)
        with self._lock:
            self._sigs[(layer, run)] = sig

    def forget(self, layer: str, run: str) -> None:
        with self._lock:
            self._sigs.pop((layer, run), None)

    def reset(self) -> None:
        """Forget every run (the watches start over and adopt their polled runs afresh)."""
        with self._lock:
            self._sigs.clear()

    def check(self, layer: str, root: Root, run: str) -> bool:
        """List one polled run; report it to the daemon if it changed (or was racy last time)."""
        new = self._signature(root, run)
        with self._lock:
            old = self._sigs.get((layer, run))
            if old is None:  # no longer polled (watched again, or gone) since the list was taken
                return False
            self._sigs[(layer, run)] = new
        changed = old[1] or old[0] != new[0]
        if changed:
            self.changes += 1
            self.sink.mark_dirty(layer, f"{grammar.RUNS_DIR}/{run}", Change.DONE)
        return changed

    def _signature(self, root: Root, run: str) -> Signature:
        try:
            return run_signature(root, run)
        except Exception as exc:  # an unreadable run is the index's to report; look again next pass
            log.debug("listing polled run %s of %s failed: %s", run, root.layer, exc)
            return 0, True

    # ------------------------------------------------------------------ the thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._pass()
            except Exception:
                log.exception("polling failed; trying again in a second")
                self._stop.wait(1.0)

    def _pass(self) -> None:
        self.promote()
        todo = self.source()
        if not todo:
            self._sleep(min(self.every, 1.0))
            return
        t0 = time.monotonic()
        pace = self.every / len(todo)
        busy = 0.0
        for i in range(0, len(todo), CHUNK):
            part = todo[i : i + CHUNK]
            w0 = time.monotonic()
            for layer, root, run in part:
                if self.is_polled(layer, run):
                    self.check(layer, root, run)
            work = time.monotonic() - w0
            busy += work
            self.listing_s += work
            self.runs_listed += len(part)
            next_at = max(t0 + pace * (i + len(part)), time.monotonic() + work * (1 - DUTY) / DUTY)
            if self._sleep(next_at - time.monotonic()):
                return
        took = time.monotonic() - t0
        if self.passes == 0:
            log.info(
                "first polling pass: %d runs listed in %.2f s of %.1f s%s",
                len(todo),
                busy,
                took,
                "" if took <= self.every * 1.2 else f" (slower than --poll {self.every:.0f} s: listing is the limit)",
            )
        self.passes += 1
        self.last_pass_s = took

    def _sleep(self, seconds: float) -> bool:
        """Wait (True if stopped meanwhile), offering room to polled runs every second: when watched runs
        are deleted, runs waiting for a watch get one within a second, not a poll interval later."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self._stop.is_set()
            if self._stop.wait(min(left, 1.0)):
                return True
            self.promote()

    def describe(self) -> dict[str, Any]:
        return {
            "every_s": self.every,
            "passes": self.passes,
            "last_pass_s": None if self.last_pass_s is None else round(self.last_pass_s, 2),
            "listing_s": round(self.listing_s, 3),
            "runs_listed": self.runs_listed,
            "changes_found": self.changes,
        }


__all__ = ["RACY_WINDOW_S", "Poller", "Signature", "run_signature"]

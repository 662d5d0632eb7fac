"""The watch daemon: keep a catalog current while people and tools write files.

File events are hints, never the truth (DESIGN §4): every event is mapped to the smallest subtree
whose re-scan captures it (a pick file -> its ``Picks`` directory, anything inside a ``*.zarr``
group -> the group, a deleted or moved directory -> that directory), the subtrees collect in a
*dirty set*, and after a short quiet period (debounce, with a bounded maximum delay so a long zarr
write still shows up) the same incremental indexer that cron runs is called with those subtrees as
scopes. Whatever the events missed, the diff decides.

* Local roots are watched with watchdog (inotify) using an explicit event filter: with the default
  mask the observer's own walk of a 2,000-run tree overflows the inotify queue and events are lost.
* Roots without file events (S3 and other object stores, local paths on NFS/SMB/FUSE) are rescanned
  incrementally every ``poll`` seconds.
* Anything that means events may have been lost (a queue overflow, a dead observer or emitter, a
  root that vanished or was re-created) marks the whole layer dirty: a full incremental index.
* Failures (database unreachable, a root unmounted, the lock held by a long cron run) keep the dirty
  set and retry with back-off, so the daemon catches up instead of dying.
* SIGTERM/SIGINT stop it within a second: an index in progress gets a short grace period, then is
  cancelled at its next safe point (between two write batches, each its own transaction), so
  nothing is left half-written and the next start completes the job.

The daemon announces itself in a state file (:mod:`copick_catalog.daemon.state`) and, on PostgreSQL,
an advisory lock every machine can see (:mod:`copick_catalog.daemon.claim`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from ..catalog.catalog import Catalog
from ..catalog.db import is_network_fs, is_sqlite
from ..catalog.schema import IndexErrorRow
from ..errors import CatalogError, IndexCancelled, LockBusyError
from ..index.indexer import IndexReport
from ..index.roots import Root
from ..index.scopes import MAX_SCOPES_PER_LAYER, entity_scope, minimal
from .claim import DaemonClaim
from .events import EVENT_FILTER, DirtySet, EventHandler, OverflowSpy
from .state import StateFile, state_path

log = logging.getLogger(__name__)

_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


@dataclass
class WatchOptions:
    """Tuning knobs of the daemon; the defaults suit an interactive lab (sub-second updates)."""

    poll: float = 30.0  # seconds between incremental rescans of roots without file events
    debounce: float = 0.25  # quiet period that ends a burst of events
    max_delay: float = 2.0  # a burst that never goes quiet is still indexed this often
    check_every: float = 1.0  # how often roots are checked for having vanished or been re-created
    heartbeat: float = 5.0  # how often the state file is refreshed
    parse_retry_window: float = 10.0  # a parse error on a file this fresh is retried ...
    parse_retries: int = 3  # ... this many times
    lock_timeout: float = 0.5  # wait this long for the project lock before trying again later
    min_backoff: float = 0.5
    max_backoff: float = 30.0
    stop_grace: float = 0.2  # on SIGTERM, let a running index finish for this long, then cancel it


# ------------------------------------------------------------------------------------------
# the daemon


@dataclass
class _RootWatch:
    """How one layer is followed: inotify (with the watch and the inode it is armed on) or polling."""

    layer: str
    root: Root
    mode: str  # "inotify" or "poll"
    watch: ObservedWatch | None = None
    ident: tuple[int, int] | None = None
    next_poll: float = 0.0


@dataclass
class _Backoff:
    delay: float = 0.0
    until: float = 0.0


@dataclass
class WatchStats:
    """Counters for the state file, ``status`` and tests."""

    updates: int = 0
    failures: int = 0
    parse_retries: int = 0
    events_lost: int = 0
    rearms: int = 0
    last_update_at: float | None = None
    last_report: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None


class Watcher:
    """Follow one catalog's roots and index what changes. Create, then :meth:`run` (blocks)."""

    def __init__(self, catalog: Catalog, options: WatchOptions | None = None) -> None:
        self.catalog = catalog
        self.opts = options or WatchOptions()
        self.dirty = DirtySet()
        self.stats = WatchStats()
        self.state = StateFile(state_path(catalog.engine, catalog.db_url, catalog.project_id))
        self.started_at = time.time()
        self.ready = False
        self._initial = set(catalog.roots)  # layers whose first full index has not succeeded yet
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._observer: BaseObserver | None = None
        self._roots: dict[str, _RootWatch] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._retry_due: dict[tuple[str, str], float] = {}  # (layer, scope) -> monotonic due time
        self._retry_count: dict[tuple[str, str], tuple[str, int]] = {}  # (layer, path) -> (fingerprint, n)
        self._lost = threading.Event()
        self._stop_at: float | None = None  # monotonic time of the first stop request
        self._claim = (
            None
            if is_sqlite(catalog.engine)
            else DaemonClaim(catalog.engine, catalog.project_id, socket.gethostname(), os.getpid())
        )
        self._next_check = 0.0
        self._spy = OverflowSpy(self)

    # ------------------------------------------------------------------ public

    def mark_dirty(self, layer: str, prefix: str) -> None:
        """Queue a subtree for indexing (called from observer threads)."""
        self.dirty.add(layer, prefix)
        self._wake.set()

    def events_lost(self, why: str) -> None:
        """Something dropped events: fall back to a full incremental index of every watched layer."""
        log.warning("%s; rescanning the watched roots", why)
        self.stats.events_lost += 1
        self._lost.set()
        self._wake.set()

    def stop(self) -> None:
        """Ask the daemon to stop (thread- and signal-safe); a running index gets ``stop_grace`` seconds."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        """Index everything once, then follow changes until :meth:`stop` or SIGTERM/SIGINT."""
        self.state.acquire()
        if self._claim is not None:
            try:
                self._claim.acquire()  # one daemon per project across machines, not just on this host
            except BaseException:
                self.state.release()
                raise
        restore = self._install_signals()
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="copick-catalog-heartbeat", daemon=True)
        try:
            self._write_state()
            heartbeat.start()
            self._start_observer()
            for layer in self.catalog.roots:
                self.mark_dirty(layer, "")  # the initial full incremental index
            self._loop()
        except KeyboardInterrupt:
            if not self._stop.is_set():
                raise
        finally:
            self._stop.set()
            self._stop_observer()
            heartbeat.join(timeout=1.0)
            if self._claim is not None:
                self._claim.release()
            self._write_state(running=False)
            self.state.release()
            restore()
        log.info("watch stopped")

    # ------------------------------------------------------------------ main loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # a daemon keeps going; the failed step is retried on the next turn
                log.exception("unexpected error in the watch loop; continuing")
                self._stop.wait(1.0)

    def _step(self) -> None:
        """One turn of the loop: notice lost events and root changes, index what is due, or sleep."""
        now = time.monotonic()
        if self._lost.is_set():
            self._lost.clear()
            for layer in self._roots:
                self.dirty.add(layer, "", at=now - self.opts.max_delay)
        if now >= self._next_check:
            self._check_roots(now)
            self._next_check = now + self.opts.check_every
        self._promote_retries(now)
        due = self._due_layers(now)
        if due:
            for layer in due:
                if self._stop.is_set():
                    break
                self._flush(layer)
            return
        self._wake.wait(self._next_wake(now))
        self._wake.clear()

    def _due_layers(self, now: float) -> list[str]:
        return [layer for layer in self.dirty.layers() if now >= self._due_at(layer)]

    def _due_at(self, layer: str) -> float:
        due = self.dirty.due_at(layer, self.opts.debounce, self.opts.max_delay)
        if due is None:
            return float("inf")
        return max(due, self._backoff.get(layer, _Backoff()).until)

    def _next_wake(self, now: float) -> float:
        times = [self._next_check, *(self._due_at(layer) for layer in self.dirty.layers())]
        times.extend(self._retry_due.values())
        times.extend(rw.next_poll for rw in self._roots.values() if rw.mode == "poll")
        return max(0.0, min(times) - now)

    # ------------------------------------------------------------------ indexing

    def _flush(self, layer: str) -> None:
        """Index a layer's dirty subtrees; on failure keep them and back off."""
        items = self.dirty.take(layer)
        if not items:
            return
        scopes = [(layer, p) for p in minimal(items, MAX_SCOPES_PER_LAYER)]
        wall0 = time.time()
        try:
            report = self.catalog.index(
                trigger="watch", scopes=scopes, wait=True, timeout=self.opts.lock_timeout, cancel=self._cancel_requested
            )
        except IndexCancelled:
            # Stopped between two batches after the grace period; the next start rescans the rest.
            self.dirty.restore(layer, items)
            log.info("%s: index interrupted to stop; the next start completes it", layer)
            return
        except LockBusyError:
            # Another run (cron, a user) is working; it may take long, so ask again soon, not later.
            self.dirty.restore(layer, items)
            self._backoff[layer] = _Backoff(0.0, time.monotonic() + 0.2)
            return
        except Exception as exc:  # a daemon must outlive any one failed batch
            self.dirty.restore(layer, items)
            self._failed(layer, exc)
            self._write_state()
            return
        self._backoff.pop(layer, None)
        self._succeeded(layer, scopes, report, wall0)
        self._write_state()  # status and tests see each update at once, not at the next heartbeat

    def _failed(self, layer: str, exc: Exception) -> None:
        b = self._backoff.get(layer, _Backoff())
        b.delay = min(self.opts.max_backoff, max(self.opts.min_backoff, b.delay * 2))
        b.until = time.monotonic() + b.delay
        self._backoff[layer] = b
        self.stats.failures += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        if isinstance(exc, CatalogError | sa.exc.OperationalError | OSError):
            log.warning(
                "indexing %s failed (%s); keeping the changes and retrying in %.1f s",
                layer,
                self.stats.last_error,
                b.delay,
            )
        else:
            log.exception("indexing %s failed unexpectedly; retrying in %.1f s", layer, b.delay)

    def _succeeded(self, layer: str, scopes: list[tuple[str, str]], report: IndexReport, wall0: float) -> None:
        self.stats.updates += 1
        self.stats.last_update_at = time.time()
        self.stats.last_report = {"layer": layer, "scopes": len(scopes), **report.as_dict()}
        self.stats.last_error = None
        if not report.nothing_changed or report.errors:
            log.info(
                "%s: %d subtree(s) indexed in %.3f s: +%d ~%d -%d, %d error(s)",
                layer,
                len(scopes),
                report.duration_s,
                report.added,
                report.changed,
                report.removed,
                report.errors,
            )
        if any(prefix == "" for _layer, prefix in scopes):
            self._initial.discard(layer)
        if not self.ready and not self._initial:
            self.ready = True
            log.info("initial index done; watching for changes")
        try:
            self._schedule_parse_retries(layer, wall0)
        except (sa.exc.SQLAlchemyError, OSError) as exc:  # the database or root went away just now
            log.warning("could not check %s for fresh parse errors: %s", layer, exc)

    def _schedule_parse_retries(self, layer: str, since: float) -> None:
        """Look again, a little later, at freshly modified files that just failed to parse.

        copick writes pick JSON in place; the indexer already re-reads such a file once, but a slow
        writer can still be mid-way. The writer's next event usually triggers another pass; this
        covers writers whose last event came before the content was complete.
        """
        with self.catalog.engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.select(IndexErrorRow.path).where(
                        IndexErrorRow.project_id == self.catalog.project_id,
                        IndexErrorRow.layer == layer,
                        IndexErrorRow.kind == "parse",
                        IndexErrorRow.last_seen >= since,
                    )
                )
                .scalars()
                .all()
            )
        root = self.catalog.roots[layer]
        now_wall, now = time.time(), time.monotonic()
        for path in rows:
            entry = root.fingerprint(path)
            if entry is None or entry.mtime is None or now_wall - entry.mtime > self.opts.parse_retry_window:
                self._retry_count.pop((layer, path), None)
                continue
            fp, n = self._retry_count.get((layer, path), (entry.fingerprint, 0))
            n = n if fp == entry.fingerprint else 0
            if n >= self.opts.parse_retries:
                continue
            self._retry_count[(layer, path)] = (entry.fingerprint, n + 1)
            scope = entity_scope(path, entry.is_dir)
            if scope is not None:
                self._retry_due[(layer, scope)] = now + 1.0 * (n + 1)
        if len(self._retry_count) > 10_000:  # forget old bookkeeping; it only caps retries
            self._retry_count.clear()

    def _promote_retries(self, now: float) -> None:
        for key, due in list(self._retry_due.items()):
            if now >= due:
                del self._retry_due[key]
                self.stats.parse_retries += 1
                self.dirty.add(*key, at=now - self.opts.max_delay)

    # ------------------------------------------------------------------ roots and the observer

    def _start_observer(self) -> None:
        self._observer = Observer()
        self._observer.start()
        for name in _WATCHDOG_LOGGERS:
            lg = logging.getLogger(name)
            lg.addHandler(self._spy)
            if lg.getEffectiveLevel() > logging.WARNING:
                lg.setLevel(logging.WARNING)
        for layer, root in self.catalog.roots.items():
            mode = "poll"
            if root.local_path is not None and not _on_network_fs(root.local_path):
                mode = "inotify"
            self._roots[layer] = _RootWatch(layer, root, mode)
            if mode == "poll":
                log.info("%s root %s: no file events there; rescanning every %.0f s", layer, root.url, self.opts.poll)
        self._check_roots(time.monotonic())

    def _stop_observer(self) -> None:
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).removeHandler(self._spy)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=0.5)

    def _check_roots(self, now: float) -> None:
        """Re-arm watches on roots that vanished, came back, or whose emitter died; poll the others."""
        if self._observer is not None and not self._observer.is_alive():
            self._replace_observer()
        for rw in self._roots.values():
            if rw.mode == "poll":
                if now >= rw.next_poll:
                    rw.next_poll = now + self.opts.poll
                    self.dirty.add(rw.layer, "", at=now - self.opts.max_delay)
                continue
            ident = _dir_ident(rw.root.local_path)
            if ident == rw.ident and (rw.watch is None or self._emitter_alive(rw.watch)):
                continue
            self._rearm(rw, ident)

    def _rearm(self, rw: _RootWatch, ident: tuple[int, int] | None) -> None:
        assert self._observer is not None and rw.root.local_path is not None
        if rw.watch is not None:
            with contextlib.suppress(Exception):
                self._observer.unschedule(rw.watch)
            rw.watch = None
            self.stats.rearms += 1
        rw.ident = ident
        if ident is None:
            log.warning("%s root %s is missing; waiting for it to come back", rw.layer, rw.root.url)
        else:
            # Watch the real directory: inotify does not follow a symlinked root (watchdog adds
            # IN_DONT_FOLLOW), and events then arrive under the resolved path.
            path = os.path.realpath(rw.root.local_path)
            try:
                rw.watch = self._observer.schedule(
                    EventHandler(rw.layer, path, self), path, recursive=True, event_filter=EVENT_FILTER
                )
            except FileNotFoundError:
                rw.ident = None  # gone again between the check and the watch; the next check retries
                return
            except OSError as exc:
                rw.mode = "poll"
                log.warning(
                    "cannot watch %s (%s; raise fs.inotify.max_user_watches?); rescanning it every %.0f s instead",
                    path,
                    exc,
                    self.opts.poll,
                )
            else:
                log.info("watching %s root %s", rw.layer, rw.root.url)
        self._write_state()  # status shows a missing root at once
        if rw.ident is not None:
            # A new or re-created root: whatever happened while unwatched, a full pass finds it.
            # (A missing root is not indexed: the indexer refuses to empty the catalog for an
            # unmounted root, so there is nothing to learn until it is back.)
            self.dirty.add(rw.layer, "", at=time.monotonic() - self.opts.max_delay)
            self._backoff.pop(rw.layer, None)
            self._wake.set()

    def _emitter_alive(self, watch: ObservedWatch) -> bool:
        assert self._observer is not None
        return any(e.watch == watch and e.is_alive() for e in self._observer.emitters)

    def _replace_observer(self) -> None:
        log.warning("the file observer thread died; restarting it and rescanning")
        with contextlib.suppress(Exception):
            self._observer.stop()  # type: ignore[union-attr]
        self._observer = Observer()
        self._observer.start()
        for rw in self._roots.values():
            rw.watch, rw.ident = None, None
        self.events_lost("observer restarted")

    # ------------------------------------------------------------------ signals, heartbeat

    def _install_signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in old.items():
                signal.signal(sig, handler)

        return restore

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Only flags are set here: raising from a signal handler could land inside a transaction.
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.stop()

    def _cancel_requested(self) -> bool:
        """Polled by the indexer between batches: stop once the grace period after a stop request is over."""
        return self._stop_at is not None and time.monotonic() - self._stop_at >= self.opts.stop_grace

    def _heartbeat_loop(self) -> None:
        claimed = True
        while not self._stop.wait(self.opts.heartbeat):
            self._write_state()
            if self._claim is not None:
                held = self._claim.keep()
                if held != claimed:
                    log.log(
                        logging.INFO if held else logging.WARNING,
                        "daemon lock on the database %s",
                        "held again"
                        if held
                        else "lost (database unreachable, or another daemon took over); retrying every heartbeat",
                    )
                    claimed = held

    def _write_state(self, running: bool = True) -> None:
        """Refresh the state file; a full disk costs the heartbeat, never the daemon."""
        try:
            self.state.write(self.describe(running))
        except OSError as exc:
            log.warning("cannot write the state file %s: %s", self.state.path, exc)

    def describe(self, running: bool = True) -> dict[str, Any]:
        """What the state file says: who runs, since when, how it is doing."""
        s = self.stats
        return {
            "running": running,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "config": str(self.catalog.config_path),
            "db": self.catalog.db_url,
            "project_id": self.catalog.project_id,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            "heartbeat_every_s": self.opts.heartbeat,
            "ready": self.ready,
            "pending": len(self.dirty),
            "roots": {
                rw.layer: ("missing" if rw.mode == "inotify" and rw.ident is None else rw.mode)
                for rw in self._roots.values()
            },
            "updates": s.updates,
            "failures": s.failures,
            "parse_retries": s.parse_retries,
            "events_lost": s.events_lost,
            "rearms": s.rearms,
            "last_update_at": s.last_update_at,
            "last_report": s.last_report,
            "last_error": s.last_error,
        }


def _dir_ident(path: Path | None) -> tuple[int, int] | None:
    """(device, inode) of a directory, or None: a re-created root has a new inode."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if os.path.isdir(path) else None


def _on_network_fs(path: Path) -> bool:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return is_network_fs(probe)


# ------------------------------------------------------------------------------------------
# opening with retries, and status


def open_with_retry(
    config: str | os.PathLike[str], db: str | None, stop: threading.Event | None = None, max_backoff: float = 30.0
) -> Catalog | None:
    """``Catalog.open``, retried with back-off while the database is unreachable.

    A daemon started at boot may come up before its database server; errors a user must fix
    (a broken config, a newer schema) are raised at once. Returns None if ``stop`` was set.
    """
    delay = 0.5
    while True:
        try:
            return Catalog.open(config, db=db)
        except CatalogError as exc:
            if not _looks_transient(exc):
                raise
            log.warning("%s; retrying in %.1f s", exc, delay)
        if stop is not None and stop.wait(delay):
            return None
        if stop is None:
            time.sleep(delay)
        delay = min(max_backoff, delay * 2)


def _looks_transient(exc: CatalogError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("connection", "could not connect", "timeout", "unable to open", "locked"))


def run_watch(config: str | os.PathLike[str], db: str | None = None, options: WatchOptions | None = None) -> None:
    """Open the catalog (waiting for the database if needed) and watch until stopped."""
    stop = threading.Event()
    handlers = _early_stop_signals(stop)
    try:
        cat = open_with_retry(config, db, stop)
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    if cat is None:
        return
    with cat:
        if stop.is_set():
            return
        Watcher(cat, options).run()


def _early_stop_signals(stop: threading.Event) -> dict[int, Any]:
    """Let SIGTERM end the wait for an unreachable database cleanly too."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}

"""The watch daemon: keep a catalog current while people and tools write files.

File events are hints, never the truth (DESIGN §4): every event is mapped to the smallest subtree
whose re-scan captures it (a pick file -> its ``Picks`` directory, anything inside a ``*.zarr``
group -> the group, a deleted or moved directory -> that directory), the subtrees collect in a
*dirty set*, and once a layer is due (:mod:`.events`: 20 ms after a lone complete change, else after
a quiet period with a bounded maximum delay, so bursts become few index runs) the same incremental
indexer that cron runs is called with those subtrees as scopes. Whatever the events missed, the diff
decides.

* Local roots are watched with inotify (:mod:`.watches`, one instance, one watch per directory the
  index reads) within a budget under the kernel's per-user limit; runs past the budget are polled
  (:mod:`.poller`: listed in turn, indexed only when their listing changed), with one warning.
* Roots without file events (S3 and other object stores, local paths on NFS/SMB/FUSE, and every
  local root where there is no inotify, i.e. off Linux: one warning says so) are rescanned
  incrementally every ``poll`` seconds.
* Anything that means events may have been lost (a queue overflow, a dead reader thread, a root that
  vanished or was re-created) marks the whole layer dirty: a full incremental index.
* Failures (database unreachable, a root unmounted, the lock held by a long cron run) keep the dirty
  set and retry with back-off, so the daemon catches up instead of dying.
* SIGTERM/SIGINT stop it within a second: an index in progress gets a short grace period, then is
  cancelled at its next safe point (between two write batches, each its own transaction), so
  nothing is left half-written and the next start completes the job.

The daemon announces itself in a state file (:mod:`copick_catalog.daemon.state`) and, on PostgreSQL,
an advisory lock every machine can see (:mod:`copick_catalog.daemon.claim`).
"""

from __future__ import annotations

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

from ..catalog.catalog import Catalog
from ..catalog.db import is_network_fs, is_sqlite
from ..catalog.schema import IndexErrorRow
from ..errors import CatalogError, IndexCancelled, LockBusyError
from ..index.indexer import IndexReport
from ..index.roots import Root
from ..index.scopes import MAX_SCOPES_PER_LAYER, entity_scope, minimal
from . import inotify
from .claim import DaemonClaim
from .events import Change, DirtySet
from .poller import Poller
from .state import StateFile, state_path
from .watches import WatchBudget, Watches

log = logging.getLogger(__name__)


@dataclass
class WatchOptions:
    """Tuning knobs of the daemon; the defaults suit an interactive lab (a lone save indexed in tens of ms)."""

    poll: float = 30.0  # seconds between rescans of roots without file events, and of each polled run
    settle: float = 0.02  # a lone complete change on a quiet layer is indexed after this long
    debounce: float = 0.25  # quiet period that ends a burst of events (and anything still being written)
    max_delay: float = 2.0  # a burst that never goes quiet is still indexed this often
    max_watches: int | None = None  # cap on inotify watches (default: the kernel's limit less headroom)
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
    """How one layer is followed: by inotify (armed on a directory inode) or by rescans (no events there)."""

    layer: str
    root: Root
    mode: str  # "inotify" or "poll"
    ident: tuple[int, int] | None = None  # (device, inode) the watches are armed on; None: not armed
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
        self._watches: Watches | None = None
        self._poller = Poller(self, self.opts.poll)
        self._roots: dict[str, _RootWatch] = {}
        self._flushed_at: dict[str, float] = {}  # layer -> monotonic end of its last index run
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
        self._roots_moved: set[str] = set()  # layers whose root the inotify thread saw go away

    # ------------------------------------------------------------------ public

    def mark_dirty(self, layer: str, prefix: str, change: Change = Change.DONE, path: str | None = None) -> None:
        """Queue a subtree for indexing (called from the inotify and polling threads)."""
        self.dirty.add(layer, prefix, change=change, path=path)
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
            self._start_watching()
            for layer in self.catalog.roots:
                self.mark_dirty(layer, "")  # the initial full incremental index
            self._loop()
        except KeyboardInterrupt:
            if not self._stop.is_set():
                raise
        finally:
            self._stop.set()
            self._stop_watching()
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
        due = self.dirty.due_at(
            layer,
            settle=self.opts.settle,
            debounce=self.opts.debounce,
            max_delay=self.opts.max_delay,
            hot_until=self._flushed_at.get(layer, float("-inf")) + self.opts.debounce,
        )
        if due is None:
            return float("inf")
        return max(due, self._backoff.get(layer, _Backoff()).until)

    def _next_wake(self, now: float) -> float:
        times = [self._next_check, *(self._due_at(layer) for layer in self.dirty.layers())]
        times.extend(self._retry_due.values())
        times.extend(rw.next_poll for rw in self._roots.values() if self._full_poll(rw))
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
        finally:
            self._flushed_at[layer] = time.monotonic()  # changes from now until a debounce later are a burst
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

    # ------------------------------------------------------------------ roots, watches and polling

    def _start_watching(self) -> None:
        no_inotify = inotify.unavailable()
        unwatchable: list[str] = []  # local roots that would be watched where inotify exists
        for layer, root in self.catalog.roots.items():
            local = root.local_path is not None and not _on_network_fs(root.local_path)
            mode = "inotify" if local and no_inotify is None else "poll"
            self._roots[layer] = _RootWatch(layer, root, mode)
            if local and no_inotify is not None:
                unwatchable.append(f"{layer} {root.url}")
            elif mode == "poll":
                log.info("%s root %s: no file events there; rescanning every %.0f s", layer, root.url, self.opts.poll)
        if unwatchable:
            log.warning(
                "no file events here: %s; rescanning the local roots (%s) every %g s instead (--poll)",
                no_inotify,
                ", ".join(unwatchable),
                self.opts.poll,
            )
        if any(rw.mode == "inotify" for rw in self._roots.values()):
            self._watches = self._new_watches()
        self._poller.start()
        self._check_roots(time.monotonic())

    def _new_watches(self) -> Watches | None:
        """An inotify instance with its reader thread, or None (every local root then polled) if the
        kernel refuses one (``fs.inotify.max_user_instances`` reached)."""
        try:
            watches = Watches(
                self, WatchBudget.plan(self.opts.max_watches), self.opts.poll, self._poller.adopt, self._poller.forget
            )
        except OSError as exc:
            log.warning("%s; rescanning the local roots every %.0f s instead", exc, self.opts.poll)
            for rw in self._roots.values():
                rw.mode = "poll"
            return None
        self._poller.source = watches.polled_runs
        self._poller.is_polled = watches.is_polled
        self._poller.promote = watches.promote
        watches.start()
        return watches

    def _stop_watching(self) -> None:
        self._poller.stop()
        if self._watches is not None:
            self._watches.stop()

    def _full_poll(self, rw: _RootWatch) -> bool:
        """Whether the whole layer is rescanned every poll: no file events there, or no watch fits even
        its top directories."""
        return rw.mode == "poll" or (self._watches is not None and self._watches.mode(rw.layer) == "poll")

    def _check_roots(self, now: float) -> None:
        """Arm roots that appeared, re-arm roots that were re-created or whose reader died, poll the rest."""
        if self._watches is not None and not self._watches.alive():
            self._restart_watches()
        fresh: dict[str, Root] = {}
        changed = False
        for rw in self._roots.values():
            if self._full_poll(rw) and now >= rw.next_poll:
                rw.next_poll = now + self.opts.poll
                self.dirty.add(rw.layer, "", at=now - self.opts.max_delay)
            if rw.mode == "poll" or self._watches is None:
                continue
            ident = _dir_ident(rw.root.local_path)
            moved = rw.layer in self._roots_moved
            self._roots_moved.discard(rw.layer)
            if ident == rw.ident and not moved:
                continue
            changed = True
            if rw.ident is not None:
                self.stats.rearms += 1
            rw.ident = ident
            if ident is None:
                self._watches.disarm(rw.layer)
                log.warning("%s root %s is missing; waiting for it to come back", rw.layer, rw.root.url)
            else:
                fresh[rw.layer] = rw.root
        if fresh and self._watches is not None:
            self._watches.arm(fresh)  # takes the polled runs' listings before the index below reads them
            for layer, root in fresh.items():
                log.info("watching %s root %s (%s)", layer, root.url, self._watches.mode(layer))
                # A new or re-created root: whatever happened while unwatched, a full pass finds it.
                # (A missing root is not indexed: the indexer refuses to empty the catalog for an
                # unmounted root, so there is nothing to learn until it is back.)
                self.dirty.add(layer, "", at=time.monotonic() - self.opts.max_delay)
                self._backoff.pop(layer, None)
            self._wake.set()
        if changed:
            self._write_state()  # status shows a missing or re-armed root at once

    def root_moved(self, layer: str) -> None:
        """A root directory was moved, deleted or unmounted (its watches are gone): check it now."""
        self._roots_moved.add(layer)
        self._next_check = 0.0
        self._wake.set()

    def _restart_watches(self) -> None:
        log.warning("the inotify reader thread died; starting over and rescanning")
        if self._watches is not None:
            self._watches.stop()
        self._poller.reset()
        for rw in self._roots.values():
            rw.ident = None
        self._watches = self._new_watches()
        self.events_lost("inotify reader restarted")

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
            "roots": {rw.layer: self._mode(rw) for rw in self._roots.values()},
            "watching": self._watching(),
            "updates": s.updates,
            "failures": s.failures,
            "parse_retries": s.parse_retries,
            "events_lost": s.events_lost,
            "rearms": s.rearms,
            "last_update_at": s.last_update_at,
            "last_report": s.last_report,
            "last_error": s.last_error,
        }

    def _mode(self, rw: _RootWatch) -> str:
        """How a layer is followed: inotify, mixed (some runs polled), poll, or missing."""
        if rw.mode == "poll":
            return "poll"
        mode = self._watches.mode(rw.layer) if self._watches is not None and rw.ident is not None else None
        return mode or "missing"

    def _watching(self) -> dict[str, Any] | None:
        """The inotify budget and use, per layer the runs watched and polled, and how polling keeps up."""
        if self._watches is None:
            return None
        return {**self._watches.describe(), "poll": self._poller.describe()}


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

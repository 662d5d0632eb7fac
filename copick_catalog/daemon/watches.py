"""Which directories of the local roots are watched with inotify, within a budget; which runs are polled.

The kernel caps inotify watches per user (``fs.inotify.max_user_watches``), and the daemon needs one
per directory the index reads: a root, ``ExperimentRuns``, and per run its directory, ``Picks``,
``Meshes``, voxel spacings, zarr groups and their arrays (~5 a run in the sample project; chunk
directories deeper inside a group are never watched, nothing in them changes the catalog). Past the
budget the daemon degrades on purpose instead of giving up on a whole root:

* the structure of every root (the root, ``ExperimentRuns``, ``Objects``, ``ParticleMrcs``) is
  watched first, so new and removed runs are always seen at once;
* then whole runs, overlay before static (people write to the overlay; copick never writes static)
  and newest first, as long as they fit, keeping a small reserve so watched runs can grow;
* every other run is *polled*: :mod:`.poller` lists it in turn and reports it when its listing
  changed. A run is always entirely watched or entirely polled, never half of each.

New runs are watched while the budget allows, polled after; a watched run that grows past the budget
becomes polled; polled runs are watched again when room frees up. One warning says, once, how many
runs are watched and polled, how often, and how to raise the limit. Events are read on one thread,
mapped to entity scopes (:func:`copick_catalog.index.scopes.entity_scope`) and handed to the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..index import grammar
from ..index.roots import Root
from ..index.scopes import entity_scope
from . import inotify as ino
from .events import Change, Sink

log = logging.getLogger(__name__)

RUNS = grammar.RUNS_DIR
#: Part of the budget that placing runs leaves free, so watched runs can grow (new directories in them).
RESERVE_FRACTION = 0.02
#: Watches left to other programs of the same user when the budget comes from the kernel's limit.
HEADROOM_FRACTION = 0.10
MIN_HEADROOM = 1024
#: Order in which layers get their runs watched: the overlay is where people and tools write.
LAYER_PRIORITY = ("overlay", "static")

SYSCTL_HINT = (
    "to watch everything, raise the limit (sudo sysctl fs.inotify.max_user_watches={limit}; the line "
    "fs.inotify.max_user_watches={limit} in /etc/sysctl.d/90-inotify.conf keeps it after a reboot; each watch "
    "costs the kernel up to ~1 KB) and restart the daemon"
)
#: Watches assumed for a run of a layer none of whose runs is watched (the sample's static runs hold 3).
DEFAULT_WATCHES_PER_RUN = 3.0


def limit_for(need: int) -> int:
    """A ``max_user_watches`` that leaves ``need`` watches to the daemon after headroom and reserve,
    rounded up to a multiple of 65,536."""
    want = need / (1 - HEADROOM_FRACTION) / (1 - RESERVE_FRACTION)
    step = 65536
    return max(step, -(-int(want) // step) * step)


# ------------------------------------------------------------------------------------------
# the budget


@dataclass(frozen=True)
class WatchBudget:
    """How many inotify watches the daemon allows itself, and why (for the log and ``status``)."""

    budget: int
    limit: int | None  # fs.inotify.max_user_watches, if readable
    cap: int | None  # --max-watches, if given

    @property
    def source(self) -> str:
        if self.limit is not None and (self.cap is None or self.cap >= self.limit - headroom(self.limit)):
            return f"fs.inotify.max_user_watches {self.limit:,} less {headroom(self.limit):,} left to other programs"
        if self.cap is not None:
            return f"--max-watches {self.cap:,}"
        return "fs.inotify.max_user_watches unreadable; assumed 8,192 less 1,024"

    @classmethod
    def plan(cls, cap: int | None = None) -> WatchBudget:
        """Read the kernel's limit, leave headroom for other programs, apply an explicit cap."""
        limit = ino.max_user_watches()
        budget = limit - headroom(limit) if limit is not None else 8192 - MIN_HEADROOM
        if cap is not None:
            budget = min(budget, cap)
        return cls(max(0, budget), limit, cap)


def headroom(limit: int) -> int:
    """Watches left to other programs: a tenth of the limit, at least 1,024, at most half."""
    return min(max(MIN_HEADROOM, int(limit * HEADROOM_FRACTION)), limit // 2)


def should_watch(parts: tuple[str, ...]) -> bool:
    """Whether a change in the directory at ``parts`` can change the catalog: the directories the
    index lists (:func:`grammar.descend`), zarr groups and their arrays (whose metadata fingerprints
    the group), nothing deeper."""
    if grammar.descend(parts):
        return True
    depth = grammar.group_depth(parts)
    return depth is not None and len(parts) <= depth + 1


class _NoRoom(Exception):
    """The budget (or the kernel's limit) has no room for the next directory."""


class _Shared(Exception):
    """A directory's inode is already watched under another name (a symlink or bind mount to it):
    inotify would report its changes under the first name only, so its run is polled."""


# ------------------------------------------------------------------------------------------
# one root


@dataclass
class _Layer:
    name: str
    root: Root
    base: str  # the real directory (inotify does not follow a symlinked root; events come for this path)
    struct: dict[str, int] = field(default_factory=dict)  # watched directories outside runs -> wd
    runs: dict[str, dict[str, int]] = field(default_factory=dict)  # watched run -> its directories -> wd
    polled: dict[str, None] = field(default_factory=dict)  # polled runs, in the order they became so
    full_poll: bool = False  # not even the structure fits: the whole root is rescanned every poll

    def dirs(self, run: str | None) -> dict[str, int]:
        return self.struct if run is None else self.runs.setdefault(run, {})

    @property
    def n_watches(self) -> int:
        return len(self.struct) + sum(len(d) for d in self.runs.values())

    @property
    def mode(self) -> str:
        if self.full_poll:
            return "poll"
        return "mixed" if self.polled else "inotify"


class Watches:
    """One inotify instance for every local root, its watches within a budget, and its reader thread.

    ``adopt(layer, root, run)`` is called when a run becomes polled, before it joins the polled set
    (the poller records the run's listing then, so anything later shows as a change); ``forget(layer,
    run)`` when it stops being polled. Both are :class:`.poller.Poller` methods.
    """

    def __init__(
        self,
        sink: Sink,
        budget: WatchBudget,
        poll_every: float,
        adopt: Callable[[str, Root, str], None],
        forget: Callable[[str, str], None],
    ) -> None:
        self.sink = sink
        self.budget = budget
        self.poll_every = poll_every
        self._adopt, self._forget = adopt, forget
        self.ino = ino.Inotify()
        self._lock = threading.RLock()
        self._layers: dict[str, _Layer] = {}
        self._by_wd: dict[int, tuple[_Layer, str, str | None]] = {}  # wd -> (layer, directory, run)
        self._hard_cap: int | None = None  # set when the kernel refused a watch: what we held then
        self._room_checked = 0  # room left when every polled run was last tried (see promote)
        self._warned = False
        self._placing = False  # arm() is placing runs: the warning waits for the final counts
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name="copick-catalog-inotify", daemon=True)
        self.overflows = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stopping.set()
        self.ino.wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        if not self._thread.is_alive():
            self.ino.close()

    # ------------------------------------------------------------------ placing

    def arm(self, roots: dict[str, Root]) -> None:
        """Watch the given roots (each with a local path): their structures first, then runs by priority."""
        with self._lock:
            self._placing = True
            try:
                placed = []
                for layer, root in roots.items():
                    self.disarm(layer)
                    assert root.local_path is not None
                    lay = _Layer(layer, root, os.path.realpath(root.local_path))
                    self._layers[layer] = lay
                    if self._arm_structure(lay):
                        placed.append(lay)
                for lay in sorted(placed, key=lambda lay: _priority(lay.name)):
                    for run in self._runs_on_disk(lay):
                        self._place_run(lay, run)
                self._room_checked = self._room()  # every run was just tried with this much room
            finally:
                self._placing = False
            self._warn_if_polling()

    def disarm(self, layer: str) -> None:
        """Drop every watch of a layer (its root vanished, or is armed afresh) and stop polling its runs."""
        with self._lock:
            lay = self._layers.pop(layer, None)
            if lay is None:
                return
            for wd in [*lay.struct.values(), *(wd for d in lay.runs.values() for wd in d.values())]:
                self._rm(wd)
            for run in lay.polled:
                self._forget(layer, run)

    def _arm_structure(self, lay: _Layer) -> bool:
        """Watch a root's own directories (never a run). False if even they do not fit: then the whole
        root is rescanned every poll, as a root without file events is."""
        try:
            self._arm_tree(lay, (), None, self._ceiling())
        except (_NoRoom, _Shared):
            for wd in lay.struct.values():
                self._rm(wd)
            lay.struct.clear()
            lay.full_poll = True
            log.warning(
                "no inotify watches left for even the directories of the %s root %s (budget %s: %s); "
                "rescanning all of it every %g s instead; %s",
                lay.name,
                lay.base,
                f"{self.budget.budget:,}",
                self.budget.source,
                self.poll_every,
                SYSCTL_HINT.format(limit=limit_for(max(self.used, self.budget.budget) * 2)),
            )
            return False
        return True

    def _runs_on_disk(self, lay: _Layer) -> list[str]:
        """Run directories, newest first (recently created or changed runs are where people work)."""
        found: list[tuple[float, str]] = []
        try:
            with os.scandir(os.path.join(lay.base, RUNS)) as it:
                for de in it:
                    if not grammar.descend((RUNS, de.name)):
                        continue
                    try:
                        if de.is_dir():
                            found.append((de.stat().st_mtime, de.name))
                    except OSError:
                        continue
        except OSError:
            return []
        found.sort(key=lambda t: (-t[0], t[1]))
        return [name for _, name in found]

    def _place_run(self, lay: _Layer, run: str) -> bool:
        """Watch a run if it fits (leaving the reserve), else poll it. Returns whether it is watched."""
        if run in lay.runs:
            return True
        try:
            self._arm_tree(lay, (RUNS, run), run, self._ceiling(for_runs=True))
        except (_NoRoom, _Shared):
            for wd in lay.runs.pop(run, {}).values():
                self._rm(wd)
            self._poll_run(lay, run)
            return False
        if run in lay.polled:
            del lay.polled[run]
            self._forget(lay.name, run)
        return True

    def _poll_run(self, lay: _Layer, run: str) -> None:
        if run not in lay.polled:
            self._adopt(lay.name, lay.root, run)  # its listing now, before anything can change unseen
            lay.polled[run] = None
        self._warn_if_polling()

    def _demote(self, lay: _Layer, run: str) -> None:
        """Poll a watched run (it grew past the budget), and look at it once now: events still queued
        for its watches are dropped with them."""
        for wd in lay.runs.pop(run, {}).values():
            self._rm(wd)
        self._poll_run(lay, run)
        self.sink.mark_dirty(lay.name, f"{RUNS}/{run}")

    def promote(self) -> int:
        """Watch polled runs again where room has freed up (watched runs deleted); returns how many.

        Cheap when nothing changed: a scan happens only when there is more room than at the end of the
        last one. The lock is taken per run, so events keep flowing during a long scan.
        """
        with self._lock:
            room = self._room()
            if room <= self._room_checked:
                self._room_checked = room  # less room now (runs grew): the next increase triggers a scan
                return 0
            layers = sorted(self._layers.values(), key=lambda la: _priority(la.name))
            candidates = [(lay, run) for lay in layers for run in lay.polled]
        n = 0
        for lay, run in candidates:
            with self._lock:
                if self._room() <= 0:
                    break
                if self._layers.get(lay.name) is not lay or run not in lay.polled:
                    continue
                if self._place_run(lay, run):
                    self.sink.mark_dirty(lay.name, f"{RUNS}/{run}")  # whatever changed since its last listing
                    n += 1
        with self._lock:
            self._room_checked = self._room()
        return n

    def _room(self) -> int:
        return self._ceiling(for_runs=True) - self.used

    def _arm_tree(self, lay: _Layer, start: tuple[str, ...], run: str | None, ceiling: int) -> None:
        """Watch ``start`` and every directory below it that :func:`should_watch`, top down.

        Each directory is watched *before* it is listed: a subdirectory created meanwhile is then
        either in the listing or reported by the new watch. Runs are left to :meth:`_place_run`.
        """
        dirs = lay.dirs(run)
        stack = [start]
        while stack:
            parts = stack.pop()
            rel = "/".join(parts)
            if rel not in dirs:
                if self.used >= ceiling:
                    raise _NoRoom(rel)
                if not self._add(lay, rel, run):
                    continue
            if run is None and parts == (RUNS,):
                continue  # its children are runs
            path = os.path.join(lay.base, rel) if rel else lay.base
            try:
                with os.scandir(path) as it:
                    for de in it:
                        child = (*parts, de.name)
                        try:
                            if should_watch(child) and de.is_dir():  # follows symlinks, as the index does
                                stack.append(child)
                        except OSError:
                            continue
            except OSError:
                continue  # gone meanwhile (its parent's event says so), or unlistable (an index error row)

    def _add(self, lay: _Layer, rel: str, run: str | None) -> bool:
        """Watch one directory; False if it is gone or cannot be watched (the index reports why)."""
        path = os.path.join(lay.base, rel) if rel else lay.base
        try:
            wd = self.ino.add_watch(path)
        except ino.LimitReached:
            self._hard_cap = self.used
            raise _NoRoom(rel) from None
        except OSError:
            return False
        other = self._by_wd.get(wd)
        if other is not None and (other[0] is not lay or other[1] != rel):
            if run is not None:
                raise _Shared(rel)
            return False  # structure reached twice: the first name keeps the events
        self._by_wd[wd] = (lay, rel, run)
        lay.dirs(run)[rel] = wd
        return True

    def _rm(self, wd: int) -> None:
        self._by_wd.pop(wd, None)
        with contextlib.suppress(OSError):
            self.ino.rm_watch(wd)

    def _ceiling(self, for_runs: bool = False) -> int:
        ceiling = self.budget.budget
        if for_runs:
            ceiling -= int(ceiling * RESERVE_FRACTION)
        return ceiling if self._hard_cap is None else min(ceiling, self._hard_cap)

    def _warn_if_polling(self) -> None:
        """The one warning about the budget: how many runs are watched and polled, how often, the fix."""
        if self._warned or self._placing:
            return
        polled = {lay.name: len(lay.polled) for lay in self._layers.values() if lay.polled}
        if not polled:
            return
        self._warned = True
        need = self.watches_needed()
        log.warning(
            "inotify watch budget reached (%s watches: %s%s): %s run directories are watched, %s are polled "
            "instead (%s), each listed for changes about every %g s (--poll); watching all would take about %s "
            "watches; %s",
            f"{self.budget.budget:,}",
            self.budget.source,
            "; the kernel refused more" if self._hard_cap is not None else "",
            f"{sum(len(lay.runs) for lay in self._layers.values()):,}",
            f"{sum(polled.values()):,}",
            ", ".join(f"{n:,} in {layer}" for layer, n in sorted(polled.items())),
            self.poll_every,
            f"{need:,}",
            SYSCTL_HINT.format(limit=limit_for(need)),
        )

    def watches_needed(self) -> int:
        """About how many watches every run would take: per layer, what its watched runs average."""
        total = 0.0
        for lay in self._layers.values():
            per_run = DEFAULT_WATCHES_PER_RUN
            if lay.runs:
                per_run = sum(len(d) for d in lay.runs.values()) / len(lay.runs)
            total += len(lay.struct) + per_run * (len(lay.runs) + len(lay.polled))
        return int(total)

    # ------------------------------------------------------------------ what is watched

    @property
    def used(self) -> int:
        return len(self._by_wd)

    def mode(self, layer: str) -> str | None:
        with self._lock:
            lay = self._layers.get(layer)
            return lay.mode if lay is not None else None

    def polled_runs(self) -> list[tuple[str, Root, str]]:
        """Every polled run as (layer, root, run), overlay first."""
        with self._lock:
            return [
                (lay.name, lay.root, run)
                for lay in sorted(self._layers.values(), key=lambda lay: _priority(lay.name))
                for run in lay.polled
            ]

    def is_polled(self, layer: str, run: str) -> bool:
        with self._lock:
            lay = self._layers.get(layer)
            return lay is not None and run in lay.polled

    def describe(self) -> dict[str, Any]:
        """What the state file (and ``status``) say about the watches."""
        with self._lock:
            return {
                "watches": self.used,
                "watches_needed_for_all": self.watches_needed(),
                "budget": self.budget.budget,
                "budget_source": self.budget.source,
                "kernel_refused": self._hard_cap is not None,
                "overflows": self.overflows,
                "layers": {
                    lay.name: {
                        "mode": lay.mode,
                        "runs_watched": len(lay.runs),
                        "runs_polled": len(lay.polled),
                        "watches": lay.n_watches,
                    }
                    for lay in self._layers.values()
                },
            }

    # ------------------------------------------------------------------ events

    def _read_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                events = self.ino.read(timeout=1.0)
            except OSError as exc:
                if not self._stopping.is_set():
                    log.warning("reading inotify events failed (%s)", exc)
                return  # the daemon sees the thread gone and starts over with a full rescan
            if events and not self._stopping.is_set():
                self.dispatch(events)

    def dispatch(self, events: Iterable[ino.RawEvent]) -> None:
        """Turn raw events into dirty scopes, keeping the watches in step with directories coming and going."""
        with self._lock:
            for ev in events:
                try:
                    self._one(ev)
                except Exception:  # a daemon outlives a surprise; a full rescan covers the event
                    log.exception("handling inotify event %s failed", ev)
                    self.sink.events_lost("an inotify event could not be handled")

    def _one(self, ev: ino.RawEvent) -> None:
        if ev.mask & ino.flags.Q_OVERFLOW:
            self.overflows += 1
            self._reconcile()
            self.sink.events_lost("the inotify event queue overflowed")
            return
        known = self._by_wd.get(ev.wd)
        if known is None:
            return
        lay, dir_rel, run = known
        if ev.mask & ino.flags.IGNORED:  # the directory is gone, or we removed the watch
            del self._by_wd[ev.wd]
            dirs = lay.struct if run is None else lay.runs.get(run, {})
            if dirs.get(dir_rel) == ev.wd:
                del dirs[dir_rel]
            return
        if ev.mask & (ino.flags.DELETE_SELF | ino.flags.MOVE_SELF | ino.flags.UNMOUNT):
            if not dir_rel:  # a root: stop at once (events from a moved tree would name the wrong paths)
                self.disarm(lay.name)
                self.sink.root_moved(lay.name)
            return  # any other directory: its parent reports it
        rel = f"{dir_rel}/{ev.name}" if dir_rel else ev.name
        is_dir = bool(ev.mask & ino.flags.ISDIR)
        if ev.mask & (ino.flags.DELETE | ino.flags.MOVED_FROM):
            self._dir_gone(lay, rel)  # a directory, or a symlink to one that was watched
        if is_dir and ev.mask & (ino.flags.CREATE | ino.flags.MOVED_TO | ino.flags.ATTRIB):
            self._dir_appeared(lay, rel)  # watched (or its run placed) before the scan looks at it
        elif not is_dir and ev.mask & (ino.flags.CREATE | ino.flags.MOVED_TO):
            parts = tuple(rel.split("/"))
            if should_watch(parts) and os.path.isdir(os.path.join(lay.base, rel)):
                self._dir_appeared(lay, rel)  # a symlink to a directory
        scope = entity_scope(rel, is_dir)
        if scope is None:
            return
        if grammar.group_depth(tuple(rel.split("/"))) is not None:
            change = Change.GROUP
        elif not is_dir and ev.mask & (ino.flags.CREATE | ino.flags.MODIFY):
            change = Change.WRITING
        else:
            change = Change.DONE
        self.sink.mark_dirty(lay.name, scope, change, None if is_dir else rel)

    def _dir_appeared(self, lay: _Layer, rel: str) -> None:
        parts = tuple(rel.split("/"))
        if lay.full_poll or not should_watch(parts):
            return
        if parts[0] != RUNS or len(parts) == 1:
            self._arm_structure_part(lay, parts)
            return
        run = parts[1]
        if run in lay.polled:
            return  # the poller follows it
        if run not in lay.runs:
            self._place_run(lay, run)  # a new run: watched if it fits, else polled
            return
        try:
            self._arm_tree(lay, parts, run, self._ceiling())
        except (_NoRoom, _Shared):
            self._demote(lay, run)

    def _arm_structure_part(self, lay: _Layer, parts: tuple[str, ...]) -> None:
        """A new top-level directory (``ExperimentRuns``, ``Objects``, a density map group): watch it,
        making room by polling runs of this root if the budget is full."""
        for _attempt in range(4):
            try:
                self._arm_tree(lay, parts, None, self._ceiling())
                break
            except _Shared:
                break
            except _NoRoom:
                if not lay.runs:
                    log.warning("no inotify watch left for %s/%s; it is seen by the next full index", lay.base, parts)
                    break
                self._demote(lay, next(reversed(lay.runs)))
        if parts == (RUNS,):
            for run in self._runs_on_disk(lay):
                self._place_run(lay, run)

    def _dir_gone(self, lay: _Layer, rel: str) -> None:
        parts = tuple(rel.split("/"))
        if parts[0] == RUNS and len(parts) >= 2:
            run = parts[1]
            if len(parts) == 2:
                self._drop_run(lay, run)
                return
            dirs = lay.runs.get(run, {})
        else:
            dirs = lay.struct
            if parts == (RUNS,):
                for r in [*lay.runs, *lay.polled]:
                    self._drop_run(lay, r)
        for sub in [d for d in dirs if d == rel or d.startswith(rel + "/")]:
            self._rm(dirs.pop(sub))

    def _drop_run(self, lay: _Layer, run: str) -> None:
        for wd in lay.runs.pop(run, {}).values():
            self._rm(wd)
        if run in lay.polled:
            del lay.polled[run]
            self._forget(lay.name, run)

    def _reconcile(self) -> None:
        """After lost events: watch directories created unseen, drop runs that are gone, place new ones."""
        for lay in list(self._layers.values()):
            if lay.full_poll:
                continue
            self._arm_structure_part(lay, ())
            on_disk = set(self._runs_on_disk(lay))
            for run in [r for r in (*lay.runs, *lay.polled) if r not in on_disk]:
                self._drop_run(lay, run)
            for run in list(lay.runs):
                try:
                    self._arm_tree(lay, (RUNS, run), run, self._ceiling())
                except (_NoRoom, _Shared):
                    self._demote(lay, run)
            for run in sorted(on_disk - set(lay.runs) - set(lay.polled)):
                self._place_run(lay, run)


def _priority(layer: str) -> int:
    return LAYER_PRIORITY.index(layer) if layer in LAYER_PRIORITY else len(LAYER_PRIORITY)


__all__ = ["SYSCTL_HINT", "WatchBudget", "Watches", "headroom", "limit_for", "should_watch"]

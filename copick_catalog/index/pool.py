"""Pick files parsed in worker processes, while the indexer's own process writes the catalog.

Reading and checking a pick file (decode, validate, pack the points) is pure CPU once the bytes are in
the page cache, and a full index of thousands of runs spends most of its time there; the writes to
the catalog, on the other hand, must stay in one process (SQLite has one writer). So a full index
forks a few workers that read and parse batches of pick files ahead of the writer, which stores each
batch as it arrives. A worker returns each file's header and its points as one packed bytes object
(:class:`~copick_catalog.formats.pickrows.PointBlock`), which costs next to nothing to send back.

Workers are forked (they inherit the roots and limits, and import nothing), ignore Ctrl-C (the
parent stops them), and are used only for local roots and for enough files to repay the fork: an
incremental run that reads a handful of files reads them in-process, as before. A worker that dies
(killed, out of memory) costs only speed: its files are read in-process instead.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .grammar import Kind
from .kinds import SPECS, Header, Limits
from .roots import Entry, Root

log = logging.getLogger(__name__)

#: Below this many pick files to read, forking workers costs more than it saves.
POOL_MIN_FILES = 1000
#: Files per task sent to a worker: large enough that the round trip is noise, small enough to keep both busy.
TASK_FILES = 100
#: Environment variable overriding the number of worker processes (``1`` reads in-process).
WORKERS_ENV = "COPICK_CATALOG_WORKERS"

#: (roots, limits) of the index run that forked the workers: inherited, never pickled.
_STATE: tuple[dict[str, Root], Limits] | None = None

Outcome = tuple[Header | None, str | None]


def env_count(name: str, fallback: str) -> int | None:
    """A count (at least 1) set by the environment variable ``name``, or None when it is unset or not a
    whole number (then a warning says the ``fallback`` is used)."""
    text = os.environ.get(name, "").strip()
    if text:
        try:
            return max(1, int(text))
        except ValueError:
            log.warning("%s=%r is not a whole number; using %s", name, text, fallback)
    return None


def default_workers() -> int:
    """Worker processes for a full index: ``$COPICK_CATALOG_WORKERS``, else the cores this process may use."""
    workers = env_count(WORKERS_ENV, "the number of cores")
    if workers is not None:
        return workers
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def read_entity(root: Root, kind: Kind, entry: Entry, limits: Limits) -> Outcome:
    """Read one entity's payload header: ``(header, None)``, or ``(None, message)`` naming the file and the fix.

    Never raises for anything a file can do: one odd file must not take the run (or a worker) down.
    """
    from ..errors import PayloadError

    where = root.url_of(entry.path)
    try:
        return SPECS[kind].read(root, entry, limits), None
    except PayloadError as exc:
        return None, str(exc)
    except PermissionError:
        return None, f"{where}: cannot read (permission denied); fix its permissions (chmod a+r)"
    except OSError as exc:
        return None, (
            f"{where}: cannot read ({root.scrub(exc.strerror or str(exc))}); check the file "
            "and the storage, then index again"
        )
    except Exception as exc:
        log.debug("unexpected error reading %s", where, exc_info=True)
        return None, (
            f"{where}: cannot be read ({type(exc).__name__}: {root.scrub(str(exc))[:300]}); "
            "fix or remove the file, then index again"
        )


def _read_task(layer: str, items: list[tuple[Kind, Entry]]) -> list[Outcome]:
    """A worker's task: read these entities of ``layer`` with the inherited roots and limits."""
    assert _STATE is not None, "the pool's workers are forked from an index run"
    roots, limits = _STATE
    root = roots[layer]
    return [read_entity(root, kind, entry, limits) for kind, entry in items]


def quiet_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent decides


class ReadPool:
    """Worker processes reading pick files for one index run (a context manager)."""

    def __init__(self, roots: dict[str, Root], limits: Limits, workers: int) -> None:
        global _STATE
        from ..formats import pickrows, pickstream  # noqa: F401  (loaded once here; the forked workers inherit them)

        _STATE = (roots, limits)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("fork"), initializer=quiet_worker
        )

    @staticmethod
    def usable(n_files: int, workers: int) -> bool:
        """Whether a pool repays itself: several workers, enough files, and fork available."""
        return workers > 1 and n_files >= POOL_MIN_FILES and "fork" in multiprocessing.get_all_start_methods()

    @staticmethod
    def poolable(root: Root, kind: Kind, entry: Entry) -> bool:
        """Files a worker reads: pick files of a local root small enough to be read whole."""
        from ..formats import pickstream

        return (
            kind is Kind.PICK
            and root.read_concurrency <= 1
            and (entry.size is None or entry.size < pickstream.STREAM_BYTES)
        )

    def submit(self, layer: str, items: list[tuple[Kind, Entry]]) -> list[Future[list[Outcome]]]:
        """Start reading ``items`` (entities of ``layer``) in the workers, in tasks of :data:`TASK_FILES`."""
        if self._pool is None:
            return []
        try:
            return [
                self._pool.submit(_read_task, layer, items[i : i + TASK_FILES])
                for i in range(0, len(items), TASK_FILES)
            ]
        except (BrokenProcessPool, RuntimeError):
            self._broken()
            return []

    def results(self, futures: list[Future[list[Outcome]]], n: int) -> list[Outcome] | None:
        """The outcomes of :meth:`submit`'s tasks in order, or None if a worker died (read them in-process)."""
        out: list[Outcome] = []
        try:
            for f in futures:
                out.extend(f.result())
        except BrokenProcessPool:
            self._broken()
            return None
        return out if len(out) == n else None

    def _broken(self) -> None:
        if self._pool is not None:
            log.warning("a pick-reading worker process died; reading the remaining files in this process")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Stop the workers (queued tasks are dropped: an interrupted run leaves nothing half-read)."""
        global _STATE
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        _STATE = None

    def __enter__(self) -> ReadPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = [
    "POOL_MIN_FILES",
    "WORKERS_ENV",
    "ReadPool",
    "default_workers",
    "env_count",
    "quiet_worker",
    "read_entity",
]

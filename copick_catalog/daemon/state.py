"""The watch daemon's state file: who runs, since when, how it is doing, readable by ``status``.

The daemon announces itself in a small JSON file (pid, host, heartbeat, pending work) that it holds an
exclusive ``flock`` on while it runs, so ``copick-catalog status`` can tell a live daemon from a stale
file without any schema change (an ``index_runs`` row with status "running" would not do: every index
run marks such rows "interrupted" when it takes the project lock). The kernel drops the lock when
the process dies however it dies, so "locked" means "running" even after a kill -9.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..catalog.db import sqlite_path
from ..catalog.locks import FileLock, held_elsewhere
from ..errors import CatalogError

STATE_DIR_ENV = "COPICK_CATALOG_STATE_DIR"


def state_path(engine: Any, db_url: str, project_id: int) -> Path:
    """Where the daemon of this catalog and project keeps its state file.

    Next to a SQLite catalog (like the index lock); for a server database, in
    ``$COPICK_CATALOG_STATE_DIR`` or ``$XDG_STATE_HOME/copick-catalog`` (``~/.local/state``), keyed
    on the database URL and project, so ``status`` on the same host finds it.
    """
    path = sqlite_path(engine)
    if path is not None:
        return Path(f"{path}.project{project_id}.watch.json")
    base = os.environ.get(STATE_DIR_ENV) or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "copick-catalog"
    )
    digest = hashlib.sha256(f"{db_url}|{project_id}".encode()).hexdigest()[:16]
    return Path(base) / f"watch-{digest}.json"


class StateFile:
    """The daemon's pid/heartbeat file, exclusively ``flock``-ed for as long as the daemon lives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = FileLock(path)
        self._lock = threading.Lock()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._file.acquire(wait=False):
            self._file.release()
            other = read_state(self.path) or {}
            raise CatalogError(
                f"a watch daemon (pid {other.get('pid', '?')} on {other.get('host', '?')}) is "
                f"already running for this catalog (state file {self.path}); stop it first"
            )
        if not self._file.writable:
            self._file.release()
            raise CatalogError(
                f"cannot write the daemon state file {self.path}; ask its owner to make it "
                "group-writable (chmod g+rw) or set COPICK_CATALOG_STATE_DIR"
            )

    def write(self, state: dict[str, Any]) -> None:
        """Rewrite in place (the lock lives on this inode, so no rename); readers retry torn reads."""
        data = json.dumps(state, indent=1, sort_keys=True).encode()
        with self._lock:
            self._file.write(data)

    def release(self) -> None:
        with self._lock:
            self._file.release()


def read_state(path: Path) -> dict[str, Any] | None:
    """The last state a daemon wrote there, or None (no file, or unreadable)."""
    for _ in range(5):
        try:
            text = path.read_text()
        except OSError:
            return None
        try:
            value = json.loads(text)
            return value if isinstance(value, dict) else None
        except json.JSONDecodeError:
            time.sleep(0.01)  # caught the daemon mid-write
    return None


def daemon_running(path: Path) -> bool:
    """Whether a live process holds the state file's lock (same host only)."""
    return held_elsewhere(path)


__all__ = ["STATE_DIR_ENV", "StateFile", "daemon_running", "read_state", "state_path"]

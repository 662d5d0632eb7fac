"""One index run per project at a time, across processes and machines.

PostgreSQL: a session-level advisory lock keyed on the project, held on a dedicated connection,
so it also works between machines sharing the catalog and dies with a crashed holder.
SQLite: an OS file lock (``flock``) on a sidecar file next to the database, released by the
kernel when the holder exits, however it exits.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .errors import LockBusyError

LOCK_NAMESPACE = 0x0C0C  # first key of the two-int advisory lock: "this is copick-catalog"


def _sqlite_lock_path(engine: Engine, project_id: int) -> str | None:
    path = sa.make_url(str(engine.url)).database
    if not path or path == ":memory:":
        return None
    return f"{path}.project{project_id}.lock"


@contextmanager
def project_lock(engine: Engine, project_id: int, *, wait: bool = True,
                 timeout: float | None = None) -> Iterator[None]:
    """Hold the project's index lock; raise :class:`LockBusyError` if busy and not waiting.

    ``timeout`` bounds the wait (None waits for as long as it takes).
    """
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine, project_id, wait, timeout):
            yield
        return
    path = _sqlite_lock_path(engine, project_id)
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire_flock(fd, path, wait, timeout)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire_flock(fd: int, path: str, wait: bool, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not wait or (deadline is not None and time.monotonic() > deadline):
                holder = _read_holder(path)
                raise LockBusyError(
                    f"another index run{holder} is working on this project (lock {path}); "
                    "use --wait to queue behind it"
                ) from None
            time.sleep(0.05)


def _read_holder(path: str) -> str:
    try:
        with open(path) as fh:
            pid = fh.read().strip()
        return f" (pid {pid})" if pid else ""
    except OSError:
        return ""


@contextmanager
def _pg_lock(engine: Engine, project_id: int, wait: bool, timeout: float | None) -> Iterator[None]:
    conn = engine.connect()
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:ns, :pid)"),
                               {"ns": LOCK_NAMESPACE, "pid": project_id}).scalar()
            conn.commit()
            if got:
                break
            if not wait or (deadline is not None and time.monotonic() > deadline):
                raise LockBusyError(
                    f"another index run is working on project {project_id} (PostgreSQL advisory lock "
                    f"{LOCK_NAMESPACE},{project_id}); use --wait to queue behind it"
                )
            time.sleep(0.1)
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:ns, :pid)"),
                         {"ns": LOCK_NAMESPACE, "pid": project_id})
            conn.commit()
    finally:
        conn.close()


def is_locked(engine: Engine, project_id: int) -> bool:
    """Whether an index run holds the project lock right now (for ``status``)."""
    try:
        with project_lock(engine, project_id, wait=False):
            return False
    except LockBusyError:
        return True

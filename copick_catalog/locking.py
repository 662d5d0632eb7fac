"""One index run per project at a time, across processes and machines (and one watch daemon).

PostgreSQL: a session-level advisory lock keyed on the project, held on a dedicated connection,
so it also works between machines sharing the catalog and dies with a crashed holder.
SQLite: an OS file lock (``flock``) on a sidecar file next to the database, released by the
kernel when the holder exits, however it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import sqlite_path
from .errors import CatalogError, LockBusyError

LOCK_NAMESPACE = 0x0C0C  # first key of the two-int advisory lock: "this is copick-catalog"


def _sqlite_lock_path(engine: Engine, project_id: int) -> str | None:
    path = sqlite_path(engine)
    if path is None:
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


# ------------------------------------------------------------------------------------------
# One watch daemon per project on a server database, seen from every machine

DAEMON_NAMESPACE = LOCK_NAMESPACE + 1  # first key of the watch daemon's advisory lock
_APP_PREFIX = "copick-catalog watch"


class DaemonClaim:
    """A PostgreSQL session advisory lock that says "a watch daemon serves this project".

    The daemon's state file is flock-ed too, but a file lock is only visible on its own host; labs
    sharing a PostgreSQL catalog run daemons (and ``status``) on different machines. The lock lives on
    a dedicated connection whose ``application_name`` names the host and pid, so ``status`` anywhere
    can say who holds it, and the server drops it when that process dies. If the connection breaks
    (a database outage), :meth:`keep` takes the lock again once the server is back.
    """

    def __init__(self, engine: Engine, project_id: int, host: str, pid: int) -> None:
        self.engine = engine
        self.project_id = project_id
        self.app_name = f"{_APP_PREFIX} {host} pid {pid}"[:63]  # PostgreSQL truncates at 63 bytes
        self._conn: sa.Connection | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`CatalogError` naming the daemon that holds it."""
        if not self._try():
            holder = daemon_holder(self.engine, self.project_id)
            who = holder["application_name"] if holder else "another process"
            raise CatalogError(f"a watch daemon ({who}, seen through PostgreSQL) already serves project "
                               f"{self.project_id} of this catalog; stop it first")

    def keep(self) -> bool:
        """Check the lock is still held (called from the heartbeat); retake it after an outage.

        Returns False while it cannot be held: the database is unreachable, or another daemon took
        over meanwhile.
        """
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT 1")).scalar()
                self._conn.commit()
                return True
            except sa.exc.SQLAlchemyError:
                self._close()
        try:
            return self._try()
        except sa.exc.SQLAlchemyError:
            self._close()
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:ns, :pid)"),
                                   {"ns": DAEMON_NAMESPACE, "pid": self.project_id})
                self._conn.commit()
        self._close()

    def _try(self) -> bool:
        conn = self.engine.connect()
        try:
            conn.execute(sa.text("SELECT set_config('application_name', :name, false)"), {"name": self.app_name})
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:ns, :pid)"),
                               {"ns": DAEMON_NAMESPACE, "pid": self.project_id}).scalar()
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()  # a broken or finished session must not return to the pool
                self._conn.close()
            self._conn = None


def daemon_holder(engine: Engine, project_id: int) -> dict[str, Any] | None:
    """The session holding a project's watch-daemon lock on PostgreSQL (any host), or None.

    Advisory locks belong to one database, while ``pg_locks`` lists the whole server's: hence the filter.
    """
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT a.application_name, host(a.client_addr) AS client_addr, "
            "extract(epoch FROM a.backend_start)::float8 AS since "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :ns AND l.objid = :pid "
            "AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"ns": DAEMON_NAMESPACE, "pid": project_id}).mappings().first()
    return dict(row) if row is not None else None

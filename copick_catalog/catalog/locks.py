"""Locks: one index run per project at a time, across processes and machines.

PostgreSQL: a session-level advisory lock keyed on the project, held on a dedicated connection,
so it also works between machines sharing the catalog and dies with a crashed holder.
SQLite: an OS file lock (``flock``) on a sidecar file next to the database, released by the
kernel when the holder exits, however it exits.

The sidecar files live in a lab's shared directory, so whoever creates one makes it writable for
the group (and, where the directory allows, everyone), and a user who may only read it still takes a
lock through a read-only descriptor (``flock`` does not need write access). :class:`FileLock` is the
one flock helper; the watch daemon's state file uses it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import CatalogError, LockBusyError
from .db import sqlite_path

LOCK_NAMESPACE = 0x0C0C  # first key of the two-int advisory lock: "this is copick-catalog"
#: Sidecar files are shared by everyone who indexes the catalog: writable by the group and others,
#: as far as the creator's umask lets it (a lab directory is usually setgid with umask 002).
SHARED_MODE = 0o666


class FileLock:
    """An exclusive ``flock`` on a sidecar file, taken without blocking or waiting up to a deadline.

    The file is opened read-write when possible (the holder writes its pid into it), else read-only:
    either kind of descriptor can hold the lock, so a user who cannot write another user's lock file
    still serialises with them.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.fd: int | None = None
        self.writable = False

    def open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, SHARED_MODE)
            self.writable = True
            with contextlib.suppress(OSError):  # only the owner may chmod; the umask took group write away
                if os.fstat(fd).st_uid == os.geteuid():
                    os.fchmod(fd, SHARED_MODE & ~_umask_keep_group())
        except PermissionError:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except OSError as exc:
                raise CatalogError(
                    f"cannot open lock file {self.path} ({exc.strerror}); ask its owner to make it "
                    "group-writable (chmod g+rw), or give the directory write access"
                ) from None
            self.writable = False
        self.fd = fd
        return fd

    def acquire(self, *, wait: bool = True, timeout: float | None = None, shared: bool = False) -> bool:
        """Take the lock; False if it is busy and ``wait`` is false (or ``timeout`` passed)."""
        fd = self.fd if self.fd is not None else self.open()
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode)
                return True
            except BlockingIOError:
                if not wait or (deadline is not None and time.monotonic() > deadline):
                    return False
                time.sleep(0.05)

    def write(self, data: bytes) -> None:
        """Replace the file's content in place (the lock lives on this inode, so no rename)."""
        if self.fd is not None and self.writable:
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def held_elsewhere(path: str | os.PathLike[str]) -> bool:
    """Whether another process holds an exclusive lock on ``path`` (False if the file does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Read once at import (reading the umask means setting it, which is not thread-safe).
_UMASK = _read_umask()


def _umask_keep_group() -> int:
    """The process umask, but never taking group write away: the lock must work for the whole group."""
    return _UMASK & ~0o020


def _sqlite_lock_path(engine: Engine, project_id: int) -> str | None:
    path = sqlite_path(engine)
    return None if path is None else f"{path}.project{project_id}.lock"


@contextmanager
def project_lock(engine: Engine, project_id: int, *, wait: bool = True, timeout: float | None = None) -> Iterator[None]:
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
    lock = FileLock(path)
    try:
        if not lock.acquire(wait=wait, timeout=timeout):
            raise LockBusyError(
                f"another index run{_holder(path)} is working on this project (lock {path}); "
                "use --wait to queue behind it"
            )
        lock.write(f"{os.getpid()}\n".encode())
        yield
    finally:
        lock.release()


def _holder(path: str) -> str:
    try:
        with open(path) as fh:
            pid = fh.read().strip()
        return f" (pid {pid})" if pid else ""
    except OSError:
        return ""


def pg_try_lock(conn: sa.Connection, namespace: int, key: int) -> bool:
    """Try to take a session advisory lock on ``conn``; commits, so the lock outlives no transaction."""
    got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:ns, :key)"), {"ns": namespace, "key": key}).scalar())
    conn.commit()
    return got


def pg_unlock(conn: sa.Connection, namespace: int, key: int) -> None:
    conn.execute(sa.text("SELECT pg_advisory_unlock(:ns, :key)"), {"ns": namespace, "key": key})
    conn.commit()


@contextmanager
def _pg_lock(engine: Engine, project_id: int, wait: bool, timeout: float | None) -> Iterator[None]:
    conn = engine.connect()
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not pg_try_lock(conn, LOCK_NAMESPACE, project_id):
            if not wait or (deadline is not None and time.monotonic() > deadline):
                raise LockBusyError(
                    f"another index run is working on project {project_id} (PostgreSQL advisory lock "
                    f"{LOCK_NAMESPACE},{project_id}); use --wait to queue behind it"
                )
            time.sleep(0.1)
        try:
            yield
        finally:
            pg_unlock(conn, LOCK_NAMESPACE, project_id)
    finally:
        conn.close()


def is_locked(engine: Engine, project_id: int) -> bool:
    """Whether an index run holds the project lock right now (for ``status``); never creates a lock file."""
    if engine.dialect.name != "postgresql":
        path = _sqlite_lock_path(engine, project_id)
        return path is not None and held_elsewhere(path)
    try:
        with project_lock(engine, project_id, wait=False):
            return False
    except LockBusyError:
        return True


__all__ = ["LOCK_NAMESPACE", "FileLock", "held_elsewhere", "is_locked", "pg_try_lock", "pg_unlock", "project_lock"]

"""Linux inotify through ctypes: one instance, watches added and removed one directory at a time.

watchdog arms a root recursively as one unit, with a thread and an inotify instance per watch, and
gives up on the whole root when the kernel's per-user watch limit is reached. Watching *what fits*
needs single-directory control of one instance, which is all this module offers: add and remove a
watch, and read raw events. What the events mean is :mod:`.watches`' business.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import struct
from dataclasses import dataclass

# <sys/inotify.h>
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_CLOEXEC = os.O_CLOEXEC
IN_NONBLOCK = os.O_NONBLOCK

#: What the daemon asks for on every directory. No IN_OPEN / IN_ACCESS / IN_CLOSE_NOWRITE: listing a
#: directory would then report itself, and a walk of a big tree floods the queue (stack-notes). No
#: IN_DONT_FOLLOW: a symlinked directory is followed, as the index follows it.
DIR_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_EXCL_UNLINK
)

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len
WATCHES_LIMIT_FILE = "/proc/sys/fs/inotify/max_user_watches"


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One kernel event: the watch it came from, what happened, and the entry's name in that directory."""

    wd: int
    mask: int
    cookie: int
    name: str


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc = lib
    return _libc


def max_user_watches() -> int | None:
    """The kernel's per-user watch limit (``fs.inotify.max_user_watches``), or None where unreadable."""
    try:
        with open(WATCHES_LIMIT_FILE) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


class Inotify:
    """One inotify instance (non-blocking), with a pipe that wakes :meth:`read` for shutdown."""

    def __init__(self) -> None:
        fd = _lib().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)} (fs.inotify.max_user_instances reached?)")
        self.fd = fd
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)
        self.closed = False

    def add_watch(self, path: str, mask: int = DIR_MASK) -> int:
        """Watch one directory; returns its watch descriptor (the same one again for an inode already watched).

        Raises OSError: ENOSPC at the per-user limit, ENOENT/ENOTDIR for a path that is gone or not a
        (real) directory, EACCES without read permission.
        """
        wd = _lib().inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        """Stop watching; a watch the kernel already dropped (its directory deleted) is not an error."""
        if _lib().inotify_rm_watch(self.fd, wd) < 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise OSError(err, os.strerror(err))

    def read(self, timeout: float | None = None) -> list[RawEvent]:
        """Events available within ``timeout`` seconds (None: until some arrive or :meth:`wake`)."""
        ready = self._poll.poll(None if timeout is None else int(timeout * 1000))
        if not ready or self.closed:
            return []
        if any(fd == self._wake_r for fd, _ in ready):
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return []
        return parse_events(data)

    def wake(self) -> None:
        """Make a blocked :meth:`read` return (from another thread)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.wake()
        for fd in (self.fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def parse_events(data: bytes) -> list[RawEvent]:
    """Split a ``read`` of an inotify descriptor into events (names are NUL-padded)."""
    out: list[RawEvent] = []
    i, n = 0, len(data)
    while i + _HEADER.size <= n:
        wd, mask, cookie, length = _HEADER.unpack_from(data, i)
        i += _HEADER.size
        name = os.fsdecode(data[i : i + length].rstrip(b"\0")) if length else ""
        i += length
        out.append(RawEvent(wd, mask, cookie, name))
    return out


__all__ = [
    "DIR_MASK",
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_IGNORED",
    "IN_ISDIR",
    "IN_MODIFY",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_MOVE_SELF",
    "IN_Q_OVERFLOW",
    "IN_UNMOUNT",
    "Inotify",
    "RawEvent",
    "max_user_watches",
    "parse_events",
]

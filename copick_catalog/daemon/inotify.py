"""Linux inotify for the daemon: inotify_simple's single instance, and the little the daemon needs around it.

Watching *what fits* needs one inotify instance with watches added and removed one directory at a
time (watchdog arms a root recursively as one unit, an instance and a thread per watch, and gives up
at the kernel's limit). inotify_simple is exactly that thin binding; this module adds only what the
daemon needs on top: whether inotify exists here at all (Linux only: elsewhere every local root is
polled), the kernel's per-user watch limit, ENOSPC as :class:`LimitReached` (the budget is exhausted),
and a wake-up pipe so a blocked read ends at once when the daemon stops. What the events mean is
:mod:`.watches`' business.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sys
from typing import Any, Protocol

_IMPORT_ERROR = ""
try:
    import inotify_simple as _lib
except ImportError as exc:  # Windows has no termios/fcntl; or the package is missing
    _lib = None
    _IMPORT_ERROR = str(exc)

#: The platform the daemon runs on (inotify is Linux's; a test sets another to see the daemon off Linux).
PLATFORM = sys.platform
WATCHES_LIMIT_FILE = "/proc/sys/fs/inotify/max_user_watches"

#: Event flags (``flags.CREATE`` ...), as <sys/inotify.h> names them without the ``IN_`` prefix.
flags: Any = _lib.flags if _lib is not None else None


class RawEvent(Protocol):
    """An event read from the kernel (inotify_simple's ``Event``): ``name`` is the entry in the watched directory."""

    @property
    def wd(self) -> int: ...
    @property
    def mask(self) -> int: ...
    @property
    def cookie(self) -> int: ...
    @property
    def name(self) -> str: ...


def unavailable() -> str | None:
    """Why inotify cannot be used on this machine, or None where it can."""
    if not PLATFORM.startswith("linux"):
        return f"inotify exists only on Linux (this is {PLATFORM})"
    if _lib is None:
        return f"the inotify_simple package cannot be imported ({_IMPORT_ERROR})"
    return None


def dir_mask() -> int:
    """What the daemon asks for on every directory.

    No OPEN / ACCESS / CLOSE_NOWRITE: listing a directory would then report itself, and a walk of a
    big tree floods the queue (stack-notes). No DONT_FOLLOW: a symlinked directory is followed, as the
    index follows it.
    """
    f = flags
    return int(
        f.MODIFY
        | f.ATTRIB
        | f.CLOSE_WRITE
        | f.MOVED_FROM
        | f.MOVED_TO
        | f.CREATE
        | f.DELETE
        | f.DELETE_SELF
        | f.MOVE_SELF
        | f.ONLYDIR
        | f.EXCL_UNLINK
    )


def max_user_watches() -> int | None:
    """The kernel's per-user watch limit (``fs.inotify.max_user_watches``), or None where unreadable."""
    try:
        with open(WATCHES_LIMIT_FILE) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


class LimitReached(Exception):
    """The kernel refused a watch (ENOSPC): the per-user watch limit is reached."""


class Inotify:
    """One inotify instance, with a pipe that wakes :meth:`read` for shutdown.

    Raises OSError when the kernel refuses an instance (``fs.inotify.max_user_instances`` reached),
    and where :func:`unavailable` says why not.
    """

    def __init__(self) -> None:
        why = unavailable()
        if why is not None:
            raise OSError(errno.ENOSYS, why)
        try:
            self._in = _lib.INotify(nonblocking=True)
        except OSError as exc:
            why = f"inotify_init1: {exc.strerror} (fs.inotify.max_user_instances reached?)"
            raise OSError(exc.errno, why) from None
        self._mask = dir_mask()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._in.fileno(), select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)
        self.closed = False

    def add_watch(self, path: str) -> int:
        """Watch one directory; returns its watch descriptor (the same one again for an inode already watched).

        Raises :class:`LimitReached` at the per-user limit, OSError otherwise (ENOENT/ENOTDIR for a
        path that is gone or not a directory, EACCES without read permission).
        """
        try:
            return int(self._in.add_watch(path, self._mask))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise LimitReached(path) from None
            raise OSError(exc.errno, exc.strerror, path) from None

    def rm_watch(self, wd: int) -> None:
        """Stop watching; a watch the kernel already dropped (its directory deleted) is not an error."""
        try:
            self._in.rm_watch(wd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise

    def read(self, timeout: float | None = None) -> list[RawEvent]:
        """Events available within ``timeout`` seconds (None: until some arrive or :meth:`wake`)."""
        ready = self._poll.poll(None if timeout is None else int(timeout * 1000))
        if not ready or self.closed:
            return []
        if any(fd == self._wake_r for fd, _ in ready):
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        return list(self._in.read(timeout=0))

    def wake(self) -> None:
        """Make a blocked :meth:`read` return (from another thread)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.wake()
        with contextlib.suppress(OSError):
            self._in.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


__all__ = ["Inotify", "LimitReached", "RawEvent", "dir_mask", "flags", "max_user_watches", "unavailable"]

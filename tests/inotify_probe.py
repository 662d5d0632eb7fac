"""What the kernel says a process watches with inotify: for the tests and the watch benchmark, which must
not take the daemon's own word for it."""

from __future__ import annotations

import os
import re
from pathlib import Path


def watched_inodes(pid: int) -> set[int]:
    """Inodes of every directory a process watches with inotify, as the kernel lists them."""
    out: set[int] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            text = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        out.update(int(m, 16) for m in re.findall(r"^inotify wd:\S+ ino:([0-9a-f]+)", text, re.M))
    return out

"""A root on this machine's filesystem (plain paths, ``local://``, ``file://``).

Listing is a ``scandir`` walk pruned by :func:`grammar.descend`; a zarr group costs one ``scandir`` of
the group plus a ``stat`` of each level's metadata. Only regular files are ever read, opened without
blocking (a FIFO named like a pick file must not hang the index) and never past a size cap.
Writes go through a temporary name and a rename, so readers see the old file or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat as stat_mod
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ...errors import PayloadError
from .. import grammar
from ..scopes import RunSlice
from .base import ZARR_META_NAMES, Backup, Entry, ListingStats, Root, group_entry, hidden_sibling

log = logging.getLogger(__name__)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink loop"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or type(exc).__name__


class LocalRoot(Root):
    """A root in a local directory."""

    protocol = "file"

    def __init__(self, path: Path, layer: str, fs_args: dict[str, Any] | None = None) -> None:
        super().__init__(layer, fs_args)
        self.local_path = Path(os.path.normpath(path))
        self.base = self.local_path.as_posix()
        self.url = f"local://{self.base}"

    def url_of(self, rel: str) -> str:
        return f"file://{self.full(rel)}"

    # ------------------------------------------------------------------ reading

    def exists(self, rel: str = "") -> bool:
        return os.path.exists(self.full(rel))

    def _open_regular(self, rel: str) -> tuple[int, os.stat_result]:
        """An fd on a regular file: opened without blocking (a FIFO would hang ``open``), then checked."""
        full = self.full(rel)
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            raise PayloadError(
                full,
                f"is not a regular file ({_file_type(st.st_mode)}); only regular files are "
                "read: replace it with the real file or remove it",
            )
        os.set_blocking(fd, True)
        return fd, st

    def open_read(self, rel: str) -> IO[bytes]:
        fd, _st = self._open_regular(rel)
        return os.fdopen(fd, "rb")

    def read_head(self, rel: str, n: int) -> bytes:
        fd, _st = self._open_regular(rel)
        try:
            return os.read(fd, n)
        finally:
            os.close(fd)

    def read_bytes(self, rel: str, limit: int | None = None) -> bytes:
        """Read a regular file, refusing FIFOs, devices and sockets (even behind symlinks) and files over ``limit``."""
        full = self.full(rel)
        fd, st = self._open_regular(rel)
        try:
            if limit is not None and st.st_size > limit:
                raise PayloadError(
                    full,
                    f"is {st.st_size:,} bytes, over the {limit:,}-byte limit for this kind of "
                    "file; split it, or raise the limit (Catalog.open(..., limits=...))",
                )
            chunks = []
            remaining = st.st_size if limit is None else min(st.st_size, limit) + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 24))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            data = b"".join(chunks)
            if limit is not None and len(data) > limit:
                raise PayloadError(full, f"grew past the {limit:,}-byte limit while being read; index again later")
            return data
        finally:
            os.close(fd)

    def fingerprint(self, rel: str) -> Entry | None:
        full = self.full(rel)
        try:
            st = os.stat(full)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return Entry(
                rel,
                os.path.islink(full) is False and os.path.isdir(full),
                "error",
                error=f"{full}: cannot examine ({_reason(exc)})",
            )
        if stat_mod.S_ISDIR(st.st_mode):
            if grammar.is_zarr_group_dir(tuple(rel.split("/"))):
                return self._group(rel, full, ListingStats())
            return Entry(rel, True, "dir", st.st_mtime)
        return Entry(rel, False, f"{st.st_size}:{st.st_mtime_ns}", st.st_mtime, st.st_size)

    def invalidate(self) -> None:
        """Nothing to drop: every walk lists the directories afresh."""

    shareable = True

    def run_entries(self) -> list[os.DirEntry[str]] | None:
        try:
            with os.scandir(f"{self.base}/{grammar.RUNS_DIR}") as it:
                return list(it)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError:  # unreadable: one pass lists it, reports it and keeps what lies below it
            return None

    def walk_share(
        self, stats: ListingStats, under: str, share: tuple[int, int], runs: RunSlice | None = None
    ) -> Iterator[Entry]:
        if under.strip("/") not in ("", grammar.RUNS_DIR):
            raise ValueError(f"only the root or {grammar.RUNS_DIR} is listed in shares, not {under!r}")
        self.last_stats = stats
        return self._walk(stats, under.strip("/"), share, runs)

    def _walk(
        self, stats: ListingStats, under: str, share: tuple[int, int] | None = None, runs: RunSlice | None = None
    ) -> Iterator[Entry]:
        stats.strategy = "scandir"
        start = tuple(p for p in under.split("/") if p)
        if not start and not os.path.isdir(self.base):
            return
        stack: list[tuple[str, ...]] = [start]
        while stack:
            parts = stack.pop()
            dirpath = f"{self.base}/{'/'.join(parts)}" if parts else self.base
            try:
                it = os.scandir(dirpath)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                if not parts:
                    raise self.root_error("list the root", exc) from None
                stats.entries += 1
                yield Entry(
                    "/".join(parts),
                    True,
                    "error",
                    error=f"{dirpath}: cannot list this directory "
                    f"({_reason(exc)}); fix its permissions (chmod a+rx) so it can be indexed",
                )
                continue
            stats.list_calls += 1
            here = grammar.descend(parts)  # once per directory, not once per file in it
            prefix = "/".join(parts) + "/" if parts else ""
            listed = 0
            # The loop a reindex spends its time in: one stat per file, one Entry, nothing else.
            # A share keeps the run directories whose names hash to it; share 0 also keeps what is not a run.
            keep = None if share is None and runs is None else _share_filter(parts, share or (0, 1), runs)
            # a pass over a slice of runs takes its run directories as the plan listed them (the directory
            # was opened above all the same, so one that cannot be listed now is reported as always)
            entries: Iterable[os.DirEntry[str]] = it
            if runs is not None and parts == (grammar.RUNS_DIR,) and self.layer in runs.listed:
                entries = runs.listed[self.layer]
            with it:
                for de in entries:
                    if keep is not None and not keep(de.name):
                        continue
                    try:
                        if de.is_dir():
                            entry = self._dir_entry(parts, de, stats, stack)
                            if entry is None:
                                continue
                        elif here:
                            st = de.stat()
                            entry = Entry(
                                prefix + de.name, False, f"{st.st_size}:{st.st_mtime_ns}", st.st_mtime, st.st_size
                            )
                        else:
                            continue
                    except FileNotFoundError:  # vanished between listing and stat
                        continue
                    except OSError as exc:
                        child = (*parts, de.name)
                        if not (here or grammar.descend(child)):
                            continue
                        entry = Entry(
                            "/".join(child),
                            False,
                            "error",
                            error=f"{de.path}: cannot examine ({_reason(exc)}); fix or remove it",
                        )
                    listed += 1
                    yield entry
            stats.entries += listed

    def _dir_entry(
        self, parts: tuple[str, ...], de: os.DirEntry[str], stats: ListingStats, stack: list[tuple[str, ...]]
    ) -> Entry | None:
        """A subdirectory: a zarr group (fingerprinted), else pushed for listing if the grammar wants it, and
        reported unless it is a mere container (its mtime is not needed: no directory's content is read)."""
        child = (*parts, de.name)
        rel = "/".join(child)
        if grammar.is_zarr_group_dir(child):
            return self._group(rel, de.path, stats)
        if grammar.descend(child):
            stack.append(child)
        if grammar.is_container_dir(child):
            return None
        return Entry(rel, True, "dir")

    def _group(self, rel: str, full: str, stats: ListingStats) -> Entry:
        """Fingerprint a zarr group from its metadata files: one listing plus a stat per level."""
        items: list[tuple[str, int, Any]] = []
        subdirs: list[str] = []
        try:
            with os.scandir(full) as it:
                stats.list_calls += 1
                for de in it:
                    if de.name in ZARR_META_NAMES:
                        st = de.stat()
                        items.append((de.name, st.st_size, st.st_mtime_ns))
                    elif de.is_dir() and not de.name.startswith("."):
                        subdirs.append(de.name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            return Entry(
                rel,
                True,
                "error",
                error=f"{full}: cannot read this zarr group ({_reason(exc)}); fix its "
                "permissions (chmod -R a+rX) so it can be indexed",
            )
        for sub in subdirs:
            for name in (".zarray", "zarr.json", ".zattrs"):
                try:
                    st = os.stat(os.path.join(full, sub, name))
                except OSError:
                    continue
                stats.stat_calls += 1
                items.append((f"{sub}/{name}", st.st_size, st.st_mtime_ns))
        return group_entry(rel, items)

    # ------------------------------------------------------------------ writing

    def write_bytes(self, rel: str, data: bytes) -> None:
        full = Path(self.full(rel))
        full.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{full.name}.", suffix=".tmp", dir=full.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; others must read picks
            os.replace(tmp, full)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def makedirs(self, rel: str) -> None:
        os.makedirs(self.full(rel), exist_ok=True)

    def remove(self, rel: str, recursive: bool = False) -> None:
        full = self.full(rel)
        if os.path.isdir(full) and not os.path.islink(full):
            if recursive:
                shutil.rmtree(full)
            else:
                os.rmdir(full)
        elif os.path.lexists(full):
            os.unlink(full)

    def zarr_store(self, rel: str, read_only: bool = True) -> Any:
        from ...formats import zarrio

        return zarrio.local_store(self.full(rel), read_only=read_only)

    def write_group(self, rel: str, fill: Callable[[Any], object]) -> Backup | None:
        tmp = hidden_sibling(rel, "tmp")
        self.makedirs(rel.rpartition("/")[0])
        try:
            fill(self.zarr_store(tmp, read_only=False))
        except BaseException:
            self.remove(tmp, recursive=True)
            raise
        old = None
        try:
            old = self.move_aside(rel, group=True)
            os.rename(self.full(tmp), self.full(rel))
        except BaseException:
            self.remove(tmp, recursive=True)
            self.restore(old, rel, group=True)
            raise
        return old

    def move_aside(self, rel: str, group: bool) -> Backup | None:
        if not group or not os.path.isdir(self.full(rel)):
            return super().move_aside(rel, group)
        aside = hidden_sibling(rel, "bak")
        os.rename(self.full(rel), self.full(aside))  # a rename: cheap however big the group is
        return Backup(rel, True, aside=aside)

    def _copy_tree(self, src: str, dst: str) -> None:
        shutil.copytree(self.full(src), self.full(dst), symlinks=True)

    def _move_tree(self, src: str, dst: str) -> None:
        os.rename(self.full(src), self.full(dst))


def _share_filter(
    parts: tuple[str, ...], share: tuple[int, int], runs: RunSlice | None = None
) -> Callable[[str], bool] | None:
    """Which children of the directory ``parts`` belong to ``share`` of the slice ``runs`` (None: all)."""
    index, shares = share
    if parts == (grammar.RUNS_DIR,):
        if runs is None:
            return lambda name: zlib.crc32(os.fsencode(name)) % shares == index
        if shares == 1:
            return runs.__contains__
        return lambda name: name in runs and zlib.crc32(os.fsencode(name)) % shares == index
    if not parts:  # the root: ExperimentRuns is walked by every share, the rest by share 0 (of the first slice)
        outside = index == 0 and (runs is None or runs.outside)
        return lambda name: name == grammar.RUNS_DIR or outside
    return None


def _file_type(mode: int) -> str:
    for test, name in (
        (stat_mod.S_ISFIFO, "a FIFO"),
        (stat_mod.S_ISCHR, "a character device"),
        (stat_mod.S_ISBLK, "a block device"),
        (stat_mod.S_ISSOCK, "a socket"),
        (stat_mod.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The process umask, read once at import (reading it means setting it, which is not thread-safe).
_UMASK = _umask()


__all__ = ["LocalRoot"]

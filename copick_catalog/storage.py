"""Project roots (static, overlay) on any fsspec filesystem, and listing them with fingerprints.

Callers never branch on the backend: a :class:`Root` lists, reads, writes and opens zarr stores
the same way whether it sits on local disk or S3. Listing yields one :class:`Entry` per file or
directory the path grammar cares about; a zarr group comes back as a single entry fingerprinted by
its metadata files, because its chunks say nothing the catalog stores and can number millions.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec

from . import layout
from .errors import RootError

log = logging.getLogger(__name__)

#: Files that describe a zarr group or array (format 2 and 3); nothing else inside a group is read.
ZARR_META_NAMES = (".zgroup", ".zattrs", ".zarray", "zarr.json", ".zmetadata")
LOCAL_PROTOCOLS = ("file", "local")


@dataclass(slots=True)
class Entry:
    """One listed item. ``fingerprint`` changes whenever the content the catalog reads changes.

    ``meta`` lists, for a zarr group, its metadata files relative to the group (``.zattrs``,
    ``0/.zarray``, …) so readers can fetch exactly those and nothing else.
    """

    path: str
    is_dir: bool
    fingerprint: str
    mtime: float | None = None
    size: int | None = None
    meta: tuple[str, ...] = field(default_factory=tuple)


@dataclass(slots=True)
class ListingStats:
    """What a walk cost; the benchmark reports it and S3 tests assert it stays flat."""

    list_calls: int = 0
    stat_calls: int = 0
    entries: int = 0
    strategy: str = ""


def _split_protocol(url: str) -> tuple[str, str]:
    if "://" in url:
        proto, rest = url.split("://", 1)
        return proto.lower(), rest
    return "", url


class Root:
    """One root of a project (``layer`` is ``"static"`` or ``"overlay"``)."""

    def __init__(self, url: str, layer: str, fs_args: dict[str, Any] | None = None,
                 base_dir: Path | None = None) -> None:
        self.layer = layer
        self.fs_args = dict(fs_args or {})
        proto, rest = _split_protocol(url.strip())
        if proto in ("", *LOCAL_PROTOCOLS):
            path = Path(rest)
            if not path.is_absolute():
                path = (base_dir or Path.cwd()) / path
            self.local_path: Path | None = Path(os.path.normpath(path))
            self.protocol = "file"
            self.base = self.local_path.as_posix()
            self.url = f"local://{self.base}"
            self.fs = fsspec.filesystem("file", auto_mkdir=True)
            return
        self.local_path = None
        self.protocol = proto
        try:
            cls = fsspec.get_filesystem_class(proto)
        except (ValueError, ImportError) as exc:
            raise RootError(
                f"{layer} root {url!r}: unsupported URL scheme {proto!r} ({exc}); use a local path, "
                "local://, file:// or s3://"
            ) from None
        try:
            # A fresh instance: fsspec's instance cache would share listing caches between runs.
            self.fs = cls(skip_instance_cache=True, **self.fs_args)
        except Exception as exc:
            raise RootError(f"{layer} root {url!r}: cannot open filesystem ({type(exc).__name__}: {exc})") from None
        self.base = cls._strip_protocol(url).rstrip("/")
        if not self.base:
            raise RootError(f"{layer} root {url!r} names no bucket or path")
        self.url = f"{proto}://{self.base}"

    # ------------------------------------------------------------------ paths

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    def full(self, rel: str) -> str:
        """The backend path (no protocol) of a relative path."""
        return f"{self.base}/{rel}" if rel else self.base

    def url_of(self, rel: str) -> str:
        return f"{self.protocol}://{self.full(rel)}" if not self.is_local else f"file://{self.full(rel)}"

    def __repr__(self) -> str:
        return f"Root({self.layer}, {self.url})"

    # ------------------------------------------------------------------ reading

    def exists(self, rel: str = "") -> bool:
        if self.local_path is not None:
            return os.path.exists(self.full(rel))
        return bool(self.fs.exists(self.full(rel)))

    def read_bytes(self, rel: str) -> bytes:
        if self.local_path is not None:
            with open(self.full(rel), "rb") as fh:
                return fh.read()
        return self.fs.cat_file(self.full(rel))

    def read_many(self, rels: list[str]) -> dict[str, bytes | Exception]:
        """Read several small files; on S3 one batched request round instead of one per file."""
        if self.local_path is not None or not rels:
            out: dict[str, bytes | Exception] = {}
            for rel in rels:
                try:
                    out[rel] = self.read_bytes(rel)
                except OSError as exc:
                    out[rel] = exc
            return out
        fulls = [self.full(r) for r in rels]
        got = self.fs.cat(fulls, on_error="return")
        return {rel: got.get(full, FileNotFoundError(full)) for rel, full in zip(rels, fulls, strict=True)}

    def fingerprint(self, rel: str) -> Entry | None:
        """Fingerprint one path the way :meth:`walk` would, or None if it does not exist."""
        parts = tuple(rel.split("/"))
        if self.local_path is not None:
            full = self.full(rel)
            try:
                st = os.stat(full)
            except OSError:
                return None
            if os.path.isdir(full):
                if layout.is_zarr_group_dir(parts):
                    return self._local_group(rel, full, ListingStats())
                return Entry(rel, True, "dir", st.st_mtime)
            return Entry(rel, False, f"{st.st_size}:{st.st_mtime_ns}", st.st_mtime, st.st_size)
        try:
            info = self.fs.info(self.full(rel))
        except (FileNotFoundError, OSError):
            return None
        if info.get("type") == "directory":
            if layout.is_zarr_group_dir(parts):
                found = self.fs.find(self.full(rel), detail=True)
                return _group_from_keys(rel, {k[len(self.full(rel)) + 1:]: v for k, v in found.items()})
            return Entry(rel, True, "dir")
        return _file_entry(rel, info)

    # ------------------------------------------------------------------ listing

    def walk(self, stats: ListingStats | None = None, under: str = "") -> Iterator[Entry]:
        """Every entry of interest below ``under`` (default: the whole root), in one pass.

        Local roots use a pruned ``scandir`` walk; other filesystems one recursive ``find``
        (a single paginated listing on S3) filtered down to the grammar.
        """
        stats = stats if stats is not None else ListingStats()
        if self.local_path is not None:
            stats.strategy = "scandir"
            yield from self._walk_local(stats, under)
        else:
            stats.strategy = "find"
            yield from self._walk_find(stats, under)

    def _walk_local(self, stats: ListingStats, under: str) -> Iterator[Entry]:
        start = tuple(p for p in under.split("/") if p)
        if start and layout.is_zarr_group_dir(start):
            entry = self.fingerprint(under)
            if entry is not None:
                yield entry
            return
        stack: list[tuple[str, ...]] = [start]
        while stack:
            parts = stack.pop()
            dirpath = os.path.join(self.base, *parts)
            try:
                it = os.scandir(dirpath)
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                continue
            stats.list_calls += 1
            with it:
                for de in it:
                    child = (*parts, de.name)
                    rel = "/".join(child)
                    try:
                        is_dir = de.is_dir()
                        if is_dir:
                            if layout.is_zarr_group_dir(child):
                                stats.entries += 1
                                yield self._local_group(rel, de.path, stats)
                                continue
                            st = de.stat()
                            stats.entries += 1
                            yield Entry(rel, True, "dir", st.st_mtime)
                            if layout.descend(child):
                                stack.append(child)
                        elif layout.descend(parts):
                            st = de.stat()
                            stats.entries += 1
                            yield Entry(rel, False, f"{st.st_size}:{st.st_mtime_ns}", st.st_mtime, st.st_size)
                    except OSError as exc:  # vanished between listing and stat, or unreadable
                        log.debug("skipping %s: %s", rel, exc)

    def _local_group(self, rel: str, full: str, stats: ListingStats) -> Entry:
        """Fingerprint a zarr group from its metadata files: one listing plus a stat per level."""
        items: list[tuple[str, int, int]] = []
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
        except OSError:
            pass
        for sub in subdirs:
            for name in (".zarray", "zarr.json", ".zattrs"):
                try:
                    st = os.stat(os.path.join(full, sub, name))
                except OSError:
                    continue
                stats.stat_calls += 1
                items.append((f"{sub}/{name}", st.st_size, st.st_mtime_ns))
        return _group_entry(rel, items)

    def _walk_find(self, stats: ListingStats, under: str) -> Iterator[Entry]:
        root = self.full(under.strip("/")) if under else self.base
        try:
            found = self.fs.find(root, detail=True, withdirs=True)
        except FileNotFoundError:
            found = {}
        stats.list_calls += 1
        prefix_len = len(self.base) + 1
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        dirs: set[str] = set()
        for full, info in found.items():
            rel = full[prefix_len:] if full.startswith(self.base + "/") else ""
            if not rel:
                continue
            parts = rel.split("/")
            group_at = _group_depth(parts)
            if group_at is not None:
                groups.setdefault("/".join(parts[:group_at]), {})["/".join(parts[group_at:])] = info
                _add_parent_dirs(dirs, parts[:group_at - 1])
                continue
            if info.get("type") == "directory":
                _add_parent_dirs(dirs, parts)
                continue
            _add_parent_dirs(dirs, parts[:-1])
            if layout.descend(parts[:-1]):
                stats.entries += 1
                yield _file_entry(rel, info)
        for d in sorted(dirs):
            if layout.descend(tuple(d.split("/")[:-1])):
                stats.entries += 1
                yield Entry(d, True, "dir")
        for rel, members in groups.items():
            stats.entries += 1
            yield _group_from_keys(rel, members)

    # ------------------------------------------------------------------ writing

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file so readers never see it half-written (temp name, then rename)."""
        if self.local_path is not None:
            full = Path(self.full(rel))
            full.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{full.name}.", suffix=".tmp", dir=full.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, full)
            except BaseException:
                with _suppress():
                    os.unlink(tmp)
                raise
            return
        self.fs.pipe_file(self.full(rel), data)  # an S3 PUT is atomic

    def makedirs(self, rel: str) -> None:
        if self.local_path is not None:
            os.makedirs(self.full(rel), exist_ok=True)
        # object stores have no directories

    def remove(self, rel: str, recursive: bool = False) -> None:
        full = self.full(rel)
        if self.local_path is not None:
            if os.path.isdir(full):
                import shutil

                shutil.rmtree(full)
            elif os.path.exists(full):
                os.unlink(full)
            return
        if self.fs.exists(full):
            self.fs.rm(full, recursive=recursive)

    def zarr_store(self, rel: str, read_only: bool = True) -> Any:
        """A zarr 3 store for the group at ``rel`` (LocalStore on disk, FsspecStore elsewhere)."""
        from zarr.storage import FsspecStore, LocalStore

        if self.local_path is not None:
            return LocalStore(self.full(rel), read_only=read_only)
        return FsspecStore.from_url(self.url_of(rel), storage_options=self.fs_args, read_only=read_only)

    def invalidate(self) -> None:
        """Drop listing caches so the next walk sees the tree as it is now."""
        if hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _add_parent_dirs(dirs: set[str], parts: list[str] | tuple[str, ...]) -> None:
    for i in range(1, len(parts) + 1):
        dirs.add("/".join(parts[:i]))


def _group_depth(parts: list[str]) -> int | None:
    """If ``parts`` lies inside a copick zarr group, how many leading parts name the group."""
    for depth in (2, 4):
        if len(parts) > depth and layout.is_zarr_group_dir(parts[:depth]):
            return depth
    return None


def _file_entry(rel: str, info: dict[str, Any]) -> Entry:
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    size = info.get("size")
    mtime = _mtime_of(info)
    token = f"{size}:{etag}" if etag else f"{size}:{mtime}"
    return Entry(rel, False, token, mtime, size)


def _mtime_of(info: dict[str, Any]) -> float | None:
    value = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _group_from_keys(rel: str, members: dict[str, dict[str, Any]]) -> Entry:
    items = []
    for sub, info in members.items():
        name = PurePosixPath(sub).name
        depth = sub.count("/")
        if name in ZARR_META_NAMES and depth <= 1:
            e = _file_entry(sub, info)
            items.append((sub, e.size or 0, e.fingerprint))
    return _group_entry(rel, items)


def _group_entry(rel: str, items: list[tuple[str, int, Any]]) -> Entry:
    items.sort()
    if not items:
        return Entry(rel, True, "zarr:empty", None, None, ())
    digest = hashlib.blake2b(repr(items).encode(), digest_size=12).hexdigest()
    mtimes = [i[2] for i in items if isinstance(i[2], int)]
    mtime = max(mtimes) / 1e9 if mtimes else None
    return Entry(rel, True, f"zarr:{digest}", mtime, None, tuple(i[0] for i in items))


def now() -> float:
    return time.time()

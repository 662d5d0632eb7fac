"""Project roots (static, overlay) on any fsspec filesystem, and listing them with fingerprints.

Callers never branch on the backend: a :class:`Root` lists, reads, writes and opens zarr stores
the same way whether it sits on local disk or S3. Listing yields one :class:`Entry` per file or
directory the path grammar cares about; a zarr group comes back as a single entry fingerprinted by
its metadata files, because its chunks say nothing the catalog stores and can number millions.

How a root is listed
--------------------
* **Local disk**: a ``scandir`` walk pruned by :func:`layout.descend`; a zarr group costs one
  ``scandir`` of the group plus a ``stat`` of each level's metadata. Directory listings are cheap
  locally, so nothing else is worth it.
* **S3** (s3fs): two walks, chosen per listing (see :meth:`Root.walk`):

  ``flat``
      one recursive, paginated ``ListObjectsV2`` of the root prefix (1,000 keys a request), filtered
      down to the grammar. Requests grow with the number of *keys*, not directories: a 2,000-run
      project without big tomograms is ~10 requests. But every zarr chunk key is a listed key.
  ``pruned``
      ``ls`` (delimiter listings) of only the directories :func:`layout.descend` wants, issued
      concurrently, never entering a ``*.zarr`` group: a group costs one ``ls`` of the group plus one
      short listing (at most :data:`LEVEL_LIST_KEYS` keys) per level, which returns that level's
      ``.zarray``/``.zattrs``/``zarr.json`` because those sort before the chunk keys (``zarr.json``,
      which can sort after them, is fetched with a ``HEAD`` when the short listing was cut off).
      Requests grow with the number of directories, but chunks never cost anything.

  ``auto`` (the default) is a probe: it starts the flat listing and decides at checkpoints (after
  2, 4, 8, … pages, so an abandoned probe costs at most as many pages again as a perfect early
  decision would have spent). From the keys seen so far it knows exactly how many requests the
  pruned walk would have needed for the same part of the tree (one per wanted directory, group
  and level), and compares the two walks for that part, assuming the rest of the tree looks alike:

  1. a round-trip model (a page costs 1 round trip + :data:`PAGE_KEY_COST` per key; pruned
     requests run :attr:`Root.concurrency` at a time, plus :data:`PRUNED_DEPTH` sequential ones).
     Trees of small files never get past this step: the flat listing wins by a wide margin.
  2. When the model favours pruning by :data:`SWITCH_MARGIN` (chunk keys dominate), it measures
     instead of trusting the model: the flat pages' wall time so far, against one small listing's
     latency and a burst of ``concurrency`` small listings (``concurrency + 1`` extra requests, once
     a walk). A server that really answers concurrently (AWS S3) makes pruning far faster; one that
     answers one request at a time (moto, a small MinIO) does not, and the flat listing continues.

  Nothing is stored between runs. Both walks produce identical entries and fingerprints (tests
  assert it), so a different choice on the next run never makes a reindex re-read anything.
* **Other fsspec filesystems**: ``flat`` through one ``fs.find`` (the default) or a sequential
  ``ls`` walk for ``pruned``.

Fingerprints on S3 are ``size:ETag`` (a content hash), so they are *exact*: unlike a local
``size:mtime``, they cannot look unchanged after a write in the same clock tick, and the indexer
does not need git's racily-clean re-check for them (:attr:`Entry.exact`).

Listing caches never serve a reindex: an S3 root's filesystem is a private instance with
s3fs's listing cache switched off, and the walks above call ``ListObjectsV2`` directly.
Credentials from ``fs_args`` never appear in :class:`RootError` messages (:meth:`Root.scrub`), nor
in records of the storage libraries' loggers (botocore logs request headers at DEBUG).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec

from . import layout
from .config import SECRET_KEYS
from .errors import RootError

log = logging.getLogger(__name__)

#: Files that describe a zarr group or array (format 2 and 3); nothing else inside a group is read.
ZARR_META_NAMES = (".zgroup", ".zattrs", ".zarray", "zarr.json", ".zmetadata")
LOCAL_PROTOCOLS = ("file", "local")
STRATEGIES = ("auto", "flat", "pruned")

#: Keys per ``ListObjectsV2`` page (S3's maximum).
PAGE_KEYS = 1000
#: Keys asked for when listing one level of a zarr group: its metadata sorts first, chunks after.
LEVEL_LIST_KEYS = 16
#: Concurrent requests of a pruned walk (and the connection pool size given to s3fs by default).
DEFAULT_CONCURRENCY = 32
#: Cost model of ``auto``, in units of one small request's round trip. A listing page costs one
#: round trip plus transfer and parsing that grow with its keys: a full 1,000-key page takes about
#: as long as five small listings on AWS S3 (on moto, far more).
PAGE_KEY_COST = 4.0 / 1000
#: Sequential round trips a pruned walk cannot avoid (root, ExperimentRuns, run, voxel spacing,
#: group, level): a fixed cost that keeps small trees on the flat listing.
PRUNED_DEPTH = 6
#: The pruned walk must be this many times cheaper before ``auto`` abandons the flat listing.
SWITCH_MARGIN = 2.0
#: First checkpoint (in pages) at which ``auto`` may switch; later ones double.
PROBE_FIRST_CHECK = 2


@dataclass(slots=True)
class Entry:
    """One listed item. ``fingerprint`` changes whenever the content the catalog reads changes.

    ``meta`` lists, for a zarr group, its metadata files relative to the group (``.zattrs``,
    ``0/.zarray``, …) so readers can fetch exactly those and nothing else. ``exact`` says the
    fingerprint is a content hash (an S3 ETag): equal fingerprints then mean equal content even for a
    file written a moment ago, so the racily-clean re-check is unnecessary.
    """

    path: str
    is_dir: bool
    fingerprint: str
    mtime: float | None = None
    size: int | None = None
    meta: tuple[str, ...] = field(default_factory=tuple)
    exact: bool = False


@dataclass(slots=True)
class ListingStats:
    """What a walk cost; the benchmark reports it and S3 tests assert it stays flat.

    ``list_calls`` counts listing requests (S3 pages, ``ls``, ``scandir``), ``stat_calls`` single-object
    requests (``HEAD``, ``stat``). ``strategy`` is the walk that produced the entries (``scandir``,
    ``flat``, ``pruned``, ``find``); ``probe_list_calls`` the pages of a flat listing that ``auto``
    abandoned for the pruned walk (included in ``list_calls``), and ``reason`` why it chose.
    """

    list_calls: int = 0
    stat_calls: int = 0
    entries: int = 0
    strategy: str = ""
    keys: int = 0
    chunk_keys: int = 0
    probe_list_calls: int = 0
    reason: str = ""


def _split_protocol(url: str) -> tuple[str, str]:
    if "://" in url:
        proto, rest = url.split("://", 1)
        return proto.lower(), rest
    return "", url


def _secret_values(value: Any) -> list[str]:
    """Every credential string inside (nested) fs_args, for scrubbing messages."""
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).lower() in SECRET_KEYS and isinstance(v, str) and v:
                out.append(v)
            else:
                out.extend(_secret_values(v))
    elif isinstance(value, list | tuple):
        for v in value:
            out.extend(_secret_values(v))
    return out


class _LogScrubber(logging.Filter):
    """Replaces known credentials in records of the storage libraries' loggers with ``***``.

    botocore logs every request's headers at DEBUG (the ``Authorization`` header names the access
    key id, ``x-amz-security-token`` carries a session token), and S3 error bodies can echo the key
    id; a user who turns on DEBUG logging to chase a problem must not leak credentials into a log.
    """

    PREFIXES = ("botocore", "aiobotocore", "s3fs", "aiohttp", "urllib3", "fsspec")

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def add(self, secrets: list[str]) -> None:
        self.secrets = sorted(set(self.secrets) | set(secrets), key=len, reverse=True)
        # Logger filters apply only to records of that very logger, so attach to each one.
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger) and name.split(".")[0] in self.PREFIXES \
                    and self not in logger.filters:
                logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = message
        for secret in self.secrets:
            scrubbed = scrubbed.replace(secret, "***")
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_LOG_SCRUBBER = _LogScrubber()


def _is_s3(fs: Any) -> bool:
    return type(fs).__module__.split(".")[0] == "s3fs" and hasattr(fs, "_call_s3")


class Root:
    """One root of a project (``layer`` is ``"static"`` or ``"overlay"``).

    ``strategy`` (``auto``, ``flat``, ``pruned``) chooses how an S3 root is listed (module
    docstring); tests and benchmarks force one, everyone else keeps ``auto``. ``concurrency`` bounds
    the requests a pruned walk has in flight (and sizes s3fs's connection pool unless fs_args set
    ``config_kwargs.max_pool_connections``). The attributes ``page_keys`` (listing page size) and
    ``calibrate`` (measure before switching) exist for tests, which shrink pages so a small tree
    behaves like a big one and need a deterministic choice.
    """

    def __init__(self, url: str, layer: str, fs_args: dict[str, Any] | None = None,
                 base_dir: Path | None = None, *, strategy: str = "auto",
                 concurrency: int = DEFAULT_CONCURRENCY) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
        self.layer = layer
        self.fs_args = dict(fs_args or {})
        self.strategy = strategy
        self.concurrency = max(1, int(concurrency))
        self.page_keys = PAGE_KEYS
        #: Let ``auto`` confirm the model with measured request times before switching (tests turn it
        #: off to make the choice deterministic).
        self.calibrate = True
        #: The stats of the last walk, for benchmarks and tests (the indexer keeps its own copy).
        self.last_stats: ListingStats | None = None
        self._secrets = sorted(set(_secret_values(self.fs_args)), key=len, reverse=True)
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
            self._s3: _S3 | None = None
            return
        self.local_path = None
        self.protocol = proto
        try:
            cls = fsspec.get_filesystem_class(proto)
        except (ValueError, ImportError) as exc:
            raise RootError(
                f"{layer} root {url!r}: unsupported URL scheme {proto!r} ({self.scrub(str(exc))}); use a local "
                "path, local://, file:// or s3://"
            ) from None
        try:
            # A private instance (fsspec's instance cache would share listing caches between runs),
            # and for S3 no listing cache at all: a reindex must see the tree as it is now.
            self.fs = cls(skip_instance_cache=True, **self._fs_kwargs(cls))
        except Exception as exc:
            raise RootError(f"{layer} root {url!r}: cannot open filesystem "
                            f"({type(exc).__name__}: {self.scrub(str(exc))})") from None
        self.base = cls._strip_protocol(url).rstrip("/")
        if not self.base:
            raise RootError(f"{layer} root {url!r} names no bucket or path")
        self.url = f"{proto}://{self.base}"
        self._s3 = _S3(self) if _is_s3(self.fs) else None
        if self._secrets:
            _LOG_SCRUBBER.add(self._secrets)  # the backend's modules (and loggers) exist by now

    def _fs_kwargs(self, cls: type) -> dict[str, Any]:
        kwargs = dict(self.fs_args)
        if cls.__module__.split(".")[0] == "s3fs":
            kwargs["use_listings_cache"] = False
            config = dict(kwargs.get("config_kwargs") or {})
            config.setdefault("max_pool_connections", self.concurrency)
            kwargs["config_kwargs"] = config
        return kwargs

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

    def scrub(self, text: str) -> str:
        """``text`` with every credential from this root's fs_args replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _root_error(self, what: str, exc: BaseException) -> RootError:
        """A :class:`RootError` for a failed request, naming the likely fix and no credentials."""
        if isinstance(exc, RootError):
            return exc
        if isinstance(exc, FileNotFoundError):
            hint = "the bucket does not exist; check the root URL and endpoint_url in the config"
        elif isinstance(exc, PermissionError):
            hint = "access denied; check the credentials or profile in the config's fs_args"
        else:
            hint = "check the endpoint, network and credentials in the config's fs_args"
        detail = self.scrub(f"{type(exc).__name__}: {exc}")
        return RootError(f"{self.layer} root {self.url}: cannot {what} ({detail}); {hint}")

    # ------------------------------------------------------------------ reading

    def exists(self, rel: str = "") -> bool:
        if self.local_path is not None:
            return os.path.exists(self.full(rel))
        if self._s3 is not None:
            try:
                return self._s3.run(self._s3.exists, rel, ListingStats())
            except Exception as exc:
                raise self._root_error(f"check {rel or 'the root'}", exc) from None
        return bool(self.fs.exists(self.full(rel)))

    def read_bytes(self, rel: str) -> bytes:
        if self.local_path is not None:
            with open(self.full(rel), "rb") as fh:
                return fh.read()
        if self._s3 is not None:
            # max_concurrency=1: otherwise s3fs first HEADs the object to see if it is worth ranged reads.
            return self.fs.cat_file(self.full(rel), max_concurrency=1)
        return self.fs.cat_file(self.full(rel))

    def read_many(self, rels: list[str]) -> dict[str, bytes | Exception]:
        """Read several small files; on S3 one concurrent round of GETs instead of one after another."""
        if self.local_path is not None or not rels:
            out: dict[str, bytes | Exception] = {}
            for rel in rels:
                try:
                    out[rel] = self.read_bytes(rel)
                except OSError as exc:
                    out[rel] = exc
            return out
        fulls = [self.full(r) for r in rels]
        extra = {"max_concurrency": 1} if self._s3 is not None else {}
        got = self.fs.cat(fulls, on_error="return", **extra)
        if not isinstance(got, dict):  # fsspec returns the bare value for a single path
            got = {fulls[0]: got}
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
        if self._s3 is not None:
            try:
                return self._s3.run(self._s3.fingerprint, rel, ListingStats())
            except Exception as exc:
                raise self._root_error(f"read {rel}", exc) from None
        try:
            info = self.fs.info(self.full(rel))
        except (FileNotFoundError, OSError):
            return None
        if info.get("type") == "directory":
            if layout.is_zarr_group_dir(parts):
                return self._generic_group(rel, ListingStats())
            return Entry(rel, True, "dir")
        return _file_entry(rel, info)

    # ------------------------------------------------------------------ listing

    def _single_entry(self, under: str, stats: ListingStats) -> list[Entry] | None:
        """For a scope naming one file or zarr group: ``[entry]``, or ``[]`` if it is gone; else None."""
        parts = tuple(under.split("/"))
        group = layout.is_zarr_group_dir(parts)
        if self.local_path is None and group:
            return None  # the remote walkers fingerprint a group scope with a short listing of their own
        if self.local_path is not None and not group and os.path.isdir(self.full(under)):
            return None  # a plain directory: walk it
        entry = self.fingerprint(under)
        if entry is None:
            return [] if group or self.local_path is not None else None
        if entry.is_dir and not group:
            return None
        stats.entries += 1
        return [entry]

    def walk(self, stats: ListingStats | None = None, under: str = "") -> Iterator[Entry]:
        """Every entry of interest below ``under`` (default: the whole root).

        Local roots use a pruned ``scandir`` walk; S3 roots a flat paginated listing or a pruned
        concurrent walk, chosen by :attr:`strategy` (module docstring); other filesystems one
        recursive ``find``. Failures to list raise :class:`RootError` (never an empty listing, which
        would look like every file vanished).

        ``under`` may name a single file or a zarr group (the object API and the watcher index exactly
        what they touched): that entry alone comes back, or nothing if it is gone.
        """
        stats = stats if stats is not None else ListingStats()
        self.last_stats = stats
        under = under.strip("/")
        if under:
            single = self._single_entry(under, stats)
            if single is not None:
                yield from single
                return
        if self.local_path is not None:
            stats.strategy = "scandir"
            yield from self._walk_local(stats, under)
            return
        self.invalidate()
        if self._secrets:
            _LOG_SCRUBBER.add(self._secrets)  # loggers the backend created since this root was made
        if self._s3 is not None:
            try:
                entries = self._s3.run(self._s3.walk, under, stats)
            except Exception as exc:
                raise self._root_error(f"list {under or 'the root'}", exc) from None
            yield from entries
            return
        try:
            entries = self._walk_generic(stats, under)
        except Exception as exc:
            raise self._root_error(f"list {under or 'the root'}", exc) from None
        yield from entries

    def _walk_local(self, stats: ListingStats, under: str) -> Iterator[Entry]:
        start = tuple(p for p in under.split("/") if p)  # group and file scopes were answered by walk()
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

    # ------------------------------------------------------------------ other fsspec filesystems

    def _walk_generic(self, stats: ListingStats, under: str) -> list[Entry]:
        start = tuple(p for p in under.split("/") if p)
        if start and layout.is_zarr_group_dir(start):
            entry = self._generic_group(under, stats)
            return [entry] if entry is not None else []
        if self.strategy == "pruned":
            stats.strategy = "pruned"
            return self._generic_pruned(stats, start)
        stats.strategy = "find"
        root = self.full(under)
        try:
            found = self.fs.find(root, detail=True, withdirs=True)
        except FileNotFoundError:
            found = {}
        stats.list_calls += 1
        flat = _FlatListing(start)
        prefix = self.base + "/"
        for full, info in found.items():
            if full.startswith(prefix):
                flat.add(full[len(prefix):], info, info.get("type") == "directory")
        return flat.finish(stats)

    def _generic_pruned(self, stats: ListingStats, start: tuple[str, ...]) -> list[Entry]:
        out: list[Entry] = []
        stack = [start]
        while stack:
            parts = stack.pop()
            try:
                listing = self.fs.ls(self.full("/".join(parts)), detail=True)
            except (FileNotFoundError, NotADirectoryError):
                continue
            stats.list_calls += 1
            for info in listing:
                name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
                child = (*parts, name)
                rel = "/".join(child)
                if info.get("type") == "directory":
                    if layout.is_zarr_group_dir(child):
                        entry = self._generic_group(rel, stats)
                        if entry is not None:
                            out.append(entry)
                        continue
                    out.append(Entry(rel, True, "dir"))
                    if layout.descend(child):
                        stack.append(child)
                elif layout.descend(parts):
                    out.append(_file_entry(rel, info))
        stats.entries += len(out)
        return out

    def _generic_group(self, rel: str, stats: ListingStats) -> Entry | None:
        members: dict[str, dict[str, Any]] = {}
        try:
            top = self.fs.ls(self.full(rel), detail=True)
        except FileNotFoundError:
            return None
        stats.list_calls += 1
        for info in top:
            name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
            if info.get("type") == "directory":
                if name.startswith("."):
                    continue
                stats.list_calls += 1
                for sub in self.fs.ls(self.full(f"{rel}/{name}"), detail=True):
                    sname = str(sub["name"]).rstrip("/").rsplit("/", 1)[-1]
                    if sub.get("type") != "directory" and sname in ZARR_META_NAMES:
                        members[f"{name}/{sname}"] = sub
            elif name in ZARR_META_NAMES:
                members[name] = info
        return _group_from_keys(rel, members)

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
                with contextlib.suppress(OSError):
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
        """A zarr 3 store for the group at ``rel`` (LocalStore on disk, FsspecStore elsewhere).

        FsspecStore needs an asynchronous filesystem, so it gets its own instance built from the
        same fs_args (fsspec caches it across calls); listing caches are off there too.
        """
        from zarr.storage import FsspecStore, LocalStore

        if self.local_path is not None:
            return LocalStore(self.full(rel), read_only=read_only)
        options = dict(self.fs_args)
        if self._s3 is not None:
            options["use_listings_cache"] = False
        try:
            return FsspecStore.from_url(self.url_of(rel), storage_options=options, read_only=read_only)
        except Exception as exc:
            raise self._root_error(f"open the zarr group {rel}", exc) from None

    def invalidate(self) -> None:
        """Drop listing caches so the next walk sees the tree as it is now."""
        if hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache()


# ----------------------------------------------------------------------------------------------
# S3


class _Ctx:
    """Per-call state of an S3 operation: its stats and the semaphore bounding requests in flight."""

    def __init__(self, stats: ListingStats, concurrency: int) -> None:
        self.stats = stats
        self.sem = asyncio.Semaphore(concurrency)
        #: (latency of one small listing, wall time per request of a concurrent burst), once measured
        self.calibration: tuple[float, float] | None = None


class _S3:
    """Listing and fingerprinting on S3 with raw ``ListObjectsV2``/``HeadObject`` calls.

    The calls go through s3fs's own client (``_call_s3``: its credentials, retries and error
    mapping to ``FileNotFoundError``/``PermissionError``), but not through its listing helpers,
    because the walks need page-by-page control (``auto``), bounded listings (group levels), and an
    exact count of the requests they make.
    """

    def __init__(self, root: Root) -> None:
        self.root = root
        self.fs: Any = root.fs
        bucket, key, _ = self.fs.split_path(root.base)
        self.bucket: str = bucket
        self.base_key: str = key.strip("/")

    # -- plumbing

    def run(self, coro_fn: Any, *args: Any) -> Any:
        """Run a coroutine of this class on s3fs's event loop and wait for it."""
        from fsspec.asyn import sync

        async def main() -> Any:
            ctx = _Ctx(args[-1], self.root.concurrency)
            return await coro_fn(*args[:-1], ctx)

        return sync(self.fs.loop, main)

    def prefix_of(self, rel: str) -> str:
        """The key prefix of the directory ``rel`` (with a trailing slash, or "" for a bucket root)."""
        key = "/".join(p for p in (self.base_key, rel) if p)
        return f"{key}/" if key else ""

    def key_of(self, rel: str) -> str:
        return "/".join(p for p in (self.base_key, rel) if p)

    async def _list(self, ctx: _Ctx, **kwargs: Any) -> dict[str, Any]:
        async with ctx.sem:
            ctx.stats.list_calls += 1
            return await self.fs._call_s3("list_objects_v2", Bucket=self.bucket, **kwargs)

    async def _head(self, ctx: _Ctx, key: str) -> dict[str, Any] | None:
        async with ctx.sem:
            ctx.stats.stat_calls += 1
            try:
                out = await self.fs._call_s3("head_object", Bucket=self.bucket, Key=key)
            except FileNotFoundError:
                return None
        return {"ETag": out.get("ETag", ""), "size": out.get("ContentLength"),
                "LastModified": out.get("LastModified")}

    async def _ls(self, ctx: _Ctx, prefix: str) -> tuple[list[dict[str, Any]], list[str]]:
        """A complete delimiter listing of ``prefix``: (objects, sub-prefixes)."""
        objects: list[dict[str, Any]] = []
        prefixes: list[str] = []
        kwargs: dict[str, Any] = {"Prefix": prefix, "Delimiter": "/", "MaxKeys": self.root.page_keys}
        while True:
            out = await self._list(ctx, **kwargs)
            objects.extend(out.get("Contents", []))
            prefixes.extend(p["Prefix"] for p in out.get("CommonPrefixes", []))
            if not out.get("IsTruncated"):
                return objects, prefixes
            kwargs["ContinuationToken"] = out["NextContinuationToken"]

    # -- single paths

    async def exists(self, rel: str, ctx: _Ctx) -> bool:
        if rel:
            key = self.key_of(rel)
            if await self._head(ctx, key) is not None:
                return True
        try:
            out = await self._list(ctx, Prefix=self.prefix_of(rel), MaxKeys=1)
        except FileNotFoundError:
            return False
        return bool(out.get("Contents") or out.get("CommonPrefixes"))

    async def fingerprint(self, rel: str, ctx: _Ctx) -> Entry | None:
        parts = tuple(rel.split("/"))
        if layout.is_zarr_group_dir(parts):
            return await self.group(rel, ctx)
        info = await self._head(ctx, self.key_of(rel))
        if info is not None:
            return _file_entry(rel, info)
        out = await self._list(ctx, Prefix=self.prefix_of(rel), MaxKeys=1)
        return Entry(rel, True, "dir") if out.get("Contents") or out.get("CommonPrefixes") else None

    async def group(self, rel: str, ctx: _Ctx) -> Entry | None:
        """Fingerprint a zarr group from its metadata only: one ``ls`` plus one short listing per level."""
        prefix = self.prefix_of(rel)
        objects, prefixes = await self._ls(ctx, prefix)
        if not objects and not prefixes:
            return None
        members: dict[str, dict[str, Any]] = {}
        for obj in objects:
            name = obj["Key"][len(prefix):]
            if name in ZARR_META_NAMES:
                members[name] = _info_of(obj)
        levels = [p[len(prefix):].rstrip("/") for p in prefixes]
        found = await asyncio.gather(*(self._level(ctx, prefix, lvl) for lvl in levels if not lvl.startswith(".")))
        for level_members in found:
            members.update(level_members)
        return _group_from_keys(rel, members)

    async def _level(self, ctx: _Ctx, prefix: str, level: str) -> dict[str, dict[str, Any]]:
        """The metadata files of one level, from a short listing: they sort before its chunk keys."""
        lp = f"{prefix}{level}/"
        out = await self._list(ctx, Prefix=lp, Delimiter="/", MaxKeys=LEVEL_LIST_KEYS)
        found: dict[str, dict[str, Any]] = {}
        last = ""
        for obj in out.get("Contents", []):
            name = obj["Key"][len(lp):]
            last = max(last, name)
            if name in ZARR_META_NAMES:
                found[name] = _info_of(obj)
        for p in out.get("CommonPrefixes", []):
            last = max(last, p["Prefix"][len(lp):])
        if out.get("IsTruncated"):
            # Cut off: a metadata name sorting after the last key returned (zarr.json after '0.0.0'
            # chunk keys) may exist further on; ask for it directly instead of listing the chunks.
            later = [n for n in ZARR_META_NAMES if n not in found and n > last]
            heads = await asyncio.gather(*(self._head(ctx, lp + n) for n in later))
            for name, info in zip(later, heads, strict=True):
                if info is not None:
                    found[name] = info
        return {f"{level}/{name}": info for name, info in found.items()}

    # -- walks

    async def walk(self, under: str, ctx: _Ctx) -> list[Entry]:
        stats = ctx.stats
        start = tuple(p for p in under.split("/") if p)
        if start and layout.is_zarr_group_dir(start):
            stats.strategy = "pruned"
            entry = await self.group(under, ctx)
            stats.entries += entry is not None
            return [entry] if entry is not None else []
        strategy = self.root.strategy
        if strategy in ("flat", "auto"):
            flat = _FlatListing(start)
            done = await self._flat(ctx, under, flat, switch=strategy == "auto")
            if done:
                stats.strategy = "flat"
                stats.keys, stats.chunk_keys = flat.keys, flat.chunk_keys
                if strategy == "auto":
                    stats.reason = flat.last_check or "the flat listing finished before the first checkpoint"
                return flat.finish(stats)
            stats.probe_list_calls = stats.list_calls
        stats.strategy = "pruned"
        out: list[Entry] = []
        await self._pruned_dir(ctx, start, out)
        stats.entries += len(out)
        return out

    async def _flat(self, ctx: _Ctx, under: str, flat: _FlatListing, *, switch: bool) -> bool:
        """Page through the whole prefix; with ``switch``, return False early if pruning is better."""
        base_prefix = self.prefix_of("")
        kwargs: dict[str, Any] = {"Prefix": self.prefix_of(under), "MaxKeys": self.root.page_keys}
        pages, check_at = 0, PROBE_FIRST_CHECK
        started = time.perf_counter()
        while True:
            out = await self._list(ctx, **kwargs)
            pages += 1
            for obj in out.get("Contents", []):
                key = obj["Key"]
                if not key.startswith(base_prefix):
                    continue
                rel = key[len(base_prefix):]
                if rel.endswith("/"):  # a "directory marker" object some tools create
                    flat.add(rel.rstrip("/"), {}, True)
                elif rel:
                    flat.add(rel, _info_of(obj), False)
            if not out.get("IsTruncated"):
                return True
            kwargs["ContinuationToken"] = out["NextContinuationToken"]
            if switch and pages >= check_at:
                check_at *= 2
                verdict = flat.prefer_pruned(pages, self.root.concurrency)
                if verdict and self.root.calibrate:
                    # The model says pruning pays if requests really run concurrently: measure it.
                    single, per_request = await self._calibrate(ctx, flat)
                    verdict = flat.prefer_pruned_measured(pages, time.perf_counter() - started, single,
                                                          per_request, self.root.concurrency)
                if verdict:
                    ctx.stats.reason = verdict
                    ctx.stats.keys, ctx.stats.chunk_keys = flat.keys, flat.chunk_keys
                    log.info("%s root %s: %s; switching to the pruned walk", self.root.layer, self.root.url,
                             verdict)
                    return False

    async def _calibrate(self, ctx: _Ctx, flat: _FlatListing) -> tuple[float, float]:
        """Time one small listing, then a burst of ``concurrency`` of them (once per walk).

        Returns (latency, wall time per request in the burst): the second is what a pruned walk's
        request really costs here, which is latency/concurrency on S3 but a full request time on a
        server that answers one at a time (moto, a small MinIO).
        """
        if ctx.calibration is None:
            dirs = [d for d in sorted(flat.dirs) if _reachable(tuple(d.split("/")))][:self.root.concurrency] or [""]
            probe = {"Delimiter": "/", "MaxKeys": LEVEL_LIST_KEYS}
            t0 = time.perf_counter()
            await self._list(ctx, Prefix=self.prefix_of(dirs[0]), **probe)
            t1 = time.perf_counter()
            n = self.root.concurrency
            await asyncio.gather(*(self._list(ctx, Prefix=self.prefix_of(dirs[i % len(dirs)]), **probe)
                                   for i in range(n)))
            ctx.calibration = (t1 - t0, (time.perf_counter() - t1) / n)
        return ctx.calibration

    async def _pruned_dir(self, ctx: _Ctx, parts: tuple[str, ...], out: list[Entry]) -> None:
        """List one directory; recurse (concurrently) into the ones the grammar wants."""
        rel = "/".join(parts)
        prefix = self.prefix_of(rel)
        objects, prefixes = await self._ls(ctx, prefix)
        if layout.descend(parts):
            for obj in objects:
                name = obj["Key"][len(prefix):]
                if name:  # "" is the directory marker of this very directory
                    out.append(_file_entry("/".join((*parts, name)), _info_of(obj)))
        tasks = []
        for p in prefixes:
            name = p[len(prefix):].rstrip("/")
            child = (*parts, name)
            child_rel = "/".join(child)
            if layout.is_zarr_group_dir(child):
                tasks.append(self._group_into(ctx, child_rel, out))
                continue
            out.append(Entry(child_rel, True, "dir"))
            if layout.descend(child):
                tasks.append(self._pruned_dir(ctx, child, out))
        if tasks:
            await asyncio.gather(*tasks)

    async def _group_into(self, ctx: _Ctx, rel: str, out: list[Entry]) -> None:
        entry = await self.group(rel, ctx)
        if entry is not None:
            out.append(entry)


class _FlatListing:
    """Turns a flat key listing into grammar entries, and prices the pruned walk of the same keys.

    Only what the grammar needs is kept (files in wanted directories, directories, group metadata);
    chunk keys are counted and dropped, so a listing of millions of chunks stays small in memory.
    """

    def __init__(self, start: tuple[str, ...]) -> None:
        self.start = start
        self.files: dict[str, dict[str, Any]] = {}
        self.dirs: set[str] = set()
        self.groups: dict[str, dict[str, dict[str, Any]]] = {}
        self.levels: set[str] = set()
        self.keys = 0
        self.chunk_keys = 0
        self.last_check = ""

    def _add_dirs(self, parts: list[str] | tuple[str, ...]) -> None:
        for i in range(len(self.start) + 1, len(parts) + 1):
            self.dirs.add("/".join(parts[:i]))

    def add(self, rel: str, info: dict[str, Any], is_dir: bool) -> None:
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            return
        self.keys += 0 if is_dir else 1
        group_at = _group_depth(parts)
        if group_at is not None and _reachable(tuple(parts[:group_at - 1])):
            group = "/".join(parts[:group_at])
            members = self.groups.setdefault(group, {})
            self._add_dirs(parts[:group_at - 1])
            sub = parts[group_at:]
            if len(sub) >= 2 and not sub[0].startswith("."):
                self.levels.add(f"{group}/{sub[0]}")
            if not is_dir and _is_group_meta(sub):
                members["/".join(sub)] = info
            elif not is_dir:
                self.chunk_keys += 1
            return
        if is_dir:
            if layout.is_zarr_group_dir(parts) and _reachable(tuple(parts[:-1])):
                self.groups.setdefault(rel, {})  # the marker object of a group directory
                self._add_dirs(parts[:-1])
            else:
                self._add_dirs(parts)
            return
        self._add_dirs(parts[:-1])
        if _reachable(tuple(parts[:-1])):
            self.files[rel] = info

    def pruned_requests(self) -> int:
        """Requests a pruned walk would make for the keys seen so far (one per listing)."""
        listed = {""} | {d for d in self.dirs if _reachable(tuple(d.split("/")))}
        return len(listed) + len(self.groups) + len(self.levels)

    def prefer_pruned(self, pages: int, concurrency: int) -> str:
        """Why the pruned walk would be clearly faster for the keys seen so far ("" if it would not)."""
        flat_cost = pages + self.keys * PAGE_KEY_COST
        pruned = self.pruned_requests()
        pruned_cost = pruned / concurrency + PRUNED_DEPTH
        self.last_check = (f"after {pages} pages ({self.keys} keys, {self.chunk_keys} of them zarr chunks) the "
                           f"pruned walk needed {pruned} requests, {concurrency} at a time (~{pruned_cost:.0f} "
                           f"round trips) against ~{flat_cost:.0f} for the flat listing")
        return self.last_check if pruned_cost * SWITCH_MARGIN < flat_cost else ""

    def prefer_pruned_measured(self, pages: int, flat_seconds: float, latency: float, per_request: float,
                               concurrency: int) -> str:
        """Like :meth:`prefer_pruned`, with measured times instead of the round-trip model."""
        pruned = self.pruned_requests()
        pruned_seconds = pruned * per_request + PRUNED_DEPTH * latency
        self.last_check = (f"after {pages} pages ({self.keys} keys, {self.chunk_keys} of them zarr chunks, "
                           f"{flat_seconds:.2f} s) the pruned walk needed {pruned} requests; measured "
                           f"{per_request * 1000:.1f} ms a request {concurrency} at a time and {latency * 1000:.0f} ms "
                           f"latency: ~{pruned_seconds:.2f} s")
        return self.last_check if pruned_seconds * SWITCH_MARGIN < flat_seconds else ""

    def finish(self, stats: ListingStats) -> list[Entry]:
        out = [_file_entry(rel, info) for rel, info in self.files.items()]
        for d in sorted(self.dirs):
            parts = tuple(d.split("/"))
            if _reachable(parts[:-1]) and d not in self.groups:
                out.append(Entry(d, True, "dir"))
        out.extend(_group_from_keys(rel, members) for rel, members in self.groups.items())
        stats.entries += len(out)
        return out


# ----------------------------------------------------------------------------------------------
# helpers


@lru_cache(maxsize=65536)
def _reachable(parts: tuple[str, ...]) -> bool:
    """Whether a walk from the root lists the directory ``parts`` (it and every ancestor descend)."""
    return all(layout.descend(parts[:i]) for i in range(len(parts) + 1))


def _group_depth(parts: list[str]) -> int | None:
    """If ``parts`` lies inside a copick zarr group, how many leading parts name the group."""
    for depth in (2, 4):
        if len(parts) > depth and layout.is_zarr_group_dir(parts[:depth]):
            return depth
    return None


def _is_group_meta(sub: list[str] | tuple[str, ...]) -> bool:
    """Whether a path inside a group (split) is one of the metadata files a fingerprint covers."""
    if len(sub) == 1:
        return sub[0] in ZARR_META_NAMES
    return len(sub) == 2 and not sub[0].startswith(".") and sub[1] in ZARR_META_NAMES


def _info_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The parts of a ``ListObjectsV2`` entry a fingerprint uses, named like s3fs's info dicts."""
    return {"ETag": obj.get("ETag", ""), "size": obj.get("Size"), "LastModified": obj.get("LastModified")}


def _file_entry(rel: str, info: dict[str, Any]) -> Entry:
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    size = info.get("size")
    mtime = _mtime_of(info)
    token = f"{size}:{etag}" if etag else f"{size}:{mtime}"
    return Entry(rel, False, token, mtime, size, exact=bool(etag))


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
    exact = True
    for sub, info in members.items():
        if not _is_group_meta(PurePosixPath(sub).parts):
            continue
        e = _file_entry(sub, info)
        exact = exact and e.exact
        items.append((sub, e.size or 0, e.fingerprint))
    entry = _group_entry(rel, items)
    entry.exact = exact and bool(items)
    return entry


def _group_entry(rel: str, items: list[tuple[str, int, Any]]) -> Entry:
    items.sort()
    if not items:
        return Entry(rel, True, "zarr:empty", None, None, ())
    digest = hashlib.blake2b(repr(items).encode(), digest_size=12).hexdigest()
    mtimes = [i[2] for i in items if isinstance(i[2], int)]
    mtime = max(mtimes) / 1e9 if mtimes else None
    return Entry(rel, True, f"zarr:{digest}", mtime, None, tuple(i[0] for i in items))

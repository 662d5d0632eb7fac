"""The interface every project root implements, and the listing records it yields.

A root is one of a project's two trees (``layer`` static or overlay) on some storage. Callers (the
indexer, ``.open()``, the object API's write-through, the daemon) use only this interface and never
ask which storage is behind it: listing (:meth:`Root.walk`), fingerprinting one path, reading
bounded payloads, atomic writes of files and whole zarr groups, and setting content aside so a
failed catalog write can put it back.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ...errors import PayloadError, RootError
from ...secrets import LOG_SCRUBBER, scrub, secret_values
from .. import grammar
from ..scopes import RunSlice

log = logging.getLogger(__name__)

#: Files that describe a zarr group or array (format 2 and 3); nothing else inside a group is read.
ZARR_META_NAMES = (".zgroup", ".zattrs", ".zarray", "zarr.json", ".zmetadata")


@dataclass(slots=True)
class Entry:
    """One listed item. ``fingerprint`` changes whenever the content the catalog reads changes.

    ``meta`` lists, for a zarr group, its metadata files relative to the group (``.zattrs``,
    ``0/.zarray``, …) so readers can fetch exactly those and nothing else. ``exact`` says the
    fingerprint is a content hash (an S3 ETag): equal fingerprints then mean equal content even for a
    file written a moment ago, so the racily-clean re-check is unnecessary. ``error`` is set when the
    item could not be examined (a directory that cannot be listed, a symlink loop): the indexer records
    it and keeps whatever it knew below that path.
    """

    path: str
    is_dir: bool
    fingerprint: str
    mtime: float | None = None
    size: int | None = None
    meta: tuple[str, ...] = field(default_factory=tuple)
    exact: bool = False
    error: str | None = None


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


class Root(ABC):
    """One root of a project. Subclasses: :class:`LocalRoot`, :class:`FsspecRoot`, :class:`S3Root`.

    ``local_path`` is the directory on this machine for roots that have one (the daemon watches it
    with inotify); ``read_concurrency`` is how many payload reads are worth issuing at once.
    """

    protocol: str
    base: str
    url: str
    local_path: Path | None = None
    read_concurrency: int = 1
    #: Whether :meth:`walk_share` can split a listing into shares of run directories (local roots).
    shareable: bool = False

    def __init__(self, layer: str, fs_args: dict[str, Any] | None = None) -> None:
        self.layer = layer
        self.fs_args = dict(fs_args or {})
        self._secrets = secret_values(self.fs_args)
        #: The stats of the last walk, for benchmarks and tests (the indexer keeps its own copy).
        self.last_stats: ListingStats | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.layer}, {self.url})"

    # ------------------------------------------------------------------ paths and messages

    def full(self, rel: str) -> str:
        """The backend path (no protocol) of a relative path."""
        return f"{self.base}/{rel}" if rel else self.base

    def url_of(self, rel: str) -> str:
        return f"{self.protocol}://{self.full(rel)}"

    def scrub(self, text: str) -> str:
        """``text`` with every credential from this root's fs_args (and any URL user info) masked."""
        return scrub(text, self._secrets)

    def _register_secrets(self) -> None:
        if self._secrets:
            LOG_SCRUBBER.add(self._secrets)

    def root_error(self, what: str, exc: BaseException) -> RootError:
        """A :class:`RootError` for a failed request, naming the likely fix and no credentials."""
        if isinstance(exc, RootError):
            return exc
        if isinstance(exc, FileNotFoundError):
            hint = "the bucket or directory does not exist; check the root URL (and endpoint_url) in the config"
        elif isinstance(exc, PermissionError):
            hint = "access denied; check the credentials or profile in the config's fs_args, or file permissions"
        elif isinstance(exc, TimeoutError):
            hint = "the storage did not answer in time; check the network and endpoint, then index again"
        else:
            hint = "check the endpoint, network and credentials in the config's fs_args"
        detail = self.scrub(f"{type(exc).__name__}: {exc}")
        return RootError(f"{self.layer} root {self.scrub(self.url)}: cannot {what} ({detail}); {hint}")

    # ------------------------------------------------------------------ reading

    @abstractmethod
    def exists(self, rel: str = "") -> bool:
        """Whether ``rel`` (a file, directory or key prefix) exists."""

    @abstractmethod
    def read_bytes(self, rel: str, limit: int | None = None) -> bytes:
        """The content of a regular file; :class:`PayloadError` if it is not one or exceeds ``limit`` bytes."""

    @abstractmethod
    def open_read(self, rel: str) -> IO[bytes]:
        """A binary file object on a regular file, for reading one too big to hold in memory."""

    @abstractmethod
    def read_head(self, rel: str, n: int) -> bytes:
        """The first ``n`` bytes of a regular file (an MRC header), without reading the rest."""

    def read_many(self, rels: list[str], limit: int | None = None) -> dict[str, bytes | Exception]:
        """Several small files; a failure is returned in place of that file's bytes."""
        out: dict[str, bytes | Exception] = {}
        for rel in rels:
            try:
                out[rel] = self.read_bytes(rel, limit)
            except (OSError, PayloadError) as exc:
                out[rel] = exc
        return out

    @abstractmethod
    def fingerprint(self, rel: str) -> Entry | None:
        """Fingerprint one path the way :meth:`walk` would, or None if it does not exist."""

    def walk(self, stats: ListingStats | None = None, under: str = "") -> Iterator[Entry]:
        """Every entry of interest below ``under`` (default: the whole root).

        Failures to list the root itself raise :class:`RootError` (never an empty listing, which would
        look like every file vanished); a directory below it that cannot be listed is an entry with
        ``error`` set. ``under`` may name a single file or a zarr group (the object API and the daemon
        index exactly what they touched): that entry alone comes back, or nothing if it is gone.
        """
        stats = stats if stats is not None else ListingStats()
        self.last_stats = stats
        under = under.strip("/")
        if under:
            single = self._single_entry(under, stats)
            if single is not None:
                yield from single
                return
        yield from self._walk(stats, under)

    def _single_entry(self, under: str, stats: ListingStats) -> list[Entry] | None:
        """For a scope naming one file or zarr group: ``[entry]``, or ``[]`` if it is gone; else None."""
        entry = self.fingerprint(under)
        group = grammar.is_zarr_group_dir(tuple(under.split("/")))
        if entry is None:
            return [] if group or self.local_path is not None else None
        if entry.is_dir and not group:
            return None  # a plain directory: walk it
        stats.entries += 1
        return [entry]

    def walk_share(
        self, stats: ListingStats, under: str, share: tuple[int, int], runs: RunSlice | None = None
    ) -> Iterator[Entry]:
        """Share ``share[0]`` of ``share[1]`` of a walk of ``under`` (the root or ``ExperimentRuns``): the
        run directories whose names hash to it and, for share 0, everything outside the runs. The shares
        together list exactly what :meth:`walk` lists. With ``runs``, only that slice's run directories
        (and what lies outside the runs only if the slice takes it). Only :attr:`shareable` roots split."""
        raise NotImplementedError(f"{type(self).__name__} lists in one piece")

    def count_runs(self) -> int:
        """How many entries ``ExperimentRuns`` holds (0 if it cannot be listed), to size a shared walk."""
        return len(self.run_entries() or ())

    def run_entries(self) -> list[Any] | None:
        """The entries of ``ExperimentRuns`` (each with a ``name``; empty if it cannot be listed), or None
        where listing them costs as much as the whole walk (object stores): such a root is walked in one pass."""
        return None

    @abstractmethod
    def _walk(self, stats: ListingStats, under: str) -> Iterator[Entry]:
        """List the subtree ``under`` (a directory, or the whole root)."""

    def expect(self, known: Callable[[], Iterable[str]]) -> None:  # noqa: B027 - a hint most roots ignore
        """Before a walk: ``known()`` gives the paths the catalog holds below this root (only called if used).

        A hint, never the truth: a root whose listing can be split uses it to choose where (S3 lists key
        ranges cut at these paths all at once instead of page after page); the walk still lists everything.
        """

    @abstractmethod
    def invalidate(self) -> None:
        """Drop listing caches so the next walk sees the tree as it is now."""

    # ------------------------------------------------------------------ writing

    @abstractmethod
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file so readers never see it half-written."""

    @abstractmethod
    def makedirs(self, rel: str) -> None:
        """Create a directory and its parents (nothing to do on object stores)."""

    @abstractmethod
    def remove(self, rel: str, recursive: bool = False) -> None:
        """Remove a file, or a directory / group with ``recursive``; a missing path is not an error."""

    @abstractmethod
    def zarr_store(self, rel: str, read_only: bool = True) -> Any:
        """A zarr store for the group at ``rel`` (zarr 2 or 3, whichever is installed)."""

    def write_group(self, rel: str, fill: Callable[[Any], object]) -> Backup | None:
        """Replace the zarr group at ``rel`` with what ``fill(store)`` writes; return the old group's backup.

        Object stores have no rename, so the default moves the old group aside (a copy) and writes in
        place; :class:`LocalRoot` writes into a hidden sibling and renames it into place, so readers
        never see a half-written group. A failure leaves the old group where it was.
        """
        old = self.move_aside(rel, group=True)
        try:
            fill(self.zarr_store(rel, read_only=False))
        except BaseException:
            self.restore(old, rel, group=True)
            raise
        return old

    def backup(self, rel: str, group: bool) -> Backup | None:
        """Remember what ``rel`` holds (None if nothing); the path itself is left as it is."""
        if not self.exists(rel):
            return None
        if not group:
            return Backup(rel, False, data=self.read_bytes(rel))
        aside = hidden_sibling(rel, "bak")
        self._copy_tree(rel, aside)
        return Backup(rel, True, aside=aside)

    def move_aside(self, rel: str, group: bool) -> Backup | None:
        """Empty ``rel``, keeping its content for :meth:`restore` (None if there was nothing)."""
        kept = self.backup(rel, group)
        if kept is not None:
            self.remove(rel, recursive=group)
        return kept

    def restore(self, backup: Backup | None, rel: str, group: bool) -> None:
        """Put back what ``backup`` holds, or remove ``rel`` if nothing was there before."""
        if backup is None:
            self.remove(rel, recursive=group)
        elif backup.aside is not None:
            self.remove(rel, recursive=True)
            self._move_tree(backup.aside, rel)
        elif backup.data is not None:
            self.write_bytes(rel, backup.data)

    def discard(self, backup: Backup | None) -> None:
        """Forget a backup whose change stuck."""
        if backup is not None and backup.aside is not None:
            self.remove(backup.aside, recursive=True)

    @abstractmethod
    def _copy_tree(self, src: str, dst: str) -> None:
        """Copy a directory tree (a zarr group) within this root."""

    def _move_tree(self, src: str, dst: str) -> None:
        self._copy_tree(src, dst)
        self.remove(src, recursive=True)


@dataclass(slots=True)
class Backup:
    """What a path held before a change: a file's bytes, or the hidden copy of a group."""

    rel: str
    group: bool
    data: bytes | None = None
    aside: str | None = None


def hidden_sibling(rel: str, tag: str) -> str:
    """A name next to ``rel`` that the path grammar ignores (hidden, and not ending in ``.zarr``)."""
    parent, _, name = rel.rpartition("/")
    hidden = f".{name}.{tag}-{uuid.uuid4().hex[:12]}"
    return f"{parent}/{hidden}" if parent else hidden


# ----------------------------------------------------------------------------------------------
# fingerprints shared by the walkers


def is_group_meta(sub: list[str] | tuple[str, ...]) -> bool:
    """Whether a path inside a group (split) is one of the metadata files a fingerprint covers."""
    if len(sub) == 1:
        return sub[0] in ZARR_META_NAMES
    return len(sub) == 2 and not sub[0].startswith(".") and sub[1] in ZARR_META_NAMES


def file_entry(rel: str, info: dict[str, Any]) -> Entry:
    """An entry from an fsspec/S3 info dict: ``size:ETag`` when there is an ETag, else ``size:mtime``."""
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    size = info.get("size")
    mtime = mtime_of(info)
    token = f"{size}:{etag}" if etag else f"{size}:{mtime}"
    return Entry(rel, False, token, mtime, size, exact=bool(etag))


def mtime_of(info: dict[str, Any]) -> float | None:
    value = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def group_from_keys(rel: str, members: dict[str, dict[str, Any]]) -> Entry:
    """A group entry from the info dicts of its metadata files (keys relative to the group)."""
    items: list[tuple[str, int, Any]] = []
    exact = True
    for sub, info in members.items():
        if not is_group_meta(PurePosixPath(sub).parts):
            continue
        e = file_entry(sub, info)
        exact = exact and e.exact
        items.append((sub, e.size or 0, e.fingerprint))
    entry = group_entry(rel, items)
    entry.exact = exact and bool(items)
    return entry


def group_entry(rel: str, items: list[tuple[str, int, Any]]) -> Entry:
    """A group entry whose fingerprint hashes (name, size, token) of each metadata file."""
    items.sort()
    if not items:
        return Entry(rel, True, "zarr:empty", None, None, ())
    digest = hashlib.blake2b(repr(items).encode(), digest_size=12).hexdigest()
    mtimes = [i[2] for i in items if isinstance(i[2], int)]
    mtime = max(mtimes) / 1e9 if mtimes else None
    return Entry(rel, True, f"zarr:{digest}", mtime, None, tuple(i[0] for i in items))


__all__ = [
    "ZARR_META_NAMES",
    "Backup",
    "Entry",
    "ListingStats",
    "Root",
    "file_entry",
    "group_entry",
    "group_from_keys",
    "hidden_sibling",
    "is_group_meta",
    "mtime_of",
]

"""A root on any fsspec filesystem other than the local disk (SSH, SMB, HTTP, GCS, …); S3 refines it.

Listing is one recursive ``fs.find`` (``flat``, the default) filtered by the grammar, or a sequential
``ls`` walk that never enters a zarr group (``pruned``). Listing caches never serve a reindex: each
root gets a private filesystem instance, and its cache is dropped before every walk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from ...errors import PayloadError, RootError
from .. import grammar
from .base import ZARR_META_NAMES, Entry, ListingStats, Root, file_entry, group_from_keys
from .flat import FlatListing

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "flat", "pruned")
#: Concurrent requests of a pruned S3 walk (and the connection pool size given to s3fs by default).
DEFAULT_CONCURRENCY = 32
#: Keys per ``ListObjectsV2`` page (S3's maximum).
PAGE_KEYS = 1000


@dataclass
class WalkSettings:
    """How a remote root is listed. Tests and benchmarks force a strategy; everyone else keeps ``auto``.

    ``concurrency`` bounds the requests a pruned walk has in flight; ``page_keys`` (listing page size)
    and ``calibrate`` (measure request times before switching) exist for tests, which shrink pages so a
    small tree behaves like a big one and need a deterministic choice.
    """

    strategy: str = "auto"
    concurrency: int = DEFAULT_CONCURRENCY
    page_keys: int = PAGE_KEYS
    calibrate: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}")
        self.concurrency = max(1, int(self.concurrency))


class FsspecRoot(Root):
    """A root on an fsspec filesystem; ``fs`` is a private instance built from the config's fs_args."""

    read_concurrency = 16

    def __init__(
        self,
        url: str,
        protocol: str,
        layer: str,
        fs_args: dict[str, Any] | None = None,
        settings: WalkSettings | None = None,
    ) -> None:
        import fsspec

        super().__init__(layer, fs_args)
        self.protocol = protocol
        self.settings = settings or WalkSettings()
        try:
            cls = fsspec.get_filesystem_class(protocol)
        except (ValueError, ImportError) as exc:
            raise RootError(
                f"{layer} root {self.scrub(url)!r}: unsupported URL scheme {protocol!r} ({self.scrub(str(exc))}); "
                "use a local path, local://, file:// or s3://"
            ) from None
        try:
            # A private instance: fsspec's instance cache would share listing caches between runs.
            self.fs: Any = cls(skip_instance_cache=True, **self._fs_kwargs(cls))
        except Exception as exc:
            raise RootError(
                f"{layer} root {self.scrub(url)!r}: cannot open filesystem "
                f"({type(exc).__name__}: {self.scrub(str(exc))})"
            ) from None
        self.base = str(cls._strip_protocol(url)).rstrip("/")
        if not self.base:
            raise RootError(f"{layer} root {self.scrub(url)!r} names no bucket or path")
        # some filesystems (HTTP) keep the scheme in their paths: never write it twice
        self.url = self.base if "://" in self.base else f"{protocol}://{self.base}"
        self._register_secrets()  # the backend's modules (and loggers) exist by now

    def _fs_kwargs(self, cls: type) -> dict[str, Any]:
        return dict(self.fs_args)

    def url_of(self, rel: str) -> str:
        full = self.full(rel)
        return full if "://" in full else f"{self.protocol}://{full}"

    # ------------------------------------------------------------------ reading

    def exists(self, rel: str = "") -> bool:
        try:
            return bool(self.fs.exists(self.full(rel)))
        except Exception as exc:
            raise self.root_error(f"check {rel or 'the root'}", exc) from None

    def read_bytes(self, rel: str, limit: int | None = None) -> bytes:
        full = self.full(rel)
        if limit is None:
            return bytes(self.fs.cat_file(full, **self._cat_kwargs()))
        data = bytes(self.fs.cat_file(full, start=0, end=limit + 1, **self._cat_kwargs()))
        if len(data) > limit:
            raise self.too_large(rel, limit)
        return data

    def too_large(self, rel: str, limit: int) -> PayloadError:
        return PayloadError(
            self.url_of(rel), f"is over the {limit:,}-byte limit for this kind of file; split it, or raise the limit"
        )

    def _cat_kwargs(self) -> dict[str, Any]:
        return {}

    def open_read(self, rel: str) -> IO[bytes]:
        return self.fs.open(self.full(rel), "rb")  # type: ignore[no-any-return]

    def read_head(self, rel: str, n: int) -> bytes:
        return bytes(self.fs.cat_file(self.full(rel), start=0, end=n, **self._cat_kwargs()))

    def read_many(self, rels: list[str], limit: int | None = None) -> dict[str, bytes | Exception]:
        """Several small files in one concurrent round of GETs instead of one after another."""
        if not rels or limit is not None:
            return super().read_many(rels, limit)
        fulls = [self.full(r) for r in rels]
        got = self.fs.cat(fulls, on_error="return", **self._cat_kwargs())
        if not isinstance(got, dict):  # fsspec returns the bare value for a single path
            got = {fulls[0]: got}
        return {rel: got.get(full, FileNotFoundError(full)) for rel, full in zip(rels, fulls, strict=True)}

    def fingerprint(self, rel: str) -> Entry | None:
        try:
            info = self.fs.info(self.full(rel))
        except (FileNotFoundError, OSError):
            return None
        if info.get("type") == "directory":
            if grammar.is_zarr_group_dir(tuple(rel.split("/"))):
                return self._group(rel, ListingStats())
            return Entry(rel, True, "dir")
        return file_entry(rel, info)

    def invalidate(self) -> None:
        if hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache()

    def _walk(self, stats: ListingStats, under: str) -> Iterator[Entry]:
        self.invalidate()
        self._register_secrets()  # loggers the backend created since this root was made
        try:
            entries = self._walk_generic(stats, under)
        except Exception as exc:
            raise self.root_error(f"list {under or 'the root'}", exc) from None
        yield from entries

    def _walk_generic(self, stats: ListingStats, under: str) -> list[Entry]:
        start = tuple(p for p in under.split("/") if p)
        if start and grammar.is_zarr_group_dir(start):
            entry = self._group(under, stats)
            return [entry] if entry is not None else []
        if self.settings.strategy == "pruned":
            stats.strategy = "pruned"
            return self._pruned(stats, start)
        stats.strategy = "find"
        try:
            found = self.fs.find(self.full(under), detail=True, withdirs=True)
        except FileNotFoundError:
            found = {}
        stats.list_calls += 1
        flat = FlatListing(start)
        prefix = self.base + "/"
        for full, info in found.items():
            if full.startswith(prefix):
                flat.add(full[len(prefix) :], info, info.get("type") == "directory")
        return flat.finish(stats)

    def _pruned(self, stats: ListingStats, start: tuple[str, ...]) -> list[Entry]:
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
                    if grammar.is_zarr_group_dir(child):
                        entry = self._group(rel, stats)
                        if entry is not None:
                            out.append(entry)
                        continue
                    out.append(Entry(rel, True, "dir"))
                    if grammar.descend(child):
                        stack.append(child)
                elif grammar.descend(parts):
                    out.append(file_entry(rel, info))
        stats.entries += len(out)
        return out

    def _group(self, rel: str, stats: ListingStats) -> Entry | None:
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
        return group_from_keys(rel, members)

    # ------------------------------------------------------------------ writing

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self.full(rel), data)  # one PUT: object stores replace objects atomically

    def makedirs(self, rel: str) -> None:
        """Object stores have no directories; other filesystems create them on write (auto_mkdir)."""

    def remove(self, rel: str, recursive: bool = False) -> None:
        full = self.full(rel)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=recursive)

    def zarr_store(self, rel: str, read_only: bool = True) -> Any:
        from ...formats import zarrio

        try:
            return zarrio.fsspec_store(self.url_of(rel), self._store_options(), read_only=read_only)
        except Exception as exc:
            raise self.root_error(f"open the zarr group {rel}", exc) from None

    def _store_options(self) -> dict[str, Any]:
        return dict(self.fs_args)

    def _copy_tree(self, src: str, dst: str) -> None:
        self.fs.copy(self.full(src), self.full(dst), recursive=True)


__all__ = ["DEFAULT_CONCURRENCY", "PAGE_KEYS", "STRATEGIES", "FsspecRoot", "WalkSettings"]

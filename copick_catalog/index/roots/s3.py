"""S3 roots (s3fs): listing with raw ``ListObjectsV2`` calls, choosing between a flat and a pruned walk.

Two walks, chosen per listing:

``flat``
    one recursive, paginated ``ListObjectsV2`` of the root prefix (1,000 keys a request), filtered
    down to the grammar. Requests grow with the number of *keys*, not directories: a 2,000-run
    project without big tomograms is ~10 requests. But every zarr chunk key is a listed key.
``pruned``
    ``ls`` (delimiter listings) of only the directories :func:`grammar.descend` wants, issued
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

1. a round-trip model (a page costs 1 round trip + ``PAGE_KEY_COST`` per key; pruned requests
   run ``concurrency`` at a time, plus ``PRUNED_DEPTH`` sequential ones). Trees of small files
   never get past this step: the flat listing wins by a wide margin.
2. When the model favours pruning by ``SWITCH_MARGIN`` (chunk keys dominate), it measures
   instead of trusting the model: the flat pages' wall time so far, against one small listing's
   latency and a burst of ``concurrency`` small listings. A server that really answers
   concurrently (AWS S3) makes pruning far faster; one that answers one request at a time (moto, a
   small MinIO) does not, and the flat listing continues.

A flat listing is cut into key ranges listed at once (``StartAfter`` one boundary, ending at the
next, with the two boundaries' common prefix), instead of one page after another: at the paths the
catalog held when the indexer passes them (:meth:`S3Root.expect`; a reindex of an unchanged tree then
costs about as many requests as one listing, in one round trip), else, for a root bigger than a few
pages, at its run directories (named by one delimiter listing of ``ExperimentRuns/``). Requests still
grow with keys (a page per ~1,000), not with directories.

Nothing is stored between runs. Both walks produce identical entries and fingerprints (tests
assert it), so a different choice on the next run never makes a reindex re-read anything.
Fingerprints on S3 are ``size:ETag`` (a content hash), so they are *exact*: they cannot look
unchanged after a write in the same clock tick (:attr:`Entry.exact`). The calls go through s3fs's
own client (its credentials, retries and error mapping), not its listing helpers, whose listing
cache must never serve a reindex and which give no page-by-page control.

Payload reads (the indexer's GETs, thousands per full index) go through obstore when it is installed
and the fs_args allow (:mod:`.s3get`): the same requests for a fraction of botocore's CPU, many at once
(:data:`FAST_READ_CONCURRENCY`); anything that fails there except a missing key is retried through s3fs.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ...errors import PayloadError
from .. import grammar
from .base import ZARR_META_NAMES, Entry, ListingStats, file_entry, group_from_keys
from .flat import FlatListing, reachable
from .remote import FsspecRoot, WalkSettings
from .s3get import FastGetError, ObjectTooLarge, fast_getter

log = logging.getLogger(__name__)

#: Keys asked for when listing one level of a zarr group: its metadata sorts first, chunks after.
LEVEL_LIST_KEYS = 16
#: First checkpoint (in pages) at which ``auto`` may switch; later ones double.
PROBE_FIRST_CHECK = 2
#: Payload reads in flight when they go through obstore: enough to hide 50-100 ms round trips behind
#: each other; each costs a thread that mostly waits with the GIL released.
FAST_READ_CONCURRENCY = 64
#: Reads in a row that obstore fails and s3fs serves before a root stops trying obstore.
FAST_MISSES_BEFORE_GIVING_UP = 8
#: A key range of a split flat listing holds this share of a page of the paths the catalog knew, so the
#: keys added since (and the metadata keys of zarr groups, one path each) still fit in one page mostly.
RANGE_FILL = 0.9
#: A tree listed without hints is split (at its runs) only after this many pages: smaller trees cost the
#: same requests as before, and the pages tell how many keys a run holds.
SPLIT_MIN_PAGES = 3
#: With hints, a tree whose catalogued paths fill at least this many pages is split (its keys are more:
#: files the catalog ignores, zarr chunks).
SPLIT_MIN_HINTED_PAGES = 2
#: Keys a zarr group path stands for when cutting ranges at the catalog's paths (its metadata files; chunks
#: are not counted, so ranges holding big groups take a few more pages).
GROUP_KEYS = 6
#: Keys per run assumed when the first pages of a listing held no run at all.
DEFAULT_KEYS_PER_RUN = 10.0


class S3Root(FsspecRoot):
    """A root in an S3 bucket (or an S3-compatible server through ``endpoint_url``).

    ``fast_reads`` and ``slow_reads`` count payload reads through obstore and through s3fs (the benchmark
    reports them).
    """

    def __init__(
        self, url: str, layer: str, fs_args: dict[str, Any] | None = None, settings: WalkSettings | None = None
    ) -> None:
        super().__init__(url, "s3", layer, fs_args, settings)
        self.walker = S3Walker(self.fs, self.base, self.settings, f"{layer} root {self.scrub(self.url)}")
        self._fast = fast_getter(self.fs, self.walker.bucket, self.fs_args)
        if self._fast is not None:
            self.read_concurrency = FAST_READ_CONCURRENCY
        self._fast_misses = 0  # reads obstore failed and s3fs then served, since the last one obstore served
        self.fast_reads = 0
        self.slow_reads = 0

    def _fs_kwargs(self, cls: type) -> dict[str, Any]:
        # no listing cache: a reindex must see the bucket as it is now
        kwargs = dict(self.fs_args, use_listings_cache=False)
        config = dict(kwargs.get("config_kwargs") or {})
        config.setdefault("max_pool_connections", self.settings.concurrency)
        kwargs["config_kwargs"] = config
        return kwargs

    def _cat_kwargs(self) -> dict[str, Any]:
        # max_concurrency=1: otherwise s3fs first HEADs the object to see if it is worth ranged reads
        return {"max_concurrency": 1}

    def _store_options(self) -> dict[str, Any]:
        return dict(self.fs_args, use_listings_cache=False)

    # ------------------------------------------------------------------ payload reads

    def read_bytes(self, rel: str, limit: int | None = None) -> bytes:
        fast = self._fast
        if fast is not None:
            try:
                data = fast.get(self.walker.key_of(rel), limit)
            except ObjectTooLarge:
                raise self.too_large(rel, limit or 0) from None
            except FastGetError as exc:
                return self._slow_read(rel, limit, exc)
            self.fast_reads += 1
            self._fast_misses = 0
            return data
        self.slow_reads += 1
        return super().read_bytes(rel, limit)

    def read_head(self, rel: str, n: int) -> bytes:
        fast = self._fast
        if fast is not None:
            try:
                data = fast.head_bytes(self.walker.key_of(rel), n)
            except FastGetError as exc:
                self._fell_back(exc)
            else:
                self.fast_reads += 1
                return data
        self.slow_reads += 1
        return super().read_head(rel, n)

    def read_many(self, rels: list[str], limit: int | None = None) -> dict[str, bytes | Exception]:
        fast = self._fast
        if fast is None or not rels or _loop_running():
            return super().read_many(rels, limit)
        got = fast.get_many([self.walker.key_of(r) for r in rels], limit)
        out: dict[str, bytes | Exception] = {}
        for rel, item in zip(rels, got, strict=True):
            if isinstance(item, ObjectTooLarge):
                out[rel] = self.too_large(rel, limit or 0)
            elif isinstance(item, FastGetError):
                try:
                    out[rel] = self._slow_read(rel, limit, item)
                except (OSError, PayloadError) as exc:
                    out[rel] = exc
            else:
                out[rel] = item
                self.fast_reads += not isinstance(item, Exception)
        return out

    def _slow_read(self, rel: str, limit: int | None, exc: FastGetError) -> bytes:
        """Read through s3fs after obstore failed; s3fs's error, if it fails too, is the one the user sees."""
        data = super().read_bytes(rel, limit)
        self.slow_reads += 1
        self._fell_back(exc)
        return data

    def _fell_back(self, exc: FastGetError) -> None:
        """Count a read obstore failed but s3fs served; after a few in a row, stop trying obstore."""
        self._fast_misses += 1
        if self._fast_misses >= FAST_MISSES_BEFORE_GIVING_UP and self._fast is not None:
            self._fast = None
            self.read_concurrency = FsspecRoot.read_concurrency
            log.info(
                "%s root %s: reads through obstore failed (%s); reading through s3fs from now on",
                self.layer,
                self.scrub(self.url),
                self.scrub(str(exc)),
            )

    # ------------------------------------------------------------------ listing

    def exists(self, rel: str = "") -> bool:
        try:
            return bool(self.walker.run(self.walker.exists, rel, ListingStats()))
        except Exception as exc:
            raise self.root_error(f"check {rel or 'the root'}", exc) from None

    def fingerprint(self, rel: str) -> Entry | None:
        try:
            return self.walker.run(self.walker.fingerprint, rel, ListingStats())  # type: ignore[no-any-return]
        except Exception as exc:
            raise self.root_error(f"read {rel}", exc) from None

    def expect(self, known: Callable[[], Iterable[str]]) -> None:
        self.walker.expect(known)

    def _single_entry(self, under: str, stats: ListingStats) -> list[Entry] | None:
        if grammar.is_zarr_group_dir(tuple(under.split("/"))):
            return None  # the walker fingerprints a group scope with a short listing of its own
        return super()._single_entry(under, stats)

    def _walk(self, stats: ListingStats, under: str) -> Iterator[Entry]:
        self._register_secrets()
        try:
            entries = self.walker.run(self.walker.walk, under, stats)
        except Exception as exc:
            raise self.root_error(f"list {under or 'the root'}", exc) from None
        yield from entries


class _Range:
    """What listing one key range did: keys taken, and where to resume if it stopped early."""

    def __init__(self) -> None:
        self.taken = 0
        self.resume: str | None = None


class _Hints:
    """The paths the catalog held below a walk's start, sorted, each weighed by the keys it stands for."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.weights = [GROUP_KEYS if p.endswith(".zarr") else 1 for p in paths]
        self.total = sum(self.weights)

    @classmethod
    def of(cls, known: Callable[[], Iterable[str]], under: str) -> _Hints:
        inside = f"{under}/" if under else ""
        return cls(sorted(p for p in known() if p.startswith(inside)))

    def _span(self, lo: str | None, hi: str | None) -> range:
        start = 0 if lo is None else bisect.bisect_right(self.paths, lo)
        stop = len(self.paths) if hi is None else bisect.bisect_right(self.paths, hi)
        return range(start, stop)

    def weight(self, lo: str | None, hi: str | None) -> int:
        """The weight of the paths after ``lo`` up to ``hi``."""
        return sum(self.weights[i] for i in self._span(lo, hi))

    def cut(self, fill: float, lo: str | None = None, hi: str | None = None) -> list[tuple[str | None, str | None]]:
        """``(lo, hi]`` cut into ranges of about ``fill`` weight each, at the paths: ``[(lo, b1), …, (bn, hi)]``."""
        bounds: list[str | None] = [lo]
        filled = 0.0
        span = self._span(lo, hi)
        for i in span[:-1]:
            filled += self.weights[i]
            if filled >= fill:
                bounds.append(self.paths[i])
                filled = 0.0
        return list(itertools.pairwise([*bounds, hi]))


class _Probe:
    """State shared by the concurrent ranges of one flat listing: pages so far, and ``auto``'s verdict."""

    def __init__(self, switch: bool) -> None:
        self.switch = switch
        self.pages = 0
        self.check_at = PROBE_FIRST_CHECK
        self.started = time.perf_counter()
        self.checking = False
        self.abandoned = False


class _Ctx:
    """Per-call state of an S3 operation: its stats and the semaphore bounding requests in flight."""

    def __init__(self, stats: ListingStats, concurrency: int) -> None:
        self.stats = stats
        self.sem = asyncio.Semaphore(concurrency)
        #: (latency of one small listing, wall time per request of a concurrent burst), once measured
        self.calibration: tuple[float, float] | None = None
        self.in_flight = 0
        self.peak = 0  # the most listing requests in flight at once


class S3Walker:
    """Listing and fingerprinting on S3 with raw ``ListObjectsV2``/``HeadObject`` calls.

    The calls go through s3fs's own client (``_call_s3``: its credentials, retries and error
    mapping to ``FileNotFoundError``/``PermissionError``), but not through its listing helpers,
    because the walks need page-by-page control (``auto``), bounded listings (group levels), and an
    exact count of the requests they make.
    """

    def __init__(self, fs: Any, base: str, settings: WalkSettings, describe: str = "S3 root") -> None:
        self.fs = fs
        self.settings = settings
        self.describe = describe  # for log messages: which root this walker lists
        bucket, key, _ = fs.split_path(base)
        self.bucket: str = bucket
        self.base_key: str = key.strip("/")
        self._known: Callable[[], Iterable[str]] | None = None
        #: key ranges the last flat listing was split into, and the most listing requests it had in flight
        self.last_ranges = 0
        self.last_split = ""  # where the ranges were cut
        self.last_peak = 0

    def expect(self, known: Callable[[], Iterable[str]] | None) -> None:
        """Paths the catalog holds below the root, for the next walk only: where to split its listing."""
        self._known = known

    # -- plumbing

    def run(self, coro_fn: Any, *args: Any) -> Any:
        """Run a coroutine of this class on s3fs's event loop and wait for it."""
        from fsspec.asyn import sync

        async def main() -> Any:
            ctx = _Ctx(args[-1], self.settings.concurrency)
            try:
                return await coro_fn(*args[:-1], ctx)
            finally:
                self.last_peak = ctx.peak

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
            ctx.in_flight += 1
            ctx.peak = max(ctx.peak, ctx.in_flight)
            try:
                return await self.fs._call_s3("list_objects_v2", Bucket=self.bucket, **kwargs)
            finally:
                ctx.in_flight -= 1

    async def _head(self, ctx: _Ctx, key: str) -> dict[str, Any] | None:
        async with ctx.sem:
            ctx.stats.stat_calls += 1
            try:
                out = await self.fs._call_s3("head_object", Bucket=self.bucket, Key=key)
            except FileNotFoundError:
                return None
        return {"ETag": out.get("ETag", ""), "size": out.get("ContentLength"), "LastModified": out.get("LastModified")}

    async def _ls(self, ctx: _Ctx, prefix: str) -> tuple[list[dict[str, Any]], list[str]]:
        """A complete delimiter listing of ``prefix``: (objects, sub-prefixes)."""
        objects: list[dict[str, Any]] = []
        prefixes: list[str] = []
        kwargs: dict[str, Any] = {"Prefix": prefix, "Delimiter": "/", "MaxKeys": self.settings.page_keys}
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
        if grammar.is_zarr_group_dir(parts):
            return await self.group(rel, ctx)
        info = await self._head(ctx, self.key_of(rel))
        if info is not None:
            return file_entry(rel, info)
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
            name = obj["Key"][len(prefix) :]
            if name in ZARR_META_NAMES:
                members[name] = info_of(obj)
        levels = [p[len(prefix) :].rstrip("/") for p in prefixes]
        found = await asyncio.gather(*(self._level(ctx, prefix, lvl) for lvl in levels if not lvl.startswith(".")))
        for level_members in found:
            members.update(level_members)
        return group_from_keys(rel, members)

    async def _level(self, ctx: _Ctx, prefix: str, level: str) -> dict[str, dict[str, Any]]:
        """The metadata files of one level, from a short listing: they sort before its chunk keys."""
        lp = f"{prefix}{level}/"
        out = await self._list(ctx, Prefix=lp, Delimiter="/", MaxKeys=LEVEL_LIST_KEYS)
        found: dict[str, dict[str, Any]] = {}
        last = ""
        for obj in out.get("Contents", []):
            name = obj["Key"][len(lp) :]
            last = max(last, name)
            if name in ZARR_META_NAMES:
                found[name] = info_of(obj)
        for p in out.get("CommonPrefixes", []):
            last = max(last, p["Prefix"][len(lp) :])
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
        if start and grammar.is_zarr_group_dir(start):
            stats.strategy = "pruned"
            entry = await self.group(under, ctx)
            stats.entries += entry is not None
            return [entry] if entry is not None else []
        strategy = self.settings.strategy
        if strategy in ("flat", "auto"):
            flat = FlatListing(start)
            done = await self._flat(ctx, under, flat, switch=strategy == "auto")
            if done:
                stats.strategy = "flat"
                stats.keys, stats.chunk_keys = flat.keys, flat.chunk_keys
                if strategy == "auto":
                    stats.reason = flat.last_check or "the flat listing finished before the first checkpoint"
                if self.last_ranges > 1:
                    split = f"listed as {self.last_ranges} key ranges at once, cut {self.last_split}"
                    stats.reason = f"{stats.reason}; {split}" if stats.reason else split
                return flat.finish(stats)
            stats.probe_list_calls = stats.list_calls
        stats.strategy = "pruned"
        out: list[Entry] = []
        await self._pruned_dir(ctx, start, out)
        stats.entries += len(out)
        return out

    async def _flat(self, ctx: _Ctx, under: str, flat: FlatListing, *, switch: bool) -> bool:
        """Page through the whole prefix; with ``switch``, return False early if pruning is better.

        The prefix is cut into key ranges listed concurrently, each page after page: at the paths the
        catalog held (:meth:`_split_at_hints`), or, without them, a big root (more than ``SPLIT_MIN_PAGES``
        pages) at its run directories after its first pages (:meth:`_split_at_runs`). A small tree is
        one range: exactly one paginated listing.
        """
        probe = _Probe(switch)
        self.last_ranges = 1
        known, self._known = self._known, None
        hints = _Hints.of(known, under) if known is not None else None
        if hints is not None and hints.total >= SPLIT_MIN_HINTED_PAGES * self.settings.page_keys * RANGE_FILL:
            await self._split_at_hints(ctx, under, hints, flat, probe)
            return not probe.abandoned
        first = SPLIT_MIN_PAGES if not under else None
        done = await self._flat_range(ctx, under, None, None, flat, probe, max_pages=first)
        if done.resume is not None and not probe.abandoned:
            await self._split_at_runs(ctx, done.resume, flat, probe)
        return not probe.abandoned

    async def _split_at_hints(self, ctx: _Ctx, under: str, hints: _Hints, flat: FlatListing, probe: _Probe) -> None:
        """List ``under`` as key ranges cut at the paths the catalog held, all at once.

        One range from the middle goes first: how many keys a catalogued path stands for here (files
        the grammar ignores, zarr chunks) sizes the others, so each of them is about one page.
        """
        fill = self.settings.page_keys * RANGE_FILL
        mid = hints.cut(fill)
        lo, hi = mid[len(mid) // 2]
        first = await self._flat_range(ctx, under, lo, hi, flat, probe)
        weight = hints.weight(lo, hi)
        ratio = max(first.taken / weight, 1.0) if weight else 1.0
        rest = (hints.cut(fill / ratio, None, lo) if lo is not None else []) + (
            hints.cut(fill / ratio, hi, None) if hi is not None else []
        )
        self.last_ranges = 1 + len(rest)
        self.last_split = "at the paths the catalog held"
        await _all([asyncio.ensure_future(self._flat_range(ctx, under, a, b, flat, probe)) for a, b in rest])

    async def _split_at_runs(self, ctx: _Ctx, last: str, flat: FlatListing, probe: _Probe) -> None:
        """List the rest of a big root (every key after ``last``) as key ranges of whole runs, at once.

        One delimiter listing of the runs directory (a page per 1,000 runs) names the runs still to come;
        every few of them (as many as filled ``RANGE_FILL`` of a page so far) end a range, and each range
        starts while the next runs are still being named.
        """
        base_prefix = self.prefix_of("")
        runs = sum(1 for d in flat.dirs if d.count("/") == 1 and d.startswith(grammar.RUNS_DIR + "/"))
        keys_per_run = flat.keys / runs if runs else DEFAULT_KEYS_PER_RUN
        per = max(1, int(self.settings.page_keys * RANGE_FILL / max(keys_per_run, 1.0)))
        kwargs: dict[str, Any] = {
            "Prefix": self.prefix_of(grammar.RUNS_DIR),
            "Delimiter": "/",
            "MaxKeys": self.settings.page_keys,
            "StartAfter": base_prefix + last,
        }
        tasks: list[asyncio.Future[_Range]] = []
        lo: str = last
        upcoming: list[str] = []
        while not probe.abandoned:
            out = await self._list(ctx, **kwargs)
            upcoming.extend(p["Prefix"][len(base_prefix) :] for p in out.get("CommonPrefixes", []))
            while len(upcoming) > per:
                hi, upcoming = upcoming[per - 1], upcoming[per:]
                tasks.append(asyncio.ensure_future(self._flat_range(ctx, "", lo, hi, flat, probe)))
                lo = hi
            if not out.get("IsTruncated"):
                break
            kwargs.pop("StartAfter", None)
            kwargs["ContinuationToken"] = out["NextContinuationToken"]
        tasks.append(asyncio.ensure_future(self._flat_range(ctx, "", lo, None, flat, probe)))
        self.last_ranges = 1 + len(tasks)
        self.last_split = f"at every {per} runs after the first {SPLIT_MIN_PAGES} pages"
        await _all(tasks)

    async def _flat_range(
        self,
        ctx: _Ctx,
        under: str,
        lo: str | None,
        hi: str | None,
        flat: FlatListing,
        probe: _Probe,
        max_pages: int | None = None,
    ) -> _Range:
        """List the keys after ``lo`` up to ``hi`` (paths relative to the root; None: open ended).

        Every key between two strings starts with their common prefix, so a range is asked for with that
        prefix (the server then sorts fewer keys) and ``StartAfter`` ``lo``; pages end at ``hi``. After
        ``max_pages`` pages with more to come, stops and says where to resume.
        """
        base_prefix = self.prefix_of("")
        prefix = self.prefix_of(under) if lo is None or hi is None else base_prefix + _common_prefix(lo, hi)
        kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": self.settings.page_keys}
        if lo is not None:
            kwargs["StartAfter"] = base_prefix + lo
        end = None if hi is None else base_prefix + hi
        pages = 0
        done = _Range()
        while not probe.abandoned:
            out = await self._list(ctx, **kwargs)
            probe.pages += 1
            pages += 1
            past_end = False
            last = ""
            for obj in out.get("Contents", []):
                key = obj["Key"]
                if end is not None and key > end:
                    past_end = True  # the next range's keys
                    break
                if not key.startswith(base_prefix):
                    continue
                rel = last = key[len(base_prefix) :]
                done.taken += 1
                if rel.endswith("/"):  # a "directory marker" object some tools create
                    flat.add(rel.rstrip("/"), {}, True)
                elif rel:
                    flat.add(rel, info_of(obj), False)
            if past_end or not out.get("IsTruncated"):
                return done
            if max_pages is not None and pages >= max_pages and last:
                done.resume = last
                return done
            kwargs.pop("StartAfter", None)
            kwargs["ContinuationToken"] = out["NextContinuationToken"]
            if probe.switch and probe.pages >= probe.check_at and not probe.checking:
                await self._checkpoint(ctx, flat, probe)
        return done

    async def _checkpoint(self, ctx: _Ctx, flat: FlatListing, probe: _Probe) -> None:
        """``auto``: decide from the pages so far whether to abandon the flat listing for the pruned walk."""
        probe.checking = True
        try:
            probe.check_at *= 2
            pages = probe.pages
            verdict = flat.prefer_pruned(pages, self.settings.concurrency)
            if verdict and self.settings.calibrate:
                # The model says pruning pays if requests really run concurrently: measure it.
                single, per_request = await self._calibrate(ctx, flat)
                verdict = flat.prefer_pruned_measured(
                    pages, time.perf_counter() - probe.started, single, per_request, self.settings.concurrency
                )
            if verdict and not probe.abandoned:
                probe.abandoned = True
                ctx.stats.reason = verdict
                ctx.stats.keys, ctx.stats.chunk_keys = flat.keys, flat.chunk_keys
                log.info("%s: %s; switching to the pruned walk", self.describe, verdict)
        finally:
            probe.checking = False

    async def _calibrate(self, ctx: _Ctx, flat: FlatListing) -> tuple[float, float]:
        """Time one small listing, then a burst of ``concurrency`` of them (once per walk).

        Returns (latency, wall time per request in the burst): the second is what a pruned walk's
        request really costs here, which is latency/concurrency on S3 but a full request time on a
        server that answers one at a time (moto, a small MinIO).
        """
        if ctx.calibration is None:
            dirs = [d for d in sorted(flat.dirs) if reachable(tuple(d.split("/")))][: self.settings.concurrency] or [""]
            probe = {"Delimiter": "/", "MaxKeys": LEVEL_LIST_KEYS}
            t0 = time.perf_counter()
            await self._list(ctx, Prefix=self.prefix_of(dirs[0]), **probe)
            t1 = time.perf_counter()
            n = self.settings.concurrency
            await asyncio.gather(
                *(self._list(ctx, Prefix=self.prefix_of(dirs[i % len(dirs)]), **probe) for i in range(n))
            )
            ctx.calibration = (t1 - t0, (time.perf_counter() - t1) / n)
        return ctx.calibration

    async def _pruned_dir(self, ctx: _Ctx, parts: tuple[str, ...], out: list[Entry]) -> None:
        """List one directory; recurse (concurrently) into the ones the grammar wants."""
        rel = "/".join(parts)
        prefix = self.prefix_of(rel)
        objects, prefixes = await self._ls(ctx, prefix)
        if grammar.descend(parts):
            for obj in objects:
                name = obj["Key"][len(prefix) :]
                if name:  # "" is the directory marker of this very directory
                    out.append(file_entry("/".join((*parts, name)), info_of(obj)))
        tasks = []
        for p in prefixes:
            name = p[len(prefix) :].rstrip("/")
            child = (*parts, name)
            child_rel = "/".join(child)
            if grammar.is_zarr_group_dir(child):
                tasks.append(self._group_into(ctx, child_rel, out))
                continue
            out.append(Entry(child_rel, True, "dir"))
            if grammar.descend(child):
                tasks.append(self._pruned_dir(ctx, child, out))
        if tasks:
            await asyncio.gather(*tasks)

    async def _group_into(self, ctx: _Ctx, rel: str, out: list[Entry]) -> None:
        entry = await self.group(rel, ctx)
        if entry is not None:
            out.append(entry)


# ----------------------------------------------------------------------------------------------


async def _all(tasks: list[asyncio.Future[_Range]]) -> None:
    """Wait for every range; if one fails, cancel the others (nothing keeps listing after an error)."""
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _common_prefix(a: str, b: str) -> str:
    """The longest string both start with (character by character: S3 prefixes are not path components)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def _loop_running() -> bool:
    """Whether this thread runs an event loop (then a blocking ``asyncio.run`` is not allowed here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def info_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The parts of a ``ListObjectsV2`` entry a fingerprint uses, named like s3fs's info dicts."""
    return {"ETag": obj.get("ETag", ""), "size": obj.get("Size"), "LastModified": obj.get("LastModified")}


__all__ = ["FAST_READ_CONCURRENCY", "LEVEL_LIST_KEYS", "S3Root", "S3Walker"]

"""Turning a flat key listing (S3 ``ListObjectsV2``, fsspec ``find``) into grammar entries.

A flat listing returns every key below a prefix, zarr chunks included. :class:`FlatListing` keeps only
what the path grammar needs (files in wanted directories, directories, the metadata of each group),
counting and dropping chunk keys so a listing of millions of chunks stays small in memory, and it
prices the pruned walk of the same keys so the S3 walker can decide which of the two to finish with.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .. import grammar
from .base import Entry, ListingStats, file_entry, group_from_keys, is_group_meta

#: Cost model of the S3 ``auto`` strategy, in units of one small request's round trip. A listing page
#: costs one round trip plus transfer and parsing that grow with its keys: a full 1,000-key page takes
#: about as long as five small listings on AWS S3 (on moto, far more).
PAGE_KEY_COST = 4.0 / 1000
#: Sequential round trips a pruned walk cannot avoid (root, ExperimentRuns, run, voxel spacing,
#: group, level): a fixed cost that keeps small trees on the flat listing.
PRUNED_DEPTH = 6
#: The pruned walk must be this many times cheaper before ``auto`` abandons the flat listing.
SWITCH_MARGIN = 2.0


class FlatListing:
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
        group_at = _inside_group(parts)
        if group_at is not None and reachable(tuple(parts[: group_at - 1])):
            group = "/".join(parts[:group_at])
            members = self.groups.setdefault(group, {})
            self._add_dirs(parts[: group_at - 1])
            sub = parts[group_at:]
            if len(sub) >= 2 and not sub[0].startswith("."):
                self.levels.add(f"{group}/{sub[0]}")
            if not is_dir and is_group_meta(sub):
                members["/".join(sub)] = info
            elif not is_dir:
                self.chunk_keys += 1
            return
        if is_dir:
            if grammar.is_zarr_group_dir(parts) and reachable(tuple(parts[:-1])):
                self.groups.setdefault(rel, {})  # the marker object of a group directory
                self._add_dirs(parts[:-1])
            else:
                self._add_dirs(parts)
            return
        self._add_dirs(parts[:-1])
        if reachable(tuple(parts[:-1])):
            self.files[rel] = info

    def pruned_requests(self) -> int:
        """Requests a pruned walk would make for the keys seen so far (one per listing)."""
        listed = {""} | {d for d in self.dirs if reachable(tuple(d.split("/")))}
        return len(listed) + len(self.groups) + len(self.levels)

    def prefer_pruned(self, pages: int, concurrency: int) -> str:
        """Why the pruned walk would be clearly faster for the keys seen so far ("" if it would not)."""
        flat_cost = pages + self.keys * PAGE_KEY_COST
        pruned = self.pruned_requests()
        pruned_cost = pruned / concurrency + PRUNED_DEPTH
        self.last_check = (
            f"after {pages} pages ({self.keys} keys, {self.chunk_keys} of them zarr chunks) the "
            f"pruned walk needed {pruned} requests, {concurrency} at a time (~{pruned_cost:.0f} "
            f"round trips) against ~{flat_cost:.0f} for the flat listing"
        )
        return self.last_check if pruned_cost * SWITCH_MARGIN < flat_cost else ""

    def prefer_pruned_measured(
        self, pages: int, flat_seconds: float, latency: float, per_request: float, concurrency: int
    ) -> str:
        """Like :meth:`prefer_pruned`, with measured times instead of the round-trip model."""
        pruned = self.pruned_requests()
        pruned_seconds = pruned * per_request + PRUNED_DEPTH * latency
        self.last_check = (
            f"after {pages} pages ({self.keys} keys, {self.chunk_keys} of them zarr chunks, "
            f"{flat_seconds:.2f} s) the pruned walk needed {pruned} requests; measured "
            f"{per_request * 1000:.1f} ms a request {concurrency} at a time and {latency * 1000:.0f} ms "
            f"latency: ~{pruned_seconds:.2f} s"
        )
        return self.last_check if pruned_seconds * SWITCH_MARGIN < flat_seconds else ""

    def finish(self, stats: ListingStats) -> list[Entry]:
        # sorted: the same entries in the same order however the keys arrived (key ranges listed at once)
        out = [file_entry(rel, info) for rel, info in sorted(self.files.items())]
        for d in sorted(self.dirs):
            parts = tuple(d.split("/"))
            if reachable(parts[:-1]) and d not in self.groups:
                out.append(Entry(d, True, "dir"))
        out.extend(group_from_keys(rel, members) for rel, members in sorted(self.groups.items()))
        stats.entries += len(out)
        return out


@lru_cache(maxsize=65536)
def reachable(parts: tuple[str, ...]) -> bool:
    """Whether a walk from the root lists the directory ``parts`` (it and every ancestor descend)."""
    return all(grammar.descend(parts[:i]) for i in range(len(parts) + 1))


def _inside_group(parts: list[str]) -> int | None:
    """If ``parts`` lies strictly inside a copick zarr group, how many leading parts name the group."""
    depth = grammar.group_depth(parts)
    return depth if depth is not None and len(parts) > depth else None

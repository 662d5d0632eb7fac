"""Benchmark indexing a project whose static root is on S3 (moto_server in its own process on 127.0.0.1).

For each listing strategy (``auto``, and the forced ``flat`` and ``pruned`` walks) a fresh catalog
indexes the same uploaded project twice: a full index, then a no-op reindex. Reported per strategy:
wall time, the HTTP requests the S3 server served by kind (from its request log), the CPU seconds of
the indexer, the S3 server and the latency proxy during the phase, the most requests in flight at once
(at the proxy) and listing requests in flight (per root), the key ranges each listing was cut into, the
walk ``auto`` chose and why, and payload reads by transport (obstore, s3fs). Prints one JSON document::

    python scripts/bench_s3.py --runs 2000 --latency-ms 25 [--overlay-on-s3] --strategies auto
    python scripts/bench_s3.py --runs 200 --chunky-runs 20 --strategies auto,flat,pruned

Floors, measured in the same run: ``read_floor`` fetches every key a full index reads, once, the way
the indexer fetches them (same transport, as many in flight) and nothing else; ``floors`` puts each
phase next to the server's CPU (moto is one Python process: whatever the client does, a phase cannot
take less wall time than the server's CPU) and all three processes' CPU over the cores. moto costs
~2 ms of CPU a GET and ~0.13 ms a listed key (it closes every connection and renders XML in Python),
and shares the machine's two cores with the client and the proxy: compare ratios and request counts,
not absolute times, with AWS S3, whose work happens elsewhere.

Local overlay files are aged by an hour first (a project nobody touched for a while), so the
racy-timestamp rule does not re-read them on the no-op reindex.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.latency_proxy import process_cpu_seconds  # noqa: E402
from tests.s3server import S3Server, start_moto_server  # noqa: E402


def _age(root: Path, seconds: float = 3600) -> None:
    past = time.time() - seconds
    for d, _dirs, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(d, f), (past, past))


def _log(msg: str) -> None:
    print(f"[bench_s3] {msg}", file=sys.stderr, flush=True)


def _add_chunky_tomograms(static: Path, runs: list[str]) -> int:
    """A ``wbp`` tomogram with 4³ chunks (584 chunk keys) in each of ``runs``: a chunk-dominated tree."""
    import numpy as np

    from copick_catalog.formats import zarr as payloads
    from copick_catalog.formats import zarrio
    from copick_catalog.index import grammar as layout

    vol = np.random.default_rng(7).normal(size=(32, 32, 32)).astype(np.float32)
    for run in runs:
        rel = layout.path_of(layout.TomogramKey(run, 10.0, "chunky"))
        payloads.write_ome_zarr(zarrio.local_store(str(static / rel), read_only=False), vol, 10.0, levels=3, chunks=4)
    return len(runs)


class _Cpu:
    """CPU seconds of this process, the S3 server's and the proxy's since construction: where the time went."""

    def __init__(self, server: S3Server, proxy: Any = None) -> None:
        self.pids = {"server": server.proc.pid, **({"proxy": proxy.pid} if proxy is not None else {})}
        self.start = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        self.client = time.process_time()

    def report(self) -> dict[str, float]:
        out = {"client_cpu_s": round(time.process_time() - self.client, 2)}
        for name, pid in self.pids.items():
            out[f"{name}_cpu_s"] = round(process_cpu_seconds(pid) - self.start[name], 2)
        return out


def _walk_stats(root: Any) -> dict[str, Any] | None:
    stats = root.last_stats
    if stats is None:
        return None
    return {
        "strategy": stats.strategy,
        "list_calls": stats.list_calls,
        "head_calls": stats.stat_calls,
        "probe_list_calls": stats.probe_list_calls,
        # the key ranges the flat listing was cut into, and the most listing requests it had in flight
        "key_ranges": root.walker.last_ranges,
        "listings_in_flight": root.walker.last_peak,
        "keys": stats.keys,
        "chunk_keys": stats.chunk_keys,
        "reason": stats.reason,
    }


def _index_once(server: S3Server, config: Path, db: str, strategy: str, proxy: Any = None) -> dict[str, Any]:
    from copick_catalog import Catalog

    out: dict[str, Any] = {}
    with Catalog.open(config, db=db) as cat:
        s3_roots = {layer: r for layer, r in cat.roots.items() if hasattr(r, "walker")}
        for r in cat.roots.values():
            if hasattr(r, "settings"):
                r.settings.strategy = strategy
        for phase in ("full", "noop"):
            if proxy is not None:
                proxy.reset_peak()
            reads_before = {layer: (r.fast_reads, r.slow_reads) for layer, r in s3_roots.items()}
            mark = server.mark()
            cpu = _Cpu(server, proxy)
            t = time.perf_counter()
            report = cat.index(trigger="cli")
            seconds = time.perf_counter() - t
            used = cpu.report()
            counts = server.count_since(mark)
            requests = {k: counts.get(k, 0) for k in ("list", "get", "head")}
            out[phase] = {
                "seconds": round(seconds, 2),
                "s3_requests": {**requests, "total": counts["total"]},
                "files_read": report.files_read,
                # CPU of the indexer, the S3 server and the proxy during the phase (two cores in all): the
                # client near the wall time means the client limits it; the server near it, the server
                **used,
                **({"peak_requests_in_flight": proxy.peak_active} if proxy is not None else {}),
                "payload_reads": {
                    "obstore": sum(r.fast_reads - reads_before[k][0] for k, r in s3_roots.items()),
                    "s3fs": sum(r.slow_reads - reads_before[k][1] for k, r in s3_roots.items()),
                },
                "entities": report.added + report.changed + report.unchanged,
                "errors": report.errors,
                "walk": {layer: _walk_stats(r) for layer, r in s3_roots.items()},
            }
            _log(
                f"{strategy} {phase}: {seconds:.2f}s, {counts['total']} requests ({counts.get('list', 0)} listings)"
                f", {report.files_read} files read; cpu {used}"
            )
    return out


def bench_s3(
    n_runs: int = 2000,
    *,
    tomogram_runs: int = 3,
    chunky_runs: int = 0,
    strategies: tuple[str, ...] = ("auto", "flat", "pruned"),
    db: str | None = None,
    workdir: Path | None = None,
    latency_ms: float = 0.0,
    overlay_on_s3: bool = False,
) -> dict[str, Any]:
    """Generate ``n_runs`` runs, upload the static root to a fresh moto_server, index with each strategy.

    ``chunky_runs`` adds a tomogram with tiny chunks (584 chunk keys) to that many runs, evenly spread,
    so chunk keys dominate the listing (what ``auto`` is for). ``db`` is a SQLAlchemy URL template:
    ``{strategy}`` in it is replaced, and by default each strategy gets its own SQLite file.
    ``latency_ms`` puts a proxy that delays every byte that long each way between the indexer and the
    server (AWS answers in 20-50 ms; moto in well under one); ``overlay_on_s3`` uploads the overlay too.
    """
    from copick_catalog.sample import make_sample_project

    work = workdir or Path(tempfile.mkdtemp(prefix="cc-bench-s3-"))
    result: dict[str, Any] = {
        "n_runs": n_runs,
        "tomogram_runs": tomogram_runs,
        "chunky_runs": chunky_runs,
        "latency_ms_each_way": latency_ms,
        "roots_on_s3": ["static", "overlay"] if overlay_on_s3 else ["static"],
    }
    t = time.perf_counter()
    summary = make_sample_project(work / "project", runs=n_runs, tomogram_runs=tomogram_runs, size=32)
    project = summary.config.parent
    if chunky_runs:
        width = max(4, len(str(n_runs)))
        step = max(1, n_runs // chunky_runs)  # spread out, like tomograms in a real project
        _add_chunky_tomograms(
            project / "static", [f"TS_{r + 1:0{width}d}" for r in range(0, n_runs, step)][:chunky_runs]
        )
    _age(project)
    result["generate_s"] = round(time.perf_counter() - t, 1)

    server = start_moto_server(work / "moto")
    proxy = None
    try:
        bucket = server.new_bucket("bench")
        t = time.perf_counter()
        result["static_keys"] = server.upload_dir(project / "static", bucket, "static", workers=32)
        if overlay_on_s3:
            result["overlay_keys"] = server.upload_dir(project / "overlay", bucket, "overlay", workers=32)
        result["upload_s"] = round(time.perf_counter() - t, 1)
        _log(f"uploaded {result['static_keys']} keys in {result['upload_s']}s")
        fs_args = server.fs_args()
        if latency_ms:
            from tests.latency_proxy import ProxyProcess

            proxy = ProxyProcess("127.0.0.1", server.port, latency_ms / 1000)
            fs_args = {**fs_args, "endpoint_url": proxy.url}
        cfg = json.loads(summary.config.read_text())
        cfg["static_root"] = f"s3://{bucket}/static"
        cfg["static_fs_args"] = fs_args
        if overlay_on_s3:
            cfg["overlay_root"] = f"s3://{bucket}/overlay"
            cfg["overlay_fs_args"] = fs_args
        summary.config.write_text(json.dumps(cfg, indent=4))
        urls = {"static": cfg["static_root"], **({"overlay": cfg["overlay_root"]} if overlay_on_s3 else {})}
        objects = [o["name"] for o in cfg.get("pickable_objects", [])]
        result["read_floor"] = _read_floor(fs_args, urls, objects, server, proxy)
        _log(f"read floor: {result['read_floor']}")
        result["strategies"] = {}
        for strategy in strategies:
            url = db.replace("{strategy}", strategy) if db else f"sqlite:///{work / f'catalog-{strategy}.sqlite'}"
            result["strategies"][strategy] = _index_once(server, summary.config, url, strategy, proxy)
    finally:
        if proxy is not None:
            proxy.close()
        server.stop()
    noop = result["strategies"].get("auto", {}).get("noop")
    full = result["strategies"].get("auto", {}).get("full")
    if noop and full:
        result["target_noop_under_5s"] = noop["seconds"] < 5.0
        result["target_full_under_60s"] = full["seconds"] < 60.0
        result["full_over_read_floor"] = round(full["seconds"] / result["read_floor"]["seconds"], 2)
        result["floors"] = {"full": _floors(result, full), "noop": _floors(result, noop)}
    return result


def _payload_keys(root: Any, objects: list[str]) -> list[str]:
    """The keys a full index of ``root`` reads: entity files, and the metadata files of entity groups."""
    from copick_catalog.index import grammar
    from copick_catalog.index.kinds import SPECS

    keys = []
    for e in root.walk():
        parsed = grammar.parse(e.path, objects, is_dir=e.is_dir)
        if parsed is None or isinstance(parsed, grammar.Malformed):
            continue
        key = parsed.key
        if isinstance(key, grammar.RunKey | grammar.VoxelSpacingKey) or SPECS[key.kind].is_group(key) != e.is_dir:
            continue
        if e.is_dir:
            keys.extend(f"{e.path}/{m}" for m in e.meta)
        else:
            keys.append(e.path)
    return keys


def _read_floor(
    fs_args: dict[str, Any], urls: dict[str, str], objects: list[str], server: S3Server, proxy: Any
) -> dict[str, Any]:
    """Every key a full index reads (pick/filament/mesh files, zarr metadata, MRC heads) fetched once, the
    same way the indexer fetches them (the roots' own ``read_bytes``, as many in flight as the indexer
    allows), and nothing else: no parsing, no catalog. What the reads alone cost this client, this server
    and this proxy, so the least a full index of the roots can take here.
    """
    from concurrent.futures import ThreadPoolExecutor

    from copick_catalog.index.roots import open_root

    work: list[tuple[Any, str]] = []
    for layer, url in urls.items():
        root = open_root(url, layer, fs_args)
        work.extend((root, key) for key in _payload_keys(root, objects))
    concurrency = max(r.read_concurrency for r, _ in work) if work else 1
    mark = server.mark()
    cpu = _Cpu(server, proxy)
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        size = sum(pool.map(lambda item: len(item[0].read_bytes(item[1])), work))
    seconds = time.perf_counter() - t
    used = cpu.report()
    gets = server.count_since(mark).get("get", 0)
    return {
        "seconds": round(seconds, 2),
        "keys": len(work),
        "gets": gets,
        "bytes": size,
        "in_flight": concurrency,
        **used,
        "per_key_ms": round(seconds * 1000 / max(len(work), 1), 2),
        # the S3 server is one Python process: its CPU per GET bounds how fast any client can be served
        "server_cpu_ms_per_get": round(used["server_cpu_s"] * 1000 / max(gets, 1), 2),
        **(
            {"proxy_cpu_ms_per_get": round(used["proxy_cpu_s"] * 1000 / max(gets, 1), 2)}
            if "proxy_cpu_s" in used
            else {}
        ),
        "client_cpu_ms_per_get": round(used["client_cpu_s"] * 1000 / max(gets, 1), 2),
    }


def _floors(result: dict[str, Any], phase: dict[str, Any]) -> dict[str, Any]:
    """What bounds a phase on this machine: the server's CPU (one process, one core at most) and all three
    processes' CPU over the cores, each in seconds, next to the phase's wall time."""
    cores = os.cpu_count() or 1
    busy = phase["client_cpu_s"] + phase["server_cpu_s"] + phase.get("proxy_cpu_s", 0.0)
    return {
        "server_cpu_s": phase["server_cpu_s"],
        "all_cpu_over_cores_s": round(busy / cores, 2),
        "cores": cores,
        "wall_over_server_cpu": round(phase["seconds"] / max(phase["server_cpu_s"], 0.01), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--tomogram-runs", type=int, default=3)
    ap.add_argument("--chunky-runs", type=int, default=0)
    ap.add_argument("--strategies", default="auto,flat,pruned")
    ap.add_argument("--db", default=None, help="SQLAlchemy URL ({strategy} is replaced); default SQLite files")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="delay added each way per request (AWS: 20-50)")
    ap.add_argument("--overlay-on-s3", action="store_true", help="put the overlay root on S3 too")
    args = ap.parse_args()
    result = bench_s3(
        args.runs,
        tomogram_runs=args.tomogram_runs,
        chunky_runs=args.chunky_runs,
        strategies=tuple(s for s in args.strategies.split(",") if s),
        db=args.db,
        workdir=args.workdir,
        latency_ms=args.latency_ms,
        overlay_on_s3=args.overlay_on_s3,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

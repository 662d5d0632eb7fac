"""Benchmark indexing a project whose static root is on S3 (moto_server in its own process on 127.0.0.1).

For each listing strategy (``auto``, and the forced ``flat`` and ``pruned`` walks) a fresh catalog
indexes the same uploaded project twice: a full index, then a no-op reindex. Reported per strategy:
wall time, the HTTP requests the S3 server served (listings and total, from its request log), the
walk ``auto`` chose and why, and payload files read. Prints one JSON document::

    python scripts/bench_s3.py --runs 2000
    python scripts/bench_s3.py --runs 200 --chunky-runs 20 --strategies auto,flat,pruned

moto answers a listing page of 1,000 keys in ~0.25 s and a small listing in ~10 ms, one request at
a time (it is one Python process), and its costs grow with the bucket: compare ratios and request
counts, not absolute times, with AWS S3, where the pruned walk's requests really run concurrently.

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


def _index_once(server: S3Server, config: Path, db: str, strategy: str, proxy: Any = None) -> dict[str, Any]:
    from copick_catalog import Catalog

    out: dict[str, Any] = {}
    with Catalog.open(config, db=db) as cat:
        root = cat.roots["static"]
        for r in cat.roots.values():
            if hasattr(r, "settings"):
                r.settings.strategy = strategy
        for phase in ("full", "noop"):
            if proxy is not None:
                proxy.reset_peak()
            mark = server.mark()
            cpu = time.process_time()
            t = time.perf_counter()
            report = cat.index(trigger="cli")
            seconds = time.perf_counter() - t
            counts = server.count_since(mark)
            stats = root.last_stats
            out[phase] = {
                "seconds": round(seconds, 2),
                "s3_requests": {
                    "list": counts.get("list", 0),
                    "get": counts.get("get", 0),
                    "head": counts.get("head", 0),
                    "total": counts["total"],
                },
                "files_read": report.files_read,
                # the indexer's own CPU: near the wall time means the client, not latency or the server, limits it
                "client_cpu_s": round(time.process_time() - cpu, 2),
                **({"peak_requests_in_flight": proxy.peak_active} if proxy is not None else {}),
                "entities": report.added + report.changed + report.unchanged,
                "errors": report.errors,
                "walk": None
                if stats is None
                else {
                    "strategy": stats.strategy,
                    "list_calls": stats.list_calls,
                    "head_calls": stats.stat_calls,
                    "probe_list_calls": stats.probe_list_calls,
                    "keys": stats.keys,
                    "chunk_keys": stats.chunk_keys,
                    "reason": stats.reason,
                },
            }
            _log(
                f"{strategy} {phase}: {seconds:.2f}s, {counts['total']} requests ({counts.get('list', 0)} listings)"
                f", {report.files_read} files read"
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
        prefixes = [f"{bucket}/static"] + ([f"{bucket}/overlay"] if overlay_on_s3 else [])
        result["read_floor"] = _read_floor(fs_args, prefixes)
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
    return result


#: Keys the indexer reads a payload from: pick/filament JSON, meshes, zarr metadata (not chunks), MRC heads.
_PAYLOAD_SUFFIXES = (".json", ".glb", ".zattrs", ".zarray", ".zgroup", ".mrc")


def _read_floor(fs_args: dict[str, Any], prefixes: list[str]) -> dict[str, Any]:
    """Every payload key fetched once with s3fs's own batched ``cat`` (64 in flight) and nothing else: what
    the same reads cost this client and this server, the least a full index of the roots can take."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **fs_args)
    keys = [k for p in prefixes for k in fs.find(p) if k.endswith(_PAYLOAD_SUFFIXES) and "/Tomograms/" not in k]
    keys = [k for k in keys if not (k.rsplit("/", 2)[-2][:1].isdigit())]  # zarr level metadata is read, chunks not
    cpu = time.process_time()
    t = time.perf_counter()
    fs.cat(keys, batch_size=64)
    return {
        "seconds": round(time.perf_counter() - t, 2),
        "keys": len(keys),
        "client_cpu_s": round(time.process_time() - cpu, 2),
        "per_key_ms": round((time.perf_counter() - t) * 1000 / max(len(keys), 1), 2),
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

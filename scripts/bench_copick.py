"""Benchmark the copick backend: CatalogRoot against copick's own CopickRootFSSpec on the same project.

    python scripts/bench_copick.py --runs 2000            # local roots, warm disk
    python scripts/bench_copick.py --runs 500 --root s3   # the static root on a local S3 server (moto)

Reported (each the median of fresh roots, after one warm-up of each, so the disk cache is warm for both):

* ``walk_picks``: ``[len(r.picks) for r in root.runs]`` on a new root;
* ``resolve_uri``: ``copick.util.uri.resolve_copick_objects("ribosome:alice/*", root, "picks")`` on a new root;
* on S3, each of copick's roots starts with s3fs's caches cleared, as in a new process (s3fs keeps one
  filesystem per arguments and its directory listings for the life of the process, so a second root in
  one process would otherwise list nothing);
* ``open_trust_ms``: building a CatalogRoot on a current catalog that it trusts (``index=False``, or a
  watch daemon serving it) and listing its runs (the constructor itself is lazy: the first question
  connects), and ``open_index_ms``: the same with an index first (``index=True``, what ``"auto"`` does
  when no daemon serves the catalog); on S3 with the S3 request counts of each walk.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_ms(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """Median wall time of ``fn``; the previous root's cyclic garbage is collected first, for both sides alike."""
    times, result = [], None
    for _ in range(reps):
        result = None
        gc.collect()
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 1), result


def bench_copick(
    config: Path, db: str, reps: int = 5, counter: Callable[[], dict[str, int]] | None = None
) -> dict[str, Any]:
    """Walk and resolve on fresh roots of both kinds; open times of CatalogRoot."""
    import copick
    from copick.impl.filesystem import CopickConfigFSSpec, CopickRootFSSpec
    from copick.util.uri import resolve_copick_objects

    from copick_catalog import Catalog, CatalogRoot

    with Catalog.open(config, db=db) as cat:
        cat.index()  # a current catalog
    cfg = json.loads(config.read_text())

    def theirs() -> Any:
        if counter is not None:  # S3: a fresh root in a new process has no s3fs instance or listing cache
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
        return CopickRootFSSpec(CopickConfigFSSpec(**cfg))

    def ours() -> Any:
        return CatalogRoot(cfg, db=db, index=False, config_path=config)

    def walk(make: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: sum(len(r.picks) for r in make().runs)

    def resolve(make: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: len(resolve_copick_objects("ribosome:alice/*", make(), "picks"))

    out: dict[str, Any] = {"copick": copick.__version__}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, task in (("walk_picks", walk), ("resolve_uri", resolve)):
            task(theirs)(), task(ours)()  # warm both (page cache, imports, the catalog's pages)
            before = counter() if counter else None
            t_ms, t_n = _median_ms(task(theirs), reps)
            mid = counter() if counter else None
            o_ms, o_n = _median_ms(task(ours), reps)
            after = counter() if counter else None
            assert t_n == o_n, f"{name}: copick found {t_n}, the catalog {o_n}"
            out[name] = {"copick_ms": t_ms, "catalog_ms": o_ms, "speedup": round(t_ms / o_ms, 1), "items": o_n}
            if counter is not None and before is not None and mid is not None and after is not None:
                out[name]["copick_requests_per_rep"] = round((sum(mid.values()) - sum(before.values())) / reps)
                out[name]["catalog_requests_per_rep"] = round((sum(after.values()) - sum(mid.values())) / reps)
        out["open_trust_ms"], _ = _median_ms(lambda: len(ours().runs), reps)
        out["open_index_ms"], _ = _median_ms(
            lambda: len(CatalogRoot(cfg, db=db, index=True, config_path=config).runs), reps
        )
    return out


def bench_copick_s3(n_runs: int, reps: int = 5, db: str | None = None, latency_ms: float = 0.0) -> dict[str, Any]:
    """The same comparison with the static root (tomograms and the tool's picks) on a local S3 server;
    ``latency_ms`` puts the latency proxy (that long each way, as AWS's 20-50 ms) in front of it."""
    sys.path.insert(0, str(ROOT))
    from copick_catalog.sample import make_sample_project
    from tests.s3server import start_moto_server

    work = Path(tempfile.mkdtemp(prefix="cc-bench-copick-s3-"))
    try:
        s = make_sample_project(work / "project", runs=n_runs, tomogram_runs=3, size=32)
        _age(work / "project")
        server = start_moto_server(work / "moto")
        try:
            bucket = server.new_bucket()
            server.upload_dir(s.config.parent / "static", bucket, "static")
            cfg = json.loads(s.config.read_text())
            cfg["static_root"] = f"s3://{bucket}/static"
            cfg["static_fs_args"] = server.fs_args()
            proxy = None
            if latency_ms:
                from tests.latency_proxy import ProxyProcess

                proxy = ProxyProcess("127.0.0.1", server.port, latency_ms / 1000)
                cfg["static_fs_args"] = {**cfg["static_fs_args"], "endpoint_url": proxy.url}
            s.config.write_text(json.dumps(cfg, indent=4))
            mark = server.mark()

            def counter() -> dict[str, int]:
                return dict(server.count_since(mark))

            result = {"runs": n_runs, "root": "s3", "pick_files": s.pick_files, "latency_ms_each_way": latency_ms}
            try:
                result.update(bench_copick(s.config, db or f"sqlite:///{work / 'catalog.sqlite'}", reps, counter))
            finally:
                if proxy is not None:
                    proxy.close()
            return result
        finally:
            server.proc.terminate()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _age(root: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import age  # type: ignore[import-not-found]

    age(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--root", choices=["local", "s3"], default="local")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--db", default=None, help="catalog URL (default: a SQLite file in the work directory)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="S3: delay added each way per request (AWS: 20-50)")
    args = ap.parse_args()
    if args.root == "s3":
        print(json.dumps(bench_copick_s3(args.runs, args.reps, args.db, args.latency_ms), indent=2))
        return
    from copick_catalog.sample import make_sample_project

    work = Path(tempfile.mkdtemp(prefix="cc-bench-copick-"))
    try:
        s = make_sample_project(work / "project", runs=args.runs, tomogram_runs=3, size=32)
        _age(work / "project")
        db = args.db or f"sqlite:///{work / 'catalog.sqlite'}"
        result: dict[str, Any] = {"runs": args.runs, "root": "local", "pick_files": s.pick_files}
        result.update(bench_copick(s.config, db, args.reps))
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark the watch daemon: write-to-queryable latency, batching of bursts, idle CPU, and the
"watch what fits, poll the rest" mode past the inotify budget.

Generates a project (default 5,000 runs, 12 pick files a run as in scripts/bench.py), starts
``copick-catalog watch`` on it as a real subprocess with a SQLite catalog, and measures, from the
moment a file is closed to the moment its row is queryable from another connection:

* ``inotify``: every run watched. Lone saves (a new pick file every 0.4-0.8 s, as a person saves:
  p50/p95/max), a tool writing files 20 ms apart and a tool writing as fast as it can (how many index
  runs each burst caused, and how long after the last write everything was queryable), a zarr group
  written chunk by chunk (index runs it caused), and idle CPU.
* ``mixed`` (``--no-mixed`` skips it): the daemon restarted with ``--max-watches`` small enough that
  about half of the overlay runs (and every static run) are polled, ``--poll`` seconds apart. Which
  runs are watched is read from the kernel (``/proc/PID/fdinfo`` of the daemon's inotify descriptor).
  Lone saves in watched runs (events) and in polled runs (poll), the warning count, idle CPU with
  polling going on, and the listing cost per polled run, from which the poll cost at 100,000 runs on
  this machine's limit is estimated; next to it, what polling by an incremental index of the same runs
  would cost.

Prints JSON. Importable: ``bench_watch(n_runs=5000, writes=60) -> dict`` (scripts/bench.py --watch).

    python scripts/bench_watch.py --runs 5000 --writes 60 --poll 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from copick_catalog import Catalog  # noqa: E402
from copick_catalog.daemon.poller import DUTY, run_signature  # noqa: E402
from copick_catalog.daemon.state import read_state, state_path  # noqa: E402
from copick_catalog.daemon.watches import RESERVE_FRACTION, WatchBudget  # noqa: E402
from copick_catalog.index import grammar as layout  # noqa: E402
from copick_catalog.sample import make_sample_project, pick_json  # noqa: E402
from tests.inotify_probe import watched_inodes  # noqa: E402

BENCH_USERS = (("alice", "1"), ("alice", "4"), ("bob", "2"), ("pytom", "0"))  # 12 pick files a run


# ------------------------------------------------------------------------------------------
# measuring a process


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (psutil-free: /proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as fh:
        rest = fh.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _pcts(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "n": len(values),
        "p50_ms": round(1000 * float(np.percentile(a, 50)), 1),
        "p95_ms": round(1000 * float(np.percentile(a, 95)), 1),
        "max_ms": round(1000 * float(a.max()), 1),
    }


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.002) -> float:
    """Poll until ``predicate()`` is truthy; return the perf_counter time it first was."""
    deadline = time.perf_counter() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------
# the daemon


class _Daemon:
    def __init__(self, config: Path, db: Path | str, log_path: Path, *args: str) -> None:
        with Catalog.open(config, db=str(db)) as cat:
            self.state_file = state_path(cat.engine, cat.db_url, cat.project_id)
        self.log_path = log_path
        cmd = [sys.executable, "-m", "copick_catalog.cli", "watch", str(config), "--db", str(db), *args]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t = time.perf_counter()
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        _wait(
            lambda: self.state().get("ready") and self.state().get("pid") == self.proc.pid,
            1800,
            "the initial index",
            interval=0.05,
        )
        self.startup_s = time.perf_counter() - t

    def state(self) -> dict[str, Any]:
        return read_state(self.state_file) or {}

    def updates(self) -> int:
        return int(self.state().get("updates") or 0)

    def idle_cpu(self, seconds: float) -> float:
        cpu0, t0 = _cpu_seconds(self.proc.pid), time.perf_counter()
        time.sleep(seconds)
        return round(100 * (_cpu_seconds(self.proc.pid) - cpu0) / (time.perf_counter() - t0), 2)

    def stop(self) -> tuple[int, float]:
        t = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return rc, time.perf_counter() - t

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# ------------------------------------------------------------------------------------------
# writers


class _Writer:
    """Writes new pick files into the overlay and waits until the catalog lists them."""

    def __init__(self, overlay: Path, db: Path | str, n_runs: int) -> None:
        self.overlay, self.n_runs = overlay, n_runs
        self.rng = np.random.default_rng(0)
        self.width = max(4, len(str(n_runs)))
        self.engine = sa.create_engine(str(db) if "://" in str(db) else f"sqlite:///{db}")
        self.conn = self.engine.connect()
        self.i = 0

    def run_name(self, k: int) -> str:
        return f"TS_{k:0{self.width}d}"

    def random_run(self) -> str:
        return self.run_name(int(self.rng.integers(1, self.n_runs + 1)))

    def write(self, run: str) -> str:
        self.i += 1
        rel = layout.path_of(layout.PickKey(run, "bench", str(self.i), "ribosome"))
        n = int(self.rng.integers(5, 50))
        text = pick_json(
            "ribosome",
            "bench",
            str(self.i),
            run,
            self.rng.uniform(0, 1000, (n, 3)).round(2),
            np.arange(n),
            self.rng.uniform(0.5, 1, n).round(3),
        )
        full = self.overlay / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        with open(full, "w") as fh:  # a plain in-place write, as copick and most tools write
            fh.write(text)
        return rel

    def visible(self, rels: list[str]) -> bool:
        q = sa.text("SELECT count(*) FROM picks WHERE path IN :p").bindparams(sa.bindparam("p", expanding=True))
        n = self.conn.execute(q, {"p": rels}).scalar()
        self.conn.rollback()  # a fresh read snapshot next time
        return n == len(rels)

    def last_watch_run_s(self) -> float | None:
        """How long the daemon's latest index run took (its row is finished just after the data commits)."""
        q = "SELECT duration_s FROM index_runs WHERE trigger = 'watch' ORDER BY id DESC LIMIT 1"
        deadline = time.perf_counter() + 1.0
        while True:
            v = self.conn.execute(sa.text(q)).scalar()
            self.conn.rollback()
            if v is not None or time.perf_counter() > deadline:
                return v
            time.sleep(0.005)

    def lone_saves(self, runs: list[str], gap: tuple[float, float] = (0.4, 0.8), timeout: float = 60) -> dict[str, Any]:
        """One file at a time, each after a pause longer than the debounce: a person saving."""
        lat: list[float] = []
        index_s: list[float] = []
        for run in runs:
            time.sleep(float(self.rng.uniform(*gap)))
            rel = self.write(run)
            written = time.perf_counter()
            lat.append(_wait(lambda r=rel: self.visible([r]), timeout, f"pick {rel}") - written)
            d = self.last_watch_run_s()
            if d is not None:
                index_s.append(d)
        out = _pcts(lat)
        if index_s:
            out["index_run_p50_ms"] = round(1000 * float(np.median(index_s)), 1)
        return out

    def freshness(self, runs: list[str], every: float, rounds: int = 4) -> dict[str, Any]:
        """Files written into ``runs``, a few at one instant, in ``rounds`` rounds at random moments of the
        poller's pass; how long until each is queryable (polled runs: up to one interval, plus the
        batching of what one pass finds)."""
        q = sa.text("SELECT path FROM picks WHERE path IN :p").bindparams(sa.bindparam("p", expanding=True))
        out: list[float] = []
        per = max(1, len(runs) // rounds)
        for k in range(0, len(runs), per):
            time.sleep(float(self.rng.uniform(0, every)))
            rels = [self.write(run) for run in runs[k : k + per]]
            t0 = time.perf_counter()
            seen: dict[str, float] = {}
            while len(seen) < len(rels):
                if time.perf_counter() - t0 > 3 * every + 30:
                    raise TimeoutError(f"{len(rels) - len(seen)} files not queryable after {3 * every + 30} s")
                now = time.perf_counter()
                for (path,) in self.conn.execute(q, {"p": [r for r in rels if r not in seen]}):
                    seen[path] = now - t0
                self.conn.rollback()
                time.sleep(0.01)
            out.extend(seen.values())
        return _pcts(out)

    def burst(self, d: _Daemon, n: int, interval: float) -> dict[str, Any]:
        """``n`` files into random runs, ``interval`` seconds apart (0: as fast as possible)."""
        time.sleep(1.0)  # start from a quiet layer
        before = d.updates()
        rels = []
        t0 = time.perf_counter()
        for _ in range(n):
            rels.append(self.write(self.random_run()))
            if interval:
                time.sleep(interval)
        last = time.perf_counter()
        done = _wait(lambda: self.visible(rels), 120, f"a burst of {n} files", interval=0.005)
        time.sleep(0.5)  # the index runs still due after the last file (none, if it is all done)
        return {
            "files": n,
            "interval_ms": round(1000 * interval, 1),
            "write_s": round(last - t0, 2),
            "all_queryable_after_last_write_ms": round(1000 * (done - last), 1),
            "index_runs": d.updates() - before,
        }

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


def _zarr_group(overlay: Path, d: _Daemon, run: str, w: _Writer) -> dict[str, Any]:
    """A segmentation written chunk by chunk (64 chunks, ~5 ms apart): index runs it caused."""
    from copick_catalog.formats import zarr as zarr_fmt
    from copick_catalog.formats import zarrio

    time.sleep(1.0)
    before = d.updates()
    rel = layout.path_of(layout.SegmentationKey(run, 10.0, "bench", "1", "membrane"))
    t0 = time.perf_counter()
    group = zarrio.new_group(zarrio.local_store(str(overlay / rel), read_only=False))
    group.attrs["multiscales"] = zarr_fmt.ome_multiscales(10.0, 1)
    arr = zarrio.create_array(group, "0", (32, 32, 32), np.uint8, (8, 8, 8))
    for z in range(0, 32, 8):
        for y in range(0, 32, 8):
            for x in range(0, 32, 8):
                arr[z : z + 8, y : y + 8, x : x + 8] = np.full((8, 8, 8), 1, dtype=np.uint8)
                time.sleep(0.005)
    last = time.perf_counter()
    q = sa.text("SELECT count(*) FROM segmentations WHERE path = :p")

    def seen() -> bool:
        n = w.conn.execute(q, {"p": rel}).scalar()
        w.conn.rollback()
        return bool(n)

    done = _wait(seen, 60, "the zarr group")
    time.sleep(0.5)
    return {
        "chunks": 64,
        "write_s": round(last - t0, 2),
        "queryable_after_last_chunk_ms": round(1000 * (done - last), 1),
        "index_runs": d.updates() - before,
    }


# ------------------------------------------------------------------------------------------
# the benchmark


def bench_watch(
    n_runs: int = 5000,
    writes: int = 60,
    *,
    idle_seconds: float = 5.0,
    poll: float = 10.0,
    mixed: bool = True,
    picks_per_run: int = 12,
    workdir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its numbers."""
    result: dict[str, Any] = {"n_runs": n_runs, "machine_cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-watch-") as tmp:
        t = time.perf_counter()
        sample = make_sample_project(
            Path(tmp) / "project", runs=n_runs, tomogram_runs=1, size=16, picks_per_run=picks_per_run, users=BENCH_USERS
        )
        _age(Path(tmp) / "project")
        result["generate_s"] = round(time.perf_counter() - t, 1)
        result["pick_files"] = sample.pick_files
        db = Path(tmp) / "catalog.sqlite"
        overlay = sample.config.parent / "overlay"

        # ---------------------------------------------------------------- every run watched
        d = _Daemon(sample.config, db, Path(tmp) / "watch.log")
        w = _Writer(overlay, db, n_runs)
        try:
            st = d.state()
            a: dict[str, Any] = {"startup_to_ready_s": round(d.startup_s, 1), "watching": st.get("watching")}
            a["lone_save"] = w.lone_saves([w.random_run() for _ in range(writes)])
            a["tool_20ms_apart"] = w.burst(d, 100, 0.02)
            a["tool_flat_out"] = w.burst(d, 500, 0.0)
            a["zarr_group_chunk_by_chunk"] = _zarr_group(overlay, d, w.run_name(1), w)
            time.sleep(1.0)
            a["idle_cpu_percent"] = d.idle_cpu(idle_seconds)
            a["idle_rss_mb"] = _rss_mb(d.proc.pid)
            rc, stop_s = d.stop()
            a["stop_s"], a["exit_code"] = round(stop_s, 3), rc
            a["inotify_overflow_logged"] = "overflow" in d.log().lower()
        finally:
            if d.proc.poll() is None:
                d.stop()
        result["inotify"] = a
        per_run = {
            layer: info["watches"] / max(1, info["runs_watched"])
            for layer, info in ((a.get("watching") or {}).get("layers") or {}).items()
        }

        # ---------------------------------------------------------------- past the budget
        if mixed:
            result["mixed"] = _bench_mixed(sample.config, db, overlay, w, n_runs, writes, poll, idle_seconds, tmp)
            result["mixed"]["estimate_100k_runs"] = _estimate(result["mixed"], per_run, 100_000)
        w.close()
    return result


def _bench_mixed(
    config: Path,
    db: Path | str,
    overlay: Path,
    w: _Writer,
    n_runs: int,
    writes: int,
    poll: float,
    idle: float,
    tmp: str,
    budget: int | None = -1,
) -> dict[str, Any]:
    """``budget``: the daemon's --max-watches; -1 (default) for about one watch a run, which watches about
    half of the overlay runs (2 watched directories each: the run, Picks) and no static run; None for the
    machine's own limit (a project past it, as 100,000 runs are)."""
    if budget == -1:
        budget = n_runs + 8
    args = ("--max-watches", str(budget)) if budget is not None else ()
    d = _Daemon(config, db, Path(tmp) / "watch-mixed.log", *args, "--poll", str(poll))
    m: dict[str, Any] = {"max_watches": budget, "poll_s": poll, "startup_to_ready_s": round(d.startup_s, 1)}
    try:
        inodes = watched_inodes(d.proc.pid)
        runs = [w.run_name(k) for k in range(1, n_runs + 1)]
        watched = [r for r in runs if os.stat(overlay / "ExperimentRuns" / r).st_ino in inodes]
        watched_set = set(watched)
        polled = [r for r in runs if r not in watched_set]
        st = d.state()
        m["watching"] = st.get("watching")
        m["overlay_runs_watched"], m["overlay_runs_polled"] = len(watched), len(polled)
        m["warnings_logged"] = d.log().count("inotify watch budget reached")
        rng = np.random.default_rng(1)
        k = max(5, writes // 3)
        m["lone_save_watched_run"] = w.lone_saves(list(rng.choice(watched, k)))
        m["freshness_polled_run"] = w.freshness(list(rng.choice(polled, 2 * k, replace=False)), poll)
        time.sleep(1.0)
        m["idle_cpu_percent_with_polling"] = d.idle_cpu(max(idle, 2 * poll))
        poll_info = ((d.state().get("watching") or {}).get("poll")) or {}
        m["poller"] = poll_info
        if poll_info.get("runs_listed"):
            m["poller_listing_ms_per_run"] = round(1000 * poll_info["listing_s"] / poll_info["runs_listed"], 3)
        m["warnings_logged_at_end"] = d.log().count("inotify watch budget reached")
        rc, _ = d.stop()
        m["exit_code"] = rc
    finally:
        if d.proc.poll() is None:
            d.stop()
    # the same listing the poller does, timed in this process for each layer, and the alternative:
    # polling by an incremental index of the polled runs
    with Catalog.open(config, db=str(db)) as cat:
        sample_runs = [w.run_name(k) for k in range(1, n_runs + 1, max(1, n_runs // 400))]
        for layer in ("overlay", "static"):
            root = cat.roots[layer]
            t = time.perf_counter()
            for r in sample_runs:
                run_signature(root, r)
            m[f"listing_ms_per_{layer}_run"] = round(1000 * (time.perf_counter() - t) / len(sample_runs), 3)
        batch = sample_runs[:50]
        scopes = [(layer, f"ExperimentRuns/{r}") for r in batch for layer in ("overlay", "static")]
        cat.index(trigger="api", scopes=scopes)
        t = time.perf_counter()
        cat.index(trigger="api", scopes=scopes)
        m["index_ms_per_run_both_layers"] = round(1000 * (time.perf_counter() - t) / len(batch), 2)
    return m


def bench_watch_existing(config: Path, db: str, writes: int, poll: float, idle: float) -> dict[str, Any]:
    """The daemon on an existing project under this machine's own inotify budget: what it watches (from the
    kernel), lone saves in watched runs, freshness of polled runs, polling CPU, startup time."""
    overlay = config.parent / "overlay"
    n_runs = sum(1 for _ in os.scandir(config.parent / "static" / "ExperimentRuns"))
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        w = _Writer(overlay, db, n_runs)
        try:
            return {
                "n_runs": n_runs,
                "mixed": _bench_mixed(config, db, overlay, w, n_runs, writes, poll, idle, tmp, None),
            }
        finally:
            w.close()


def _estimate(m: dict[str, Any], per_run: dict[str, float], runs: int) -> dict[str, Any]:
    """What polling would cost at ``runs`` runs under this machine's default budget (no --max-watches)."""
    budget = WatchBudget.plan(None)
    room = budget.budget - int(budget.budget * RESERVE_FRACTION) - 8
    polled: dict[str, int] = {}
    for layer in ("overlay", "static"):
        w = per_run.get(layer) or 3.0
        fit = max(0, min(runs, int(room // w)))
        room -= fit * w
        polled[layer] = runs - fit
    cpu = sum(polled[layer] * m[f"listing_ms_per_{layer}_run"] / 1000 for layer in polled)
    every = 30.0  # the default --poll
    pass_s = max(every, cpu / DUTY)
    return {
        "budget": budget.budget,
        "budget_source": budget.source,
        "watches_per_run": {k: round(v, 2) for k, v in per_run.items()},
        "polled_runs": polled,
        "listing_cpu_s_per_pass": round(cpu, 1),
        "pass_s_at_default_poll_30s": round(pass_s, 1),
        "poll_cpu_share_of_one_core": round(cpu / pass_s, 3),
        "same_by_incremental_index_cpu_s_per_pass": round(
            sum(polled.values()) / 2 * m["index_ms_per_run_both_layers"] / 1000, 1
        ),
        "note": "warm inode cache; a cold cache makes every stat a disk read",
    }


def _age(root: Path, seconds: float = 3600) -> None:
    """Files an hour old: a project nobody touched for a while (the racy-timestamp rule stays out of it)."""
    past = time.time() - seconds
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (past, past))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--writes", type=int, default=60, help="lone saves measured (a third of it in mixed mode)")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measurement")
    ap.add_argument("--poll", type=float, default=10.0, help="--poll of the daemon in mixed mode")
    ap.add_argument("--picks-per-run", type=int, default=12)
    ap.add_argument("--no-mixed", action="store_true", help="skip the past-the-budget part")
    ap.add_argument("--workdir", default=None)
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help="an existing, indexed project (e.g. scripts/bench.py --keep's 100,000 runs): measure the daemon on it "
        "with this machine's own watch budget (no --max-watches), nothing generated",
    )
    ap.add_argument("--db", default=None, help="with --config: its catalog URL")
    args = ap.parse_args()
    if args.config is not None:
        print(json.dumps(bench_watch_existing(args.config, args.db, args.writes, args.poll, args.idle), indent=2))
        return
    out = bench_watch(
        args.runs,
        args.writes,
        idle_seconds=args.idle,
        poll=args.poll,
        mixed=not args.no_mixed,
        picks_per_run=args.picks_per_run,
        workdir=args.workdir,
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

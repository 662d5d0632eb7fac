#!/usr/bin/env python
"""Benchmark the watch daemon: write-to-queryable latency and idle CPU on a big project.

Generates a project (default 2,000 runs), starts ``copick-catalog watch`` on it as a real
subprocess with a SQLite catalog, then writes pick files one at a time (plain writes, as a picking
tool does) and measures, for each, the time from the file being closed to its row being queryable
from another connection. Afterwards the daemon is left idle and its CPU time is read from
``/proc/<pid>/stat`` (utime + stime) over a few seconds. Prints JSON.

    python scripts/bench_watch.py --runs 2000 --writes 100

Importable: ``bench_watch(n_runs=2000, writes=100) -> dict`` (for scripts/bench.py).
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
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.daemon.state import read_state, state_path
from copick_catalog.index import grammar as layout
from copick_catalog.sample import make_sample_project, pick_json


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


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.002) -> float:
    """Poll until ``predicate()`` is truthy; return the perf_counter time it first was."""
    deadline = time.perf_counter() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def bench_watch(
    n_runs: int = 2000,
    writes: int = 100,
    *,
    idle_seconds: float = 5.0,
    debounce: float = 0.25,
    workdir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its numbers (seconds unless a key says otherwise)."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-watch-") as tmp:
        t = time.perf_counter()
        sample = make_sample_project(Path(tmp) / "project", runs=n_runs, tomogram_runs=1, size=16, picks_per_run=2)
        generate_s = time.perf_counter() - t
        db = Path(tmp) / "catalog.sqlite"
        with Catalog.open(sample.config, db=str(db)) as cat:
            state_file = state_path(cat.engine, cat.db_url, cat.project_id)
        log_path = Path(tmp) / "watch.log"
        t = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "copick_catalog.cli",
                    "watch",
                    str(sample.config),
                    "--db",
                    str(db),
                    "--debounce",
                    str(debounce),
                ],
                stdout=log,
                stderr=log,
            )
        try:
            _wait(
                lambda: (read_state(state_file) or {}).get("ready") and proc.poll() is None,
                300,
                "the initial index",
                interval=0.02,
            )
            startup_s = time.perf_counter() - t
            latencies = _measure_writes(sample.config.parent / "overlay", db, n_runs, writes)
            time.sleep(1.0)  # let the last update and its state write settle
            cpu0, t0 = _cpu_seconds(proc.pid), time.perf_counter()
            time.sleep(idle_seconds)
            cpu1, t1 = _cpu_seconds(proc.pid), time.perf_counter()
            rss = _rss_mb(proc.pid)
            t = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(10)
            stop_s = time.perf_counter() - t
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        state = read_state(state_file) or {}
        lost = "overflow" in log_path.read_text(errors="replace").lower()
    return {
        "n_runs": n_runs,
        "writes": writes,
        "debounce_s": debounce,
        "generate_s": round(generate_s, 2),
        "startup_to_ready_s": round(startup_s, 2),
        "latency_p50_s": round(_percentile(latencies, 50), 4),
        "latency_p95_s": round(_percentile(latencies, 95), 4),
        "latency_max_s": round(max(latencies), 4),
        "idle_cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
        "idle_window_s": round(t1 - t0, 2),
        "idle_rss_mb": round(rss, 1) if rss else None,
        "stop_s": round(stop_s, 3),
        "exit_code": rc,
        "daemon_updates": state.get("updates"),
        "inotify_overflow_logged": lost,
    }


def _measure_writes(overlay: Path, db: Path, n_runs: int, writes: int) -> list[float]:
    """Write ``writes`` new pick files one after another; each one's write-to-queryable time."""
    rng = np.random.default_rng(0)
    width = max(4, len(str(n_runs)))
    engine = sa.create_engine(f"sqlite:///{db}")
    query = sa.text("SELECT 1 FROM picks WHERE path = :p")
    out: list[float] = []
    try:
        with engine.connect() as conn:
            for i in range(writes):
                run = f"TS_{int(rng.integers(1, n_runs + 1)):0{width}d}"
                rel = layout.path_of(layout.PickKey(run, "bench", str(i), "ribosome"))
                n = int(rng.integers(5, 50))
                text = pick_json(
                    "ribosome",
                    "bench",
                    str(i),
                    run,
                    rng.uniform(0, 1000, (n, 3)).round(2),
                    np.arange(n),
                    rng.uniform(0.5, 1, n).round(3),
                )
                full = overlay / rel
                full.parent.mkdir(parents=True, exist_ok=True)
                with open(full, "w") as fh:
                    fh.write(text)
                written = time.perf_counter()

                def visible(p: str = rel) -> bool:
                    found = conn.execute(query, {"p": p}).first() is not None
                    conn.rollback()  # a fresh read snapshot next time
                    return found

                out.append(_wait(visible, 30, f"pick {rel}") - written)
                time.sleep(float(rng.uniform(0.0, 0.05)))  # writes arrive at irregular intervals
    finally:
        engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--writes", type=int, default=100)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measurement")
    ap.add_argument("--debounce", type=float, default=0.25)
    args = ap.parse_args()
    print(json.dumps(bench_watch(args.runs, args.writes, idle_seconds=args.idle, debounce=args.debounce), indent=2))


if __name__ == "__main__":
    main()

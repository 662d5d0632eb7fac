"""Past the inotify watch budget: watch what fits, poll the rest.

The daemon runs as a real subprocess with a small ``--max-watches`` on a real tree. Which directories
it watches is read from the kernel (``/proc/PID/fdinfo`` of its inotify descriptor), never from the
daemon's own word. With ``--poll 3600`` nothing is polled during a test, so a change that arrives in a
watched run arrived by an event; with a short ``--poll``, a change in a run the kernel shows unwatched
arrived by polling.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from copick_catalog import Catalog
from copick_catalog.catalog.schema import Pick, Run, VoxelSpacing
from copick_catalog.index import grammar as layout
from copick_catalog.sample import SampleSummary

from .inotify_probe import watched_inodes
from .test_watch import Daemon, daemons, overlay_of, paths, pick_text, run_names, wait_for

__all__ = ["daemons"]  # the fixture, re-exported for pytest

BUDGET_WARNING = "inotify watch budget reached"


def run_dirs(root: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((root / "ExperimentRuns").iterdir()) if p.is_dir()}


def split_runs(d: Daemon, root: Path, settle_s: float = 2.0) -> tuple[list[str], list[str]]:
    """(watched, unwatched) runs of a root, by the kernel's list of watches; a watched run must have
    every directory the index reads watched (never half of a run).

    The kernel's list and the tree are read one after the other while the daemon may be moving a run between
    watched and polled (its watches go or come one call at a time): a half-watched run is looked at again
    until ``settle_s`` has passed, and only one still half watched then fails.
    """
    deadline = time.monotonic() + settle_s
    while True:
        inodes = watched_inodes(d.proc.pid)
        watched, unwatched, half = [], [], {}
        for name, path in run_dirs(root).items():
            dirs = [path, *(c for c in path.iterdir() if c.is_dir() and c.name in ("Picks", "Meshes", "Segmentations"))]
            seen = [os.stat(p).st_ino in inodes for p in dirs]
            if any(seen) and not all(seen):
                half[name] = dict(zip(dirs, seen, strict=True))
            (watched if seen[0] else unwatched).append(name)
        if not half:
            return watched, unwatched
        assert time.monotonic() < deadline, f"runs half watched for {settle_s} s: {half}"
        time.sleep(0.05)


def layer_info(d: Daemon, layer: str) -> dict[str, int]:
    return d.state()["watching"]["layers"][layer]


def test_past_the_budget_watched_runs_by_events_the_rest_by_polling(
    sample: SampleSummary, db_url: str, daemons: Callable[..., Daemon]
) -> None:
    ov = overlay_of(sample)
    static = sample.config.parent / "static"

    # ---- a poll interval no test waits for: whatever arrives, arrived by an inotify event
    d = daemons(sample.config, db_url, "--max-watches", "16", "--poll", "3600")
    watched, polled = split_runs(d, ov)
    assert watched and polled, (watched, polled)
    assert split_runs(d, static)[0] == []  # the overlay gets the watches first; static is all polled
    state = d.state()
    assert state["roots"] == {"static": "mixed", "overlay": "mixed"}
    assert state["watching"]["watches"] <= 16 == state["watching"]["budget"]
    assert len(watched_inodes(d.proc.pid)) == state["watching"]["watches"]
    assert layer_info(d, "overlay")["runs_watched"] == len(watched)
    assert layer_info(d, "overlay")["runs_polled"] == len(polled)
    assert layer_info(d, "static")["runs_polled"] == len(run_dirs(static))
    log = d.log()
    assert log.count(BUDGET_WARNING) == 1, log
    said = " ".join(log.split())
    n_polled = len(polled) + len(run_dirs(static))
    assert f"{len(watched)} run directories are watched, {n_polled} are polled" in said, said
    assert "every 3600 s (--poll)" in said and "sudo sysctl fs.inotify.max_user_watches=65536" in said

    with Catalog.open(sample.config, db=db_url) as cat:
        p = layout.path_of(layout.PickKey(watched[0], "wendy", "1", "ribosome"))
        (ov / p).write_text(pick_text(watched[0], "wendy", "1", "ribosome", 3))
        wait_for(lambda: p in paths(cat, Pick), 10, "a pick in a watched run, by its event", d)

        # a new run while the budget is full: its first content is seen (its directory's event), then polled
        q = layout.path_of(layout.PickKey("TS_new", "wendy", "1", "ribosome"))
        (ov / q).parent.mkdir(parents=True)
        (ov / q).write_text(pick_text("TS_new", "wendy", "1", "ribosome", 2))
        wait_for(lambda: q in paths(cat, Pick), 10, "a pick in a new run", d)
        wait_for(lambda: layer_info(d, "overlay")["runs_polled"] == len(polled) + 1, 10, "the new run polled", d)
        assert "TS_new" in split_runs(d, ov)[1]

        # room frees up (a watched run deleted): a polled run is watched instead, within a second
        gone = watched[-1]
        shutil.rmtree(ov / "ExperimentRuns" / gone)
        wait_for(lambda: gone not in run_names(cat) or not run_names(cat)[gone][1], 10, "the deleted run", d)
        wait_for(lambda: len(split_runs(d, ov)[0]) > len(watched) - 1, 10, "a polled run promoted", d)
        promoted = sorted(set(split_runs(d, ov)[0]) - set(watched))
        assert promoted
        r = layout.path_of(layout.PickKey(promoted[0], "wendy", "2", "ribosome"))
        (ov / r).write_text(pick_text(promoted[0], "wendy", "2", "ribosome", 4))
        wait_for(lambda: r in paths(cat, Pick), 10, "a pick in a promoted run, by its event", d)

        # a watched run that grows past the budget is polled from then on (and looked at once)
        free = d.state()["watching"]["budget"] - d.state()["watching"]["watches"]
        grower = promoted[0]
        spacings = [layout.voxel_spacing_dir(grower, 20.0 + i) for i in range(free + 1)]
        for vs in spacings:
            (ov / vs).mkdir()
        wait_for(lambda: grower in split_runs(d, ov)[1], 10, "the grown run demoted to polling", d)

        def overlay_spacings() -> int:
            with cat.engine.connect() as conn:
                return len(
                    conn.execute(
                        VoxelSpacing.__table__.select()
                        .join(Run.__table__)
                        .where(Run.name == grower, VoxelSpacing.in_overlay.is_(True))
                    ).all()
                )

        wait_for(lambda: overlay_spacings() >= free + 1, 10, "the grown run's new voxel spacings", d)
        stuck = layout.path_of(layout.PickKey(polled[0], "wendy", "3", "ribosome"))
        (ov / stuck).write_text(pick_text(polled[0], "wendy", "3", "ribosome", 5))
    assert d.stop()[0] == 0

    # ---- the same catalog, polled every half second: changes in unwatched runs arrive by polling
    d = daemons(sample.config, db_url, "--max-watches", "16", "--poll", "0.5")
    watched2, polled2 = split_runs(d, ov)
    assert len(polled2) >= 2 and split_runs(d, static)[0] == []
    with Catalog.open(sample.config, db=db_url) as cat:
        assert stuck in paths(cat, Pick)  # the restart's full index found what the long poll never did

        def fingerprint(path: str) -> str | None:
            with cat.engine.connect() as conn:
                return conn.execute(sa.select(Pick.fingerprint).where(Pick.path == path)).scalar()

        for run in polled2[:2]:
            a = layout.path_of(layout.PickKey(run, "xena", "1", "ribosome"))
            (ov / a).write_text(pick_text(run, "xena", "1", "ribosome", 3))
            wait_for(lambda a=a: a in paths(cat, Pick), 10, f"a pick in polled run {run}", d)
        # rewritten in place with the same bytes: only the modification time tells
        a = layout.path_of(layout.PickKey(polled2[0], "xena", "1", "ribosome"))
        (ov / a).write_text((ov / a).read_text())
        st = (ov / a).stat()
        wait_for(lambda: fingerprint(a) == f"{st.st_size}:{st.st_mtime_ns}", 10, "a pick rewritten in a polled run", d)
        static_run = sorted(run_dirs(static))[2]
        s = layout.path_of(layout.PickKey(static_run, "yuri", "0", "ribosome"))
        (static / s).write_text(pick_text(static_run, "yuri", "0", "ribosome", 2))
        wait_for(lambda: s in paths(cat, Pick, "static"), 10, "a pick in a polled static run", d)
        (ov / a).unlink()
        wait_for(lambda: a not in paths(cat, Pick), 10, "a pick deleted in a polled run", d)
        wait_for(lambda: d.state()["watching"]["poll"]["passes"] >= 3, 20, "a few polling passes", d)
    assert d.log().count(BUDGET_WARNING) == 1

    from copick_catalog.cli import main

    out = CliRunner().invoke(main, ["status", str(sample.config), "--db", db_url], env={**d.env})
    text = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    assert f"overlay: mixed: {len(watched2)} runs by inotify, {len(polled2)} polled every 0.5 s" in text, text
    assert "inotify watches:" in text and "--max-watches 16" in text
    assert d.stop()[0] == 0

"""``copick-catalog sample`` and ``demo``: a generated project, and the whole tour on it."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from .common import console, friendly, print_report


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-project"),
    show_default=True,
    help="Where to write the sample project.",
)
@click.option("--runs", type=int, default=200, show_default=True)
@click.option("--picks-per-run", type=int, default=12, show_default=True)
@click.option("--tomogram-runs", type=int, default=3, show_default=True)
@click.option("--overwrite", is_flag=True, help="Write into OUT even if it is not empty.")
@friendly
def sample(out: Path, runs: int, picks_per_run: int, tomogram_runs: int, overwrite: bool) -> None:
    """Write a generated sample copick project (static + overlay roots) to OUT (a new or empty directory)."""
    from ..sample import make_sample_project

    s = make_sample_project(
        out, runs=runs, picks_per_run=picks_per_run, tomogram_runs=tomogram_runs, overwrite=overwrite
    )
    console.print(f"wrote {s.runs} runs, {s.pick_files} pick files ({s.points} points), {s.tomograms} tomograms")
    console.print(f"config: {s.config}")


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-project"),
    show_default=True,
    help="Where to write the sample project (reused if it exists).",
)
@click.option("--runs", type=int, default=500, show_default=True)
@friendly
def demo(out: Path, runs: int) -> None:
    """Generate a sample project, index it into SQLite, and run example queries."""
    import time

    from ..catalog import Catalog
    from ..sample import make_sample_project

    config = out / "copick_config.json"
    if not config.exists():
        s = make_sample_project(out, runs=runs)
        console.print(
            f"[bold]1. sample project[/]: {s.runs} runs, {s.pick_files} pick files, {s.points} points -> {config}"
        )
    with Catalog.open(config) as cat:
        console.print(f"[bold]2. index[/] into {cat.db_url}")
        print_report(cat.index(trigger="cli"))
        console.print(
            "[bold]3. reindex[/] (incremental: files written within 2 s of the first pass are re-checked "
            "once, git's racy-timestamp rule; after that an unchanged project re-reads nothing)"
        )
        cat.index(trigger="cli")
        print_report(cat.index(trigger="cli"))
        t0 = time.perf_counter()
        picks = cat.picks(user_id="alice", object_name="ribosome")
        dt = (time.perf_counter() - t0) * 1000
        console.print(
            f"[bold]4. alice's ribosome picks[/]: {len(picks)} files, "
            f"{sum(p.n_points for p in picks)} points ({dt:.1f} ms)"
        )
        first = picks[0].open()
        console.print(f"   {picks[0].run_name}: first point at {first.points[0].location} (read from the file)")
        t = Table("object", "user", "pick files", "points", title="5. picks per object per user")
        for r in cat.pick_summary():
            t.add_row(r["object_name"], r["user_id"], str(r["picks"]), str(r["points"]))
        console.print(t)
        lacking = cat.runs_lacking("proteasome")
        console.print(f"[bold]6. runs without proteasome picks[/]: {len(lacking)} (e.g. {', '.join(lacking[:3])})")
        tomo = cat.tomograms(tomo_type="wbp")[0]
        group = tomo.open()
        console.print(
            f"[bold]7. tomogram[/] {tomo.voxel_spacing.run.name}/{tomo.tomo_type}: levels "
            f"{[group[k].shape for k in sorted(group.array_keys())]}, mean {float(group['0'][:].mean()):.3f}"
        )
        import importlib.util

        if importlib.util.find_spec("pandas") is not None:
            df = cat.points_table(object_name="ribosome", user_id="alice")
            console.print(f"[bold]8. points table for ML[/]: a DataFrame of {len(df)} rows, columns {list(df.columns)}")
        else:
            rows = cat.points_table(object_name="ribosome", user_id="alice", format="records")
            console.print(
                f"[bold]8. points table for ML[/]: {len(rows)} rows, columns {list(cat.POINT_COLUMNS)} "
                + escape("(pip install 'copick-catalog[pandas]' for a DataFrame or an Arrow table)")
            )

"""``copick-catalog export points``: the picks a copick URI selects, out of the catalog (calls ``Catalog.export``)."""

from __future__ import annotations

from pathlib import Path

import click

from ..formats.exports import BATCH_POINTS, COPICK_FORMATS, FORMATS, POINT_FORMATS
from .common import CONFIG_ARG, DB_OPTION, console, friendly, open_catalog


@click.group()
def export() -> None:
    """Export what a copick URI selects: points to Parquet or CSV, picks to STAR, EM, Dynamo or copick CSV."""


def _index_map(path: Path | None) -> dict[str, int] | None:
    """copick's index map file (tomogram index and run name per line), as run name -> index."""
    if path is None:
        return None
    try:
        from copick.util.formats import read_index_map_inverse
    except ImportError:
        raise click.UsageError("--index-map is read by copick: pip install 'copick-catalog[copick]'") from None
    try:
        return dict(read_index_map_inverse(str(path)))
    except Exception as exc:
        raise click.UsageError(f"cannot read --index-map {path}: {exc}") from None


@export.command("points")
@CONFIG_ARG
@click.argument("uri")
@DB_OPTION
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="parquet",
    show_default=True,
    help="parquet or csv: one table of every point (streamed in batches); star, em, dynamo, copick-csv: "
    "copick's own exporters, on the catalog.",
)
@click.option(
    "-o",
    "--output-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The file to write; for star/em/dynamo/copick-csv, all runs in one file (copick's combined export).",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="star/em/dynamo/copick-csv: one file per pick file in this directory (copick's per-run export).",
)
@click.option("--run", multiple=True, help="Only this run (repeat for any of several).")
@click.option("--voxel-size", type=float, default=None, help="Voxel size in Å (required for star, em and dynamo).")
@click.option(
    "--index-map",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="copick's CSV/TSV file mapping tomogram index to run name: required for a combined em or dynamo file.",
)
@click.option("--tomo-type", default=None, help="star: the tomogram type whose centre the coordinates refer to.")
@click.option(
    "--include-optics/--no-include-optics", default=True, show_default=True, help="star: write the optics table."
)
@click.option(
    "--batch-points",
    type=click.IntRange(min=1),
    default=BATCH_POINTS,
    show_default=True,
    help="parquet/csv: points per batch (memory stays that of one batch).",
)
@friendly
def export_points(
    config: Path,
    uri: str,
    db: str | None,
    fmt: str,
    output_file: Path | None,
    output_dir: Path | None,
    run: tuple[str, ...],
    voxel_size: float | None,
    index_map: Path | None,
    tomo_type: str | None,
    include_optics: bool,
    batch_points: int,
) -> None:
    """Export the points of the picks a copick URI selects (e.g. 'ribosome:alice/*').

    --format parquet (the default) or csv writes one table: run, object_name, user_id, session_id,
    layer, x, y, z (Å), instance_id, score, streamed in batches; in Parquet the names are dictionary
    columns. --format star, em, dynamo or copick-csv runs copick's own exporters (RELION's and
    Dynamo's conventions are copick's) with the options of `copick export picks`: --voxel-size, and
    --output-file (all runs in one file) or --output-dir (one file per pick file).
    """
    if (output_file is None) == (output_dir is None):
        raise click.UsageError("give exactly one of --output-file FILE or --output-dir DIR")
    if fmt in POINT_FORMATS and output_dir is not None:
        raise click.UsageError(f"--format {fmt} writes one file: use --output-file FILE instead of --output-dir")
    if fmt in ("star", "em", "dynamo") and voxel_size is None:
        raise click.UsageError(f"--format {fmt} needs --voxel-size (Å) to convert coordinates, as copick does")
    if fmt in POINT_FORMATS and (voxel_size is not None or index_map is not None or tomo_type is not None):
        raise click.UsageError(
            f"--voxel-size, --index-map and --tomo-type apply to {', '.join(COPICK_FORMATS)}, not to {fmt}"
        )
    run_to_index = _index_map(index_map)
    if fmt in ("em", "dynamo") and output_file is not None and run_to_index is None:
        raise click.UsageError(f"a combined {fmt} file numbers tomograms: give --index-map FILE, or use --output-dir")
    out = output_file if output_file is not None else output_dir
    assert out is not None
    with open_catalog(config, db) as cat:
        report = cat.export(
            uri,
            out,
            fmt,
            run=run[0] if len(run) == 1 else list(run) or None,  # one unknown run is an error
            batch_points=batch_points,
            per_run=output_dir is not None,
            voxel_size=voxel_size,
            run_to_index=run_to_index,
            tomo_type=tomo_type,
            include_optics=include_optics,
        )
    where = report.files[0] if len(report.files) == 1 else f"{len(report.files)} files in {out}"
    console.print(f"wrote {report.points} points of {report.picks} pick files to {where}", highlight=False)

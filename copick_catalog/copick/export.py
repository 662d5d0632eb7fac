"""STAR, EM, Dynamo and copick CSV exports: copick's own exporters, run on a catalog root.

RELION's and Dynamo's conventions (centred coordinates, Euler angles, optics tables, motivelist
columns) belong to copick, so none of them is re-implemented here: the picks a URI selects are
handed to ``copick.ops.export`` on a :class:`~copick_catalog.copick.root.CatalogRoot` built on the
same catalog, whose listings come from SQL and whose payload reads are copick's.

* per run (``per_run=True``, copick's ``--output-dir``): ``export_run`` for each run holding a selected
  pick, one file per pick file, named as copick names them (``<run>_<object>_<user>_<session>.<ext>``);
* combined (copick's ``--output-file``): STAR through ``export_relion_particles(root, ...)``; EM,
  Dynamo and CSV through the format handler's ``write_grouped``, fed run by run exactly as
  ``export_picks_combined`` feeds it (that function opens its own root from a config path, so its
  short collection loop is repeated here on the catalog root; the tests compare both outputs).

Only runs that hold a selected pick are visited (the catalog knows which), so a URI over 5,000 runs
does not open 5,000 runs to find the twelve with picks.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..catalog.export import COPICK_FORMATS, ExportError, ExportReport

if TYPE_CHECKING:
    from ..catalog import Catalog

#: File extension copick's per-run export gives each format.
EXTENSIONS = {"em": ".em", "star": ".star", "dynamo": ".tbl", "csv": ".csv"}


def _copick_exporters() -> Any:
    """``copick.ops.export``, or a one-line error saying what to install."""
    try:
        ops = importlib.import_module("copick.ops.export")
    except ImportError as exc:
        raise ExportError(
            f"the star, em, dynamo and copick-csv formats run copick's own exporters (copick.ops.export), which "
            f"this environment lacks ({exc}); pip install 'copick-catalog[copick]' with copick >= 1.31, or export "
            "--format parquet|csv"
        ) from None
    missing = [name for name in ("export_run", "export_relion_particles") if not hasattr(ops, name)]
    if missing:
        raise ExportError(
            f"this copick's copick.ops.export has no {', '.join(missing)}; upgrade copick (>= 1.31) for the star, em, "
            "dynamo and copick-csv formats, or export --format parquet|csv"
        )
    return ops


def catalog_root(cat: Catalog) -> Any:
    """A copick root on ``cat`` (no index on open: the caller's catalog is what is exported)."""
    from copick.impl.filesystem import CopickConfigFSSpec

    from .root import CatalogRoot

    config = CopickConfigFSSpec(**cat.config.model_dump(mode="json"))
    return CatalogRoot(config, catalog=cat, index=False, config_path=cat.config_path)


def export_copick_format(
    cat: Catalog,
    uri: str,
    out: str | os.PathLike[str],
    format: str,
    *,
    run: Any = None,
    per_run: bool = False,
    voxel_size: float | None = None,
    run_to_index: dict[str, int] | None = None,
    tomo_type: str | None = None,
    include_optics: bool = True,
) -> ExportReport:
    """Export the picks ``uri`` selects with copick's exporter for ``format`` (star, em, dynamo, copick-csv).

    ``out`` is the output directory with ``per_run`` (one file per pick file), else the one combined
    file. ``voxel_size`` (Å) is required for star, em and dynamo; ``run_to_index`` (run name ->
    tomogram index) for a combined em or dynamo file, optional per run (default index 1), as in
    ``copick export picks``; ``tomo_type`` picks the tomogram whose centre STAR coordinates use.
    """
    if format not in COPICK_FORMATS:
        raise ExportError(f"copick's exporters write {', '.join(COPICK_FORMATS)}, not {format!r}")
    fmt = COPICK_FORMATS[format]
    if fmt in ("em", "star", "dynamo") and voxel_size is None:
        raise ExportError(f"--format {format} needs --voxel-size (Å): copick converts coordinates to voxels with it")
    if fmt in ("em", "dynamo") and not per_run and run_to_index is None:
        raise ExportError(
            f"a combined {format} file numbers tomograms: give --index-map (run_to_index), or --output-dir for one "
            "file per pick file"
        )
    ops = _copick_exporters()
    from copick.util.uri import resolve_copick_objects

    picks = cat.resolve("picks", uri, run=run)
    root = catalog_root(cat)
    order = {name: i for i, name in enumerate(r.name for r in root.runs)}
    runs = sorted({p.run_name for p in picks}, key=lambda name: order.get(name, len(order)))
    report = ExportReport(format, picks=len(picks), points=sum(p.n_points for p in picks))
    out = Path(out)
    try:
        if per_run:
            out.mkdir(parents=True, exist_ok=True)
            errors: list[str] = []
            for name in runs:
                result = ops.export_run(
                    root.get_run(name),
                    str(out),
                    picks_uri=uri,
                    output_format=fmt,
                    voxel_spacing=voxel_size,
                    include_optics=include_optics,
                    run_to_index=run_to_index,
                    tomo_type=tomo_type,
                )
                errors.extend(result.get("errors", []))
            if errors:
                hint = (
                    " (copick's writers do not overwrite: export into an empty --output-dir; a pick file in both the "
                    "static and the overlay tree gets one file name)"
                    if "exists" in errors[0]
                    else ""
                )
                raise ExportError(f"copick's exporter failed for {len(errors)} run(s): {errors[0]}{hint}")
            names = {f"{p.run_name}_{p.object_name}_{p.user_id}_{p.session_id}{EXTENSIONS[fmt]}" for p in picks}
            report.files = sorted(str(out / n) for n in names if (out / n).exists())
        elif fmt == "star":
            if not runs:
                raise ExportError(f"no picks match {uri!r}: nothing to export")
            ops.export_relion_particles(
                root,
                uri,
                str(out),
                voxel_spacing=voxel_size,
                run_names=runs,
                tomo_type=tomo_type,
                include_optics=include_optics,
            )
            report.files = [str(out)]
        else:
            _write_grouped(root, uri, runs, out, fmt, voxel_size, run_to_index, include_optics, resolve_copick_objects)
            report.files = [str(out)]
    except ValueError as exc:  # copick's exporters say what is wrong with ValueError
        raise ExportError(f"copick's {format} exporter: {' '.join(str(exc).split())}") from None
    return report


def _write_grouped(
    root: Any,
    uri: str,
    runs: list[str],
    out: Path,
    fmt: str,
    voxel_size: float | None,
    run_to_index: dict[str, int] | None,
    include_optics: bool,
    resolve: Any,
) -> None:
    """A combined EM/Dynamo/CSV file: ``export_picks_combined``'s grouping, on our root, into the handler's writer."""
    from copick.util.handlers import FormatRegistry

    handler = FormatRegistry.get_picks_handler(fmt)
    if not handler.capabilities.supports_grouped_export:
        raise ExportError(f"copick's {fmt} handler cannot write one combined file; use --output-dir")
    grouped: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
    grouped_ids: dict[str, np.ndarray] = {}
    for name in runs:
        for picks in resolve(uri, root, "picks", name):
            points, transforms = picks.numpy()
            if len(points) == 0:
                continue
            scores = np.array([p.score for p in picks.points]) if picks.points else None
            ids = picks.instance_ids()
            if name in grouped:
                pos, tr, sc = grouped[name]
                both = np.concatenate([sc, scores]) if sc is not None and scores is not None else None
                grouped[name] = (np.vstack([pos, points]), np.vstack([tr, transforms]), both)
                grouped_ids[name] = np.concatenate([grouped_ids[name], ids])
            else:
                grouped[name] = (points, transforms, scores)
                grouped_ids[name] = ids
    if not grouped:
        raise ExportError(f"no picks with points match {uri!r}: nothing to export")
    out.parent.mkdir(parents=True, exist_ok=True)
    handler.write_grouped(
        path=str(out),
        grouped_data=grouped,
        voxel_spacing=voxel_size or 1.0,
        run_to_index=run_to_index,
        include_optics=include_optics,
        grouped_instance_ids=grouped_ids,
    )


__all__ = ["EXTENSIONS", "catalog_root", "export_copick_format"]

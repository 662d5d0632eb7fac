"""``copick-catalog query``, ``sql`` and ``stats``: the query API on the command line (each calls Catalog)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .common import (
    ALL_PROJECTS,
    CONFIG_ARG,
    DB_OPTION,
    FORMAT,
    each_catalog,
    emit,
    friendly,
    labelled,
    with_project,
)


def _multi(name: str, help: str) -> Callable[[Any], Any]:
    return click.option(f"--{name}", multiple=True, help=f"{help} (repeat for any of several).")


def _v(values: tuple[str, ...]) -> list[str] | None:
    return list(values) or None


#: An optional copick URI after CONFIG (``ribosome:alice/*``), ANDed with the options.
URI_ARG = click.argument("uri", required=False, metavar="[URI]")

_URI_HELP = (
    " URI is a copick URI ({grammar}, e.g. '{example}'); parts are globs, or regular expressions after 're:',"
    " and missing parts mean *."
)


@click.group()
def query() -> None:
    """List catalog rows matching filters (repeat an option to match any of several values)."""


def _annotation_command(kind: str) -> click.Command:
    @query.command(
        kind,
        help=f"{kind.capitalize()} by copick URI, run, object, user, session, layer."
        + _URI_HELP.format(
            grammar="object:user/session",
            example={"picks": "ribosome:alice/*", "meshes": "membrane:*/*", "filaments": "microtubule:*/*"}[kind],
        ),
    )
    @CONFIG_ARG
    @URI_ARG
    @DB_OPTION
    @_multi("run", "run name")
    @_multi("object", "object name")
    @_multi("user", "user id or tool name")
    @_multi("session", "session id ('0' means a tool)")
    @click.option("--layer", type=click.Choice(["static", "overlay"]), default=None)
    @ALL_PROJECTS
    @FORMAT
    @friendly
    def cmd(
        config: Path,
        uri: str | None,
        db: str | None,
        run: tuple[str, ...],
        object: tuple[str, ...],
        user: tuple[str, ...],
        session: tuple[str, ...],
        layer: str | None,
        all_projects: bool,
        fmt: str,
    ) -> None:
        cols = [
            "run",
            "object_name",
            "user_id",
            "session_id",
            "layer",
            *(["n_points"] if kind == "picks" else ["n_vertices", "n_faces"] if kind == "meshes" else []),
            "path",
        ]
        out: list[dict[str, Any]] = []
        with each_catalog(config, db, all_projects) as cats:
            for project, cat in cats:
                rows = getattr(cat, kind)(
                    run=_v(run), object_name=_v(object), user_id=_v(user), session_id=_v(session), layer=layer, uri=uri
                )
                out += labelled(project, ({"run": r.run_name, **{c: getattr(r, c) for c in cols[1:]}} for r in rows))
        emit(out, with_project(all_projects, cols), fmt, kind)

    return cmd


for _kind in ("picks", "meshes", "filaments"):
    _annotation_command(_kind)


@query.command("runs")
@CONFIG_ARG
@DB_OPTION
@_multi("name", "run name")
@click.option(
    "--lacking",
    metavar="OBJECT",
    default=None,
    help="Only runs with no pick file of OBJECT (the worklist of an annotation campaign).",
)
@_multi("user", "with --lacking: only count picks by this user")
@ALL_PROJECTS
@FORMAT
@friendly
def query_runs(
    config: Path,
    db: str | None,
    name: tuple[str, ...],
    lacking: str | None,
    user: tuple[str, ...],
    all_projects: bool,
    fmt: str,
) -> None:
    """Runs and which layers hold them."""
    if user and lacking is None:
        raise click.UsageError("--user only applies together with --lacking OBJECT")
    out: list[dict[str, Any]] = []
    with each_catalog(config, db, all_projects) as cats:
        for project, cat in cats:
            runs = cat.runs(_v(name))
            if lacking is not None:
                without = set(cat.runs_lacking(lacking, user_id=_v(user)))
                runs = [r for r in runs if r.name in without]
            out += labelled(
                project, ({"name": r.name, "in_static": r.in_static, "in_overlay": r.in_overlay} for r in runs)
            )
    cols = with_project(all_projects, ["name", "in_static", "in_overlay"])
    emit(out, cols, fmt, f"runs lacking {lacking}" if lacking else "runs")


@query.command("tomograms")
@CONFIG_ARG
@URI_ARG
@DB_OPTION
@_multi("run", "run name")
@click.option("--voxel-size", "voxel_size", type=float, multiple=True)
@_multi("tomo-type", "tomogram type")
@ALL_PROJECTS
@FORMAT
@friendly
def query_tomograms(
    config: Path,
    uri: str | None,
    db: str | None,
    run: tuple[str, ...],
    voxel_size: tuple[float, ...],
    tomo_type: tuple[str, ...],
    all_projects: bool,
    fmt: str,
) -> None:
    """Tomograms with shape, dtype and scale levels, by copick URI (tomo_type@voxel, e.g. 'wbp@10') and options."""
    out: list[dict[str, Any]] = []
    with each_catalog(config, db, all_projects) as cats:
        for project, cat in cats:
            out += labelled(
                project,
                (
                    {
                        "run": t.voxel_spacing.run.name,
                        "voxel_size": t.voxel_spacing.voxel_size,
                        "tomo_type": t.tomo_type,
                        "layer": t.layer,
                        "shape": t.shape,
                        "dtype": t.dtype,
                        "n_levels": t.n_levels,
                        "path": t.path,
                    }
                    for t in cat.tomograms(
                        run=_v(run), voxel_size=list(voxel_size) or None, tomo_type=_v(tomo_type), uri=uri
                    )
                ),
            )
    emit(
        out,
        with_project(all_projects, ["run", "voxel_size", "tomo_type", "layer", "shape", "dtype", "n_levels", "path"]),
        fmt,
        "tomograms",
    )


@query.command("features")
@CONFIG_ARG
@URI_ARG
@DB_OPTION
@_multi("run", "run name")
@_multi("tomo-type", "tomogram type")
@_multi("feature-type", "feature type")
@ALL_PROJECTS
@FORMAT
@friendly
def query_features(
    config: Path,
    uri: str | None,
    db: str | None,
    run: tuple[str, ...],
    tomo_type: tuple[str, ...],
    feature_type: tuple[str, ...],
    all_projects: bool,
    fmt: str,
) -> None:
    """Feature maps of tomograms, by copick URI (tomo_type@voxel:feature_type, e.g. 'wbp@10:sobel') and options."""
    out: list[dict[str, Any]] = []
    with each_catalog(config, db, all_projects) as cats:
        for project, cat in cats:
            out += labelled(
                project,
                (
                    {
                        "run": f.voxel_spacing.run.name,
                        "voxel_size": f.voxel_spacing.voxel_size,
                        "tomo_type": f.tomo_type,
                        "feature_type": f.feature_type,
                        "layer": f.layer,
                        "shape": f.shape,
                        "path": f.path,
                    }
                    for f in cat.features(run=_v(run), tomo_type=_v(tomo_type), feature_type=_v(feature_type), uri=uri)
                ),
            )
    emit(
        out,
        with_project(all_projects, ["run", "voxel_size", "tomo_type", "feature_type", "layer", "shape", "path"]),
        fmt,
        "features",
    )


@query.command("segmentations")
@CONFIG_ARG
@URI_ARG
@DB_OPTION
@_multi("run", "run name")
@click.option("--voxel-size", "voxel_size", type=float, multiple=True)
@_multi("name", "segmentation name")
@_multi("user", "user id")
@_multi("session", "session id")
@click.option("--multilabel/--single-label", "is_multilabel", default=None)
@ALL_PROJECTS
@FORMAT
@friendly
def query_segmentations(
    config: Path,
    uri: str | None,
    db: str | None,
    run: tuple[str, ...],
    voxel_size: tuple[float, ...],
    name: tuple[str, ...],
    user: tuple[str, ...],
    session: tuple[str, ...],
    is_multilabel: bool | None,
    all_projects: bool,
    fmt: str,
) -> None:
    """Segmentations (semantic, instance, panoptic) with shape and dtype, by copick URI and options.

    URI is name:user/session@voxel, with ?multilabel=true, ?instance=true or ?panoptic=true for a type
    (without one: binary and multilabel segmentations, as in copick), e.g. 'membrane:*/*@10'.
    """
    out: list[dict[str, Any]] = []
    with each_catalog(config, db, all_projects) as cats:
        for project, cat in cats:
            out += labelled(
                project,
                (
                    {
                        "run": s.run_name,
                        "voxel_size": s.voxel_size,
                        "name": s.name,
                        "user_id": s.user_id,
                        "session_id": s.session_id,
                        "is_multilabel": s.is_multilabel,
                        "kind": s.kind,
                        "layer": s.layer,
                        "shape": s.shape,
                        "dtype": s.dtype,
                    }
                    for s in cat.segmentations(
                        run=_v(run),
                        voxel_size=list(voxel_size) or None,
                        name=_v(name),
                        user_id=_v(user),
                        session_id=_v(session),
                        is_multilabel=is_multilabel,
                        uri=uri,
                    )
                ),
            )
    emit(
        out,
        with_project(
            all_projects,
            ["run", "voxel_size", "name", "user_id", "session_id", "is_multilabel", "kind", "layer", "shape", "dtype"],
        ),
        fmt,
        "segmentations",
    )


@click.command()
@click.argument("statement")
@CONFIG_ARG
@DB_OPTION
@FORMAT
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Stop the query after this many seconds.")
@friendly
def sql(statement: str, config: Path, db: str | None, fmt: str, timeout: float) -> None:
    """Run one read-only SQL query (SELECT, WITH, VALUES, TABLE) against the catalog and print the result.

    Read-only by construction: the database refuses anything else. The tables are runs,
    voxel_spacings, tomograms, features, picks, points, meshes, segmentations, filaments,
    density_maps, pickable_objects, run_objects, projects, index_runs and index_errors. On a shared
    PostgreSQL catalog, point --db at a role made by `copick-catalog db readonly-role`.
    """
    from ..catalog import Catalog

    with Catalog.open(config, db=db, read_only=True) as cat:
        result = cat.sql(statement, timeout=timeout)
        emit(result.records(), result.columns, fmt)


@click.command()
@CONFIG_ARG
@DB_OPTION
@click.option(
    "--by", default="object_name,user_id", show_default=True, help="Comma-separated pick columns to group by."
)
@ALL_PROJECTS
@FORMAT
@friendly
def stats(config: Path, db: str | None, by: str, all_projects: bool, fmt: str) -> None:
    """Pick files and points per object per user (or any grouping), plus each object's run coverage."""
    cols = [c.strip() for c in by.split(",") if c.strip()]
    summary: list[dict[str, Any]] = []
    coverage: list[dict[str, Any]] = []
    with each_catalog(config, db, all_projects) as cats:
        for project, cat in cats:
            summary += labelled(project, cat.pick_summary(by=cols))
            if fmt == "table":
                coverage += labelled(project, cat.object_coverage())
    emit(summary, with_project(all_projects, [*cols, "picks", "points"]), fmt, "picks")
    if fmt == "table":
        emit(
            coverage,
            with_project(all_projects, ["object_name", "runs_with_picks", "runs_lacking", "picks", "points"]),
            fmt,
            "coverage per object",
        )

"""Several projects in one catalog database: which ones it holds, and opening them without their config files.

A lab's shared PostgreSQL catalog holds every project its members index. The ``projects`` table keeps
each project's config (credentials masked) and roots, so the database alone is enough to list the
projects, open any of them for queries (:meth:`Catalog.open_db`), or ask one question of all of
them (:meth:`Catalog.open_all`, ``--all-projects`` on the command line).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import CatalogError
from .schema import IndexErrorRow, PickTotal, Project, Run


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    """One project of a catalog, as ``copick-catalog projects`` lists it."""

    id: int
    name: str
    config_path: str
    static_url: str | None
    overlay_url: str
    last_indexed_at: float | None
    runs: int
    pick_files: int
    points: int
    open_errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_projects(engine: Engine) -> list[ProjectInfo]:
    """Every project of the catalog with its roots, last index and sizes, in one query (by name, then id).

    Pick files and points are sums of ``pick_totals`` (a few dozen rows a project, kept equal to ``picks``
    by triggers), not a count over every pick row: a lab's catalog holds millions of them."""
    runs = sa.select(sa.func.count()).where(Run.project_id == Project.id).scalar_subquery()
    picks = sa.select(sa.func.coalesce(sa.func.sum(PickTotal.n_picks), 0)).where(PickTotal.project_id == Project.id)
    points = sa.select(sa.func.coalesce(sa.func.sum(PickTotal.n_points), 0)).where(PickTotal.project_id == Project.id)
    errors = (
        sa.select(sa.func.count())
        .where(IndexErrorRow.project_id == Project.id, IndexErrorRow.severity == "error")
        .scalar_subquery()
    )
    stmt = sa.select(
        Project.id,
        Project.name,
        Project.config_path,
        Project.static_url,
        Project.overlay_url,
        Project.last_indexed_at,
        runs,
        picks.scalar_subquery(),
        points.scalar_subquery(),
        errors,
    ).order_by(Project.name, Project.id)
    with engine.connect() as conn:
        return [
            ProjectInfo(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), int(r[8]), int(r[9]))
            for r in conn.execute(stmt)
        ]


def pick_project(projects: list[ProjectInfo], project: str | int | None, where: str) -> ProjectInfo:
    """The project named (or numbered) ``project``; with None, the only one. One-line errors list the choices."""
    names = ", ".join(f"{p.name!r} (id {p.id})" for p in projects) or "none"
    if not projects:
        raise CatalogError(f"catalog {where} holds no project yet; index one first (copick-catalog index CONFIG)")
    if project is None:
        if len(projects) == 1:
            return projects[0]
        raise CatalogError(f"catalog {where} holds {len(projects)} projects ({names}); say which one")
    found = [p for p in projects if p.id == project or p.name == project or str(p.id) == str(project)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CatalogError(f"catalog {where} has no project {project!r}; it holds {names}")
    raise CatalogError(f"catalog {where} has several projects named {project!r} ({names}); give its id")


__all__ = ["ProjectInfo", "list_projects", "pick_project"]

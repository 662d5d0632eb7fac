"""Query helpers on :class:`~copick_catalog.catalog.Catalog`: filters in, ORM rows or tables out.

Each helper takes any combination of filters (a value, or a list meaning "any of") and returns a
list of rows of one table, with the parents a caller always wants (the run; for volumes the voxel
spacing) loaded in the same query, so a loop over the result never issues one query per row.
Aggregates answer the daily questions in one SQL statement each, and :meth:`QueryMixin.points_table`
hands all points of a filter to pandas or Arrow for ML pipelines without building ORM objects.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, contains_eager

from ..errors import CatalogError, NotFoundError
from ..gcpause import gc_paused
from .db import chunks, read_snapshot
from .schema import (
    Base,
    DensityMap,
    Feature,
    Filament,
    Mesh,
    ObjectTotal,
    PackedPoints,
    Pick,
    PickableObject,
    PickDayTotal,
    PickTotal,
    Point,
    Run,
    RunObject,
    Segmentation,
    Tomogram,
    TomogramTotal,
    VoxelSpacing,
    table_of,
)
from .summary import DAY_S, floor_to
from .uri_sql import URIColumns, columns_for, uri_conditions
from .uris import InvalidURIError, copick_kind, parse_uri

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

Filter = Any  # a value or an iterable of values


def _match(column: Any, value: Filter) -> Any:
    """``column == value``, or ``IN`` for a list/tuple/set; floats compare to 3 decimals like copick paths."""
    if isinstance(value, str | bytes | int | float | bool):
        values: list[Any] = [value]
    elif isinstance(value, Iterable):
        values = list(value)
    else:
        values = [value]
    if isinstance(column.type, sa.Float):
        return sa.or_(*[sa.func.abs(column - float(v)) < 5e-4 for v in values])
    return column == values[0] if len(values) == 1 else column.in_(values)


def _where(stmt: Any, pairs: Sequence[tuple[Any, Filter]]) -> Any:
    for column, value in pairs:
        if value is not None:
            stmt = stmt.where(_match(column, value))
    return stmt


def _table_path(start: sa.Table, goal: sa.Table) -> list[tuple[sa.Table, Any]]:
    """Shortest chain of foreign-key joins from ``start`` to ``goal`` (breadth-first over the schema)."""
    tables = Base.metadata.tables.values()
    edges: dict[sa.Table, list[tuple[sa.Table, Any]]] = {t: [] for t in tables}
    for t in tables:
        for fk in t.foreign_keys:
            ref = fk.column.table
            on = fk.parent == fk.column
            edges[t].append((ref, on))
            edges[ref].append((t, on))
    prev: dict[sa.Table, tuple[sa.Table, Any] | None] = {start: None}
    queue = deque([start])
    while queue:
        t = queue.popleft()
        if t is goal:
            break
        # prefer direct parents (e.g. picks -> runs) by visiting FK targets first
        for nxt, on in sorted(edges[t], key=lambda e: e[0] not in {fk.column.table for fk in t.foreign_keys}):
            if nxt not in prev:
                prev[nxt] = (t, on)
                queue.append(nxt)
    if goal not in prev:
        raise CatalogError(f"cannot join {start.name} to {goal.name}")
    path: list[tuple[sa.Table, Any]] = []
    node = goal
    while prev[node] is not None:
        parent, on = prev[node]  # type: ignore[misc]
        path.append((node, on))
        node = parent
    return list(reversed(path))


def _require(format: str) -> None:
    """A clear error when the optional table library is not installed."""
    import importlib.util

    module = "pyarrow" if format == "arrow" else "pandas"
    if importlib.util.find_spec(module) is None:
        raise CatalogError(
            f"points_table(format={format!r}) needs {module}: pip install 'copick-catalog[pandas]' "
            "(or use format='records')"
        )


#: The pick columns ``run_objects`` is keyed by (per configured object): summaries per run by these alone read it.
RUN_OBJECT_KEYS = ("run_name", "object_name")


class QueryMixin:
    """Query helpers; mixed into :class:`Catalog` (needs ``engine``, ``project_id``, ``session()``)."""

    engine: Engine
    project_id: int
    _read_session: Session | None = None

    # ------------------------------------------------------------------ plumbing

    def _session(self) -> Session:
        """A long-lived session owned by the catalog, so returned rows keep working relationships."""
        if self._read_session is None:
            self._read_session = self._sessions()  # type: ignore[attr-defined]
        return self._read_session

    def _rows(self, stmt: Any) -> list[Any]:
        s = self._session()
        s.commit()  # a lazy load may have left a read transaction open: start from a fresh snapshot
        try:
            if len(s.identity_map):  # rows handed out earlier and still alive get the database's current values
                stmt = stmt.execution_options(populate_existing=True)
            with gc_paused():
                rows = list(s.scalars(stmt))
        except sa.exc.DataError as exc:
            s.rollback()
            if "regular expression" in str(exc.orig):  # a re: URI part PostgreSQL's regex engine cannot read
                raise InvalidURIError(
                    f"PostgreSQL refuses a regular expression of the URI ({str(exc.orig).strip()}); write it in the "
                    "syntax Python and PostgreSQL share (classes, *, +, {m,n}, groups, |, anchors)"
                ) from None
            raise
        finally:
            s.commit()  # end the read transaction: SQLite readers must not pin old WAL snapshots
        return rows

    def _uri(self, stmt: Any, kind: str, uri: str | None) -> Any:
        """``stmt`` narrowed to what the copick URI ``uri`` selects (see :mod:`~copick_catalog.catalog.uri_sql`)."""
        if uri is None:
            return stmt
        parsed = parse_uri(uri, kind)
        stmt = stmt.where(*uri_conditions(parsed, columns_for(parsed.kind), self.engine.dialect.name))
        if parsed.kind == "feature":  # copick finds features through their tomogram: one must exist
            stmt = stmt.where(
                sa.exists().where(
                    Tomogram.voxel_spacing_id == Feature.voxel_spacing_id, Tomogram.tomo_type == Feature.tomo_type
                )
            )
        return stmt

    def resolve(self, kind: str, uri: str, run: Filter = None) -> list[Any]:
        """The rows a copick URI selects, as ``copick.util.uri.resolve_copick_objects`` would find them, in one query.

        ``kind`` is picks, meshes, filaments, segmentations, tomograms or features (copick's singular
        names work too); ``uri`` is copick's grammar (``ribosome:alice/*``, ``membrane:*/*@10``,
        ``wbp@10``, ``wbp@10:sobel``, ``re:`` for regular expressions; see
        :mod:`~copick_catalog.catalog.uris`). ``run`` narrows to runs by name; a single run name the
        project does not have is an error, as in copick. Each row comes once (copick lists a feature
        once per tomogram of its type, so twice when that tomogram is in both layers).
        """
        helpers: dict[str, Callable[..., list[Any]]] = {
            "picks": self.picks,
            "mesh": self.meshes,
            "filaments": self.filaments,
            "segmentation": self.segmentations,
            "tomogram": self.tomograms,
            "feature": self.features,
        }
        rows = helpers[copick_kind(kind)](run=run, uri=uri)
        if not rows and isinstance(run, str) and not self.runs(run):
            raise NotFoundError(
                f"run {run!r} not found in project {self._project_name()!r}; `copick-catalog query runs CONFIG` lists "
                "its runs (index again if the run was added since)"
            )
        return rows

    def _project_name(self) -> str:
        config = getattr(self, "config", None)
        return str(getattr(config, "name", self.project_id))

    # ------------------------------------------------------------------ row helpers

    def runs(self, name: Filter = None) -> list[Run]:
        """Runs of the project, by name."""
        stmt = sa.select(Run).where(Run.project_id == self.project_id)
        return self._rows(_where(stmt, [(Run.name, name)]).order_by(Run.name))

    def voxel_spacings(self, run: Filter = None, voxel_size: Filter = None) -> list[VoxelSpacing]:
        """Voxel spacings of runs, by run name and voxel size (Å)."""
        stmt = (
            sa.select(VoxelSpacing)
            .join(VoxelSpacing.run)
            .options(contains_eager(VoxelSpacing.run))
            .where(Run.project_id == self.project_id)
        )
        stmt = _where(stmt, [(Run.name, run), (VoxelSpacing.voxel_size, voxel_size)])
        return self._rows(stmt.order_by(Run.name, VoxelSpacing.voxel_size))

    def tomograms(
        self,
        run: Filter = None,
        voxel_size: Filter = None,
        tomo_type: Filter = None,
        layer: Filter = None,
        *,
        uri: str | None = None,
    ) -> list[Tomogram]:
        """Tomograms with shape, dtype and levels from their headers; ``.open()`` on a row gives the zarr group.

        ``uri`` is a copick tomogram URI (``wbp@10``), ANDed with the other filters."""
        stmt = (
            sa.select(Tomogram)
            .join(Tomogram.voxel_spacing)
            .join(VoxelSpacing.run)
            .options(contains_eager(Tomogram.voxel_spacing).contains_eager(VoxelSpacing.run))
            .where(Tomogram.project_id == self.project_id)
        )
        stmt = _where(
            stmt,
            [
                (Run.name, run),
                (VoxelSpacing.voxel_size, voxel_size),
                (Tomogram.tomo_type, tomo_type),
                (Tomogram.layer, layer),
            ],
        )
        stmt = self._uri(stmt, "tomogram", uri)
        return self._rows(stmt.order_by(Run.name, VoxelSpacing.voxel_size, Tomogram.tomo_type, Tomogram.layer))

    def features(
        self,
        run: Filter = None,
        voxel_size: Filter = None,
        tomo_type: Filter = None,
        feature_type: Filter = None,
        layer: Filter = None,
        *,
        uri: str | None = None,
    ) -> list[Feature]:
        """Feature maps of tomograms, by run, voxel size, tomogram type and feature type.

        ``uri`` is a copick feature URI (``wbp@10:sobel``), ANDed with the other filters."""
        stmt = (
            sa.select(Feature)
            .join(Feature.voxel_spacing)
            .join(VoxelSpacing.run)
            .options(contains_eager(Feature.voxel_spacing).contains_eager(VoxelSpacing.run))
            .where(Feature.project_id == self.project_id)
        )
        stmt = _where(
            stmt,
            [
                (Run.name, run),
                (VoxelSpacing.voxel_size, voxel_size),
                (Feature.tomo_type, tomo_type),
                (Feature.feature_type, feature_type),
                (Feature.layer, layer),
            ],
        )
        stmt = self._uri(stmt, "feature", uri)
        return self._rows(stmt.order_by(Run.name, Feature.tomo_type, Feature.feature_type, Feature.layer))

    def _annotations(
        self,
        model: Any,
        run: Filter,
        object_name: Filter,
        user_id: Filter,
        session_id: Filter,
        layer: Filter,
        uri: str | None = None,
    ) -> list[Any]:
        # No join: rows carry run_name, and .run stays a lazy relationship for whoever asks for it.
        stmt = sa.select(model).where(model.project_id == self.project_id)
        stmt = _where(
            stmt,
            [
                (model.run_name, run),
                (model.object_name, object_name),
                (model.user_id, user_id),
                (model.session_id, session_id),
                (model.layer, layer),
            ],
        )
        stmt = self._uri(stmt, {Pick: "picks", Mesh: "mesh", Filament: "filaments"}[model], uri)
        return self._rows(
            stmt.order_by(model.run_name, model.object_name, model.user_id, model.session_id, model.layer)
        )

    def picks(
        self,
        run: Filter = None,
        object_name: Filter = None,
        user_id: Filter = None,
        session_id: Filter = None,
        layer: Filter = None,
        *,
        uri: str | None = None,
    ) -> list[Pick]:
        """Pick files matching every given filter; ``.open()`` on a row reads its points.

        ``uri`` is a copick URI (``ribosome:alice/*``), ANDed with the other filters."""
        return self._annotations(Pick, run, object_name, user_id, session_id, layer, uri)

    def meshes(
        self,
        run: Filter = None,
        object_name: Filter = None,
        user_id: Filter = None,
        session_id: Filter = None,
        layer: Filter = None,
        *,
        uri: str | None = None,
    ) -> list[Mesh]:
        """Mesh files matching every given filter, with vertex and face counts; ``.open()`` gives a trimesh Scene.

        ``uri`` is a copick URI (``membrane:*/0``), ANDed with the other filters."""
        return self._annotations(Mesh, run, object_name, user_id, session_id, layer, uri)

    def filaments(
        self,
        run: Filter = None,
        object_name: Filter = None,
        user_id: Filter = None,
        session_id: Filter = None,
        layer: Filter = None,
        *,
        uri: str | None = None,
    ) -> list[Filament]:
        """Filament files matching every given filter; ``.open()`` reads the curves.

        ``uri`` is a copick URI (``microtubule:*/*``), ANDed with the other filters."""
        return self._annotations(Filament, run, object_name, user_id, session_id, layer, uri)

    def segmentations(
        self,
        run: Filter = None,
        voxel_size: Filter = None,
        name: Filter = None,
        user_id: Filter = None,
        session_id: Filter = None,
        is_multilabel: bool | None = None,
        kind: Filter = None,
        layer: Filter = None,
        *,
        uri: str | None = None,
    ) -> list[Segmentation]:
        """Segmentations (semantic, instance, panoptic: ``kind``) by run, voxel size, name, user, session.

        ``uri`` is a copick segmentation URI (``membrane:*/*@10``, ``?multilabel=true``), ANDed with the
        other filters; like copick, a URI without a type selects binary and multilabel segmentations."""
        stmt = sa.select(Segmentation).where(Segmentation.project_id == self.project_id)
        stmt = _where(
            stmt,
            [
                (Segmentation.run_name, run),
                (Segmentation.voxel_size, voxel_size),
                (Segmentation.name, name),
                (Segmentation.user_id, user_id),
                (Segmentation.session_id, session_id),
                (Segmentation.is_multilabel, is_multilabel),
                (Segmentation.kind, kind),
                (Segmentation.layer, layer),
            ],
        )
        stmt = self._uri(stmt, "segmentation", uri)
        return self._rows(
            stmt.order_by(Segmentation.run_name, Segmentation.voxel_size, Segmentation.name, Segmentation.layer)
        )

    def density_maps(self, object_name: Filter = None, layer: Filter = None) -> list[DensityMap]:
        """The density maps of pickable objects (``Objects/<name>.zarr``)."""
        stmt = sa.select(DensityMap).where(DensityMap.project_id == self.project_id)
        return self._rows(_where(stmt, [(DensityMap.object_name, object_name), (DensityMap.layer, layer)]))

    def find(self, model: type[Any], *expressions: Any, **filters: Filter) -> list[Any]:
        """Rows of ``model`` matching SQLAlchemy expressions, joins to other tables added for you.

        Shaped like the CryoET Data Portal client: ``cat.find(Pick, Pick.user_id == "alice",
        Run.name.like("TS_1%"))``. Keyword filters name columns of ``model``
        (``cat.find(Pick, user_id=["alice", "bob"])``); an unknown name lists the columns there are.
        """
        table = model.__table__
        stmt = sa.select(model)
        joined = {table}
        for expr in expressions:
            for t in sa.sql.util.find_tables(expr, check_columns=True):
                if t in joined or not isinstance(t, sa.Table):
                    continue
                for step, on in _table_path(table, t):
                    if step not in joined:
                        stmt = stmt.join(step, on)
                        joined.add(step)
            stmt = stmt.where(expr)
        for name, value in filters.items():
            if name not in table.c:
                raise CatalogError(f"{model.__name__} has no column {name!r}; columns are: {', '.join(table.c.keys())}")
            stmt = stmt.where(_match(table.c[name], value))
        if "project_id" in table.c:
            stmt = stmt.where(table.c.project_id == self.project_id)
        else:  # points: scope through their pick
            if Pick.__table__ not in joined:
                stmt = stmt.join(Pick.__table__, Point.pick_id == Pick.id)
            stmt = stmt.where(Pick.project_id == self.project_id)
        if hasattr(model, "run") and model is not Run and "run_id" in table.c:
            if Run.__table__ not in joined:
                stmt = stmt.join(Run.__table__, table.c.run_id == Run.id)
            stmt = stmt.options(contains_eager(model.run))
        return self._rows(stmt)

    # ------------------------------------------------------------------ aggregates

    def _all(self, stmt: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def pick_summary(self, by: Sequence[str] = ("object_name", "user_id"), **filters: Filter) -> list[dict[str, Any]]:
        """Pick files and points grouped by columns of ``picks`` (default per object per user).

        Grouped and filtered by object, user, session and layer (and a copick URI) alone, the answer is
        read from ``pick_totals`` (a few dozen rows, kept equal to ``picks`` by triggers); per run (and
        object), filtered by run name and object alone, from ``run_objects`` (the report's heat map); any
        other column (``user_id`` with ``run_name``, ``run=``, ``unit``, ...) is answered from ``picks``
        itself, with the same rows and types either way.
        """
        bad = [c for c in by if c not in Pick.__table__.c]
        if bad:
            raise CatalogError(f"cannot group by {bad}; pick columns are: {', '.join(Pick.__table__.c.keys())}")
        if set(by) <= set(TOTAL_KEYS) and set(filters) <= {*TOTAL_KEYS, "uri"}:
            return self._all(self._totals_summary(by, filters))
        if "run_name" in by and set(by) <= set(RUN_OBJECT_KEYS) and set(filters) <= set(RUN_OBJECT_KEYS):
            return self._run_objects_summary(by, filters)
        cols = [Pick.__table__.c[c] for c in by]
        stmt = (
            sa.select(*cols, sa.func.count().label("picks"), sa.func.sum(Pick.n_points).label("points"))
            .where(Pick.project_id == self.project_id)
            .group_by(*cols)
            .order_by(*cols)
        )
        stmt = self._filters(stmt, Pick, filters)
        return self._all(stmt)

    def _totals_summary(self, by: Sequence[str], filters: dict[str, Filter]) -> Any:
        """:meth:`pick_summary` from ``pick_totals``: sums of its counts (cast back to integers: PostgreSQL sums
        BIGINT as NUMERIC), ``picks`` 0 and ``points`` None for an empty ungrouped answer, as ``count``/``sum``
        over no pick rows give."""
        totals = table_of(PickTotal)
        cols = [totals.c[c] for c in by]
        stmt = (
            sa.select(
                *cols,
                sa.cast(sa.func.coalesce(sa.func.sum(totals.c.n_picks), 0), sa.BigInteger).label("picks"),
                sa.cast(sa.func.sum(totals.c.n_points), sa.BigInteger).label("points"),
            )
            .where(totals.c.project_id == self.project_id)
            .group_by(*cols)
            .order_by(*cols)
        )
        return self._total_filters(stmt, totals, filters)

    def _total_filters(self, stmt: Any, table: sa.Table, filters: dict[str, Filter]) -> Any:
        """``stmt`` narrowed by pick filters on a summary table keyed like ``pick_totals`` (a URI included)."""
        for name, value in filters.items():
            if value is None:
                continue
            if name == "uri":
                names = URIColumns({c: table.c[c] for c in ("object_name", "user_id", "session_id")})
                stmt = stmt.where(*uri_conditions(parse_uri(value, "picks"), names, self.engine.dialect.name))
            else:
                stmt = stmt.where(_match(table.c[name], value))
        return stmt

    def _run_objects_summary(self, by: Sequence[str], filters: dict[str, Filter]) -> list[dict[str, Any]]:
        """:meth:`pick_summary` per run (and object) from ``run_objects``: its rows with picks, for the configured
        objects, plus the picks of objects picked but not configured (which ``run_objects`` leaves out; few or
        none, found in ``pick_totals``). ``run_objects`` is refreshed in every transaction that writes picks
        (:mod:`~copick_catalog.catalog.summary`) and holds one row per run and object, so per run and object
        nothing is grouped: 0.16 s instead of 1.2 s of SQL for 296,000 rows at 100,000 runs."""
        ro = table_of(RunObject)
        configured = sa.select(PickableObject.name).where(PickableObject.project_id == self.project_id)
        unlisted = (
            sa.select(PickTotal.object_name)
            .where(PickTotal.project_id == self.project_id, PickTotal.object_name.not_in(configured))
            .distinct()
        )
        with self.engine.connect() as conn:
            others = sorted(conn.scalars(_where(unlisted, [(PickTotal.object_name, filters.get("object_name"))])))
        counted = sa.select(
            ro.c.run_name, ro.c.object_name, ro.c.n_picks.label("picks"), ro.c.n_points.label("points")
        ).where(ro.c.project_id == self.project_id, ro.c.n_picks > 0)
        parts = [_where(counted, [(ro.c[name], value) for name, value in filters.items()])]
        if others:
            picked = (
                sa.select(Pick.run_name, Pick.object_name, sa.func.count().label("picks"), sa.func.sum(Pick.n_points))
                .where(Pick.project_id == self.project_id, Pick.object_name.in_(others))
                .group_by(Pick.run_name, Pick.object_name)
            )
            parts.append(_where(picked, [(Pick.__table__.c[name], value) for name, value in filters.items()]))
        sub = sa.union_all(*parts).subquery()
        keys = [sub.c[c] for c in by]
        if set(by) == set(RUN_OBJECT_KEYS):  # a row per run and object already
            stmt = sa.select(*keys, sub.c.picks, sub.c.points)
        else:
            stmt = sa.select(
                *keys,
                sa.cast(sa.func.sum(sub.c.picks), sa.BigInteger).label("picks"),
                sa.cast(sa.func.sum(sub.c.points), sa.BigInteger).label("points"),
            ).group_by(*keys)
        return self._all(stmt.order_by(*keys))

    def points_by_session(self, **filters: Filter) -> list[dict[str, Any]]:
        """Total points per session id."""
        return self.pick_summary(by=("session_id",), **filters)

    def object_coverage(self) -> list[dict[str, Any]]:
        """For each configured object: how many runs have picks of it and how many lack them, with its
        pick files and points. How far along the annotation of each object is, from one row per object
        (``object_totals``, ``run_objects`` grouped by object and kept equal to it by triggers)."""
        stmt = (
            sa.select(
                ObjectTotal.object_name,
                ObjectTotal.n_runs_with_picks.label("runs_with_picks"),
                (ObjectTotal.n_runs - ObjectTotal.n_runs_with_picks).label("runs_lacking"),
                ObjectTotal.n_picks.label("picks"),
                ObjectTotal.n_points.label("points"),
            )
            .where(ObjectTotal.project_id == self.project_id)
            .order_by(ObjectTotal.object_name)
        )
        return [{k: (int(v) if k != "object_name" else v) for k, v in row.items()} for row in self._all(stmt)]

    def runs_lacking(self, object_name: str, user_id: Filter = None) -> list[str]:
        """Names of runs with no pick file of ``object_name`` (optionally: by ``user_id``).

        For a configured object and any user this reads the zero rows of ``run_objects``; a user
        filter, or an object the config does not list, is answered from ``picks`` directly.
        """
        if user_id is None:
            configured = sa.select(PickableObject.id).where(
                PickableObject.project_id == self.project_id, PickableObject.name == object_name
            )
            # rows exist only for configured objects, so no row may also mean "not configured": ask then
            zero = (
                sa.select(RunObject.run_name)
                .where(
                    RunObject.project_id == self.project_id,
                    RunObject.object_name == object_name,
                    RunObject.n_picks == 0,
                )
                .order_by(RunObject.run_name)
            )
            with self.engine.connect() as conn:
                names = list(conn.scalars(zero))
                if names or conn.execute(configured).first() is not None:
                    return names
        self._require_object(object_name)
        runs = sa.select(Run.name).where(Run.project_id == self.project_id).order_by(Run.name)
        if self.engine.dialect.name == "postgresql":
            # matched on the run's name, which picks repeat: an index-only range of ix_picks_listing (project,
            # object, user, run_name) instead of a visit to every pick row of the object (3,000 pages instead of
            # 31,000 at 100,000 runs). Asked as the run names that have picks, DISTINCT, PostgreSQL sees that
            # the range comes in run-name order for one user and merges it with the runs in name order: no hash
            # of 171,000 names and no sort (at 100,000 runs, warm: 48 ms of SQL instead of NOT EXISTS's 55)
            picked = _where(
                sa.select(Pick.run_name).where(Pick.project_id == self.project_id, Pick.object_name == object_name),
                [(Pick.user_id, user_id)],
            )
            has = picked.distinct().subquery()
            stmt = runs.outerjoin(has, has.c.run_name == Run.name).where(has.c.run_name.is_(None))
        else:  # SQLite probes once per run, by run id (faster there: 32 vs 49 ms at 50,000 runs)
            has = sa.select(Pick.id).where(Pick.run_id == Run.id, Pick.object_name == object_name)
            stmt = runs.where(~sa.exists(_where(has, [(Pick.user_id, user_id)])))
        with self.engine.connect() as conn:
            return list(conn.scalars(stmt))

    def _require_object(self, object_name: str) -> None:
        """A typo must not answer "every run lacks it": the object has to be configured or picked somewhere."""
        known = sa.select(PickableObject.name).where(PickableObject.project_id == self.project_id)
        picked = sa.select(Pick.id).where(Pick.project_id == self.project_id, Pick.object_name == object_name)
        with self.engine.connect() as conn:
            names = sorted(conn.scalars(known))
            if object_name in names or conn.execute(picked.limit(1)).first() is not None:
                return
        raise CatalogError(
            f"no pickable object {object_name!r} in this project, and no picks of it; objects are: "
            f"{', '.join(names) or '(none)'}"
        )

    def tomogram_types(self) -> list[dict[str, Any]]:
        """For each voxel size: which tomogram types exist and in how many runs (from ``tomogram_totals``, a row
        per voxel size and type kept by triggers, instead of every tomogram joined to its voxel spacing)."""
        stmt = (
            sa.select(
                TomogramTotal.voxel_size,
                TomogramTotal.tomo_type,
                TomogramTotal.n_runs.label("runs"),
            )
            .where(TomogramTotal.project_id == self.project_id)
            .order_by(TomogramTotal.voxel_size, TomogramTotal.tomo_type)
        )
        return self._all(stmt)

    def pick_timeline(
        self,
        by: Sequence[str] = (),
        *,
        bucket_s: float = DAY_S,
        since: float | None = None,
        **filters: Filter,
    ) -> list[dict[str, Any]]:
        """Pick files and points by when their file was last modified, in buckets of ``bucket_s`` seconds.

        The catalog keeps no creation time, only each file's modification time (``picks.mtime``, from
        the listing: ``st_mtime`` locally, ``LastModified`` on S3), so this says when work was last
        saved: a file edited today counts today. Rows carry ``bucket`` (its start, seconds since the
        epoch; UTC days by default; None for files whose listing gave no time), the ``by`` columns of
        ``picks``, ``picks`` and ``points``. ``since`` keeps files modified at or after that time (the
        week's work). A bucket of several days holds whole UTC days (its start is a multiple of its size).

        Buckets of whole days, grouped and filtered by object, user, session and layer (and a URI) alone,
        are sums of ``pick_day_totals`` (per day, kept equal to ``picks`` by triggers), with the part of
        the day ``since`` falls in read from ``picks`` by its mtime index; anything else is one GROUP BY
        over ``picks`` (a range of it with ``since``). Both give the same rows.
        """
        bad = [c for c in by if c not in Pick.__table__.c]
        if bad:
            raise CatalogError(f"cannot group by {bad}; pick columns are: {', '.join(Pick.__table__.c.keys())}")
        if not bucket_s > 0:
            raise CatalogError(f"bucket_s must be a positive number of seconds, not {bucket_s!r}")
        summed = (
            float(bucket_s) % DAY_S == 0
            and set(by) <= set(TOTAL_KEYS)
            and set(filters) <= {*TOTAL_KEYS, "uri"}
            and (since is None or math.isfinite(since))
        )
        timeline = self._timeline_from_days if summed else self._timeline_from_picks
        rows = self._all(timeline(by, float(bucket_s), since, filters))
        for row in rows:
            row["bucket"] = None if row["bucket"] is None else float(row["bucket"])
            row["picks"], row["points"] = int(row["picks"]), int(row["points"] or 0)
        return rows

    def _bucket(self, mtime: Any, bucket_s: float) -> Any:
        """The start of ``mtime``'s bucket; of whole days, the bucket holding the start of its UTC day, which is
        where ``pick_day_totals`` counts the file (the same floating-point steps as its triggers)."""
        dialect = self.engine.dialect.name
        if bucket_s % DAY_S == 0:
            return self._bucket_of_day(floor_to(mtime, DAY_S, dialect), bucket_s)
        return floor_to(mtime, bucket_s, dialect)

    def _timeline_from_picks(
        self, by: Sequence[str], bucket_s: float, since: float | None, filters: dict[str, Filter]
    ) -> Any:
        """:meth:`pick_timeline` as one GROUP BY over ``picks``: the bucket computed per row in a subquery."""
        inner = sa.select(
            self._bucket(Pick.mtime, bucket_s).label("bucket"), *(Pick.__table__.c[c] for c in by), Pick.n_points
        ).where(Pick.project_id == self.project_id)
        if since is not None:
            inner = inner.where(Pick.mtime >= float(since))
        sub = self._filters(inner, Pick, filters).subquery()
        keys = [sub.c.bucket, *(sub.c[c] for c in by)]
        return (
            sa.select(*keys, sa.func.count().label("picks"), sa.func.sum(sub.c.n_points).label("points"))
            .group_by(*keys)
            .order_by(*keys)
        )

    def _timeline_from_days(
        self, by: Sequence[str], bucket_s: float, since: float | None, filters: dict[str, Filter]
    ) -> Any:
        """:meth:`pick_timeline` from ``pick_day_totals``, one statement over a union of shares of each bucket.

        Without ``since``: every day's row, plus the files with no mtime as ``pick_totals`` minus the day
        rows (a key's difference is its undated files). With ``since``: the rows of the days after the one
        ``since`` falls in, plus the files saved from ``since`` to that day's end, a range of the mtime index
        of ``picks``. The split is exact in floating point too: the computed start of a file's day is a
        monotonic function of its mtime and never above it (the double just below a midnight, divided by
        86,400 > 2**16, stays more than half a step below the whole number of days, so it never rounds up
        to it), so the files of the later days are exactly those saved at or after the next midnight.
        """
        days, totals = table_of(PickDayTotal), table_of(PickTotal)

        def share(table: sa.Table, bucket: Any, *where: Any, minus: bool = False) -> Any:
            picks, points = (-table.c.n_picks, -table.c.n_points) if minus else (table.c.n_picks, table.c.n_points)
            stmt = sa.select(
                bucket.label("bucket"), *(table.c[c] for c in by), picks.label("n_picks"), points.label("n_points")
            ).where(table.c.project_id == self.project_id, *where)
            return self._total_filters(stmt, table, filters)

        undated = sa.cast(sa.null(), sa.Float)
        if since is None:
            parts = [
                share(days, self._bucket_of_day(days.c.day_start, bucket_s)),
                share(totals, undated),
                share(days, undated, minus=True),
            ]
        else:
            first = math.floor(since / DAY_S) * DAY_S  # the start of since's UTC day, as the SQL computes it
            rest = sa.select(
                self._bucket(Pick.mtime, bucket_s), *(Pick.__table__.c[c] for c in by), sa.literal(1), Pick.n_points
            ).where(Pick.project_id == self.project_id, Pick.mtime >= float(since), Pick.mtime < first + DAY_S)
            parts = [
                share(days, self._bucket_of_day(days.c.day_start, bucket_s), days.c.day_start > first),
                self._filters(rest, Pick, filters),
            ]
        sub = sa.union_all(*parts).subquery()
        keys = [sub.c.bucket, *(sub.c[c] for c in by)]
        return (
            sa.select(*keys, sa.func.sum(sub.c.n_picks).label("picks"), sa.func.sum(sub.c.n_points).label("points"))
            .group_by(*keys)
            .having(sa.func.sum(sub.c.n_picks) != 0)  # a key with no undated file
            .order_by(*keys)
        )

    def _bucket_of_day(self, day_start: Any, bucket_s: float) -> Any:
        """The start of the bucket of whole days that holds the UTC day starting at ``day_start``."""
        return day_start if bucket_s == DAY_S else floor_to(day_start, bucket_s, self.engine.dialect.name)

    def _filters(self, stmt: Any, model: Any, filters: dict[str, Filter]) -> Any:
        for name, value in filters.items():
            if name == "run":
                stmt = stmt.where(model.run_id.in_(_where(sa.select(Run.id), [(Run.name, value)])))
                continue
            if name == "uri":  # a copick URI of picks (the only table these aggregates read)
                stmt = self._uri(stmt, "picks", value)
                continue
            if name not in model.__table__.c:
                raise CatalogError(
                    f"{model.__name__} has no column {name!r}; columns are: "
                    f"{', '.join(['run', *model.__table__.c.keys()])}"
                )
            if value is not None:
                stmt = stmt.where(_match(model.__table__.c[name], value))
        return stmt

    POINT_COLUMNS = ("run", "object_name", "user_id", "session_id", "layer", "x", "y", "z", "instance_id", "score")

    def points_table(self, *, format: str = "pandas", **filters: Filter) -> Any:
        """Every point of the picks matching ``filters`` as one table (pandas DataFrame or Arrow Table).

        Columns: run, object_name, user_id, session_id, layer, x, y, z, instance_id, score (Å). The
        five descriptive columns are categorical in pandas and dictionary-encoded in Arrow: a column
        holds each distinct name once, not once per point. The numbers come from each pick's packed
        copy of its points (table ``packed_points``), one blob per pick, in file order: no ORM
        objects and no Python object per point, for feeding ML pipelines. ``format="records"``
        gives a list of dicts instead.
        """
        if format not in ("pandas", "arrow", "records"):
            raise CatalogError(f"unknown format {format!r}; use 'pandas', 'arrow' or 'records'")
        if format != "records":
            _require(format)
        picks = self._filters(
            sa.select(Pick.id, *(Pick.__table__.c[c] for c in _PICK_LABELS), PackedPoints.data)
            .outerjoin(PackedPoints, PackedPoints.pick_id == Pick.id)
            .where(Pick.project_id == self.project_id),
            Pick,
            filters,
        )
        with read_snapshot(self.engine) as conn:
            meta = conn.execute(picks.order_by(Pick.id)).all()
            blobs = [m[-1] for m in meta]
            unpacked = [m[0] for m in meta if m[-1] is None]
            if unpacked:  # no packed copy (a catalog row from outside the indexer): read the points table
                blobs = _fill_unpacked(conn, meta, blobs, unpacked)
        return _point_frame([m[:-1] for m in meta], blobs, format, self.POINT_COLUMNS)


#: The pick columns ``pick_totals`` is keyed by (with the project): summaries by these alone read it.
TOTAL_KEYS = ("object_name", "user_id", "session_id", "layer")

#: The pick columns behind the descriptive point columns, in POINT_COLUMNS order.
_PICK_LABELS = ("run_name", "object_name", "user_id", "session_id", "layer")


def pack_from_points(conn: Any, ids: Sequence[int]) -> dict[int, bytes]:
    """The packed points of picks that have no ``packed_points`` row, built from their ``points`` rows."""
    from ..formats.picks import pack_points

    rows: dict[int, list[tuple[float, ...]]] = {i: [] for i in ids}
    for chunk in chunks(list(ids)):
        stmt = (
            sa.select(Point.pick_id, Point.x, Point.y, Point.z, Point.instance_id, Point.score)
            .where(Point.pick_id.in_(chunk))
            .order_by(Point.pick_id, Point.idx)
        )
        for pid, *values in conn.execute(stmt):
            rows[pid].append(tuple(values))
    return {pid: pack_points(values) for pid, values in rows.items()}


def _fill_unpacked(conn: Any, meta: Sequence[Any], blobs: list[bytes | None], ids: list[int]) -> list[bytes]:
    """Pack the points of picks that have no ``packed_points`` row from the ``points`` table."""
    packed = pack_from_points(conn, ids)
    return [blob if blob is not None else packed[m[0]] for m, blob in zip(meta, blobs, strict=True)]


def _point_frame(meta: Sequence[Any], blobs: Sequence[bytes], format: str, columns: Sequence[str]) -> Any:
    """Assemble the points table: numbers as numpy columns, names as codes into per-column categories."""
    import numpy as np  # here, not at import: a query command prints rows without numpy

    from ..formats.picks import PACKED_POINT_FIELDS, unpack_points

    nums, counts = unpack_points(blobs)
    which = np.repeat(np.arange(len(meta)), counts)  # row of meta for each point
    numbers = {f: nums[:, i] for i, f in enumerate(PACKED_POINT_FIELDS)}
    numbers["instance_id"] = numbers["instance_id"].astype(np.int64)
    if format == "records":
        names = [m[1:] for m in meta]
        num_cols = [numbers[c].tolist() for c in PACKED_POINT_FIELDS]
        return [
            dict(zip(columns, (*names[w], *vals), strict=True))
            for w, *vals in zip(which.tolist(), *num_cols, strict=True)
        ]
    labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, name in enumerate(columns[: len(_PICK_LABELS)], start=1):
        categories, per_pick = np.unique(np.array([m[i] for m in meta], dtype=object).astype(str), return_inverse=True)
        labels[name] = (categories, per_pick.reshape(-1)[which].astype(np.int32))
    if format == "arrow":
        import pyarrow as pa

        cols = {
            name: pa.DictionaryArray.from_arrays(codes, pa.array(cats, pa.string()))
            for name, (cats, codes) in labels.items()
        }
        return pa.table({**cols, **{k: pa.array(v) for k, v in numbers.items()}})
    import pandas as pd

    cols = {name: pd.Categorical.from_codes(codes, categories=pd.Index(cats)) for name, (cats, codes) in labels.items()}
    return pd.DataFrame({**cols, **numbers}, columns=list(columns))

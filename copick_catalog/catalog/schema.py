"""Catalog tables as typed SQLAlchemy 2 ORM classes, and ``.open()`` on each file-backed row.

Table and column names are the public face of the catalog (people query them with plain SQL), so
they speak copick's words: ``picks.user_id``, ``tomograms.tomo_type``, ``segmentations.is_multilabel``.
Every file-backed row records its ``layer`` (static/overlay), its ``path`` relative to that root and
the ``fingerprint`` the indexer compares, so a moved or remounted project keeps its catalog.

Nothing here creates tables: the Alembic migrations in ``copick_catalog/catalog/migrations`` do.
``row.open()`` reads the payload through the row's kind spec (:mod:`copick_catalog.index.kinds`), with
the project's roots that the :class:`~copick_catalog.Catalog` puts in its sessions' ``info``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, object_session, relationship
from sqlalchemy.orm.decl_api import DeclarativeAttributeIntercept

from ..errors import CatalogError, StaleRowError
from ..index.grammar import Kind

if TYPE_CHECKING:
    from ..index.roots import Root

#: JSON on SQLite, JSONB on PostgreSQL (comparable, indexable, what people expect to query).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

LAYERS = ("static", "overlay")


class _TableMeta(DeclarativeAttributeIntercept):
    """Make ``Pick.no_such_column`` say which columns exist, instead of a bare AttributeError."""

    def __getattr__(cls, name: str) -> Any:
        table = cls.__dict__.get("__table__")
        if name.startswith("_") or table is None:
            raise AttributeError(name)
        raise AttributeError(
            f"{cls.__name__} has no column or attribute {name!r}; columns are: {', '.join(table.c.keys())}"
        )


class Base(DeclarativeBase, metaclass=_TableMeta):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def table_of(model: Any) -> sa.Table:
    """``model.__table__`` as the :class:`sqlalchemy.Table` it is (SQLAlchemy types it ``FromClause``)."""
    return cast(sa.Table, model.__table__)


def _fk(target: str, nullable: bool = False, ondelete: str = "CASCADE") -> Any:
    return mapped_column(sa.ForeignKey(target, ondelete=ondelete), nullable=nullable, index=True)


class Project(Base):
    """One copick project (a config file); a catalog may hold several."""

    __tablename__ = "projects"
    __table_args__ = (sa.UniqueConstraint("name", "config_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    config_path: Mapped[str] = mapped_column(sa.String(2048))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    static_url: Mapped[str | None] = mapped_column(sa.String(2048))
    overlay_url: Mapped[str] = mapped_column(sa.String(2048))
    last_indexed_at: Mapped[float | None] = mapped_column(sa.Float)

    runs: Mapped[list[Run]] = relationship(back_populates="project", passive_deletes=True)
    pickable_objects: Mapped[list[PickableObject]] = relationship(back_populates="project", passive_deletes=True)

    def __repr__(self) -> str:
        return f"<Project {self.name!r} id={self.id}>"


class PickableObject(Base):
    __tablename__ = "pickable_objects"
    __table_args__ = (sa.UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = _fk("projects.id")
    name: Mapped[str] = mapped_column(sa.String(255))
    is_particle: Mapped[bool]
    label: Mapped[int | None]
    color: Mapped[list[Any] | None] = mapped_column(JSON)
    emdb_id: Mapped[str | None] = mapped_column(sa.String(64))
    pdb_id: Mapped[str | None] = mapped_column(sa.String(64))
    identifier: Mapped[str | None] = mapped_column(sa.String(255))
    map_threshold: Mapped[float | None] = mapped_column(sa.Float)
    radius: Mapped[float | None] = mapped_column(sa.Float)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)

    project: Mapped[Project] = relationship(back_populates="pickable_objects")

    def __repr__(self) -> str:
        return f"<PickableObject {self.name!r} label={self.label}>"


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (sa.UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = _fk("projects.id")
    name: Mapped[str] = mapped_column(sa.String(255), index=True)
    in_static: Mapped[bool] = mapped_column(default=False)
    in_overlay: Mapped[bool] = mapped_column(default=False)
    indexed_at: Mapped[float] = mapped_column(sa.Float, default=0.0)

    project: Mapped[Project] = relationship(back_populates="runs")
    voxel_spacings: Mapped[list[VoxelSpacing]] = relationship(
        back_populates="run", passive_deletes=True, order_by="VoxelSpacing.voxel_size"
    )
    picks: Mapped[list[Pick]] = relationship(back_populates="run", passive_deletes=True)
    meshes: Mapped[list[Mesh]] = relationship(back_populates="run", passive_deletes=True)
    segmentations: Mapped[list[Segmentation]] = relationship(back_populates="run", passive_deletes=True)
    filaments: Mapped[list[Filament]] = relationship(back_populates="run", passive_deletes=True)
    object_counts: Mapped[list[RunObject]] = relationship(
        back_populates="run", passive_deletes=True, order_by="RunObject.object_name"
    )

    def __repr__(self) -> str:
        return f"<Run {self.name!r}>"


class VoxelSpacing(Base):
    __tablename__ = "voxel_spacings"
    __table_args__ = (sa.UniqueConstraint("run_id", "voxel_size"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = _fk("projects.id")
    run_id: Mapped[int] = _fk("runs.id")
    voxel_size: Mapped[float] = mapped_column(sa.Float, index=True)
    in_static: Mapped[bool] = mapped_column(default=False)
    in_overlay: Mapped[bool] = mapped_column(default=False)
    indexed_at: Mapped[float] = mapped_column(sa.Float, default=0.0)

    run: Mapped[Run] = relationship(back_populates="voxel_spacings")
    tomograms: Mapped[list[Tomogram]] = relationship(back_populates="voxel_spacing", passive_deletes=True)

    def __repr__(self) -> str:
        return f"<VoxelSpacing {self.voxel_size:.3f}>"


class FileBacked:
    """Columns and behaviour shared by every row that stands for a file or zarr group.

    ``__kind__`` names the entry of :data:`copick_catalog.index.kinds.SPECS` that reads, fills and
    opens rows of the table.
    """

    __kind__: ClassVar[Kind]

    id: Mapped[int] = mapped_column(primary_key=True)

    @declared_attr
    def project_id(cls) -> Mapped[int]:
        return _fk("projects.id")

    layer: Mapped[str] = mapped_column(sa.String(8))
    path: Mapped[str] = mapped_column(sa.String(2048))
    # Bookkeeping for the indexer, loaded only when touched (one query for the group): listing
    # thousands of rows should not pay for columns nobody reads.
    fingerprint: Mapped[str] = mapped_column(sa.String(128), deferred=True, deferred_group="sync")
    mtime: Mapped[float | None] = mapped_column(sa.Float, deferred=True, deferred_group="sync")
    indexed_at: Mapped[float] = mapped_column(sa.Float, deferred=True, deferred_group="sync")
    #: indexed within a couple of seconds of the file's mtime: re-read next time even if it looks unchanged
    racy: Mapped[bool] = mapped_column(default=False, server_default=sa.false(), deferred=True, deferred_group="sync")
    stale: Mapped[bool] = mapped_column(default=False)

    @property
    def read_only(self) -> bool:
        """Static rows are read-only, like copick's static layer."""
        return self.layer == "static"

    def _root(self) -> Root:
        session = object_session(self)
        roots = session.info.get("roots") if session is not None else None
        if roots is None:
            raise CatalogError(
                f"{type(self).__name__} row {self.path!r} is not attached to a Catalog; load it through "
                "Catalog.find/picks/... or Catalog.session() to call .open()"
            )
        try:
            return roots[self.layer]  # type: ignore[no-any-return]
        except KeyError:
            raise CatalogError(
                f"row {self.path!r} is in the {self.layer} layer, which this project's config does not define"
            ) from None

    def check_fresh(self) -> None:
        """Raise :class:`StaleRowError` if the file behind this row changed or vanished since indexing."""
        root = self._root()
        entry = root.fingerprint(self.path)
        where = root.url_of(self.path)
        if entry is None:
            raise StaleRowError(
                f"{where} has vanished since it was indexed; run `copick-catalog index` "
                "(or Catalog.index()) to update the catalog"
            )
        if entry.fingerprint != self.fingerprint:
            raise StaleRowError(
                f"{where} changed since it was indexed; call Catalog.refresh(row) or reindex to get the current row"
            )

    def open(self, *, check: bool = True) -> Any:
        """The payload behind this row, read from the files (see each class for what comes back).

        With ``check`` (default) the file's fingerprint is compared with the indexed one first, and
        a changed or vanished file raises :class:`~copick_catalog.errors.StaleRowError`.
        """
        if check:
            self.check_fresh()
        from ..index.kinds import SPECS  # the readers (numpy, zarr, msgspec) load when a payload is opened

        return SPECS[self.__kind__].open(self._root(), self.path, self.read_only)


class _Volume:
    """The columns of a row backed by a zarr group: level-0 shape and dtype, levels, zarr format."""

    shape: Mapped[list[Any] | None] = mapped_column(JSON)
    dtype: Mapped[str | None] = mapped_column(sa.String(32))
    n_levels: Mapped[int] = mapped_column(default=0)
    zarr_format: Mapped[int | None]

    def zarr(self) -> Any:
        """The zarr store of the group (read-only for static rows), as in the copick spec."""
        row: Any = self
        return row._root().zarr_store(row.path, read_only=row.read_only)


class Tomogram(FileBacked, _Volume, Base):
    """A reconstructed volume; ``open()`` gives the multiscale zarr group."""

    __kind__ = Kind.TOMOGRAM
    __tablename__ = "tomograms"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "layer", "path"),
        sa.UniqueConstraint("voxel_spacing_id", "tomo_type", "layer"),
    )

    run_id: Mapped[int] = _fk("runs.id")
    voxel_spacing_id: Mapped[int] = _fk("voxel_spacings.id")
    tomo_type: Mapped[str] = mapped_column(sa.String(255), index=True)

    run: Mapped[Run] = relationship()
    voxel_spacing: Mapped[VoxelSpacing] = relationship(back_populates="tomograms")
    features: Mapped[list[Feature]] = relationship(back_populates="tomogram", passive_deletes=True)

    @property
    def voxel_size(self) -> float:
        return self.voxel_spacing.voxel_size

    def __repr__(self) -> str:
        return f"<Tomogram {self.tomo_type!r} {self.layer} {self.path!r}>"


class Feature(FileBacked, _Volume, Base):
    """A feature map computed from a tomogram (``<tomo_type>_<feature_type>_features.zarr``)."""

    __kind__ = Kind.FEATURE
    __tablename__ = "features"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "layer", "path"),
        sa.UniqueConstraint("voxel_spacing_id", "tomo_type", "feature_type", "layer"),
    )

    run_id: Mapped[int] = _fk("runs.id")
    voxel_spacing_id: Mapped[int] = _fk("voxel_spacings.id")
    tomogram_id: Mapped[int | None] = _fk("tomograms.id", nullable=True, ondelete="SET NULL")
    tomo_type: Mapped[str] = mapped_column(sa.String(255), index=True)
    feature_type: Mapped[str] = mapped_column(sa.String(255), index=True)

    run: Mapped[Run] = relationship()
    voxel_spacing: Mapped[VoxelSpacing] = relationship()
    tomogram: Mapped[Tomogram | None] = relationship(back_populates="features")

    def __repr__(self) -> str:
        return f"<Feature {self.tomo_type}/{self.feature_type!r} {self.layer}>"


class Provenance:
    """copick's convention for who wrote a file: session ``"0"`` means a tool, anything else a person.

    Shared by the catalog rows and the object API's picks, meshes and segmentations.
    """

    session_id: str

    @property
    def from_tool(self) -> bool:
        return self.session_id == "0"

    @property
    def from_user(self) -> bool:
        return self.session_id != "0"


class _Annotation(Provenance):
    """Columns shared by picks, meshes and filaments: who made it, of what, in which run.

    ``run_name`` repeats the run's name (run directories are never renamed in place) so listing
    thousands of rows needs neither a join nor a second object per row.
    """

    run_id: Mapped[int] = _fk("runs.id")
    run_name: Mapped[str] = mapped_column(sa.String(255), index=True)

    object_name: Mapped[str] = mapped_column(sa.String(255), index=True)
    user_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    session_id: Mapped[str] = mapped_column(sa.String(255), index=True)

    @property
    def pickable_object_name(self) -> str:
        return self.object_name


def _annotation_keys(*extra: Any) -> tuple[Any, ...]:
    """The unique keys of an annotation table (its file, and its identity in a run and layer), plus ``extra``."""
    return (
        sa.UniqueConstraint("project_id", "layer", "path"),
        sa.UniqueConstraint("run_id", "object_name", "user_id", "session_id", "layer"),
        *extra,
    )


class Pick(FileBacked, _Annotation, Base):
    """A pick file; ``open()`` gives the validated :class:`~copick_catalog.formats.picks.PickFile`."""

    __kind__ = Kind.PICK
    __tablename__ = "picks"
    __table_args__ = _annotation_keys(
        # serves "picks of object X by user Y" in run order without a sort, and per-object/user totals
        sa.Index(
            "ix_picks_listing", "project_id", "object_name", "user_id", "run_name", "session_id", "layer", "n_points"
        ),
        sa.Index(None, "project_id", "session_id", "n_points"),
        # "the week's work": files saved since a time are one range (pick_timeline's since=, migration 0010),
        # on PostgreSQL read from the index alone
        sa.Index(
            None,
            "project_id",
            "mtime",
            postgresql_include=["object_name", "user_id", "session_id", "layer", "n_points"],
        ),
    )

    n_points: Mapped[int] = mapped_column(default=0)
    unit: Mapped[str | None] = mapped_column(sa.String(32))
    trust_orientation: Mapped[bool | None]
    voxel_spacing: Mapped[float | None] = mapped_column(sa.Float)

    run: Mapped[Run] = relationship(back_populates="picks")
    points: Mapped[list[Point]] = relationship(back_populates="pick", passive_deletes=True, order_by="Point.idx")

    def __repr__(self) -> str:
        return f"<Pick {self.user_id}/{self.session_id}/{self.object_name} n={self.n_points} {self.layer}>"


class Point(Base):
    """One point of a pick file, so point-level questions are answered in SQL."""

    __tablename__ = "points"
    #: On SQLite the rows are stored in key order, one B-tree (migration 0008): a pick's points are
    #: appended together and read back as one range.
    __table_args__ = {"sqlite_with_rowid": False}

    pick_id: Mapped[int] = mapped_column(sa.ForeignKey("picks.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    x: Mapped[float] = mapped_column(sa.Float)
    y: Mapped[float] = mapped_column(sa.Float)
    z: Mapped[float] = mapped_column(sa.Float)
    #: BIGINT on PostgreSQL (SQLite integers are 64-bit anyway), so both hold ids up to 2**53
    instance_id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), default=0)
    score: Mapped[float] = mapped_column(sa.Float, default=1.0)
    transform: Mapped[list[Any] | None] = mapped_column(JSON)  # NULL means identity

    pick: Mapped[Pick] = relationship(back_populates="points")

    def __repr__(self) -> str:
        return f"<Point {self.idx} ({self.x:.1f}, {self.y:.1f}, {self.z:.1f})>"


class PackedPoints(Base):
    """A pick's points again, as one blob (see :data:`copick_catalog.formats.picks.PACKED_POINT_FIELDS`).

    Duplicates ``points`` on purpose: a bulk read of 250,000 points then costs 10,000 blobs instead
    of 1.5 M Python objects. A table of its own, so scans of ``picks`` stay as small as they were.
    """

    __tablename__ = "packed_points"

    pick_id: Mapped[int] = mapped_column(sa.ForeignKey("picks.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)


class Mesh(FileBacked, _Annotation, Base):
    """A GLB mesh; ``open()`` gives a ``trimesh.Scene``."""

    __kind__ = Kind.MESH
    __tablename__ = "meshes"
    __table_args__ = _annotation_keys()

    n_vertices: Mapped[int] = mapped_column(default=0)
    n_faces: Mapped[int] = mapped_column(default=0)

    run: Mapped[Run] = relationship(back_populates="meshes")

    def __repr__(self) -> str:
        return f"<Mesh {self.user_id}/{self.session_id}/{self.object_name} {self.layer}>"


class Filament(FileBacked, _Annotation, Base):
    """A filament annotation (copick 1.31 ``Filaments/``): a picks-like JSON file."""

    __kind__ = Kind.FILAMENT
    __tablename__ = "filaments"
    __table_args__ = _annotation_keys()

    n_filaments: Mapped[int] = mapped_column(default=0)
    n_points: Mapped[int] = mapped_column(default=0)

    run: Mapped[Run] = relationship(back_populates="filaments")


class Segmentation(FileBacked, _Volume, Provenance, Base):
    """A label volume; ``open()`` gives the zarr group. ``kind`` is semantic, instance or panoptic."""

    __kind__ = Kind.SEGMENTATION
    __tablename__ = "segmentations"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "layer", "path"),
        sa.Index(None, "run_id", "voxel_size", "name", "user_id", "session_id", "is_multilabel"),
    )

    run_id: Mapped[int] = _fk("runs.id")
    run_name: Mapped[str] = mapped_column(sa.String(255), index=True)
    voxel_size: Mapped[float] = mapped_column(sa.Float, index=True)
    name: Mapped[str] = mapped_column(sa.String(255), index=True)
    user_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    session_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    is_multilabel: Mapped[bool] = mapped_column(default=False)
    kind: Mapped[str] = mapped_column(sa.String(16), default="semantic")

    run: Mapped[Run] = relationship(back_populates="segmentations")

    def __repr__(self) -> str:
        ml = " multilabel" if self.is_multilabel else ""
        return f"<Segmentation {self.voxel_size:.3f} {self.user_id}/{self.session_id}/{self.name}{ml}>"


class DensityMap(FileBacked, Base):
    """A per-object density map: copick's ``Objects/<name>.zarr`` or the seed's ``ParticleMrcs/*.mrc``."""

    __kind__ = Kind.DENSITY_MAP
    __tablename__ = "density_maps"
    __table_args__ = (sa.UniqueConstraint("project_id", "layer", "path"),)

    object_name: Mapped[str] = mapped_column(sa.String(255), index=True)
    fmt: Mapped[str] = mapped_column(sa.String(8), default="zarr")
    shape: Mapped[list[Any] | None] = mapped_column(JSON)
    dtype: Mapped[str | None] = mapped_column(sa.String(32))
    voxel_size: Mapped[float | None] = mapped_column(sa.Float)

    def __repr__(self) -> str:
        return f"<DensityMap {self.object_name!r} {self.fmt} {self.layer}>"


class RunObject(Base):
    """How many pick files and points one run has of one configured object, zeros included.

    Derived from ``picks`` and kept in step with it inside the indexer's own transactions (see
    :mod:`copick_catalog.summary`). The zero rows are the point: "runs lacking proteasome" becomes
    one index range scan instead of an anti-join probed once per run.
    """

    __tablename__ = "run_objects"
    __table_args__ = (sa.Index("ix_run_objects_coverage", "project_id", "object_name", "n_picks", "run_name"),)

    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    object_name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"))
    run_name: Mapped[str] = mapped_column(sa.String(255))
    n_picks: Mapped[int] = mapped_column(default=0)
    n_points: Mapped[int] = mapped_column(default=0)

    run: Mapped[Run] = relationship(back_populates="object_counts")

    def __repr__(self) -> str:
        return f"<RunObject {self.run_name}/{self.object_name} picks={self.n_picks} points={self.n_points}>"


class PickTotal(Base):
    """Pick files and points per project, object, user, session and layer: ``picks`` grouped, kept by triggers.

    Database triggers on ``picks`` (created by migration 0009, row triggers on SQLite, statement triggers
    on PostgreSQL) keep it equal to ``SELECT … count(*), sum(n_points) FROM picks GROUP BY`` these keys
    after every statement, whoever writes, so "points by session" reads a few dozen rows instead of every
    pick file's row. Keys with no pick file left have no row.
    """

    __tablename__ = "pick_totals"

    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    object_name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    session_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    layer: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    n_picks: Mapped[int] = mapped_column(sa.BigInteger)
    n_points: Mapped[int] = mapped_column(sa.BigInteger)

    def __repr__(self) -> str:
        return f"<PickTotal {self.user_id}/{self.session_id}/{self.object_name} {self.layer} picks={self.n_picks}>"


class PickDayTotal(Base):
    """Pick files and points per project, UTC day of the file's mtime, object, user, session and layer.

    ``picks`` grouped by :class:`PickTotal`'s keys and the day, kept by triggers the same way (migration
    0010), so "progress over time" in buckets of whole days reads a few thousand rows instead of every pick
    file's row. ``day_start`` is the day's start in seconds since the epoch, the bucket
    :meth:`~copick_catalog.catalog.queries.QueryMixin.pick_timeline` reports. Files with no mtime are not
    counted (they are :class:`PickTotal` minus these rows).
    """

    __tablename__ = "pick_day_totals"

    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    day_start: Mapped[float] = mapped_column(sa.Float, primary_key=True)
    object_name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    session_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    layer: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    n_picks: Mapped[int] = mapped_column(sa.BigInteger)
    n_points: Mapped[int] = mapped_column(sa.BigInteger)

    def __repr__(self) -> str:
        who = f"{self.user_id}/{self.session_id}/{self.object_name}"
        return f"<PickDayTotal {self.day_start:.0f} {who} {self.layer} picks={self.n_picks}>"


class ObjectTotal(Base):
    """Per project and object: runs counted in ``run_objects``, how many have picks, pick files and points.

    ``run_objects`` grouped by object, kept by triggers like :class:`PickTotal`, so coverage per object
    reads one row per object instead of one per run and object.
    """

    __tablename__ = "object_totals"

    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    object_name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    n_runs: Mapped[int] = mapped_column(sa.BigInteger)
    n_runs_with_picks: Mapped[int] = mapped_column(sa.BigInteger)
    n_picks: Mapped[int] = mapped_column(sa.BigInteger)
    n_points: Mapped[int] = mapped_column(sa.BigInteger)

    def __repr__(self) -> str:
        return f"<ObjectTotal {self.object_name!r} runs={self.n_runs} with picks={self.n_runs_with_picks}>"


class TomogramTotal(Base):
    """Per project, voxel size and tomogram type: in how many runs a tomogram of that type exists.

    ``tomograms`` joined to ``voxel_spacings`` and counted by distinct run, kept by triggers on both
    tables (a run's tomogram in both layers counts once), so "tomogram types per voxel size" reads a
    row per type instead of every tomogram.
    """

    __tablename__ = "tomogram_totals"

    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    voxel_size: Mapped[float] = mapped_column(sa.Float, primary_key=True)
    tomo_type: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    n_runs: Mapped[int] = mapped_column(sa.BigInteger)

    def __repr__(self) -> str:
        return f"<TomogramTotal {self.voxel_size:.3f} {self.tomo_type!r} runs={self.n_runs}>"


class IndexRun(Base):
    """One indexing pass: when, by what, how long, and what it found."""

    __tablename__ = "index_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = _fk("projects.id")
    trigger: Mapped[str] = mapped_column(sa.String(16))  # cli, cron, watch, api
    status: Mapped[str] = mapped_column(sa.String(16))  # running, ok, failed
    started_at: Mapped[float] = mapped_column(sa.Float, index=True)
    finished_at: Mapped[float | None] = mapped_column(sa.Float)
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
    added: Mapped[int] = mapped_column(default=0)
    changed: Mapped[int] = mapped_column(default=0)
    removed: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    errors: Mapped[int] = mapped_column(default=0)
    host: Mapped[str | None] = mapped_column(sa.String(255))
    pid: Mapped[int | None]
    message: Mapped[str | None] = mapped_column(sa.Text)


class IndexErrorRow(Base):
    """A file the indexer could not read; kept until the file is fixed or removed."""

    __tablename__ = "index_errors"
    __table_args__ = (sa.UniqueConstraint("project_id", "layer", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = _fk("projects.id")
    layer: Mapped[str] = mapped_column(sa.String(8))
    path: Mapped[str] = mapped_column(sa.String(2048))
    kind: Mapped[str] = mapped_column(sa.String(32))  # parse, name, io, ambiguous_name
    severity: Mapped[str] = mapped_column(sa.String(8), default="error")  # error, warning
    message: Mapped[str] = mapped_column(sa.Text)
    #: the fingerprint of the content that failed to parse: the file is read again only once it changes
    fingerprint: Mapped[str | None] = mapped_column(sa.String(128))
    first_seen: Mapped[float] = mapped_column(sa.Float)
    last_seen: Mapped[float] = mapped_column(sa.Float)

    def __repr__(self) -> str:
        return f"<IndexError {self.severity} {self.layer}:{self.path}: {self.message[:60]}>"


#: The table of each entity kind (the rows of :data:`copick_catalog.index.kinds.SPECS`).
FILE_MODELS: dict[Kind, type[FileBacked]] = {
    m.__kind__: m for m in (Tomogram, Feature, Pick, Mesh, Filament, Segmentation, DensityMap)
}

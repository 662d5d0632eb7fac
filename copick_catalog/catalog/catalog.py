"""The :class:`Catalog`: one project's config, roots and catalog database, and what to do with them.

``Catalog.open(config)`` is the entry point for everything: it loads the config, opens (and if
needed creates or upgrades) the database, registers the project, and then offers indexing,
queries (:mod:`copick_catalog.catalog.queries`) and ``.open()`` of payloads behind rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ..config import CopickConfig, load_config, parse_config
from ..errors import CatalogError
from ..index.limits import Limits
from ..index.roots import Root, open_root
from .db import check_schema, create_engine, current_revision, ensure_schema, normalize_url, write_tx
from .locks import project_lock
from .projects import ProjectInfo, list_projects, pick_project
from .queries import QueryMixin
from .schema import FileBacked, IndexErrorRow, IndexRun, PickableObject, Project, table_of
from .sql import SqlResult, create_readonly_role, run_readonly_sql
from .summary import refresh_run_objects

if TYPE_CHECKING:
    from ..index.indexer import IndexReport

log = logging.getLogger(__name__)

DB_ENV = "COPICK_CATALOG_DB"


#: Where catalogs of configs that come without a file live by default (``CatalogRoot(config)``).
CACHE_DIR_ENV = "COPICK_CATALOG_CACHE"
MEMORY_PREFIX = "memory"


def memory_source(config: CopickConfig) -> Path:
    """A stand-in config path for a config that has no file: named after its project and roots.

    The same roots give the same catalog however the config was built; it sits in the current
    directory's place only as a name (relative local roots are taken relative to the current directory).
    """
    digest = hashlib.sha256(f"{config.name}|{config.overlay_root}|{config.static_root}".encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-." else "-" for c in config.name)[:40] or "project"
    return Path.cwd() / f"{MEMORY_PREFIX}-{safe}-{digest}.json"


def default_db_for(config_path: Path) -> str:
    """``<config stem>.catalog.sqlite`` next to the config, unless ``$COPICK_CATALOG_DB`` says otherwise.

    A config without a file (:func:`memory_source`) gets a file under ``$COPICK_CATALOG_CACHE`` or
    ``~/.cache/copick-catalog/`` instead.
    """
    env = os.environ.get(DB_ENV)
    if env:
        return normalize_url(env)
    if config_path.name.startswith(f"{MEMORY_PREFIX}-") and not config_path.exists():
        base = Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "copick-catalog")
        base.mkdir(parents=True, exist_ok=True)
        return normalize_url(base / f"{config_path.stem}.catalog.sqlite")
    return normalize_url(config_path.with_name(f"{config_path.stem}.catalog.sqlite"))


class Catalog(QueryMixin):
    """A copick project together with its SQL catalog."""

    def __init__(self, config: CopickConfig, config_path: Path, engine: Engine, project_id: int) -> None:
        self.config = config
        self.config_path = config_path
        self.engine = engine
        self.project_id = project_id
        self.roots = build_roots(config, config_path.parent)
        self.limits = Limits()
        # rows find their files through the roots in their session's info (FileBacked.open)
        self._sessions = sessionmaker(engine, expire_on_commit=False, info={"roots": self.roots})

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        config: str | os.PathLike[str],
        db: str | None = None,
        *,
        upgrade: bool = True,
        read_only: bool | None = None,
    ) -> Catalog:
        """Open the catalog of the project described by ``config`` (a copick_config.json path).

        ``db`` is a SQLAlchemy URL or a SQLite file path; by default a SQLite file next to the
        config. An empty database gets the schema; an older SQLite catalog is backed up and upgraded,
        an older PostgreSQL catalog (shared by a lab) is refused until ``copick-catalog db upgrade``.
        ``read_only=True`` opens without writing anything (no migration, no project registration), for
        people who may read a shared catalog but not write it; the default (None) does so by itself
        when the SQLite file is not writable for you, or when a PostgreSQL role may only read.
        """
        config_path = Path(config).expanduser().resolve()
        return cls.from_config(load_config(config_path), db, source=config_path, upgrade=upgrade, read_only=read_only)

    @classmethod
    def from_config(
        cls,
        config: CopickConfig,
        db: str | None = None,
        *,
        source: Path | None = None,
        upgrade: bool = True,
        read_only: bool | None = None,
    ) -> Catalog:
        """Open the catalog of a project given as a config model (what :meth:`open` does after reading the file).

        ``source`` is the config file the model came from: it names the project in the catalog, locates
        relative local roots and the default SQLite file. Without it (a config built in memory, as copick
        code does with ``CopickRootFSSpec(config)``), the project is named by its roots, and the default
        database is ``$COPICK_CATALOG_DB`` or a file under ``~/.cache/copick-catalog/``.
        """
        config_path = source if source is not None else memory_source(config)
        url = normalize_url(db) if db else default_db_for(config_path)
        if read_only is None:
            read_only = _sqlite_read_only(url)
        try:
            engine, project_id = _connect(url, config, config_path, read_only=read_only, upgrade=upgrade)
        except _WRITE_REFUSED as exc:
            if read_only or not _refused_for_permissions(exc):
                raise
            log.warning(
                "catalog %s refuses writes for this user; opening it read-only",
                sa.make_url(url).render_as_string(hide_password=True),
            )
            read_only = True
            engine, project_id = _connect(url, config, config_path, read_only=True, upgrade=upgrade)
        if not read_only and _server_refuses_writes(engine):
            log.info(
                "catalog %s: this role may only read; opened read-only", engine.url.render_as_string(hide_password=True)
            )
            read_only = True
        cat = cls(config, config_path, engine, project_id)
        cat.read_only = read_only
        return cat

    read_only: bool = False

    # ------------------------------------------------------------------ several projects in one database

    @staticmethod
    def projects(db: str) -> list[ProjectInfo]:
        """The projects the catalog database ``db`` holds: roots, last index, runs, pick files, points, errors.

        Reads only; works with a read-only role, and without any project's config file."""
        engine = create_engine(normalize_url(db), read_only=True)
        try:
            check_schema(engine)
            return list_projects(engine)
        finally:
            engine.dispose()

    @classmethod
    def open_db(cls, db: str, project: str | int | None = None, *, read_only: bool = True) -> Catalog:
        """Open one project of the catalog database ``db`` from what the database keeps, without its config file.

        ``project`` is a name or an id (None: the only project there is). The config comes from the
        ``projects`` table, credentials masked, so queries work anywhere; ``.open()`` on rows works
        where the project's roots are reachable without credentials. Read-only unless told otherwise.
        """
        url = normalize_url(db)
        engine = create_engine(url, read_only=read_only)
        try:
            check_schema(engine)
            where = engine.url.render_as_string(hide_password=True)
            info = pick_project(list_projects(engine), project, where)
            with engine.connect() as conn:
                stored = conn.execute(sa.select(Project.config).where(Project.id == info.id)).scalar_one()
            config = parse_config(stored, source=f"{where} project {info.name!r}")
        except BaseException:
            engine.dispose()
            raise
        cat = cls(config, Path(info.config_path), engine, info.id)
        cat.read_only = read_only
        return cat

    @classmethod
    def open_all(cls, db: str, *, read_only: bool = True) -> list[Catalog]:
        """Every project of the catalog database ``db``, each opened as :meth:`open_db` does (close each one).

        For questions across a lab's projects: ask each catalog and label the answers with ``cat.config.name``.
        """
        return [cls.open_db(db, p.id, read_only=read_only) for p in cls.projects(db)]

    def sql(self, statement: str, *, timeout: float | None = 60.0, max_rows: int | None = None) -> SqlResult:
        """Run one read-only SQL query on the catalog database (see :mod:`copick_catalog.catalog.sql`).

        Read-only by construction: the database itself refuses writes, several statements, ``ATTACH``
        and ``COPY``, whatever the text says.
        """
        return run_readonly_sql(self.engine, statement, timeout=timeout, max_rows=max_rows)

    @staticmethod
    def upgrade(db: str) -> tuple[str | None, str]:
        """Create or upgrade the schema of the catalog database ``db``; returns (revision before, revision now).

        The one way a shared PostgreSQL catalog moves to a newer schema (opening refuses an older one, so
        that one user's upgrade is a decision); SQLite files are upgraded on open anyway, with a backup.
        """
        engine = create_engine(normalize_url(db))
        try:
            before = current_revision(engine)
            return before, ensure_schema(engine)
        finally:
            engine.dispose()

    @staticmethod
    def create_readonly_role(db: str, name: str, password: str | None = None) -> list[str]:
        """Create a PostgreSQL role that may only SELECT from the catalog at ``db`` (for :meth:`sql` on
        shared catalogs); returns the statements run. ``db`` must be a role allowed to create roles."""
        engine = create_engine(normalize_url(db))
        try:
            return list(create_readonly_role(engine, name, password))
        finally:
            engine.dispose()

    def close(self) -> None:
        if self._read_session is not None:
            self._read_session.close()
            self._read_session = None
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"<Catalog {self.config.name!r} db={self.db_url}>"

    # ------------------------------------------------------------------ indexing

    def index(
        self,
        *,
        trigger: str = "api",
        wait: bool = True,
        timeout: float | None = None,
        scopes: Iterable[tuple[str, str]] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        record: bool = True,
        cancel: Callable[[], bool] | None = None,
        allow_empty_root: bool = False,
    ) -> IndexReport:
        """Bring the catalog up to date with the files (incremental) and return a report.

        Holds the project's index lock for the run: with ``wait=False`` a busy lock raises
        :class:`~copick_catalog.errors.LockBusyError` instead of queueing. ``cancel`` is polled
        between transactions; once it returns true the run stops with
        :class:`~copick_catalog.errors.IndexCancelled`, leaving only whole batches behind. A root
        that lists as empty while the catalog holds rows for it looks unmounted and raises
        :class:`~copick_catalog.errors.RootError`, removing nothing; ``allow_empty_root`` accepts the removal.
        """
        if self.read_only:
            raise CatalogError(
                f"catalog {self.db_url} was opened read-only; open it without read_only=True "
                "(and with write access) to index"
            )
        from ..index.indexer import Indexer  # on first use: a query never needs the indexer's readers

        with project_lock(self.engine, self.project_id, wait=wait, timeout=timeout):
            indexer = Indexer(
                self.engine,
                self.project_id,
                self.roots,
                self.config.object_names,
                progress=progress,
                cancel=cancel,
                limits=self.limits,
                allow_empty_root=allow_empty_root,
            )
            report = indexer.run(trigger, scopes, record=record)
        if self._read_session is not None:
            self._read_session.commit()  # drop any snapshot older than this index run
            self._read_session.expire_all()  # rows handed out before now reload on next access
        return report

    # ------------------------------------------------------------------ sessions and payloads

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A SQLAlchemy session whose rows can ``.open()`` their files."""
        with self._sessions() as s:
            yield s

    def refresh(self, row: FileBacked) -> FileBacked | None:
        """Reindex the file behind ``row`` and return its current row (None if it is gone)."""
        model, layer, path = type(row), row.layer, row.path  # read before the index expires the row
        self.index(scopes=[(layer, path)])
        rows = self._rows(
            sa.select(model).where(model.project_id == self.project_id, model.layer == layer, model.path == path)
        )
        return rows[0] if rows else None

    # ------------------------------------------------------------------ status

    def errors(self, severity: str | None = None) -> list[IndexErrorRow]:
        """Files and directories the indexer could not read, each with what to do about it
        (``severity``: ``"error"`` or ``"warning"``; every one by default)."""
        with self.session() as s:
            q = sa.select(IndexErrorRow).where(IndexErrorRow.project_id == self.project_id)
            if severity:
                q = q.where(IndexErrorRow.severity == severity)
            return list(s.scalars(q.order_by(IndexErrorRow.layer, IndexErrorRow.path)))

    def status(self) -> dict[str, Any]:
        """When the catalog was last indexed and by what, what it holds, open errors, and whether an
        index run or a watch daemon is working on it (what ``copick-catalog status`` prints)."""
        from .status import catalog_status

        return catalog_status(self)

    def last_runs(self, n: int = 5) -> list[IndexRun]:
        """The ``n`` most recent index runs of this project, newest first."""
        with self.session() as s:
            return list(
                s.scalars(
                    sa.select(IndexRun)
                    .where(IndexRun.project_id == self.project_id)
                    .order_by(IndexRun.started_at.desc())
                    .limit(n)
                )
            )

    # ------------------------------------------------------------------ export

    def export(
        self,
        uri: str,
        out: str | os.PathLike[str],
        format: str = "parquet",
        *,
        run: Any = None,
        batch_points: int | None = None,
        per_run: bool = False,
        voxel_size: float | None = None,
        run_to_index: dict[str, int] | None = None,
        tomo_type: str | None = None,
        include_optics: bool = True,
    ) -> Any:
        """Write the picks a copick URI selects (``ribosome:alice/*``) to ``out``; returns an ``ExportReport``.

        ``format="parquet"`` or ``"csv"``: every point as one table (run, object_name, user_id,
        session_id, layer, x, y, z, instance_id, score; Å), streamed in batches of ``batch_points``
        so memory stays flat on millions of points; in Parquet the names are dictionary columns.
        ``"star"``, ``"em"``, ``"dynamo"``, ``"copick-csv"``: copick's own exporters run on a
        :class:`~copick_catalog.CatalogRoot` of this catalog (needs copick), so RELION's and Dynamo's
        conventions stay copick's; ``out`` is one combined file, or with ``per_run`` a directory
        with one file per pick file; ``voxel_size`` (Å) is required for star, em and dynamo, and a
        combined em or dynamo file needs ``run_to_index`` (run name -> tomogram index), as in
        ``copick export picks``. ``run`` narrows to runs by name.
        """
        from .export import BATCH_POINTS, POINT_FORMATS, ExportError, check_format, export_points

        check_format(format)
        if format in POINT_FORMATS:
            copick_only = {"per_run": per_run, "voxel_size": voxel_size, "run_to_index": run_to_index}
            given = [k for k, v in copick_only.items() if v] + (["tomo_type"] if tomo_type else [])
            if given:
                raise ExportError(
                    f"{', '.join(given)} apply to the star, em, dynamo and copick-csv formats, not to {format}"
                )
            return export_points(self, uri, out, format, run=run, batch_points=batch_points or BATCH_POINTS)
        from ..copick.export import export_copick_format  # imports copick only when run (one-line error without it)

        return export_copick_format(
            self,
            uri,
            out,
            format,
            run=run,
            per_run=per_run,
            voxel_size=voxel_size,
            run_to_index=run_to_index,
            tomo_type=tomo_type,
            include_optics=include_optics,
        )


def build_roots(config: CopickConfig, base_dir: Path) -> dict[str, Root]:
    """The project's roots by layer; a static root equal to the overlay (or absent) is not a layer."""
    overlay = open_root(config.overlay_root, "overlay", config.overlay_fs_args, base_dir)
    roots = {"overlay": overlay}
    if config.static_root:
        static = open_root(config.static_root, "static", config.static_fs_args, base_dir)
        if static.url != overlay.url:
            roots = {"static": static, "overlay": overlay}
    return roots


def register_project(engine: Engine, config: CopickConfig, config_path: Path) -> int:
    """Create or update the project row and its pickable objects; return the project id.

    An unchanged project is only read: opening a root or a catalog then takes no write lock, so it
    neither waits for an indexer holding one nor makes a concurrent indexer wait.
    """
    roots = build_roots(config, config_path.parent)
    values = {
        "name": config.name,
        "config_path": str(config_path),
        "config": config.redacted(),
        "static_url": roots["static"].scrub(roots["static"].url) if "static" in roots else None,
        "overlay_url": roots["overlay"].scrub(roots["overlay"].url),
    }
    with engine.connect() as conn:
        pid = _current_project(conn, config, config_path, values)
    if pid is not None:
        return pid
    with write_tx(engine) as conn:
        pid = conn.execute(
            sa.select(Project.id).where(Project.name == config.name, Project.config_path == str(config_path))
        ).scalar()
        if pid is None:
            pid = conn.execute(sa.insert(Project).values(**values).returning(Project.id)).scalar_one()
        else:
            current = conn.execute(
                sa.select(Project.config, Project.static_url, Project.overlay_url).where(Project.id == pid)
            ).one()
            if tuple(current) != (values["config"], values["static_url"], values["overlay_url"]):
                conn.execute(sa.update(Project).where(Project.id == pid).values(**values))
        _sync_objects(conn, pid, config)
    return pid


def _current_project(
    conn: sa.Connection, config: CopickConfig, config_path: Path, values: dict[str, Any]
) -> int | None:
    """The project's id when its row and objects already match the config, else None (a write is due)."""
    row = conn.execute(
        sa.select(Project.id, Project.config, Project.static_url, Project.overlay_url).where(
            Project.name == config.name, Project.config_path == str(config_path)
        )
    ).first()
    if row is None or tuple(row[1:]) != (values["config"], values["static_url"], values["overlay_url"]):
        return None
    existing = {
        r.name: r for r in conn.execute(sa.select(PickableObject.__table__).where(PickableObject.project_id == row.id))
    }
    wanted = _wanted_objects(row.id, config)
    if set(existing) != set(wanted):
        return None
    if any(getattr(existing[n], k) != v for n, vals in wanted.items() for k, v in vals.items()):
        return None
    return int(row.id)


_WRITE_REFUSED = (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.InternalError, CatalogError)


def _refused_for_permissions(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", None) or exc).lower()
    return any(
        s in text
        for s in ("permission denied", "read-only transaction", "readonly database", "attempt to write a readonly")
    )


def _server_refuses_writes(engine: Engine) -> bool:
    """Whether a PostgreSQL role starts read-only transactions or may not insert index rows (a reader's role).

    Opening an up-to-date catalog writes nothing, so such a role is not noticed by a failed write; it
    must be asked, so that an index is refused with a clear message instead of a server error.
    """
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT current_setting('transaction_read_only') = 'on' "
                "OR NOT has_table_privilege(current_user, 'index_runs', 'INSERT')"
            )
        ).scalar()
    return bool(row)


def _sqlite_read_only(url: str) -> bool:
    """Whether a SQLite catalog file exists but may not be written by this user (then it is opened read-only)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return False
    path = Path(parsed.database)
    return path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK))


def _connect(url: str, cfg: CopickConfig, config_path: Path, *, read_only: bool, upgrade: bool) -> tuple[Engine, int]:
    """An engine on the catalog, and the project's id (registered or updated unless ``read_only``)."""
    engine = create_engine(url, read_only=read_only)
    try:
        if read_only:
            check_schema(engine)
            return engine, find_project(engine, cfg, config_path)
        if upgrade:
            ensure_schema(engine, upgrade_shared=False)
        return engine, register_project(engine, cfg, config_path)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        if _refused_for_permissions(exc):
            raise
        raise CatalogError(
            f"cannot use catalog database {engine.url.render_as_string(hide_password=True)}: {exc.orig}"
        ) from None
    except BaseException:
        engine.dispose()
        raise


def find_project(engine: Engine, config: CopickConfig, config_path: Path) -> int:
    """The id of an already registered project, without writing anything (read-only opens)."""
    with engine.connect() as conn:
        pid = conn.execute(
            sa.select(Project.id).where(Project.name == config.name, Project.config_path == str(config_path))
        ).scalar()
    if pid is None:
        raise CatalogError(
            f"project {config.name!r} ({config_path}) is not in catalog "
            f"{engine.url.render_as_string(hide_password=True)} yet; index it once with write "
            "access (copick-catalog index CONFIG)"
        )
    return int(pid)


def _sync_objects(conn: sa.Connection, project_id: int, config: CopickConfig) -> None:
    objects = table_of(PickableObject)
    existing = {
        row.name: row for row in conn.execute(sa.select(objects).where(PickableObject.project_id == project_id))
    }
    wanted = _wanted_objects(project_id, config)
    for name, vals in wanted.items():
        old = existing.get(name)
        if old is None:
            conn.execute(sa.insert(objects).values(**vals))
        elif any(getattr(old, k) != v for k, v in vals.items()):
            conn.execute(sa.update(objects).where(PickableObject.id == old.id).values(**vals))
    gone = [row.id for name, row in existing.items() if name not in wanted]
    if gone:
        conn.execute(sa.delete(PickableObject).where(PickableObject.id.in_(gone)))
    if set(wanted) != set(existing):  # every run needs a count row for each configured object, no more
        refresh_run_objects(conn, project_id)


def _wanted_objects(project_id: int, config: CopickConfig) -> dict[str, dict[str, Any]]:
    """The pickable-object rows the config asks for, by name."""
    return {
        o.name: {
            "project_id": project_id,
            "name": o.name,
            "is_particle": o.is_particle,
            "label": o.label,
            "color": list(o.color) if o.color is not None else None,
            "emdb_id": o.emdb_id,
            "pdb_id": o.pdb_id,
            "identifier": o.identifier,
            "map_threshold": o.map_threshold,
            "radius": o.radius,
            "metadata": o.metadata,
        }
        for o in config.pickable_objects
    }


__all__ = ["Catalog", "build_roots", "register_project"]

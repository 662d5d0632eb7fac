"""Engines, sessions and schema upgrades for SQLite (embedded default) and PostgreSQL.

SQLite gets WAL, foreign keys, a busy timeout and ``BEGIN IMMEDIATE`` for writers (so two
writers queue on the lock instead of failing half-way with "database is locked"); readers keep
plain deferred transactions so queries never wait on each other. WAL needs shared memory, which
network filesystems do not provide, so a database on NFS/SMB/GPFS/Lustre falls back to a rollback
journal with a warning that recommends PostgreSQL.

The schema is created and changed only by the Alembic migrations shipped in this package;
:func:`ensure_schema` runs them on open.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import CatalogError, SchemaVersionError
from .sqlfuncs import register as register_sql_functions

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
NETWORK_FS_TYPES = (
    "nfs",
    "nfs4",
    "cifs",
    "smb",
    "smb3",
    "smbfs",
    "gpfs",
    "lustre",
    "ceph",
    "glusterfs",
    "fuse.sshfs",
    "beegfs",
    "9p",
    "afs",
)
BUSY_TIMEOUT_MS = 30_000


SUPPORTED = ("sqlite", "postgresql")


def normalize_url(db: str | os.PathLike[str]) -> str:
    """Accept a SQLAlchemy URL or a plain file path (which means SQLite)."""
    text = os.fspath(db)
    if not text.strip():
        raise CatalogError("the catalog database is empty; pass --db with a SQLite file path or a PostgreSQL URL")
    if text != text.strip():
        raise CatalogError(f"catalog database {text!r} starts or ends with whitespace; remove it")
    if "://" in text:
        if text.startswith(("postgresql://", "postgres://")):
            # psycopg 3 is the driver we ship; the bare scheme would ask for psycopg2.
            text = "postgresql+psycopg://" + text.split("://", 1)[1]
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def filesystem_type(path: Path) -> str | None:
    """The mount type holding ``path`` (Linux ``/proc/mounts``), or None when unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, best_type = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mnt = fields[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
            best, best_type = mnt, fields[2]
    return best_type


def is_network_fs(path: Path) -> bool:
    fstype = filesystem_type(path) or ""
    return fstype in NETWORK_FS_TYPES or (fstype.startswith("fuse.") and fstype != "fuse.overlay")


def create_engine(url: str, *, read_only: bool = False, **kwargs: Any) -> Engine:
    """An engine with the pragmas and transaction rules this catalog relies on.

    ``read_only`` engines cannot write: a SQLite file is opened with ``mode=ro``, a PostgreSQL session
    starts every transaction read-only.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, read_only=read_only, **kwargs)
    if read_only:
        kwargs.setdefault("connect_args", {})["options"] = "-c default_transaction_read_only=on"
    try:
        backend = sa.make_url(url).get_backend_name()
    except sa.exc.ArgumentError:
        raise CatalogError(
            f"bad database URL {url!r}: use a SQLite file path or postgresql+psycopg://user@host/db"
        ) from None
    if backend not in SUPPORTED:
        raise CatalogError(
            f"catalog databases can be SQLite or PostgreSQL, not {backend}: use a SQLite file path or "
            "postgresql+psycopg://user@host/db"
        )
    try:
        return sa.create_engine(url, pool_pre_ping=True, **kwargs)
    except ModuleNotFoundError as exc:
        raise CatalogError(
            f"database driver missing for {sa.make_url(url).drivername} ({exc}); pip install 'copick-catalog[postgres]'"
        ) from None
    except sa.exc.ArgumentError as exc:
        raise CatalogError(f"bad database URL: {exc}") from None


def _sqlite_engine(url: str, *, read_only: bool = False, **kwargs: Any) -> Engine:
    db_path = sa.make_url(url).database
    journal = "wal"
    if read_only:
        if not db_path or db_path == ":memory:" or not os.path.exists(db_path):
            raise CatalogError(f"catalog {db_path} does not exist; index the project once to create it")
        url = f"sqlite:///{sqlite_ro_uri(db_path)}&uri=true"
        journal = ""
    elif db_path and db_path != ":memory:":
        parent = Path(db_path).parent
        if not parent.exists():
            raise CatalogError(f"cannot create catalog {db_path}: directory {parent} does not exist")
        if is_network_fs(parent):
            journal = "delete"
            warnings.warn(
                f"catalog {db_path} is on a network filesystem ({filesystem_type(parent)}), where SQLite's "
                "WAL mode is unsafe; using a rollback journal instead. For a catalog shared between "
                "machines use PostgreSQL (--db postgresql+psycopg://...)",
                UserWarning,
                stacklevel=3,
            )
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000}, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy pysqlite recipe)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if journal:  # a read-only connection keeps whatever mode the file has, and writes no pragma
            cur.execute(f"PRAGMA journal_mode = {journal}")
            cur.execute("PRAGMA synchronous = NORMAL")
            # Checkpoint the WAL every 64 MB rather than every 4 MB: a full index commits a batch of ~25,000
            # points every ~0.1 s, and each checkpoint is an fsync of the database (0.5-1 s of a 5,000-run
            # full index, measured). The WAL file keeps its high-water size, ~64 MB plus one batch.
            cur.execute("PRAGMA wal_autocheckpoint = 16384")
        cur.execute("PRAGMA foreign_keys = ON")
        # A 64 MB page cache (grown only as used): a catalog of thousands of runs stays in memory
        # between queries instead of being re-read through the OS on every listing.
        cur.execute("PRAGMA cache_size = -65536")
        cur.close()
        register_sql_functions(dbapi_conn)  # REGEXP (Python's re.match) and friends, for copick URIs

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        # foreign_keys can only change outside a transaction: set it for this one (see write_tx's bulk)
        checks = "OFF" if options.get("bulk") else "ON"
        info = conn.connection.info
        if info.get("foreign_keys", "ON") != checks:
            conn.exec_driver_sql(f"PRAGMA foreign_keys = {checks}")
            info["foreign_keys"] = checks
        conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if options.get('write') else 'DEFERRED'}")

    return engine


@contextmanager
def write_tx(engine: Engine, *, bulk: bool = False) -> Iterator[Connection]:
    """A short write transaction: ``BEGIN IMMEDIATE`` on SQLite, a plain one on PostgreSQL.

    ``bulk`` is for the indexer's batches, which insert children (points) of rows they have just
    written in the same transaction and delete nothing through a cascade: SQLite then skips the
    foreign-key lookup it would make for every point (a sixth of a full index's inserts). The keys
    stay declared, and every other transaction checks them and cascades as before. On PostgreSQL such a
    transaction commits without waiting for its WAL to be flushed.
    """
    options: dict[str, Any] = {"write": True, "bulk": True} if bulk else {"write": True}
    with engine.connect().execution_options(**options) as conn, conn.begin():
        if bulk and not is_sqlite(engine):
            # The batch is derived from files that stay where they are: a server crash may lose the last
            # few such commits (the next index writes them again) but never corrupts anything, and the
            # commit does not wait for the WAL to reach the disk.
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        yield conn


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def sqlite_ro_uri(path: str) -> str:
    """A ``file:`` URI that reads a catalog without writing anything, for users who may only read it.

    SQLite reads a WAL database through its ``-wal``/``-shm`` files, and re-creates them if they are gone;
    a user who cannot write the directory cannot, and then cannot read at all. When those files cannot
    be used, the file is opened ``immutable`` (no locks, no shared memory): right for a reader who cannot
    write, since no writer can be mid-transaction without leaving a ``-wal`` file behind.
    """
    from urllib.parse import quote

    uri = f"file:{quote(path, safe='/')}?mode=ro"
    folder = os.path.dirname(path) or "."
    wal, shm = f"{path}-wal", f"{path}-shm"
    usable = os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(wal) and os.access(shm, os.W_OK))
    return uri if usable else f"{uri}&immutable=1"


def sqlite_path(engine: Engine) -> str | None:
    """The file behind a SQLite engine (also for read-only ``file:…?mode=ro`` URLs); None for memory/servers."""
    if not is_sqlite(engine):
        return None
    path = engine.url.database
    if not path or path == ":memory:":
        return None
    if path.startswith("file:"):
        from urllib.parse import unquote

        path = unquote(path[len("file:") :])
    return path


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction in which several statements see one state of the catalog.

    SQLite's deferred transaction pins its snapshot at the first read; PostgreSQL needs REPEATABLE
    READ for that (its default gives each statement its own snapshot).
    """
    with engine.connect() as conn:
        if not is_sqlite(conn):
            conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


#: Values per ``IN (…)`` list or executemany batch: well under every driver's parameter limit.
CHUNK = 500


def chunks(items: Sequence[Any], n: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``n``, for statements whose parameters must stay bounded."""
    for i in range(0, len(items), n):
        yield items[i : i + n]


def upsert_insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's ``INSERT`` that has ``on_conflict_do_update`` (SQLite and PostgreSQL spell it alike)."""
    if is_sqlite(conn):
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    return postgresql_insert(table)


# ------------------------------------------------------------------------------------------
# Migrations


#: The newest migration. Opening a current catalog compares its ``alembic_version`` with this, so alembic
#: is imported only when something must be migrated (a test keeps it equal to the migrations' head).
SCHEMA_HEAD = "0011"

#: Where a database's schema differs from the models on purpose, as ``(dialect, table, constraint)``: on
#: PostgreSQL a pick's points follow it by a statement trigger instead of a foreign key checked per point
#: (migration 0011). The models keep the key for the ORM and for SQLite.
SCHEMA_DIFFERENCES = frozenset({("postgresql", "points", "fk_points_pick_id_picks")})


def alembic_config(url: str | None = None) -> Any:
    """An alembic Config for the migrations shipped in this package (imports alembic, quietly)."""
    with _quiet_alembic():
        from alembic.config import Config

        cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _script() -> Any:
    with _quiet_alembic():
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The head of the migrations (from the scripts themselves; :data:`SCHEMA_HEAD` is its cheap copy)."""
    heads = _script().get_heads()
    if len(heads) != 1:
        raise CatalogError(f"migrations have {len(heads)} heads; expected one")
    return str(heads[0])


def current_revision(engine: Engine) -> str | None:
    """The schema revision a database is at (None for an empty one), read with one plain query."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _known(revision: str) -> bool:
    try:
        _script().get_revision(revision)
    except Exception:
        return False
    return True


def check_schema(engine: Engine) -> str:
    """For read-only opens: the schema must be exactly this version's head (nothing may be migrated)."""
    current = current_revision(engine)
    if current == SCHEMA_HEAD:
        return SCHEMA_HEAD
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise CatalogError(f"{where} holds no copick catalog yet; index the project once with write access")
    if not _known(current):
        raise SchemaVersionError(
            f"catalog database {where} has schema revision {current!r}, written by a newer "
            "copick-catalog; upgrade copick-catalog"
        )
    raise SchemaVersionError(
        f"catalog database {where} has the older schema {current!r} (this version needs "
        f"{SCHEMA_HEAD!r}); someone with write access must run `copick-catalog db upgrade --db URL`"
    )


def ensure_schema(engine: Engine, *, upgrade_shared: bool = True) -> str:
    """Create or upgrade the schema to head; refuse a database from a newer copick-catalog.

    A SQLite file that needs upgrading is copied to ``<file>.bak-<revision>`` first, so a
    failed migration never costs the catalog. With ``upgrade_shared=False`` (what ``Catalog.open``
    asks for) an *older* server catalog is refused instead of upgraded (MLflow's rule): a shared
    PostgreSQL catalog is used by a whole lab, and the first newer client to open it must not lock
    out every older one by accident; ``copick-catalog db upgrade`` does it on purpose.
    """
    current = current_revision(engine)
    if current == SCHEMA_HEAD:
        return SCHEMA_HEAD
    where = engine.url.render_as_string(hide_password=True)
    if current is not None:
        if not _known(current):
            raise SchemaVersionError(
                f"catalog database {where} has schema revision {current!r}, which this copick-catalog does not "
                "know (it was written by a newer version); upgrade copick-catalog or point --db at another catalog"
            )
        if not upgrade_shared and not is_sqlite(engine):
            raise SchemaVersionError(
                f"catalog database {where} has the older schema {current!r} (this copick-catalog needs "
                f"{SCHEMA_HEAD!r}). Upgrading changes it for everyone who uses it: when the lab is ready, run "
                "`copick-catalog db upgrade --db URL` (older clients will then be refused)"
            )
        _backup_sqlite(engine, current)
    cfg = alembic_config()
    with engine.connect().execution_options(write=True) as conn, _quiet_alembic():
        from alembic import command

        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")  # (env.py turns SQLite's foreign keys off for the migration)
        conn.commit()
        if is_sqlite(engine):
            conn.connection.driver_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]
    log.debug("catalog schema at %s (was %s)", SCHEMA_HEAD, current)
    return SCHEMA_HEAD


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic reports its set-up and each step at DEBUG and INFO; a library opening its catalog must not
    print them (copick configures the root logger at INFO on import, so they would reach a copick user's
    console). Warnings still come through; ``--debug`` on our CLI shows everything."""
    logger = logging.getLogger("alembic")
    before = logger.level
    if not logging.getLogger("copick_catalog").isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


def _backup_sqlite(engine: Engine, revision: str) -> None:
    if not is_sqlite(engine):
        return
    path = sqlite_path(engine)
    if not path or not os.path.exists(path):
        return
    backup = f"{path}.bak-{revision}"
    src = sqlite3.connect(path)
    try:
        dst = sqlite3.connect(backup)
        with dst:
            src.backup(dst)
        dst.close()
    finally:
        src.close()
    log.warning("backed up %s to %s before upgrading its schema", path, backup)

"""Read-only SQL against a catalog, read-only by construction rather than by inspecting the text.

``copick-catalog sql`` lets people ask anything of the catalog in SQL, so it must be impossible to
change it (or anything else the database can reach) through that door. Nothing here looks at the
statement's words; the database engines refuse what is not a read:

SQLite
    The statement runs on its own connection, opened with ``mode=ro`` (the file cannot be written
    through it), with no attachable databases (``SQLITE_LIMIT_ATTACHED`` = 0, so ``ATTACH`` cannot
    create a file anywhere), and an authorizer that allows only reading tables and calling functions:
    every other action (writes, ``PRAGMA``, ``BEGIN``, ``VACUUM INTO``, temp tables) is denied by SQLite
    itself. ``sqlite3`` executes exactly one statement per call.

PostgreSQL
    The statement becomes the body of ``DECLARE … CURSOR FOR``, which the server accepts only for a
    query (``SELECT``, ``VALUES``, ``TABLE``, ``WITH … SELECT`` without data-modifying parts: no
    ``COPY``, no ``DELETE … RETURNING``); it is sent with the extended protocol, which refuses more than
    one command; it runs in a ``READ ONLY`` transaction with a statement timeout, on a connection of its
    own that is discarded afterwards, so nothing it set survives. A superuser could still call
    server-side functions such as ``pg_read_file``: point ``sql`` at a role made by
    :func:`create_readonly_role` (``copick-catalog db readonly-role NAME``), which can only SELECT.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import CatalogError
from .db import sqlite_path, sqlite_ro_uri

#: What ``sql`` may do on SQLite: read tables, call (built-in) functions, run recursive CTEs.
_SQLITE_ALLOWED = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
)
#: Rows fetched from a PostgreSQL cursor per round trip.
_FETCH = 2000
GRAMMAR = "sql runs exactly one read-only query: SELECT …, WITH … SELECT …, VALUES …, or TABLE name"


@dataclass
class SqlResult:
    """The answer to a read-only statement: column names and rows (tuples), in the order returned."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


def run_readonly_sql(
    engine: Engine, statement: str, *, timeout: float | None = 60.0, max_rows: int | None = None
) -> SqlResult:
    """Run one read-only query on the catalog database behind ``engine`` and return its rows.

    ``timeout`` (seconds) stops a runaway query; ``max_rows`` stops fetching after that many rows.
    Anything the database refuses (a write, two statements, a syntax error) raises
    :class:`~copick_catalog.errors.CatalogError` with the database's one-line reason.
    """
    if not statement or not statement.strip():
        raise CatalogError(f"empty SQL statement; {GRAMMAR}")
    if engine.dialect.name == "sqlite":
        return _sqlite(engine, statement, timeout, max_rows)
    if engine.dialect.name == "postgresql":
        return _postgres(engine, statement, timeout, max_rows)
    raise CatalogError(f"read-only SQL is not implemented for {engine.dialect.name} catalogs")


def _refused(exc: BaseException) -> CatalogError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return CatalogError(f"SQL refused: {reason} ({GRAMMAR})")


def _sqlite(engine: Engine, statement: str, timeout: float | None, max_rows: int | None) -> SqlResult:
    path = sqlite_path(engine)
    if path is None:
        raise CatalogError("read-only SQL needs a catalog file, not an in-memory database")
    try:
        conn = sqlite3.connect(sqlite_ro_uri(path), uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise CatalogError(f"cannot open catalog {path} read-only: {exc}") from None
    try:
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.execute("PRAGMA query_only = ON")  # before the authorizer, which denies PRAGMA
        conn.set_authorizer(lambda action, *_: sqlite3.SQLITE_OK if action in _SQLITE_ALLOWED else sqlite3.SQLITE_DENY)
        if timeout is not None:
            deadline = time.monotonic() + timeout
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cur = conn.execute(statement)
            columns = [d[0] for d in cur.description or ()]
            rows = cur.fetchall() if max_rows is None else cur.fetchmany(max_rows)
        except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
            if timeout is not None and "interrupted" in str(exc):
                raise CatalogError(f"SQL stopped after {timeout:g} s (timeout); narrow the query") from None
            raise _refused(exc) from None
        return SqlResult(columns, [tuple(r) for r in rows])
    finally:
        conn.close()


def _postgres(engine: Engine, statement: str, timeout: float | None, max_rows: int | None) -> SqlResult:
    raw = engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        dbapi.autocommit = False
        cur = dbapi.cursor()
        try:
            cur.execute("SET TRANSACTION READ ONLY")
            if timeout is not None:
                cur.execute(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
            # prepare=True: the extended protocol, which refuses a string holding several commands.
            cur.execute("DECLARE copick_catalog_sql NO SCROLL CURSOR FOR " + statement, prepare=True)
            columns: list[str] = []
            rows: list[tuple[Any, ...]] = []
            while max_rows is None or len(rows) < max_rows:
                n = _FETCH if max_rows is None else min(_FETCH, max_rows - len(rows))
                cur.execute(f"FETCH FORWARD {n} FROM copick_catalog_sql")
                columns = [d.name for d in cur.description or ()]
                batch = cur.fetchall()
                rows.extend(tuple(r) for r in batch)
                if len(batch) < n:
                    break
            return SqlResult(columns, rows)
        except Exception as exc:
            if "statement timeout" in str(exc):
                raise CatalogError(f"SQL stopped after {timeout:g} s (timeout); narrow the query") from None
            raise _refused(exc) from None
        finally:
            with contextlib.suppress(Exception):
                dbapi.rollback()
    finally:
        raw.invalidate()  # never hand this session back to the pool, whatever it set
        raw.close()


def create_readonly_role(engine: Engine, name: str, password: str | None = None) -> list[str]:
    """Create (or update) a PostgreSQL role that can only read this catalog; return the statements run.

    The role logs in, is no superuser, cannot create roles or databases, reads every catalog table
    (including tables later migrations add, when they are created by the role running this), and
    starts every transaction read-only. Point ``sql`` at it: ``--db postgresql+psycopg://NAME@host/db``.
    """
    if engine.dialect.name != "postgresql":
        raise CatalogError(
            "read-only roles exist on PostgreSQL only; a SQLite catalog is opened read-only by `sql` itself"
        )
    if not name.replace("_", "").isalnum() or not name[0].isalpha() or len(name) > 63:
        raise CatalogError(f"role name {name!r} must be letters, digits and '_' (starting with a letter)")
    ident = f'"{name}"'
    with engine.connect() as conn:
        db = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first()
        owner = conn.execute(sa.text("SELECT current_user")).scalar_one()
    attrs = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    stmts = [f"{'ALTER' if exists else 'CREATE'} ROLE {ident} {attrs}"]
    if password is not None:
        stmts[0] += " PASSWORD :pw"
    stmts += [
        f'GRANT CONNECT ON DATABASE "{db}" TO {ident}',
        f'GRANT USAGE ON SCHEMA "{schema}" TO {ident}',
        f'REVOKE CREATE ON SCHEMA "{schema}" FROM {ident}',
        f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {ident}',
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA "{schema}" GRANT SELECT ON TABLES TO {ident}',
        f"ALTER ROLE {ident} SET default_transaction_read_only = on",
    ]
    try:
        with engine.begin() as conn:
            for stmt in stmts:
                conn.execute(sa.text(stmt), {"pw": password} if ":pw" in stmt else {})
    except sa.exc.DBAPIError as exc:
        raise CatalogError(
            f"could not create role {name!r}: {' '.join(str(exc.orig).split())} (connect as a "
            "role that may CREATE ROLE and owns the catalog tables)"
        ) from None
    return [s.replace(":pw", "'***'") for s in stmts]


__all__ = ["GRAMMAR", "SqlResult", "create_readonly_role", "run_readonly_sql"]

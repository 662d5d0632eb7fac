"""Exception types a user can cause.

Every error that bad input can trigger (a broken config, a bad URL, an unknown run, a malformed
file) is one of these, so the CLI can print a one-line message instead of a traceback and callers
can catch the whole family with ``except CatalogError``.
"""

from __future__ import annotations


class CatalogError(Exception):
    """Base class for every error copick-catalog raises on purpose."""


class ConfigError(CatalogError):
    """The copick config file is missing, unreadable or invalid."""


class RootError(CatalogError):
    """A static or overlay root URL cannot be used (bad scheme, missing directory, no access)."""


class InvalidNameError(CatalogError, ValueError):
    """A name cannot be written as a copick path (empty, leaves the root, or does not read back)."""


class PayloadError(CatalogError):
    """A payload file (pick JSON, zarr metadata, GLB, MRC) cannot be parsed."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


class SchemaVersionError(CatalogError):
    """The catalog database was written by a newer copick-catalog than this one."""


class NotFoundError(CatalogError, LookupError):
    """A run, voxel spacing or other entity named by the caller is not in the catalog."""


class ReadOnlyError(CatalogError, PermissionError):
    """A write was attempted on an entity that lives in the read-only static root."""


class StaleRowError(CatalogError):
    """The file behind a catalog row changed or vanished since it was indexed."""


class LockBusyError(CatalogError):
    """Another index run holds the project lock and the caller asked not to wait."""


class IndexCancelled(CatalogError):
    """An index run stopped at a safe point because its caller asked it to (the daemon shutting down).

    Raised only between transactions, never inside one, so everything committed before it is whole
    and the next run completes the job.
    """


def explain(exc: BaseException) -> str | None:
    """One line saying what went wrong and how to fix it, for failures a user or the machine can cause.

    None for anything else (a bug), which the CLI then reports as an internal error. Our own errors
    say it themselves; database and disk failures get the hint their message implies.
    """
    if isinstance(exc, CatalogError):
        return " ".join(str(exc).split())
    text = " ".join(str(getattr(exc, "orig", None) or exc).split()) or type(exc).__name__
    low = text.lower()
    if "disk is full" in low or "no space left" in low or getattr(exc, "errno", None) == 28:
        return f"{text[:300]}: the disk is full; free space where the catalog (or the file) lives, then try again"
    if "not a database" in low or "file is encrypted" in low:
        return (
            f"{text[:200]}: --db names a file that is not a SQLite catalog; point --db at a catalog file or a new path"
        )
    if any(
        s in low
        for s in (
            "terminating connection",
            "server closed the connection",
            "connection reset",
            "connection already closed",
            "ssl connection has been closed",
        )
    ):
        return (
            f"the database connection was lost ({text[:200]}); nothing half-written was kept: run the command "
            "again when the server is back"
        )
    if any(
        s in low
        for s in (
            "could not connect",
            "connection refused",
            "connection timed out",
            "no route to host",
            "name or service not known",
            "could not translate host name",
        )
    ):
        return f"cannot reach the database ({text[:200]}); check the --db URL and that the server is running"
    if "password authentication failed" in low or ("role" in low and "does not exist" in low):
        return f"the database refused the login ({text[:200]}); check the user and password in the --db URL"
    if "database is locked" in low:
        return f"{text[:200]}: another process holds the catalog's write lock too long; try again shortly"
    if "readonly database" in low or "read-only transaction" in low or "permission denied" in low:
        return f"{text[:200]}: this catalog is read-only for you; open it read-only or ask its owner for write access"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return f"{where}{exc.strerror or text}; check the path and its permissions"
    if type(exc).__module__.startswith(("sqlalchemy", "psycopg", "sqlite3")):
        return f"database error: {text[:300]}"
    return None

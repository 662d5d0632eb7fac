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

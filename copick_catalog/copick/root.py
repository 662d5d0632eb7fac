"""``CatalogRoot``: copick's ``CopickRootFSSpec``, with its runs and everything in them listed from the catalog.

Build it the way copick builds its own root (``CatalogRoot(config)`` from a copick config, or
``CatalogRoot.from_file(path)``), or with :func:`from_file`. The catalog database is ``db`` (a SQLAlchemy
URL or a SQLite path), else ``$COPICK_CATALOG_DB``, else the SQLite file next to the config (for a
config given without a file, one under ``~/.cache/copick-catalog/``).

When the root reads the files, and when it trusts the catalog:

* ``index="auto"`` (the default): if a watch daemon serves this catalog (``copick-catalog watch``; seen
  through its state file on this host or its lock on a shared PostgreSQL catalog), the root trusts the
  catalog, which the daemon keeps current within a fraction of a second; otherwise opening the root and
  ``root.refresh()`` run an incremental index first (one listing of the trees, payloads read only where
  something changed), so files written by other programs show up then.
* ``index=True``: always index on open and on refresh; ``index=False``: never (trust the catalog as it is,
  e.g. when a cron job keeps it current).
* In between, listings come from the catalog as loaded on first use; writes through this root update
  it at once. Per-entity refreshes (``run.refresh_picks()``, …) re-read the catalog, not the tree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copick.impl.filesystem import CopickConfigFSSpec, CopickRootFSSpec
from copick.models import CopickObject, CopickRun, CopickRunMeta, PickableObject

from ..config import parse_config
from ..index import grammar
from .classes import CatalogObject, CatalogRun, object_read_only
from .listing import Listing
from .writes import Writer

if TYPE_CHECKING:
    from ..catalog import Catalog

INDEX_MODES = ("auto", True, False)


class CatalogRoot(CopickRootFSSpec):
    """A copick root (``isinstance(root, copick.models.CopickRoot)``) served from the copick-catalog database."""

    # set by copick's ``CopickRoot.__init__`` (declared here for the type checker: copick ships no types)
    _runs: list[CopickRun] | None
    _objects: list[CopickObject] | None

    def __init__(
        self,
        config: CopickConfigFSSpec | dict[str, Any],
        *,
        db: str | None = None,
        index: bool | str = "auto",
        config_path: str | os.PathLike[str] | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        if index not in INDEX_MODES:
            raise ValueError(f"index must be one of {INDEX_MODES}, not {index!r}")
        if isinstance(config, dict):
            config = CopickConfigFSSpec(**config)
        super().__init__(config)
        self._db = db
        self._config_path = Path(config_path).expanduser().resolve() if config_path is not None else None
        self._catalog = catalog
        self._owns_catalog = catalog is None
        self._index_mode = index
        self._listing = Listing(self._engine, self._project_id)
        self._writer = Writer(lambda: self.catalog, self._changed)
        if self._should_index():
            self.catalog.index(trigger="api")

    @classmethod
    def from_file(cls, path: str, *, db: str | None = None, index: bool | str = "auto") -> CatalogRoot:  # type: ignore[override]
        """Open the project described by a copick config file, like ``CopickRootFSSpec.from_file``."""
        config = _read_config(path)
        return cls(config, db=db, index=index, config_path=path)

    # ------------------------------------------------------------------ the catalog behind it

    @property
    def catalog(self) -> Catalog:
        """The :class:`~copick_catalog.Catalog` this root lists from (opened on first use)."""
        if self._catalog is None:
            from ..catalog import Catalog

            ours = parse_config(self.config.model_dump(mode="json"), source=str(self._config_path or "<config>"))
            self._catalog = Catalog.from_config(ours, self._db, source=self._config_path)
            self._owns_catalog = True
        return self._catalog

    def _engine(self) -> Any:
        return self.catalog.engine

    def _project_id(self) -> int:
        return self.catalog.project_id

    def _should_index(self) -> bool:
        if self._index_mode == "auto":
            from ..catalog.status import daemon_serving

            return not daemon_serving(self.catalog)
        return bool(self._index_mode)

    def _changed(self, rel: str) -> None:
        """A write-through changed ``rel``: the listing re-reads its run next time."""
        parts = rel.split("/")
        self._listing.touch(parts[1] if parts[0] == grammar.RUNS_DIR and len(parts) > 1 else None)
        if parts[0] != grammar.RUNS_DIR:
            self._objects = None

    def close(self) -> None:
        """Release the database connections (the root stays usable; they reopen on next use)."""
        if self._catalog is not None and self._owns_catalog:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> CatalogRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ copick's hooks

    def _run_factory(self) -> tuple[type, type]:
        return CatalogRun, CopickRunMeta

    def _object_factory(self) -> tuple[type, type]:
        return CatalogObject, PickableObject

    def query(self) -> list[CatalogRun]:  # type: ignore[override]
        return [CatalogRun(root=self, meta=CopickRunMeta(name=n)) for n in self._listing.run_names()]

    def _query_objects(self) -> None:
        self._objects = [
            CatalogObject(self, meta, read_only=object_read_only(self._listing, meta.name, self.static_is_overlay))
            for meta in self.config.pickable_objects
        ]

    def new_run(self, name: str, exist_ok: bool = False, **kwargs: Any) -> Any:
        before = None if self._runs is None else list(self._runs)
        try:
            return super().new_run(name, exist_ok=exist_ok, **kwargs)
        except BaseException:
            self._runs = before  # copick lists the new run before writing it
            raise

    def refresh(self) -> None:
        """Re-read the project: index it first (see the module docstring for when), then the catalog."""
        if self._should_index():
            self.catalog.index(trigger="api")
        self._listing.forget()
        super().refresh()

    def _invalidate_all_caches(self) -> None:
        self._listing.forget()
        super()._invalidate_all_caches()

    def __repr__(self) -> str:
        return f"CatalogRoot({self.config.name!r}, runs={None if self._runs is None else len(self._runs)})"

    # ------------------------------------------------------------------ pickling (map_runs with processes)

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the database connections: a worker process opens its own on first use."""
        state = dict(self.__dict__)
        state["_catalog"] = None
        state["_writer"] = None
        state["_index_mode"] = False  # the parent indexed already; a worker trusts what it was given
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._owns_catalog = True
        self._writer = Writer(lambda: self.catalog, self._changed)
        self._listing.bind(self._engine, self._project_id)


def _read_config(path: str | os.PathLike[str]) -> CopickConfigFSSpec:
    """A copick config file as copick's own model (our loader's checks and messages, copick's type)."""
    from ..config import load_config

    ours = load_config(Path(path))
    return CopickConfigFSSpec(**ours.model_dump(mode="json"))


def from_file(config: str | os.PathLike[str], db: str | None = None, *, index: bool | str = "auto") -> CatalogRoot:
    """Open a copick project through its catalog, like ``copick.from_file(config)``.

    Returns a :class:`CatalogRoot`, a subclass of copick's ``CopickRootFSSpec``, so every copick tool
    accepts it. ``db`` is the catalog (default: the SQLite file next to the config); ``index`` says when
    the files are re-read (see :mod:`copick_catalog.copick.root`).
    """
    return CatalogRoot.from_file(os.fspath(config), db=db, index=index)


__all__ = ["CatalogRoot", "from_file"]

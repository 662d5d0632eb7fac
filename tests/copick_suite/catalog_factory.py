"""Roots for copick's own test suite: every filesystem project its tests open becomes a ``CatalogRoot``.

``copick_root_swap`` calls :func:`make_root` with the config of each project a test opens (through
``copick.from_file``); the root gets a catalog of its own (a copy of one migrated, empty SQLite file per
process, so the hundreds of roots a run builds do not each run the migrations) and, as no watch daemon
serves it, indexes the project's files when it is built, as copick's tests expect of a fresh root.
:class:`SwapRoot` stands in for ``CopickRootFSSpec`` in the two test files that construct it directly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from copick_catalog import CatalogRoot

_WORK = Path(os.environ.get("COPICK_SUITE_WORK") or tempfile.mkdtemp(prefix="copick-suite-"))
_template: Path | None = None


def _empty_catalog() -> Path:
    """A fresh catalog file: a copy of one made (and migrated) once per process."""
    global _template
    if _template is None:
        from copick_catalog.catalog.db import create_engine, ensure_schema

        _WORK.mkdir(parents=True, exist_ok=True)
        _template = _WORK / f"template-{os.getpid()}.sqlite"
        engine = create_engine(str(_template))
        ensure_schema(engine)
        engine.dispose()
    target = _WORK / f"catalog-{uuid.uuid4().hex}.sqlite"
    shutil.copyfile(_template, target)
    return target


class SwapRoot(CatalogRoot):
    """``CopickRootFSSpec(config)`` as copick's tests build it, with a catalog of its own.

    Also what :func:`make_root` returns: with ``COPICK_ROOT_SWAP_CLASS`` the name ``CopickRootFSSpec`` in
    copick means this class, so copick's own ``isinstance(root, CopickRootFSSpec)`` checks see every root.
    """

    def __init__(self, config: Any, **kwargs: Any) -> None:
        kwargs.setdefault("db", str(_empty_catalog()))
        super().__init__(config, **kwargs)


def make_root(cfg: dict[str, Any]) -> CatalogRoot:
    """The catalog root for a config dict (``COPICK_ROOT_FACTORY=tests.copick_suite.catalog_factory:make_root``)."""
    return SwapRoot(cfg)

"""The campaign report: which runs are done, by whom, what is missing, what changed this week.

Three steps, one module each: :func:`gather` asks the catalog (aggregate queries only) and returns
plain data; :func:`render` turns it into one self-contained HTML page (inline CSS, scripts and SVG;
no network needed to view it); :func:`serve` rebuilds that page from the catalog on every load.

    from copick_catalog import Catalog
    from copick_catalog.report import write_report, serve

    with Catalog.open("copick_config.json", read_only=True) as cat:
        write_report(cat, "report.html")
    serve("copick_config.json", port=8765)  # http://127.0.0.1:8765/ until Ctrl-C

Only the standard library and the catalog are used, so importing this stays cheap.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from .data import gather
from .html import render, render_index
from .server import make_server, serve

if TYPE_CHECKING:
    from ..catalog import Catalog


def write_report(cat: Catalog, path: str | os.PathLike[str]) -> Path:
    """Write the campaign report of ``cat``'s project to ``path`` as one self-contained HTML file.

    The file is written next to its target and renamed into place, so a web server or a browser
    that reloads it (a cron job rewriting it nightly) never sees half a page. Returns the path.
    """
    return _write_page(Path(path), render(gather(cat)))


def write_reports(db: str, path: str | os.PathLike[str]) -> list[Path]:
    """Reports for every project of the catalog database ``db``: ``path`` becomes the page listing them
    (runs, pick files, points, open errors, last index), each linking to its own report written beside it
    as ``<stem>-<id>-<name>.html``. Returns the pages, the list first."""
    import time

    from ..catalog import Catalog

    target = Path(path).expanduser().resolve()
    written: list[Path] = []
    listed = []
    for info in Catalog.projects(db):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", info.name).strip("-")[:60] or "project"
        name = f"{target.stem}-{info.id}-{slug}.html"
        with Catalog.open_db(db, info.id) as cat:
            written.append(_write_page(target.with_name(name), render(gather(cat))))
        listed.append({**info.as_dict(), "href": name})
    shown = _shown_url(db)
    return [_write_page(target, render_index(listed, shown, time.time())), *written]


def _shown_url(db: str) -> str:
    """The database URL as a page may show it: no password."""
    from sqlalchemy.engine import make_url

    from ..catalog.db import normalize_url

    return make_url(normalize_url(db)).render_as_string(hide_password=True)


def _write_page(target: Path, page: str) -> Path:
    target = target.expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")  # open(), so the umask applies
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


__all__ = ["gather", "make_server", "render", "render_index", "serve", "write_report", "write_reports"]

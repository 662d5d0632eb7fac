"""The README against the code: every command documented and mirrored in Python, every example runnable.

In the manner of sqlite-utils' ``test_docs.py``: the command tree is read from click itself, so a new
command without a README row (or a row without its Python counterpart) fails here; the Python column
is resolved to real attributes; and the README's Python examples run on a generated project.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from copick_catalog.cli import main as cli_main
from copick_catalog.sample import SampleSummary, make_sample_project

README = Path(__file__).resolve().parents[1] / "README.md"

#: Each command and the Python it is a skin over (dotted from ``copick_catalog``; ``Catalog.x`` is a method).
PYTHON_OF = {
    "index": ["Catalog.index"],
    "errors": ["Catalog.errors"],
    "query runs": ["Catalog.runs", "Catalog.runs_lacking"],
    "query picks": ["Catalog.picks"],
    "query tomograms": ["Catalog.tomograms"],
    "query features": ["Catalog.features"],
    "query meshes": ["Catalog.meshes"],
    "query filaments": ["Catalog.filaments"],
    "query segmentations": ["Catalog.segmentations"],
    "stats": ["Catalog.pick_summary"],
    "sql": ["Catalog.sql"],
    "status": ["Catalog.status"],
    "watch": ["daemon.run_watch"],
    "db upgrade": ["Catalog.upgrade"],
    "db readonly-role": ["Catalog.create_readonly_role"],
    "sample": ["sample.make_sample_project"],
    "demo": ["sample.make_sample_project", "Catalog.open", "Catalog.index"],
    "projects": ["Catalog.projects", "Catalog.open_db"],
    "export points": ["Catalog.export"],
    "report": ["report.write_report"],
    "serve": ["report.serve"],
}


def _leaves(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        out.extend(_leaves(command, f"{path} ") if isinstance(command, click.Group) else [path])
    return out


def _table_rows() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## Python and command line, side by side", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| Python |"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append((cells[0], cells[1]))
    return rows


def _resolve(dotted: str) -> Any:
    head, _, attr = dotted.rpartition(".")
    if head == "Catalog":
        from copick_catalog import Catalog

        return getattr(Catalog, attr)
    return getattr(importlib.import_module(f"copick_catalog.{head}"), attr)


def test_every_command_has_a_readme_row_and_a_python_counterpart() -> None:
    commands = _leaves(cli_main)
    assert "query picks" in commands and "db upgrade" in commands  # the tree was read
    assert sorted(PYTHON_OF) == commands, "a command was added or removed: give it a README row and a Python twin"
    rows = _table_rows()
    for command in commands:
        hits = [(py, cli) for py, cli in rows if re.search(rf"`copick-catalog {re.escape(command)}( |`)", cli)]
        assert hits, f"README's side-by-side table has no row for `copick-catalog {command}`"
        python_cell = " ".join(py for py, _ in hits)
        for dotted in PYTHON_OF[command]:
            target = _resolve(dotted)
            assert callable(target) and target.__doc__, f"{dotted} has no docstring"
            name = dotted.rsplit(".", 1)[1]
            assert name in python_cell, f"the row for `{command}` does not show {dotted}"


def test_every_command_is_described_in_help() -> None:
    for command in _leaves(cli_main):
        node: Any = cli_main
        for part in command.split():
            node = node.commands[part]
        assert node.help and len(node.help.split()) >= 4, f"`copick-catalog {command}` has no real help text"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("copick")
    blocks = _python_blocks()
    assert len(blocks) >= 2
    summary = make_sample_project(tmp_path / "project", runs=4)
    monkeypatch.chdir(summary.config.parent)
    monkeypatch.setenv("COPICK_CATALOG_CACHE", str(tmp_path / "cache"))
    for i, block in enumerate(blocks):
        namespace: dict[str, Any] = {"__name__": f"readme_block_{i}"}
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as exc:  # name the block: the traceback alone points at "<string>"
            raise AssertionError(f"README python block {i} fails: {type(exc).__name__}: {exc}\n{block}") from exc
        for value in namespace.values():  # close what the example opened
            close = getattr(value, "close", None)
            if callable(close) and type(value).__module__.startswith("copick_catalog"):
                close()
    assert os.path.exists(summary.config)


def _loaded_by(code: str) -> tuple[str, str]:
    """Run ``code`` in a new interpreter: what it printed, and the modules it had loaded by then (top-level
    names, and this package's modules in full), as the printed list."""
    probe = (
        f"import sys\n{code}\n"
        "print(sorted({m.split('.')[0] if not m.startswith('copick_catalog') else m for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout, out.stdout.strip().splitlines()[-1]


def test_help_imports_nothing_heavy() -> None:
    """``--help`` (and each command's) stays instant: no SQLAlchemy, numpy, zarr, pyarrow or copick at import time.

    An import of the catalog from a command module once cost every ``--help`` 0.6 s; this catches the next one.
    """
    heavy = ("sqlalchemy", "numpy", "zarr", "pyarrow", "copick", "s3fs", "trimesh", "copick_catalog.catalog")
    _, loaded = _loaded_by(
        "from copick_catalog.cli import main\n"
        "for argv in (['--help'], ['query', 'picks', '--help'], ['export', 'points', '--help'], ['index', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass"
    )
    for name in heavy:
        assert f"'{name}'" not in loaded, f"`copick-catalog --help` imports {name}"


def test_a_query_imports_only_what_it_uses(sample: SampleSummary, tmp_path: Path) -> None:
    """``query picks`` answers from SQL: it loads no numpy, zarr, msgspec, fsspec or alembic (the indexer's
    and the payload readers' imports), which would cost every query command a few hundred milliseconds."""
    db = f"sqlite:///{tmp_path / 'c.sqlite'}"
    from copick_catalog import Catalog

    with Catalog.open(sample.config, db=db) as cat:
        cat.index()

    printed, loaded = _loaded_by(
        "from copick_catalog.cli import main\n"
        f"argv = ['query', 'picks', {str(sample.config)!r}, '--db', {db!r}, '--user', 'alice']\n"
        "try:\n    main(argv)\nexcept SystemExit as e:\n    assert not e.code, e.code"
    )
    assert "alice" in printed  # it did answer
    for name in ("numpy", "zarr", "msgspec", "fsspec", "alembic", "pyarrow", "trimesh", "s3fs"):
        assert f"'{name}'" not in loaded, f"`copick-catalog query picks` imports {name}"

    # and a reindex that finds nothing to read (cron's nightly run) loads none of the payload readers either
    _, loaded = _loaded_by(
        "from copick_catalog import Catalog\n"
        f"r = Catalog.open({str(sample.config)!r}, db={db!r}).index()\n"
        "assert r.files_read == 0 and r.unchanged > 0, r"
    )
    for name in ("numpy", "zarr", "msgspec", "pyarrow", "trimesh", "s3fs", "alembic"):
        assert f"'{name}'" not in loaded, f"a no-op index imports {name}"

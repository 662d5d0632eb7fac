"""``copick catalog …``: our commands inside copick's own CLI, found through its ``copick.commands`` entry point.

These run the ``copick`` executable that the copick package installs (1.31 or 2.x, whichever this
environment has), so they fail if the entry point is not registered, if copick cannot load the group,
or if the commands lose copick's conventions (``-c/--config``, ``$COPICK_CONFIG``, ``--debug``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from copick_catalog import Catalog
from copick_catalog.sample import SampleSummary

pytest.importorskip("copick")

COPICK = Path(sys.executable).parent / "copick"


def _copick(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert COPICK.exists(), f"copick's executable is not installed next to {sys.executable}"
    full_env = {k: v for k, v in os.environ.items() if k != "COPICK_CONFIG"}
    full_env.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run([str(COPICK), *args], capture_output=True, text=True, timeout=300, env=full_env)


def _json_out(stdout: str) -> Any:
    """Our JSON, after the banner copick's own CLI logs on stdout before any command runs."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("{", "[")))
    return json.loads("\n".join(lines[start:]))


def test_catalog_group_is_listed_by_copick() -> None:
    top = _copick("--help")
    assert top.returncode == 0, top.stderr
    assert "catalog" in top.stdout
    sub = _copick("catalog", "--help")
    assert sub.returncode == 0, sub.stderr
    for command in ("index", "query", "stats", "watch", "status", "sql", "errors", "db"):
        assert command in sub.stdout, command


def test_index_and_query_with_copicks_conventions(sample: SampleSummary, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'plugin.sqlite'}"
    indexed = _copick("catalog", "index", "-c", str(sample.config), "--db", db, "--json", "-q")
    assert indexed.returncode == 0, indexed.stderr
    report = _json_out(indexed.stdout)
    assert report["errors"] == 0
    assert report["by_kind"]["pick"]["added"] == sample.pick_files

    # the same rows the Python API answers, through --config's env var instead of -c
    listed = _copick(
        "catalog", "query", "picks", "--db", db, "--user", "alice", "--format", "json",
        env={"COPICK_CONFIG": str(sample.config)},
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    with Catalog.open(sample.config, db=db) as cat:
        expected = sorted((p.run.name, p.object_name, p.n_points) for p in cat.picks(user_id="alice"))
    got = sorted((r["run"], r["object_name"], r["n_points"]) for r in _json_out(listed.stdout))
    assert got == expected and got


def test_debug_logs_and_one_line_errors(sample: SampleSummary, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'plugin.sqlite'}"
    debug = _copick("catalog", "status", "-c", str(sample.config), "--db", db, "--debug")
    assert debug.returncode == 0, debug.stderr
    assert "copick_catalog" in debug.stderr + debug.stdout  # our loggers speak at DEBUG

    missing = _copick("catalog", "index", "-c", str(tmp_path / "nope.json"), "--db", db)
    assert missing.returncode != 0
    assert "nope.json" in missing.stderr and "Traceback" not in missing.stderr

    no_config = _copick("catalog", "stats", "--db", db)
    assert no_config.returncode == 2 and "--config" in no_config.stderr

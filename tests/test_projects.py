"""Several projects in one catalog database: listing them, opening one without its config, asking all of them.

Two generated projects (different names, runs and users) are indexed into one SQLite file or one
PostgreSQL database. The expectations come from each project's own catalog (``Catalog.open`` on its
config), so ``projects``, ``open_db``, ``open_all`` and ``--all-projects`` must agree with what a
single-project catalog says, row for row.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.catalog.db import create_engine
from copick_catalog.errors import CatalogError
from copick_catalog.report import write_reports
from copick_catalog.sample import make_sample_project

from .conftest import age_tree


@pytest.fixture
def two_projects(tmp_path: Path, db_url: str) -> tuple[list[Path], str]:
    """Two projects in one catalog database: ``alpha`` (6 runs) and ``beta`` (4 runs, other users)."""
    configs = []
    for name, runs, users in (("alpha", 6, (("alice", "1"), ("bob", "2"))), ("beta", 4, (("carol", "3"),))):
        s = make_sample_project(tmp_path / name, runs=runs, tomogram_runs=1, size=32, users=users, seed=runs)
        doc = json.loads(s.config.read_text())
        doc["name"] = name
        s.config.write_text(json.dumps(doc))
        age_tree(tmp_path / name)
        with Catalog.open(s.config, db=db_url) as cat:
            assert cat.index().errors == 0
        configs.append(s.config)
    return configs, db_url


def _own_answers(config: Path, db: str) -> dict[str, Any]:
    with Catalog.open(config, db=db, read_only=True) as cat:
        picks = cat.picks()
        return {
            "name": cat.config.name,
            "runs": sorted(r.name for r in cat.runs()),
            "picks": sorted((p.run_name, p.object_name, p.user_id, p.session_id, p.n_points) for p in picks),
            "points": sum(p.n_points for p in picks),
            "summary": sorted((r["object_name"], r["user_id"], r["picks"], r["points"]) for r in cat.pick_summary()),
        }


def test_projects_lists_each_with_its_numbers(two_projects: tuple[list[Path], str]) -> None:
    configs, db = two_projects
    own = {a["name"]: a for a in (_own_answers(c, db) for c in configs)}
    listed = {p.name: p for p in Catalog.projects(db)}
    assert sorted(listed) == ["alpha", "beta"]
    for name, p in listed.items():
        assert (p.runs, p.pick_files, p.points) == (
            len(own[name]["runs"]),
            len(own[name]["picks"]),
            own[name]["points"],
        )
        assert p.last_indexed_at is not None and p.open_errors == 0
        assert p.config_path == str(configs[0 if name == "alpha" else 1])
        assert p.overlay_url.endswith("overlay")
    # the sizes follow picks written by anyone (they are sums of the trigger-kept pick_totals), zero when none is left
    engine = create_engine(db)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM picks WHERE project_id = :p"), {"p": listed["beta"].id})
        more = sa.text("UPDATE picks SET n_points = n_points + 1 WHERE project_id = :p")
        conn.execute(more, {"p": listed["alpha"].id})
    engine.dispose()
    after = {p.name: p for p in Catalog.projects(db)}
    assert (after["beta"].pick_files, after["beta"].points) == (0, 0)
    assert (after["alpha"].pick_files, after["alpha"].points) == (
        len(own["alpha"]["picks"]),
        own["alpha"]["points"] + len(own["alpha"]["picks"]),
    )


def test_open_db_needs_no_config_file(two_projects: tuple[list[Path], str]) -> None:
    configs, db = two_projects
    want = _own_answers(configs[1], db)
    configs[1].rename(configs[1].with_suffix(".moved"))  # the config is not on this machine
    with Catalog.open_db(db, "beta") as cat:
        assert cat.read_only
        got = sorted((p.run_name, p.object_name, p.user_id, p.session_id, p.n_points) for p in cat.picks())
        assert got == want["picks"]
        first = cat.picks()[0]
        assert len(first.open().points) == first.n_points  # payloads open through the stored roots
        with pytest.raises(CatalogError, match="read-only"):
            cat.index()
    by_id = Catalog.projects(db)[0].id
    with Catalog.open_db(db, by_id) as cat:
        assert cat.config.name == "alpha"


def test_open_db_names_the_choices(two_projects: tuple[list[Path], str]) -> None:
    _configs, db = two_projects
    with pytest.raises(CatalogError, match=r"holds 2 projects \('alpha' \(id \d+\), 'beta' \(id \d+\)\); say which"):
        Catalog.open_db(db)
    with pytest.raises(CatalogError, match="has no project 'gamma'; it holds 'alpha'"):
        Catalog.open_db(db, "gamma")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "copick_catalog.cli", *args], capture_output=True, text=True, timeout=180
    )


def test_all_projects_on_the_command_line(two_projects: tuple[list[Path], str]) -> None:
    configs, db = two_projects
    own = {a["name"]: a for a in (_own_answers(c, db) for c in configs)}

    listed = _cli("projects", "--db", db, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {(r["name"], r["runs"], r["pick_files"], r["points"]) for r in rows} == {
        (n, len(a["runs"]), len(a["picks"]), a["points"]) for n, a in own.items()
    }

    picks = _cli("query", "picks", str(configs[0]), "--db", db, "--all-projects", "--format", "json")
    assert picks.returncode == 0, picks.stderr
    got = sorted(
        (r["project"], r["run"], r["object_name"], r["user_id"], r["session_id"], r["n_points"])
        for r in json.loads(picks.stdout)
    )
    assert got == sorted((n, *p) for n, a in own.items() for p in a["picks"])

    one = _cli("query", "picks", str(configs[0]), "carol:*/*", "--db", db, "--format", "json")  # not --all-projects
    assert one.returncode == 0 and json.loads(one.stdout) == [], "a single-project query saw another project"
    across = _cli("query", "picks", str(configs[0]), "*:carol/*", "--db", db, "--all-projects", "--format", "json")
    assert {r["project"] for r in json.loads(across.stdout)} == {"beta"}

    stats = _cli("stats", str(configs[0]), "--db", db, "--all-projects", "--format", "json")
    assert stats.returncode == 0, stats.stderr
    assert sorted(
        (r["project"], r["object_name"], r["user_id"], r["picks"], r["points"]) for r in json.loads(stats.stdout)
    ) == sorted((n, *row) for n, a in own.items() for row in a["summary"])
    runs = _cli("query", "runs", str(configs[1]), "--db", db, "--all-projects", "--format", "json")
    assert Counter(r["project"] for r in json.loads(runs.stdout)) == {n: len(a["runs"]) for n, a in own.items()}

    bad = _cli("projects", "--db", str(configs[0].parent / "nowhere" / "x.sqlite"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


class _Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "data-project" in a:
            self.rows.append({"project": a["data-project"] or ""})
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")


def test_report_for_all_projects(two_projects: tuple[list[Path], str], tmp_path: Path) -> None:
    configs, db = two_projects
    own = {a["name"]: a for a in (_own_answers(c, db) for c in configs)}
    pages = write_reports(db, tmp_path / "out" / "reports.html")
    assert pages[0].name == "reports.html" and len(pages) == 3
    index = pages[0].read_text()
    parsed = _Rows()
    parsed.feed(index)
    assert sorted(r["project"] for r in parsed.rows) == ["alpha", "beta"]
    for href in parsed.links:
        page = (pages[0].parent / href).read_text()
        name = re.search(r"<h1>([^<]*)</h1>", page)
        assert name is not None and href in {p.name for p in pages[1:]}
        data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S)[1])  # type: ignore[index]
        assert data["summary"]["pick_files"] == len(own[name[1]]["picks"])
    cli = _cli("report", str(configs[0]), "--db", db, "--all-projects", "--out", str(tmp_path / "cli" / "r.html"))
    assert cli.returncode == 0, cli.stderr
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(
        ["r.html", *(re.sub(r"^reports", "r", p.name) for p in pages[1:])]
    )

"""A big local project is indexed in passes over slices of runs, and builds the catalog one pass builds.

The passes bound memory (each holds the listing and snapshot of its own runs), so what they must not
change is the result: the same rows after a first index and after a reindex of a changed tree (runs
added and removed, files changed, bad files in several slices, a tomogram gone), the same refusal of a
root that looks unmounted, and, on PostgreSQL, slices cut by code point whatever the database's
collation. ``RUNS_PER_PASS`` is lowered so the 12-run sample takes several passes.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.errors import RootError
from copick_catalog.index import fanout, indexer, pool
from copick_catalog.index import snapshot as snapshot_mod
from copick_catalog.index.scopes import RunSlice, plan_slices
from copick_catalog.sample import SampleSummary

from .conftest import (
    age_tree,
    fresh_pg_database,
    packed_points_match,
    run_object_counts,
    skip_or_fail_without_pg,
)
from .test_index_equality import _add_bad_files, _dump, reference_url  # noqa: F401 - a fixture


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[RunSlice | None, set[str]]]:
    """Slices of 3 runs; records each pass's slice and the runs its snapshot held."""
    monkeypatch.setattr(indexer, "RUNS_PER_PASS", 3)
    seen: list[tuple[RunSlice | None, set[str]]] = []
    real = snapshot_mod.load_snapshot

    def spy(engine: Any, project_id: int, scopes: Any, runs: RunSlice | None = None) -> Any:
        snap = real(engine, project_id, scopes, runs)
        held = set(snap.runs)
        for rows in snap.files.values():
            held.update(path.split("/")[1] for path in rows if path.startswith("ExperimentRuns/"))
        seen.append((runs, held))
        return snap

    monkeypatch.setattr(indexer, "load_snapshot", spy)
    return seen


def _change(project: Path) -> None:
    """A day's edits across the slices: a run gone, a run new, a pick changed, a bad file, a tomogram gone."""
    overlay = project / "overlay" / "ExperimentRuns"
    static = project / "static" / "ExperimentRuns"
    runs = sorted(p.name for p in static.iterdir() if p.is_dir())
    for layer in (static, overlay):
        shutil.rmtree(layer / runs[4], ignore_errors=True)
        shutil.copytree(layer / runs[5], layer / "TS_new", symlinks=True)
    pick = next((overlay / runs[7] / "Picks").glob("*.json"))
    doc = json.loads(pick.read_text())
    doc["points"] = doc["points"][:1]
    pick.write_text(json.dumps(doc))
    (overlay / runs[10] / "Picks" / "zoe_9_ribosome.json").write_bytes(b'{"points": [')
    for tomogram in sorted(static.glob("*/VoxelSpacing*/*.zarr"))[:1]:
        shutil.rmtree(tomogram)
    age_tree(project)


def _same(want_url: str, got_url: str, what: str) -> None:
    want, got = _dump(want_url), _dump(got_url)
    assert sorted(want) == sorted(got)
    for table in want:
        assert got[table] == want[table], f"table {table} differs between one pass and passes over slices ({what})"


def test_passes_over_slices_build_the_catalog_one_pass_builds(
    sample: SampleSummary,
    db_url: str,
    reference_url: str,  # noqa: F811 - the fixture imported above
    passes: list[tuple[RunSlice | None, set[str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = sample.config.parent
    _add_bad_files(project)
    bad_run = sorted((project / "overlay" / "ExperimentRuns").iterdir())[-1] / "Picks"
    (bad_run / "zoe_4_ribosome.json").write_bytes(b"not json")  # a bad file in the last slice too
    age_tree(project)
    monkeypatch.setattr(fanout, "PARALLEL_MIN_RUNS", 1)  # slices listed in shares by forked workers too
    monkeypatch.setenv(pool.WORKERS_ENV, "2")

    for what in ("first index", "reindex after a day's edits"):
        if what != "first index":
            _change(project)
        with monkeypatch.context() as one_pass:
            one_pass.setattr(indexer, "RUNS_PER_PASS", 10_000)
            with Catalog.open(sample.config, db=reference_url) as cat:
                plain = cat.index()
        passes.clear()
        with Catalog.open(sample.config, db=db_url) as cat:
            with cat.engine.connect() as conn:
                names = set(conn.execute(sa.text("SELECT name FROM runs")).scalars())
            names |= {p.name for layer in ("static", "overlay") for p in (project / layer / "ExperimentRuns").iterdir()}
            sliced = cat.index()
        assert len(passes) == -(-len(names) // 3), f"{len(names)} runs in slices of 3, not {len(passes)} passes"
        assert all(runs is not None and not runs.whole for runs, _ in passes)
        for runs, held in passes:
            assert runs is not None and all(name in runs for name in held), "a pass held runs of another slice"
            assert len(held) <= 3
        held_by = [name for _, held in passes for name in held]
        assert len(held_by) == len(set(held_by)), "a run was in two passes' snapshots"
        for field in ("added", "changed", "removed", "unchanged", "errors", "runs"):
            assert getattr(sliced, field) == getattr(plain, field), (what, field)
        _same(reference_url, db_url, what)
        engine = sa.create_engine(db_url)
        try:
            assert packed_points_match(engine) > 0
            run_object_counts(engine)
        finally:
            engine.dispose()
    assert sliced.removed > 0 and sliced.changed > 0 and sliced.added > 0 and sliced.errors == 4

    with Catalog.open(sample.config, db=db_url) as cat:
        assert cat.index().nothing_changed


def test_slices_refuse_a_root_that_looks_unmounted(
    sample: SampleSummary, tmp_path: Path, passes: list[tuple[RunSlice | None, set[str]]]
) -> None:
    """The passes see one slice each, so the roots are checked once for all before the first: an emptied
    overlay is refused with nothing removed, and removed only when the caller says the data is gone."""
    project = sample.config.parent
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    with Catalog.open(sample.config, db=url) as cat:
        cat.index()
        before = Counter(p.layer for p in cat.picks())
    assert before["overlay"] > 0 and before["static"] > 0
    overlay = project / "overlay" / "ExperimentRuns"
    overlay.rename(project / "overlay" / "aside")
    overlay.mkdir()
    with Catalog.open(sample.config, db=url) as cat:
        with pytest.raises(RootError, match=r"overlay root .* lists no runs.*--allow-empty-root"):
            cat.index()
        assert Counter(p.layer for p in cat.picks()) == before
        cat.index(allow_empty_root=True)
        assert Counter(p.layer for p in cat.picks()) == {"static": before["static"]}
    shutil.rmtree(overlay)
    (project / "overlay" / "aside").rename(overlay)
    shutil.rmtree(project / "static")
    with Catalog.open(sample.config, db=url) as cat, pytest.raises(RootError, match=r"static root .* does not exist"):
        cat.index()


def test_plan_slices_cover_every_name_once() -> None:
    names = [f"TS_{i:03d}" for i in range(10)] + ["a", "B", "ts_1", "TS-1"]
    slices = plan_slices([*names, "TS_\udcff"], 4)  # a name that is not UTF-8 is never a bound
    assert [s.size for s in slices] == [4, 4, 4, 2]
    assert slices[0].after is None and slices[-1].upto is None and slices[0].outside and not slices[1].outside
    for name in [*names, "TS_\udcff", "zzz", ""]:
        assert sum(name in s for s in slices) == 1, name
    assert all("\udcff" not in (s.after or "") + (s.upto or "") for s in slices)
    assert plan_slices(names, 100) == [RunSlice(size=len(names))] and plan_slices(names, 100)[0].whole
    assert slices[0].keeps("Objects/ribosome.zarr") and not slices[1].keeps("Objects/ribosome.zarr")
    assert slices[1].keeps(f"ExperimentRuns/{sorted(names)[5]}/Picks/a.json")


@pytest.fixture
def icu_pg_url() -> Iterator[str]:
    """A PostgreSQL database whose default collation is ICU's en-US (case-blind, punctuation-light)."""
    skip_or_fail_without_pg()
    with fresh_pg_database(options="TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'") as url:
        yield url


def test_slices_follow_code_points_under_any_postgresql_collation(
    sample: SampleSummary, icu_pg_url: str, passes: list[tuple[RunSlice | None, set[str]]]
) -> None:
    """Under en-US, "a_1" sorts before "B_1" and "ts_1" next to "TS_0001"; code points put every upper-case
    name first. Slices compared under the database's collation would hand a pass rows of runs it never
    walks (and remove them) or miss rows it walks (and insert them twice)."""
    project = sample.config.parent
    copies = ("a_1", "B_1", "ts_1", "TS-1", "Zz", "ab")
    first = sorted(p.name for p in (project / "static" / "ExperimentRuns").iterdir())[0]
    for layer in ("static", "overlay"):
        runs = project / layer / "ExperimentRuns"
        for name in copies:
            shutil.copytree(runs / first, runs / name, symlinks=True)
    age_tree(project)
    with sa.create_engine(icu_pg_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT 'a_1' < 'B_1'").scalar(), "the database does not collate as en-US"
    with Catalog.open(sample.config, db=icu_pg_url) as cat:
        first_report = cat.index()
        assert len(passes) == 6
        assert first_report.errors == 0 and first_report.runs == sample.runs + 6
        with cat.engine.connect() as conn:
            names = set(conn.execute(sa.text("SELECT name FROM runs")).scalars())
        assert set(copies) <= names and len(names) == sample.runs + 6
        assert cat.index().nothing_changed, "a reindex under en-US saw changes that are not there"
        per_run = Counter(p.run_name for p in cat.picks())
        assert per_run[first] > 0 and all(per_run[name] == per_run[first] for name in copies)
        assert sum(per_run.values()) == sample.pick_files + 6 * per_run[first]

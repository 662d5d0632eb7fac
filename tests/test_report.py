"""The campaign report (``copick_catalog.report``, ``copick-catalog report`` / ``serve``), checked in a real browser.

The page is loaded into a real headless Chromium (Debian's ``chromium``), driven over the DevTools
protocol through a pipe (``--remote-debugging-pipe``: NUL-separated JSON on file descriptors 3 and 4),
so no Python package beyond the standard library is needed and no browser is downloaded. Every number
on the page is compared with the catalog's own answers on real SQLite and PostgreSQL catalogs.

Without a Chromium the browser tests skip with a loud reason, unless ``COPICK_CATALOG_REQUIRE_BROWSER=1``
(set by ``.ci/run``; ``REQUIRE_BROWSER=1`` too), which turns that into a failure. Screenshots go to
``$COPICK_CATALOG_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repository, ignored by git).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from copick_catalog import Catalog
from copick_catalog.catalog.schema import PickableObject, RunObject
from copick_catalog.cli import main as cli_main
from copick_catalog.index import grammar
from copick_catalog.report import gather, render, write_report
from copick_catalog.sample import SampleSummary, pick_json

from .conftest import age_tree

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("COPICK_CATALOG_TEST_ARTIFACTS") or REPO / "test-artifacts")
#: ``.ci/run`` sets COPICK_CATALOG_REQUIRE_BROWSER=1 (like COPICK_CATALOG_REQUIRE_PG); REQUIRE_BROWSER=1 works too.
REQUIRE_BROWSER = "1" in (os.environ.get("COPICK_CATALOG_REQUIRE_BROWSER"), os.environ.get("REQUIRE_BROWSER"))
#: Safety net for a browser or server that hangs: long enough never to matter on a loaded machine.
DEADLINE_S = 90.0

HOSTILE_RUN = "<img src=x onerror=alert(1)>"
HOSTILE_USER = '"><svg onload=alert(2)>'
HOSTILE_PROJECT = "</title><script>alert(3)</script>"
HOSTILE_OBJECT = "</script><script>alert(4)</script>"


# ---------------------------------------------------------------------- a Chromium over the DevTools pipe


def _chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """A headless Chromium speaking the DevTools protocol over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # The child must find the pipe on fds 3 (its input) and 4 (its output). posix_spawn's dup2 actions
        # place them there without a preexec_fn (pytest-xdist workers run threads) or a shell (dash cannot
        # redirect descriptors above 9); copies above 9 first, so neither source is already 3 or 4.
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.log = profile / "chromium.log"
        args = [
            binary,
            "--headless",
            "--no-sandbox",  # containers run tests as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        try:
            self.pid = os.posix_spawn(
                binary,
                args,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, str(self.log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                    (os.POSIX_SPAWN_DUP2, high_r, 3),
                    (os.POSIX_SPAWN_DUP2, high_w, 4),
                ],
            )
        finally:
            os.close(high_r)
            os.close(high_w)
        self.status: int | None = None
        self._out = to_chrome_w
        self._in = from_chrome_r
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        try:
            self.version = self.call("Browser.getVersion")["product"]
        except BaseException:  # it never answered: leave no browser behind
            if self.poll() is None:
                os.kill(self.pid, signal.SIGKILL)
                self.wait(None)
            os.close(self._out)
            os.close(self._in)
            raise

    def poll(self) -> int | None:
        """The browser's exit status once it has exited (reaped here), else None."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return self.status

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._out, data) :]
        except BrokenPipeError:
            raise EOFError(f"Chromium exited (status {self.wait(5.0)}): {self.log_tail()}") from None

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise EOFError(f"Chromium exited (status {self.poll()}): {self.log_tail()}")
            self._buf += chunk
        message, _, self._buf = self._buf.partition(b"\0")
        return json.loads(message)  # type: ignore[no-any-return]

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str, start: int) -> dict[str, Any]:
        """The first ``method`` event of ``session`` at or after ``self.events[start]``, waiting for it."""
        deadline = time.monotonic() + DEADLINE_S
        seen = start
        while True:
            for event in self.events[seen:]:
                if event["method"] == method and event.get("sessionId") == session:
                    return event
            seen = len(self.events)
            message = self._receive(deadline)
            if "method" in message:
                self.events.append(message)

    def new_page(self) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, target, session)

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError, RuntimeError):
            self.call("Browser.close")
        if self.wait(30.0) is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait(None)
        os.close(self._out)
        os.close(self._in)


class Page:
    """One tab: navigation, script evaluation, and what went wrong in it (errors, dialogs, requests)."""

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser, self.target, self.session = browser, target, session
        self.since = len(browser.events)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.browser.call(method, params, self.session)

    def _mine(self) -> list[dict[str, Any]]:
        return [e for e in self.browser.events[self.since :] if e.get("sessionId") == self.session]

    def goto(self, url: str) -> None:
        start = len(self.browser.events)
        self.call("Page.navigate", {"url": url})
        self.browser.wait_event("Page.loadEventFired", self.session, start)
        self.wait_ready()

    def reload(self) -> None:
        start = len(self.browser.events)
        self.call("Page.reload", {"ignoreCache": True})
        self.browser.wait_event("Page.loadEventFired", self.session, start)
        self.wait_ready()

    def wait_ready(self) -> None:
        """Until the page's script has drawn the heat map (``data-ready``) or failed (``data-js-error``)."""
        deadline = time.monotonic() + DEADLINE_S
        probe = "(e => e.getAttribute('data-ready') || e.getAttribute('data-js-error'))(document.documentElement)"
        while not self.js(probe):
            if time.monotonic() > deadline:
                raise TimeoutError("the report page never finished drawing")
            time.sleep(0.05)

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"script failed in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Uncaught exceptions, console errors, browser log errors and dialogs (an ``alert`` that ran)."""
        out = []
        for e in self._mine():
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('exception', {}).get('description') or p}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p['args']]}")
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry'].get('text')} ({p['entry'].get('url', '')})")
            elif e["method"] == "Page.javascriptDialogOpening":
                out.append(f"a dialog opened: {p.get('message')!r}")
        marker = self.js("document.documentElement.getAttribute('data-js-error')")
        if marker:
            out.append(f"the page's error hook caught: {marker}")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self._mine() if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> Path:
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
        shot = self.call("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    binary = _chromium_binary()
    reason = None
    if binary is None:
        reason = "no chromium on PATH (Debian: apt-get install -y chromium)"
    else:
        try:
            instance = Browser(binary, tmp_path_factory.mktemp("chromium-profile"))
        except (OSError, EOFError, TimeoutError, RuntimeError) as exc:
            reason = f"{binary} would not start: {type(exc).__name__}: {exc}"
    if reason is not None:
        msg = f"REPORT NOT TESTED IN A BROWSER: {reason}. Set COPICK_CATALOG_REQUIRE_BROWSER=1 to make this fail."
        if REQUIRE_BROWSER:
            pytest.fail(msg)
        warnings.warn(msg, stacklevel=1)
        pytest.skip(msg)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    tab = browser.new_page()
    try:
        yield tab
    finally:
        tab.close()


# ---------------------------------------------------------------------- what the page shows, read back

CELLS_JS = (
    "[...document.querySelectorAll('#heatmap rect.cell')]"
    ".map(c => [c.dataset.run, c.dataset.object, Number(c.dataset.picks), Number(c.dataset.points)])"
)


def cells(page: Page) -> list[tuple[str, str, int, int]]:
    return [tuple(c) for c in page.js(CELLS_JS)]  # type: ignore[misc]


def select_user(page: Page, user: str | None) -> None:
    """Choose ``user`` (None: all users) in the heat map's user menu, as a person would, firing ``change``."""
    want = json.dumps(user)
    page.js(
        "(() => { const s = document.getElementById('hm-user');"
        f" const o = [...s.options].find(o => {want} === null ? o.value === '' : o.textContent === {want});"
        " if (!o) throw new Error('no such user in the menu'); s.value = o.value;"
        " s.dispatchEvent(new Event('change', {bubbles: true})); })()"
    )


def expected_all(cat: Catalog) -> dict[tuple[str, str], tuple[int, int]]:
    """Every run x configured object from the catalog's ``run_objects`` (zeros included)."""
    return {(r.run_name, r.object_name): (r.n_picks, r.n_points) for r in cat.find(RunObject)}


def expected_user(cat: Catalog, user: str) -> dict[tuple[str, str], tuple[int, int]]:
    """Every run x configured object, counted from ``user``'s pick rows."""
    grid = {key: [0, 0] for key in expected_all(cat)}
    for p in cat.picks(user_id=user):
        grid[(p.run_name, p.object_name)][0] += 1
        grid[(p.run_name, p.object_name)][1] += p.n_points
    return {k: (v[0], v[1]) for k, v in grid.items()}


def as_grid(found: list[tuple[str, str, int, int]]) -> dict[tuple[str, str], tuple[int, int]]:
    grid = {(r, o): (p, n) for r, o, p, n in found}
    assert len(grid) == len(found), "two heat map cells for the same run and object"
    return grid


def embedded_data(html: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, flags=re.S)
    assert match, "the page carries no report data"
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """The data without what depends on the moment of rendering (its time, and the week it looks back on)."""
    out = dict(data)
    out.pop("generated_at")
    out["week"] = {"rows": data["week"]["rows"]}
    return out


def card(page: Page, key: str) -> int:
    text = page.js(f"document.querySelector('.card[data-key=\"{key}\"] .n').textContent")
    return int(text.replace(",", ""))


def table_rows(page: Page, selector: str, attrs: list[str], columns: list[int]) -> list[list[Any]]:
    """For each row ``selector`` matches: its ``data-*`` ``attrs``, then the exact numbers of ``columns`` (1-based)."""
    return page.js(  # type: ignore[no-any-return]
        f"[...document.querySelectorAll({json.dumps(selector)})].map(tr => ["
        + "".join(f"tr.dataset[{json.dumps(a)}], " for a in attrs)
        + "".join(f"Number(tr.cells[{c - 1}].querySelector('[data-value]').dataset.value), " for c in columns)
        + "])"
    )


def utc_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def shot_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-") + ".png"


# ---------------------------------------------------------------------- tests


def test_report_in_browser_matches_the_catalog(
    sample: SampleSummary, db_url: str, page: Page, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    three_days_ago = time.time() - 3 * 86400
    for path in (sample.config.parent / "overlay" / grammar.RUNS_DIR / "TS_0003" / grammar.PICKS_DIR).iterdir():
        os.utime(path, (three_days_ago, three_days_ago))  # two days of work on the timeline
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
    with Catalog.open(sample.config, db=db_url, read_only=True) as cat:
        out = write_report(cat, tmp_path / "report.html")
        runs = [r.name for r in cat.runs()]
        objects = [o.name for o in cat.find(PickableObject)]
        picks = cat.picks()
        every = expected_all(cat)
        users = sorted({p.user_id for p in cat.picks()})
        user_grids = {u: expected_user(cat, u) for u in users}
        user_lacking = {u: {o: len(cat.runs_lacking(o, user_id=u)) for o in objects} for u in users}
        lacking = {o: len(cat.runs_lacking(o)) for o in objects}
        per_user: dict[str, list[int]] = {}
        per_session: dict[tuple[str, str], list[int]] = {}
        per_day: collections.Counter[str] = collections.Counter()
        for p in picks:
            for acc in (
                per_user.setdefault(p.user_id, [0, 0]),
                per_session.setdefault((p.user_id, p.session_id), [0, 0]),
            ):
                acc[0] += 1
                acc[1] += p.n_points
            assert p.mtime is not None
            per_day[utc_day(p.mtime)] += 1
        index_runs = [r.id for r in cat.last_runs(10)]
    url = out.as_uri()
    page.goto(url)
    assert page.problems() == []
    assert set(page.requests()) <= {url}, "the page fetched something besides itself"

    found = cells(page)
    assert len(found) == len(runs) * len(objects) > 0  # one cell per run and object, none twice
    assert as_grid(found) == every
    assert card(page, "runs") == len(runs)
    assert card(page, "pick files") == len(picks)
    assert card(page, "points") == sum(p.n_points for p in picks)
    assert card(page, "users") == len({p.user_id for p in picks})
    assert card(page, "objects") == len(objects)
    for obj, n in lacking.items():
        shown = page.js(
            f"document.querySelector('#lacking tr[data-object=\"{obj}\"] td:nth-child(3) span').dataset.value"
        )
        assert int(shown) == n
    user_rows = table_rows(page, "#users tr[data-user]:not([data-session])", ["user"], [2, 3])
    assert {u: [n, pts] for u, n, pts in user_rows} == per_user
    sessions = table_rows(page, "#users tr[data-session]", ["user", "session"], [4, 5])
    assert {(u, s): [n, pts] for u, s, n, pts in sessions} == per_session
    days = table_rows(page, "#progress tr[data-day]", ["day"], [2])
    assert {d: n for d, n in days} == per_day and len(per_day) == 2  # today's files and the ones made older
    assert [int(r[0]) for r in table_rows(page, "#index-runs tr[data-index-run]", ["indexRun"], [])] == index_runs

    assert len(users) >= 3
    for user in users:  # every choice in the user menu, as a person would pick it
        select_user(page, user)
        assert page.js("document.documentElement.getAttribute('data-heatmap-user')") != ""
        switched = as_grid(cells(page))
        assert switched == user_grids[user] != every, user  # the numbers changed, to this user's
        for obj, n in user_lacking[user].items():
            row = f'#hm-summary-table tr[data-object="{obj}"] td:nth-child(3)'
            assert int(page.js(f"document.querySelector('{row}').dataset.value")) == n, (user, obj)
    select_user(page, None)
    assert as_grid(cells(page)) == every
    assert page.problems() == []
    shot = page.screenshot(ARTIFACTS / shot_name(request))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _hostile_project(sample: SampleSummary, db: str) -> None:
    """A project whose names are markup: a run, a user, the project and an object, plus a broken file."""
    cfg = json.loads(sample.config.read_text())
    cfg["name"] = HOSTILE_PROJECT
    cfg["pickable_objects"].append({"name": HOSTILE_OBJECT, "is_particle": True, "label": 99})
    sample.config.write_text(json.dumps(cfg))
    picks_dir = sample.config.parent / "overlay" / grammar.RUNS_DIR / HOSTILE_RUN / grammar.PICKS_DIR
    picks_dir.mkdir(parents=True)
    (picks_dir / f"{HOSTILE_USER}_1_ribosome.json").write_text(
        pick_json("ribosome", HOSTILE_USER, "1", HOSTILE_RUN, np.ones((3, 3)), np.arange(3), np.ones(3))
    )
    (picks_dir / f"{HOSTILE_USER}_1_proteasome.json").write_text('{"broken": ')  # an error row naming it
    age_tree(sample.config.parent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the object name is one copick itself would refuse: that is the point
        with Catalog.open(sample.config, db=db) as cat:
            cat.index()
            assert HOSTILE_RUN in [r.name for r in cat.runs()]
            assert HOSTILE_USER in {p.user_id for p in cat.picks(run=HOSTILE_RUN)}
            assert any(HOSTILE_USER in e.path for e in cat.errors())


def _hostile_report(sample: SampleSummary, tmp_path: Path) -> Path:
    db = str(tmp_path / "hostile.sqlite")
    _hostile_project(sample, db)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Catalog.open(sample.config, db=db, read_only=True) as cat:
            return write_report(cat, tmp_path / "hostile.html")


def test_hostile_names_are_escaped_in_the_html(sample: SampleSummary, tmp_path: Path) -> None:
    html = _hostile_report(sample, tmp_path).read_text()
    for name in (HOSTILE_RUN, HOSTILE_USER, HOSTILE_PROJECT, HOSTILE_OBJECT):
        assert name not in html, f"{name!r} reached the page unescaped"
    for fragment in ("<img", "<svg onload", "<script>alert", "</script><script>"):
        assert fragment not in html
    data = embedded_data(html)  # and the embedded JSON still holds the names as they are
    assert HOSTILE_RUN in data["heatmap"]["runs"] and HOSTILE_USER in data["heatmap"]["users"]
    assert data["project"] == HOSTILE_PROJECT and HOSTILE_OBJECT in data["heatmap"]["objects"]
    assert html.count("<script") == 3  # the error hook, the data, the heat map: nothing else


def test_hostile_names_stay_text_in_the_browser(
    sample: SampleSummary, tmp_path: Path, page: Page, request: pytest.FixtureRequest
) -> None:
    page.goto(_hostile_report(sample, tmp_path).as_uri())
    assert page.problems() == []  # no alert() ran (a dialog would be listed), no error
    assert (
        page.js("document.querySelectorAll('img, [onerror], [onload], body script:not([nonce]):not([type])').length")
        == 0
    )
    assert page.js("document.title").startswith(HOSTILE_PROJECT)
    assert page.js("document.querySelector('header h1').textContent") == HOSTILE_PROJECT
    assert HOSTILE_USER in page.js("[...document.querySelectorAll('#hm-user option')].map(o => o.textContent)")
    objects = page.js("JSON.parse(document.getElementById('report-data').textContent).heatmap.objects")
    assert HOSTILE_OBJECT in objects
    assert sorted(o for r, o, _, _ in cells(page) if r == HOSTILE_RUN) == sorted(objects)  # a cell per object
    assert HOSTILE_USER in page.js("document.getElementById('users').textContent")
    assert HOSTILE_RUN in page.js("document.getElementById('errors').textContent")
    assert HOSTILE_OBJECT in page.js("document.getElementById('lacking').textContent")
    select_user(page, HOSTILE_USER)
    assert {(r, o) for r, o, p, _ in cells(page) if p} == {(HOSTILE_RUN, "ribosome")}
    assert page.problems() == []
    page.screenshot(ARTIFACTS / shot_name(request))


def test_pick_timeline_follows_file_times(sample: SampleSummary, db_url: str) -> None:
    """``Catalog.pick_timeline``, the aggregate behind "progress over time", against the files' own mtimes."""
    day = 86400.0
    old = time.time() - 10 * day
    moved = sorted((sample.config.parent / "overlay" / grammar.RUNS_DIR / "TS_0002" / grammar.PICKS_DIR).iterdir())
    for path in moved:
        os.utime(path, (old, old))
    expected: collections.Counter[tuple[float, str]] = collections.Counter()
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        rows = cat.picks()
        for p in rows:  # the file times the indexer stored, bucketed here by hand
            assert p.mtime is not None
            expected[(p.mtime // day * day, p.user_id)] += 1
        timeline = cat.pick_timeline(by=("user_id",))
        week = cat.pick_timeline(since=time.time() - 7 * day)
        hourly = cat.pick_timeline(bucket_s=3600.0, user_id="alice")
    assert {p.path for p in rows} >= {str(m.relative_to(sample.config.parent / "overlay")) for m in moved}
    assert {(r["bucket"], r["user_id"]): r["picks"] for r in timeline} == dict(expected)
    assert sum(r["points"] for r in timeline) == sum(p.n_points for p in rows)
    assert min(r["bucket"] for r in timeline) == old // day * day  # the files made old are their own day
    assert sum(r["picks"] for r in week) == len(rows) - len(moved)
    assert sum(r["picks"] for r in hourly) == len([p for p in rows if p.user_id == "alice"])
    assert all(r["bucket"] % 3600 == 0 for r in hourly)


def test_report_command_and_plugin(sample: SampleSummary, tmp_path: Path) -> None:
    db = str(tmp_path / "cat.sqlite")
    runner = CliRunner()
    missing = runner.invoke(cli_main, ["report", str(sample.config), "--db", db, "--out", str(tmp_path / "r.html")])
    assert missing.exit_code == 2 and "index the project once" in missing.output
    with Catalog.open(sample.config, db=db) as cat:
        cat.index()
        fresh = gather(cat)
    out = tmp_path / "sub" / "report.html"
    result = runner.invoke(cli_main, ["report", str(sample.config), "--db", db, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    html = out.read_text()
    assert comparable(embedded_data(html)) == comparable(fresh)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page links to the network"
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary file left behind
    assert render(fresh) != render(fresh)  # a fresh nonce on every page

    from copick_catalog.copick.plugin import catalog

    assert {"report", "serve"} <= set(catalog.commands)
    assert "--config" in [o for p in catalog.commands["serve"].params for o in getattr(p, "opts", [])]
    probe = (
        "import sys\nfrom copick_catalog.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert not [m for m in sys.modules if m.startswith('copick_catalog.report')], 'report imported'\n"
    )
    help_run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0, help_run.stderr
    assert "report" in help_run.stdout and "serve" in help_run.stdout


def _start_server(config: Path, db: str, port: int = 0) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "copick_catalog.cli", "serve", str(config), "--db", db, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + DEADLINE_S
    while True:  # the first line says where it listens (port 0: the system chose one)
        if select.select([proc.stdout], [], [], 1.0)[0]:
            line = proc.stdout.readline()
            if line:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"serve did not start: {proc.communicate()[1][-2000:]}")
    match = re.search(r"(http://\S+/)", line)
    assert match, line
    return proc, match.group(1)


def _get(url: str, method: str = "GET", host: str | None = None) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=DEADLINE_S) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def _write_pick(sample: SampleSummary, run: str, user: str, obj: str) -> None:
    rel = grammar.path_of(grammar.PickKey(run, user, "1", obj))
    path = sample.config.parent / "overlay" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pick_json(obj, user, "1", run, np.ones((5, 3)), np.arange(5), np.ones(5)))
    past = time.time() - 60  # not "racily clean": the index reads it once and trusts it
    os.utime(path, (past, past))


def test_serve_answers_live_and_stops_cleanly(
    sample: SampleSummary, db_url: str, page: Page, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with Catalog.open(sample.config, db=db_url) as cat:
        cat.index()
        written = write_report(cat, tmp_path / "report.html")
    proc, url = _start_server(sample.config, db_url)
    try:
        assert url.startswith("http://127.0.0.1:")
        status, headers, html = _get(url)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert comparable(embedded_data(html)) == comparable(embedded_data(written.read_text()))  # the same page
        assert _get(url + "nope")[0] == 404
        assert _get(url, method="POST")[0] == 405
        assert _get(url, host="evil.example")[0] == 403  # DNS rebinding: another site's name is refused

        page.goto(url)
        assert page.problems() == []
        assert set(page.requests()) <= {url}
        before = as_grid(cells(page))
        _write_pick(sample, "TS_0001", "dave", "ribosome")
        with Catalog.open(sample.config, db=db_url) as cat:
            cat.index()
            now = expected_all(cat)
        assert now[("TS_0001", "ribosome")][0] == before[("TS_0001", "ribosome")][0] + 1
        page.reload()
        assert as_grid(cells(page)) == now  # the reload shows the new index
        assert "dave" in page.js("[...document.querySelectorAll('#hm-user option')].map(o => o.textContent)")
        assert page.problems() == []
        page.screenshot(ARTIFACTS / shot_name(request))

        port = url.rsplit(":", 1)[1].strip("/")
        second = subprocess.run(
            [sys.executable, "-m", "copick_catalog.cli", "serve", str(sample.config), "--db", db_url, "--port", port],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
        assert second.returncode == 2
        assert "already in use" in second.stderr and len(second.stderr.strip().splitlines()) == 1, second.stderr
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            out, err = proc.communicate(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_screenshot_directory_is_ignored_by_git() -> None:
    """Screenshots land in the repository by default; git must not offer to commit them."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    probe = REPO / "test-artifacts" / "probe.png"
    check = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO, timeout=60)
    assert check.returncode == 0, "add test-artifacts/ to .gitignore"

"""The watch daemon under pressure: concurrent index runs and writers, a database that goes away,
and a root with no file events at all (S3, followed by polling)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from copick_catalog import Catalog
from copick_catalog.catalog.schema import Pick
from copick_catalog.config import load_config, save_config
from copick_catalog.daemon.claim import daemon_holder
from copick_catalog.index import grammar as layout
from copick_catalog.sample import SampleSummary

from .test_watch import Daemon, daemons, overlay_of, paths, pick_text, snapshot, wait_for

__all__ = ["daemons"]  # the fixture, re-exported for pytest

WRITER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from copick_catalog.index import grammar as layout
    from copick_catalog.sample import pick_json

    root, n = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(7)
    runs = [f"TS_{i:04d}" for i in range(1, 13)] + ["TS_writer"]
    for i in range(n):
        run = runs[i % len(runs)]
        user, session = f"w{i % 5}", str(i % 3)
        rel = layout.path_of(layout.PickKey(run, user, session, "ribosome"))
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        k = int(rng.integers(1, 20))
        text = pick_json("ribosome", user, session, run, rng.uniform(0, 100, (k, 3)).round(2),
                         np.arange(k), rng.uniform(0.5, 1, k).round(3))
        if i % 3 == 0:  # in place, in two steps, like copick
            with open(full, "w") as fh:
                fh.write(text[: len(text) // 2]); fh.flush(); time.sleep(0.01); fh.write(text[len(text) // 2:])
        else:  # atomically
            with open(full + ".tmp", "w") as fh:
                fh.write(text)
            os.replace(full + ".tmp", full)
        if i % 17 == 5:
            os.unlink(full)
        time.sleep(0.004)
""")


def test_concurrent_index_runs_daemon_and_writer(
    sample: SampleSummary, tmp_path: Path, db_url: str, daemons: Callable[..., Daemon]
) -> None:
    """Two `copick-catalog index` loops and the daemon on one catalog (SQLite file or PostgreSQL) while a
    writer adds picks: the result equals a clean full index of the final files into a fresh database."""
    d = daemons(sample.config, db_url)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(overlay_of(sample)), "160"])
    failures: list[str] = []

    def index_loop() -> None:
        while writer.poll() is None:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "copick_catalog.cli",
                    "index",
                    str(sample.config),
                    "--db",
                    db_url,
                    "--trigger",
                    "cron",
                    "--quiet",
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                failures.append(out.stderr)

    threads = [threading.Thread(target=index_loop) for _ in range(2)]
    for t in threads:
        t.start()
    assert writer.wait(60) == 0
    for t in threads:
        t.join(60)
    assert not failures, failures[0]

    with Catalog.open(sample.config, db=f"sqlite:///{tmp_path / 'fresh.sqlite'}") as fresh:
        fresh.index()
        want = snapshot(fresh)
    assert len(want["picks"]) > sample.pick_files
    with Catalog.open(sample.config, db=db_url) as cat:
        wait_for(lambda: snapshot(cat) == want, 15, "the daemon's catalog to equal a clean index", d)
        with cat.engine.connect() as conn:
            triggers = set(conn.execute(sa.text("SELECT trigger FROM index_runs")).scalars())
            assert {"cron", "watch"} <= triggers
            assert conn.execute(sa.text("SELECT count(*) FROM index_runs WHERE status = 'running'")).scalar() == 0
    assert d.stop()[0] == 0


# ------------------------------------------------------------------------------------------
# a database that goes away for a while


class TcpProxy:
    """A TCP forwarder the test can switch off (refusing and cutting connections) and on again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = _free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._conns.clear()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pg_proxy_url(pg_url: str) -> Iterator[tuple[str, TcpProxy]]:
    url = sa.make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.up()
    yield url.set(port=proxy.port).render_as_string(hide_password=False), proxy
    proxy.down()


@pytest.mark.postgres
def test_database_unreachable_then_catch_up(
    sample: SampleSummary, pg_url: str, pg_proxy_url: tuple[str, TcpProxy], daemons: Callable[..., Daemon]
) -> None:
    """PostgreSQL goes away (connections cut, new ones refused) while files change; the daemon keeps the
    changes, backs off, and catches up once the server is back."""
    proxied, proxy = pg_proxy_url
    d = daemons(sample.config, proxied)
    ov = overlay_of(sample)
    p1 = layout.path_of(layout.PickKey("TS_0002", "kim", "1", "ribosome"))
    p2 = layout.path_of(layout.PickKey("TS_0003", "kim", "1", "ribosome"))
    gone = layout.path_of(layout.PickKey("TS_0004", "alice", "1", "ribosome"))
    with Catalog.open(sample.config, db=pg_url) as cat:
        assert gone in paths(cat, Pick)
        proxy.down()
        (ov / p1).write_text(pick_text("TS_0002", "kim", "1", "ribosome", 4))
        wait_for(lambda: d.state().get("failures", 0) >= 1, 10, "a failed attempt while the database is away", d)
        wait_for(
            lambda: daemon_holder(cat.engine, cat.project_id) is None,
            10,
            "the server to drop the daemon's lock with its cut connection",
            d,
        )
        (ov / p2).write_text(pick_text("TS_0003", "kim", "1", "ribosome", 4))
        (ov / gone).unlink()
        time.sleep(1.0)
        assert d.proc.poll() is None and d.state()["pending"] >= 1
        proxy.up()
        wait_for(
            lambda: {p1, p2} <= paths(cat, Pick) and gone not in paths(cat, Pick),
            20,
            "the daemon to catch up after the database came back",
            d,
        )
        wait_for(lambda: d.state()["last_error"] is None and d.state()["pending"] == 0, 5, "a clean state", d)
        # the daemon's claim on the project died with its connection; a heartbeat takes it again
        wait_for(
            lambda: (
                (daemon_holder(cat.engine, cat.project_id) or {})
                .get("application_name", "")
                .endswith(f"pid {d.proc.pid}")
            ),
            20,
            "the daemon lock held again after the outage",
            d,
        )
    assert d.stop()[0] == 0


# ------------------------------------------------------------------------------------------
# a root with no file events: S3 (a real S3 protocol server), followed by polling


@pytest.fixture
def s3_project(sample: SampleSummary, tmp_path: Path) -> Iterator[tuple[SampleSummary, object]]:
    """The sample project with its static root uploaded to a local S3 server (moto, own process)."""
    s3fs = pytest.importorskip("s3fs")
    exe = shutil.which("moto_server")
    if exe is None:
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("moto_server did not start")
                time.sleep(0.05)
        args = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **args)
        fs.mkdir("bucket")
        static = sample.config.parent / "static"
        fs.put(str(static) + "/", "bucket/static/", recursive=True)
        cfg = load_config(sample.config)
        cfg.static_root = "s3://bucket/static"
        cfg.static_fs_args = args
        save_config(cfg, sample.config)
        yield sample, fs
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.s3
def test_s3_root_is_polled(
    s3_project: tuple[SampleSummary, object], tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    sample, fs = s3_project
    db_url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    d = daemons(sample.config, db_url, "--poll", "0.5")
    assert d.state()["roots"] == {"static": "poll", "overlay": "inotify"}
    new = layout.path_of(layout.PickKey("TS_0001", "lee", "0", "ribosome"))
    with Catalog.open(sample.config, db=db_url) as cat:
        static_before = paths(cat, Pick, "static")
        assert static_before
        fs.pipe(f"bucket/static/{new}", pick_text("TS_0001", "lee", "0", "ribosome", 5).encode())
        wait_for(lambda: new in paths(cat, Pick, "static"), 10, "a pick uploaded to S3", d)
        fs.rm(f"bucket/static/{new}")
        wait_for(lambda: paths(cat, Pick, "static") == static_before, 10, "a pick deleted from S3", d)
        # the local overlay is still followed by events meanwhile
        p = layout.path_of(layout.PickKey("TS_0001", "lee", "1", "ribosome"))
        (overlay_of(sample) / p).write_text(pick_text("TS_0001", "lee", "1", "ribosome", 2))
        wait_for(lambda: p in paths(cat, Pick, "overlay"), 10, "a local pick next to an S3 static root", d)
    assert d.stop()[0] == 0


NO_INOTIFY = {
    # Windows: inotify_simple's own imports (termios, fcntl) fail, so the package cannot be imported
    "import-fails": "import sys\nsys.modules['inotify_simple'] = None",
    # macOS and the BSDs: the package imports, the platform check says no
    "not-linux": "import copick_catalog.daemon.inotify as m\nm.PLATFORM = 'darwin'",
}


@pytest.mark.parametrize("situation", sorted(NO_INOTIFY))
def test_without_inotify_every_local_root_is_polled(
    situation: str, sample: SampleSummary, db_url: str, tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    """Where there is no inotify the daemon follows every local root by rescanning it, says so in one
    line, and changes still reach the catalog; the process holds no inotify descriptor at all."""
    from click.testing import CliRunner

    from copick_catalog.cli import main

    d = daemons(sample.config, db_url, "--poll", "0.5", prelude=NO_INOTIFY[situation])
    assert d.state()["roots"] == {"static": "poll", "overlay": "poll"}
    assert d.state()["watching"] is None
    assert d.proc is not None
    fds = Path(f"/proc/{d.proc.pid}/fd")
    assert not [fd for fd in fds.iterdir() if os.readlink(fd) == "anon_inode:inotify"]
    said = [line for line in d.log().splitlines() if "no file events here" in line]
    assert len(said) == 1, d.log()
    why = "inotify exists only on Linux (this is darwin)" if situation == "not-linux" else "inotify_simple"
    assert why in said[0] and "overlay" in said[0] and "static" in said[0] and "every 0.5 s" in said[0], said
    assert "Traceback" not in d.log()

    ov = overlay_of(sample)
    p = layout.path_of(layout.PickKey("TS_0001", "nora", "0", "ribosome"))
    with Catalog.open(sample.config, db=db_url) as cat:
        (ov / p).write_text(pick_text("TS_0001", "nora", "0", "ribosome", 3))
        wait_for(lambda: p in paths(cat, Pick), 10, "a pick found by polling", d)
        (ov / p).unlink()
        wait_for(lambda: p not in paths(cat, Pick), 10, "a deleted pick found by polling", d)
    out = CliRunner().invoke(main, ["status", str(sample.config), "--db", db_url], env={**d.env})
    text = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    assert "overlay: poll (the whole root rescanned" in text and "static: poll" in text, text
    assert d.stop()[0] == 0
    assert len([line for line in d.log().splitlines() if "no file events here" in line]) == 1

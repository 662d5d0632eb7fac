"""A real S3 protocol server for tests and benchmarks: ``moto_server`` in its own process on 127.0.0.1.

Tests get it through the session fixture :func:`s3_server` (import it into the test module); the
S3 benchmark calls :func:`start_moto_server` directly. The server runs as a separate process, not a
thread, so its request handling never competes with the code under test for the GIL, and every
request it serves is written to a log file: :meth:`S3Server.requests_since` reads that log, so
request counts in tests are real HTTP requests as the server saw them, whichever client made them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: Credentials the server accepts (moto accepts anything); distinctive so leak checks can grep for them.
ACCESS_KEY = "AKIACOPICKCATALOGTEST"
SECRET_KEY = "copick-catalog-test-secret-0f9e8d7c6b5a"
_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
#: werkzeug colours some status lines (206 Partial Content for ranged GETs) with ANSI escapes
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Request:
    """One request from the server log."""

    method: str
    path: str
    query: str
    status: int

    @property
    def kind(self) -> str:
        """``list`` (ListObjects), ``head``, ``get``, ``put``, ``delete`` or ``other``."""
        if self.method == "GET" and (
            "list-type=" in self.query or "delimiter=" in self.query or "prefix=" in self.query
        ):
            return "list"
        return {"HEAD": "head", "GET": "get", "PUT": "put", "DELETE": "delete"}.get(self.method, "other")


class S3Server:
    """A running ``moto_server`` process and helpers to fill buckets and count requests."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.endpoint = f"http://127.0.0.1:{port}"

    # -- configuration

    def fs_args(self, **extra: Any) -> dict[str, Any]:
        """fs_args for a copick config (s3fs keyword arguments), with the test credentials."""
        return {"endpoint_url": self.endpoint, "key": ACCESS_KEY, "secret": SECRET_KEY, **extra}

    def client(self, max_pool_connections: int = 32) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(max_pool_connections=max_pool_connections, request_checksum_calculation="when_required"),
        )

    def new_bucket(self, prefix: str = "t") -> str:
        """Create a fresh bucket (one per test keeps moto's per-bucket costs and state apart)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def upload_dir(self, local: Path, bucket: str, prefix: str, workers: int = 32) -> int:
        """Upload every file below ``local`` to ``s3://bucket/prefix/…`` with parallel PUTs; returns the count."""
        client = self.client(max_pool_connections=workers)
        files = [Path(d) / f for d, _dirs, names in os.walk(local) for f in names]

        def put(path: Path) -> None:
            key = f"{prefix}/{path.relative_to(local).as_posix()}" if prefix else path.relative_to(local).as_posix()
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(put, files))
        return len(files)

    # -- request counting

    def mark(self) -> int:
        """A position in the request log; pass it to :meth:`requests_since`."""
        return self.log_path.stat().st_size

    def requests_since(self, mark: int) -> list[Request]:
        """Requests the server logged after ``mark`` (it logs each one before sending the body)."""
        with open(self.log_path, "rb") as fh:
            fh.seek(mark)
            text = fh.read().decode("utf-8", "replace")
        out = []
        for line in text.splitlines():
            m = _LOG_LINE.search(_ANSI.sub("", line))
            if m:
                path, _, query = m["target"].partition("?")
                out.append(Request(m["method"], path, query, int(m["status"])))
        return out

    def count_since(self, mark: int) -> Counter[str]:
        """Requests after ``mark`` by kind (``list``, ``head``, ``get``, …) plus ``total``."""
        counts = Counter(r.kind for r in self.requests_since(mark))
        counts["total"] = sum(counts.values())
        return counts

    # -- lifecycle

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _moto_command(port: int) -> list[str]:
    """The server from the same environment as the tests (a ``moto_server`` on PATH may be another install)."""
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def start_moto_server(log_dir: Path, timeout: float = 30.0) -> S3Server:
    """Start ``moto_server`` on a free port and wait until it answers; raises RuntimeError if it cannot."""
    log_dir.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    for _attempt in range(3):  # the free port can be taken between choosing and binding it
        port = _free_port()
        log_path = log_dir / f"moto-{port}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the child process owns it
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            _moto_command(port), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        server = S3Server(proc, port, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=1):
                    return server
            except urllib.error.HTTPError:
                return server  # it answered
            except OSError as exc:
                last = exc
                time.sleep(0.1)
        server.stop()
        last = last or RuntimeError(log_path.read_text(errors="replace")[-2000:])
    raise RuntimeError(f"moto_server did not start: {last}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server process on 127.0.0.1 for the whole session (each test makes its own bucket)."""
    try:
        server = start_moto_server(tmp_path_factory.mktemp("moto"))
    except (RuntimeError, FileNotFoundError) as exc:
        pytest.fail(f"cannot start moto_server (pip install 'moto[server]'): {exc}")
    yield server
    server.stop()

"""The campaign report served live: ``GET /`` renders the page from the catalog on every load.

A small stdlib HTTP server, because a dashboard for one lab needs no framework: it opens the catalog
read-only (it never writes, so it can run as a user who may only read a shared catalog), binds to
127.0.0.1 unless told otherwise, answers ``GET /`` and nothing else (404 for other paths, 405 for
other methods), and refuses requests whose ``Host`` is not this machine's name when bound to
loopback (a web page elsewhere cannot read the report through DNS rebinding).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import CatalogError, explain
from .data import gather
from .html import csp, render

if TYPE_CHECKING:
    from ..catalog import Catalog

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class ReportServer(ThreadingHTTPServer):
    """A threading HTTP server that owns one read-only catalog and renders the report from it per request."""

    daemon_threads = True  # Ctrl-C does not wait for a browser's idle keep-alive connection

    def __init__(self, cat: Catalog, host: str, port: int) -> None:
        self.cat = cat
        # the catalog's query session is not thread-safe: requests gather one at a time, render in parallel
        self.lock = threading.Lock()
        self.loopback = host in _LOOPBACK_NAMES or host.startswith("127.")
        self.bound_host = host
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}/"

    def page(self) -> tuple[str, str]:
        """The report as of now, and the nonce its scripts carry (the CSP header names it too)."""
        with self.lock:
            data = gather(self.cat)
        nonce = secrets.token_urlsafe(18)
        return render(data, nonce=nonce), nonce


class _Handler(BaseHTTPRequestHandler):
    server: ReportServer
    server_version = "copick-catalog-report"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if not self._host_allowed():
            self._plain(HTTPStatus.FORBIDDEN, "this report answers requests for this machine's own name only\n")
            return
        if urlsplit(self.path).path != "/":
            self._plain(HTTPStatus.NOT_FOUND, "not found: the report is at /\n")
            return
        try:
            page, nonce = self.server.page()
        except Exception as exc:  # the database went away, a schema mismatch, ...: say so, keep serving
            message = explain(exc) or f"{type(exc).__name__}: {exc}"
            log.warning("report failed: %s", message, exc_info=log.isEnabledFor(logging.DEBUG))
            self._plain(HTTPStatus.SERVICE_UNAVAILABLE, f"cannot build the report: {message}\n")
            return
        self._send(
            HTTPStatus.OK,
            page.encode("utf-8"),
            "text/html; charset=utf-8",
            {"Content-Security-Policy": csp(nonce) + "; frame-ancestors 'none'"},
        )

    def _not_allowed(self) -> None:
        self._plain(HTTPStatus.METHOD_NOT_ALLOWED, "only GET is served\n", {"Allow": "GET"})

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _host_allowed(self) -> bool:
        if not self.server.loopback:
            return True
        host = self.headers.get("Host", "")
        name = urlsplit(f"//{host}").hostname or ""
        return name in _LOOPBACK_NAMES or name == self.server.bound_host

    def _plain(self, status: HTTPStatus, text: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, text.encode("utf-8"), "text/plain; charset=utf-8", headers or {})

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def make_server(cat: Catalog, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> ReportServer:
    """A :class:`ReportServer` bound to ``host:port`` (port 0: any free one), or a one-line error why not."""
    try:
        return ReportServer(cat, host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CatalogError(
                f"cannot serve on {host}:{port}: the port is already in use; stop what listens there or "
                "choose another --port"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise CatalogError(f"cannot serve on {host}:{port}: not permitted; choose a port above 1023") from None
        raise CatalogError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; check --host") from None


def serve(
    config: str | os.PathLike[str],
    db: str | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the campaign report of the project ``config`` at ``http://host:port/`` until Ctrl-C.

    The catalog is opened read-only and the page rebuilt from it on every load, so a reload shows
    what the last index (or the watch daemon) put there. Binds to 127.0.0.1 unless ``host`` says
    otherwise (``0.0.0.0`` shares it with the network: the report names every run and user).
    ``ready`` is called with the URL once the server listens (the command line prints it).
    """
    from ..catalog import Catalog

    cat = Catalog.open(config, db=db, read_only=True)
    try:
        server = make_server(cat, host, port)
    except BaseException:
        cat.close()
        raise
    try:
        if ready is not None:
            ready(server.url)
        log.info("serving the report of %s on %s", config, server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("report server stopped")
    finally:
        server.server_close()
        cat.close()


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ReportServer", "make_server", "serve"]

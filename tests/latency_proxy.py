"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time in each direction: S3 at real latency.

The local S3 server answers in well under a millisecond; AWS answers in 20-50 ms. Putting this proxy
between a client and the server (point ``endpoint_url`` at the proxy) makes each request cost a round
trip of ``2 * delay`` however fast the server is, as a long network link would: data is forwarded in
order, each chunk released ``delay`` after it arrived (like ``tc qdisc netem delay``), so many
connections in flight overlap their waits exactly as concurrent requests to S3 do, and one connection
pays the latency once per request/response, not per chunk. Connections are counted, so a benchmark can
report how many ran at once.

    with LatencyProxy("127.0.0.1", server.port, delay=0.025) as proxy:
        fs_args = {"endpoint_url": proxy.url, ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType
from typing import Any


class LatencyProxy:
    """Forward 127.0.0.1:<port> to ``host:port`` with ``delay`` seconds added each way (a thread of its own)."""

    def __init__(self, host: str, port: int, delay: float = 0.025) -> None:
        self.target = (host, port)
        self.delay = delay
        self.port = 0
        self.connections = 0
        self.active = 0
        self.peak_active = 0  # the most connections carrying a request or response at once
        self._busy = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start")
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def close(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)

    def reset_peak(self) -> None:
        self.peak_active = self._busy

    # ------------------------------------------------------------------ the event loop thread

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.active += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            self.active -= 1
            return
        state = {"busy": False}  # between a request reaching the server and its response leaving the proxy
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w, state, upstream=True),
                self._pipe(server_r, client_w, state, upstream=False),
            )
        finally:
            if state["busy"]:
                self._busy -= 1
            self.active -= 1
            for w in (client_w, server_w):
                w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict[str, bool], *, upstream: bool
    ) -> None:
        """Copy ``reader`` to ``writer``, each chunk released ``delay`` after it arrived, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                if upstream and not state["busy"]:  # a request is in flight from when it reaches the server
                    state["busy"] = True
                    self._busy += 1
                    self.peak_active = max(self.peak_active, self._busy)
                elif not upstream and state["busy"]:
                    state["busy"] = False
                    self._busy -= 1
            if writer.can_write_eof():
                writer.write_eof()

        releaser = asyncio.ensure_future(release())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay, data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(ConnectionError, OSError):
                await releaser


def _proxy_main(host: str, port: int, delay: float, conn: Any) -> None:
    with LatencyProxy(host, port, delay) as proxy:
        conn.send(proxy.port)
        while True:
            cmd = conn.recv()
            if cmd == "peak":
                conn.send(proxy.peak_active)
            elif cmd == "reset":
                proxy.reset_peak()
                conn.send(None)
            else:
                break


class ProxyProcess:
    """A :class:`LatencyProxy` in a process of its own, so its event loop never competes for the GIL of
    the process being measured (an in-process proxy thread would slow the client it delays)."""

    def __init__(self, host: str, port: int, delay: float = 0.025) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_proxy_main, args=(host, port, delay, child), daemon=True)
        self._proc.start()
        if not self._conn.poll(30):
            raise RuntimeError("the latency proxy process did not start")
        self.port: int = self._conn.recv()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def peak_active(self) -> int:
        self._conn.send("peak")
        return int(self._conn.recv())

    def reset_peak(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def close(self) -> None:
        if self._proc.is_alive():
            self._conn.send("stop")
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

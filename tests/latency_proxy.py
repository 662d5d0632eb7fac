"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time in each direction: S3 at real latency.

The local S3 server answers in well under a millisecond; AWS answers in 20-50 ms. Putting this proxy
between a client and the server (point ``endpoint_url`` at the proxy) makes each request cost a round
trip of ``2 * delay`` however fast the server is, as a long network link would: data is forwarded in
order, each chunk released ``delay`` after it arrived (like ``tc qdisc netem delay``), so many
connections in flight overlap their waits exactly as concurrent requests to S3 do, and one connection
pays the latency once per request/response, not per chunk. Connections are counted, so a benchmark can
report how many ran at once.

The proxy shares the benchmark machine's cores with the client and the server, so it is written on
asyncio's protocol layer (a timer per direction, no task or queue per chunk): its own CPU per request
must stay small next to what it measures. :class:`ProxyProcess` reports that CPU too.

    with LatencyProxy("127.0.0.1", server.port, delay=0.025) as proxy:
        fs_args = {"endpoint_url": proxy.url, ...}
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
from types import TracebackType
from typing import Any

#: Bytes queued towards one socket before the proxy stops reading from the other (bounded memory).
HIGH_WATER = 4 * 1024 * 1024


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

    # ------------------------------------------------------------------ bookkeeping for _Link

    def request_started(self) -> None:
        self._busy += 1
        self.peak_active = max(self.peak_active, self._busy)

    def request_done(self) -> None:
        self._busy -= 1

    # ------------------------------------------------------------------ the event loop thread

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(loop.create_server(lambda: _Link(self, loop).client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.close()


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: what it receives is handed to its :class:`_Link`."""

    def __init__(self, link: _Link, upstream: bool) -> None:
        self.link = link
        self.upstream = upstream  # True for the client's socket: what it receives goes to the server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.link.made(self)

    def data_received(self, data: bytes) -> None:
        self.link.received(self, data)

    def eof_received(self) -> bool:
        self.link.received(self, b"")
        return True  # half-close: keep sending what the other side still has in flight

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost(self)

    def pause_writing(self) -> None:
        self.link.other(self).pause()

    def resume_writing(self) -> None:
        self.link.other(self).resume()

    def pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class _Link:
    """One client connection and its connection to the server, with one delay line per direction.

    A delay line is a deque of (due time, bytes) and at most one timer: each chunk is written when
    its time comes, in arrival order; ``b""`` marks end of stream.
    """

    def __init__(self, proxy: LatencyProxy, loop: asyncio.AbstractEventLoop) -> None:
        self.proxy = proxy
        self.loop = loop
        self.client = _Side(self, upstream=True)
        self.server = _Side(self, upstream=False)
        self.lines: dict[bool, collections.deque[tuple[float, bytes]]] = {
            True: collections.deque(),
            False: collections.deque(),
        }
        self.timers: dict[bool, asyncio.TimerHandle | None] = {True: None, False: None}
        self.queued = {True: 0, False: 0}
        self.ended = {True: False, False: False}  # end of stream received from that direction's source
        self.busy = False  # between a request reaching the server and its response leaving the proxy
        self.closed = False

    def other(self, side: _Side) -> _Side:
        return self.server if side is self.client else self.client

    def made(self, side: _Side) -> None:
        if side is self.client:
            self.proxy.connections += 1
            self.proxy.active += 1
            self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self.loop.create_connection(lambda: self.server, *self.proxy.target)
        except OSError:
            self._close()
            return
        if self.closed:  # the client went away while we were connecting
            if self.server.transport is not None:
                self.server.transport.close()
            return
        self._flush(True)  # what the client sent meanwhile, if its time has come

    def received(self, side: _Side, data: bytes) -> None:
        up = side.upstream
        if not data:
            self.ended[up] = True
        self.lines[up].append((self.loop.time() + self.proxy.delay, data))
        self.queued[up] += len(data)
        if self.queued[up] > HIGH_WATER:
            side.pause()
        if self.timers[up] is None:
            self.timers[up] = self.loop.call_at(self.lines[up][0][0], self._flush, up)

    def _flush(self, up: bool) -> None:
        """Write every chunk of one direction whose time has come; re-arm the timer for the next."""
        self.timers[up] = None
        dest = self.server if up else self.client
        if dest.transport is None or self.closed:
            if not self.closed and self.lines[up]:  # still connecting to the server: try again when it is up
                self.timers[up] = self.loop.call_at(self.lines[up][0][0] + 0.001, self._flush, up)
            return
        line = self.lines[up]
        now = self.loop.time()
        while line and line[0][0] <= now:
            _due, data = line.popleft()
            if not data:
                if dest.transport.can_write_eof():
                    dest.transport.write_eof()
                self._maybe_close()
                continue
            dest.transport.write(data)
            self.queued[up] -= len(data)
            if up and not self.busy:
                self.busy = True
                self.proxy.request_started()
            elif not up and self.busy:
                self.busy = False
                self.proxy.request_done()
        if self.queued[up] <= HIGH_WATER // 2:
            self.other(dest).resume()
        if line:
            self.timers[up] = self.loop.call_at(line[0][0], self._flush, up)

    def _maybe_close(self) -> None:
        """Close both sockets once both directions have ended and nothing is left to deliver."""
        if self.ended[True] and self.ended[False] and not self.lines[True] and not self.lines[False]:
            self._close()

    def lost(self, side: _Side) -> None:
        """One socket went away: deliver what is still in flight towards the other, then end it there too."""
        up = side.upstream
        if not self.ended[up]:
            self.received(side, b"")
        if self.other(side).transport is None:
            self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.busy:
            self.busy = False
            self.proxy.request_done()
        self.proxy.active -= 1
        for up in (True, False):
            timer = self.timers[up]
            if timer is not None:
                timer.cancel()
            self.lines[up].clear()
        for side in (self.client, self.server):
            if side.transport is not None:
                side.transport.close()


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
    def pid(self) -> int:
        return int(self._proc.pid or 0)

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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``; 0.0 where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

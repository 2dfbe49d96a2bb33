"""A minimal keep-alive HTTP/1.1 client for the gateway's infer hop to an instance.

The hop forwards an already-encoded v2 infer body and hands the answer back as
bytes, so it needs none of a general client's machinery (URL objects, cookie
jars, redirect and decompression layers, per-request header multidicts). On two
shared cores aiohttp spent about as much CPU per request as the rest of the
gateway together; this client writes one buffer per request on a pooled
connection and lets httptools' C parser read the answer (Content-Length or
chunked). Bodies pass through untouched: compression is the gateway's business.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import cast

import httptools

log = logging.getLogger(__name__)

# one write for head + body below this size; above it, no copy of the body
_JOIN_BELOW = 64 << 10


class HopError(ConnectionError):
    """The instance could not be reached, or broke the connection before answering."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes, dict[str, str]]] | None = None
        self.closed = False
        self.keep_alive = True
        self.got_bytes = False
        self.headers_done = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []

    # ---- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HopError(f"unreadable HTTP response from the instance: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        # a response delimited by the connection's end (no length, not chunked) is complete now
        if self.headers_done and "content-length" not in self.headers \
                and "transfer-encoding" not in self.headers:
            self.on_message_complete()
            return
        self._fail(HopError(f"the instance closed the connection before answering ({exc or 'EOF'})"))

    # ---- httptools callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        waiter = self.waiter
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        result = (self.status, body, self.headers)
        self.waiter = None
        self.headers, self.chunks, self.headers_done = {}, [], False
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    # ---- use ---------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.got_bytes = False
        if len(body) < _JOIN_BELOW:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        return await self.waiter


class HttpHop:
    """A pool of keep-alive connections to one ``host:port``."""

    def __init__(self, address: str, *, connect_timeout_s: float = 5.0, max_idle: int = 64,
                 headers: Mapping[str, str] | None = None) -> None:
        """``headers``: sent on every request (the instance credential), encoded once here."""
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        fixed = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed_lines = f"Host: {address}\r\n{fixed}".encode("latin-1")
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise HopError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        return conn

    async def post(self, path: str, body: bytes, headers: Mapping[str, str],
                   timeout_s: float) -> tuple[int, bytes, dict[str, str]]:
        """POST ``body`` to ``path``; (status, body, lower-case headers). ``headers`` must
        not hold Host, Content-Length or hop-by-hop headers (this client sets its own)."""
        head = b"".join((
            b"POST ", path.encode("latin-1"), b" HTTP/1.1\r\n", self._fixed_lines,
            b"Content-Length: ", str(len(body)).encode(), b"\r\n",
            *(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items()), b"\r\n"))
        async with asyncio.timeout(timeout_s):
            while self._idle:
                conn = self._idle.pop()  # the most recently used one is the least likely stale
                if conn.closed:
                    continue
                try:
                    return self._release(conn, await conn.request(head, body))
                except HopError:
                    # the instance closed an idle connection as we reused it: try a fresh one
                    if conn.got_bytes:
                        raise
                except BaseException:
                    conn.abort()  # timeout or cancel mid-request: its state is unknown
                    raise
            conn = await self._connect()
            try:
                return self._release(conn, await conn.request(head, body))
            except BaseException:
                conn.abort()
                raise

    def _release(self, conn: _Connection, result: tuple[int, bytes, dict[str, str]]
                 ) -> tuple[int, bytes, dict[str, str]]:
        if conn.keep_alive and not conn.closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.abort()
        return result

    def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()

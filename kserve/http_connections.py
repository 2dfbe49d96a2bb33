"""uvicorn with the two bounds on HTTP connections it lacks, for the worker and the gateway.

A connection must finish its request headers within ``header_timeout_s`` of connecting
(or of starting its next request), and those headers may be at most ``max_header_bytes``;
past either it gets 408 or 431 and is closed. uvicorn's ``timeout_keep_alive`` only runs
between a response and the next request: a client that connects and then sends a byte a
minute (slowloris) holds its connection, and its file descriptor, for ever. httptools,
the parser uvicorn picks when installed, buffers a header of any length, and
``h11_max_incomplete_event_size`` only bounds the h11 parser.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT_S = 10.0
# nginx allows 4 x 8 KiB header buffers; a bearer key and tritonclient's headers take < 1 KiB
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
# an instance's default bound on one request's body (HTTP and gRPC); `inferplex up` never
# passes its workers less, so the profiler's batches to them always fit
DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20


class BoundedConfig(uvicorn.Config):
    """``uvicorn.Config`` serving with BoundedHttpProtocol and these two bounds."""

    def __init__(self, app: Any, *, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES, **kwargs: Any) -> None:
        if header_timeout_s <= 0 or max_header_bytes <= 0:
            raise ValueError("header_timeout_s and max_header_bytes must be positive")
        super().__init__(app, http=BoundedHttpProtocol,
                         h11_max_incomplete_event_size=max_header_bytes, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap on request headers."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._header_timeout_s: float = getattr(config, "header_timeout_s", DEFAULT_HEADER_TIMEOUT_S)
        self._max_header_bytes: int = getattr(config, "max_header_bytes", DEFAULT_MAX_HEADER_BYTES)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        counting = self._awaiting_headers
        super().data_received(data)
        # A chunk in which the next pipelined request began is not counted (where in it the
        # request began is unknown): the bound is then one read larger, never falsely tight.
        if counting and self._awaiting_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self._max_header_bytes:
                self._refuse(431, f"request headers are over {self._max_header_bytes} bytes; "
                                  "send fewer or shorter headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._awaiting_headers:  # the next request on a kept-alive connection
            self._awaiting_headers = True
            self._header_bytes = 0
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self._refuse(408, f"request headers did not arrive within {self._header_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        # an answer only where no other response is being written on this connection
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps({"error": message}).encode()
            self.transport.write(b"".join([
                STATUS_LINE[status], b"content-type: application/json\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body]))
        self.transport.close()

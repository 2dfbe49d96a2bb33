"""placement.http_hop against a real asyncio HTTP server on a loopback port: keep-alive
reuse, an idle connection the server closed, chunked and close-delimited answers,
a timeout, and an unreachable instance."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from placement.http_hop import HopError, HttpHop

Answer = Callable[[bytes], bytes | None]


@contextlib.asynccontextmanager
async def serving(answer: Answer, *, close_after: bool = False) -> AsyncIterator[tuple[str, list[int]]]:
    """A server that reads one request (head + Content-Length body) at a time and writes
    ``answer(body)``; None means hang. Yields its address and the connections accepted."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                out = answer(body)
                if out is None:
                    await asyncio.Event().wait()
                writer.write(out)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", accepted
    finally:
        server.close()
        await server.wait_closed()


def _fixed(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Inference-Header-Content-Length: 2\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


async def test_requests_reuse_one_keep_alive_connection_and_return_headers_lower_case() -> None:
    async with serving(_fixed) as (address, accepted):
        hop = HttpHop(address)
        for i in range(5):
            status, body, headers = await hop.post("/v2/models/m/infer", b"x%d" % i, {}, 5.0)
            assert (status, body) == (200, b"x%d" % i)
            assert headers["inference-header-content-length"] == "2"
        assert len(accepted) == 1
        hop.close()


async def test_an_idle_connection_the_server_closed_is_replaced_transparently() -> None:
    async with serving(_fixed, close_after=True) as (address, accepted):
        hop = HttpHop(address)
        assert (await hop.post("/p", b"a", {}, 5.0))[1] == b"a"
        # the server closes after each answer; the next post must not fail because of it
        assert (await hop.post("/p", b"b", {}, 5.0))[1] == b"b"
        assert len(accepted) == 2
        hop.close()


async def test_chunked_and_close_delimited_answers_are_read_whole() -> None:
    def chunked(body: bytes) -> bytes:
        return (b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")

    async with serving(chunked) as (address, _):
        hop = HttpHop(address)
        assert (await hop.post("/p", b"", {}, 5.0))[:2] == (400, b"abcde")
        hop.close()

    async with serving(lambda b: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close",
                       close_after=True) as (address, _):
        hop = HttpHop(address)
        assert (await hop.post("/p", b"", {}, 5.0))[:2] == (200, b"until-close")
        hop.close()


async def test_a_hung_instance_times_out_and_a_down_one_is_a_hop_error() -> None:
    async with serving(lambda b: None) as (address, _):
        hop = HttpHop(address)
        with pytest.raises(TimeoutError):
            await hop.post("/p", b"", {}, 0.2)
        hop.close()
    with pytest.raises(HopError, match="cannot connect"):
        await HttpHop(address).post("/p", b"", {}, 5.0)

"""Reading request bodies off ASGI: refused as soon as they pass the limit."""

from __future__ import annotations

import gzip

import pytest

from kserve.asgi import read_body
from kserve.errors import InvalidArgument, PayloadTooLarge


def _receiver(*chunks: bytes, disconnect: bool = False):
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})
    read = []

    async def receive():
        read.append(1)
        return messages[len(read) - 1]

    return receive, read


def _msg(size: int) -> str:
    return f"{size} bytes is too many"


async def test_chunks_are_joined_and_gzip_is_undone() -> None:
    receive, _ = _receiver(b"ab", b"cd")
    assert await read_body(receive, {}, 10, _msg) == b"abcd"
    receive, _ = _receiver(gzip.compress(b"x" * 100))
    assert await read_body(receive, {"content-encoding": "gzip"}, 1000, _msg) == b"x" * 100


async def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    receive, read = _receiver(b"x" * 20)
    with pytest.raises(PayloadTooLarge, match="20 bytes is too many"):
        await read_body(receive, {"content-length": "20"}, 10, _msg)
    assert read == []


async def test_undeclared_body_is_refused_at_the_chunk_that_passes_the_limit() -> None:
    receive, read = _receiver(b"x" * 6, b"x" * 6, b"x" * 6)
    with pytest.raises(PayloadTooLarge, match="12 bytes"):
        await read_body(receive, {}, 10, _msg)
    assert len(read) == 2


async def test_decompressed_size_counts_against_the_limit() -> None:
    receive, _ = _receiver(gzip.compress(b"x" * 10_000))
    with pytest.raises(PayloadTooLarge):
        await read_body(receive, {"content-encoding": "gzip"}, 1000, _msg)


async def test_client_going_away_is_a_clear_error() -> None:
    receive, _ = _receiver(b"ab", disconnect=True)
    with pytest.raises(InvalidArgument, match="disconnected"):
        await read_body(receive, {}, 10, _msg)

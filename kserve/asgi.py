"""Reading a v2 request body from ASGI, shared by the worker and the gateway."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kserve import compression
from kserve.errors import InvalidArgument, PayloadTooLarge

Receive = Callable[[], Awaitable[dict[str, Any]]]


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int,
                    too_large: Callable[[int], str]) -> bytes:
    """The whole (decompressed) body, refused as soon as it passes ``limit`` bytes:
    by its declared Content-Length before reading, else while reading, never after
    buffering it all. ``too_large(size)`` words the refusal for the caller."""
    body = await read_raw_body(receive, headers, limit, too_large)
    encoding = headers.get("content-encoding")
    if encoding:
        body = compression.decompress(body, encoding, limit)
    return body


async def read_raw_body(receive: Receive, headers: Mapping[str, str], limit: int,
                        too_large: Callable[[int], str]) -> bytes:
    """``read_body`` without decompression: the bytes as sent."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(too_large(int(declared)))
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidArgument("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(too_large(size))
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

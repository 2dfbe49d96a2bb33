"""Multipart uploads are bounded in parts, per-part headers and field size, however the body
is framed (streamed here, no Content-Length): a 400 that says what to fix, nothing staged
(real app, real embedded store)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane.upload import MAX_FIELD_BYTES, MAX_PART_HEADER_BYTES, MAX_PARTS
from tests.support import models
from tests.support.cp_app import RunningApp, blobs, leftovers

BOUNDARY = "bound"


def _part(name: str, value: bytes, extra_headers: bytes = b"", filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode() + extra_headers
            + b"\r\n" + value + b"\r\n")


async def _post_streamed(cp: RunningApp, key: str, parts: list[bytes]) -> tuple[int, str]:
    async def body() -> AsyncIterator[bytes]:  # chunked: the server learns the size only by reading
        for part in parts:
            yield part
        yield f"--{BOUNDARY}--\r\n".encode()

    r = await cp.client.post("/v1/models", content=body(), headers={
        **cp.headers(key), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    return r.status_code, r.json().get("error", "")


def _file() -> bytes:
    return _part("file", models.mlp_onnx().data, filename="m.onnx")


@pytest.mark.parametrize(("parts", "fix"), [
    ([_file()] + [_part(f"x{i}", b"1") for i in range(MAX_PARTS)], f"more than {MAX_PARTS} parts"),
    # lines short enough for python-multipart's own per-line limit, too many bytes together
    ([_part("name", b"m", b"".join(b"X-Pad%d: %s\r\n" % (i, b"a" * 3000) for i in range(3))), _file()],
     f"headers are over {MAX_PART_HEADER_BYTES} bytes"),
    ([_file(), _part("inputs", b"[" + b" " * MAX_FIELD_BYTES + b"]")], f"over {MAX_FIELD_BYTES} bytes"),
])
async def test_multipart_over_a_bound_is_refused_and_leaves_nothing_staged(
        cp: RunningApp, keys: dict[str, str], parts: list[bytes], fix: str) -> None:
    code, error = await _post_streamed(cp, keys["acme"], parts)
    assert code == 400 and fix in error, error
    assert cp.services.catalog.list("acme") == [] and blobs(cp) == [] and leftovers(cp) == []
    code, error = await _post_streamed(cp, keys["acme"], [_part("name", b"m"), _file()])
    assert code == 201, error

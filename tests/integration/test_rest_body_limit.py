"""REST bodies are bounded before FastAPI reads them (real app, real embedded store): a body
over INFERPLEX_MAX_REST_BODY_BYTES is a 413 naming the setting, refused by its declared
Content-Length before a byte is read or while a chunked body streams in, ahead of
authentication; uploads and v2 infer keep their own limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.body_limit import SETTING
from tests.support import models
from tests.support.cp_app import ADMIN_KEY, RunningApp, running_app, settings_for, upload_raw

LIMIT = 16 * 1024
CHUNK = 4096


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async with running_app(settings_for(tmp_path / "data", max_rest_body_bytes=LIMIT)) as app:
        yield app


class Chunks:
    """A request body in CHUNK-byte pieces that counts how many the server pulled."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for at in range(0, len(self.data), CHUNK):
            self.pulled += 1
            yield self.data[at:at + CHUNK]


def _admin_json(cp: RunningApp) -> dict[str, str]:
    return {**cp.headers(ADMIN_KEY), "Content-Type": "application/json"}


def _tenant_body(size: int) -> bytes:
    head = b'{"name":"big","display_name":"'
    return head + b"a" * (size - len(head) - 2) + b'"}'


async def test_declared_content_length_over_the_limit_is_refused_before_reading(cp: RunningApp) -> None:
    body = Chunks(_tenant_body(100 * LIMIT))
    # no key at all: the bound holds before authentication
    r = await cp.client.post("/admin/tenants", content=body, headers={
        "Content-Length": str(len(body.data)), "Content-Type": "application/json"})
    assert r.status_code == 413 and SETTING in r.json()["error"] and str(LIMIT) in r.json()["error"], r.text
    assert r.headers["connection"] == "close" and r.headers["x-request-id"]
    assert body.pulled == 0


async def test_chunked_body_over_the_limit_is_refused_while_streaming(cp: RunningApp) -> None:
    body = Chunks(_tenant_body(1000 * LIMIT))
    r = await cp.client.post("/admin/tenants", content=body, headers=_admin_json(cp))
    assert r.status_code == 413 and SETTING in r.json()["error"], r.text
    assert body.pulled <= LIMIT // CHUNK + 1  # stopped at the bound, not after the whole body
    r = await cp.admin("GET", "/admin/tenants")
    assert "big" not in r.text


async def test_bodies_within_the_limit_reach_the_route_whole(cp: RunningApp) -> None:
    body = Chunks(json.dumps({"name": "acme", "display_name": "x" * (LIMIT // 2)}).encode())
    r = await cp.client.post("/admin/tenants", content=body, headers=_admin_json(cp))
    assert r.status_code == 201, r.text
    assert r.json()["display_name"] == "x" * (LIMIT // 2)
    assert body.pulled > 1  # it did arrive in pieces


async def test_uploads_and_v2_infer_keep_their_own_limits(cp: RunningApp) -> None:
    key = await cp.tenant_with_key("acme")
    model = models.mlp_onnx().data
    assert len(model) > LIMIT
    r = await upload_raw(cp, key, model, name="mlp")
    assert r.status_code == 201, r.text
    r = await cp.client.post("/v2/models/nope/infer", content=b" " * (2 * LIMIT), headers=cp.headers(key))
    assert r.status_code == 404, r.text

"""The documented v2 infer route and the fast-path middleware answer alike (one code path)."""

from __future__ import annotations

import gzip
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from controlplane.gateway import HttpResult
from controlplane.redact import Redactor
from controlplane.routes.v2 import InferFastPath, router
from kserve.errors import ResourceExhausted


class _Gateway:
    redact = Redactor(lambda: ())

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, bytes, str | None]] = []

    async def authenticate(self, authorization: str | None) -> Any:
        return SimpleNamespace(tenant="acme", authorization=authorization)

    async def infer_http(self, principal: Any, name: str, version: str | None, body: bytes,
                         headers: Any) -> HttpResult:
        self.calls.append((name, version, body, headers.get("content-type")))
        return HttpResult(200, b'{"model_name":"' + name.encode() + b'"}' + b" " * 200,
                          {"content-type": "application/json"})


def _app(fast_path: bool) -> tuple[FastAPI, _Gateway]:
    app = FastAPI()
    app.include_router(router)
    if fast_path:
        app.add_middleware(InferFastPath)
    gateway = _Gateway()
    app.state.services = SimpleNamespace(gateway=gateway,
                                         settings=SimpleNamespace(max_request_bytes=10_000))
    return app, gateway


@pytest.mark.parametrize("fast_path", [False, True])
async def test_gzip_request_is_read_and_the_answer_compressed(fast_path: bool) -> None:
    app, gateway = _app(fast_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cp") as client:
        r = await client.post("/v2/models/mlp/versions/2/infer", content=gzip.compress(b'{"inputs":[]}'),
                              headers={"content-encoding": "gzip", "accept-encoding": "gzip",
                                       "content-type": "application/json", "authorization": "Bearer k"})
    assert r.status_code == 200, r.text
    assert r.headers["content-encoding"] == "gzip"
    assert r.json()["model_name"] == "mlp"  # httpx undoes the gzip
    assert gateway.calls == [("mlp", "2", b'{"inputs":[]}', "application/json")]


async def test_an_error_with_a_retry_hint_answers_retry_after_in_whole_seconds() -> None:
    app, gateway = _app(fast_path=True)

    async def refuse(*_: Any) -> HttpResult:
        raise ResourceExhausted("over the rate", retry_after_s=0.2)

    gateway.infer_http = refuse  # type: ignore[method-assign]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cp") as client:
        r = await client.post("/v2/models/mlp/infer", content=b"{}")
    assert r.status_code == 429 and r.json() == {"error": "over the rate"}
    assert r.headers["retry-after"] == "1"
    assert ResourceExhausted("x", retry_after_s=2.6).retry_after_header() == "3"
    assert ResourceExhausted("x").retry_after_header() is None

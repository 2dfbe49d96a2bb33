"""Two ``Authorization`` headers (or two ``authorization`` gRPC metadata entries) are refused
on every route alike. Before, the infer fast path took the last one and every other route,
and gRPC, the first: one request could act as two callers depending on where it went."""

from __future__ import annotations

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tenants.keys import TWO_KEYS
from tests.support.cp_app import ADMIN_KEY, RunningApp

ROUTES = [
    ("GET", "/v1/models"),                     # controlplane/deps.py
    ("GET", "/admin/tenants"),                 # an admin route, same dependency
    ("GET", "/v2/models/stats"),               # a v2 route solved by FastAPI
    ("GET", "/v2/models/mlp/config"),
    ("POST", "/v2/models/mlp/infer"),          # the infer fast path (before routing)
    ("POST", "/v2/models/mlp/versions/1/infer"),
]


def _two(first: str, second: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_two_authorization_headers_are_refused_whichever_is_valid(
        cp: RunningApp, keys: dict[str, str], method: str, path: str) -> None:
    body = b'{"inputs": []}' if method == "POST" else None
    for first, second in ((keys["acme"], "ipx_nobody"), ("ipx_nobody", keys["acme"]),
                          (keys["acme"], keys["globex"]), (ADMIN_KEY, keys["acme"]),
                          (keys["acme"], keys["acme"])):
        r = await cp.client.request(method, path, content=body, headers=httpx.Headers(_two(first, second)))
        assert r.status_code == 401, (first, second, r.status_code, r.text)
        assert r.json() == {"error": TWO_KEYS}


async def test_one_authorization_header_still_works(cp: RunningApp, keys: dict[str, str]) -> None:
    r = await cp.client.get("/v1/models", headers=cp.headers(keys["acme"]))
    assert r.status_code == 200, r.text
    r = await cp.client.post("/v2/models/mlp/infer", content=b'{"inputs": []}', headers=cp.headers(keys["acme"]))
    assert r.status_code == 404 and "mlp" in r.json()["error"], r.text  # the key counted: no such model


async def test_two_authorization_metadata_entries_are_refused_over_grpc(
        cp: RunningApp, keys: dict[str, str]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.settings.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        one = (("authorization", f"Bearer {keys['acme']}"),)
        await stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), metadata=one)  # works
        for first, second in ((keys["acme"], "ipx_nobody"), ("ipx_nobody", keys["acme"]),
                              (keys["acme"], keys["globex"])):
            metadata = (("authorization", f"Bearer {first}"), ("authorization", f"Bearer {second}"))
            for call, request in ((stub.RepositoryIndex, service_pb2.RepositoryIndexRequest()),
                                  (stub.ModelInfer, service_pb2.ModelInferRequest(model_name="mlp")),
                                  (stub.ModelMetadata, service_pb2.ModelMetadataRequest(name="mlp"))):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(request, metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value
                assert info.value.details() == TWO_KEYS

"""The gRPC gateway limits what tenants send, not what the model answers (as over HTTP)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from controlplane.grpc_gateway import start_grpc_gateway
from controlplane.redact import Redactor
from tests.support.procs import free_port

LIMIT = 4096


class _Gateway:
    redact = Redactor(lambda: ())

    async def authenticate(self, authorization: str | None) -> Any:
        return SimpleNamespace(tenant="acme")

    async def infer_grpc(self, principal: Any, request: Any) -> service_pb2.ModelInferResponse:
        response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1")
        response.raw_output_contents.append(b"\x00" * (4 * LIMIT))  # an output over the request limit
        return response


async def test_a_response_larger_than_the_request_limit_is_delivered() -> None:
    port = free_port()
    services = SimpleNamespace(gateway=_Gateway(), settings=SimpleNamespace(
        host="127.0.0.1", grpc_port=port, max_request_bytes=LIMIT))
    server = await start_grpc_gateway(services)  # type: ignore[arg-type]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            response = await stub.ModelInfer(service_pb2.ModelInferRequest(model_name="mlp"),
                                             metadata=(("authorization", "Bearer k"),), timeout=30)
            assert len(response.raw_output_contents[0]) == 4 * LIMIT
            # the request limit itself still holds
            big = service_pb2.ModelInferRequest(model_name="mlp", raw_input_contents=[b"\x00" * (2 * LIMIT)])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ModelInfer(big, metadata=(("authorization", "Bearer k"),), timeout=30)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(grace=None)

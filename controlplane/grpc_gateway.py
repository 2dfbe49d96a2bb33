"""KServe v2 gRPC endpoints for tenants: a thin servicer over ``controlplane.gateway``.

The key travels in the ``authorization`` metadata (``Bearer <key>``), which is what
tritonclient sends for ``headers={"authorization": ...}``. Errors abort with the
gRPC code of the kserve error and its message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from controlplane.gateway import REPOSITORY_DENIED, Gateway
from controlplane.redact import CALLER, REQUEST_ID, REQUEST_ID_HEADER, Redactor, new_request_id
from kserve.errors import InferplexError, PermissionDenied
from tenants.auth import Principal
from tenants.keys import one_authorization

if TYPE_CHECKING:
    from controlplane.services import Services

log = logging.getLogger(__name__)

T = TypeVar("T")
Context = grpc.aio.ServicerContext


def _authorization(context: Context) -> str | None:
    """The one ``authorization`` entry; two are refused, as over HTTP."""
    return one_authorization(value if isinstance(value, str) else value.decode()
                             for key, value in context.invocation_metadata() or ()
                             if key.lower() == "authorization")


async def _answer(context: Context, call: Callable[[], Awaitable[T]], redact: Redactor,
                  keep: str = "") -> T:
    """Run one RPC under its own request id; errors abort with what the caller may read.
    ``keep``: the model name the caller sent."""
    rid = new_request_id()
    rid_token, caller_token = REQUEST_ID.set(rid), CALLER.set(None)
    try:
        return await call()
    except InferplexError as exc:
        shown = redact.error(exc, keep=(keep,) if keep else ())
        context.set_trailing_metadata(((REQUEST_ID_HEADER, rid),))
        await context.abort(shown.grpc_code, shown.message)
        raise  # abort raises; this keeps type checkers honest
    finally:
        REQUEST_ID.reset(rid_token)
        CALLER.reset(caller_token)


class GatewayServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def _tenant(self, context: Context) -> Principal:
        return await self.gateway.authenticate(_authorization(context))

    # ---- open ---------------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Context) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Context) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=await self.gateway.server_ready())

    async def ServerMetadata(self, request: Any, context: Context) -> service_pb2.ServerMetadataResponse:
        md = self.gateway.server_metadata()
        return service_pb2.ServerMetadataResponse(name=md["name"], version=md["version"],
                                                  extensions=md["extensions"])

    # ---- per model ------------------------------------------------------------------------

    async def ModelReady(self, request: service_pb2.ModelReadyRequest,
                         context: Context) -> service_pb2.ModelReadyResponse:
        async def call() -> service_pb2.ModelReadyResponse:
            p = await self._tenant(context)
            return service_pb2.ModelReadyResponse(
                ready=self.gateway.model_ready(p, request.name, request.version))
        return await _answer(context, call, self.gateway.redact, request.name)

    async def ModelMetadata(self, request: service_pb2.ModelMetadataRequest,
                            context: Context) -> service_pb2.ModelMetadataResponse:
        async def call() -> service_pb2.ModelMetadataResponse:
            p = await self._tenant(context)
            md = self.gateway.model_metadata(p, request.name, request.version)
            return json_format.ParseDict(md, service_pb2.ModelMetadataResponse())
        return await _answer(context, call, self.gateway.redact, request.name)

    async def ModelConfig(self, request: service_pb2.ModelConfigRequest,
                          context: Context) -> service_pb2.ModelConfigResponse:
        async def call() -> service_pb2.ModelConfigResponse:
            p = await self._tenant(context)
            cfg = self.gateway.model_config(p, request.name, request.version)
            pb = json_format.ParseDict(cfg, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
            return service_pb2.ModelConfigResponse(config=pb)
        return await _answer(context, call, self.gateway.redact, request.name)

    async def ModelStatistics(self, request: service_pb2.ModelStatisticsRequest,
                              context: Context) -> service_pb2.ModelStatisticsResponse:
        async def call() -> service_pb2.ModelStatisticsResponse:
            p = await self._tenant(context)
            stats = await self.gateway.statistics(p, request.name or None, request.version or None)
            return json_format.ParseDict(stats, service_pb2.ModelStatisticsResponse(),
                                         ignore_unknown_fields=True)
        return await _answer(context, call, self.gateway.redact, request.name)

    async def RepositoryIndex(self, request: service_pb2.RepositoryIndexRequest,
                              context: Context) -> service_pb2.RepositoryIndexResponse:
        async def call() -> service_pb2.RepositoryIndexResponse:
            p = await self._tenant(context)
            rows = self.gateway.repository_index(p)
            return service_pb2.RepositoryIndexResponse(
                models=[service_pb2.RepositoryIndexResponse.ModelIndex(**r) for r in rows])
        return await _answer(context, call, self.gateway.redact)

    async def RepositoryModelLoad(self, request: Any, context: Context) -> Any:
        async def call() -> Any:
            await self._tenant(context)
            raise PermissionDenied(REPOSITORY_DENIED)
        return await _answer(context, call, self.gateway.redact)

    async def RepositoryModelUnload(self, request: Any, context: Context) -> Any:
        return await self.RepositoryModelLoad(request, context)

    async def ModelInfer(self, request: service_pb2.ModelInferRequest,
                         context: Context) -> service_pb2.ModelInferResponse:
        name = request.model_name  # the gateway swaps in the instance-level name

        async def call() -> service_pb2.ModelInferResponse:
            p = await self._tenant(context)
            return await self.gateway.infer_grpc(p, request)
        return await _answer(context, call, self.gateway.redact, name)


async def start_grpc_gateway(services: Services) -> grpc.aio.Server:
    settings = services.settings
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", -1),  # responses are bounded by the model, as over HTTP
        ("grpc.so_reuseport", 0),  # a port some other server holds is an error, not a shared port
    ])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(GatewayServicer(services.gateway), server)
    address = f"{settings.host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot bind the v2 gRPC gateway to {address}; pick another --grpc-port")
    await server.start()
    log.info("v2 gRPC gateway listening on %s", address)
    return server

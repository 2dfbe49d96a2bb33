"""KServe v2 gRPC endpoints on ``grpc.aio`` with the service definition tritonclient
ships (``GRPCInferenceService``); unimplemented extensions (shared memory, trace,
log settings) answer UNIMPLEMENTED via the generated base class."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from kserve import grpc_codec
from kserve.errors import InferplexError, InvalidArgument
from worker.service import WorkerService

log = logging.getLogger(__name__)

T = TypeVar("T")


def server_options(max_request_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", -1),  # responses are bounded by the model, not the client
    ]


async def _guard(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except InferplexError as exc:
        await context.abort(exc.grpc_code, exc.message)
    except Exception as exc:
        log.exception("unhandled error in gRPC handler")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc.__class__.__name__}: {exc}")
    raise AssertionError("unreachable")  # abort raises


class WorkerServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: WorkerService) -> None:
        self.service = service

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.service.repository.is_ready(request.name, request.version))

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        meta = self.service.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        async def call() -> pb.ModelMetadataResponse:
            meta = self.service.model_metadata(request.name, request.version)
            return json_format.ParseDict(meta, pb.ModelMetadataResponse())

        return await _guard(context, call)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        async def call() -> pb.ModelConfigResponse:
            return pb.ModelConfigResponse(config=self.service.model_config(request.name, request.version))

        return await _guard(context, call)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        async def call() -> pb.ModelInferResponse:
            decoded = grpc_codec.decode_infer_request(request)
            response = await self.service.infer(decoded)
            return grpc_codec.encode_infer_response(response)

        return await _guard(context, call)

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        async def call() -> pb.ModelStatisticsResponse:
            stats = self.service.statistics(request.name, request.version)
            return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

        return await _guard(context, call)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        rows = self.service.index(request.ready)
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(name=r.name, version=r.version, state=r.state, reason=r.reason)
            for r in rows
        ])

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Any) -> pb.RepositoryModelLoadResponse:
        async def call() -> pb.RepositoryModelLoadResponse:
            config: str | None = None
            files: dict[str, bytes] = {}
            for key, param in request.parameters.items():
                kind = param.WhichOneof("parameter_choice")
                if key == "config":
                    if kind != "string_param":
                        raise InvalidArgument(f"failed to load '{request.model_name}': 'config' must be a string parameter")
                    config = param.string_param
                elif key.startswith("file:"):
                    if kind != "bytes_param":
                        raise InvalidArgument(f"failed to load '{request.model_name}': '{key}' must be a bytes parameter")
                    files[key] = param.bytes_param
            await self.service.load(request.model_name, config, files)
            return pb.RepositoryModelLoadResponse()

        return await _guard(context, call)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Any) -> pb.RepositoryModelUnloadResponse:
        async def call() -> pb.RepositoryModelUnloadResponse:
            await self.service.unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await _guard(context, call)


def build_server(service: WorkerService, host: str, port: int, max_request_bytes: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=server_options(max_request_bytes))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(WorkerServicer(service), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    return server

"""KServe v2 gRPC endpoints with the service definition tritonclient ships
(``GRPCInferenceService``); unimplemented extensions (shared memory, trace, log
settings) answer UNIMPLEMENTED via the generated base class.

Two servers, chosen by ``--grpc-server``: ``threads`` (default) is grpc's sync server,
whose handler threads decode, hand the batch straight to the executor thread and
encode, with no event loop in between; ``aio`` is grpc.aio on the worker's event loop.
On a shared 2-core machine the sync server's round trip is the cheaper one (see
``bench/results/worker_overhead.md``); aio stays for comparison. Both share the
translation below and the executor, so one batch still runs at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from kserve import grpc_codec
from kserve.errors import InferplexError, InvalidArgument, PayloadTooLarge
from modelfiles.artifacts import ARTIFACT_PARAMETER
from worker.restricted import AioGrpcRestriction, GrpcRestriction, ProtocolRules
from worker.service import LOAD_ENVELOPE_BYTES, WorkerService, check_model_files

log = logging.getLogger(__name__)

T = TypeVar("T")
MODES = ("threads", "aio")
# Handler threads for the sync server: enough that slow RPCs (a load) and queued
# infers do not block health checks; the executor still runs one batch at a time.
HANDLER_THREADS = 16


def server_options(max_request_bytes: int, max_model_bytes: int) -> list[tuple[str, int]]:
    # The transport admits the larger of the two; each handler enforces its own limit.
    return [
        ("grpc.max_receive_message_length", max(max_request_bytes, max_model_bytes + LOAD_ENVELOPE_BYTES)),
        ("grpc.max_send_message_length", -1),  # responses are bounded by the model, not the client
        # gRPC sets SO_REUSEPORT by default: a second server on the same port would bind too
        # and take half the connections instead of failing
        ("grpc.so_reuseport", 0),
    ]


class Limits:
    def __init__(self, max_request_bytes: int, max_model_bytes: int) -> None:
        self.max_request_bytes = max_request_bytes
        self.max_model_bytes = max_model_bytes

    def check_infer(self, request: pb.ModelInferRequest) -> None:
        size = request.ByteSize()
        if size > self.max_request_bytes:
            raise PayloadTooLarge(
                f"inference request of {size} bytes is over the worker's limit of {self.max_request_bytes} "
                "bytes (--max-request-bytes); send a smaller batch or raise the limit"
            )

    def check_load(self, name: str, files: dict[str, bytes]) -> None:
        check_model_files(name, files, self.max_model_bytes)


# ---------------------------------------------------------------- translation (shared)

def _metadata(service: WorkerService, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
    return json_format.ParseDict(service.model_metadata(request.name, request.version), pb.ModelMetadataResponse())


def _server_metadata(service: WorkerService) -> pb.ServerMetadataResponse:
    meta = service.server_metadata()
    return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])


def _statistics(service: WorkerService, request: pb.ModelStatisticsRequest) -> pb.ModelStatisticsResponse:
    stats = service.statistics(request.name, request.version)
    return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())


def _index(service: WorkerService, request: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(models=[
        pb.RepositoryIndexResponse.ModelIndex(name=r.name, version=r.version, state=r.state, reason=r.reason)
        for r in service.index(request.ready)
    ])


def _load_args(request: pb.RepositoryModelLoadRequest) -> tuple[str | None, dict[str, bytes], str | None]:
    config: str | None = None
    digest: str | None = None
    files: dict[str, bytes] = {}
    for key, param in request.parameters.items():
        kind = param.WhichOneof("parameter_choice")
        if key == "config":
            if kind != "string_param":
                raise InvalidArgument(f"failed to load '{request.model_name}': 'config' must be a string parameter")
            config = param.string_param
        elif key == ARTIFACT_PARAMETER:
            if kind != "string_param":
                raise InvalidArgument(f"failed to load '{request.model_name}': '{key}' must be a string parameter")
            digest = param.string_param
        elif key.startswith("file:"):
            if kind != "bytes_param":
                raise InvalidArgument(f"failed to load '{request.model_name}': '{key}' must be a bytes parameter")
            files[key] = param.bytes_param
    return config, files, digest


_LIVE = pb.ServerLiveResponse(live=True)
_LOADED = pb.RepositoryModelLoadResponse()
_UNLOADED = pb.RepositoryModelUnloadResponse()


# ---------------------------------------------------------------- sync server (default)

def _guard(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    try:
        return call()
    except InferplexError as exc:
        context.abort(exc.grpc_code, exc.message)
    except Exception as exc:
        log.exception("unhandled error in gRPC handler")
        context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc.__class__.__name__}: {exc}")
    raise AssertionError("unreachable")  # abort raises


class WorkerServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Runs on grpc's handler threads; repository changes go to the event loop."""

    def __init__(self, service: WorkerService, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.limits = limits
        self.loop = loop

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return _LIVE

    def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready)

    def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.service.repository.is_ready(request.name, request.version))

    def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return _server_metadata(self.service)

    def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return _guard(context, lambda: _metadata(self.service, request))

    def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return _guard(context, lambda: pb.ModelConfigResponse(
            config=self.service.model_config(request.name, request.version)))

    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        def call() -> pb.ModelInferResponse:
            self.limits.check_infer(request)
            response = self.service.infer_blocking(grpc_codec.parse_infer_request(request),
                                                   context.time_remaining())
            return grpc_codec.encode_infer_response(response)

        return _guard(context, call)

    def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        return _guard(context, lambda: _statistics(self.service, request))

    def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        return _index(self.service, request)

    def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                            context: Any) -> pb.RepositoryModelLoadResponse:
        def call() -> pb.RepositoryModelLoadResponse:
            config, files, digest = _load_args(request)
            self.limits.check_load(request.model_name, files)
            self._on_loop(self.service.load(request.model_name, config, files, digest))
            return _LOADED

        return _guard(context, call)

    def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                              context: Any) -> pb.RepositoryModelUnloadResponse:
        return _guard(context, lambda: (self._on_loop(self.service.unload(request.model_name)), _UNLOADED)[1])


# ---------------------------------------------------------------- grpc.aio server

async def _aguard(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except InferplexError as exc:
        await context.abort(exc.grpc_code, exc.message)
    except Exception as exc:
        log.exception("unhandled error in gRPC handler")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc.__class__.__name__}: {exc}")
    raise AssertionError("unreachable")  # abort raises


async def _done(value: T) -> T:
    return value


class AioWorkerServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: WorkerService, limits: Limits) -> None:
        self.service = service
        self.limits = limits

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return _LIVE

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.service.repository.is_ready(request.name, request.version))

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return _server_metadata(self.service)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return await _aguard(context, lambda: _done(_metadata(self.service, request)))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return await _aguard(context, lambda: _done(pb.ModelConfigResponse(
            config=self.service.model_config(request.name, request.version))))

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        async def call() -> pb.ModelInferResponse:
            self.limits.check_infer(request)
            response = await self.service.infer(grpc_codec.parse_infer_request(request),
                                                context.time_remaining())
            return grpc_codec.encode_infer_response(response)

        return await _aguard(context, call)

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        return await _aguard(context, lambda: _done(_statistics(self.service, request)))

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        return _index(self.service, request)

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Any) -> pb.RepositoryModelLoadResponse:
        async def call() -> pb.RepositoryModelLoadResponse:
            config, files, digest = _load_args(request)
            self.limits.check_load(request.model_name, files)
            await self.service.load(request.model_name, config, files, digest)
            return _LOADED

        return await _aguard(context, call)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Any) -> pb.RepositoryModelUnloadResponse:
        async def call() -> pb.RepositoryModelUnloadResponse:
            await self.service.unload(request.model_name)
            return _UNLOADED

        return await _aguard(context, call)


# ---------------------------------------------------------------- building and running

class GrpcServer(Protocol):
    async def start(self) -> None: ...
    async def stop(self, grace: float) -> None: ...


class _ThreadedServer:
    def __init__(self, server: grpc.Server) -> None:
        self._server = server

    async def start(self) -> None:
        self._server.start()

    async def stop(self, grace: float) -> None:
        await asyncio.to_thread(self._server.stop(grace).wait)


def build_server(service: WorkerService, host: str, port: int, max_request_bytes: int,
                 max_model_bytes: int, mode: str = "threads",
                 restricted: ProtocolRules | None = None) -> GrpcServer:
    """Call on the worker's event loop (the threaded server sends repository changes to it).
    ``restricted``: the --grpc-restricted-protocol rules, checked before any handler runs
    (no interceptor at all when there are none, so an open worker pays nothing)."""
    limits = Limits(max_request_bytes, max_model_bytes)
    options = server_options(max_request_bytes, max_model_bytes)
    server: Any
    if mode == "threads":
        interceptors: list[Any] = [GrpcRestriction(restricted)] if restricted else []
        server = grpc.server(ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="inferplex-grpc"),
                             options=options, interceptors=interceptors)
        servicer: Any = WorkerServicer(service, limits, asyncio.get_running_loop())
        wrapped: GrpcServer = _ThreadedServer(server)
    elif mode == "aio":
        interceptors = [AioGrpcRestriction(restricted)] if restricted else []
        server = grpc.aio.server(options=options, interceptors=interceptors)
        servicer = AioWorkerServicer(service, limits)
        wrapped = server
    else:
        raise ValueError(f"unknown gRPC server mode {mode!r}; use one of {', '.join(MODES)}")
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    return wrapped

"""``inferplex worker``: the embedded Triton-compatible inference worker.

HTTP (uvicorn, bare ASGI app) runs on the event loop, gRPC on its own handler threads
(or on the loop with --grpc-server aio); inference runs on the executor thread, loads
on a helper thread.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from kserve.errors import InferplexError
from kserve.http_connections import (
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    BoundedConfig,
)
from kserve.jsonbody import MAX_JSON_VALUES, JsonBound
from kserve.sizes import size_arg
from worker import registration, restricted
from worker.affinity import parse_cpus, pin_to
from worker.artifact_cache import ArtifactCache
from worker.demo import simple_model
from worker.executor import Executor
from worker.memory import MemoryBudget, physical_memory_bytes, steady_allocator
from worker.repository import ModelRepository
from worker.restricted import Restrictions
from worker.sandbox.client import HostLimits
from worker.sandbox.confine import SandboxUnavailable
from worker.scratch import ScratchDir, default_root
from worker.service import DEFAULT_MAX_EXEC_S, ServerInfo, WorkerService

log = logging.getLogger(__name__)

DEFAULT_MAX_MODEL_BYTES = 2**30
DEFAULT_CACHE_BYTES = 2**30


@dataclass
class WorkerOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    memory_budget: int = 0  # 0: the machine's physical memory
    threads: int = 1
    model_repository: Path | None = None
    model_control_mode: str = "explicit"
    load_models: list[str] = field(default_factory=list)
    device: str = "cpu"
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    # the artifact cache's disk budget (0: off), and the root of the per-worker folders
    cache_bytes: int = DEFAULT_CACHE_BYTES
    scratch_dir: Path | None = None  # None: scratch.default_root()
    max_json_values: int = MAX_JSON_VALUES
    grpc_server: str = "threads"
    instance_id: str = ""  # what it registers and logs under (registration.instance_id)
    demo: bool = False
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    # model hosts: execution and load bounds, quarantine (worker/sandbox/client.py)
    max_exec_s: float = DEFAULT_MAX_EXEC_S
    exec_margin_s: float = 0.010
    load_timeout_s: float = 120.0
    quarantine_after: int = 3
    # Triton's --http-restricted-api / --grpc-restricted-protocol (worker/restricted.py)
    restrictions: Restrictions = field(default_factory=Restrictions)
    # called once the worker serves and its startup models are loaded (e.g. control-plane registration)
    on_ready: list[Callable[[WorkerService], Awaitable[None]]] = field(default_factory=list)
    # called when the worker stops, before its servers close (e.g. deregistration)
    on_stop: list[Callable[[WorkerService], Awaitable[None]]] = field(default_factory=list)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("worker", help="run the embedded Triton-compatible inference worker",
                              description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=8000, help="KServe v2 HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="KServe v2 gRPC port (default 8001)")
    p.add_argument("--memory-budget", type=size_arg, default=0,
                   help="bytes the loaded models may use, e.g. 4GiB or 4000000000 "
                        "(default: the machine's physical memory)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per inference (default 1)")
    p.add_argument("--cpus", default=None, metavar="LIST",
                   help="pin the worker to these CPUs, e.g. '1' or '2-3' (default: no pinning)")
    p.add_argument("--model-repository", type=Path, default=None,
                   help="a Triton-layout model repository directory (<model>/config.pbtxt, <model>/<version>/model.*)")
    p.add_argument("--model-control-mode", choices=["none", "explicit"], default="explicit",
                   help="none: load every model in --model-repository at start, refuse load/unload; "
                        "explicit (default): load and unload through the repository API")
    p.add_argument("--load-model", action="append", default=[], metavar="NAME",
                   help="in explicit mode, load this model from --model-repository at start (repeatable; '*' = all)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda:N")
    p.add_argument("--max-request-bytes", type=size_arg, default=DEFAULT_MAX_REQUEST_BYTES,
                   help="largest inference request accepted, HTTP body or gRPC message (default 64MiB)")
    p.add_argument("--max-model-bytes", type=size_arg, default=DEFAULT_MAX_MODEL_BYTES,
                   help="largest repository load accepted: the gRPC message, or the HTTP body with its "
                        "files base64-encoded, allowed 4/3 of this (default 1GiB)")
    p.add_argument("--cache-bytes", type=size_arg, default=DEFAULT_CACHE_BYTES,
                   help="disk the local artifact cache may use for the files of unloaded models, so "
                        "loading one again needs no transfer, e.g. 512MiB; 0 turns it off (default 1GiB)")
    p.add_argument("--scratch-dir", type=Path, default=None, metavar="DIR",
                   help="folder under which the worker keeps its own locked folder (the copies of the "
                        "models it loads, the artifact cache); folders of workers that died there are "
                        "removed at start (default: <temp dir>/inferplex-worker-<uid>)")
    p.add_argument("--max-json-values", type=int, default=MAX_JSON_VALUES, metavar="N",
                   help="most values (array elements, object keys and values) the JSON part of an HTTP "
                        f"request may hold, counted before it is parsed (default {MAX_JSON_VALUES}); binary "
                        "tensor data is not counted")
    p.add_argument("--grpc-server", choices=["threads", "aio"], default="threads",
                   help="threads (default): grpc's sync server, handler threads hand batches straight to the "
                        "executor; aio: grpc.aio on the event loop (slower per call, kept for comparison)")
    p.add_argument("--instance-id", default="",
                   help="id this worker registers with the control plane under "
                        "(default w-<advertised host>-<grpc port>)")
    p.add_argument("--demo", action="store_true", help="serve the built-in 'simple' model (Triton's example)")
    p.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S, metavar="SECONDS",
                   help="close an HTTP connection that has not sent its whole request headers this long "
                        f"after connecting or starting a request (default {DEFAULT_HEADER_TIMEOUT_S:g})")
    p.add_argument("--max-header-bytes", type=size_arg, default=DEFAULT_MAX_HEADER_BYTES,
                   help=f"largest HTTP request headers accepted (default {DEFAULT_MAX_HEADER_BYTES // 1024}KiB)")
    p.add_argument("--max-exec-time", type=float, default=DEFAULT_MAX_EXEC_S, metavar="SECONDS",
                   help="longest one execution may run when its request carries no shorter deadline "
                        f"(default {DEFAULT_MAX_EXEC_S:g})")
    p.add_argument("--exec-margin-ms", type=float, default=10.0,
                   help="how long past its request's deadline an execution may run before its model "
                        "host is stopped (default 10)")
    p.add_argument("--load-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="longest a model may take to load in its host (default 120)")
    p.add_argument("--quarantine-after", type=int, default=3, metavar="N",
                   help="stop restarting a model whose executions were stopped at their deadline "
                        "N times in a row (default 3)")
    restricted.add_arguments(p)
    registration.add_arguments(p)
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> WorkerOptions:
    return WorkerOptions(
        host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        memory_budget=args.memory_budget, threads=args.threads, model_repository=args.model_repository,
        model_control_mode=args.model_control_mode, load_models=list(args.load_model), device=args.device,
        max_request_bytes=args.max_request_bytes, max_model_bytes=args.max_model_bytes,
        cache_bytes=args.cache_bytes, scratch_dir=args.scratch_dir,
        max_json_values=args.max_json_values,
        grpc_server=args.grpc_server, instance_id=registration.instance_id(args), demo=args.demo,
        header_timeout_s=args.header_timeout, max_header_bytes=args.max_header_bytes,
        restrictions=restricted.restrictions_from_args(args),
        max_exec_s=args.max_exec_time, exec_margin_s=args.exec_margin_ms / 1000,
        load_timeout_s=args.load_timeout, quarantine_after=args.quarantine_after,
    )


def run(args: argparse.Namespace) -> int:
    if args.cpus:
        try:
            pin_to(parse_cpus(args.cpus))
        except ValueError as exc:
            raise SystemExit(f"--cpus: {exc}") from None
    options = options_from_args(args)
    registration.attach(args, options)
    if options.threads < 1:
        raise SystemExit("--threads must be at least 1")
    if options.header_timeout_s <= 0 or options.max_header_bytes <= 0 or options.max_json_values <= 0:
        raise SystemExit("--header-timeout, --max-header-bytes and --max-json-values must be positive")
    if options.model_control_mode == "none" and options.model_repository is None:
        raise SystemExit("--model-control-mode none needs --model-repository")
    if options.cache_bytes < 0:
        raise SystemExit("--cache-bytes must be 0 (off) or a size")
    try:
        import uvloop
    except ImportError:  # plain asyncio works, just slower
        asyncio.run(serve(options))
    else:
        uvloop.run(serve(options))
    return 0


def _version() -> str:
    try:
        return metadata.version("inferplex")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def build_service(options: WorkerOptions, scratch: ScratchDir) -> WorkerService:
    steady_allocator()
    budget = MemoryBudget(options.memory_budget or physical_memory_bytes())
    limits = HostLimits(load_timeout_s=options.load_timeout_s, margin_s=options.exec_margin_s,
                        quarantine_after=options.quarantine_after, max_model_bytes=options.max_model_bytes,
                        max_input_bytes=2 * options.max_request_bytes)
    repository = ModelRepository(budget, directory=options.model_repository, device=options.device,
                                 threads=options.threads, limits=limits, models_dir=scratch.models,
                                 cache=ArtifactCache(scratch.cache, options.cache_bytes))
    return WorkerService(repository, Executor(), ServerInfo(version=_version()),
                         allow_repository_control=options.model_control_mode == "explicit",
                         max_exec_s=options.max_exec_s)


async def _startup_loads(service: WorkerService, options: WorkerOptions) -> None:
    repository = service.repository
    names: list[str] = []
    if options.model_control_mode == "none" or "*" in options.load_models:
        names = repository.directory_models()
    else:
        names = options.load_models
    if options.demo:
        config, files = simple_model()
        await repository.load("simple", config, files)
    for name in names:
        try:
            await repository.load(name)
        except InferplexError as exc:  # shown as UNAVAILABLE in the index, like Triton
            log.error("startup load of '%s' failed: %s", name, exc.message)


async def serve(options: WorkerOptions) -> None:
    try:
        scratch = ScratchDir.claim(options.scratch_dir or default_root())
    except OSError as exc:
        raise SystemExit(f"--scratch-dir: {exc}") from None
    try:
        await _serve(options, scratch)
    finally:
        scratch.release()


async def _serve(options: WorkerOptions, scratch: ScratchDir) -> None:
    import uvicorn

    from worker.grpc_server import build_server
    from worker.http_server import WorkerHttpApp

    service = build_service(options, scratch)
    rules = options.restrictions
    grpc_server = build_server(service, options.host, options.grpc_port, options.max_request_bytes,
                               options.max_model_bytes, options.grpc_server, rules.grpc)
    await grpc_server.start()
    http = uvicorn.Server(BoundedConfig(
        WorkerHttpApp(service, options.max_request_bytes, options.max_model_bytes, rules.http,
                      JsonBound(options.max_json_values, "--max-json-values")),
        host=options.host, port=options.http_port,
        log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=75,
        header_timeout_s=options.header_timeout_s, max_header_bytes=options.max_header_bytes,
    ))
    # uvicorn re-raises the signal it handled once it has stopped, with the handlers it
    # found; a no-op handler keeps that from killing us before the cleanup below runs
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    http_task = asyncio.create_task(http.serve())
    try:
        try:
            await asyncio.to_thread(service.repository.zygote.start)
        except SandboxUnavailable as exc:
            log.error("%s: this machine cannot confine tenants' models, so the worker will not run "
                      "them (it needs seccomp; Landlock is used where the kernel has it)", exc)
            raise SystemExit(2) from None
        await _startup_loads(service, options)
        service.ready = True
        for hook in options.on_ready:
            await hook(service)
        log.info("worker %s ready: HTTP %s:%d, gRPC %s:%d, budget %d bytes, %d intra-op threads, device %s",
                 options.instance_id, options.host, options.http_port, options.host, options.grpc_port,
                 service.repository.budget.budget, options.threads, options.device)
        await http_task  # returns when uvicorn handles SIGINT/SIGTERM
    finally:
        for stop_hook in options.on_stop:
            try:
                await stop_hook(service)
            except Exception:  # stopping must reach the servers
                log.exception("stop hook failed")
        http.should_exit = True
        await grpc_server.stop(grace=1.0)
        service.executor.shutdown()
        await asyncio.to_thread(service.repository.close)
        log.info("worker stopped")

"""The FastAPI application: lifespan, one error handler, routers combined in one place."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from controlplane import console
from controlplane.api_contract import finish_openapi
from controlplane.body_limit import RestBodyLimit
from controlplane.gateway import SERVER_VERSION
from controlplane.redact import RequestIdMiddleware
from controlplane.services import Services, build_services, close_services
from controlplane.settings import Settings
from kserve.errors import InferplexError, InvalidArgument

log = logging.getLogger(__name__)


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object", type(None): "null"}.get(type(value), "a value")


def _problem(error: Mapping[str, Any]) -> str:
    """One validation error: where, what it should be, and what kind of value came (never the
    value itself: a NaN there cannot be encoded, and echoing input helps nobody)."""
    where = ".".join(str(p) for p in error.get("loc", ()))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if str(error.get("type", "")).endswith("_type") and "input" in error:
        message += f", got {_json_kind(error['input'])}"
    return f"{where}: {message}"


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API documents at this request's path (the spec is the one list of
    routes; FastAPI's router keeps its own nested and private)."""
    path = request.scope["path"]
    matching = [(template.count("{"), operations) for template, operations in request.app.openapi()["paths"].items()
                if _path_regex(template).match(path)]
    # /admin/instances/register is that resource, not /admin/instances/{instance_id}
    fewest = min((params for params, _ in matching), default=0)
    return sorted({method.upper() for params, operations in matching if params == fewest for method in operations})


@functools.cache
def _path_regex(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. Pass ``services`` to reuse already-built ones (tests, embedding)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        svc = services or await build_services(settings or Settings())
        app.state.services = svc
        grpc_server = None
        try:
            from controlplane.grpc_gateway import start_grpc_gateway

            grpc_server = await start_grpc_gateway(svc)
            async with console.running(app, svc):  # the console's history sampler
                yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=2)
            if own:
                await close_services(svc)

    app = FastAPI(
        title="inferplex",
        version=SERVER_VERSION,
        description="Multi-tenant DNN inference: tenants, models, KServe v2 gateway, operator API.",
        lifespan=lifespan,
    )

    @app.exception_handler(InferplexError)
    async def inferplex_error(request: Request, exc: InferplexError) -> JSONResponse:
        # names in the path are the caller's own words: shown back as sent
        exc = request.app.state.services.gateway.redact.error(exc, keep=set(request.path_params.values()))
        retry_after = exc.retry_after_header()
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return JSONResponse(exc.to_json(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes each bad input, and a NaN there cannot be encoded
        # (a 500); answer like every other bad input instead, naming where and what
        problems = "; ".join(_problem(e) for e in exc.errors())
        return JSONResponse(InvalidArgument(f"invalid request: {problems}").to_json(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own refusals (unknown path, a body FastAPI could not parse) in the
        # {"error": ...} form; a body nested too deep fails json.loads with RecursionError
        message = str(exc.detail)
        if isinstance(exc.__cause__, RecursionError):
            message = "the request body JSON nests arrays and objects too deeply; send a flatter body"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route whose path matched; a path
            # served by several routes (GET and POST /v1/models) takes them all
            allowed = _allowed_methods(request) or sorted(headers.get("Allow", "").replace(",", " ").split())
            headers["Allow"] = ", ".join(allowed)
            if allowed:
                choice = ", ".join(allowed[:-1]) + " or " + allowed[-1] if len(allowed) > 1 else allowed[0]
                message = f"method {request.method} is not allowed here; use {choice}"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=headers)

    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return finish_openapi(fastapi_openapi())  # built once, cached by FastAPI

    app.openapi = openapi  # type: ignore[method-assign]

    from controlplane.routes import include_routers

    include_routers(app)
    console.mount(app)  # /console and /admin/console/...
    # before FastAPI reads any other body (it does so ahead of authentication)
    app.add_middleware(RestBodyLimit)
    return app


def served(app: FastAPI) -> Any:
    """The ASGI application the control plane's HTTP server runs: a request id on every
    request, then v2 infer answered before FastAPI is entered at all (its router matches
    every route and its middleware stack wraps every call: together more than the gateway's
    whole budget, paid by every request and every refusal under a flood); everything else
    goes to ``app``, whose route for infer serves the same requests when called directly."""
    from controlplane.routes.v2 import InferFastPath

    return RequestIdMiddleware(InferFastPath(app, owner=app))

"""The FastAPI application: lifespan, one error handler, routers combined in one place."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from controlplane.gateway import SERVER_VERSION
from controlplane.services import Services, build_services, close_services
from controlplane.settings import Settings
from kserve.errors import InferplexError, InvalidArgument

log = logging.getLogger(__name__)


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
    async def inferplex_error(_: Request, exc: InferplexError) -> JSONResponse:
        retry_after = exc.retry_after_header()
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return JSONResponse(exc.to_json(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes each bad input, and a NaN there cannot be encoded
        # (a 500); answer like every other bad input instead, naming where and what
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                             for e in exc.errors())
        return JSONResponse(InvalidArgument(f"invalid request: {problems}").to_json(), status_code=400)

    from controlplane.routes import include_routers
    from controlplane.routes.v2 import InferFastPath

    include_routers(app)
    # v2 infer is served before routing: the router alone costs more than the gateway's budget
    app.add_middleware(InferFastPath)
    return app

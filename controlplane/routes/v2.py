"""KServe v2 HTTP endpoints for tenants: thin translation onto ``controlplane.gateway``.

Authentication: ``Authorization: Bearer <key>`` on every route that names a model;
health and server metadata are open (load-balancer probes). Errors answer
``{"error": msg}`` with the protocol's status codes through the app's handler.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from controlplane.api_contract import KEYED, errors, no_body
from controlplane.deps import AuthorizationDep, ServicesDep
from controlplane.gateway import REPOSITORY_DENIED, Gateway
from controlplane.services import Services
from kserve.asgi import Receive, read_body
from kserve.compression import compress
from kserve.errors import InferplexError, PermissionDenied
from tenants.keys import one_authorization

T = TypeVar("T")

router = APIRouter(prefix="/v2", tags=["v2 inference (KServe / Open Inference Protocol)"])


@router.get("/health/live", response_class=Response, responses={200: no_body("Live (empty body).")},
            summary="Server liveness (no key needed)")
async def live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready", response_class=Response,
            responses={200: no_body("Ready (empty body)."), 503: no_body("No inference instance is healthy yet (empty body).")},
            summary="Server readiness: at least one inference instance is healthy")
async def ready(services: ServicesDep) -> Response:
    return Response(status_code=200 if await services.gateway.server_ready() else 503)


@router.get("", summary="Server metadata (no key needed)")
async def server_metadata(services: ServicesDep) -> dict[str, Any]:
    return services.gateway.server_metadata()


@router.get("/models/stats", responses=errors(*KEYED), summary="Statistics of every model of the calling tenant")
async def all_stats(services: ServicesDep, authorization: AuthorizationDep) -> dict[str, Any]:
    p = await services.gateway.authenticate(authorization)
    return await services.gateway.statistics(p, None, None)


@router.post("/repository/index", responses=errors(*KEYED), summary="The calling tenant's models and whether each is loaded")
async def repository_index(services: ServicesDep, authorization: AuthorizationDep) -> list[dict[str, str]]:
    p = await services.gateway.authenticate(authorization)
    return services.gateway.repository_index(p)


@router.post("/repository/models/{model}/load", responses=errors(*KEYED), summary="Not allowed for tenants (403)")
@router.post("/repository/models/{model}/unload", responses=errors(*KEYED), summary="Not allowed for tenants (403)")
async def repository_change(model: str, services: ServicesDep, authorization: AuthorizationDep) -> None:
    await services.gateway.authenticate(authorization)
    raise PermissionDenied(REPOSITORY_DENIED)


Handler = Callable[..., Any]

_NAME = {"type": "string", "minLength": 1}
_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": _NAME, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string", "description": "BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES"},
    "parameters": {"type": "object"},
    "data": {"description": "the tensor's elements, row-major (flat or nested); absent with binary_data_size"},
}}
_INFER_DOC: dict[str, Any] = {"security": [{"HTTPBearer": []}], "requestBody": {
    "required": True,
    "description": "A KServe v2 inference request; with binary tensor data, the JSON header's length in "
    "the Inference-Header-Content-Length header and the tensors' bytes after it. "
    "Content-Encoding gzip or deflate accepted.",
    "content": {
        "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": _TENSOR},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": _NAME, "parameters": {"type": "object"}}}},
        }}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}}
_INFER_ANSWER: dict[str, Any] = {
    "description": "The outputs: JSON, or a JSON header (its length in Inference-Header-Content-Length) "
    "followed by binary tensor data when the request asked for binary outputs.",
    "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "model_name": {"type": "string"}, "model_version": {"type": "string"},
                    "id": {"type": "string"}, "outputs": {"type": "array", "items": _TENSOR}}}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


def _version_routes(suffix: str, method: str, summary: str, **doc: Any) -> Callable[[Handler], Handler]:
    """Register a handler for both /models/{model}<suffix> and the /versions/{version} form;
    ``doc``: ``responses=`` and the like, for both."""
    doc.setdefault("responses", errors(400, *KEYED, 404))

    def deco(fn: Handler) -> Handler:
        router.add_api_route(f"/models/{{model}}{suffix}", fn, methods=[method], summary=summary, **doc)
        router.add_api_route(f"/models/{{model}}/versions/{{version}}{suffix}", fn, methods=[method],
                             summary=summary + " (one version)", **doc)
        return fn
    return deco


@_version_routes("", "GET", "Model metadata: inputs, outputs, versions")
async def model_metadata(model: str, services: ServicesDep, authorization: AuthorizationDep,
                         version: str | None = None) -> dict[str, Any]:
    p = await services.gateway.authenticate(authorization)
    return services.gateway.model_metadata(p, model, version)


@_version_routes("/ready", "GET", "Model readiness: 200 if servable (loads on first request), else 400",
                 response_class=Response,
                 responses={200: no_body("Servable (empty body)."), **errors(400, *KEYED, 404)})
async def model_ready(model: str, services: ServicesDep, authorization: AuthorizationDep,
                      version: str | None = None) -> Response:
    p = await services.gateway.authenticate(authorization)
    if services.gateway.model_ready(p, model, version):
        return Response(status_code=200)
    # as the other refusals read (tritonclient looks only at the status)
    return JSONResponse({"error": f"model '{model}' is not ready: it failed to load; "
                                  "GET /v1/models/<name> shows the reason"}, status_code=400)


@_version_routes("/config", "GET", "Model configuration (Triton JSON form)")
async def model_config(model: str, services: ServicesDep, authorization: AuthorizationDep,
                       version: str | None = None) -> dict[str, Any]:
    p = await services.gateway.authenticate(authorization)
    return services.gateway.model_config(p, model, version)


@_version_routes("/stats", "GET", "Model statistics")
async def model_stats(model: str, services: ServicesDep, authorization: AuthorizationDep,
                      version: str | None = None) -> dict[str, Any]:
    p = await services.gateway.authenticate(authorization)
    return await services.gateway.statistics(p, model, version)


@_version_routes("/infer", "POST", "Inference: JSON or binary tensor data, gzip/deflate accepted",
                 responses={200: _INFER_ANSWER, **errors(400, *KEYED, 404, 413, 429, 500, 504)},
                 openapi_extra=_INFER_DOC)
async def infer(model: str, request: Request, version: str | None = None) -> Response:
    try:
        status, body, headers = await _serve_infer(request.app.state.services, request.receive,
                                                   request.headers, request.headers.getlist("authorization"),
                                                   model, version)
    except CallerGone:
        return Response(status_code=499)  # nobody reads it: the client went away
    return Response(body, status_code=status, headers=headers)


async def _serve_infer(services: Services, receive: Receive, headers: Mapping[str, str],
                       authorizations: list[str], model: str,
                       version: str | None) -> tuple[int, bytes, dict[str, str]]:
    """One v2 infer request: status, body and headers of the answer (errors raise).
    ``authorizations``: every Authorization header sent (``headers`` keeps only one)."""
    gateway: Gateway = services.gateway
    principal = await gateway.authenticate(one_authorization(authorizations))
    limit = services.settings.max_request_bytes
    body = await read_body(receive, headers, limit, lambda size: (
        f"request body of at least {size} bytes is over the {limit}-byte limit; send smaller batches"))
    # ASGI paths arrive percent-decoded already; a caller that goes away leaves the queue
    result = await _unless_disconnected(gateway.infer_http(principal, model, version, body, headers),
                                        receive)
    if result.status != 200:
        return result.status, result.body, {
            "content-type": result.headers.get("content-type", "application/json")}
    out_headers = dict(result.headers)
    out, coding = compress(result.body, headers.get("accept-encoding"))
    if coding:
        out_headers["content-encoding"] = coding
    return 200, out, out_headers


class CallerGone(Exception):
    """The HTTP client disconnected before its answer: nothing is sent."""


async def _unless_disconnected(work: Awaitable[T], receive: Receive) -> T:
    """Run ``work`` until it finishes or the client disconnects (then cancel it: a queued
    request leaves the scheduler's queue). The body has been read, so the next ASGI
    message is the disconnect."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise CallerGone


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


_INFER_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")


class InferFastPath:
    """ASGI middleware serving ``POST /v2/models/{m}[/versions/{v}]/infer`` before routing.

    FastAPI's router matches every route's regex and solves dependencies per request,
    which costs more than the gateway's whole budget (< 1 ms added at p50). The route
    above stays registered: it documents the endpoint in OpenAPI and serves the same
    requests when this middleware is not installed."""

    def __init__(self, app: Any, owner: Any = None) -> None:
        self.app = app
        # the FastAPI app whose state holds the services: given when this runs outside it
        # (``controlplane.app.served``), else the one Starlette puts in the scope
        self.owner = owner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/infer"):
            await self.app(scope, receive, send)
            return
        m = _INFER_PATH.match(scope["path"])
        if m is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            status, body, out_headers = await self._infer(scope, receive, headers, m)
        except CallerGone:
            return
        except InferplexError as exc:
            exc = (self.owner or scope["app"]).state.services.gateway.redact.error(exc, keep=(m.group("model"),))
            status, body = exc.http_status, json.dumps(exc.to_json()).encode()
            out_headers = {"content-type": "application/json"}
            retry_after = exc.retry_after_header()
            if retry_after is not None:
                out_headers["retry-after"] = retry_after
        out_headers["content-length"] = str(len(body))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers.items()]})
        await send({"type": "http.response.body", "body": body})

    async def _infer(self, scope: dict[str, Any], receive: Any, headers: dict[str, str],
                     m: re.Match[str]) -> tuple[int, bytes, dict[str, str]]:
        authorizations = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"authorization"]
        return await _serve_infer((self.owner or scope["app"]).state.services, receive, headers, authorizations,
                                  m.group("model"), m.group("version"))

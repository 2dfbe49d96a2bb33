"""KServe v2 HTTP endpoints (plus Triton's repository and statistics extensions) as
a bare ASGI app: the request path is a table lookup and a handler call, with no
framework middleware in the way of the latency budget.

Extra route: ``GET /v2/inferplex/memory`` answers the memory budget as
``{"budget_bytes", "used_bytes", "free_bytes", "models": {name: bytes}, "cache": {...}}``
(in the statistics group); ``cache`` is the artifact cache's ``{"budget_bytes",
"used_bytes", "entries", "hits", "misses", "corrupt", "evictions"}``
(worker/artifact_cache.py). A repository load may name its files by the
``inferplex_artifact_sha256`` parameter instead of sending them (modelfiles/artifacts.py). Groups restricted by ``--http-restricted-api`` answer 403 without
their header, as Triton does (worker/restricted.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from kserve import compression, http_codec
from kserve.asgi import read_body
from kserve.errors import InferplexError, InvalidArgument, NotFound
from kserve.jsonbody import DEFAULT_JSON_BOUND, JsonBound
from kserve.tensors import TIMEOUT_HEADER
from modelfiles.artifacts import ARTIFACT_PARAMETER
from modelfiles.config import to_json
from worker.restricted import ProtocolRules
from worker.service import LOAD_ENVELOPE_BYTES, WorkerService, check_model_files

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = b"application/json"
_MODEL = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/[a-z]+)?$")
_REPO = re.compile(r"^/v2/repository/models/(?P<name>[^/]+)/(?P<action>load|unload)$")
# Triton's restricted API group of each /v2/models/<name>[/versions/<v>]<rest> (src/http_server.cc)
_MODEL_GROUPS = {"": "metadata", "/ready": "health", "/config": "model-config", "/stats": "statistics",
                 "/infer": "inference", "/generate": "inference", "/generate_stream": "inference"}


class Reply:
    __slots__ = ("status", "body", "headers", "compressible")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                 compressible: bool = False) -> None:
        self.status = status
        self.body = body
        self.headers = headers or [(b"content-type", _JSON)]
        # Like Triton, only inference responses honour Accept-Encoding: tritonclient reads
        # every other body as plain JSON even though aiohttp always sends Accept-Encoding.
        self.compressible = compressible


def _json(obj: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj, separators=(",", ":")).encode())


class WorkerHttpApp:
    def __init__(self, service: WorkerService, max_request_bytes: int, max_model_bytes: int | None = None,
                 restricted: ProtocolRules | None = None, json_bound: JsonBound = DEFAULT_JSON_BOUND) -> None:
        self.service = service
        self.json_bound = json_bound
        self.restricted = restricted if restricted is not None else ProtocolRules("")
        self.max_request_bytes = max_request_bytes
        self.max_model_bytes = max_model_bytes if max_model_bytes is not None else max_request_bytes
        # load bodies carry the files base64-encoded: 4 bytes on the wire for every 3 of model
        self.max_load_body_bytes = self.max_model_bytes * 4 // 3 + LOAD_ENVELOPE_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = _headers(scope)
        try:
            reply = await self._route(scope, headers, receive)
        except InferplexError as exc:
            reply = Reply(exc.http_status, http_codec.encode_error(exc.message))
        except Exception as exc:  # a bug: answer it, keep serving
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            reply = Reply(500, http_codec.encode_error(f"internal error: {exc.__class__.__name__}: {exc}"))
        body = reply.body
        out_headers = list(reply.headers)
        accept = headers.get("accept-encoding")
        if accept and body and reply.compressible:
            body, encoding = compression.compress(body, accept)
            if encoding:
                out_headers.append((b"content-encoding", encoding.encode()))
        out_headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": out_headers})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: Scope, headers: dict[str, str], receive: Receive) -> Reply:
        path: str = scope["path"].rstrip("/") or "/"
        method: str = scope["method"]
        svc = self.service
        allow = self.restricted.check
        match = _MODEL.match(path)
        if match:
            name, version, rest = match.group("name"), match.group("version") or "", match.group("rest") or ""
            stats_of_all = name == "stats" and not version and not rest
            # checked before the method, as Triton's handlers do
            allow("statistics" if stats_of_all else _MODEL_GROUPS.get(rest, "metadata"), headers)
            if stats_of_all and method == "GET":
                return _json({"model_stats": svc.statistics()})  # v2/models/stats: every model
            if rest == "/infer" and method == "POST":
                return await self._infer(name, version, headers, receive)
            if method == "GET":
                if rest == "":
                    return _json(svc.model_metadata(name, version))
                if rest == "/ready":
                    if svc.repository.is_ready(name, version):
                        return Reply(200, b"")
                    return _json({"error": "Model version not ready"}, 400)  # Triton's body
                if rest == "/config":
                    return _json(to_json(svc.model_config(name, version)))
                if rest == "/stats":
                    return _json({"model_stats": svc.statistics(name, version)})
        elif path == "/v2/health/live":
            return Reply(200, b"")
        elif path == "/v2/health/ready":
            return Reply(200 if svc.ready else 400, b"")
        elif path == "/v2" and method == "GET":
            allow("metadata", headers)
            return _json(svc.server_metadata())
        elif path == "/v2/repository/index" and method == "POST":
            allow("model-repository", headers)
            body = await self._json_body(headers, receive)
            rows = svc.index(bool(body.get("ready", False)))
            return _json([{k: v for k, v in (("name", r.name), ("version", r.version), ("state", r.state),
                                              ("reason", r.reason)) if v or k == "name"} for r in rows])
        elif path == "/v2/inferplex/memory" and method == "GET":
            allow("statistics", headers)  # it names every loaded model
            return _json(svc.memory())
        else:
            repo = _REPO.match(path)
            if repo:
                allow("model-repository", headers)
            if repo and method == "POST":
                name = repo.group("name")
                body = await self._json_body(headers, receive, self.max_load_body_bytes, "--max-model-bytes")
                params = body.get("parameters") or {}
                if not isinstance(params, dict):
                    raise InvalidArgument("'parameters' must be a JSON object")
                if repo.group("action") == "load":
                    config, files, digest = _load_params(name, params)
                    check_model_files(name, files, self.max_model_bytes)
                    await svc.load(name, config, files, digest)
                else:
                    await svc.unload(name)
                return Reply(200, b"")
        raise NotFound(f"no route for {method} {path}")

    async def _infer(self, name: str, version: str, headers: dict[str, str], receive: Receive) -> Reply:
        body = await self._body(headers, receive)
        header_length = headers.get("inference-header-content-length")
        try:
            hlen = int(header_length) if header_length is not None else None
        except ValueError:
            raise InvalidArgument(
                f"Inference-Header-Content-Length must be an integer, got {header_length!r}"
            ) from None
        request = http_codec.parse_infer_request(body, hlen, name, version, self.json_bound)
        response = await self.service.infer(request, _timeout_header(headers))
        out, out_hlen = http_codec.encode_infer_response(response, request.outputs, request.binary_data_output)
        if out_hlen is None:
            return Reply(200, out, compressible=True)
        return Reply(200, out, [(b"content-type", b"application/octet-stream"),
                                (b"inference-header-content-length", str(out_hlen).encode())], compressible=True)

    async def _body(self, headers: dict[str, str], receive: Receive, limit: int | None = None,
                    flag: str = "--max-request-bytes") -> bytes:
        cap = self.max_request_bytes if limit is None else limit
        return await read_body(receive, headers, cap, lambda size: _too_large(size, cap, flag))

    async def _json_body(self, headers: dict[str, str], receive: Receive, limit: int | None = None,
                         flag: str = "--max-request-bytes") -> dict[str, Any]:
        body = await self._body(headers, receive, limit, flag)
        if not body.strip():
            return {}
        self.json_bound.check(body, "request body")
        try:
            obj = json.loads(body)
        except ValueError as exc:
            raise InvalidArgument(f"request body is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise InvalidArgument("request body must be a JSON object")
        return obj


def _too_large(size: int, limit: int, flag: str) -> str:
    advice = "send a smaller batch or raise the limit" if flag == "--max-request-bytes" else "raise the limit"
    return f"request body of at least {size} bytes is over the worker's limit of {limit} bytes ({flag}); {advice}"


def _load_params(name: str, params: dict[str, Any]) -> tuple[str | None, dict[str, bytes], str | None]:
    digest = params.get(ARTIFACT_PARAMETER)
    if digest is not None and not isinstance(digest, str):
        raise InvalidArgument(f"failed to load '{name}': '{ARTIFACT_PARAMETER}' must be a string")
    config = params.get("config")
    if config is not None and not isinstance(config, str):
        if isinstance(config, dict):
            config = json.dumps(config)
        else:
            raise InvalidArgument(f"failed to load '{name}': the 'config' parameter must be a JSON string")
    files: dict[str, bytes] = {}
    for key, value in params.items():
        if not key.startswith("file:"):
            continue
        if not isinstance(value, str):
            raise InvalidArgument(f"failed to load '{name}': '{key}' must be base64-encoded file content")
        try:
            files[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"failed to load '{name}': '{key}' is not valid base64") from None
    return config, files, digest


def _timeout_header(headers: dict[str, str]) -> float | None:
    raw = headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0 or not math.isfinite(value):
        raise InvalidArgument(f"header {TIMEOUT_HEADER} must be a positive number of milliseconds, got {raw!r}")
    return value / 1000


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

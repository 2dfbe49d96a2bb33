"""A size bound on REST request bodies, held before FastAPI reads them.

FastAPI reads a route's whole body before its dependencies run (authentication
included), and Starlette buffers it without a limit: anyone who can connect could make a
replica hold a body of any size. This middleware reads the body first, refusing it with
413 by its declared Content-Length before a byte is read, or while a chunked body streams
in, then hands the app exactly what was sent. It is plain ASGI, so it depends on no
FastAPI or Starlette behaviour.

Model uploads (streamed to disk, INFERPLEX_MAX_UPLOAD_BYTES) and v2 infer bodies
(INFERPLEX_MAX_REQUEST_BYTES) keep their own bounds and pass through untouched.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kserve.asgi import read_raw_body
from kserve.errors import InvalidArgument, PayloadTooLarge

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SETTING = "INFERPLEX_MAX_REST_BODY_BYTES"
UPLOAD_PATHS = ("/v1/models", "/v1/models/")


def bounds_its_own_body(method: str, path: str) -> bool:
    """The upload and v2 infer routes, which read their bodies under their own limits."""
    if method != "POST":
        return False
    return path in UPLOAD_PATHS or (path.startswith("/v2/models/") and path.endswith("/infer"))


class RestBodyLimit:
    """Refuse REST bodies over ``settings.max_rest_body_bytes`` with 413 ``{"error": ...}``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or bounds_its_own_body(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        limit: int = scope["app"].state.services.settings.max_rest_body_bytes
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await read_raw_body(receive, headers, limit, lambda size: (
                f"request body of at least {size} bytes is over the REST API's limit of {limit} bytes "
                f"({SETTING}); send a smaller body"))
        except PayloadTooLarge as exc:
            await _refuse(send, exc)
            return
        except InvalidArgument:  # the client went away: nobody to answer
            return
        pending: list[dict[str, Any]] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> dict[str, Any]:
            return pending.pop() if pending else await receive()  # then the disconnect

        await self.app(scope, replay, send)


async def _refuse(send: Send, exc: PayloadTooLarge) -> None:
    body = json.dumps(exc.to_json()).encode()
    # the rest of the body is never read: close rather than parse it to reach the next request
    await send({"type": "http.response.start", "status": exc.http_status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})

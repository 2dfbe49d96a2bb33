"""What a tenant may read in an error: nothing internal, and a request id to quote.

Errors a tenant receives are often written far from the tenant (an instance's load
failure, placement's "no room on worker-0", a probe's temp path, etcd's address), so they
are made public in one place, at the transports' edge (REST handler, v2 infer fast path,
gRPC servicer) and for the status reasons stored in model records: instance-level names
become the tenant's own model names (another tenant's become "another model"), instance
ids "an instance", addresses "an internal address", file-system paths "a server path".
When anything was withheld (or the error is the server's own fault), the full message is
logged with the request id and the tenant's message ends with that id; every response
also carries it in ``X-Request-Id`` (gRPC: trailing metadata).
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Collection, Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

from kserve.errors import InferplexError
from tenants.auth import Principal
from tenants.naming import SEPARATOR

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID: ContextVar[str | None] = ContextVar("inferplex_request_id", default=None)
# who is calling, once authenticated: admins read messages whole
CALLER: ContextVar[Principal | None] = ContextVar("inferplex_caller", default=None)

ANOTHER_MODEL = "another model"
AN_INSTANCE = "an instance"
AN_ADDRESS = "an internal address"
A_PATH = "a server path"

_PROFILE_PREFIX = "_profile" + SEPARATOR
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"),;]+", re.I)
# An address is told from a tensor's dims (`[32]`, `[1.5]`, `[1:3]`) or a source location
# (`graph.h:120`) by what it is, not by its characters: a bracketed or dotted-quad candidate
# counts only when it parses as an IP address (see _address_or_kept)
_ADDRESS = re.compile(
    r"\[(?P<v6>[0-9a-f:.]*:[0-9a-f:.]*)(?:%[\w.-]+)?\](?::\d{1,5})?"  # [::1]:8001
    r"|\b(?P<v4>\d{1,3}(?:\.\d{1,3}){3})(?::\d{1,5})?\b"  # 127.0.0.1:8001
    r"|\blocalhost(?::\d{1,5})?\b"
    # triton.internal:8001; not file.ext:line where no top-level domain has that ending
    r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?!(?:onnx|pth|pb|pbtxt|json|cpp|cxx|hpp|c|h):)[a-z0-9-]+"
    r":\d{1,5}\b",
    re.I)
# the id shapes inferplex gives instances (`inferplex up`, self-registered, external)
_INSTANCE_ID = re.compile(r"(?<![\w.-])(?:worker-\d+|ext-[0-9a-f]{10}|w-[\w.-]*\d)(?![\w.-])")
# absolute paths of two or more segments; the REST API's own paths are advice, not secrets
_PATH = re.compile(r"(?<![\w.:/-])/(?!v1/|v2/|admin/)[\w.+@%~-]+(?:/[\w.+@%~=-]*)+")
_QUALIFIED = re.compile(r"(?<![\w.-])(?:" + re.escape(_PROFILE_PREFIX) + r")?[a-z][a-z0-9-]{1,31}"
                        + re.escape(SEPARATOR) + r"[A-Za-z0-9][\w.-]*")


def new_request_id() -> str:
    return secrets.token_hex(8)


def request_id() -> str:
    """This request's id (made on first use when no transport set one)."""
    rid = REQUEST_ID.get()
    if rid is None:
        rid = new_request_id()
        REQUEST_ID.set(rid)
    return rid


def public_text(text: str, tenant: str | None, keep: Collection[str] = (),
                instances: Iterable[str] = ()) -> str:
    """``text`` with nothing internal left in it, for ``tenant`` (None: a caller not yet
    known). ``keep``: names the caller sent (shown back as sent); ``instances``: instance ids
    and addresses known to be internal, beyond the shapes recognised anyway."""
    def unless_kept(what: str) -> Callable[[re.Match[str]], str]:
        return lambda m: m.group() if m.group() in keep else what

    out = _URL.sub(AN_ADDRESS, text)
    known = _known_pattern(tuple(sorted({i for i in instances if i}, key=lambda i: (-len(i), i))))
    if known is not None:
        out = known.sub(unless_kept(AN_INSTANCE), out)
    out = _INSTANCE_ID.sub(unless_kept(AN_INSTANCE), out)
    out = _ADDRESS.sub(_address_or_kept, out)
    out = _PATH.sub(A_PATH, out)
    if tenant:
        out = _own_prefix(tenant).sub("", out)
    return _QUALIFIED.sub(unless_kept(ANOTHER_MODEL), out)


def _address_or_kept(m: re.Match[str]) -> str:
    candidate, parse = ((m.group("v6"), ipaddress.IPv6Address) if m.group("v6") is not None
                        else (m.group("v4"), ipaddress.IPv4Address) if m.group("v4") is not None
                        else (None, None))
    if parse is not None:
        try:
            parse(candidate)
        except ValueError:
            return m.group()  # dims, a slice, a version: not an address
    return AN_ADDRESS


# compiled once per set of known instances and per tenant: refusals under a flood are
# worded thousands of times a second
@functools.lru_cache(maxsize=64)
def _known_pattern(known: tuple[str, ...]) -> re.Pattern[str] | None:
    if not known:
        return None  # longest first: an id that contains another is matched whole
    return re.compile(r"(?<![\w.-])(?:" + "|".join(re.escape(k) for k in known) + r")(?![\w.-])")


@functools.lru_cache(maxsize=4096)
def _own_prefix(tenant: str) -> re.Pattern[str]:
    own = re.escape(tenant + SEPARATOR)
    return re.compile(r"(?<![\w.-])(?:" + re.escape(_PROFILE_PREFIX) + ")?" + own + r"(?=[A-Za-z0-9])")


class Redactor:
    """``public_text`` with the instance ids and addresses the registry knows right now."""

    def __init__(self, known_instances: Callable[[], Iterable[str]]) -> None:
        self._known = known_instances

    def text(self, text: str, tenant: str | None, keep: Collection[str] = ()) -> str:
        return public_text(text, tenant, keep, self._known())

    def message(self, message: str, status: int, keep: Collection[str] = ()) -> str:
        """The caller's view of one message (admins: whole), logging what was withheld."""
        caller = CALLER.get()
        if caller is not None and caller.role == "admin":
            return message
        public = self.text(message, caller.tenant if caller else None, keep)
        if public == message and status < 500:
            return message
        rid = request_id()
        # withheld words are kept in the log under the request id; a 5xx shown whole (a
        # refusal for capacity, a drop at the deadline: thousands a second under overload,
        # counted in /metrics) is logged only at debug level
        log.log(logging.WARNING if public != message else logging.DEBUG,
                "request %s (tenant %s): answered %d: %s", rid, caller.tenant if caller else "-",
                status, message)
        return f"{public} (request id {rid})"

    def error(self, exc: InferplexError, keep: Collection[str] = ()) -> InferplexError:
        """The same error as the caller may see it (a copy when anything changed)."""
        public = self.message(exc.message, exc.http_status, keep)
        if public == exc.message:
            return exc
        shown = copy.copy(exc)
        shown.message = public
        shown.args = (public,)
        shown.__cause__ = exc
        return shown


ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class RequestIdMiddleware:
    """One request id per HTTP request (set before anything else runs, so every error and
    log line of the request uses it), answered in ``X-Request-Id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        # reset, not just set: requests served in one task (ASGI test clients) must not
        # inherit the last one's caller
        rid_token, caller_token = REQUEST_ID.set(rid), CALLER.set(None)
        header = (REQUEST_ID_HEADER.encode(), rid.encode())

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(rid_token)
            CALLER.reset(caller_token)

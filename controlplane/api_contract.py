"""What the REST API promises at its edges: JSON bodies read strictly, and every status a
route answers declared in its OpenAPI (the schemathesis test holds the spec to the server)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictBody(BaseModel):
    """A JSON request body: each field of its declared type (``true`` is not 1 second, "5"
    is not 5) and no field the route does not know (a typo would otherwise do nothing)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        # before extra="forbid" (which stays for the schema): say which fields there are
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data.keys() - cls.model_fields.keys())
            if unknown:
                raise ValueError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                                 f"this body takes {', '.join(cls.model_fields)}")
        return data


class ErrorBody(BaseModel):
    """Every refusal, as KServe v2 answers them."""

    error: str = Field(description="What went wrong and what to change; names nothing internal.")


_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again, when known.",
                                "schema": {"type": "string"}}}
_WHY: dict[int, str] = {
    400: "Invalid request: a parameter or body field of the wrong type or value (the message names it).",
    401: "Missing, unknown, revoked or expired API key, or more than one Authorization header.",
    403: "The key's role may not do this (an admin key where a tenant key is needed, or the reverse).",
    404: "No such resource (another tenant's answers the same).",
    409: "Conflicts with what exists (already exists, or a delete not yet finished).",
    413: "The request body is over this server's limit.",
    429: "Over the tenant's quota, or the queue is full; retry after Retry-After.",
    500: "The server failed; the message carries the request id to report.",
    503: "Unavailable for now (the state store is unreachable, no instance can serve the model, "
         "or it is loading); retry after Retry-After.",
    504: "The request could not finish within its deadline (the model's SLO).",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can refuse with these statuses, ``{"error": ...}`` each."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        # JSON whatever the route's own success is (/metrics answers text)
        out[code] = {"description": _WHY[code], "content": {"application/json": {"schema": _ERROR_REF}}}
        if code in (429, 503):
            out[code]["headers"] = _RETRY_AFTER
    return out


def no_body(description: str) -> dict[str, Any]:
    """A response with a status and nothing else (health probes)."""
    return {"description": description, "content": {}}


# the sets most routes answer, named by who may call them
KEYED = (401, 403, 503)        # any route behind a key (403: the wrong role; 503: store down)
ADMIN = errors(*KEYED)
ADMIN_INPUT = errors(400, *KEYED, 413)   # an admin route with a JSON body
TENANT_SCOPED = (400, *KEYED)  # an admin key without ?tenant=, or a tenant key naming another


def finish_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """The spec FastAPI built, made true: it documents a 422 for every route with
    parameters, where this app answers 400 ``{"error": ...}`` (controlplane.app), declared
    by each route; and the error body every ``errors()`` names. Idempotent."""
    schema.setdefault("components", {}).setdefault("schemas", {})["ErrorBody"] = ErrorBody.model_json_schema()
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema

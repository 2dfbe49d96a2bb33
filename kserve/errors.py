"""One error root for everything a user (tenant, operator, client) can cause.

Each error carries its HTTP status and its gRPC status code, and a message that
says what to fix. REST and the v2 HTTP endpoints answer ``{"error": message}``;
gRPC servers abort with ``grpc_code`` and the message.
"""

from __future__ import annotations

import grpc


class InferplexError(Exception):
    """Base of every error a caller can cause or must be told about."""

    http_status: int = 500
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def to_json(self) -> dict[str, str]:
        return {"error": self.message}

    def retry_after_header(self) -> str | None:
        """The Retry-After value (whole seconds, at least 1), or None when there is none."""
        if self.retry_after_s is None:
            return None
        return str(max(1, round(self.retry_after_s)))


class InvalidArgument(InferplexError):
    """The request is malformed: wrong names, shapes, datatypes, sizes, bodies."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(InferplexError):
    """Unknown model, version, tenant or key (also: another tenant's model)."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(InferplexError):
    """Missing, unknown, revoked or expired API key."""

    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(InferplexError):
    """The key is valid but its role may not do this."""

    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class Conflict(InferplexError):
    """The thing already exists, or changed under a compare-and-set."""

    http_status = 409
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class PayloadTooLarge(InferplexError):
    """A body or upload over the configured size limit."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ResourceExhausted(InferplexError):
    """Quota or rate exceeded, or a model does not fit an instance's memory budget."""

    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(InferplexError):
    """A dependency (etcd, an instance) is down, or capacity cannot meet the deadline."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(InferplexError):
    """An execution stopped at its request's deadline, or a request whose deadline passed
    before it could run (it was never started)."""

    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(InferplexError):
    """A bug or an unexpected failure; the message still says what happened."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL

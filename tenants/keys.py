"""API keys: a random secret shown once, stored only as its SHA-256.

A key is ``ipx_<43 url-safe characters>`` (256 bits). The store keeps
``/inferplex/apikeys/{sha256(secret)}`` -> :class:`ApiKeyRecord`, so a leaked
store reveals no usable key, and authenticating is one hash plus one dict lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable

from pydantic import BaseModel

from kserve.errors import Unauthenticated
from tenants.auth import Principal, Role

SECRET_PREFIX = "ipx_"

MISSING_KEY = "missing API key: send 'Authorization: Bearer <key>'"
UNKNOWN_KEY = "unknown or revoked API key"
EXPIRED_KEY = "API key expired"
TWO_KEYS = ("more than one Authorization header (or authorization metadata entry): "
            "send exactly one 'Authorization: Bearer <key>'")


class ApiKeyRecord(BaseModel):
    """What the store holds for one key (never the secret)."""

    key_id: str
    role: Role
    tenant: str | None
    created_at: float
    expires_at: float | None = None
    revoked: bool = False

    def principal(self, now: float) -> Principal:
        if self.revoked:
            raise Unauthenticated(UNKNOWN_KEY)
        if self.expires_at is not None and now >= self.expires_at:
            raise Unauthenticated(EXPIRED_KEY)
        return Principal(role=self.role, tenant=self.tenant, key_id=self.key_id)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    """A public handle for listing and revoking; reveals nothing about the secret."""
    return "key_" + secrets.token_hex(8)


def hash_secret(secret: str) -> str:
    # a plain (unsalted) hash is enough: secrets are 256 random bits, not passwords
    return hashlib.sha256(secret.encode()).hexdigest()


def one_authorization(values: Iterable[str]) -> str | None:
    """The request's one Authorization value (None: none sent). Two are refused, whichever
    reader looks: some take the first, some the last, and a proxy may have added one."""
    found = list(values)
    if len(found) > 1:
        raise Unauthenticated(TWO_KEYS)
    return found[0] if found else None


def secret_from_header(authorization: str | None) -> str:
    """``Bearer <key>`` (any case), or the bare key; raises Unauthenticated when absent."""
    if authorization is None or not authorization.strip():
        raise Unauthenticated(MISSING_KEY)
    scheme, _, rest = authorization.strip().partition(" ")
    secret = rest.strip() if scheme.lower() == "bearer" else authorization.strip()
    if not secret:
        raise Unauthenticated(MISSING_KEY)
    return secret


def new_record(role: Role, tenant: str | None, expires_in_s: float | None,
               now: float | None = None) -> ApiKeyRecord:
    created = time.time() if now is None else now
    return ApiKeyRecord(
        key_id=new_key_id(), role=role, tenant=tenant, created_at=created,
        expires_at=None if expires_in_s is None else created + expires_in_s,
    )

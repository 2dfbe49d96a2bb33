"""Tenants and API keys over the state store.

The request path (``authenticate``) reads an in-memory cache of
``/inferplex/apikeys/`` fed by the store's watch, never the store itself; every
write is create-if-absent or compare-and-set, so two replicas (or two racing
admins) cannot both create the same tenant.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from kserve.errors import Conflict, InvalidArgument, NotFound, Unauthenticated
from store import keys
from store.base import KeyValue, StateStore
from store.cache import PrefixCache
from tenants.auth import Principal, Role
from tenants.keys import (
    UNKNOWN_KEY,
    ApiKeyRecord,
    hash_secret,
    new_record,
    new_secret,
    secret_from_header,
)
from tenants.naming import check_tenant_name

log = logging.getLogger(__name__)


class SchedulingPolicy(BaseModel):
    """How the scheduler treats a tenant's requests (admission.TenantPolicy), set by the admin."""

    weight: float = Field(1.0, gt=0, le=1e6, description="Share of contended instance time, relative "
                          "to other tenants' weights (default equal).")
    rate_per_s: float | None = Field(None, gt=0, le=1e9, description="Token-bucket request rate; "
                                     "over it: 429 with Retry-After. None: no rate quota.")
    burst: int | None = Field(None, ge=1, le=10**9, description="Bucket size (default: the rate, at least 1).")
    max_concurrent: int | None = Field(None, ge=1, le=10**9, description="Requests admitted and not "
                                       "yet answered; over it: 429.")
    service_class: Literal["interactive", "batch"] = Field(
        "interactive", description="interactive: every request has a deadline (arrival + SLO); "
        "batch: no deadline, runs only in capacity interactive work leaves idle, bounded queue (429 when full).")
    memory_share: float | None = Field(
        None, gt=0, le=1, description="Fraction of all instances' memory this tenant's models may hold "
        "safe from other tenants: while within it, no other tenant's load evicts them, and it may "
        "evict models of tenants over their share. None: no share (its models may be evicted by anyone).")
    memory_share_bytes: int | None = Field(
        None, ge=1, le=1 << 60, description="The same share in bytes (this wins when both are set).")


class Tenant(SchedulingPolicy):
    name: str
    display_name: str = ""
    quotas: dict[str, float] = Field(default_factory=dict)
    created_at: float


class TenantService:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        # writes here wait for this cache to show them (``caught_up``), so an issued key works
        # on this replica, and a revoked or deleted one stops working, as soon as the call returns
        self._keys = PrefixCache(store, keys.APIKEYS, decode=ApiKeyRecord.model_validate_json)
        # the request path reads a tenant's scheduling policy from here, never from the store
        self._tenants = PrefixCache(store, keys.TENANTS, decode=Tenant.model_validate_json)

    async def start(self) -> None:
        await self._keys.start()
        await self._tenants.start()

    async def close(self) -> None:
        await self._keys.close()
        await self._tenants.close()

    # ------------------------------------------------------------------ request path

    async def authenticate(self, authorization: str | None) -> Principal:
        secret = secret_from_header(authorization)
        record: ApiKeyRecord | None = self._keys.get(keys.apikey(hash_secret(secret)))
        if record is None:
            raise Unauthenticated(UNKNOWN_KEY)
        return record.principal(time.time())

    # ------------------------------------------------------------------ tenants

    async def create_tenant(self, name: str, display_name: str = "",
                            quotas: dict[str, float] | None = None) -> Tenant:
        check_tenant_name(name)
        bad = sorted(k for k, v in (quotas or {}).items() if not math.isfinite(v))
        if bad:
            raise InvalidArgument(f"quotas {', '.join(bad)} must be finite numbers")
        if await self._remains(name):
            # a delete that stopped half-way: its models or keys would pass to the new owner
            raise Conflict(f"tenant {name!r} was deleted but not all of its models and keys are gone "
                           f"yet: run DELETE /admin/tenants/{name} again, then create it")
        tenant = Tenant(name=name, display_name=display_name, quotas=quotas or {}, created_at=time.time())
        rev = await self.store.create(keys.tenant(name), tenant.model_dump_json().encode())
        if rev is None:
            raise Conflict(f"tenant {name!r} already exists")
        log.info("created tenant %s", name)
        return tenant

    def memory_shares(self) -> dict[str, tuple[float | None, int | None]]:
        """Tenant -> (memory_share, memory_share_bytes), for the tenants that have one."""
        return {t.name: (t.memory_share, t.memory_share_bytes) for _, t in self._tenants.items()
                if t.memory_share is not None or t.memory_share_bytes is not None}

    def policy(self, name: str) -> SchedulingPolicy | None:
        """The tenant's scheduling policy as this replica's cache holds it (None: unknown)."""
        return self._tenants.get(keys.tenant(name))

    async def update_policy(self, name: str, changes: dict[str, Any]) -> Tenant:
        """Change some of a tenant's scheduling fields (compare-and-set on its record)."""
        unknown = sorted(set(changes) - set(SchedulingPolicy.model_fields))
        if unknown:
            raise InvalidArgument(f"unknown tenant settings {unknown}; settable: "
                                  f"{sorted(SchedulingPolicy.model_fields)}")

        def change(value: dict[str, Any]) -> dict[str, Any]:
            try:
                return Tenant.model_validate({**value, **changes}).model_dump()
            except ValueError as exc:
                raise InvalidArgument(f"invalid tenant settings: {exc}") from None

        updated = await self.store.update_json(keys.tenant(name), change)
        if updated is None:
            raise NotFound(f"unknown tenant {name!r}: create it with POST /admin/tenants")
        value, rev = updated
        await self._tenants.caught_up(rev)  # the new policy applies on this replica when this returns
        log.info("tenant %s scheduling policy now %s", name, {k: value[k] for k in SchedulingPolicy.model_fields})
        return Tenant.model_validate(value)

    async def list_tenants(self) -> list[Tenant]:
        return [Tenant.model_validate(kv.json()) for kv in await self.store.list_prefix(keys.TENANTS)]

    async def get_tenant(self, name: str) -> Tenant:
        return Tenant.model_validate((await self._record(name)).json())

    async def tenant_created(self, name: str) -> int:
        """The tenant record's identity (its create revision), for ``StateStore.create_under``:
        a tenant deleted and re-created under the same name has another one."""
        return (await self._record(name)).created

    async def _record(self, name: str) -> KeyValue:
        try:
            kv = await self.store.get(keys.tenant(name))
        except ValueError:  # empty or with a '/': no tenant can have that name
            kv = None
        if kv is None:
            raise NotFound(f"unknown tenant {name!r}: create it with POST /admin/tenants")
        return kv

    async def _remains(self, name: str) -> bool:
        if await self.store.list_prefix(keys.models_of(name)):
            return True
        return any(kv.json().get("tenant") == name for kv in await self.store.list_prefix(keys.APIKEYS))

    async def delete_tenant(self, name: str) -> bool:
        """Deletes the tenant record, then all its keys; returns whether the record was there.

        The record goes first: from then on no model version can be created for this tenant
        (``create_under``), so the caller's removal of its models (listed from the store
        afterwards) misses nothing. Safe to repeat after a failure half-way."""
        try:
            existed = await self.store.delete(keys.tenant(name))
        except ValueError:
            raise NotFound(f"unknown tenant {name!r}: create it with POST /admin/tenants") from None
        deleted = []
        for kv in await self.store.list_prefix(keys.APIKEYS):
            if kv.json().get("tenant") == name and await self.store.delete(kv.key):
                deleted.append(kv)
        await self._keys.caught_up_with_deletes(deleted)  # its keys stop working here at once
        log.info("deleted tenant %s (record %s, %d keys)", name, "removed" if existed else "already gone",
                 len(deleted))
        return existed

    # ------------------------------------------------------------------ keys

    async def issue_key(self, role: Role, tenant: str | None = None,
                        expires_in_s: float | None = None) -> tuple[ApiKeyRecord, str]:
        """A new key; returns (record, secret). The secret exists only in this return value."""
        if role == "tenant":
            if tenant is None:
                raise InvalidArgument("a tenant key needs a tenant")
            await self.get_tenant(tenant)
        elif tenant is not None:
            raise InvalidArgument("admin keys are not bound to a tenant")
        # nan compares false with everything: it would make a key that never expires
        if expires_in_s is not None and not (math.isfinite(expires_in_s) and expires_in_s > 0):
            raise InvalidArgument(f"expires_in_s must be a finite number > 0, got {expires_in_s}")
        record = new_record(role, tenant, expires_in_s)
        secret = new_secret()
        await self._put_new_key(secret, record)
        log.info("issued %s key %s for tenant %s", role, record.key_id, tenant)
        return record, secret

    async def _put_new_key(self, secret: str, record: ApiKeyRecord) -> None:
        rev = await self.store.create(keys.apikey(hash_secret(secret)), record.model_dump_json().encode())
        if rev is None:
            raise Conflict("API key collision; issue the key again")  # 256 random bits: never
        await self._keys.caught_up(rev)

    async def list_keys(self, tenant: str | None) -> list[ApiKeyRecord]:
        """Keys of one tenant (or the admin keys for None), secrets never included."""
        records = [ApiKeyRecord.model_validate(kv.json()) for kv in await self.store.list_prefix(keys.APIKEYS)]
        return sorted((r for r in records if r.tenant == tenant), key=lambda r: r.created_at)

    async def revoke_key(self, key_id: str) -> ApiKeyRecord:
        for kv in await self.store.list_prefix(keys.APIKEYS):
            if kv.json().get("key_id") != key_id:
                continue

            def revoke(value: dict[str, Any]) -> dict[str, Any]:
                return {**value, "revoked": True}

            updated = await self.store.update_json(kv.key, revoke)
            if updated is None:
                break  # deleted meanwhile (its tenant went away)
            await self._keys.caught_up(updated[1])
            log.info("revoked key %s", key_id)
            return ApiKeyRecord.model_validate(updated[0])
        raise NotFound(f"unknown API key id {key_id!r}: list keys with GET /admin/tenants/<tenant>/keys")

    async def ensure_admin_key(self, bootstrap: str | None) -> str | None:
        """On the very first start, create an admin key (``bootstrap`` if given) and return
        its secret; afterwards (or on another replica) return None."""
        # create-if-absent marker: exactly one replica mints the first admin key
        if await self.store.create(keys.BOOTSTRAP_ADMIN, b'{"done": true}') is None:
            return None
        secret = bootstrap or new_secret()
        await self._put_new_key(secret, new_record("admin", None, None))
        log.info("created the first admin key")
        return secret

"""Operator REST API for tenants and API keys (admin keys only)."""

from __future__ import annotations

import contextlib
import logging
from typing import Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from controlplane.api_contract import ADMIN, ADMIN_INPUT, KEYED, StrictBody, errors
from controlplane.deps import AdminDep, ServicesDep
from kserve.errors import NotFound
from tenants.auth import Role
from tenants.keys import ApiKeyRecord
from tenants.naming import qualified_name
from tenants.service import Tenant

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", tags=["admin: tenants and keys"])


class TenantCreate(StrictBody):
    name: str = Field(description="2-32 characters: lowercase letters, digits and '-', starting with a letter.")
    display_name: str = Field("", description="Free text for people.")
    quotas: dict[str, float] = Field(default_factory=dict, description="Per-tenant limits (used by admission).")


class TenantList(BaseModel):
    tenants: list[Tenant]


class TenantDetail(Tenant):
    models: list[str] = Field(description="Names of the tenant's models.")


class KeyRequest(StrictBody):
    expires_in_s: float | None = Field(None, description="Lifetime in seconds; none = until revoked.")


class IssuedKey(BaseModel):
    key_id: str = Field(description="Public handle, for listing and revoking.")
    key: str = Field(description="The secret. Shown only in this response; store it now.")
    role: Role
    tenant: str | None
    expires_at: float | None


class KeyInfo(BaseModel):
    key_id: str
    role: Role
    tenant: str | None
    created_at: float
    expires_at: float | None
    revoked: bool


class KeyList(BaseModel):
    keys: list[KeyInfo]


class Deleted(BaseModel):
    deleted: str


def _issued(record: ApiKeyRecord, secret: str) -> IssuedKey:
    return IssuedKey(key_id=record.key_id, key=secret, role=record.role, tenant=record.tenant,
                     expires_at=record.expires_at)


def _info(record: ApiKeyRecord) -> KeyInfo:
    return KeyInfo(**record.model_dump())


@router.post("/tenants", status_code=status.HTTP_201_CREATED, response_model=Tenant,
             responses=errors(400, *KEYED, 409, 413), summary="Create a tenant (409 if it exists)")
async def create_tenant(body: TenantCreate, services: ServicesDep, _: AdminDep) -> Tenant:
    return await services.tenants.create_tenant(body.name, body.display_name, body.quotas)


class TenantUpdate(StrictBody):
    """Scheduling settings to change; the ones left out keep their values."""

    weight: float | None = None
    rate_per_s: float | None = None
    burst: int | None = None
    max_concurrent: int | None = None
    service_class: Literal["interactive", "batch"] | None = None
    memory_share: float | None = Field(None, gt=0, le=1)
    memory_share_bytes: int | None = Field(None, ge=1)


@router.patch("/tenants/{tenant}", response_model=Tenant, responses=errors(400, *KEYED, 404, 409, 413),
              summary="Change a tenant's scheduling policy: weight, rate and concurrency quotas, service "
              "class, memory share")
async def update_tenant(tenant: str, body: TenantUpdate, services: ServicesDep, _: AdminDep) -> Tenant:
    return await services.tenants.update_policy(tenant, body.model_dump(exclude_unset=True))


@router.get("/tenants", response_model=TenantList, responses=ADMIN, summary="List tenants")
async def list_tenants(services: ServicesDep, _: AdminDep) -> TenantList:
    return TenantList(tenants=await services.tenants.list_tenants())


@router.get("/tenants/{tenant}", response_model=TenantDetail, responses=errors(*KEYED, 404),
            summary="Describe a tenant")
async def get_tenant(tenant: str, services: ServicesDep, _: AdminDep) -> TenantDetail:
    record = await services.tenants.get_tenant(tenant)
    names = sorted({m.name for m in services.catalog.list(tenant)})
    return TenantDetail(**record.model_dump(), models=names)


@router.delete("/tenants/{tenant}", response_model=Deleted, responses=errors(*KEYED, 404, 409),
               summary="Delete a tenant, its keys and its models (unloaded from every instance first)")
async def delete_tenant(tenant: str, services: ServicesDep, _: AdminDep) -> Deleted:
    # the record first (uploads in flight then fail), then what belonged to it, read from
    # the store, not the cache: a version committed a moment ago must go too. Repeating a
    # delete that failed half-way finishes it (the record is gone, its models are not).
    existed = await services.tenants.delete_tenant(tenant)
    names = await services.catalog.stored_model_names(tenant)
    if not existed and not names:
        raise NotFound(f"unknown tenant {tenant!r}: create it with POST /admin/tenants")
    for name in names:
        await services.placement.unload_everywhere(qualified_name(tenant, name))
        with contextlib.suppress(NotFound):  # another replica's delete got there first
            await services.catalog.delete(tenant, name)
    return Deleted(deleted=tenant)


@router.post("/tenants/{tenant}/keys", status_code=status.HTTP_201_CREATED, response_model=IssuedKey,
             responses=errors(400, *KEYED, 404, 413),
             summary="Issue an API key for a tenant (the secret is shown once)")
async def issue_tenant_key(tenant: str, services: ServicesDep, _: AdminDep,
                           body: KeyRequest | None = None) -> IssuedKey:
    record, secret = await services.tenants.issue_key(
        "tenant", tenant, body.expires_in_s if body else None)
    return _issued(record, secret)


@router.get("/tenants/{tenant}/keys", response_model=KeyList, responses=errors(*KEYED, 404), summary="List a tenant's keys (ids, never secrets)")
async def list_tenant_keys(tenant: str, services: ServicesDep, _: AdminDep) -> KeyList:
    await services.tenants.get_tenant(tenant)
    return KeyList(keys=[_info(r) for r in await services.tenants.list_keys(tenant)])


@router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=IssuedKey, responses=ADMIN_INPUT,
             summary="Issue another admin key (the secret is shown once)")
async def issue_admin_key(services: ServicesDep, _: AdminDep, body: KeyRequest | None = None) -> IssuedKey:
    record, secret = await services.tenants.issue_key("admin", None, body.expires_in_s if body else None)
    return _issued(record, secret)


@router.get("/keys", response_model=KeyList, responses=ADMIN, summary="List admin keys (ids, never secrets)")
async def list_admin_keys(services: ServicesDep, _: AdminDep) -> KeyList:
    return KeyList(keys=[_info(r) for r in await services.tenants.list_keys(None)])


@router.delete("/keys/{key_id}", response_model=KeyInfo, responses=errors(*KEYED, 404, 409), summary="Revoke a key (takes effect at once)")
async def revoke_key(key_id: str, services: ServicesDep, _: AdminDep) -> KeyInfo:
    return _info(await services.tenants.revoke_key(key_id))

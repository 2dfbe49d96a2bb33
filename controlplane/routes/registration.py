"""Self-registration of instances under a lease, and who leads placement.

``inferplex worker --register URL`` calls these (admin key). Registration grants a
store lease and writes the instance record bound to it; heartbeats refresh the
lease. Any replica can answer either call: leases live in the shared store. When a
worker stops heartbeating its lease expires, the record vanishes, and every replica
drops the instance from routing.

The register answer hands the worker the instance credential (settings
``instance_restricted_key`` / ``instance_restricted_value``) it restricts its APIs
with; a replica without one refuses to register workers, which would otherwise be
open to anyone who can reach them.

An admin deleting a self-registered instance (``DELETE /admin/instances/{id}``)
only lasts until its next heartbeat, which re-registers it; to retire a worker,
stop it (a graceful stop deregisters at once).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from fastapi import APIRouter
from pydantic import Field

from controlplane.api_contract import ADMIN, KEYED, StrictBody, errors
from controlplane.deps import AdminDep, ServicesDep
from kserve.errors import NotFound, PermissionDenied
from store import keys
from store.base import LeaseExpired, StoreUnavailable

log = logging.getLogger(__name__)

router = APIRouter(tags=["instances"])

INSTANCE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class RegisterBody(StrictBody):
    instance_id: str = Field(pattern=INSTANCE_ID_PATTERN,
                             description="stable name of the instance: letters, digits, '.', '_', '-'")
    http_url: str = Field(description="host:port of the v2 HTTP endpoint, as the control plane reaches it")
    grpc_url: str = Field(description="host:port of the v2 gRPC endpoint")
    memory_bytes: int = Field(gt=0, description="memory the control plane may fill with models")
    instance_class: str = Field("cpu", min_length=1, max_length=64)
    ttl_s: int | None = Field(None, ge=1, le=300,
                              description="lease TTL; default: the replica's instance_lease_ttl_s")


class LeaseBody(StrictBody):
    lease_id: int


def _gone(instance_id: str, lease_id: int) -> NotFound:
    return NotFound(
        f"instance {instance_id!r} is not registered under lease {lease_id:x} (it expired or was "
        "replaced): register again with POST /admin/instances/register"
    )


@router.post("/admin/instances/register", responses=errors(400, *KEYED, 413),
             summary="A worker registers itself under a lease it keeps alive with heartbeats")
async def register_instance(body: RegisterBody, services: ServicesDep, _: AdminDep) -> dict[str, Any]:
    credential = services.settings.instance_credential
    if credential is None:
        raise PermissionDenied(
            "this control plane has no instance credential to give workers: set "
            "INFERPLEX_INSTANCE_RESTRICTED_VALUE (the same secret on every replica) and restart it"
        )
    store = services.store
    ttl = body.ttl_s or services.settings.instance_lease_ttl_s
    previous = await store.get(keys.instance(body.instance_id))
    lease = await store.grant_lease(ttl)
    try:
        await services.instances.register(
            body.http_url, body.grpc_url, body.memory_bytes, instance_class=body.instance_class,
            instance_id=body.instance_id, lease=lease,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await store.revoke_lease(lease)
        raise
    inst = services.instances.get(body.instance_id)
    if inst is not None:
        # a worker that restarted under the same id holds nothing any more: rebuild what it
        # holds from its index (the mirror update reaches the other replicas by watch)
        inst.needs_resync = True
        await services.placement.resync()
    if previous is not None and previous.lease not in (None, lease):
        # the record now rides on the new lease; the old one only holds garbage
        with contextlib.suppress(StoreUnavailable, LeaseExpired):
            await store.revoke_lease(previous.lease)
    log.info("instance %s registered under lease %x (TTL %ds)", body.instance_id, lease, ttl)
    return {"instance_id": body.instance_id, "lease_id": lease, "ttl_s": ttl,
            "credential": {"key": credential.key, "value": credential.value}}


@router.post("/admin/instances/{instance_id}/heartbeat", responses=errors(400, *KEYED, 404, 413),
             summary="Refresh a self-registered worker's lease (404: register again)")
async def heartbeat(instance_id: str, body: LeaseBody, services: ServicesDep,
                    _: AdminDep) -> dict[str, Any]:
    kv = await services.store.get(keys.instance(instance_id))
    if kv is None or kv.lease != body.lease_id:
        raise _gone(instance_id, body.lease_id)
    try:
        await services.store.refresh_lease(body.lease_id)
    except LeaseExpired:
        raise _gone(instance_id, body.lease_id) from None
    return {"instance_id": instance_id, "lease_id": body.lease_id}


@router.post("/admin/instances/{instance_id}/deregister", responses=errors(400, *KEYED, 404, 413))
async def deregister(instance_id: str, body: LeaseBody, services: ServicesDep,
                     _: AdminDep) -> dict[str, Any]:
    """Graceful stop: revoking the lease removes the record (and only this worker's)."""
    kv = await services.store.get(keys.instance(instance_id))
    if kv is None or kv.lease != body.lease_id:
        raise _gone(instance_id, body.lease_id)
    with contextlib.suppress(LeaseExpired):
        await services.store.revoke_lease(body.lease_id)
    await services.instances.refresh()
    log.info("instance %s deregistered", instance_id)
    return {"instance_id": instance_id, "deregistered": True}


@router.get("/admin/leader", responses=ADMIN)
async def leader(services: ServicesDep, _: AdminDep) -> dict[str, Any]:
    """Which replica drives placement now, and what this replica's reconcile loop did."""
    return await services.reconciler.describe()

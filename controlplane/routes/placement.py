"""Operator API for placement: what each instance holds and why (issue 12)."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from controlplane.api_contract import ADMIN
from controlplane.deps import AdminDep, ServicesDep
from tenants.naming import split_qualified

router = APIRouter(prefix="/admin/placement", tags=["admin: placement"])


class Resident(BaseModel):
    model: str = Field(description="tenant/model")
    tenant: str
    version: str
    state: Literal["ready", "loading"]
    bytes: int = Field(description="memory the control plane accounts for it")
    rate_per_s: float = Field(description="smoothed request rate: this replica's arrivals, and on the "
                              "placement leader every replica's (as last published)")
    in_flight: int = Field(description="requests this replica is serving for it now (never evicted while > 0)")
    last_used_s_ago: float | None = Field(None, description="seconds since its last request here; null: none yet")


class InstancePlacement(BaseModel):
    instance_id: str
    instance_class: str
    healthy: bool
    budget_bytes: int
    used_bytes: int
    cache: dict[str, Any] | None = Field(
        None, description="the worker's local artifact cache (budget_bytes, used_bytes, entries, hits, "
        "misses, ...); null for instances without one (NVIDIA Triton)")
    cached_models: list[str] = Field(
        default_factory=list, description="tenant/model of the models whose files its artifact cache "
        "holds, as the placement leader last read them: a load of one there is warm")
    models: list[Resident]


class Decision(BaseModel):
    at: float = Field(description="epoch seconds")
    text: str


class Share(BaseModel):
    fraction: float | None
    bytes: int | None


class PlacementView(BaseModel):
    policy: str = Field(description="INFERPLEX_PLACEMENT_POLICY: cost, lru or static")
    instances: list[InstancePlacement]
    memory_shares: dict[str, Share] = Field(description="tenants with a memory share")
    decisions: list[Decision] = Field(description="the planner's latest decisions, newest first, with reasons")


def _resident(q: str, version: str, size: int, state: Literal["ready", "loading"], services: Any,
              now: float) -> Resident:
    tenant, name = split_qualified(q) if "__" in q else ("", q)
    placement = services.placement
    last = placement.activity.last_used.get(q)
    return Resident(model=f"{tenant}/{name}", tenant=tenant, version=version, state=state, bytes=size,
                    rate_per_s=round(placement.rate_per_s(q, now), 4),
                    in_flight=placement.activity.in_flight.get(q, 0),
                    last_used_s_ago=None if last is None else round(now - last, 3))


@router.get("", response_model=PlacementView, responses=ADMIN,
            summary="Per instance: budget, used, cache, resident models (bytes, tenant, rate, last use); "
                    "tenants' memory shares; the planner's latest decisions with reasons")
async def get_placement(_: AdminDep, services: ServicesDep) -> PlacementView:
    placement = services.placement
    now = time.monotonic()
    actual = placement.placements()
    out = []
    for inst in services.instances.list():
        iid = inst.record.instance_id
        models = [_resident(q, p.version, p.bytes, "ready", services, now) for q, p in sorted(actual.get(iid, {}).items())]
        for q, pending in sorted(placement.pending_loads().get(iid, {}).items()):
            rec = services.catalog.by_qualified(q)
            models.append(_resident(q, str(rec.version) if rec else "", pending.bytes, "loading", services, now))
        report = await inst.driver.memory_report() if inst.healthy else None
        out.append(InstancePlacement(
            instance_id=iid, instance_class=inst.record.instance_class, healthy=inst.healthy,
            budget_bytes=inst.record.memory_bytes, used_bytes=placement.used_bytes(iid),
            cache=(report or {}).get("cache"),
            cached_models=sorted("/".join(split_qualified(q)) for q in placement.cached_models(iid)),
            models=models))
    shares = {t: Share(fraction=f, bytes=b) for t, (f, b) in services.tenants.memory_shares().items()}
    decisions = [Decision(at=at, text=text) for at, text in reversed(placement.decisions)]
    return PlacementView(policy=services.settings.placement_policy, instances=out, memory_shares=shares,
                         decisions=decisions[:100])

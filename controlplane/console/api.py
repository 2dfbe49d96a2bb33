"""The console's read endpoints (``/admin/console/...``, admin key like the rest of ``/admin``):
what the page shows that no other route answers. Every change the page makes goes through
the existing admin API; these only read."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from controlplane.api_contract import ADMIN, KEYED, errors
from controlplane.console.history import History, Point, Rates
from controlplane.deps import AdminDep, ServicesDep
from store import keys as store_keys
from tenants.keys import ApiKeyRecord
from tenants.naming import split_qualified

router = APIRouter(prefix="/admin/console", tags=["admin: console"])

# a planner decision names models as tenant/model (placement.cluster's label)
_MENTION = re.compile(r"\b([a-z][a-z0-9-]{1,31})/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})")
# per tenant: the rates of the last minute of history
RECENT_S = 60.0


class RatesView(BaseModel):
    requests_per_s: float
    goodput_per_s: float = Field(description="requests answered within their SLO, per second")
    slo_attainment: float | None = Field(
        description="answered within the SLO / (answered + late + dropped + failed + refused as infeasible); "
                    "null: none of those in the interval")
    refusals_per_s: dict[str, float] = Field(description="by reason: quota, infeasible, queue_full, dropped")
    p99_ms: float | None = Field(description="gateway latency p99 (from the histogram's buckets)")
    slo_ms: float | None = Field(description="the tightest SLO among the models that had requests")


class PointView(BaseModel):
    at: float = Field(description="epoch seconds, the end of the interval")
    overall: RatesView
    tenants: dict[str, RatesView]


class HistoryView(BaseModel):
    replica: str = Field(description="the replica whose counters these are (each keeps its own)")
    interval_s: float
    window_s: float
    points: list[PointView] = Field(description="oldest first")


class TenantRow(BaseModel):
    name: str
    display_name: str
    weight: float
    rate_per_s: float | None
    burst: int | None
    max_concurrent: int | None
    service_class: str
    memory_share: float | None
    memory_share_bytes: int | None
    quotas: dict[str, float]
    key_ids: list[str] = Field(description="live keys (not revoked), ids only")
    models: int
    memory_used_bytes: int = Field(description="bytes its resident copies hold across instances")
    recent: RatesView | None = Field(description="the last minute on this replica; null: no history yet")


class TenantTable(BaseModel):
    tenants: list[TenantRow]


class Copy(BaseModel):
    instance_id: str
    state: Literal["ready", "loading"]


class ClassSummary(BaseModel):
    instance_class: str
    exec_p50_ms: dict[str, float] = Field(description="batch size -> p50 execute ms")
    load_cold_p50_ms: float | None
    load_warm_p50_ms: float | None


class ModelRow(BaseModel):
    tenant: str
    name: str
    version: int
    platform: str
    status: str
    reason: str
    slo_ms: float
    size_bytes: int
    profile: list[ClassSummary]
    copies: list[Copy]


class ModelTable(BaseModel):
    models: list[ModelRow]


class Event(BaseModel):
    at: float = Field(description="epoch seconds")
    source: Literal["placement", "admission"]
    kind: str = Field(description="placement: load, evict, refused, failed, other; admission: quota, "
                      "infeasible, queue_full, dropped")
    tenants: list[str]
    models: list[str] = Field(description="tenant/model")
    text: str


class EventList(BaseModel):
    events: list[Event] = Field(description="newest first")


class Replica(BaseModel):
    replica: str
    last_seen_s_ago: float | None = Field(description="since it last published its demand; null: unreadable")
    leader: bool
    this: bool = Field(description="the replica answering (whose history the charts show)")


class ReplicaList(BaseModel):
    leader: str | None = Field(description="the placement leader's identity; null: none now")
    replicas: list[Replica] = Field(description="replicas alive now (each publishes under its own lease)")


def _history(request: Request) -> History:
    return request.app.state.console_history


def _rates(r: Rates) -> RatesView:
    return RatesView(requests_per_s=r.requests_per_s, goodput_per_s=r.goodput_per_s,
                     slo_attainment=r.slo_attainment, refusals_per_s=r.refusals_per_s, p99_ms=r.p99_ms,
                     slo_ms=r.slo_ms)


def _point(p: Point) -> PointView:
    return PointView(at=p.at, overall=_rates(p.overall), tenants={t: _rates(r) for t, r in p.tenants.items()})


@router.get("/history", response_model=HistoryView, responses=ADMIN,
            summary="This replica's recent rates, sampled every few seconds (the console's charts)")
async def history(request: Request, services: ServicesDep, _: AdminDep) -> HistoryView:
    h = _history(request)
    return HistoryView(replica=services.settings.replica_id, interval_s=h.interval_s, window_s=h.window_s,
                       points=[_point(p) for p in h.points])


def _recent(points: list[Point], tenant: str) -> Rates | None:
    """A tenant's rates over the last minute: the intervals' rates averaged."""
    if not points:
        return None
    now = points[-1].at
    window = [p for p in points if p.at > now - RECENT_S]
    mine = [p.tenants[tenant] for p in window if tenant in p.tenants]
    if not mine:
        return Rates(requests_per_s=0.0, refusals_per_s={})
    n = len(window)
    reasons = sorted({k for r in mine for k in r.refusals_per_s})
    attained = [r.slo_attainment for r in mine if r.slo_attainment is not None]
    p99s = [r.p99_ms for r in mine if r.p99_ms is not None]
    return Rates(requests_per_s=round(sum(r.requests_per_s for r in mine) / n, 3),
                 goodput_per_s=round(sum(r.goodput_per_s for r in mine) / n, 3),
                 slo_attainment=round(sum(attained) / len(attained), 4) if attained else None,
                 refusals_per_s={k: round(sum(r.refusals_per_s.get(k, 0.0) for r in mine) / n, 3)
                                 for k in reasons},
                 p99_ms=max(p99s) if p99s else None,
                 slo_ms=min((r.slo_ms for r in mine if r.slo_ms is not None), default=None))


@router.get("/tenants", response_model=TenantTable, responses=ADMIN,
            summary="Every tenant: policy, quotas, memory share, key ids, memory held, last minute's rates")
async def tenants(request: Request, services: ServicesDep, _: AdminDep) -> TenantTable:
    points = list(_history(request).points)
    keys: dict[str, list[str]] = {}
    for kv in await services.store.list_prefix(store_keys.APIKEYS):  # one read for every tenant's
        record = ApiKeyRecord.model_validate(kv.json())
        if record.tenant is not None and not record.revoked:
            keys.setdefault(record.tenant, []).append(record.key_id)
    used: dict[str, int] = {}
    for held in services.placement.placements().values():
        for q, placed in held.items():
            if "__" in q:
                used[split_qualified(q)[0]] = used.get(split_qualified(q)[0], 0) + placed.bytes
    rows = []
    for t in sorted(await services.tenants.list_tenants(), key=lambda t: t.name):
        recent = _recent(points, t.name)
        rows.append(TenantRow(
            name=t.name, display_name=t.display_name, weight=t.weight, rate_per_s=t.rate_per_s, burst=t.burst,
            max_concurrent=t.max_concurrent, service_class=t.service_class, memory_share=t.memory_share,
            memory_share_bytes=t.memory_share_bytes, quotas=t.quotas, key_ids=keys.get(t.name, []),
            models=len({m.name for m in services.catalog.list(t.name)}), memory_used_bytes=used.get(t.name, 0),
            recent=_rates(recent) if recent is not None else None))
    return TenantTable(tenants=rows)


def _ms(stats: object) -> float | None:
    if not isinstance(stats, dict) or "p50_s" not in stats:
        return None
    return round(float(stats["p50_s"]) * 1000, 3)


@router.get("/models", response_model=ModelTable, responses=errors(400, *KEYED),
            summary="Every model version of every tenant (or one): status and reason, SLO, profile, copies")
async def models(services: ServicesDep, _: AdminDep,
                 tenant: Annotated[str | None, Query(max_length=64, description="only this tenant's")] = None,
                 ) -> ModelTable:
    copies: dict[tuple[str, str], list[Copy]] = {}
    for iid, held in services.placement.placements().items():
        for q, placed in held.items():
            copies.setdefault((q, placed.version), []).append(Copy(instance_id=iid, state="ready"))
    for iid, loading in services.placement.pending_loads().items():
        for q in loading:
            rec = services.catalog.by_qualified(q)
            if rec is not None:
                copies.setdefault((q, str(rec.version)), []).append(Copy(instance_id=iid, state="loading"))
    names = [tenant] if tenant else sorted(t.name for t in await services.tenants.list_tenants())
    rows = []
    for name in names:
        for rec in services.catalog.list(name):
            classes = (rec.profile or {}).get("classes") or {}
            profile = [ClassSummary(
                instance_class=cls,
                exec_p50_ms={str(b): v for b, s in sorted((c.get("exec") or {}).items(), key=lambda i: int(i[0]))
                             if (v := _ms(s)) is not None},
                load_cold_p50_ms=_ms(c.get("load_time_cold_s")), load_warm_p50_ms=_ms(c.get("load_time_warm_s")))
                for cls, c in sorted(classes.items())]
            rows.append(ModelRow(tenant=rec.tenant, name=rec.name, version=rec.version, platform=rec.platform,
                                 status=rec.status, reason=rec.reason, slo_ms=rec.slo_ms,
                                 size_bytes=rec.size_bytes, profile=profile,
                                 copies=sorted(copies.get((rec.qualified_name, str(rec.version)), []),
                                               key=lambda c: c.instance_id)))
    return ModelTable(models=rows)


def _mentions(text: str, exists: Callable[[str, str], bool]) -> list[tuple[str, str]]:
    """The (tenant, model) pairs a decision names, in order: only models that exist (a unit
    like ms/MB has a name's shape)."""
    out: list[tuple[str, str]] = []
    for tenant, model in _MENTION.findall(text):
        if (tenant, model) not in out and exists(tenant, model):
            out.append((tenant, model))
    return out


def _kind(text: str) -> str:
    head = text.split(" ", 1)[0]
    if head == "loading" and " failed" in text:
        return "failed"
    return {"loaded": "load", "evicted": "evict", "removed": "evict", "refused": "refused"}.get(head, "other")


@router.get("/decisions", response_model=EventList, responses=errors(400, *KEYED),
            summary="The placement planner's recent loads and evictions with reasons, and recent admission "
                    "refusals and drops, newest first; filtered by tenant and model")
async def decisions(
        services: ServicesDep, _: AdminDep,
        tenant: Annotated[str | None, Query(max_length=64, description="only events naming this tenant")] = None,
        model: Annotated[str | None, Query(max_length=64, description="only events naming this model "
                                           "(its name as its tenant knows it)")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> EventList:
    names: dict[str, set[str]] = {}

    def exists(t: str, m: str) -> bool:
        if t not in names:
            names[t] = {r.name for r in services.catalog.list(t)}
        return m in names[t]

    events = []
    for at, text in services.placement.decisions:
        mentions = _mentions(text, exists)
        events.append(Event(at=at, source="placement", kind=_kind(text), tenants=sorted({t for t, _ in mentions}),
                            models=sorted({f"{t}/{m}" for t, m in mentions}), text=text))
    scheduled = services.gateway.scheduled
    for r in (scheduled.refusals if scheduled is not None else ()):
        events.append(Event(at=r.at, source="admission", kind=r.reason, tenants=[r.tenant],
                            models=[f"{r.tenant}/{r.model}"], text=r.message))

    def wanted(e: Event) -> bool:
        if tenant and tenant not in e.tenants:
            return False
        return not model or any(m.partition("/")[2] == model for m in e.models)

    chosen = sorted((e for e in events if wanted(e)), key=lambda e: e.at, reverse=True)
    return EventList(events=chosen[:limit])


@router.get("/replicas", response_model=ReplicaList, responses=ADMIN,
            summary="The control-plane replicas alive now (by their published demand) and the placement leader")
async def replicas(services: ServicesDep, _: AdminDep) -> ReplicaList:
    me = services.settings.replica_id
    leader = (await services.reconciler.describe()).get("leader")
    seen: dict[str, float | None] = {me: 0.0}
    now = time.time()
    for kv in await services.store.list_prefix(store_keys.DEMAND):
        name = kv.key.removeprefix(store_keys.DEMAND)
        try:
            seen[name] = max(0.0, round(now - float(json.loads(kv.value)["at"]), 3)) if name != me else 0.0
        except (ValueError, KeyError, TypeError):
            seen.setdefault(name, None)
    return ReplicaList(leader=leader, replicas=[Replica(replica=r, last_seen_s_ago=ago, leader=r == leader, this=r == me)
                                                for r, ago in sorted(seen.items())])

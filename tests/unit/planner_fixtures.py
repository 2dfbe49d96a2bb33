"""Builders for placement planner tests: models, residents, instances, snapshots."""

from __future__ import annotations

from placement.cluster import (
    ClusterSnapshot,
    InstanceView,
    LoadState,
    ModelCosts,
    ModelSpec,
    ResidentModel,
    TenantShare,
)
from placement.demand import Demand

MB = 1_000_000


def costs(mem_mb: float = 100, cold_s: float = 1.0, warm_s: float | None = None,
          exec_s: dict[int, float] | None = None, max_batch: int = 1) -> ModelCosts:
    return ModelCosts(int(mem_mb * MB), cold_s, exec_s or {1: 0.01}, warm_s, max_batch)


def spec(name: str, mem_mb: float = 100, cold_s: float = 1.0, *, warm_s: float | None = None,
         exec_s: dict[int, float] | None = None, max_batch: int = 1, slo_s: float = 0.1,
         classes: tuple[str, ...] = ("cpu",), platform: str | None = None) -> ModelSpec:
    tenant, _, model = name.partition("__")
    c = costs(mem_mb, cold_s, warm_s, exec_s, max_batch)
    return ModelSpec(name, tenant, f"{tenant}/{model}", slo_s, {k: c for k in classes}, platform)


def res(name: str, mem_mb: float = 100, *, state: LoadState = LoadState.READY, in_flight: int = 0,
        queued: int = 0, queued_feasible: bool = False, last_used: float = 0.0,
        since: float = -1e6, ready_at: float | None = None) -> ResidentModel:
    tenant = name.partition("__")[0]
    return ResidentModel(name, tenant, int(mem_mb * MB), state, in_flight, queued, queued_feasible,
                         last_used, since, ready_at)


def inst(iid: str, budget_mb: float = 1000, *residents: ResidentModel, cls: str = "cpu",
         healthy: bool = True, platforms: frozenset[str] | None = None,
         cached: frozenset[str] = frozenset()) -> InstanceView:
    return InstanceView(iid, cls, int(budget_mb * MB), tuple(residents), healthy, platforms, cached)


def rate(r: float, short: float | None = None) -> Demand:
    return Demand(r, r if short is None else short)


def snapshot(now: float, instances: list[InstanceView], models: list[ModelSpec],
             demand: dict[str, Demand] | None = None, wanted: tuple[str, ...] = (),
             shares: dict[str, TenantShare] | None = None) -> ClusterSnapshot:
    return ClusterSnapshot(now, tuple(instances), {m.name: m for m in models}, demand or {},
                           shares or {}, wanted)

"""Builders for placement planner tests: models, residents, instances, snapshots."""

from __future__ import annotations

from dataclasses import replace

from placement.cluster import (
    ClusterSnapshot,
    InstanceView,
    Load,
    LoadState,
    ModelCosts,
    ModelSpec,
    Plan,
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


class SimCluster:
    """Instances that carry out plans on a virtual clock: a Load is LOADING until its
    ready_at, an Unload goes at once. Counts every action it applied."""

    def __init__(self, instances: list[InstanceView]) -> None:
        self.instances = {i.instance_id: i for i in instances}
        self.loads = 0
        self.unloads = 0

    def apply(self, plan: Plan, now: float) -> None:
        for a in plan.actions:
            view = self.instances[a.instance_id]
            if isinstance(a, Load):
                r = ResidentModel(a.model, a.model.partition("__")[0], a.bytes, LoadState.LOADING,
                                  resident_since=now, ready_at=a.ready_at)
                self.instances[a.instance_id] = replace(view, residents=(*view.residents, r))
                self.loads += 1
            else:
                kept = tuple(r for r in view.residents if r.name != a.model)
                self.instances[a.instance_id] = replace(view, residents=kept)
                self.unloads += 1

    def advance(self, now: float) -> None:
        for iid, view in self.instances.items():
            rs = tuple(replace(r, state=LoadState.READY, ready_at=None)
                       if r.state is LoadState.LOADING and r.ready_at is not None and r.ready_at <= now else r
                       for r in view.residents)
            self.instances[iid] = replace(view, residents=rs)

    def views(self) -> list[InstanceView]:
        return list(self.instances.values())

    def copies(self, model: str) -> int:
        return sum(1 for v in self.instances.values() for r in v.residents if r.name == model)

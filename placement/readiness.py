"""Readiness: "model M can be ready on instance I at time T", for admission (issue 12).

A cold request is admitted only if load + execute still meet its deadline; this says when the
load would end, counting the loads already queued on each instance (one at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from placement.cluster import ClusterSnapshot, LoadState, ModelSpec, Plan, PlannerConfig
from placement.planning_pass import PlanningPass
from placement.victims import choose_victims


class Percentiles(Protocol):
    """What ``typical_ready`` asks of the profiler's predictor (profiler.predictor)."""

    def load_time(self, model: str, instance_class: str, percentile: float | None = None, *,
                  warm: bool = False) -> float | None: ...

    def exec_time(self, model: str, instance_class: str, batch: int,
                  percentile: float | None = None) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ReadyAt:
    instance_id: str
    at: float
    loaded: bool
    """Already loaded there (``at`` is the asking time)."""


class Readiness:
    """Answers "when can model M be ready, and where" for one snapshot and the plan made from
    it, as often as admission asks: now where a copy is loaded; when its load ends where one
    is loading (in the snapshot or the plan); else after the loads already queued on the
    instance that would take it (one load at a time per instance) plus its own load, cold or
    warm as that instance's cache has it, on the instance where that is earliest. Unloads that
    make room are taken as instant. None when no instance could take it now (no room even after
    evicting every copy that may go, no profile for any class, no server for its platform)."""

    def __init__(self, snap: ClusterSnapshot, plan: Plan | None = None) -> None:
        self._pass = PlanningPass(snap, PlannerConfig())
        if plan is not None:
            self._pass.replay(plan)
        self._loaded: dict[str, str] = {}
        self._loading: dict[str, tuple[float, str]] = {}
        for slot in self._pass.slots:
            for name, c in slot.copies.items():
                if c.resident.state is LoadState.READY:
                    self._loaded.setdefault(name, slot.iid)
                elif name not in self._loading or slot.ready[name] < self._loading[name][0]:
                    self._loading[name] = (slot.ready[name], slot.iid)

    def ready_at(self, model: str, now: float) -> ReadyAt | None:
        if model in self._loaded:
            return ReadyAt(self._loaded[model], now, True)
        if model in self._loading:
            at, iid = self._loading[model]
            return ReadyAt(iid, max(now, at), False)
        p = self._pass
        spec = p.snap.models.get(model)
        if spec is None:
            return None
        best: ReadyAt | None = None
        for slot, costs in p.eligible(spec, optional=False):
            if choose_victims(slot, costs.memory_bytes, spec.tenant, p.ledger, p.costs) is None:
                continue
            at = max(now, slot.load_free_at) + costs.load_s(model in slot.view.cached)
            if best is None or at < best.at:
                best = ReadyAt(slot.iid, at, False)
        return best


def ready_at(snap: ClusterSnapshot, model: str, now: float, plan: Plan | None = None) -> ReadyAt | None:
    """``Readiness(snap, plan).ready_at(model, now)``, for one question."""
    return Readiness(snap, plan).ready_at(model, now)


def typical_ready(snap: ClusterSnapshot, model: str, ready: ReadyAt,
                  predictor: Percentiles) -> tuple[float, float] | None:
    """(seconds from ``snap.now`` until ``model`` is ready, then to execute a batch of one)
    where ``ready`` says it loads: ``typical_ready_on`` for that instance's class and cache."""
    spec = snap.models.get(model)
    view = next((i for i in snap.instances if i.instance_id == ready.instance_id), None)
    if spec is None or view is None:
        return None
    return typical_ready_on(spec, view.instance_class, model in view.cached, ready.at, snap.now, predictor)


def typical_ready_on(spec: ModelSpec, instance_class: str, warm: bool, planned_at: float, now: float,
                     predictor: Percentiles) -> tuple[float, float] | None:
    """(seconds from ``now`` until the model is ready, then to execute a batch of one) for a
    load the planner has ready at ``planned_at`` on an instance of ``instance_class`` (from
    its own artifact cache when ``warm``), with its own load and execution at their median,
    not the p99 the planner plans with (the loads queued before it there stay at the
    planner's): a cold request is refused before its load only when even a typical load
    makes it late. None when nothing is measured (a guessed load time refuses nobody). The
    control plane (``PlacementService``) and the simulator ask this same question."""
    name = spec.name
    typical = predictor.load_time(name, instance_class, 50.0)
    costs = spec.costs.get(instance_class)
    if typical is None or costs is None:
        return None
    if warm:
        typical = predictor.load_time(name, instance_class, 50.0, warm=True) or typical
    exec_s = predictor.exec_time(name, instance_class, 1, 50.0)
    if exec_s is None:
        exec_s = min(costs.exec_s.values(), default=0.0)
    return max(0.0, planned_at - costs.load_s(warm) + typical - now), exec_s

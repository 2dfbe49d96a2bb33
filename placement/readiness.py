"""Readiness: "model M can be ready on instance I at time T", for admission (issue 12).

A cold request is admitted only if load + execute still meet its deadline; this says when the
load would end, counting the loads already queued on each instance (one at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

from placement.cluster import ClusterSnapshot, LoadState, Plan, PlannerConfig
from placement.planning_pass import PlanningPass
from placement.victims import choose_victims


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

"""One planning pass's working state: where a model can go and what placing it does (issue 12).

``placement/planner.py`` decides what to place; this finds the instance and records the
actions (Unloads of the victims, then the Load), keeping memory, load queues, utilisation and
tenants' usage current as it goes.
"""

from __future__ import annotations

from placement.cluster import (
    Action,
    ClusterSnapshot,
    Load,
    LoadState,
    ModelCosts,
    ModelSpec,
    Plan,
    PlannerConfig,
    Refusal,
    ResidentModel,
    Unload,
)
from placement.demand import Demand
from placement.refusals import refusal
from placement.victims import (
    Blocked,
    Copy,
    CostModel,
    SharesLedger,
    Slot,
    Victims,
    build_slots,
    choose_victims,
    mb,
    num,
)

_NO_DEMAND = Demand()


_EVICT_NOTHING = -1.0
"""A cost density below every copy's: with it as the bound, nothing is evicted (free memory only)."""


class PlanningPass:
    """The working state of one ``Planner.plan`` call: the slots as the actions planned so far
    leave them, where a model would go, and the doing (which records the actions)."""

    def __init__(self, snap: ClusterSnapshot, config: PlannerConfig, *, wanted_free_only: bool = False) -> None:
        self.snap = snap
        self.config = config
        self.now = snap.now
        self.slots, self.copies = build_slots(snap)
        self.ledger = SharesLedger(snap, self.slots)
        self.costs = CostModel(snap.models, snap.demand, {m: len(cs) for m, cs in self.copies.items()},
                               config.victim_order)
        self.actions: list[Action] = []
        self.refusals: list[Refusal] = []
        self.wanted_free_only = wanted_free_only
        """A wanted model takes only free memory (``Planner.place`` guarded, no ``evict_margin``)."""

    def util(self, slot: Slot) -> float:
        """How loaded the slot's copies are (demand over what each serves within its SLO),
        summed over the copies the snapshot had, computed the first time a pass asks (a place
        with room on a few instances never reads the rest), plus what the pass changed since."""
        if slot.utilization_base is None:
            models, demand, copies = self.snap.models, self.snap.demand, self.costs.copies
            cls, total = slot.cls, 0.0
            for r in slot.view.residents:
                spec = models.get(r.name)
                costs = spec.costs.get(cls) if spec is not None else None
                cap = costs.capacity_per_s(spec.slo_s) if costs is not None and spec is not None else 0.0
                if cap > 0:
                    d = demand.get(r.name)
                    total += (d.sustained if d is not None else 0.0) / max(1, copies.get(r.name, 1)) / cap
            slot.utilization_base = total
        return slot.utilization_base + slot.utilization

    # ---- numbers ---------------------------------------------------------------------------

    def demand(self, name: str) -> Demand:
        return self.snap.demand.get(name, _NO_DEMAND)

    def capacity(self, spec: ModelSpec, cls: str) -> float:
        costs = spec.costs.get(cls)
        return costs.capacity_per_s(spec.slo_s) if costs else 0.0

    def live(self, name: str) -> list[Copy]:
        return [c for c in self.copies.get(name, ()) if not c.gone]

    def _copy_util(self, name: str, cls: str) -> float:
        spec = self.snap.models.get(name)
        cap = self.capacity(spec, cls) if spec else 0.0
        n = max(1, len(self.copies.get(name, ())))
        return self.demand(name).sustained / n / cap if cap > 0 else 0.0

    # ---- where -----------------------------------------------------------------------------

    def eligible(self, spec: ModelSpec, optional: bool) -> list[tuple[Slot, ModelCosts]]:
        out = []
        for s in self.slots:
            costs = spec.costs.get(s.cls)
            if costs is None or s.view.draining or not s.view.serves(spec.platform) or spec.name in s.copies:
                continue
            if spec.load_failure is not None and spec.load_failure.blocks(s.iid, self.now):
                continue
            if optional and s.pending_loads >= self.config.max_queued_loads:
                continue
            out.append((s, costs))
        return out

    def best_slot(self, spec: ModelSpec, optional: bool, below: float | None,
                  blocked: Blocked | None = None) -> tuple[Slot, ModelCosts, Victims] | None:
        """Where one copy of ``spec`` goes: the best instance with room, else the one where
        evicting copies cheaper than ``below`` (ms/MB·s; None: any) frees room at least cost."""
        candidates = self.eligible(spec, optional)
        roomy = [(s, c) for s, c in candidates if s.free >= c.memory_bytes]
        if roomy:
            # earliest ready; then utilisation in steps of 1% (below that it is noise), read only
            # for the instances tied on readiness; then the most room left
            ready = [self.start_at(s) + c.load_s(spec.name in s.view.cached) for s, c in roomy]
            first = min(ready)
            s, c = min((sc for sc, at in zip(roomy, ready, strict=True) if at == first),
                       key=lambda sc: (round(self.util(sc[0]), 2), sc[1].memory_bytes - sc[0].free))
            return s, c, Victims((), 0.0)
        best: tuple[tuple[float, float, float], Slot, ModelCosts, Victims] | None = None
        for s, c in candidates:
            v = choose_victims(s, c.memory_bytes, spec.tenant, self.ledger, self.costs, below, blocked)
            if v is None:
                continue
            key = (v.cost, self.start_at(s) + c.load_s(spec.name in s.view.cached), self.util(s))
            if best is None or key < best[0]:
                best = (key, s, c, v)
        return None if best is None else best[1:]

    def load_room(self) -> bool:
        """Whether any instance can still queue an optional load."""
        return any(s.pending_loads < self.config.max_queued_loads for s in self.slots)

    def start_at(self, slot: Slot) -> float:
        return max(self.now, slot.load_free_at)

    # ---- doing -----------------------------------------------------------------------------

    def unload(self, slot: Slot, r: ResidentModel, reason: str) -> None:
        c = slot.copies.pop(r.name)
        c.gone = True
        slot.free += r.bytes
        if r.evictable:
            slot.evictable_bytes -= r.bytes
        else:
            slot.busy -= 1
        slot.utilization -= self._copy_util(r.name, slot.cls)
        self.ledger.add(r.tenant, -r.bytes)
        self.actions.append(Unload(r.name, slot.iid, reason, r.bytes))

    def load(self, spec: ModelSpec, slot: Slot, costs: ModelCosts, victims: Victims, why: str) -> Load:
        for r, density in victims.chosen:
            label = self.snap.models[r.name].label if r.name in self.snap.models else r.name
            because = (f"lowest cost {num(density)} ms/MB·s" if self.config.victim_order == "cost" else
                       f"least recently used ({num(self.now - r.last_used)} s ago)")
            self.unload(slot, r, f"evicted {label} from {slot.iid}: {because}; "
                                 f"needed {mb(costs.memory_bytes)} for {spec.label}")
        warm = spec.name in slot.view.cached
        ready = self.start_at(slot) + costs.load_s(warm)
        slot.load_free_at = ready
        slot.pending_loads += 1
        slot.busy += 1
        slot.free -= costs.memory_bytes
        r = ResidentModel(spec.name, spec.tenant, costs.memory_bytes, LoadState.LOADING,
                          resident_since=self.now, ready_at=ready)
        c = Copy(r, slot)
        slot.copies[spec.name] = c
        slot.ready[spec.name] = ready
        self.copies.setdefault(spec.name, []).append(c)
        slot.utilization += self._copy_util(spec.name, slot.cls)
        self.ledger.add(spec.tenant, costs.memory_bytes)
        action = Load(spec.name, slot.iid, f"{why}; ready in {ready - self.now:.2f} s"
                      f"{' (cached there)' if warm else ''}", ready, warm, costs.memory_bytes)
        self.actions.append(action)
        return action

    def replay(self, plan: Plan) -> None:
        """Lay a plan's actions over the snapshot, as if they were written."""
        slots = {s.iid: s for s in self.slots}
        for a in plan.actions:
            slot = slots.get(a.instance_id)
            if slot is None:
                continue
            if isinstance(a, Unload):
                c = slot.copies.get(a.model)
                if c is not None:
                    self.unload(slot, c.resident, "")
                continue
            spec = self.snap.models.get(a.model)
            if spec is None or a.model in slot.copies:
                continue
            r = ResidentModel(a.model, spec.tenant, a.bytes, LoadState.LOADING,
                              resident_since=self.now, ready_at=a.ready_at)
            slot.copies[a.model] = Copy(r, slot)
            slot.ready[a.model] = a.ready_at
            slot.free -= a.bytes
            slot.load_free_at = max(slot.load_free_at, a.ready_at)
            slot.pending_loads += 1
            slot.busy += 1
            self.ledger.add(spec.tenant, a.bytes)
        self.actions.clear()

    def place(self, spec: ModelSpec, why: str, value_density: float | None = None) -> Load | None:
        """Place one copy. ``value_density`` None: requests wait for it (refused with a reason
        when impossible; evicting copies up to ``wanted_evict_ratio`` times dearer than it, or any
        while its tenant stays within its share); else optional work, evicting only copies
        ``evict_margin`` times cheaper than that density (none where it is None)."""
        optional = value_density is not None
        cfg = self.config
        if optional:
            below: float | None = (_EVICT_NOTHING if cfg.evict_margin is None
                                   else value_density / cfg.evict_margin)
        elif self.within_share(spec) or (cfg.wanted_evict_ratio is None and not self.wanted_free_only):
            below = None
        elif self.wanted_free_only:
            below = _EVICT_NOTHING
        else:
            rate = max(self.demand(spec.name).sustained, cfg.wanted_floor_rate_per_s)
            below = self.value_density(spec, rate) * cfg.wanted_evict_ratio
        blocked = None if optional else Blocked()
        found = self.best_slot(spec, optional, below, blocked)
        if found is None:
            if not optional:
                self.refusals.append(refusal(self.snap, spec, self.ledger, blocked or Blocked(),
                                             self.demand(spec.name).sustained))
            return None
        slot, costs, victims = found
        return self.load(spec, slot, costs, victims, why.replace("{iid}", slot.iid))

    def within_share(self, spec: ModelSpec) -> bool:
        """Whether the tenant has a share and loading ``spec`` keeps it within it."""
        share = self.ledger.share_of(spec.tenant)
        need = min(c.memory_bytes for c in spec.costs.values()) if spec.costs else 0
        return share is not None and not self.ledger.over_share(spec.tenant, need)

    def value_density(self, spec: ModelSpec, rate: float) -> float:
        """A newcomer's cost density (ms/MB·s) as if resident: what evicting it would cost
        (on the class where it reloads slowest: the planner does not yet know where it goes)."""
        costs = max(spec.costs.values(), key=lambda c: c.load_s(True))
        return 1e3 * rate * costs.load_s(True) / max(costs.memory_bytes / 1e6, 1e-6)

"""The placement planner: which model is loaded where, how many copies, what is evicted (issue 12).

Pure and clock-injected: a ``ClusterSnapshot`` in (``placement/cluster.py``), a ``Plan`` out;
no I/O, no clock read. The only memory a ``Planner`` keeps is since when each replicated
model's demand has been low (the hold before a copy is removed); a new Planner starts that
hold afresh, the safe direction.

API (everything a shell needs)::

    planner = Planner(PlannerConfig())           # one per leader
    tracker = DemandTracker()                    # placement/demand.py
    tracker.observe(model, now)                  # on every request that arrives for it
    snap = ClusterSnapshot(now, instances, models, tracker.snapshot(now), shares, wanted)
    plan = planner.plan(snap)                    # plan.actions: Unload/Load, in order
    plan.refusals                                # wanted models that cannot be placed, with reasons
    ready_at(snap, model, now, plan)             # ReadyAt(instance_id, at, loaded) | None

The snapshot is the *desired* state: a load written but not yet done is a resident in state
LOADING (with its predicted ``ready_at``), so the next pass does not plan it again. Actions
apply in order; each Load follows the Unloads that make its room on its instance.

A pass, in order:

1. Shrink: a model with several copies loses one idle copy when its sustained demand has
   stayed, for ``hold_s``, below ``remove_below`` of what the copies left after it would serve
   within its SLO (one copy per hold; a copy younger than ``hold_s`` stays).
2. Wanted: each model requests wait for is placed (evicting what it must) or refused.
3. Re-place and prefetch: a model with no copy whose demand is rising, or steady above
   ``place_min_rate_per_s``, is loaded ahead of the scheduler's need.
4. Replicate: a model whose forecast demand exceeds ``add_at`` of what its copies serve gets
   copies on other instances.

Steps 3 and 4 are optional work: they respect ``max_queued_loads`` per instance and evict only
copies whose cost density is ``evict_margin`` times below the newcomer's (its sustained rate's),
so two models that do not fit together never trade places on every pass. A copy is added above
``add_at`` (80%) of what the copies serve and removed only when the rest would run below
``remove_below`` (40%): between the two, nothing changes, so no add/remove ping-pong.

Where: an instance of a class the model has a profile for, that serves its platform and lacks
a copy, with room if any (earliest ready, then least utilised, then tightest fit), else the one
whose cheapest evictable copies free the room at the least cost (``placement/victims.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from placement.cluster import (
    Action,
    ClusterSnapshot,
    Load,
    LoadState,
    ModelCosts,
    ModelSpec,
    Plan,
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
    predicted_ready,
)

_NO_DEMAND = Demand()


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    add_at: float = 0.8
    """Add a copy when forecast demand is above this fraction of what the copies serve."""
    remove_below: float = 0.4
    """Remove one when sustained demand stays below this fraction of what the remaining copies
    serve, for ``hold_s``."""
    hold_s: float = 120.0
    max_queued_loads: int = 2
    """Loads an instance may have queued before prefetch and replication pass it by."""
    place_min_rate_per_s: float = 0.05
    """Demand a model with no copy needs before it is loaded ahead of a request."""
    evict_margin: float = 2.0
    max_copies: int = 64

    def __post_init__(self) -> None:
        if not 0.0 < self.remove_below < self.add_at <= 1.0:
            raise ValueError(f"need 0 < remove_below < add_at <= 1, got {self.remove_below} and {self.add_at}")
        if self.hold_s < 0 or self.max_queued_loads < 1 or self.evict_margin < 1.0 or self.max_copies < 1:
            raise ValueError("hold_s >= 0, max_queued_loads >= 1, evict_margin >= 1, max_copies >= 1")


@dataclass(frozen=True, slots=True)
class ReadyAt:
    instance_id: str
    at: float
    loaded: bool
    """Already loaded there (``at`` is the asking time)."""


class _Pass:
    """The working state of one ``Planner.plan`` call."""

    def __init__(self, snap: ClusterSnapshot, config: PlannerConfig) -> None:
        self.snap = snap
        self.config = config
        self.now = snap.now
        self.slots, self.copies = build_slots(snap)
        self.ledger = SharesLedger(snap, self.slots)
        self.costs = CostModel(snap.models, snap.demand, {m: len(cs) for m, cs in self.copies.items()})
        self.actions: list[Action] = []
        self.refusals: list[Refusal] = []
        for slot in self.slots:
            slot.utilization = sum(self._copy_util(name, slot.cls) for name in slot.copies)

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
            if costs is None or not s.view.serves(spec.platform) or spec.name in s.copies:
                continue
            if optional and s.pending_loads >= self.config.max_queued_loads:
                continue
            out.append((s, costs))
        return out

    def best_slot(self, spec: ModelSpec, optional: bool, value_density: float | None,
                  blocked: Blocked | None = None) -> tuple[Slot, ModelCosts, Victims] | None:
        candidates = self.eligible(spec, optional)
        roomy = [(s, c) for s, c in candidates if s.free >= c.memory_bytes]
        if roomy:
            s, c = min(roomy, key=lambda sc: (self.start_at(sc[0]) + sc[1].load_s(spec.name in sc[0].view.cached),
                                              sc[0].utilization, sc[0].free - sc[1].memory_bytes))
            return s, c, Victims((), 0.0)
        below = None if value_density is None else value_density / self.config.evict_margin
        best: tuple[tuple[float, float, float], Slot, ModelCosts, Victims] | None = None
        for s, c in candidates:
            v = choose_victims(s, c.memory_bytes, spec.tenant, self.ledger, self.costs, below, blocked)
            if v is None:
                continue
            key = (v.cost, self.start_at(s), s.utilization)
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
        slot.utilization -= self._copy_util(r.name, slot.cls)
        self.ledger.add(r.tenant, -r.bytes)
        self.actions.append(Unload(r.name, slot.iid, reason, r.bytes))

    def load(self, spec: ModelSpec, slot: Slot, costs: ModelCosts, victims: Victims, why: str) -> Load:
        for r, density in victims.chosen:
            label = self.snap.models[r.name].label if r.name in self.snap.models else r.name
            self.unload(slot, r, f"evicted {label} from {slot.iid}: lowest cost {density:.2g} ms/MB·s; "
                                 f"needed {mb(costs.memory_bytes)} for {spec.label}")
        warm = spec.name in slot.view.cached
        ready = self.start_at(slot) + costs.load_s(warm)
        slot.load_free_at = ready
        slot.pending_loads += 1
        slot.free -= costs.memory_bytes
        r = ResidentModel(spec.name, spec.tenant, costs.memory_bytes, LoadState.LOADING,
                          resident_since=self.now, ready_at=ready)
        c = Copy(r, slot)
        slot.copies[spec.name] = c
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
            slot.free -= a.bytes
            slot.load_free_at = max(slot.load_free_at, a.ready_at)
            slot.pending_loads += 1
            self.ledger.add(spec.tenant, a.bytes)
        self.actions.clear()

    def place(self, spec: ModelSpec, why: str, value_density: float | None) -> Load | None:
        """Place one copy; ``value_density`` None: a request waits (mandatory, refused with a
        reason when impossible), else optional, evicting only copies well below that density."""
        optional = value_density is not None
        blocked = None if optional else Blocked()
        found = self.best_slot(spec, optional, value_density, blocked)
        if found is None:
            if not optional:
                self.refusals.append(refusal(self.snap, spec, self.ledger, blocked or Blocked()))
            return None
        slot, costs, victims = found
        return self.load(spec, slot, costs, victims, why.format(iid=slot.iid))

    def value_density(self, spec: ModelSpec, rate: float, cls: str | None = None) -> float:
        """A newcomer's cost density (ms/MB·s) as if resident: what evicting it would cost."""
        costs = spec.costs.get(cls) if cls else None
        costs = costs or max(spec.costs.values(), key=lambda c: c.load_s(True))
        return 1e3 * rate * costs.load_s(True) / max(costs.memory_bytes / 1e6, 1e-6)


class Planner:
    def __init__(self, config: PlannerConfig | None = None) -> None:
        self.config = config or PlannerConfig()
        self._low_since: dict[str, float] = {}

    def plan(self, snap: ClusterSnapshot) -> Plan:
        p = _Pass(snap, self.config)
        self._shrink(p)
        self._wanted(p)
        self._prefetch(p)
        self._replicate(p)
        return Plan(snap.now, tuple(p.actions), tuple(p.refusals))

    # ---- 1. shrink -------------------------------------------------------------------------

    def _shrink(self, p: _Pass) -> None:
        cfg = self.config
        low_now: set[str] = set()
        for name, copies in p.copies.items():
            spec = p.snap.models.get(name)
            if spec is None or len(copies) < 2:
                continue
            caps = [p.capacity(spec, c.slot.cls) for c in copies]
            total = sum(caps)
            demand = p.demand(name).sustained
            if total <= 0 or demand >= cfg.remove_below * (total - min(caps)):
                continue
            low_now.add(name)
            since = self._low_since.setdefault(name, p.now)
            if p.now - since < cfg.hold_s:
                continue
            idle = [(c, cap) for c, cap in zip(copies, caps, strict=True) if c.resident.evictable
                    and c.resident.queued == 0 and p.now - c.resident.resident_since >= cfg.hold_s
                    and demand < cfg.remove_below * (total - cap)]
            if not idle:
                continue
            # the copy on the fullest instance, then the least used
            c, cap = min(idle, key=lambda cc: (cc[0].slot.free, cc[0].resident.last_used))
            p.unload(c.slot, c.resident,
                     f"removed a copy of {spec.label} from {c.slot.iid} ({len(copies)} → {len(copies) - 1}): "
                     f"{demand:.3g} req/s stayed below {cfg.remove_below:.0%} of what {len(copies) - 1} "
                     f"cop{'y' if len(copies) == 2 else 'ies'} serve within its SLO "
                     f"({total - cap:.3g} req/s) for {p.now - since:.0f} s")
            self._low_since[name] = p.now  # another hold before the next copy goes
        for name in [n for n in self._low_since if n not in low_now]:
            del self._low_since[name]

    # ---- 2. wanted -------------------------------------------------------------------------

    def _wanted(self, p: _Pass) -> None:
        for name in dict.fromkeys(p.snap.wanted):
            if p.live(name):
                continue
            spec = p.snap.models.get(name)
            if spec is None:
                p.refusals.append(Refusal(name, f"{name} is not in the placement catalog (deleted?)",
                                          "the model is not available"))
                continue
            p.place(spec, f"loaded {spec.label} on {{iid}}: requests wait for it", None)

    # ---- 3. re-place and prefetch ----------------------------------------------------------

    def _prefetch(self, p: _Pass) -> None:
        cfg = self.config
        todo: list[tuple[float, ModelSpec, Demand]] = []
        for name, d in p.snap.demand.items():
            if name in p.copies and p.live(name):
                continue
            rate = max(d.forecast, d.rate_per_s) if d.rising else d.rate_per_s
            spec = p.snap.models.get(name)
            if spec is None or not spec.costs or rate < cfg.place_min_rate_per_s:
                continue
            todo.append((rate, spec, d))
        todo.sort(key=lambda t: (-t[0], t[1].name))
        for _rate, spec, d in todo:
            if not p.load_room():
                break
            why = (f"prefetched {spec.label} on {{iid}}: demand rising ({d.rate_per_s:.3g} → "
                   f"{d.short_rate_per_s:.3g} req/s)" if d.rising else
                   f"re-placed {spec.label} on {{iid}}: {d.rate_per_s:.3g} req/s and no copy")
            p.place(spec, why, p.value_density(spec, d.sustained))

    # ---- 4. replicate ----------------------------------------------------------------------

    def _replicate(self, p: _Pass) -> None:
        cfg = self.config
        todo: list[tuple[float, ModelSpec, float, float]] = []
        for name, copies in p.copies.items():
            live = [c for c in copies if not c.gone]
            spec = p.snap.models.get(name)
            if not live or spec is None or name in self._low_since:
                continue
            forecast = max(p.demand(name).forecast, p.demand(name).rate_per_s)
            total = sum(p.capacity(spec, c.slot.cls) for c in live)
            if total <= 0 or forecast <= cfg.add_at * total or len(live) >= cfg.max_copies:
                continue
            todo.append((forecast / total, spec, forecast, total))
        todo.sort(key=lambda t: (-t[0], t[1].name))
        for _, spec, forecast, total in todo:
            if not p.load_room():
                break
            n = len(p.live(spec.name))
            per_copy = total / n
            want = min(cfg.max_copies, math.ceil(forecast / (cfg.add_at * per_copy)))
            while n < want:
                why = (f"added a copy of {spec.label} on {{iid}} (copy {n + 1}): forecast {forecast:.3g} "
                       f"req/s is above {cfg.add_at:.0%} of what {n} cop{'y' if n == 1 else 'ies'} serve "
                       f"within its SLO ({total:.3g} req/s)")
                if p.place(spec, why, p.value_density(spec, p.demand(spec.name).sustained / (n + 1))) is None:
                    break
                n += 1
                total = sum(p.capacity(spec, c.slot.cls) for c in p.live(spec.name))


def ready_at(snap: ClusterSnapshot, model: str, now: float, plan: Plan | None = None) -> ReadyAt | None:
    """When ``model`` can be ready, and where: now where a copy is loaded; when its load ends
    where one is loading (in the snapshot or the plan); else after the loads already queued on
    the instance that would take it (one load at a time per instance) plus its own load, cold
    or warm as that instance's cache has it. None when no instance could take it now."""
    spec = snap.models.get(model)
    best: ReadyAt | None = None
    for view in snap.instances:
        if not view.healthy:
            continue
        for r in view.residents:
            if r.name != model:
                continue
            if r.state is LoadState.READY:
                return ReadyAt(view.instance_id, now, True)
            at = max(now, predicted_ready(r, spec, view))
            if best is None or at < best.at:
                best = ReadyAt(view.instance_id, at, False)
    for a in plan.loads if plan else ():
        if a.model == model and (best is None or a.ready_at < best.at):
            best = ReadyAt(a.instance_id, max(now, a.ready_at), False)
    if best is not None or spec is None:
        return best
    # a hypothetical load on the instance that can start it first
    p = _Pass(ClusterSnapshot(now, snap.instances, snap.models, snap.demand, snap.shares), PlannerConfig())
    if plan is not None:
        p.replay(plan)
    for slot, costs in p.eligible(spec, optional=False):
        if choose_victims(slot, costs.memory_bytes, spec.tenant, p.ledger, p.costs) is None:
            continue
        at = p.start_at(slot) + costs.load_s(model in slot.view.cached)
        if best is None or at < best.at:
            best = ReadyAt(slot.iid, at, False)
    return best

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
    readiness = Readiness(snap, plan)            # placement/readiness.py; build once per pass
    readiness.ready_at(model, now)               # ReadyAt(instance_id, at, loaded) | None
    ready_at(snap, model, now, plan)             # the same, for one question

Types (placement/cluster.py): ``ClusterSnapshot``, ``InstanceView``, ``ResidentModel``
(``LoadState``), ``ModelSpec`` with ``ModelCosts`` per instance class, ``TenantShare``,
``PlannerConfig``; out: ``Plan`` of ``Load`` / ``Unload`` actions and ``Refusal``s.
Demand (placement/demand.py): ``DemandTracker`` and the ``Demand`` it snapshots.

The snapshot is the *desired* state: a load written but not yet done is a resident in state
LOADING (with its predicted ``ready_at``), so the next pass does not plan it again. Actions
apply in order; each Load follows the Unloads that make its room on its instance.

A pass, in order:

1. Shrink: a model with several copies loses one idle copy when its sustained demand has
   stayed, for ``hold_s``, below ``remove_below`` of what the copies left after it would serve
   within its SLO (one copy per hold; a copy younger than ``hold_s`` stays).
2. Wanted: each model requests wait for is placed, evicting the cheapest copies (with
   ``wanted_evict_ratio`` set, only those no dearer than it, unless its tenant is within its
   share), or refused with a reason that says what to do.
3. Re-place and prefetch: a model with no copy whose demand is rising, or steady above
   ``place_min_rate_per_s``, is loaded ahead of the scheduler's need.
4. Replicate: a model whose forecast demand exceeds ``add_at`` of what its copies serve gets
   copies on other instances.

Steps 3 and 4 are optional work: they respect ``max_queued_loads`` per instance and evict only
copies whose cost density is ``evict_margin`` (2) times below the newcomer's (its sustained
rate's; None: they take only free memory): a load holds its instance's pipe and the requests of
the models already there pay for it, and two models that do not fit together never trade places
on every pass. A copy is added above
``add_at`` (80%) of what the copies serve and removed only when the rest would run below
``remove_below`` (40%): between the two, nothing changes, so no add/remove ping-pong.

Where: an instance of a class the model has a profile for, that serves its platform, lacks
a copy and is not backing off a failed load of it (``ModelSpec.load_failure``), with room if
any (earliest ready, then least utilised, then the most room left: models spread, and each
instance keeps headroom for the next load), else the one
whose cheapest evictable copies free the room at the least cost (``placement/victims.py``).
"""

from __future__ import annotations

import dataclasses
import math

from placement.cluster import ClusterSnapshot, LoadState, ModelSpec, Plan, PlannerConfig, Refusal
from placement.demand import Demand
from placement.planning_pass import PlanningPass
from placement.readiness import Readiness, ReadyAt, ready_at
from placement.victims import num

__all__ = ["Planner", "PlannerConfig", "Readiness", "ReadyAt", "ready_at"]


class Planner:
    def __init__(self, config: PlannerConfig | None = None) -> None:
        self.config = config or PlannerConfig()
        self._low_since: dict[str, float] = {}

    def plan(self, snap: ClusterSnapshot) -> Plan:
        p = PlanningPass(snap, self.config)
        self._shrink(p)
        self._wanted(p)
        self._drain(p)
        self._prefetch(p)
        self._replicate(p)
        return Plan(snap.now, tuple(p.actions), tuple(p.refusals))

    def place(self, snap: ClusterSnapshot, *, guarded: bool = False) -> Plan:
        """Only step 2 (the wanted models), for a request path that must place a cold model
        now; the optional work (shrink, prefetch, replicas) is the periodic ``plan``'s.
        ``guarded``: the waiting request cannot meet its SLO through a cold load anyway, so the
        load is optional work like a prefetch: it evicts only copies ``evict_margin`` times
        cheaper than itself (``wanted_evict_ratio`` where set; with neither, it takes only free
        memory). A tenant within its memory share still evicts. A load that serves no one
        now must not push out a model in heavier use, and two models of about the same worth
        that do not fit together must not trade places on each other's every cold request:
        each trade is a load, and on a CPU instance a load takes the cores the executions
        need."""
        config = self.config
        free_only = False
        if guarded and config.victim_order == "cost" and config.wanted_evict_ratio is None:
            if config.evict_margin is None:
                free_only = True  # like all optional work: free memory only
            else:
                config = dataclasses.replace(config, wanted_evict_ratio=1.0 / config.evict_margin)
        p = PlanningPass(snap, config, wanted_free_only=free_only)
        self._wanted(p)
        return Plan(snap.now, tuple(p.actions), tuple(p.refusals))

    # ---- 1. shrink -------------------------------------------------------------------------

    def _shrink(self, p: PlanningPass) -> None:
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
            # a copy on a draining instance, then the one on the fullest instance, then the least used
            c, cap = min(idle, key=lambda cc: (not cc[0].slot.view.draining, cc[0].slot.free,
                                               cc[0].resident.last_used))
            p.unload(c.slot, c.resident,
                     f"removed a copy of {spec.label} from {c.slot.iid} ({len(copies)} → {len(copies) - 1}): "
                     f"{num(demand)} req/s stayed below {cfg.remove_below:.0%} of what {len(copies) - 1} "
                     f"cop{'y' if len(copies) == 2 else 'ies'} serve within its SLO "
                     f"({num(total - cap)} req/s) for {p.now - since:.0f} s")
            self._low_since[name] = p.now  # another hold before the next copy goes
        for name in [n for n in self._low_since if n not in low_now]:
            del self._low_since[name]

    # ---- 2. wanted -------------------------------------------------------------------------

    def _wanted(self, p: PlanningPass) -> None:
        for name in dict.fromkeys(p.snap.wanted):
            if p.live(name):
                continue
            spec = p.snap.models.get(name)
            if spec is None:
                p.refusals.append(Refusal(name, f"{name} is not in the placement catalog (deleted?)",
                                          "the model is not available"))
                continue
            p.place(spec, f"loaded {spec.label} on {{iid}}: requests wait for it", None)

    # ---- 2b. drain -------------------------------------------------------------------------

    def _drain(self, p: PlanningPass) -> None:
        """Copies on draining instances: gone once another copy is ready elsewhere (or at once
        when the model has no demand); one with demand and no other copy is loaded elsewhere
        first, so its requests never wait for a cold load. Busy copies wait for a later pass."""
        for slot in p.slots:
            if not slot.view.draining:
                continue
            for r in [c.resident for c in slot.copies.values() if c.resident.evictable]:
                spec = p.snap.models.get(r.name)
                label = spec.label if spec else r.name
                elsewhere = [c for c in p.live(r.name) if c.slot is not slot and not c.slot.view.draining]
                if any(c.resident.state is LoadState.READY for c in elsewhere):
                    p.unload(slot, r, f"moved {label} off {slot.iid} (draining): a copy is ready elsewhere")
                elif elsewhere:
                    continue  # its new copy is still loading
                elif spec is None or not spec.costs or (p.demand(r.name).sustained <= 0
                                                        and p.demand(r.name).rate_per_s <= 0):
                    p.unload(slot, r, f"unloaded {label} from {slot.iid} (draining): no demand for it")
                else:
                    p.place(spec, f"moved {label} to {{iid}}: {slot.iid} is draining", None)

    # ---- 3. re-place and prefetch ----------------------------------------------------------

    def _prefetch(self, p: PlanningPass) -> None:
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
            why = (f"prefetched {spec.label} on {{iid}}: demand rising ({num(d.rate_per_s)} → "
                   f"{num(d.short_rate_per_s)} req/s)" if d.rising else
                   f"re-placed {spec.label} on {{iid}}: {num(d.rate_per_s)} req/s and no copy")
            p.place(spec, why, p.value_density(spec, d.sustained))

    # ---- 4. replicate ----------------------------------------------------------------------

    def _replicate(self, p: PlanningPass) -> None:
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
                why = (f"added a copy of {spec.label} on {{iid}} (copy {n + 1}): forecast {num(forecast)} "
                       f"req/s is above {cfg.add_at:.0%} of what {n} cop{'y' if n == 1 else 'ies'} serve "
                       f"within its SLO ({num(total)} req/s)")
                if p.place(spec, why, p.value_density(spec, p.demand(spec.name).sustained / (n + 1))) is None:
                    break
                n += 1
                total = sum(p.capacity(spec, c.slot.cls) for c in p.live(spec.name))

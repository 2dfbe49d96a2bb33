"""Run a workload through inferplex's own decision cores on simulated instances.

The cores are the production objects, unchanged: ``admission.scheduler.Scheduler``
admits, orders, batches and drops; ``placement.planner.Planner`` places cold models
(``place``, on the request path) and does the leader's optional work (``plan``, every
``plan_interval_s`` as ``placement/reconcile.py`` runs it); ``profiler.predictor.
LatencyPredictor`` predicts, seeded from each model's profile and fed every observed
execution and load. The shell around them here does what the gateway, the placement
service and the scheduling shell do in production, on a virtual clock:

- an arrival counts as demand and work in flight for its model (``Activity.begin``);
- a model with a ready copy is admitted at once; one whose load is under way waits for
  it; a cold one is placed by ``Planner.place`` on a snapshot built by
  ``placement.cluster_view.cluster_snapshot`` (victims unloaded, then the load queued on
  the instance), or refused with ``no_capacity`` when the planner refuses it;
- after its load, the request goes to ``Scheduler.admit`` with its original arrival and
  deadline, then ``Scheduler.schedule(now)``: a Dispatch runs on the instance for the
  profile's time with noise, and its completion goes to ``Scheduler.complete`` and the
  predictor; a Drop ends the request; the scheduler is woken again at
  ``next_expiry_s``, as the scheduling shell arms its timer.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from admission.model import (
    Dispatch,
    Drop,
    InstanceSlot,
    ModelInfo,
    PendingRequest,
    SchedulerConfig,
)
from admission.scheduler import Scheduler
from placement.cluster import (
    DEFAULT_EVICT_MARGIN,
    ClusterSnapshot,
    LoadFailure,
    ModelSpec,
    Plan,
    PlannerConfig,
)
from placement.cluster_view import Activity, SnapshotViews, cluster_snapshot, model_spec
from placement.planner import Planner
from placement.readiness import typical_ready_on
from profiler.predictor import LatencyPredictor
from profiler.profile import ClassProfile, LatencyStats
from sim.engine import Engine
from sim.instances import ArtifactCache, Noise, SimInstance
from sim.metrics import Recorder, SimResult, summarise

if TYPE_CHECKING:
    from sim.workload import Arrival, SimModel, Workload

# the simulator's policy names -> PlannerConfig.policy (as INFERPLEX_PLACEMENT_POLICY and
# bench/placement_eviction.py map them)
POLICIES = {"inferplex": "cost", "lru": "lru", "static": "static"}
INSTANCE_CLASS = "gpu"
# how often the leader's pass runs (placement/reconcile.py's PlacementReconciler interval)
PLAN_INTERVAL_S = 1.0
# the collector's thresholds while a simulation runs (Python's default: 700, 10, 10)
GC_THRESHOLDS = (20_000, 10, 10)


class CorePredictor:
    """The scheduler's ``Predictor`` over the profiler's predictor, as the gateway's
    ``_Predictions`` is (here with no dispatch round trip: a simulated instance has none)."""

    def __init__(self, predictor: LatencyPredictor) -> None:
        self.predictor = predictor

    def exec_s(self, model: str, instance_class: str, rows: int, work: int) -> float | None:
        return self.predictor.exec_time(model, instance_class, max(rows, 1))

    def load_s(self, model: str, instance_class: str) -> float | None:
        return self.predictor.load_time(model, instance_class)


@dataclass(frozen=True)
class _Record:
    """What ``placement.cluster_view.model_spec`` reads of a catalog record."""

    qualified_name: str
    tenant: str
    name: str
    slo_ms: float
    max_batch_size: int
    platform: str | None = None


@dataclass(slots=True)
class _Request:
    rid: str
    model: int
    arrival: float
    deadline: float
    rows: int
    loading_from: float = -1.0


class Simulation:
    """One run: the cores, the simulated instances and the shell between them."""

    def __init__(self, workload: Workload, *, instances: int, instance_memory: int, policy: str = "inferplex",
                 seed: int = 1, cache_bytes: int | None = None, noise_cv: float = 0.05,
                 plan_interval_s: float = PLAN_INTERVAL_S, sample_s: float = 10.0,
                 spec_refresh_s: float = 5.0, scheduler_config: SchedulerConfig | None = None,
                 evict_margin: float | None = DEFAULT_EVICT_MARGIN, progress: Any = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)}")
        if instances < 1 or instance_memory < 1:
            raise ValueError("need at least one instance and some memory on each")
        self.workload = workload
        self.policy = policy
        self.seed = seed
        self.engine = Engine()
        self.clock = self.engine.clock
        self.predictor = LatencyPredictor()
        # the gateway's default: an execute time nobody measured counts as nothing ahead
        self.scheduler = Scheduler(CorePredictor(self.predictor),
                                   scheduler_config or SchedulerConfig(default_exec_s=0.0))
        # INFERPLEX_PLACEMENT_EVICT_MARGIN's default unless told otherwise
        self.planner = Planner(PlannerConfig.policy(POLICIES[policy], evict_margin))
        self.activity = Activity()
        self.views = SnapshotViews(self.activity)  # the views of instances unchanged since the last snapshot
        cache = 4 * instance_memory if cache_bytes is None else cache_bytes
        self.instances = {f"gpu-{i:03d}": SimInstance(f"gpu-{i:03d}", INSTANCE_CLASS, instance_memory,
                                                      ArtifactCache(cache)) for i in range(instances)}
        self.models: list[SimModel] = list(workload.models)
        self.by_name = {m.name: i for i, m in enumerate(self.models)}
        if len(self.by_name) != len(self.models):
            raise ValueError("model names in the workload must be unique")
        self._records = [_Record(m.name, m.tenant, m.name, m.slo_s * 1e3, m.profile.max_batch)
                         for m in self.models]
        self.noise = Noise(noise_cv, seed)
        self._seed_predictor(noise_cv)
        for m in self.models:
            self.scheduler.set_model(m.name, ModelInfo(max(0, m.profile.max_batch)))
        self.rec = Recorder(workload.duration_s)
        self.plan_interval_s, self.sample_s, self.spec_refresh_s = plan_interval_s, sample_s, spec_refresh_s
        self.progress = progress
        # the shell's state
        self.ready: dict[str, set[str]] = {}  # model -> instances with a ready copy
        self.loading: dict[str, list[_Request]] = {}  # model -> requests waiting for its load
        # model -> (when its load is typically ready, a batch of one's typical execute time)
        self._load_ready: dict[str, tuple[float, float]] = {}
        self.waiting: dict[str, _Request] = {}  # admitted, not yet answered
        self._slots: dict[str, InstanceSlot] = {}
        self._changed: set[str] = set(self.instances)  # instances the scheduler has not seen as they are
        self._armed: float | None = None
        self._seq = 0
        self._specs: dict[str, tuple[float, ModelSpec]] = {}
        self._stale: set[str] = set()  # models observed since their spec was built
        self._all_specs: dict[str, ModelSpec] = {}
        self._failures: dict[str, LoadFailure] = {}
        self._arrivals: Iterator[Arrival] | None = None
        self._open = True  # arrivals still coming
        self.decisions = 0
        self.placements = 0
        self.decision_wall_s = 0.0  # in admit and schedule
        self.complete_wall_s = 0.0  # in complete (bookkeeping, not a decision)
        self.placement_wall_s = 0.0

    # ---- set-up ----------------------------------------------------------------------

    def _seed_predictor(self, cv: float) -> None:
        """Each model's offline profile, as the profiler would have measured it."""
        q50, q99 = self.noise.quantile(50.0), self.noise.quantile(99.0)
        seen: dict[int, ClassProfile] = {}
        for m in self.models:
            p = m.profile
            prof = seen.get(id(p))
            if prof is None:
                def stats(s: float) -> LatencyStats:
                    return LatencyStats(p50_s=s * q50, p99_s=s * q99, n=100)
                prof = seen[id(p)] = ClassProfile(
                    load_time_cold_s=stats(p.load_cold_s), load_time_warm_s=stats(p.load_warm_s),
                    exec={b: stats(s) for b, s in p.exec_s}, memory_bytes=p.bytes)
            self.predictor.seed_from_profile(m.name, INSTANCE_CLASS, prof)

    # ---- running ---------------------------------------------------------------------

    def run(self) -> SimResult:
        started = time.perf_counter()
        for i in range(len(self.models)):
            self._spec(i, 0.0)
        self._arrivals = iter(self.workload.arrivals())
        self._next_arrival()
        # the set-up (10,000 models' profiles and specs) lives to the end: out of the
        # collector's way, and young objects collected less often, or the collector's
        # passes over that heap take a third of the wall time and land inside the timed
        # decisions
        thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            return self._simulate(started)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()

    def _simulate(self, started: float) -> SimResult:
        self.engine.at(0.0, self._leader_pass)
        self.engine.at(0.0, self._sample)
        duration = self.workload.duration_s
        step = max(1.0, duration / 200)
        t = 0.0
        while t < duration:
            t = min(duration, t + step)
            self.engine.run_until(t)
            if self.progress is not None:
                self.progress(t, duration, self.engine.events, time.perf_counter() - started)
        self._open = False
        # answer what is still queued or running (no new arrivals, no more passes)
        while self.engine.pending():
            self.engine.run_until(self.engine.next_time() or self.clock.now)
        result = SimResult(self.policy, len(self.models), len(self.instances),
                           next(iter(self.instances.values())).budget_bytes, duration, self.seed,
                           self.workload.description)
        summarise(self.rec, result)
        result.decisions, result.placements, result.events = self.decisions, self.placements, self.engine.events
        result.decision_wall_s, result.placement_wall_s = self.decision_wall_s, self.placement_wall_s
        result.complete_wall_s = self.complete_wall_s
        result.warm_loads = int(self.rec.totals["warm_loads"])
        result.wall_s = time.perf_counter() - started
        return result

    def _next_arrival(self) -> None:
        assert self._arrivals is not None
        a = next(self._arrivals, None)
        if a is not None and a.t < self.workload.duration_s:
            self.engine.at(a.t, self._arrive, a)

    def _arrive(self, a: Arrival) -> None:
        now = self.clock.now
        self._next_arrival()
        m = self.models[a.model]
        self._seq += 1
        req = _Request(f"r{self._seq}", a.model, now, now + m.slo_s, a.rows)
        self.rec.add("arrivals", now)
        self.activity.begin(m.name, now)
        if self.ready.get(m.name):
            self._admit(req)
        elif m.name in self.loading:
            # PlacementService.ensure_loaded: refused at once when the load under way plus a
            # batch of one ends after its deadline (the load goes on for those after it)
            if self._late(m.name, req.deadline):
                self._refuse(req, "cold_infeasible")
                return
            req.loading_from = now
            self.loading[m.name].append(req)
        else:
            self._cold(m, req)

    # ---- placement (PlacementService.ensure_loaded, plan_pass) ----------------------------

    def _spec(self, i: int, now: float) -> ModelSpec:
        """The model's spec as PlacementService.cluster builds it (model_spec over the
        predictor's timings), rebuilt at most every ``spec_refresh_s`` once observations
        changed them: the planner reads p99s that move slowly, and rebuilding ten thousand
        specs per snapshot would be the simulator's cost, not the cores'."""
        name = self.models[i].name
        cached = self._specs.get(name)
        if cached is None or (name in self._stale and now - cached[0] >= self.spec_refresh_s):
            rec = self._records[i]
            spec = model_spec(rec, (INSTANCE_CLASS,), self.predictor, self.models[i].profile.bytes,
                              self._failures.get(name))
            cached = self._specs[name] = (now, spec)
            self._all_specs[name] = spec
            self._stale.discard(name)
        return cached[1]

    def _snapshot(self, wanted: tuple[str, ...] = ()) -> ClusterSnapshot:
        """PlacementService.cluster: the planner's snapshot. Every model's spec is in it (the
        production shell puts in those resident, loading, wanted or with demand: the planner
        only looks models up, so a superset plans the same)."""
        now = self.clock.now
        for name in [n for n in self._stale if now - self._specs[n][0] >= self.spec_refresh_s]:
            self._spec(self.by_name[name], now)
        return cluster_snapshot(now, (i.state() for i in self.instances.values()), self._all_specs,
                                self.activity, {}, wanted, wall_now=now, views=self.views)

    def _cold(self, m: SimModel, req: _Request) -> None:
        from placement.service import PlacementService

        t0 = time.perf_counter()
        snap = self._snapshot((m.name,))
        plan = self.planner.place(snap, guarded=not PlacementService._cold_load_can_make_it(snap, m.name))
        self.placement_wall_s += time.perf_counter() - t0
        self.placements += 1
        load = next((a for a in plan.loads if a.model == m.name), None)
        # PlacementService._too_late_by: "ready at" with its own load and a batch of one at
        # their median (placement.readiness.typical_ready) after the deadline. Production
        # asks placement.readiness on the same snapshot first (one more pass over the
        # cluster); the load the planner chose gives the same answer where it places the
        # model, and no load leaves the request refused either way
        if load is not None:
            self._apply(plan, only_instance=load.instance_id)
            self.rec.add("cold_starts", self.clock.now)
            self._start_load(m.name, load.instance_id, load.ready_at)
        if load is not None and self._late(m.name, req.deadline):
            self._refuse(req, "cold_infeasible")
        elif load is None:
            self._refuse(req, "no_capacity")
        else:
            req.loading_from = self.clock.now
            self.loading[m.name].append(req)

    def _late(self, model: str, deadline: float) -> bool:
        """PlacementService._too_late_by: a request waiting for the load under way would
        answer after ``deadline`` even with a typical load (nothing measured: never late)."""
        estimate = self._load_ready.get(model)
        if estimate is None:
            return False
        now = self.clock.now
        return now + max(0.0, estimate[0] - now) + estimate[1] > deadline

    def _apply(self, plan: Plan, only_instance: str | None = None) -> None:
        for a in plan.unloads:
            if only_instance is not None and a.instance_id != only_instance:
                continue
            if self.activity.in_flight.get(a.model):
                continue  # work arrived since the snapshot
            reason = "shrink" if a.reason.startswith("removed a copy") else "room"
            self._unload(a.model, a.instance_id, reason)

    def _unload(self, model: str, iid: str, reason: str) -> None:
        inst = self.instances[iid]
        if model not in inst.resident:
            return
        inst.unload(model)
        holders = self.ready.get(model)
        if holders is not None:
            holders.discard(iid)
            if not holders:
                del self.ready[model]
        self._changed.add(iid)
        self.rec.evicted(reason, self.clock.now)

    def _start_load(self, model: str, iid: str, predicted_ready: float) -> None:
        now = self.clock.now
        m = self.models[self.by_name[model]]
        inst = self.instances[iid]
        ready, warm = inst.start_load(model, m.profile.bytes, now, m.profile.load_cold_s, m.profile.load_warm_s,
                                      self.noise.factor(), predicted_ready)
        self.loading.setdefault(model, [])
        # PlacementService holds one estimate per load under way, its own load and a batch
        # of one at their median (placement.readiness.typical_ready); the earliest load here
        typical = typical_ready_on(self._spec(self.by_name[model], now), inst.instance_class, warm,
                                   predicted_ready, now, self.predictor)
        if typical is not None:
            estimate = (now + typical[0], typical[1])
            held = self._load_ready.get(model)
            if held is None or estimate < held:
                self._load_ready[model] = estimate
        self._changed.add(iid)  # the scheduler learns the instance is busy loading
        self.rec.add("loads", now)
        self.rec.add("bytes_loaded", now, m.profile.bytes)
        if warm:
            self.rec.totals["warm_loads"] += 1
        self.engine.at(ready, self._loaded, (model, iid, now))

    def _loaded(self, arg: tuple[str, str, float]) -> None:
        model, iid, started = arg
        now = self.clock.now
        inst = self.instances[iid]
        inst.finish_load(model, now)
        self.ready.setdefault(model, set()).add(iid)
        self._changed.add(iid)
        self.predictor.observe_load(model, inst.instance_class, now - started)
        self._stale.add(model)
        self._load_ready.pop(model, None)
        for req in self.loading.pop(model, []):
            self._admit(req, wake=False)
        self._wake()

    def _leader_pass(self, _: Any = None) -> None:
        if not self._open:
            return
        t0 = time.perf_counter()
        plan = self.planner.plan(self._snapshot())
        self.placement_wall_s += time.perf_counter() - t0
        self.placements += 1
        self._apply(plan)
        for a in plan.loads:
            if a.model in self.loading or a.model in self.instances[a.instance_id].resident:
                continue
            self._start_load(a.model, a.instance_id, a.ready_at)
        self.engine.after(self.plan_interval_s, self._leader_pass)

    def _sample(self, _: Any = None) -> None:
        if not self._open:
            return
        used = sum(i.used_bytes for i in self.instances.values())
        total = sum(i.budget_bytes for i in self.instances.values())
        self.rec.memory(self.clock.now, used / total)
        self.engine.after(self.sample_s, self._sample)

    # ---- scheduling (ScheduledForwarding, SchedulingShell) --------------------------------

    def _refresh_slots(self) -> None:
        """What ScheduledForwarding._refresh_slots does on every arrival: the scheduler is
        given the instances again when something changed (a slot object is kept while its
        instance is unchanged, so the core sees at once what did)."""
        if not self._changed:
            return
        for iid in self._changed:
            inst = self.instances[iid]
            self._slots[iid] = InstanceSlot(
                iid, inst.instance_class, frozenset(inst.resident), capacity=1,
                loading_until_s=max((p.ready_at for p in inst.pending.values()), default=0.0))
        self._changed.clear()
        self.scheduler.set_instances(self._slots.values())

    def _admit(self, req: _Request, wake: bool = True) -> None:
        now = self.clock.now
        m = self.models[req.model]
        self._refresh_slots()
        pending = PendingRequest(id=req.rid, tenant=m.tenant, model=m.name, display_name=m.name,
                                 arrival_s=req.arrival, deadline_s=req.deadline, rows=req.rows,
                                 slo_s=m.slo_s,
                                 loading_s=0.0 if req.loading_from < 0 else now - req.loading_from)
        t0 = time.perf_counter()
        refusal = self.scheduler.admit(pending, now)
        self.decision_wall_s += time.perf_counter() - t0
        self.decisions += 1
        if refusal is not None:
            self._refuse(req, refusal.reason)
            return
        self.rec.add("admitted", now)
        self.waiting[req.rid] = req
        if wake:
            self._wake()

    def _refuse(self, req: _Request, reason: str) -> None:
        self.rec.refused(reason, self.clock.now)
        self._end(req.model)

    def _end(self, i: int) -> None:
        name = self.models[i].name
        self.activity.end(name, self.clock.now)

    def _wake(self, _: Any = None) -> None:
        now = self.clock.now
        t0 = time.perf_counter()
        decisions = self.scheduler.schedule(now)
        self.decision_wall_s += time.perf_counter() - t0
        self.decisions += 1
        for d in decisions:
            if isinstance(d, Drop):
                req = self.waiting.pop(d.request_id)
                self.rec.add("dropped", now)
                self._end(req.model)
            else:
                self._run(d)
        self._arm()

    def _run(self, d: Dispatch) -> None:
        m = self.models[self.by_name[d.model]]
        seconds = m.profile.exec_at(d.rows) * self.noise.factor()
        _start, end = self.instances[d.instance_id].execute(self.clock.now, seconds)
        self.engine.at(end, self._complete, (d, seconds))

    def _complete(self, arg: tuple[Dispatch, float]) -> None:
        d, seconds = arg
        now = self.clock.now
        t0 = time.perf_counter()
        self.scheduler.complete(d.batch_id, now, seconds)
        self.complete_wall_s += time.perf_counter() - t0
        self.predictor.observe_exec(d.model, INSTANCE_CLASS, d.rows, seconds)
        self._stale.add(d.model)
        for rid in d.request_ids:
            req = self.waiting.pop(rid)
            self.rec.served(req.arrival, now, req.deadline)
            self._end(req.model)
        self._wake()

    def _arm(self) -> None:
        """Wake again just after the next queued request would expire."""
        expiry = self.scheduler.next_expiry_s()
        if expiry is None:
            return
        at = max(expiry, self.clock.now) + 1e-6  # _expire drops what expired strictly before now
        if self._armed is not None and self._armed <= at and self._armed >= self.clock.now:
            return
        self._armed = at
        self.engine.at(at, self._expired, at)

    def _expired(self, at: float) -> None:
        if at != self._armed:
            return  # superseded by an earlier timer
        self._armed = None
        self._wake()


def run(workload: Workload, instances: int, instance_memory: int, policy: str = "inferplex", seed: int = 1,
        **options: Any) -> SimResult:
    """Simulate ``workload`` on ``instances`` instances of ``instance_memory`` bytes each,
    under ``policy`` (inferplex, lru, static); ``options`` go to ``Simulation``."""
    return Simulation(workload, instances=instances, instance_memory=instance_memory, policy=policy,
                      seed=seed, **options).run()

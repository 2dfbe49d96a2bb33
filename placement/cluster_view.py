"""What the planner sees, built from the shell's state (issue 12).

``Activity`` is this replica's per-model request bookkeeping (requests in flight, last use,
demand); ``cluster_snapshot`` turns placements, loads in flight, catalog records and the
predictor's timings into the planner's ``ClusterSnapshot``. Both take ``now`` from the
caller (monotonic seconds), so the planner's clock is one clock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from placement.cluster import (
    ClusterSnapshot,
    InstanceView,
    LoadFailure,
    LoadState,
    ModelCosts,
    ModelSpec,
    ResidentModel,
    TenantShare,
)
from placement.demand import Demand, DemandTracker, merged

# what a model costs before anything is measured: a load of a second, a 10 ms execution
DEFAULT_LOAD_S = 1.0
DEFAULT_EXEC_S = 0.01


class Activity:
    """Requests in flight per model on this replica (a copy with one is never evicted), when
    each model was last used, and its demand (every arrival, admitted or not)."""

    def __init__(self) -> None:
        self.in_flight: Counter[str] = Counter()
        self.last_used: dict[str, float] = {}
        self.demand = DemandTracker()
        # batches executing on each copy, (model, instance id): a draining instance's copy
        # goes when none runs there, whatever the model's other copies serve
        self.executing: Counter[tuple[str, str]] = Counter()
        self.touched: set[str] | None = None
        """Models whose in-flight count or last use changed since a ``SnapshotViews`` last
        looked (None: nobody keeps views, nothing is recorded)."""

    def arrived(self, model: str, now: float) -> None:
        self.demand.observe(model, now)
        self.last_used[model] = now
        if self.touched is not None:
            self.touched.add(model)

    def begin(self, model: str, now: float) -> None:
        """A request for ``model`` arrived and is being served (``end`` when it is answered)."""
        self.arrived(model, now)
        self.in_flight[model] += 1

    def end(self, model: str, now: float | None = None) -> None:
        """``now``: the caller's clock (a simulator's virtual one); default monotonic seconds."""
        self.in_flight[model] -= 1
        if self.in_flight[model] <= 0:
            del self.in_flight[model]
        self.last_used[model] = time.monotonic() if now is None else now
        if self.touched is not None:
            self.touched.add(model)

    def dispatched(self, model: str, instance_id: str) -> None:
        self.executing[model, instance_id] += 1

    def finished(self, model: str, instance_id: str) -> None:
        self.executing[model, instance_id] -= 1
        if self.executing[model, instance_id] <= 0:
            del self.executing[model, instance_id]

    def forget(self, model: str) -> None:
        self.in_flight.pop(model, None)
        self.last_used.pop(model, None)
        self.demand.forget(model)


class Timings(Protocol):
    """The predictor's answers the costs are made of (``profiler.predictor.LatencyPredictor``)."""

    def exec_time(self, model: str, instance_class: str, batch: int,
                  percentile: float | None = None) -> float | None: ...

    def load_time(self, model: str, instance_class: str, percentile: float | None = None, *,
                  warm: bool = False) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Pending:
    """A load this replica started and that has not finished: LOADING in the snapshot."""

    bytes: int
    started: float
    ready_at: float


@dataclass(frozen=True, slots=True)
class InstanceState:
    """One instance as the shell knows it."""

    instance_id: str
    instance_class: str
    budget_bytes: int
    healthy: bool
    platforms: frozenset[str] | None
    resident: Mapping[str, tuple[int, float]]
    """Model -> (bytes, loaded at, epoch seconds)."""
    pending: Mapping[str, Pending]
    reserved_bytes: int = 0
    """Memory held for work that is not a model placement (a profile in progress)."""
    draining: bool = False
    cached: frozenset[str] = frozenset()
    """Models whose files its local artifact cache holds (as it last reported)."""


def model_costs(record: Any, classes: Iterable[str], timings: Timings, memory_bytes: int) -> dict[str, ModelCosts]:
    """Per instance class: the measured (or estimated) bytes, the predicted p99 execute time
    at 1..max batch, and load time (measured on that class, else the slowest measured on any,
    else ``DEFAULT_LOAD_S``)."""
    q = record.qualified_name
    max_batch = max(1, int(record.max_batch_size or 0))
    batches = sorted({1, 2, 4, 8, max_batch} & set(range(1, max_batch + 1)))
    known_loads = [t for c in classes if (t := timings.load_time(q, c)) is not None]
    fallback_load = max(known_loads, default=DEFAULT_LOAD_S)
    out: dict[str, ModelCosts] = {}
    for cls in classes:
        exec_s = {b: t for b in batches if (t := timings.exec_time(q, cls, b, 99.0)) is not None}
        load = timings.load_time(q, cls)
        out[cls] = ModelCosts(memory_bytes, load if load is not None else fallback_load,
                              exec_s or {1: DEFAULT_EXEC_S}, timings.load_time(q, cls, warm=True),
                              max_batch=max_batch if exec_s else 1)
    return out


def model_spec(record: Any, classes: Iterable[str], timings: Timings, memory_bytes: int,
               failure: LoadFailure | None = None) -> ModelSpec:
    return ModelSpec(record.qualified_name, record.tenant, f"{record.tenant}/{record.name}",
                     record.slo_ms / 1e3, model_costs(record, classes, timings, memory_bytes),
                     platform=record.platform, load_failure=failure)


def instance_view(inst: InstanceState, specs: Mapping[str, ModelSpec], activity: Activity, now: float,
                  wall: float) -> InstanceView:
    """One instance as the planner sees it (``cluster_snapshot``'s part per instance)."""
    residents = []
    for name, (size, loaded_at) in inst.resident.items():
        if name in inst.pending:
            continue
        spec = specs.get(name)
        # a draining instance serves a model's requests only until a copy is ready elsewhere
        # (the scheduler then routes them there): what runs on this copy is what counts
        busy = (activity.executing.get((name.partition("@")[0], inst.instance_id), 0) if inst.draining
                else activity.in_flight.get(name, 0))
        # one clock (a simulator's): the load time as it is, not shifted through the other
        since = min(loaded_at, now) if wall == now else now - max(0.0, wall - loaded_at)
        residents.append(ResidentModel(
            name, spec.tenant if spec else "", size, LoadState.READY,
            in_flight=busy,
            last_used=activity.last_used.get(name, loaded_at if wall == now else now - (wall - loaded_at)),
            resident_since=since))
    for name, p in inst.pending.items():
        spec = specs.get(name)
        residents.append(ResidentModel(name, spec.tenant if spec else "", p.bytes, LoadState.LOADING,
                                       resident_since=p.started, ready_at=p.ready_at))
    return InstanceView(inst.instance_id, inst.instance_class,
                        max(0, inst.budget_bytes - inst.reserved_bytes), tuple(residents),
                        healthy=inst.healthy, platforms=inst.platforms, draining=inst.draining,
                        cached=inst.cached)


class SnapshotViews:
    """Instance views kept between snapshots and rebuilt only where something they show
    changed: the instance's state is another object, or a model on it was used (``Activity``
    records which) since. For a shell whose clocks are one (``now`` is ``wall_now``, as a
    simulator's virtual clock), whose ``InstanceState`` objects are replaced on every change
    to them, and whose models keep their tenant: the views are then the ones
    ``cluster_snapshot`` would build, for the price of the instances that changed. Draining
    instances are always rebuilt (their copies' work is counted per dispatch)."""

    def __init__(self, activity: Activity) -> None:
        self.activity = activity
        activity.touched = set()
        self._views: dict[str, tuple[InstanceState, InstanceView]] = {}
        self.rebuilt = 0

    def views(self, instances: Iterable[InstanceState], specs: Mapping[str, ModelSpec], now: float,
              wall: float) -> list[InstanceView]:
        touched = self.activity.touched or set()
        self.activity.touched = set()
        out = []
        for inst in instances:
            kept = self._views.get(inst.instance_id)
            if (kept is None or kept[0] is not inst or inst.draining
                    or (touched and not touched.isdisjoint(inst.resident))):
                kept = self._views[inst.instance_id] = (inst, instance_view(inst, specs, self.activity, now, wall))
                self.rebuilt += 1
            out.append(kept[1])
        return out


def cluster_snapshot(now: float, instances: Iterable[InstanceState], specs: Mapping[str, ModelSpec],
                     activity: Activity, shares: Mapping[str, TenantShare],
                     wanted: tuple[str, ...] = (), wall_now: float | None = None,
                     peer_demand: Mapping[str, Demand] | None = None,
                     views: SnapshotViews | None = None) -> ClusterSnapshot:
    """``specs``: every model the plan may touch (residents, wanted, those with demand).
    ``wall_now``: epoch seconds now, to turn load times into ages (default time.time()).
    ``peer_demand``: the other replicas' demand, added to this one's.
    ``views``: reuse the instance views that did not change (see ``SnapshotViews``); demand
    is then computed per model as the planner asks (``DemandTracker.view``), so the snapshot
    is good for the synchronous planner call it is built for."""
    wall = time.time() if wall_now is None else wall_now
    if views is not None:
        built = views.views(instances, specs, now, wall)
    else:
        built = [instance_view(inst, specs, activity, now, wall) for inst in instances]
    demand: Mapping[str, Demand]
    if views is not None and not peer_demand:
        demand = activity.demand.view(now, specs)
    else:
        demand = {m: d for m, d in merged(activity.demand.snapshot(now), peer_demand or {}).items() if m in specs}
    return ClusterSnapshot(now, tuple(built), specs, demand, shares, wanted)

"""Placement shell (issues 3 and 12): which instance holds which model, loading on demand.

Actual state is what the instances say (their repository index), rebuilt when an
instance (re)appears; the store's ``/inferplex/placement/{instance}/{qualified}``
keys mirror it for operators and other replicas. Decisions come from the pure planner
(``placement/planner.py``): where a cold model goes and what it evicts, and the leader's
periodic pass (shrink, prefetch, re-place, replicate, drain), applied here; a model that
fits nowhere even after eviction is refused with the planner's reason (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kserve.errors import (
    InferplexError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from placement.backends import PROBE_NAME_PREFIX
from placement.cluster import ClusterSnapshot, LoadFailure, PlannerConfig, TenantShare, Unload
from placement.cluster_view import Activity, InstanceState, Pending, cluster_snapshot, model_spec
from placement.demand_share import DemandShare
from placement.instances import HEALTH_INTERVAL_S, InstanceRegistry
from placement.planner import Planner, ready_at
from placement.ports import ModelCatalog, ModelRecord, PlacementMetrics, PlacementSettings
from placement.profiling import PROFILE_NAME_PREFIX, ProfilingMixin, _needed_bytes
from placement.profiling_site import (
    InstanceSnapshot,
    estimate_model_bytes,
)
from placement.readiness import typical_ready
from placement.triton_driver import TritonDriver
from profiler.feed import ExecutionFeed, Prediction
from profiler.offline import memory_from_statistics
from profiler.predictor import LatencyPredictor
from store import keys
from store.base import StateStore
from store.cache import PrefixCache

log = logging.getLogger(__name__)
CACHE_READ_S = 5.0  # how often the leader asks the workers what their artifact caches hold

PLACEMENT_PREFIX = keys.PLACEMENT
# how a model's status reason starts while its last load failed (cleared by the next success)
LOAD_FAILED = "the last load failed: "
# how long the planner's "no room" for a model is reused while nothing changed here
REFUSAL_HOLD_S = 0.5


@dataclass(frozen=True, slots=True)
class Placed:
    version: str
    bytes: int
    loaded_at: float

    @classmethod
    def parse(cls, value: Any) -> Placed:
        """A stored placement value (JSON object); KeyError, TypeError or ValueError if unreadable."""
        return cls(str(value["version"]), int(value["bytes"]), float(value["loaded_at"]))


@dataclass(frozen=True, slots=True)
class _ReadyEstimate:
    """When a cold model could answer a batch of one: ready at (monotonic), then executing."""

    ready_at: float
    exec_s: float
    slo_ms: float


class PlacementLost(Exception):
    """The instance a request went to does not hold its model (``PlacementService.lost``)."""


class PlacementService(ProfilingMixin):
    def __init__(self, store: StateStore, instances: InstanceRegistry, catalog: ModelCatalog,
                 predictor: LatencyPredictor, metrics: PlacementMetrics,
                 settings: PlacementSettings) -> None:
        self.store = store
        self.instances = instances
        self.catalog = catalog
        self.predictor = predictor
        self.metrics = metrics
        self.settings = settings
        # actual state: instance id -> qualified name -> what is loaded there
        self._actual: dict[str, dict[str, Placed]] = {}
        # one load per model at a time: concurrent cold requests wait for the same load
        self._loading: dict[str, asyncio.Task[TritonDriver]] = {}
        # Under a flood of requests for a model that cannot load (or not in time), the
        # answer is the same for every one of them: each would otherwise build a cluster
        # snapshot and plan again, and those refusals take the CPU the loaded models run on.
        # ``_changes`` counts what changes a plan's answer here (placements, loads, evictions,
        # instances resynced); a refusal is reused while it is unchanged, for at most
        # REFUSAL_HOLD_S (demand and other replicas move the answer too), and a cold
        # request's "ready at" is reused while the same load is in flight.
        self._changes = 0
        self._refused: dict[str, tuple[float, int, str]] = {}  # qualified -> (until, changes, reason)
        self._ready: dict[str, tuple[asyncio.Task[TritonDriver], _ReadyEstimate | None]] = {}
        # memory held for profiles in flight, so a load does not take the room a profile uses
        self._reserved: dict[str, int] = {}
        # loads in flight (LOADING in the planner's snapshot), so two cold models don't both
        # take the last room: instance id -> qualified -> the load
        self._pending: dict[str, dict[str, Pending]] = {}
        # the pure planner (placement/planner.py): where a cold model goes, what is evicted
        self.planner = Planner(PlannerConfig.policy(settings.placement_policy, settings.placement_evict_margin))
        self.activity = Activity()  # requests in flight, last use, demand per model
        # this replica's demand published for the leader; the others' read back by its pass
        self.demand_share = (DemandShare(store, settings.replica_id, self.activity.demand)
                             if settings.replica_id else None)
        self._failures: dict[str, LoadFailure] = {}  # qualified -> its last failed load
        self._sizes: dict[str, int] = {}  # "qualified@version" -> bytes an instance reported
        # "qualified@version" -> the digest of the files last loaded (a caching worker's), and
        # per instance the models its artifact cache holds, as last reported (read at most
        # every CACHE_READ_S by the leader's pass): the planner counts their loads warm there
        self._digests: dict[str, str] = {}
        self._cached: dict[str, frozenset[str]] = {}
        self._caches_read_at = -CACHE_READ_S
        # loads no request asked for (weak: a done task's callbacks run before its waiters resume)
        self._prefetches: weakref.WeakSet[asyncio.Task[TritonDriver]] = weakref.WeakSet()
        # tenant -> (fraction, bytes) of memory it may hold safe from others (set by the wiring)
        self.memory_shares: Callable[[], Mapping[str, tuple[float | None, int | None]]] = dict
        # the planner's latest decisions, newest last, for GET /admin/placement
        self.decisions: deque[tuple[float, str]] = deque(maxlen=200)
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # (qualified, version, class) profiles in flight, so a class is profiled once
        self._profiling: set[tuple[str, str, str]] = set()
        # loads and unloads made by other replicas reach this one through a watch, so the
        # request path finds a model another replica loaded without reading the store
        self._shared = PrefixCache(store, PLACEMENT_PREFIX, on_change=self._placement_changed)
        # executions the gateway forwarded -> predictor, on the profile's (compute) basis
        self.feed = ExecutionFeed(predictor, min_interval_s=settings.stats_poll_interval_s)

    async def start(self) -> None:
        await self._shared.start()
        await self.feed.start()
        if self.demand_share is not None:
            await self.demand_share.start()
        await self.resync()
        self._task = asyncio.create_task(self._loop(), name="placement-resync")

    async def close(self) -> None:
        await self._shared.close()
        await self.feed.close()
        if self.demand_share is not None:
            await self.demand_share.close()
        tasks = [t for t in (self._task, *self._background, *self._loading.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # ---- actual state ----------------------------------------------------------------

    async def resync(self) -> None:
        """Rebuild actual state of instances that (re)appeared from their repository index."""
        known = {i.record.instance_id for i in self.instances.list()}
        for iid in list(self._actual):
            if iid not in known:
                del self._actual[iid]
        for inst in self.instances.list():
            if not (inst.healthy and inst.needs_resync):
                continue
            iid = inst.record.instance_id
            try:
                served = await inst.driver.served_models()
            except InferplexError as exc:
                log.warning("cannot read what %s serves: %s", iid, exc)
                continue
            actual: dict[str, Placed] = {}
            for model in served:
                if model.name.startswith((PROFILE_NAME_PREFIX, PROBE_NAME_PREFIX)):
                    continue
                rec = self.catalog.by_qualified(model.name, model.version or None)
                # per-model memory: what the instance reports (the worker always, Triton where
                # the backend does), else what profiling measured, else the estimate
                size = model.memory_bytes or (self._model_bytes(rec) if rec is not None
                                              else estimate_model_bytes(0))
                actual[model.name] = Placed(model.version, size, time.time())
            self._actual[iid] = actual
            self._changes += 1
            inst.needs_resync = False
            await self._mirror(iid, actual)
            log.info("instance %s holds %d models: %s", iid, len(actual), sorted(actual))

    async def _mirror(self, iid: str, actual: dict[str, Placed]) -> None:
        """Store what the instance serves. A placement it lost (a restarted Triton loses every
        model) keeps its key: that is the desired state, which the reconcile leader restores."""
        prefix = keys.placements_on(iid)
        stored = {kv.key.removeprefix(prefix) for kv in await self.store.list_prefix(prefix)}
        lost = stored - actual.keys()
        if lost:
            log.warning("instance %s lost %s; the reconcile leader places them again", iid, sorted(lost))
        for name, p in actual.items():
            await self._record(iid, name, p)

    def forget(self, iid: str, qualified: str) -> None:
        """The instance no longer holds ``qualified``: route nothing there for it."""
        self._changes += 1
        self._actual.get(iid, {}).pop(qualified, None)

    def unreachable(self, iid: str) -> None:
        """A request found the instance gone (connection refused or dropped): route nothing
        more there until its health check answers again (which resyncs what it serves)."""
        inst = self.instances.get(iid)
        if inst is not None and inst.healthy:
            log.warning("instance %s is unreachable: failing its requests over", iid)
            inst.healthy = False

    def lost(self, iid: str, qualified: str) -> PlacementLost:
        """An instance answered that it does not know a model this replica routed to it (it
        restarted, and the watch or the leader's pass has not caught up): forget it here, so
        the caller's retry loads it again."""
        log.warning("instance %s does not hold %s any more; loading it again", iid, qualified)
        self.forget(iid, qualified)
        return PlacementLost(f"{iid} lost {qualified}")

    async def _record(self, iid: str, qualified: str, p: Placed) -> None:
        value = {"version": p.version, "bytes": p.bytes, "loaded_at": p.loaded_at}
        await self.store.put(keys.placement(iid, qualified), json.dumps(value, sort_keys=True).encode())

    def _placement_changed(self, key: str, value: Any | None, _revision: int) -> None:
        self._changes += 1
        iid, _, qualified = key.removeprefix(PLACEMENT_PREFIX).partition("/")
        if value is None:
            self._actual.get(iid, {}).pop(qualified, None)
            return
        try:
            placed = Placed.parse(value)
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring unreadable placement %s", key)
            return
        self._actual.setdefault(iid, {})[qualified] = placed

    def pending_loads(self) -> dict[str, dict[str, Pending]]:
        """Loads in flight from this replica: instance id -> qualified -> the load."""
        return {iid: dict(loads) for iid, loads in self._pending.items() if loads}

    def placements(self) -> dict[str, dict[str, Placed]]:
        return {iid: dict(models) for iid, models in self._actual.items()}

    def used_bytes(self, instance_id: str) -> int:
        return sum(p.bytes for p in self._actual.get(instance_id, {}).values()) + \
            self._reserved.get(instance_id, 0) + \
            sum(p.bytes for p in self._pending.get(instance_id, {}).values())

    def _snapshot(self) -> list[InstanceSnapshot]:
        return [
            InstanceSnapshot(
                i.record.instance_id, i.record.memory_bytes, self.used_bytes(i.record.instance_id),
                healthy=i.healthy, models=frozenset(self._actual.get(i.record.instance_id, {})),
                instance_class=i.record.instance_class, platforms=i.platforms,
            )
            for i in self.instances.list()
        ]

    def _model_bytes(self, record: ModelRecord) -> int:
        """The most any instance class measured or an instance reported (on a load, or in
        refusing one: "needs N bytes"), else the estimate from the file size."""
        classes = (record.profile or {}).get("classes") or {}
        measured = max((int(c.get("memory_bytes") or 0) for c in classes.values()), default=0)
        seen = self._sizes.get(f"{record.qualified_name}@{record.version}", 0)
        return max(measured, seen) or estimate_model_bytes(record.size_bytes)

    # ---- loading ---------------------------------------------------------------------

    def holdings(self) -> dict[str, dict[str, str]]:
        """What each instance holds now: instance id -> {instance-level name: version}."""
        return {iid: {q: placed.version for q, placed in models.items()}
                for iid, models in self._actual.items()}

    def find_loaded(self, qualified: str, version: str) -> TritonDriver | None:
        for iid, models in self._actual.items():
            placed = models.get(qualified)
            if placed is not None and placed.version == version:
                inst = self.instances.get(iid)
                if inst is not None and inst.healthy:
                    return inst.driver
        return None

    async def ensure_loaded(self, record: ModelRecord, deadline: float | None = None) -> TritonDriver:
        """An instance driver that holds this model version, loading it first if needed.
        ``deadline`` (monotonic seconds): the waiting request's; when the planner says the
        model cannot be ready and execute a batch of one by then, the request is refused at
        once (503 with when to retry) and the load goes on for the requests after it."""
        version = str(record.version)
        driver = self.find_loaded(record.qualified_name, version)
        if driver is not None:
            return driver
        self._refuse_as_before(record)
        task = self._loading.get(record.qualified_name)
        late = None if deadline is None else self._too_late_by(record, deadline, task)
        if task is None:
            task = asyncio.create_task(self._load(record), name=f"load-{record.qualified_name}")
            self._loading[record.qualified_name] = task
            task.add_done_callback(lambda t, q=record.qualified_name: (
                self._loading.pop(q, None), t.cancelled() or t.exception()))
        if late is not None:
            wait_s, load_s, exec_s, slo_ms = late
            self.metrics.error(record.tenant, record.name, "cold_infeasible")
            raise Unavailable(f"cannot meet the {slo_ms:g} ms SLO of model '{record.name}': it is not loaded; "
                              f"predicted {wait_s * 1e3:.0f} ms (load {load_s * 1e3:.0f} ms, execute "
                              f"{exec_s * 1e3:.0f} ms); refused now rather than answered late; it is "
                              f"loading, retry in {math.ceil(wait_s)} s", retry_after_s=max(1, math.ceil(wait_s)))
        # shield: one caller giving up (client disconnect) must not cancel the others' load
        try:
            driver = await asyncio.shield(task)
        except ResourceExhausted:
            if task not in self._prefetches:
                # an instance's memory refusal is the control plane's to handle, not the tenant's
                raise Unavailable(f"cannot load model '{record.name}': no instance has room for it "
                                  "now; retry later", retry_after_s=5) from None
            if self._loading.get(record.qualified_name) is task:
                del self._loading[record.qualified_name]
            return await self.ensure_loaded(record)
        except InferplexError:
            if task not in self._prefetches:
                raise
            # the leader's prefetch or replica load failed (e.g. the instance had less room
            # than planned): this request's own load plans again
            if self._loading.get(record.qualified_name) is task:
                del self._loading[record.qualified_name]
            return await self.ensure_loaded(record)
        if self.find_loaded(record.qualified_name, version) is None:
            # a different version was loading; load this one now
            return await self.ensure_loaded(record)
        return driver

    def _refuse_as_before(self, record: ModelRecord) -> None:
        """Refuse at once, as the planner last did, while nothing it decides on changed here
        (and for at most REFUSAL_HOLD_S)."""
        held = self._refused.get(record.qualified_name)
        if held is None:
            return
        until, changes, reason = held
        if changes != self._changes or time.monotonic() >= until:
            del self._refused[record.qualified_name]
            return
        self.metrics.error(record.tenant, record.name, "no_capacity")
        raise Unavailable(f"cannot load model '{record.name}': {reason}", retry_after_s=5)

    def _too_late_by(self, record: ModelRecord, deadline: float,
                     loading: asyncio.Task[TritonDriver] | None = None) -> tuple[float, float, float, float] | None:
        """(seconds until it could answer, of them loading, executing; SLO ms) when the
        planner's "ready at" (the load in progress, else the one it would plan, after the loads
        queued there) plus a batch of one ends after ``deadline``; None when it can make it or
        nothing is measured. Its own load and execution count at their median, not the p99 the
        planner plans with: a request is refused before its load only when even a typical load
        makes it late (one that waits and still runs late is refused by admission after it).
        The estimate is made once per load in flight (``loading``), not once per request."""
        q = record.qualified_name
        held = self._ready.get(q)
        if loading is not None and held is not None and held[0] is loading:
            estimate = held[1]
        else:
            estimate = self._ready_estimate(record)
            if loading is not None:
                self._ready[q] = (loading, estimate)
                loading.add_done_callback(lambda done, q=q: self._forget_ready(q, done))
        if estimate is None:
            return None
        now = time.monotonic()
        ready_s = max(0.0, estimate.ready_at - now)
        if now + ready_s + estimate.exec_s <= deadline:
            return None
        return ready_s + estimate.exec_s, ready_s, estimate.exec_s, estimate.slo_ms

    def _forget_ready(self, qualified: str, load: asyncio.Task[TritonDriver]) -> None:
        held = self._ready.get(qualified)
        if held is not None and held[0] is load:
            del self._ready[qualified]

    def _ready_estimate(self, record: ModelRecord) -> _ReadyEstimate | None:
        """``_too_late_by``'s estimate from a cluster snapshot; None when nothing is measured."""
        q = record.qualified_name
        snap = self.cluster((q,))
        spec = snap.models.get(q)
        ready = ready_at(snap, q, snap.now)
        if spec is None or ready is None or ready.loaded:
            return None  # refused with the planner's reason by the load itself
        typical = typical_ready(snap, q, ready, self.predictor)
        if typical is None:
            return None  # nothing measured: a guessed load time refuses nobody
        ready_s, exec_s = typical
        return _ReadyEstimate(snap.now + ready_s, exec_s, spec.slo_s * 1e3)

    async def _load(self, record: ModelRecord) -> TritonDriver:
        """Place a cold model by the planner: on an instance with room, else after evicting
        what the planner chose (never a copy with requests in flight here), else refused with
        the planner's reason for the tenant."""
        qualified = record.qualified_name
        refused: set[str] = set()
        last_reason = ""
        attempts = 0  # plans made again after an instance measured the model larger
        while True:
            snap = self.cluster((qualified,), skip=refused)
            plan = self.planner.place(snap, guarded=not self._cold_load_can_make_it(snap, qualified))
            refusal = next((r for r in plan.refusals if r.model == qualified), None)
            load = next((a for a in plan.loads if a.model == qualified), None)
            if load is None:
                driver = self.find_loaded(qualified, str(record.version))
                if driver is not None:  # it appeared meanwhile (another replica)
                    return driver
                reason = refusal.tenant_reason if refusal else "no instance can take it now"
                if refusal:
                    self._decided(f"refused {record.tenant}/{record.name}: {refusal.reason}")
                if last_reason:  # the instance's own words stay in the log
                    reason = f"{reason} (an instance had less memory free than planned)"
                self.metrics.error(record.tenant, record.name, "no_capacity")
                self._refused[qualified] = (time.monotonic() + REFUSAL_HOLD_S, self._changes, reason)
                raise Unavailable(f"cannot load model '{record.name}': {reason}", retry_after_s=5)
            inst = self.instances.get(load.instance_id)
            if inst is None:
                refused.add(load.instance_id)
                continue
            # claimed before the first await: a concurrent plan sees the room taken and the
            # victims gone
            pending = Pending(load.bytes, snap.now, load.ready_at)
            self._pending.setdefault(load.instance_id, {})[qualified] = pending
            victims = self._take_victims(plan.unloads, load.instance_id)
            try:
                for v in victims:
                    await self._apply_unload(v)
                self._decided(load.reason)
                self.metrics.cold_start(record.tenant, record.name)  # requests wait for this load
                return await self._load_on(record, inst, load.bytes)
            except ResourceExhausted as exc:
                # the planner's numbers said it fits, the instance says no: plan again with
                # the size it measured (evicting more), else try the next instance
                log.warning("instance %s refused %s: %s", load.instance_id, qualified, exc.message)
                if self._model_bytes(record) > load.bytes and attempts < 3:  # _load_on learned it
                    attempts += 1
                else:
                    refused.add(load.instance_id)
                last_reason = exc.message
            finally:
                self._pending.get(load.instance_id, {}).pop(qualified, None)

    @staticmethod
    def _cold_load_can_make_it(snap: ClusterSnapshot, qualified: str) -> bool:
        """Whether a request that waits for this model's load (the fastest class's predicted
        load plus a batch of one) can still meet its SLO."""
        spec = snap.models.get(qualified)
        if spec is None or not spec.costs:
            return True
        fastest = min(c.load_s(False) + min(c.exec_s.values(), default=0.0) for c in spec.costs.values())
        return fastest <= spec.slo_s

    async def _load_on(self, record: ModelRecord, inst: Any, size: int) -> TritonDriver:
        """Load ``record`` on ``inst`` and record the placement (the caller made the room)."""
        qualified, version, iid = record.qualified_name, str(record.version), inst.record.instance_id
        try:
            # timed from the artifact store on, like the profile's load times
            fetch_started = time.perf_counter()
            files = await asyncio.to_thread(self.catalog.files, record)
            loaded = await inst.driver.load(qualified, self.catalog.triton_config(record), files)
            seconds = time.perf_counter() - fetch_started
            size = await self._reported_bytes(inst.driver, qualified) or size
        except InferplexError as exc:
            self.metrics.load(qualified, 0.0, False)
            need = _needed_bytes(exc.message) if isinstance(exc, ResourceExhausted) else None
            if need is not None:  # the instance measured it: plan with that from now on
                key = f"{qualified}@{version}"
                self._sizes[key] = max(need, self._sizes.get(key, 0))
            if not isinstance(exc, ResourceExhausted):
                failed = self._failures.get(qualified)
                now = time.monotonic()
                failure = self._failures[qualified] = LoadFailure.after(
                    exc.message, now, (failed.attempts + 1) if failed else 1, iid)
                self._decided(f"loading {record.tenant}/{record.name} on {iid} failed: {exc.message}")
                # the tenant sees it on the model's status (the catalog redacts what is internal)
                with contextlib.suppress(InferplexError):
                    await self.catalog.set_status(
                        record, record.status, reason=f"{LOAD_FAILED}{exc.message}; tried again "
                        f"in {failure.retry_at - now:.0f} s (elsewhere at once)")
            raise
        if self._failures.pop(qualified, None) is not None or record.reason.startswith(LOAD_FAILED):
            with contextlib.suppress(InferplexError):
                await self.catalog.set_status(record, record.status)  # the failure is over
        self._sizes[f"{qualified}@{version}"] = size
        placed = Placed(version, size, time.time())
        self._actual.setdefault(iid, {})[qualified] = placed
        self._changes += 1
        await self._record(iid, qualified, placed)
        self.metrics.load(qualified, seconds, True)
        self.metrics.loaded_bytes(record.tenant, record.name, record.size_bytes)
        warm = bool(getattr(loaded, "cached", False))
        if (digest := getattr(loaded, "digest", None)) is not None:
            self._digests[f"{qualified}@{version}"] = digest
        self.predictor.observe_load(qualified, inst.record.instance_class, seconds, warm=warm)
        log.info("loaded %s v%s on %s in %.3fs%s", qualified, version, iid, seconds,
                 " (from its artifact cache)" if warm else "")
        # an older version that stayed elsewhere would only hold memory: nothing routes to it
        for other in self._other_versions(qualified, version):
            try:
                await self.unload_from(other, qualified)
            except InferplexError as exc:
                log.warning("could not unload the old version of %s from %s: %s", qualified,
                            other, exc.message)
        self._profile_new_class(record, inst.record.instance_class)
        return inst.driver

    def _take_victims(self, unloads: Iterable[Unload], instance_id: str) -> list[Unload]:
        """A plan's unloads on ``instance_id``, gone from actual state at once (before the
        caller's first await): a concurrent plan sees the victims gone and does not pick them."""
        victims = [a for a in unloads if a.instance_id == instance_id]
        self._changes += bool(victims)
        for v in victims:
            self._actual.get(v.instance_id, {}).pop(v.model.partition("@")[0], None)
        return victims

    async def _apply_unload(self, action: Unload) -> None:
        qualified = action.model.partition("@")[0]  # an old version's copy: "q@version"
        reason = "shrink" if action.reason.startswith("removed a copy") else "room"
        self._decided(action.reason)
        await self.unload_from(action.instance_id, qualified, reason=reason)

    def _decided(self, text: str) -> None:
        log.info("placement: %s", text)
        self.decisions.append((time.time(), text))

    def cluster(self, wanted: tuple[str, ...] = (), skip: set[str] | None = None) -> ClusterSnapshot:
        """The planner's snapshot of the desired state: what is loaded, what is loading, the
        models the plan may touch with their costs, demand and the tenants' memory shares.
        Instances in ``skip`` count as unhealthy (they refused this load)."""
        now = time.monotonic()
        states, names = [], set(wanted)
        classes = {i.record.instance_class for i in self.instances.list()}
        for inst in self.instances.list():
            iid = inst.record.instance_id
            resident: dict[str, tuple[int, float]] = {}
            for q, placed in self._actual.get(iid, {}).items():
                latest = self.catalog.by_qualified(q)
                # another version than the latest is a model of its own to the planner (it
                # has no spec, so it costs nothing to evict)
                name = q if latest is None or str(latest.version) == placed.version else f"{q}@{placed.version}"
                resident[name] = (placed.bytes, placed.loaded_at)
            pending = dict(self._pending.get(iid, {}))
            names |= resident.keys() | pending.keys()
            states.append(InstanceState(iid, inst.record.instance_class, inst.record.memory_bytes,
                                        inst.healthy and iid not in (skip or ()), inst.platforms,
                                        resident, pending, self._reserved.get(iid, 0),
                                        self.instances.draining(iid), self._cached.get(iid, frozenset())))
        peers = self.demand_share.peers if self.demand_share is not None else {}
        names |= set(self.activity.demand.snapshot(now)) | peers.keys()
        specs = {}
        for q in names:
            rec = self.catalog.by_qualified(q)
            if rec is not None and rec.status != "failed":
                specs[q] = model_spec(rec, classes, self.predictor, self._model_bytes(rec),
                                      self._failures.get(q))
        shares = {t: TenantShare(fraction=f, bytes=b) for t, (f, b) in self.memory_shares().items()}
        return cluster_snapshot(now, states, specs, self.activity, shares, wanted, peer_demand=peers)

    async def plan_pass(self) -> None:
        """The leader's periodic pass: the planner's optional work (remove copies no longer
        needed, prefetch rising models, re-place models with demand and no copy, add copies
        of hot ones), applied in order; loads run in the background, one per model."""
        await self._read_caches()
        if self.demand_share is not None:
            await self.demand_share.read()  # every replica's requests count, not only the leader's
        plan = self.planner.plan(self.cluster())
        for action in plan.actions:
            if isinstance(action, Unload):
                model = action.model.partition("@")[0]
                if (self.activity.executing.get((model, action.instance_id))
                        if self.instances.draining(action.instance_id) else self.activity.in_flight.get(model)):
                    continue  # work arrived since the snapshot
                await self._apply_unload(action)
                continue
            record = self.catalog.by_qualified(action.model)
            inst = self.instances.get(action.instance_id)
            if record is None or inst is None or action.model in self._loading:
                continue
            self._decided(action.reason)
            self._start_background_load(record, inst, action.bytes, action.ready_at)

    def rate_per_s(self, qualified: str, now: float) -> float:
        """A model's sustained request rate: this replica's, plus the other replicas' where this
        one is the leader (it reads them every pass)."""
        own = self.activity.demand.demand(qualified, now).sustained
        peer = self.demand_share.peers.get(qualified) if self.demand_share is not None else None
        return own + (peer.sustained if peer is not None else 0.0)

    def cached_models(self, instance_id: str) -> frozenset[str]:
        """Models (instance-level names) whose files the instance's artifact cache holds, as
        the leader's pass last read them."""
        return self._cached.get(instance_id, frozenset())

    async def _read_caches(self) -> None:
        """Which models each worker's artifact cache holds (its memory report lists digests),
        at most every ``CACHE_READ_S``; an instance without a cache (a Triton) holds none."""
        now = time.monotonic()
        if now - self._caches_read_at < CACHE_READ_S:
            return
        self._caches_read_at = now
        insts = [i for i in self.instances.list() if i.healthy]
        reports = await asyncio.gather(*(i.driver.memory_report() for i in insts))
        by_digest: dict[str, set[str]] = {}  # models with identical files share one entry
        for key, digest in self._digests.items():
            q, _, version = key.rpartition("@")
            latest = self.catalog.by_qualified(q)
            if latest is not None and str(latest.version) == version:
                by_digest.setdefault(digest, set()).add(q)
        cached: dict[str, frozenset[str]] = {}
        for inst, report in zip(insts, reports, strict=True):
            cache = report.get("cache") if isinstance(report, dict) else None
            digests = cache.get("digests") if isinstance(cache, dict) else None
            cached[inst.record.instance_id] = frozenset(
                q for d in digests or () if isinstance(d, str) for q in by_digest.get(d, ()))
        self._cached = cached

    def _start_background_load(self, record: ModelRecord, inst: Any, size: int, ready_at: float) -> None:
        q, iid = record.qualified_name, inst.record.instance_id
        self._pending.setdefault(iid, {})[q] = Pending(size, time.monotonic(), ready_at)

        async def run() -> TritonDriver:
            try:
                return await self._load_on(record, inst, size)
            finally:
                self._pending.get(iid, {}).pop(q, None)

        task = asyncio.create_task(run(), name=f"load-{q}-{iid}")
        self._loading[q] = task
        self._prefetches.add(task)
        task.add_done_callback(lambda t: (self._loading.pop(q, None) if self._loading.get(q) is t else None,
                                          t.cancelled() or t.exception()))

    async def _reported_bytes(self, driver: TritonDriver, qualified: str) -> int | None:
        """What the instance reports the model holds, where it does (statistics' memory_usage)."""
        try:
            return memory_from_statistics(await driver.statistics(qualified), qualified)
        except InferplexError:
            return None

    def _other_versions(self, qualified: str, version: str) -> dict[str, int]:
        """Instance id -> bytes, where a version of ``qualified`` other than ``version`` is loaded."""
        return {iid: placed.bytes for iid, models in self._actual.items()
                if (placed := models.get(qualified)) is not None and placed.version != version}

    async def unload_everywhere(self, qualified_name: str) -> None:
        """Unload from every instance that holds it (before a model is deleted)."""
        task = self._loading.get(qualified_name)
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        for iid, models in list(self._actual.items()):
            if qualified_name in models:
                await self.unload_from(iid, qualified_name)
        self.predictor.forget(qualified_name)
        self.feed.forget(qualified_name)
        self._failures.pop(qualified_name, None)
        if not self.activity.in_flight.get(qualified_name):
            self.activity.forget(qualified_name)

    async def unload_from(self, iid: str, qualified: str, revision: int | None = None,
                          reason: str = "delete") -> None:
        """Unload ``qualified`` from instance ``iid`` and drop its placement (only at
        ``revision`` when given). An instance that no longer holds it is fine; one that is
        down or gone is skipped: when it comes back, resync mirrors its index into the
        store and the reconcile leader unloads what no longer exists."""
        # the key goes first: the reconcile leader takes a placement whose model the instance
        # no longer serves for a lost one and loads it again
        await self.store.delete(keys.placement(iid, qualified), expected_revision=revision)
        self._actual.get(iid, {}).pop(qualified, None)
        inst = self.instances.get(iid)
        if inst is not None and inst.healthy:
            with contextlib.suppress(NotFound):
                await inst.driver.unload(qualified)
        self.metrics.eviction(qualified, reason)
        log.info("unloaded %s from %s (%s)", qualified, iid, reason)

    def observe(self, driver: TritonDriver, qualified: str, batch: int | None, round_trip_s: float,
                prediction: Prediction | None, compute_s: float | None = None,
                *, elements: int | None = None) -> None:
        """One execution the gateway forwarded. ``compute_s`` is the compute time the
        instance reported in its response (inferplex workers do, Triton does not); without
        it, or without a batch size, the feed reads the statistics later. ``elements``
        (the batch's input elements, ``profiler.profile.request_elements``) feeds the
        predictor's size curve."""
        info = driver.info
        if compute_s is not None and batch is not None:
            self.feed.observed_exact(qualified, info.instance_class, batch, compute_s, prediction,
                                     instance_id=info.instance_id, elements=elements)
            return
        self.feed.executed(info.instance_id, driver, qualified, info.instance_class, batch,
                           round_trip_s, prediction, elements=elements)

    # ---- loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            try:
                await self.resync()
            except Exception:  # never let the loop die
                log.exception("placement resync failed")


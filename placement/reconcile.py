"""The placement reconcile loop: one leader at a time makes the instances match the
desired placement.

Every replica campaigns for ``/inferplex/leader/placement`` (a lease plus a
create-if-absent transaction, ``LeaderElection``); only the leader runs the loop.
Each pass compares the desired placement (``/inferplex/placement/{instance}/{model}``)
with the registered instances (``/inferplex/instances/...``, records bound to the
workers' leases) and the catalog:

- a placement on an instance whose record vanished (its lease expired) is moved:
  the model is loaded on another instance with room, so the next request finds it
  warm, and the stale key is deleted;
- a placement on a live instance that no longer serves the model is lost (a restarted
  Triton, in explicit model control, comes back holding nothing): it is loaded again, on
  the same instance when it still has room. What an instance serves is read from the
  statistics of its loaded models (``InstanceDriver.served_models``), never its index,
  which on Triton lists only the models of its repository directory;
- a placement whose model version no longer exists is unloaded and deleted
  (a model deleted through a replica that never loaded it leaves such placements).

The decision is the pure ``plan_reconcile``; the shell only applies it. Every step
is idempotent: a leader that dies mid-pass leaves keys the next leader handles the
same way. The loop never dies on an exception and records each step's duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kserve.errors import InferplexError
from placement.instances import INSTANCES_PREFIX, InstanceRegistry
from placement.ports import ModelCatalog
from placement.service import PLACEMENT_PREFIX, Placed, PlacementService
from store import keys
from store.base import StateStore
from store.leader import LeaderElection

log = logging.getLogger(__name__)

LEADER_KEY = keys.LEADER_PLACEMENT
# A placement younger than this is never unloaded for a missing model: the catalog
# cache of this replica may not have seen the upload yet (watch lag).
UNLOAD_GRACE_S = 10.0


# ---- the pure core ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DesiredPlacement:
    instance_id: str
    qualified: str
    version: str
    loaded_at: float
    revision: int  # of the key, for a CAS delete


@dataclass(frozen=True, slots=True)
class Move:
    """Load ``qualified``/``version`` elsewhere; then drop ``stale`` (on a vanished instance)."""

    qualified: str
    version: str
    stale: tuple[DesiredPlacement, ...]
    # False when a live instance already holds it: only the stale keys need deleting
    load: bool


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    moves: tuple[Move, ...] = ()
    unloads: tuple[DesiredPlacement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.moves and not self.unloads


def plan_reconcile(desired: list[DesiredPlacement], live_instances: set[str],
                   model_exists: Callable[[str, str], bool], now: float,
                   grace_s: float = UNLOAD_GRACE_S,
                   served: Mapping[str, frozenset[str]] | None = None) -> ReconcilePlan:
    """What to change so the instances match the desired placement (pure). ``served``: the
    model names each live instance that could be asked serves (an instance not in it, e.g.
    one not answering, is judged by its record only)."""
    served = served or {}
    on_live: set[tuple[str, str]] = set()
    stale: dict[tuple[str, str], list[DesiredPlacement]] = {}
    unloads: list[DesiredPlacement] = []
    for p in desired:
        if not model_exists(p.qualified, p.version):
            # deleted model: unload where the instance still exists, else just forget it
            if p.instance_id not in live_instances or now - p.loaded_at >= grace_s:
                unloads.append(p)
            continue
        lost = p.instance_id in served and p.qualified not in served[p.instance_id]
        if p.instance_id in live_instances and not lost:
            on_live.add((p.qualified, p.version))
        else:
            stale.setdefault((p.qualified, p.version), []).append(p)
    moves = tuple(
        Move(q, v, tuple(ps), load=(q, v) not in on_live)
        for (q, v), ps in sorted(stale.items())
    )
    return ReconcilePlan(moves, tuple(unloads))


# ---- the shell --------------------------------------------------------------------------

@dataclass(slots=True)
class StepTiming:
    step: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class PassReport:
    started_at: float
    steps: list[StepTiming] = field(default_factory=list)
    moved: int = 0
    unloaded: int = 0

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)


def _report(report: PassReport | None) -> dict[str, Any] | None:
    return None if report is None else {**asdict(report), "ok": report.ok}


class PlacementReconciler:
    def __init__(self, store: StateStore, instances: InstanceRegistry, placement: PlacementService,
                 catalog: ModelCatalog, *, identity: str, leader_ttl_s: int = 5,
                 interval_s: float = 1.0) -> None:
        self.store = store
        self.instances = instances
        self.placement = placement
        self.catalog = catalog
        self.identity = identity
        self.interval_s = interval_s
        self.election = LeaderElection(store, LEADER_KEY, identity, leader_ttl_s,
                                       on_elected=self._on_elected)
        self.passes = 0
        self.moved = 0
        self.unloaded = 0
        # passes that changed something or failed a step, for operators reading what happened
        self.history: deque[PassReport] = deque(maxlen=20)
        # the latest pass, whatever it did: /admin/leader's ``last_pass`` is the loop's health now
        self.last: PassReport | None = None
        self._fresh_term = False
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self.election.is_leader

    async def start(self) -> None:
        self.election.start()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="placement-reconcile")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # resigning lets another replica take over at once instead of after the TTL
        await self.election.stop()

    async def describe(self) -> dict[str, Any]:
        leader: str | None = None
        with contextlib.suppress(InferplexError):
            kv = await self.store.get(LEADER_KEY)
            leader = kv.value.decode() if kv is not None else None
        last = self.last
        failed = next((r for r in reversed(self.history) if not r.ok), None)
        return {
            "replica": self.identity,
            "is_leader": self.is_leader,
            "leader": leader,
            "terms": self.election.terms,
            "reconcile": {
                "passes": self.passes, "moved": self.moved, "unloaded": self.unloaded,
                "last_pass": _report(last),
                # the latest pass with a failed step (e.g. through a store outage), kept after
                # passes succeed again: what went wrong, and when
                "last_failed_pass": _report(failed),
            },
        }

    def _on_elected(self) -> None:
        self._fresh_term = True

    async def _loop(self) -> None:
        while True:
            try:
                await self.election.elected.wait()
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop outlives any one bad pass
                log.exception("reconcile pass failed")
            await asyncio.sleep(self.interval_s)

    async def reconcile_once(self) -> PassReport:
        """One pass; only acts while this replica leads."""
        report = PassReport(started_at=time.time())
        if self._fresh_term:
            # a new leader trusts no memory: actual state comes from the instances' indexes
            self._fresh_term = False
            await self._step(report, "resync", lambda: self._resync(everything=True))
        observed = await self._step(report, "observe", self._observe)
        if observed is None:
            self._finish(report)
            return report
        desired, live, served = observed
        plan = plan_reconcile(desired, live, self._model_exists, time.time(), served=served)
        if plan.moves:
            await self._step(report, "refresh-instances", self._resync)
        for move in plan.moves:
            if not self.is_leader:
                break
            if await self._step(report, f"move {move.qualified}", lambda m=move: self._move(m)):
                report.moved += 1
        for p in plan.unloads:
            if not self.is_leader:
                break
            if await self._step(report, f"unload {p.qualified}@{p.instance_id}",
                                lambda p=p: self._unload(p)):
                report.unloaded += 1
        if self.is_leader:
            # the planner's optional work: copies no longer needed, prefetch, replicas
            await self._step(report, "plan", self.placement.plan_pass)
        self._finish(report)
        return report

    def _finish(self, report: PassReport) -> None:
        self.passes += 1
        self.moved += report.moved
        self.unloaded += report.unloaded
        self.last = report
        if report.moved or report.unloaded or not report.ok:
            self.history.append(report)

    async def _step(self, report: PassReport, name: str, action: Callable[[], Any]) -> Any:
        """Run one step, time it, and never let it raise."""
        t0 = time.perf_counter()
        try:
            result = await action()
        except Exception as exc:
            report.steps.append(StepTiming(name, time.perf_counter() - t0, False, str(exc)))
            log.warning("reconcile step %s failed: %s", name, exc)
            return None
        report.steps.append(StepTiming(name, time.perf_counter() - t0, True))
        return True if result is None else result

    # ---- steps ---------------------------------------------------------------------------

    async def _resync(self, everything: bool = False) -> None:
        """Make the registry drop vanished instances now (it polls the store), so placement
        cannot choose them for a move, and rebuild actual state: of every instance when
        ``everything`` (a new leader trusts no memory), else of those that (re)appeared."""
        if everything:
            for inst in self.instances.list():
                inst.needs_resync = True
        await self.instances.refresh()
        await self.placement.resync()

    async def _observe(self) -> tuple[list[DesiredPlacement], set[str], dict[str, frozenset[str]]]:
        # read the store, not caches: the leader decides on what is committed
        live = {kv.key.removeprefix(INSTANCES_PREFIX) for kv in await self.store.list_prefix(INSTANCES_PREFIX)}
        desired = []
        for kv in await self.store.list_prefix(PLACEMENT_PREFIX):
            iid, _, qualified = kv.key.removeprefix(PLACEMENT_PREFIX).partition("/")
            try:
                keys.placement(iid, qualified)  # a key outside the layout is unreadable too
                placed = Placed.parse(json.loads(kv.value))
            except (ValueError, KeyError, TypeError):
                log.warning("dropping unreadable placement %s", kv.key)
                await self.store.delete(kv.key, expected_revision=kv.revision)
                continue
            desired.append(DesiredPlacement(iid, qualified, placed.version, placed.loaded_at, kv.revision))
        # read after the placements: a load records its key once the instance serves the model
        return desired, live, await self._served(live)

    async def _served(self, live: set[str]) -> dict[str, frozenset[str]]:
        """What each live, answering instance serves (the statistics of its loaded models: one
        call each; ready per model is not asked here, a pass runs every second)."""
        insts = [i for i in self.instances.list() if i.healthy and i.record.instance_id in live]
        answers = await asyncio.gather(*(i.driver.served_models(confirm_ready=False) for i in insts),
                                       return_exceptions=True)
        return {i.record.instance_id: frozenset(m.name for m in answer)
                for i, answer in zip(insts, answers, strict=True) if not isinstance(answer, BaseException)}

    def _model_exists(self, qualified: str, version: str) -> bool:
        return self.catalog.by_qualified(qualified, version) is not None

    async def _move(self, move: Move) -> None:
        for p in move.stale:
            if p.instance_id in {i.record.instance_id for i in self.instances.list()}:
                # lost on a live instance, unless its key went meanwhile (an unload deletes the
                # key before it unloads): then nothing was lost
                key = keys.placement(p.instance_id, p.qualified)
                kv = await self.store.get(key)
                if kv is None or kv.revision != p.revision:
                    return
                # dropped first, so every replica (through its watch) stops routing there,
                # even one that never saw the instance go down and resynced nothing
                await self.store.delete(key, expected_revision=p.revision)
                self.placement.forget(p.instance_id, p.qualified)
                log.warning("instance %s lost %s v%s: placing it again", p.instance_id, p.qualified,
                            p.version)
        if move.load:
            record = self.catalog.by_qualified(move.qualified, move.version)
            if record is not None:
                # no room anywhere (e.g. every worker is down) raises: the stale keys stay,
                # so the move is retried each pass and the model comes back with the workers
                driver = await self.placement.ensure_loaded(record)
                log.info("moved %s v%s off %s to %s", move.qualified, move.version,
                         ",".join(p.instance_id for p in move.stale), driver.info.instance_id)
        for p in move.stale:
            await self.store.delete(keys.placement(p.instance_id, p.qualified), expected_revision=p.revision)

    async def _unload(self, p: DesiredPlacement) -> None:
        await self.placement.unload_from(p.instance_id, p.qualified, p.revision)
        log.info("unloaded %s from %s: its model version was deleted", p.qualified, p.instance_id)

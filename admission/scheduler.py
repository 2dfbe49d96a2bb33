"""The scheduler core: admit or refuse each request, then decide what runs where, when.

Objective: maximise goodput — the requests that complete within their deadline —
subject to fair shares between tenants. Every request is answered at once when it
cannot be served in time (refused at admission), dropped before it runs once it can no
longer meet its deadline, and otherwise run in a batch whose predicted completion meets
the earliest deadline in it. Nothing runs late at others' expense.

- ``admit``: quota (rate, concurrency), then feasibility: predicted completion = the
  wait for the instance holding the model that finishes it soonest (what it runs now,
  plus the queued work it will run first, ``InstanceQueue.work_ahead``) + load time
  when no instance holds it + execute time, at the predictor's percentile.
- ``schedule``: for every free slot, earliest deadline first among the tenants within
  their fair share on that instance (weighted fair queueing on predicted execute time,
  ``instance_queue``); the batch is the largest ≤ max_batch_size of requests with the
  same merge key whose predicted execute time still meets the earliest deadline in it.
  Batch-class work runs only on an idle instance with no interactive work eligible.
- Isolation: a tenant over its share is not picked while one within its share has work
  there, fills a batch only after the tenants within share, and its queued work counts
  against a tenant within share only up to the slack; so when the instance is short,
  the requests that become infeasible or expire are the over-share tenant's: it is
  refused or dropped first.

Pure and synchronous: the async shell in the gateway passes ``now`` on every call and
applies the returned decisions; ``next_expiry_s`` says when to call ``schedule`` again.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from admission.batch_choice import choose_batch, choose_batch_class
from admission.calibration import AdmissionCalibration
from admission.feasibility import Prediction, infeasible, missed, overcommitted
from admission.instance_queue import InstanceQueue, QueueKey
from admission.model import (
    Decision,
    Dispatch,
    Drop,
    InstanceSlot,
    ModelInfo,
    PendingRequest,
    Predictor,
    Refuse,
    SchedulerConfig,
    TenantPolicy,
)
from admission.quota import TenantQuota
from kserve.errors import InvalidArgument

DecisionKey = tuple[str, str, str]  # (tenant, model, reason)


# errors kept per model for the idle-instance margin (the all-model one keeps 1,000)
OWN_CALIBRATION_WINDOW = 200
_UNASKED = object()  # a prediction not asked yet within this call (None is an answer)

class Queued:
    """A request admitted and not yet dispatched (mutable bookkeeping around it)."""

    __slots__ = ("req", "seq", "key", "costs", "expiry")

    def __init__(self, req: PendingRequest, seq: int) -> None:
        self.req = req
        self.seq = seq
        self.key: QueueKey | None = None if req.deadline_s is None else (req.deadline_s, seq, req.id)
        self.costs: dict[str, float] = {}  # instance id -> seconds attributed there
        self.expiry: float | None = None  # latest start that can still meet the deadline


@dataclass
class _Batch:
    instance_id: str
    members: list[Queued]
    planned_end_s: float  # when the core expects its answer


class Scheduler:
    def __init__(self, predictor: Predictor, config: SchedulerConfig | None = None) -> None:
        self.predictor = predictor
        self.config = config or SchedulerConfig()
        self._models: dict[str, ModelInfo] = {}
        self._policies: dict[str, TenantPolicy] = {}
        self._quotas: dict[str, TenantQuota] = {}
        self._instances: dict[str, InstanceQueue] = {}
        self._holders: dict[str, list[InstanceQueue]] = {}  # model -> instances holding it
        self._queued: dict[str, Queued] = {}
        # model -> merge key -> interactive keys by deadline / batch-class (seq, id) FIFO
        self._by_model: dict[str, dict[Hashable, list[QueueKey]]] = {}
        self._batch_by_model: dict[str, dict[Hashable, deque[tuple[int, str]]]] = {}
        self._batch_queued: Counter[str] = Counter()  # tenant -> batch-class requests queued
        self._expiry: list[tuple[float, int, str]] = []  # heap of latest starts
        self._ready: dict[str, None] = {}  # instances that may have a free slot and work
        # instances left idle because their head request can only run in time elsewhere:
        # looked at again when placement changes (the instance it waits for may be gone)
        self._deferred: set[str] = set()
        self._batches: dict[str, _Batch] = {}
        self._decisions: Counter[DecisionKey] = Counter()
        self._seq = 0
        self._batch_seq = 0
        self._calibration = AdmissionCalibration(percentile=self.config.calibration_percentile)
        # each model's own batches' errors: what can make a request late on an idle instance
        self._own_calibration: dict[str, AdmissionCalibration] = {}
        self._external_s = 0.0
        self._class_list: list[str] | None = None  # _classes(), rebuilt after set_instances
        # predictions asked within one call: the predictor does not change during a call
        # (the shell feeds it between calls), and one admit asks the same one up to 4 times
        self._memo: dict[tuple[str, str, int, int], float | None] = {}

    def set_external_delay(self, seconds: float) -> None:
        """What a request spends in the shell outside the core's view (waiting for the
        event loop before it arrives here, and after its answer): the shell measures it
        and admission adds it to every prediction."""
        if not seconds >= 0:
            raise ValueError(f"external delay must be >= 0, got {seconds}")
        self._external_s = seconds

    def margin_s(self, now: float) -> float:
        """What admission adds to every prediction now (``admission.calibration``)."""
        learned, external = self.margin_parts(now)
        return learned + external

    def margin_for(self, model: str, now: float, idle: bool) -> float:
        """The margin for a request of ``model``. With work ahead of it (a batch in flight
        or queued before it), any of those batches running late makes it late: the margin
        learned over every model's batches. On an idle instance only its own batch can:
        the margin learned over that model's batches alone, once it has enough of them (a
        small model is not refused for a large one's variance when nothing runs beside it)."""
        own = self._own_calibration.get(model) if idle else None
        if self.config.calibration_percentile <= 0:
            return self._external_s
        if own is None or not own.settled(now):
            return self._calibration.margin_s(now) + self._external_s  # margin_s(now)
        return own.margin_s(now) + self._external_s

    def margin_parts(self, now: float) -> tuple[float, float]:
        """The margin's two parts: learned from admitted requests' lateness, and the shell's
        measured delay (``set_external_delay``)."""
        learned = self._calibration.margin_s(now) if self.config.calibration_percentile > 0 else 0.0
        return learned, self._external_s

    # ---- configuration --------------------------------------------------------------

    def set_model(self, model: str, info: ModelInfo) -> None:
        self._models[model] = info

    def set_policy(self, tenant: str, policy: TenantPolicy) -> None:
        self._policies[tenant] = policy
        quota = self._quotas.get(tenant)
        if quota is not None:
            quota.set_policy(policy)

    def set_instances(self, slots: Iterable[InstanceSlot]) -> None:
        """Placement's current instances. Queued requests of every model whose holders
        changed are re-attributed; batches in flight on a removed instance still complete.
        Only the models of instances that changed are looked at: a cluster of thousands of
        models changes a few at a time (a load, an eviction)."""
        self._memo.clear()
        new = {s.instance_id: s for s in slots}
        # what to look at again: new instances, changed ones, the ones that deferred; one
        # unchanged with nothing it can run stays out (at 100 instances, every schedule
        # call would walk them all)
        poke = set(self._deferred)
        self._deferred.clear()
        touched: set[str] = set()  # models whose holders may change
        for iid, iq in self._instances.items():
            slot = new.get(iid)
            if slot is not None and slot is not iq.slot and slot != iq.slot:
                poke.add(iid)
            if slot is None or slot.instance_class != iq.slot.instance_class:
                touched |= iq.slot.models
                if slot is not None:
                    touched |= slot.models
            elif slot.models is not iq.slot.models and slot.models != iq.slot.models:
                touched |= slot.models ^ iq.slot.models
        for iid, slot in new.items():
            if iid not in self._instances:
                touched |= slot.models
                poke.add(iid)
        before = {m: [(q.instance_id, q.slot.instance_class) for q in self._holders.get(m, ())] for m in touched}
        for iid in [i for i in self._instances if i not in new]:
            del self._instances[iid]
        for iid, slot in new.items():
            if iid in self._instances:
                iq = self._instances[iid]
                iq.slot = slot
                # a load queued there runs before anything dispatched from now on
                iq.busy_until_s = max(iq.busy_until_s, slot.loading_until_s)
            else:
                self._instances[iid] = InstanceQueue(slot)
        self._class_list = None
        order = sorted(self._instances)
        for model in sorted(touched):
            holders = [self._instances[iid] for iid in order if model in self._instances[iid].slot.models]
            if holders:
                self._holders[model] = holders
            else:
                self._holders.pop(model, None)
            if before[model] != [(q.instance_id, q.slot.instance_class) for q in holders]:
                self._reattribute(model)
        self._ready = dict.fromkeys(sorted(i for i in poke.union(self._ready) if i in self._instances))

    # ---- admission ------------------------------------------------------------------

    def admit(self, req: PendingRequest, now: float) -> Refuse | None:
        """None: admitted and queued (answered later by a Dispatch or a Drop)."""
        if req.id in self._queued:
            raise ValueError(f"request {req.id} is already queued")
        self._memo.clear()
        info = self._models.get(req.model)
        if info is None:
            raise ValueError(f"unknown model {req.model}: call set_model first")
        if info.max_batch_size > 0 and req.rows > info.max_batch_size:
            raise InvalidArgument(
                f"model '{req.display_name}' takes batches of at most {info.max_batch_size} rows, "
                f"got {req.rows}: split the request")
        quota = self._quotas.get(req.tenant) or self._quota(req.tenant)
        refusal = quota.try_acquire(now)
        if refusal is not None:
            return self._refuse(req, "quota", refusal.message, refusal.retry_after_s)
        if req.deadline_s is None:
            cap = self._policy(req.tenant).max_batch_queue
            if self._batch_queued[req.tenant] >= cap:
                quota.release()
                return self._refuse(req, "queue_full",
                                    f"batch queue full: at most {cap} batch requests queued at once")
        else:
            queue, load, ex, known = self._predict(req, now)
            margin = self.margin_for(req.model, now, queue <= 0.0 and load <= 0.0)
            if now > req.deadline_s or (known and now + (queue + load + ex + margin) > req.deadline_s):
                quota.release()
                return self._refuse(req, "infeasible", *infeasible(req, queue, load, ex, margin, now))
            broken = self._breaks_commitments(req, now)
            if broken is not None:
                quota.release()
                return self._refuse(req, "infeasible", *overcommitted(req, broken, now))
        self._seq += 1
        entry = Queued(req, self._seq)
        self._queued[req.id] = entry
        self._attribute(entry)
        self._count(req, "admitted")
        return None

    def quota_refusal(self, tenant: str, model: str, request_id: str, now: float) -> Refuse | None:
        """The refusal ``admit`` would give now for the tenant's quota, counted, without
        taking a token: the shell asks before it reads a request's body."""
        refusal = self._quota(tenant).check(now)
        if refusal is None:
            return None
        self._decisions[(tenant, model, "quota")] += 1
        return Refuse(request_id, "quota", refusal.message, refusal.retry_after_s)

    def predict(self, req: PendingRequest, now: float) -> Prediction:
        """Predicted wait, load and execute time of a new interactive request (the best
        instance holding its model; the best instance class when none does)."""
        self._memo.clear()
        return Prediction(*self._predict(req, now))

    def _predict(self, req: PendingRequest, now: float) -> tuple[float, float, float, bool]:
        """``predict``'s (queue, load, execute, known), without building a Prediction."""
        assert req.deadline_s is not None
        best: tuple[float, float, float, bool] | None = None
        best_total = math.inf
        holders = self._holders.get(req.model)
        if holders:
            cfg = self.config
            model, rows, work = req.model, req.rows, req.work
            for iq in holders:
                s = self._exec_s(model, iq.slot.instance_class, rows, work)
                ex, known = (cfg.default_exec_s, False) if s is None else (s, True)
                wait = iq.wait_s(now)
                if iq.lanes:
                    wait += iq.work_ahead(req.tenant, req.deadline_s, self._weight,
                                          cfg.fair_slack_s, cfg.idle_credit_s)
                if best is None or wait + ex < best_total:
                    best, best_total = (wait, 0.0, ex, known), wait + ex
        else:
            for cls in self._classes():
                load = self.predictor.load_s(req.model, cls)
                ex, known = self._exec(req.model, cls, req.rows, req.work)
                load_s = self.config.default_load_s if load is None else load
                if best is None or load_s + ex < best_total:
                    best, best_total = (0.0, load_s, ex, known and load is not None), load_s + ex
        assert best is not None
        return best

    def _classes(self) -> list[str]:
        """The instance classes there are, sorted ([""] when there are no instances)."""
        if self._class_list is None:
            self._class_list = sorted({q.slot.instance_class for q in self._instances.values()}) or [""]
        return self._class_list

    def _breaks_commitments(self, req: PendingRequest, now: float) -> float | None:
        """Admitting ``req`` ahead of the requests due after it must not make one of them
        late that is on time now: a request admitted is a promise. Promises to tenants
        within their fair share (and to the newcomer's own tenant) are kept against
        everyone; a newcomer within its share may push out a tenant over its share (that
        one is dropped first). Returns when the broken promise's request would finish."""
        assert req.deadline_s is not None
        holders = self._holders.get(req.model)
        if not holders:
            return None
        key = (req.deadline_s, self._seq + 1, req.id)
        slack = self.config.fair_slack_s
        for iq in holders:
            if not iq.edf.keys or iq.edf.keys[-1] < key:
                continue  # nothing due after it there
            # shares as they will stand with the newcomer's tenant backlogged there
            vt_new = (iq.vt[req.tenant] if req.tenant in iq.lanes
                      else iq.returning_vt(req.tenant, self.config.idle_credit_s))
            floor = min(iq.floor(), vt_new)
            within = vt_new <= floor + slack

            def protected(tenant: str, iq: InstanceQueue = iq, floor: float = floor,
                          within: bool = within) -> bool:
                return tenant == req.tenant or not within or iq.within_share(tenant, floor, slack)

            queued = self._by_model.get(req.model, {}).get(req.merge_key, ())
            cost = self._queued_cost(req, iq.slot.instance_class, len(queued) + 1) / len(holders)
            end = iq.edf.first_broken(key, cost, now + iq.wait_s(now), protected)
            if end is not None:
                return end
        return None

    # ---- scheduling -----------------------------------------------------------------

    def schedule(self, now: float) -> list[Decision]:
        """Fill every free slot; drop what can no longer meet its deadline."""
        self._memo.clear()
        out: list[Decision] = []
        self._expire(now, out)
        for iid in list(self._ready):
            iq = self._instances[iid]
            while iq.has_free_slot(now):
                decision = self._next_interactive(iq, now, out)
                if decision is None and not iq.lanes and iq.executions(now) == 0:
                    decision = self._next_batch_class(iq, now)
                if decision is None:
                    break
                out.append(decision)
            # back in when a slot frees (complete) or work arrives for its models (admit);
            # batches it ran before the core knew it free their slots without a complete
            if not iq.awaits_seeded(now):
                del self._ready[iid]
        return out

    def _next_interactive(self, iq: InstanceQueue, now: float, out: list[Decision]) -> Dispatch | None:
        slack = self.config.fair_slack_s
        while (tenant := iq.pick(slack)) is not None:
            head = self._queued[iq.lanes[tenant].keys[0][2]]
            req = head.req
            assert req.deadline_s is not None
            start = max(now, iq.busy_until_s)
            if start + self._exec_bound(req.model, iq.slot.instance_class, req.rows, req.work) <= req.deadline_s:
                members, rows, ex = choose_batch(self, iq, head, start)
                return self._dispatch(iq, req.model, members, rows, ex, now)
            soonest = min(max(now, q.busy_until_s)
                          + self._exec_bound(req.model, q.slot.instance_class, req.rows, req.work)
                          for q in self._holders[req.model])
            if soonest <= req.deadline_s:
                self._deferred.add(iq.instance_id)
                return None  # another instance holding the model can still run it in time
            out.append(self._drop(head, soonest - req.deadline_s))
        return None

    def _next_batch_class(self, iq: InstanceQueue, now: float) -> Dispatch | None:
        picked = choose_batch_class(self, iq)
        if picked is None:
            return None
        model, members, rows, ex = picked
        return self._dispatch(iq, model, members, rows, ex, now)

    def _dispatch(self, iq: InstanceQueue, model: str, members: list[Queued], rows: int,
                  ex: float, now: float) -> Dispatch:
        shares: dict[str, float] = {}
        for e in members:
            shares[e.req.tenant] = shares.get(e.req.tenant, 0.0) + ex * e.req.rows / rows
        iq.charge(shares, self._weight)
        for e in members:
            self._unqueue(e)
            self._count(e.req, "dispatched")
        self._batch_seq += 1
        batch_id = f"b{self._batch_seq}"
        iq.busy_until_s = max(now, iq.busy_until_s) + ex
        iq.in_flight[batch_id] = ex
        self._batches[batch_id] = _Batch(iq.instance_id, members, iq.busy_until_s)
        return Dispatch(batch_id, iq.instance_id, model, tuple([e.req.id for e in members]), rows, ex)

    def complete(self, batch_id: str, now: float, observed_s: float | None) -> None:
        """A dispatched batch answered (``observed_s`` its execute time) or failed (None)."""
        batch = self._batches.pop(batch_id, None)
        if batch is None:
            raise ValueError(f"unknown batch {batch_id}: already completed, or never dispatched")
        for e in batch.members:
            self._quota(e.req.tenant).release()
            if observed_s is None:
                self._count(e.req, "failed")
            else:
                late = e.req.deadline_s is not None and now > e.req.deadline_s
                self._count(e.req, "late" if late else "completed")
                if e.req.deadline_s is not None:
                    # later than the plan at dispatch: the execute time, the round trip
                    # or the shell's own delay was longer than predicted, and everything
                    # queued behind on that instance is late by as much (a batch that
                    # grew after admission is in the plan: it still meets its deadlines)
                    self._calibration.observe(now, now - batch.planned_end_s)
                    own = self._own_calibration.get(e.req.model)
                    if own is None:
                        own = self._own_calibration[e.req.model] = AdmissionCalibration(
                            window=OWN_CALIBRATION_WINDOW, percentile=self.config.calibration_percentile)
                    own.observe(now, now - batch.planned_end_s)
        iq = self._instances.get(batch.instance_id)
        if iq is not None:
            iq.in_flight.pop(batch_id, None)
            # executions run one after another: what is left starts now, or after the
            # loads queued there
            iq.busy_until_s = max(now, iq.slot.loading_until_s) + sum(iq.in_flight.values())
            self._ready[iq.instance_id] = None

    def cancel(self, request_id: str) -> bool:
        """The caller went away: a queued request leaves the queue (True). One already
        dispatched runs to the end of its batch (False)."""
        e = self._queued.get(request_id)
        if e is None:
            return False
        self._unqueue(e)
        self._quota(e.req.tenant).release()
        self._count(e.req, "cancelled")
        return True

    def next_expiry_s(self) -> float | None:
        """When the next queued request stops being able to meet its deadline (call
        ``schedule`` then to drop it), or None."""
        heap = self._expiry
        while heap and not self._expiry_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def decisions(self) -> dict[DecisionKey, int]:
        """Counts per (tenant, model, reason): admitted, quota, infeasible, queue_full,
        dispatched, dropped, cancelled, completed, late, failed."""
        return dict(self._decisions)

    def queued(self) -> int:
        return len(self._queued)

    # ---- internals shared with batch_choice -----------------------------------------

    def _exec_s(self, model: str, instance_class: str, rows: int, work: int) -> float | None:
        key = (model, instance_class, rows, work)
        s = self._memo.get(key, _UNASKED)
        if s is _UNASKED:
            s = self._memo[key] = self.predictor.exec_s(model, instance_class, rows, work)
        return s  # type: ignore[return-value]

    def _exec(self, model: str, instance_class: str, rows: int, work: int) -> tuple[float, bool]:
        s = self._exec_s(model, instance_class, rows, work)
        return (self.config.default_exec_s, False) if s is None else (s, True)

    def _exec_bound(self, model: str, instance_class: str, rows: int, work: int) -> float:
        """The execute time a deadline is checked against: nothing measured, nothing to
        hold against it (the default is a guess, not a reason to drop)."""
        s = self._exec_s(model, instance_class, rows, work)
        return 0.0 if s is None else s

    def _weight(self, tenant: str) -> float:
        return self._policy(tenant).weight

    def _policy(self, tenant: str) -> TenantPolicy:
        p = self._policies.get(tenant)
        if p is None:
            p = self._policies[tenant] = TenantPolicy()
        return p

    def _quota(self, tenant: str) -> TenantQuota:
        q = self._quotas.get(tenant)
        if q is None:
            q = self._quotas[tenant] = TenantQuota(self._policy(tenant))
        return q

    def _count(self, req: PendingRequest, reason: str) -> None:
        self._decisions[(req.tenant, req.model, reason)] += 1

    def _refuse(self, req: PendingRequest, reason: str, message: str,
                retry_after_s: float | None = None) -> Refuse:
        self._count(req, reason)
        return Refuse(req.id, reason, message, retry_after_s)  # type: ignore[arg-type]

    def _queued_cost(self, req: PendingRequest, instance_class: str, position: int) -> float:
        """Seconds of an instance's time a queued request is predicted to add: what it adds
        to the batch it will likely join, the ``position``-th queued (from 1) of its model
        and merge key, batches filling in turn. The first of a batch pays a whole execution
        (and the dispatch's round trip); the next ones only what their rows add. Counting
        every request as its share of a full batch would hold short queues, where batches
        stay small, to a fraction of what they take, and admit work that then misses."""
        b = self._models[req.model].max_batch_size
        if b <= 1:
            return self._exec(req.model, instance_class, req.rows, req.work)[0]
        per_batch = max(1, b // req.rows)
        k = (position - 1) % per_batch + 1  # its place in the batch it joins
        full = self._exec(req.model, instance_class, k * req.rows, req.work)[0]
        if k == 1:
            return full
        return max(0.0, full - self._exec(req.model, instance_class, (k - 1) * req.rows, req.work)[0])

    def _attribute(self, e: Queued) -> None:
        """Index a queued request on every instance holding its model."""
        req = e.req
        holders = self._holders.get(req.model, [])
        if e.key is None:
            self._batch_queued[req.tenant] += 1
            self._batch_by_model.setdefault(req.model, {}).setdefault(req.merge_key, deque()).append(
                (e.seq, req.id))
            for iq in holders:
                iq.batch_lanes.setdefault(req.tenant, deque()).append((e.seq, req.id))
                self._ready[iq.instance_id] = None
            return
        lst = self._by_model.setdefault(req.model, {}).setdefault(req.merge_key, [])
        if not lst or lst[-1] < e.key:
            lst.append(e.key)
        else:
            lst.insert(bisect_left(lst, e.key), e.key)
        soonest = math.inf
        for iq in holders:
            cls = iq.slot.instance_class
            e.costs[iq.instance_id] = cost = self._queued_cost(req, cls, len(lst)) / len(holders)
            iq.add(req.tenant, e.key, cost, self.config.idle_credit_s)
            soonest = min(soonest, self._exec_bound(req.model, cls, req.rows, req.work))
            self._ready[iq.instance_id] = None
        if not holders:
            cls = self._classes()[0]
            load = self.predictor.load_s(req.model, cls)
            soonest = (load or 0.0) + self._exec_bound(req.model, cls, req.rows, req.work)
        e.expiry = e.key[0] - soonest
        heapq.heappush(self._expiry, (e.expiry, e.seq, req.id))

    def _detach(self, e: Queued) -> None:
        """Undo ``_attribute`` (batch-class entries are skipped lazily where they queue)."""
        req = e.req
        if e.key is None:
            self._batch_queued[req.tenant] -= 1
            return
        for iid in e.costs:
            iq = self._instances.get(iid)
            if iq is not None and req.tenant in iq.lanes:
                iq.remove(req.tenant, e.key)
        e.costs = {}
        lst = self._by_model[req.model][req.merge_key]
        del lst[bisect_left(lst, e.key)]
        if not lst:
            del self._by_model[req.model][req.merge_key]
        e.expiry = None

    def _unqueue(self, e: Queued) -> None:
        self._detach(e)
        del self._queued[e.req.id]

    def _reattribute(self, model: str) -> None:
        entries = [self._queued[k[2]] for keys in self._by_model.get(model, {}).values() for k in keys]
        entries += [self._queued[i] for q in self._batch_by_model.pop(model, {}).values()
                    for s, i in q if self.is_live(s, i)]
        for e in sorted(entries, key=lambda x: x.seq):
            self._detach(e)
            self._attribute(e)

    def is_live(self, seq: int, request_id: str) -> bool:
        e = self._queued.get(request_id)
        return e is not None and e.seq == seq

    def _expiry_live(self, item: tuple[float, int, str]) -> bool:
        e = self._queued.get(item[2])
        return e is not None and e.seq == item[1] and e.expiry == item[0]

    def _expire(self, now: float, out: list[Decision]) -> None:
        heap = self._expiry
        while heap and heap[0][0] < now:
            item = heapq.heappop(heap)
            if self._expiry_live(item):
                e = self._queued[item[2]]
                out.append(self._drop(e, now - item[0]))

    def _drop(self, e: Queued, late_by_s: float) -> Drop:
        self._unqueue(e)
        self._quota(e.req.tenant).release()
        self._count(e.req, "dropped")
        return Drop(e.req.id, missed(e.req, late_by_s), late_by_s)



"""Fakes the scheduler-core tests share, and a check that the fake behaves as they assume."""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from admission.model import Dispatch, InstanceSlot, ModelInfo, PendingRequest, SchedulerConfig
from admission.scheduler import Scheduler

MS = 0.001


class SequencePredictor:
    """Execute time grows with rows and with ``work`` (elements per row, a sequence
    dimension): ``base + per_row * rows * work / unit``; per-model overrides."""

    def __init__(self, base_s: float = 2 * MS, per_row_s: float = 1 * MS, unit: int = 100,
                 load_s: float | None = 0.3) -> None:
        self.base_s, self.per_row_s, self.unit, self.load = base_s, per_row_s, unit, load_s
        self.unknown: set[str] = set()
        self.calls = 0

    def exec_s(self, model: str, instance_class: str, rows: int, work: int) -> float | None:
        self.calls += 1
        if model in self.unknown:
            return None
        return self.base_s + self.per_row_s * rows * work / self.unit

    def load_s(self, model: str, instance_class: str) -> float | None:
        return self.load


def make(models: dict[str, int], instances: dict[str, set[str]] | None = None, capacity: int = 1,
         predictor: SequencePredictor | None = None, **config: float) -> Scheduler:
    """A scheduler over ``models`` (name -> max_batch_size) and instances (id -> models;
    default one instance 'i1' holding all of them)."""
    s = Scheduler(predictor or SequencePredictor(), SchedulerConfig(**config))
    for name, b in models.items():
        s.set_model(name, ModelInfo(b))
    instances = instances or {"i1": set(models)}
    s.set_instances([InstanceSlot(iid, "cpu", frozenset(ms), capacity) for iid, ms in instances.items()])
    return s


def req(rid: str, *, tenant: str = "t", model: str = "m", at: float = 0.0,
        deadline: float | None = 0.05, rows: int = 1, work: int = 100, key: Hashable = (),
        slo: float | None = None) -> PendingRequest:
    return PendingRequest(id=rid, tenant=tenant, model=model, display_name=model.split("__")[-1],
                          arrival_s=at, deadline_s=None if deadline is None else at + deadline,
                          rows=rows, merge_key=key, work=work, slo_s=slo)


@dataclass
class Outcome:
    req: PendingRequest
    status: str = "queued"  # refused (reason in detail), dropped, done
    detail: str = ""
    start: float | None = None
    finish: float | None = None

    @property
    def met(self) -> bool:
        return (self.status == "done" and self.finish is not None
                and (self.req.deadline_s is None or self.finish <= self.req.deadline_s + 1e-9))


@dataclass
class Run:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    dispatches: list[tuple[float, Dispatch]] = field(default_factory=list)

    def of(self, tenant: str) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.req.tenant == tenant]


def simulate(s: Scheduler, arrivals: Iterable[PendingRequest], until: float = 60.0) -> Run:
    """Drive the core as the gateway shell would, on a virtual clock: admit arrivals,
    schedule at every arrival, completion and expiry, and let each instance execute its
    batches one after another, each taking exactly its predicted time."""
    pending = sorted(arrivals, key=lambda r: (r.arrival_s, r.id))
    run = Run()
    done: list[tuple[float, str]] = []  # (finish, batch id)
    free_at: dict[str, float] = {}
    members: dict[str, tuple[str, ...]] = {}
    i = 0
    while True:
        candidates = [t for t in (pending[i].arrival_s if i < len(pending) else None,
                                  done[0][0] if done else None) if t is not None]
        expiry = s.next_expiry_s()
        if expiry is not None:
            candidates.append(expiry + 1e-6)  # drops happen just past the latest start
        if not candidates or min(candidates) > until:
            return run
        now = min(candidates)
        while done and done[0][0] <= now:
            finish, bid = heapq.heappop(done)
            s.complete(bid, finish, 0.0)
        while i < len(pending) and pending[i].arrival_s <= now:
            r = pending[i]
            i += 1
            run.outcomes[r.id] = o = Outcome(r)
            refusal = s.admit(r, now)
            if refusal is not None:
                o.status, o.detail = "refused", refusal.reason
        for d in s.schedule(now):
            if isinstance(d, Dispatch):
                start = max(now, free_at.get(d.instance_id, 0.0))
                free_at[d.instance_id] = finish = start + d.predicted_s
                heapq.heappush(done, (finish, d.batch_id))
                members[d.batch_id] = d.request_ids
                run.dispatches.append((now, d))
                for rid in d.request_ids:
                    run.outcomes[rid].status = "done"
                    run.outcomes[rid].start, run.outcomes[rid].finish = start, finish
            else:
                run.outcomes[d.request_id].status, run.outcomes[d.request_id].detail = "dropped", d.message


def test_the_fake_predictor_grows_with_the_sequence_dimension() -> None:
    p = SequencePredictor()
    assert p.exec_s("m", "cpu", 1, 128) > p.exec_s("m", "cpu", 1, 16)  # type: ignore[operator]
    assert p.exec_s("m", "cpu", 4, 100) == 2 * MS + 4 * MS

"""Which requests go together: the batch a free slot runs.

Interactive: starting from the earliest-due request of a tenant within its share, the
largest batch (≤ the model's max_batch_size rows) of queued requests with the same
merge key whose predicted execute time, started at ``start``, still meets the earliest
deadline in it. Requests of tenants within their share fill it first, in deadline
order; those over their share only take the room left. Batch class: first in, first
out, while the batch's predicted execute time stays within
``SchedulerConfig.batch_class_max_exec_s`` (a single request always runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from admission.instance_queue import InstanceQueue

if TYPE_CHECKING:
    from admission.scheduler import Queued, Scheduler


def _scan_limit(max_batch_size: int) -> int:
    # bounds the cost of one decision when many queued requests do not fit (other
    # tenants' in the first pass, rows that overflow): a batch may come out smaller
    return 4 * max_batch_size + 16


def choose_batch(s: Scheduler, iq: InstanceQueue, head: Queued, start: float) -> tuple[list[Queued], int, float]:
    """(members in order, rows, predicted execute seconds); ``head`` fits alone."""
    req = head.req
    assert req.deadline_s is not None
    cls = iq.slot.instance_class
    ex = s._exec(req.model, cls, req.rows, req.work)[0]
    b = s._models[req.model].max_batch_size
    members = [head]
    rows = req.rows
    if b <= 1:
        return members, rows, ex
    keys = s._by_model[req.model][req.merge_key]
    floor = iq.floor()
    slack = s.config.fair_slack_s
    due = req.deadline_s
    for within in (True, False):
        scanned = 0
        for key in keys:
            if rows >= b or scanned >= _scan_limit(b):
                break
            e = s._queued[key[2]]
            if e is head or iq.within_share(e.req.tenant, floor, slack) != within:
                continue
            scanned += 1
            grown = rows + e.req.rows
            if grown > b:
                continue
            if start + s._exec_bound(req.model, cls, grown, req.work) > min(due, key[0]):
                continue
            grown_ex = s._exec(req.model, cls, grown, req.work)[0]
            members.append(e)
            rows, ex, due = grown, grown_ex, min(due, key[0])
    return members, rows, ex


def choose_batch_class(s: Scheduler, iq: InstanceQueue) -> tuple[str, list[Queued], int, float] | None:
    """The least-served batch-class tenant's oldest request on this instance, batched
    with later ones of its model and merge key; None when there is none."""

    def live_here(item: tuple[int, str]) -> bool:
        if not s.is_live(*item):
            return False
        e = s._queued[item[1]]
        return e.key is None and e.req.model in iq.slot.models

    best: str | None = None
    for tenant in list(iq.batch_lanes):
        lane = iq.batch_lanes[tenant]
        while lane and not live_here(lane[0]):
            lane.popleft()  # dispatched, cancelled or moved: skipped lazily
        if not lane:
            del iq.batch_lanes[tenant]
        elif best is None or iq.vt.get(tenant, 0.0) < iq.vt.get(best, 0.0):
            best = tenant
    if best is None:
        return None
    head = s._queued[iq.batch_lanes[best][0][1]]
    req = head.req
    cls = iq.slot.instance_class
    ex = s._exec(req.model, cls, req.rows, req.work)[0]
    members = [head]
    rows = req.rows
    b = s._models[req.model].max_batch_size
    if b > 1:
        fifo = s._batch_by_model[req.model][req.merge_key]
        while fifo and not s.is_live(*fifo[0]):
            fifo.popleft()
        scanned = 0
        for item in fifo:
            if rows >= b or scanned >= _scan_limit(b):
                break
            if not s.is_live(*item) or item[1] == req.id:
                continue
            scanned += 1
            e = s._queued[item[1]]
            if rows + e.req.rows > b:
                continue
            grown_ex = s._exec(req.model, cls, rows + e.req.rows, req.work)[0]
            if grown_ex > s.config.batch_class_max_exec_s:
                break
            members.append(e)
            rows, ex = rows + e.req.rows, grown_ex
    return req.model, members, rows, ex

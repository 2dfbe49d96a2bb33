"""The queued work one instance will run, per tenant, and the tenants' fair shares of it.

Every queued interactive request is attributed to each instance that holds its model
(its predicted cost split evenly between them), in its tenant's ``TenantLane`` there,
ordered by deadline. Each instance keeps one virtual time per tenant (weighted fair
queueing): a batch run there charges each tenant in it its rows' part of the batch's
predicted execute time divided by its weight. The least-charged backlogged tenant sets
the floor; a tenant within ``slack`` of the floor is *within its share* and competes by
deadline; one further ahead is *over its share* and waits until the others catch up.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable

from admission.model import InstanceSlot

QueueKey = tuple[float, int, str]  # (deadline, arrival sequence, request id): EDF, then FIFO
_AFTER_EVERY_SEQ = (float("inf"),)


class TenantLane:
    """One tenant's queued interactive requests attributed to one instance, by deadline."""

    __slots__ = ("keys", "costs", "total")

    def __init__(self) -> None:
        self.keys: list[QueueKey] = []
        self.costs: list[float] = []  # predicted seconds of this instance's time, per key
        self.total = 0.0

    def insert(self, key: QueueKey, cost: float) -> None:
        keys = self.keys
        if not keys or keys[-1] < key:  # the usual case: due after everything queued
            keys.append(key)
            self.costs.append(cost)
        else:
            i = bisect_left(keys, key)
            keys.insert(i, key)
            self.costs.insert(i, cost)
        self.total += cost

    def remove(self, key: QueueKey) -> None:
        i = bisect_left(self.keys, key)
        if i == len(self.keys) or self.keys[i] != key:
            raise KeyError(key)
        del self.keys[i]
        self.total -= self.costs.pop(i)
        if not self.keys:
            self.total = 0.0  # no float residue from the adds and subtracts

    def work_until(self, deadline: float) -> float:
        """Predicted seconds of this lane's requests due no later than ``deadline``."""
        i = bisect_right(self.keys, (deadline, *_AFTER_EVERY_SEQ))
        return self.total if i == len(self.keys) else sum(self.costs[:i])


class Commitments:
    """All queued interactive requests attributed to one instance, in deadline order: the
    promises admission made there, which a newcomer must not break."""

    __slots__ = ("keys", "costs", "tenants")

    def __init__(self) -> None:
        self.keys: list[QueueKey] = []
        self.costs: list[float] = []
        self.tenants: list[str] = []

    def insert(self, key: QueueKey, cost: float, tenant: str) -> None:
        keys = self.keys
        if not keys or keys[-1] < key:
            keys.append(key)
            self.costs.append(cost)
            self.tenants.append(tenant)
            return
        i = bisect_left(keys, key)
        keys.insert(i, key)
        self.costs.insert(i, cost)
        self.tenants.insert(i, tenant)

    def remove(self, key: QueueKey) -> None:
        i = bisect_left(self.keys, key)
        del self.keys[i], self.costs[i], self.tenants[i]

    def first_broken(self, key: QueueKey, added_s: float, start_s: float,
                     protected: Callable[[str], bool]) -> float | None:
        """A newcomer due at ``key`` costing ``added_s`` runs before every request due
        later, in deadline order from ``start_s``: the predicted finish of the first
        protected one it would make late that is on time now, or None. (Fair shares may
        reorder; deadline order is what they converge to among tenants within share.)"""
        i = bisect_left(self.keys, key)
        end = start_s + sum(self.costs[:i])
        for j in range(i, len(self.keys)):
            end += self.costs[j]
            due = self.keys[j][0]
            if end <= due < end + added_s and protected(self.tenants[j]):
                return end + added_s
        return None


class InstanceQueue:
    """One instance: its slot, its batches in flight, the work attributed to it."""

    def __init__(self, slot: InstanceSlot) -> None:
        self.slot = slot
        self.in_flight: dict[str, float] = {}  # batch id -> predicted execute seconds
        self.busy_until_s = max(slot.busy_until_s, slot.loading_until_s)
        # batches dispatched before the core knew the instance: assumed done at busy_until_s
        self._seeded = slot.in_flight
        self.lanes: dict[str, TenantLane] = {}
        self.edf = Commitments()  # every lane's requests in one deadline order
        self.batch_lanes: dict[str, deque[tuple[int, str]]] = {}  # batch class, FIFO, lazy
        self.vt: dict[str, float] = {}  # tenant -> virtual time on this instance
        self._vclock = 0.0  # the floor when the last batch started (for idle returners)

    @property
    def instance_id(self) -> str:
        return self.slot.instance_id

    def executions(self, now: float) -> int:
        if self._seeded and now >= self.busy_until_s:
            self._seeded = 0
        return len(self.in_flight) + self._seeded

    def awaits_seeded(self, now: float) -> bool:
        return self.executions(now) > len(self.in_flight)

    def has_free_slot(self, now: float) -> bool:
        return self.executions(now) < self.slot.capacity

    def wait_s(self, now: float) -> float:
        """Seconds until what it already runs is predicted done."""
        return max(0.0, self.busy_until_s - now)

    # ---- fair shares ----------------------------------------------------------------

    def floor(self) -> float:
        if not self.lanes:
            return self._vclock
        return min(map(self.vt.__getitem__, self.lanes))

    def within_share(self, tenant: str, floor: float, slack: float) -> bool:
        return self.vt.get(tenant, floor) <= floor + slack

    def returning_vt(self, tenant: str, idle_credit: float) -> float:
        """The virtual time of a tenant whose lane is empty when its next request queues.

        Idle time banks at most ``idle_credit`` below the floor: enough for a tenant
        under its share to serve a short burst at once, never enough to crowd out for
        long the tenants that kept the instance busy meanwhile."""
        return max(self.vt.get(tenant, 0.0), self.floor() - idle_credit)

    def add(self, tenant: str, key: QueueKey, cost: float, idle_credit: float) -> None:
        lane = self.lanes.get(tenant)
        if lane is None:
            self.vt[tenant] = self.returning_vt(tenant, idle_credit)
            lane = self.lanes[tenant] = TenantLane()
        lane.insert(key, cost)
        self.edf.insert(key, cost, tenant)

    def remove(self, tenant: str, key: QueueKey) -> None:
        lane = self.lanes[tenant]
        lane.remove(key)
        self.edf.remove(key)
        if not lane.keys:
            del self.lanes[tenant]

    def charge(self, shares: dict[str, float], weight: Callable[[str], float]) -> None:
        """A batch starts: each tenant pays its seconds of it, over its weight."""
        self._vclock = self.floor()
        for tenant, seconds in shares.items():
            self.vt[tenant] = max(self.vt.get(tenant, 0.0), self._vclock) + seconds / weight(tenant)

    def pick(self, slack: float) -> str | None:
        """The tenant whose head runs next: earliest deadline among tenants within share."""
        if not self.lanes:
            return None
        floor = self.floor()
        best: str | None = None
        best_key: QueueKey | None = None
        for tenant, lane in self.lanes.items():
            if self.vt[tenant] <= floor + slack and (best_key is None or lane.keys[0] < best_key):
                best, best_key = tenant, lane.keys[0]
        return best

    def work_ahead(self, tenant: str, deadline: float, weight: Callable[[str], float],
                   slack: float, idle_credit: float) -> float:
        """Predicted seconds of queued work this instance runs before a new request of
        ``tenant`` due at ``deadline``, in the order ``pick`` will run it.

        Its own tenant's earlier-due work all goes first, which moves the tenant's
        virtual time to ``vt_r``. Another tenant U runs while its virtual time is within
        ``slack`` of the floor, and the floor is at most ``vt_r`` while the request
        waits, so U runs at most ``w_U * (vt_r + slack - vt_U)`` seconds first (its
        allowance): of its work due before ``deadline`` while the tenant is within share
        of U, of all of it once the tenant is over. A tenant within its share therefore
        never counts, nor waits behind, more than ``slack * w_U`` (plus one batch) of a
        tenant over its share.
        """
        own_lane = self.lanes.get(tenant)
        own = own_lane.work_until(deadline) if own_lane is not None else 0.0
        vt_t = self.vt[tenant] if own_lane is not None else self.returning_vt(tenant, idle_credit)
        vt_r = vt_t + own / weight(tenant)
        ahead = own
        for other, lane in self.lanes.items():
            if other == tenant:
                continue
            vt_u = self.vt[other]
            allowance = weight(other) * (vt_r + slack - vt_u)
            if allowance <= 0.0:
                continue
            work = lane.total if vt_r > vt_u + slack else lane.work_until(deadline)
            ahead += min(allowance, work)
        return ahead

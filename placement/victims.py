"""Who goes when a model needs room: eviction cost, tenants' memory shares, and the working
state of one planning pass (issue 12).

Cost. Evicting a copy costs what bringing it back is expected to cost: the copy's share of the
model's sustained request rate (``Demand.sustained``, the larger of the short and long rates, so
a model that just turned hot counts as hot) times its reload time, ``rate × reload_s``
(expected reload seconds per second of wall time); a model no longer in the catalog cannot
come back and costs nothing. Per byte freed, that is the copy's *cost density*, shown to operators in
ms/MB·s (reload milliseconds per second, per MB freed): a rarely used model that reloads fast
goes first, a hot or slow-to-load one last; among equal densities (no demand at all) the one
used longest ago goes first. The reload time is the warm one where the profile has it, since an
evicted model's files stay in the instance's local cache. This is GreedyDual-Size-Frequency's
priority (frequency × cost / size) with the frequency taken from the smoothed rate, which ages
by itself, instead of GDSF's inflation clock.

Admission. Evicting is worth it only when the newcomer is worth more: a model requests wait
for takes only copies no dearer than itself (``PlannerConfig.wanted_evict_ratio``), and
prefetch and replication only copies ``evict_margin`` (2) times cheaper (none where it is
None), as TinyLFU admits a
newcomer only over a less frequent victim; without it one request for a rarely used model would
push out a hot one, and a skewed workload would thrash.

Shares. A tenant whose share is set (``TenantShare``) and who uses no more than it is protected:
no other tenant's load evicts its models. A tenant over its share, or with no share, is not: any
tenant may take its memory. A tenant may always evict its own models. So a tenant within its
share can take memory from tenants over theirs, and never the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from placement.cluster import (
    ClusterSnapshot,
    InstanceView,
    LoadState,
    ModelCosts,
    ModelSpec,
    ResidentModel,
)
from placement.demand import Demand

_NO_DEMAND = Demand()


def mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 10_000_000 else f"{n / 1e6:.1f} MB"


def num(x: float) -> str:
    """Two significant digits, never in exponent form: 0.0031, 0.3, 12, 4500."""
    if x == 0:
        return "0"
    if abs(x) >= 10:
        return f"{x:.0f}"
    digits = max(1, 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{digits}f}"


@dataclass(slots=True)
class Copy:
    """A resident copy during planning (its instance's slot holds it)."""

    resident: ResidentModel
    slot: Slot
    gone: bool = False


@dataclass(slots=True)
class Slot:
    """One healthy instance during a planning pass: what is on it after the actions planned so
    far, when its load pipe is free, and how loaded its copies are."""

    view: InstanceView
    free: int
    load_free_at: float
    pending_loads: int
    utilization: float = 0.0
    """What the pass's own loads and unloads changed of ``PlanningPass.util``."""
    utilization_base: float | None = None
    """The snapshot's copies' utilisation, once a pass asked for it."""
    copies: dict[str, Copy] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    """When each LOADING copy here is ready."""
    evictable_bytes: int = 0
    """Bytes of the copies that may go (busy ones never do): a bound on what eviction frees."""
    busy: int = 0
    """Copies that may not go: work in flight or feasible queued work, or mid-load."""
    _by_cost: list[tuple[float, float, str]] | None = None
    _head: int = 0
    """Entries of ``_by_cost`` before it are gone or busy: no walk needs them again."""

    @property
    def iid(self) -> str:
        return self.view.instance_id

    @property
    def cls(self) -> str:
        return self.view.instance_class


class SharesLedger:
    """Bytes each tenant holds on healthy instances, against its share."""

    def __init__(self, snap: ClusterSnapshot, slots: list[Slot]) -> None:
        self.total = sum(s.view.budget_bytes for s in slots)
        self.usage: dict[str, int] = {}
        for s in slots:
            for c in s.copies.values():
                self.usage[c.resident.tenant] = self.usage.get(c.resident.tenant, 0) + c.resident.bytes
        self.share: dict[str, int | None] = {t: sh.of(self.total) for t, sh in snap.shares.items()}

    def share_of(self, tenant: str) -> int | None:
        return self.share.get(tenant)

    def add(self, tenant: str, n: int) -> None:
        self.usage[tenant] = self.usage.get(tenant, 0) + n

    def protected(self, owner: str, requester: str, taken: int) -> bool:
        """Whether ``owner``'s models are out of ``requester``'s reach, ``taken`` bytes of them
        already chosen in this selection."""
        if owner == requester:
            return False
        share = self.share.get(owner)
        return share is not None and self.usage.get(owner, 0) - taken <= share

    def over_share(self, tenant: str, adding: int) -> bool:
        share = self.share.get(tenant)
        return share is not None and self.usage.get(tenant, 0) + adding > share


class CostModel:
    """Eviction cost densities at the start of a pass (copy counts as the snapshot has them)."""

    def __init__(self, models: Mapping[str, ModelSpec], demand: Mapping[str, Demand],
                 copies: Mapping[str, int], order: str = "cost") -> None:
        self.models = models
        self.demand = demand
        self.copies = copies
        self.order = order  # PlannerConfig.victim_order

    def reload_s(self, name: str, cls: str) -> float:
        spec = self.models.get(name)
        costs = spec.costs.get(cls) if spec else None
        return costs.load_s(warm=True) if costs else 0.0  # a model that cannot come back costs nothing

    def copy_rate(self, name: str) -> float:
        return self.demand.get(name, _NO_DEMAND).keep_value / max(1, self.copies.get(name, 1))

    def cost(self, r: ResidentModel, cls: str) -> float:
        """Expected reload seconds per second if this copy goes."""
        return self.copy_rate(r.name) * self.reload_s(r.name, cls)

    def density(self, r: ResidentModel, cls: str) -> float:
        """Cost per MB freed, in ms/MB·s."""
        return 1e3 * self.cost(r, cls) / max(r.bytes / 1e6, 1e-6)


@dataclass(frozen=True, slots=True)
class Victims:
    chosen: tuple[tuple[ResidentModel, float], ...]
    """(copy, cost density in ms/MB·s), cheapest first."""
    cost: float
    """Their summed expected reload seconds per second."""


@dataclass(slots=True)
class Blocked:
    """Why a slot could not make room: for the refusal's reason."""

    freeable: int = 0
    busy: int = 0
    protected: int = 0
    dearer: int = 0
    """Instances where the copies left to evict were too dear for what the newcomer gains."""


def by_cost(slot: Slot, costs: CostModel) -> list[tuple[float, float, str]]:
    """The slot's copies by (density, last use), computed once per pass."""
    if slot._by_cost is None:
        lru = costs.order != "cost"  # every density 0: least recently used first
        slot._by_cost = sorted((0.0 if lru else costs.density(c.resident, slot.cls),
                                c.resident.last_used, name) for name, c in slot.copies.items())
    return slot._by_cost


def choose_victims(slot: Slot, need: int, requester: str, ledger: SharesLedger, costs: CostModel,
                   below_density: float | None = None, blocked: Blocked | None = None) -> Victims | None:
    """The cheapest copies on ``slot`` whose eviction frees ``need`` bytes for a model of tenant
    ``requester``: never a busy copy, never one a share protects, and, given ``below_density``,
    only copies cheaper than that. None when they do not free enough."""
    short = need - slot.free
    if short <= 0:
        return Victims((), 0.0)
    if short > slot.evictable_bytes or costs.order == "none":
        if blocked is not None:
            blocked.freeable = max(blocked.freeable, slot.free + slot.evictable_bytes)
            blocked.busy += slot.busy
        return None
    chosen: list[tuple[ResidentModel, float]] = []
    taken: dict[str, int] = {}
    freed = 0
    total = 0.0
    order = by_cost(slot, costs)
    for i in range(slot._head, len(order)):
        density, _, name = order[i]
        c = slot.copies.get(name)
        if c is None or c.gone or not c.resident.evictable:
            if i == slot._head:
                slot._head += 1
        if c is None or c.gone:
            continue
        r = c.resident
        if not r.evictable:
            if blocked is not None:
                blocked.busy += 1
            continue
        if below_density is not None and density > below_density:
            if blocked is not None:
                blocked.dearer += 1
            break  # sorted by density: the rest are dearer too
        if ledger.protected(r.tenant, requester, taken.get(r.tenant, 0)):
            if blocked is not None:
                blocked.protected += 1
            continue
        chosen.append((r, density))
        taken[r.tenant] = taken.get(r.tenant, 0) + r.bytes
        freed += r.bytes
        total += costs.cost(r, slot.cls)
        if freed >= short:
            return Victims(tuple(chosen), total)
    if blocked is not None:
        blocked.freeable = max(blocked.freeable, slot.free + freed)
    return None


def load_queue(view: InstanceView, models: Mapping[str, ModelSpec],
               loading: tuple[ResidentModel, ...] | None = None) -> dict[str, float]:
    """When each LOADING copy on ``view`` is ready: its ``ready_at`` where the snapshot has one;
    else its load runs after those asked for before it, one at a time, for its predicted load
    time (warm where the instance caches it)."""
    out: dict[str, float] = {}
    end = -math.inf
    if loading is None:
        loading = tuple(r for r in view.residents if r.state is LoadState.LOADING)
    if not loading:
        return out
    for r in sorted(loading, key=lambda r: (r.ready_at is None, r.resident_since)):
        if r.ready_at is not None:
            out[r.name] = r.ready_at
        else:
            spec = models.get(r.name)
            costs: ModelCosts | None = spec.costs.get(view.instance_class) if spec else None
            load = costs.load_s(r.name in view.cached) if costs else 0.0
            out[r.name] = max(end, r.resident_since) + load
        end = max(end, out[r.name])
    return out


def build_slots(snap: ClusterSnapshot) -> tuple[list[Slot], dict[str, list[Copy]]]:
    """Slots of the healthy instances, and every model's copies on them."""
    slots: list[Slot] = []
    copies: dict[str, list[Copy]] = {}
    for view in snap.instances:
        if not view.healthy:
            continue
        used, evictable, busy, loading = view.tally()
        ready = load_queue(view, snap.models, loading)
        slot = Slot(view, view.budget_bytes - used, max([snap.now, *ready.values()]), len(ready), ready=ready,
                    evictable_bytes=evictable, busy=busy)
        own = slot.copies
        for r in view.residents:  # one walk over the residents: a cluster holds thousands
            c = Copy(r, slot)
            own[r.name] = c
            held = copies.get(r.name)
            if held is None:
                copies[r.name] = [c]
            else:
                held.append(c)
        slots.append(slot)
    return slots, copies

"""What the placement planner is told (a snapshot of the cluster) and what it answers (a plan).

Frozen dataclasses only; ``placement/planner.py`` says how they are used. Bytes are bytes,
times are seconds on the caller's clock (the same clock as ``ClusterSnapshot.now``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from placement.demand import Demand


class LoadState(StrEnum):
    LOADING = "loading"
    READY = "ready"


@dataclass(frozen=True, slots=True)
class ModelCosts:
    """A model's profile on one instance class, in the numbers the planner needs."""

    memory_bytes: int
    cold_load_s: float
    """Artifact store to ready."""
    exec_s: Mapping[int, float]
    """Predicted execute seconds per batch size (a high percentile, as admission uses)."""
    warm_load_s: float | None = None
    """Artifact already in the instance's local cache to ready; None: not measured."""
    max_batch: int = 1
    _capacity: dict[float, float] = field(default_factory=dict, init=False, repr=False, compare=False)
    """``capacity_per_s`` by SLO, once computed: a pass asks it for every copy in the cluster."""

    def load_s(self, warm: bool) -> float:
        return self.warm_load_s if warm and self.warm_load_s is not None else self.cold_load_s

    def capacity_per_s(self, slo_s: float) -> float:
        """Requests per second one copy serves within ``slo_s``: the best throughput
        ``b / exec(b)`` over batch sizes ``b <= max_batch`` whose execution leaves room for a
        request to wait out one batch before its own (``2 * exec(b) <= slo_s``). When no batch
        meets that, the smallest batch measured (its deadline misses are admission's to refuse)."""
        cap = self._capacity.get(slo_s)
        if cap is None:
            cap = self._capacity[slo_s] = self._compute_capacity(slo_s)
        return cap

    def _compute_capacity(self, slo_s: float) -> float:
        best = 0.0
        for b, ex in self.exec_s.items():
            if b <= self.max_batch and ex > 0.0 and 2.0 * ex <= slo_s:
                best = max(best, b / ex)
        if best > 0.0:
            return best
        measured = [(b, ex) for b, ex in self.exec_s.items() if ex > 0.0]
        if not measured:
            return 0.0
        b, ex = min(measured)
        return b / ex


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """A model's last load failed: it is not tried again before ``retry_at`` (on
    ``instance_id`` only, where given; anywhere, where None)."""

    reason: str
    retry_at: float
    attempts: int = 1
    instance_id: str | None = None

    @classmethod
    def after(cls, reason: str, now: float, attempts: int, instance_id: str | None = None,
              base_s: float = 1.0, cap_s: float = 300.0) -> LoadFailure:
        """The failure of attempt ``attempts`` (1, 2, ...), retried after an exponential
        back-off: ``base_s``, doubling per attempt, at most ``cap_s``."""
        delay = min(cap_s, base_s * 2.0 ** (max(1, attempts) - 1))
        return cls(reason, now + delay, attempts, instance_id)

    def blocks(self, instance_id: str, now: float) -> bool:
        return now < self.retry_at and self.instance_id in (None, instance_id)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model the planner may place."""

    name: str
    """Its identity in the snapshot (the qualified name)."""
    tenant: str
    label: str
    """How reasons name it to an operator, e.g. ``acme/resnet``."""
    slo_s: float
    costs: Mapping[str, ModelCosts]
    """Per instance class; a class without an entry is never chosen for this model."""
    platform: str | None = None
    """Tenant platform (ONNX, TorchScript); None: any instance serves it."""
    load_failure: LoadFailure | None = None
    """Its last load failed (the shell's record): back off before trying again."""


@dataclass(frozen=True, slots=True)
class ResidentModel:
    """A model on an instance, loaded or loading: the desired state's view, so a load the
    planner asked for and the reconciler has not finished is here as LOADING."""

    name: str
    tenant: str
    bytes: int
    """Measured resident bytes (the profile's, or the estimate, while loading)."""
    state: LoadState = LoadState.READY
    in_flight: int = 0
    """Requests executing or dispatched to this copy."""
    queued: int = 0
    """Requests waiting for this model (its queue, shared by its copies)."""
    queued_feasible: bool = False
    """Whether any queued request can still meet its deadline."""
    last_used: float = 0.0
    resident_since: float = 0.0
    """When it was loaded (or its load was asked for)."""
    ready_at: float | None = None
    """While LOADING: when it is predicted ready (None: the planner predicts it from the
    load's start, ``resident_since``)."""

    @property
    def evictable(self) -> bool:
        """No work in flight, none queued that could still meet its deadline, not mid-load."""
        return self.state is LoadState.READY and self.in_flight == 0 and not self.queued_feasible


@dataclass(frozen=True, slots=True)
class InstanceView:
    instance_id: str
    instance_class: str
    budget_bytes: int
    residents: tuple[ResidentModel, ...] = ()
    healthy: bool = True
    platforms: frozenset[str] | None = None
    """Tenant platforms it serves (``placement/backends.py``); None: not known, not ruled out."""
    cached: frozenset[str] = frozenset()
    """Models whose artifacts its local cache holds: their loads are warm."""
    draining: bool = False
    """The operator is taking it out of service: nothing new is loaded on it, and its copies
    move off (a copy with demand stays until another copy is ready elsewhere)."""

    _tally: list[tuple[int, int, int, tuple[ResidentModel, ...]]] = field(
        default_factory=list, init=False, repr=False, compare=False)
    """``tally()``, once computed: a shell may hand the same view to many passes."""

    def serves(self, platform: str | None) -> bool:
        return platform is None or self.platforms is None or platform in self.platforms

    def tally(self) -> tuple[int, int, int, tuple[ResidentModel, ...]]:
        """(bytes used, bytes of evictable copies, copies that may not go, the LOADING ones)."""
        if not self._tally:
            used = evictable = busy = 0
            for r in self.residents:
                used += r.bytes
                if r.evictable:
                    evictable += r.bytes
                else:
                    busy += 1
            self._tally.append((used, evictable, busy,
                                tuple(r for r in self.residents if r.state is LoadState.LOADING)))
        return self._tally[0]

    @property
    def used_bytes(self) -> int:
        return self.tally()[0]


@dataclass(frozen=True, slots=True)
class TenantShare:
    """A tenant's memory share set by the admin: a fraction of the healthy instances' total
    budget, or bytes. Both None (or no entry): no share, nothing of it is protected."""

    fraction: float | None = None
    bytes: int | None = None

    def of(self, total_bytes: int) -> int | None:
        if self.bytes is not None:
            return self.bytes
        if self.fraction is not None:
            return int(self.fraction * total_bytes)
        return None


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    now: float
    instances: tuple[InstanceView, ...]
    models: Mapping[str, ModelSpec]
    """Every model that may be placed, by name (models resident but missing here are kept
    and may be evicted; they are never loaded)."""
    demand: Mapping[str, Demand] = field(default_factory=dict)
    """Per model; a model without an entry has no demand."""
    shares: Mapping[str, TenantShare] = field(default_factory=dict)
    wanted: tuple[str, ...] = ()
    """Models that requests wait for now with no copy loaded or loading, most urgent first:
    the planner places each one, evicting what it must, or refuses it with a reason."""


DEFAULT_EVICT_MARGIN = 2.0
"""``PlannerConfig.evict_margin``'s default (and ``INFERPLEX_PLACEMENT_EVICT_MARGIN``'s)."""


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    add_at: float = 0.8
    """Add a copy when forecast demand is above this fraction of what the copies serve."""
    remove_below: float = 0.4
    """Remove one when sustained demand stays below this fraction of what the remaining copies
    serve, for ``hold_s``."""
    hold_s: float = 120.0
    max_queued_loads: int = 2
    """Loads an instance may have queued before prefetch and replication pass it by."""
    place_min_rate_per_s: float = 0.05
    """Demand a model with no copy needs before it is loaded ahead of a request."""
    evict_margin: float | None = DEFAULT_EVICT_MARGIN
    """Optional work (prefetch, replication, and a cold load no waiting request can use in
    time) evicts only copies this many times cheaper (by cost density) than the newcomer; None:
    never, it takes only free memory (a model whose SLO is shorter than its load time then never
    gets in where memory is full). A load holds its instance's load pipe (on a GPU shared with
    the executions) for its whole load time, and the requests of the models already there that
    arrive meanwhile may miss their SLO, so under memory pressure a larger margin serves more: in
    the simulator (1,000 models on 10 GPUs of 8 GiB, three minutes) 2 gave 153 good req/s, 16
    gave 179, None 180, static placement 176. Operators set it with
    ``INFERPLEX_PLACEMENT_EVICT_MARGIN`` and try it first with ``inferplex sim --evict-margin``."""
    wanted_evict_ratio: float | None = None
    """A model requests wait for evicts only copies whose cost density is at most this many
    times its own (its sustained rate, at least ``wanted_floor_rate_per_s``, times its reload
    time per MB), as TinyLFU admits a newcomer only over a less frequent victim: one waiting
    request does not push out a model in heavier use. Lifted for a tenant within its memory
    share. None (the default): any evictable copy may go, the cheapest first: a request
    refused is a sure miss, where the copy it evicts costs a reload that may still meet its
    SLO."""
    wanted_floor_rate_per_s: float = 0.1
    max_copies: int = 64
    victim_order: str = "cost"
    """``cost``: cheapest cost density first (inferplex's policy); ``lru``: least recently used
    first (the plain baseline); ``none``: never evict (static placement, Triton without a
    control plane). Benchmarks compare the three (``PlannerConfig.policy``)."""

    @classmethod
    def policy(cls, name: str, evict_margin: float | None = DEFAULT_EVICT_MARGIN) -> PlannerConfig:
        """``cost`` (the default), or a baseline: ``lru`` evicts the least recently used copy
        for a waiting model and does nothing else (no prefetch, no replicas, no admission
        guard); ``static`` loads what fits on first use and never evicts. ``evict_margin``
        applies to ``cost`` only."""
        if name == "cost":
            return cls(evict_margin=evict_margin)
        if name in ("lru", "static"):
            return cls(victim_order="lru" if name == "lru" else "none", wanted_evict_ratio=None,
                       place_min_rate_per_s=math.inf, max_copies=1)
        raise ValueError(f"unknown placement policy {name!r}; use cost, lru or static")

    def __post_init__(self) -> None:
        if not 0.0 < self.remove_below < self.add_at <= 1.0:
            raise ValueError(f"need 0 < remove_below < add_at <= 1, got {self.remove_below} and {self.add_at}")
        if self.hold_s < 0 or self.max_queued_loads < 1 or (self.evict_margin is not None and self.evict_margin < 1.0) or self.max_copies < 1:
            raise ValueError("hold_s >= 0, max_queued_loads >= 1, evict_margin >= 1 (or None), max_copies >= 1")
        if self.victim_order not in ("cost", "lru", "none"):
            raise ValueError(f"victim_order must be cost, lru or none, got {self.victim_order!r}")
        if self.wanted_evict_ratio is not None and self.wanted_evict_ratio <= 0:
            raise ValueError(f"wanted_evict_ratio must be above 0 (or None), got {self.wanted_evict_ratio}")


# ---- the answer --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    model: str
    instance_id: str
    reason: str
    ready_at: float
    """Predicted ready time: after the loads queued before it on the instance."""
    warm: bool = False
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class Unload:
    model: str
    instance_id: str
    reason: str
    bytes: int = 0


Action = Load | Unload


@dataclass(frozen=True, slots=True)
class Refusal:
    """A wanted model the planner could not place."""

    model: str
    reason: str
    """For the operator (names instances and models)."""
    tenant_reason: str
    """For the tenant whose request waits: names no instance and no other tenant."""


@dataclass(frozen=True, slots=True)
class Plan:
    now: float
    actions: tuple[Action, ...] = ()
    """In order: each Load comes after the Unloads that make its room, on its instance."""
    refusals: tuple[Refusal, ...] = ()

    @property
    def loads(self) -> tuple[Load, ...]:
        return tuple(a for a in self.actions if isinstance(a, Load))

    @property
    def unloads(self) -> tuple[Unload, ...]:
        return tuple(a for a in self.actions if isinstance(a, Unload))

"""Simulated inference instances: memory, a local artifact cache, one execution pipe.

An instance does one thing at a time, as a GPU running one model's kernels does: a load
(artifact to device memory) and an execution both occupy it, in the order they were
asked for, so a load delays the executions queued behind it, and an execution the
scheduler dispatched while a load runs starts when the load ends. A load is warm when
the instance's cache still holds the model's artifact (an evicted model's files stay
there, least recently used going first when the cache is full), cold otherwise.

Durations come from the model's profile times seeded lognormal noise of mean 1 and a
small coefficient of variation: never from what the predictor expects.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field

from placement.cluster_view import InstanceState, Pending


class Noise:
    """Multiplicative lognormal noise, mean 1, coefficient of variation ``cv``."""

    def __init__(self, cv: float, seed: int) -> None:
        if cv < 0:
            raise ValueError(f"noise cv must be >= 0, got {cv}")
        self.cv = cv
        self.sigma = math.sqrt(math.log1p(cv * cv))
        self.mu = -self.sigma * self.sigma / 2
        self._rng = random.Random(seed)

    def factor(self) -> float:
        return math.exp(self._rng.gauss(self.mu, self.sigma)) if self.sigma > 0 else 1.0

    def quantile(self, pct: float) -> float:
        """The factor at percentile ``pct`` (what a profile's p99 is, for seeding)."""
        if self.sigma == 0:
            return 1.0
        from statistics import NormalDist

        return math.exp(self.mu + self.sigma * NormalDist().inv_cdf(pct / 100.0))


class ArtifactCache:
    """The instance-local cache of model artifacts, by bytes, least recently used out."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._items: OrderedDict[str, int] = OrderedDict()

    def __contains__(self, model: str) -> bool:
        return model in self._items

    def models(self) -> list[str]:
        return list(self._items)

    def touch(self, model: str, size: int) -> None:
        """The artifact was fetched or used: keep it, evicting the oldest past the budget."""
        if model in self._items:
            self._items.move_to_end(model)
            return
        if size > self.budget_bytes:
            return
        self._items[model] = size
        self.used_bytes += size
        while self.used_bytes > self.budget_bytes:
            _, dropped = self._items.popitem(last=False)
            self.used_bytes -= dropped


@dataclass
class SimInstance:
    instance_id: str
    instance_class: str
    budget_bytes: int
    cache: ArtifactCache
    resident: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Ready models: name -> (bytes, loaded at, virtual seconds)."""
    pending: dict[str, Pending] = field(default_factory=dict)
    """Loads under way: memory is held from their start."""
    free_at: float = 0.0
    """When the pipe (loads and executions, one at a time) is free."""
    busy_s: float = 0.0
    """Seconds of executions run, for utilisation."""
    _state: InstanceState | None = field(default=None, repr=False)
    """``state()`` until the next load, unload or ready copy (a new object after each, so a
    ``SnapshotViews`` sees the change by identity)."""

    @property
    def used_bytes(self) -> int:
        return sum(b for b, _ in self.resident.values()) + sum(p.bytes for p in self.pending.values())

    def start_load(self, model: str, size: int, now: float, cold_s: float, warm_s: float,
                   noise: float, predicted_ready: float) -> tuple[float, bool]:
        """Queue a load on the pipe: (when it is ready, whether it was warm)."""
        warm = model in self.cache
        seconds = (warm_s if warm else cold_s) * noise
        start = max(now, self.free_at)
        self.free_at = start + seconds
        self.pending[model] = Pending(size, now, predicted_ready)
        self.cache.touch(model, size)
        self._state = None
        return self.free_at, warm

    def finish_load(self, model: str, now: float) -> None:
        p = self.pending.pop(model)
        self.resident[model] = (p.bytes, now)
        self._state = None

    def unload(self, model: str) -> int:
        size, _ = self.resident.pop(model)
        self._state = None
        return size

    def execute(self, now: float, seconds: float) -> tuple[float, float]:
        """Run an execution on the pipe: (start, end)."""
        start = max(now, self.free_at)
        self.free_at = start + seconds
        self.busy_s += seconds
        return start, self.free_at

    def state(self) -> InstanceState:
        """As ``placement.cluster_view`` takes it (times are virtual on both sides), with the
        artifacts its cache holds (their loads are warm)."""
        if self._state is None:
            self._state = InstanceState(self.instance_id, self.instance_class, self.budget_bytes, True, None,
                                        dict(self.resident), dict(self.pending),
                                        cached=frozenset(self.cache.models()))
        return self._state

"""Tiny workloads on sim.workload's interface (models, duration_s, description,
arrivals()), for the simulator's engine tests: exact arrival times, so a test knows
what each request should meet."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from sim.profiles import Profile

MB = 1_000_000


def profile(name: str = "m", mb: int = 100, exec_ms: float = 5.0, load_cold_s: float = 0.5,
            load_warm_s: float = 0.1, max_batch: int = 8) -> Profile:
    return Profile(name, mb * MB, load_cold_s, load_warm_s,
                   ((1, exec_ms / 1e3), (max_batch, exec_ms * max_batch / 2e3)) if max_batch > 1
                   else ((1, exec_ms / 1e3),), max_batch, "test fixture")


@dataclass(frozen=True)
class Model:
    name: str
    tenant: str
    profile: Profile
    slo_s: float


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float
    model: int
    rows: int = 1


@dataclass
class FixedWorkload:
    """Arrivals given as a list of (time, model index)."""

    models: list[Model]
    duration_s: float
    times: list[tuple[float, int]] = field(default_factory=list)
    description: str = "fixture"

    def arrivals(self) -> Iterator[Arrival]:
        for t, m in sorted(self.times):
            yield Arrival(t, m)


def uniform_poisson(n_models: int, duration_s: float, rate: float, seed: int, slo_s: float = 0.1,
                    mb: int = 100, load_cold_s: float = 0.5, exec_ms: float = 5.0) -> FixedWorkload:
    """Poisson arrivals at ``rate``/s over ``n_models`` models, Zipf-ish popularity."""
    rng = random.Random(seed)
    models = [Model(f"t{i % 3}__m{i}", f"t{i % 3}", profile(f"m{i}", mb=mb, load_cold_s=load_cold_s,
                                                            exec_ms=exec_ms), slo_s)
              for i in range(n_models)]
    weights = [1.0 / (i + 1) for i in range(n_models)]
    t, times = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            break
        times.append((t, rng.choices(range(n_models), weights)[0]))
    return FixedWorkload(models, duration_s, times, f"{n_models} models, Poisson {rate}/s")

"""What a simulation run measured: counts as it goes, one ``SimResult`` at the end.

Every arrival ends one way: served within its SLO, served late, dropped by the
scheduler before it ran, or refused (by admission: quota, infeasible, queue_full; by
placement: cold_infeasible, its model's load plus an execution would end after its
deadline; no_capacity, no instance had room for its model). SLO attainment of
admitted requests counts drops and late answers as misses; of all requests, refusals
too. Goodput is the responses within SLO per second. Per-minute series keep the same
counts per simulated minute, and memory in use sampled on a grid.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SERIES = ("arrivals", "admitted", "ok", "late", "dropped", "refused", "cold_starts", "loads", "evictions",
          "bytes_loaded")
REFUSAL_REASONS = ("quota", "infeasible", "queue_full", "cold_infeasible", "no_capacity")


class Recorder:
    def __init__(self, duration_s: float, bucket_s: float = 60.0) -> None:
        self.bucket_s = bucket_s
        n = max(1, int(np.ceil(duration_s / bucket_s)))
        self.n = n
        self.series: dict[str, list[float]] = {k: [0.0] * n for k in SERIES}
        self.refused_by: dict[str, list[float]] = {r: [0.0] * n for r in REFUSAL_REASONS}
        self.mem_sum = [0.0] * n
        self.mem_samples = [0] * n
        self.latencies = array("d")
        self.totals: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.evictions_by: Counter[str] = Counter()

    def _b(self, t: float) -> int:
        return min(self.n - 1, int(t / self.bucket_s))

    def add(self, what: str, t: float, n: float = 1.0) -> None:
        self.series[what][self._b(t)] += n
        self.totals[what] += n

    def refused(self, reason: str, t: float) -> None:
        self.refusals[reason] += 1
        self.refused_by.setdefault(reason, [0.0] * self.n)[self._b(t)] += 1
        self.add("refused", t)

    def served(self, arrival: float, end: float, deadline: float) -> None:
        self.latencies.append(end - arrival)
        self.add("ok" if end <= deadline else "late", end)

    def evicted(self, reason: str, t: float) -> None:
        self.evictions_by[reason] += 1
        self.add("evictions", t)

    def memory(self, t: float, fraction: float) -> None:
        b = self._b(t)
        self.mem_sum[b] += fraction
        self.mem_samples[b] += 1


@dataclass
class SimResult:
    policy: str
    models: int
    instances: int
    instance_memory: int
    duration_s: float
    seed: int
    workload: str
    arrivals: int = 0
    admitted: int = 0
    ok: int = 0
    late: int = 0
    dropped: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    slo_admitted: float | None = None
    """Of the requests admission accepted, the fraction answered within their SLO."""
    slo_all: float | None = None
    """Of all requests, the fraction answered within their SLO (refusals are misses)."""
    goodput: float = 0.0
    cold_starts: int = 0
    cold_starts_per_min: float = 0.0
    loads: int = 0
    warm_loads: int = 0
    evictions: dict[str, int] = field(default_factory=dict)
    bytes_loaded: int = 0
    mem_util: float = 0.0
    """Mean fraction of the instances' memory held by models (loaded or loading)."""
    decisions: int = 0
    """Scheduler decisions: admit and schedule calls."""
    placements: int = 0
    """Planner calls: place on a cold request, plan on the leader's pass."""
    events: int = 0
    series: dict[str, list[float]] = field(default_factory=dict)
    # wall clock: the only numbers that differ between two runs of the same seed
    decision_wall_s: float = 0.0
    """Wall seconds inside admit and schedule."""
    complete_wall_s: float = 0.0
    """Wall seconds inside complete (bookkeeping: counted apart from decisions)."""
    placement_wall_s: float = 0.0
    wall_s: float = 0.0

    @property
    def decisions_per_s(self) -> float:
        return self.decisions / self.decision_wall_s if self.decision_wall_s > 0 else float("inf")

    @property
    def sim_speed(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.duration_s / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    def outcome(self) -> dict[str, Any]:
        """Everything but the wall-clock numbers: equal for equal inputs and seed."""
        d = asdict(self)
        for k in ("decision_wall_s", "complete_wall_s", "placement_wall_s", "wall_s"):
            d.pop(k)
        return d


def summarise(rec: Recorder, result: SimResult) -> SimResult:
    t = rec.totals
    r = result
    r.arrivals, r.admitted = int(t["arrivals"]), int(t["admitted"])
    r.ok, r.late, r.dropped = int(t["ok"]), int(t["late"]), int(t["dropped"])
    r.refused = {k: int(v) for k, v in sorted(rec.refusals.items())}
    if len(rec.latencies):
        lat = np.frombuffer(rec.latencies, dtype=np.float64)
        r.p50_ms = float(np.percentile(lat, 50)) * 1e3
        r.p99_ms = float(np.percentile(lat, 99)) * 1e3
    r.slo_admitted = r.ok / r.admitted if r.admitted else None
    r.slo_all = r.ok / r.arrivals if r.arrivals else None
    r.goodput = r.ok / r.duration_s if r.duration_s > 0 else 0.0
    r.cold_starts = int(t["cold_starts"])
    r.cold_starts_per_min = r.cold_starts / (r.duration_s / 60.0) if r.duration_s > 0 else 0.0
    r.loads, r.bytes_loaded = int(t["loads"]), int(t["bytes_loaded"])
    r.evictions = {k: int(v) for k, v in sorted(rec.evictions_by.items())}
    samples = sum(rec.mem_samples)
    r.mem_util = sum(rec.mem_sum) / samples if samples else 0.0
    series: dict[str, list[float]] = {k: list(v) for k, v in rec.series.items()}
    for reason, v in rec.refused_by.items():
        series[f"refused_{reason}"] = list(v)
    series["mem_util"] = [s / n if n else 0.0 for s, n in zip(rec.mem_sum, rec.mem_samples, strict=True)]
    series["goodput"] = [ok / rec.bucket_s for ok in rec.series["ok"]]
    series["slo_all"] = [ok / a if a else float("nan")
                         for ok, a in zip(rec.series["ok"], rec.series["arrivals"], strict=True)]
    done = [ok + late + d for ok, late, d in zip(rec.series["ok"], rec.series["late"], rec.series["dropped"],
                                                 strict=True)]
    series["slo_admitted"] = [ok / n if n else float("nan") for ok, n in zip(rec.series["ok"], done, strict=True)]
    r.series = series
    return r

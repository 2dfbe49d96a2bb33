"""The console's time series: a bounded in-memory history of this replica's own counters.

Every ``interval_s`` the sampler reads the gateway's request counters and latency
histograms and the scheduler's decision counts (a ``Reading``); ``between`` turns two
readings into one ``Point`` (rates over the interval, SLO attainment, refusals by reason,
p99 against the SLO), overall and per tenant. Only the newest ``window_s`` of points are
kept. Each replica keeps its own; the console shows the one it talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controlplane.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from controlplane.services import Services

log = logging.getLogger(__name__)

Model = tuple[str, str]  # (tenant, model as the tenant names it)
# scheduler decisions the history counts; the rest (admitted, dispatched, ...) are steps, not outcomes
OUTCOMES = ("completed", "late", "dropped", "failed", "quota", "infeasible", "queue_full")
REFUSALS = ("quota", "infeasible", "queue_full", "dropped")


@dataclass(frozen=True)
class Reading:
    """Cumulative counts at one moment (monotonic ``mono`` for rates, epoch ``at`` for people)."""

    at: float
    mono: float
    requests: Mapping[Model, float] = field(default_factory=dict)
    outcomes: Mapping[tuple[str, str, str], int] = field(default_factory=dict)  # tenant, model, outcome
    latency: Mapping[Model, tuple[int, ...]] = field(default_factory=dict)  # per LATENCY_BUCKETS (+inf)
    slo_ms: Mapping[Model, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Rates:
    requests_per_s: float
    goodput_per_s: float = 0.0
    slo_attainment: float | None = None  # of requests that ran or were refused for capacity
    refusals_per_s: dict[str, float] = field(default_factory=dict)  # by reason
    p99_ms: float | None = None
    slo_ms: float | None = None  # the tightest SLO among the models that had requests


@dataclass(frozen=True)
class Point:
    at: float
    overall: Rates
    tenants: dict[str, Rates]


def percentile_ms(counts: tuple[int, ...], pct: float, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> float | None:
    """The ``pct`` percentile of a histogram, interpolated inside its bucket (ms)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = pct / 100 * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            low = bounds[i - 1] if i > 0 else 0.0
            high = bounds[i] if i < len(bounds) else bounds[-1] * 2  # above every bound: a guess
            return round((low + (high - low) * (rank - seen) / n) * 1000, 3)
        seen += n
    return round(bounds[-1] * 1000, 3)


def _rates(dt: float, requests: float, outcomes: Mapping[str, int], latency: tuple[int, ...] | None,
           slo_ms: float | None) -> Rates:
    completed = outcomes.get("completed", 0)
    judged = sum(outcomes.get(o, 0) for o in ("completed", "late", "dropped", "failed", "infeasible"))
    return Rates(
        requests_per_s=round(requests / dt, 3),
        goodput_per_s=round(completed / dt, 3),
        slo_attainment=round(completed / judged, 4) if judged else None,
        refusals_per_s={r: round(outcomes.get(r, 0) / dt, 3) for r in REFUSALS},
        p99_ms=percentile_ms(latency, 99) if latency else None,
        slo_ms=slo_ms)


@dataclass
class _Sums:
    requests: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    slos: list[float] = field(default_factory=list)

    def rates(self, dt: float) -> Rates:
        return _rates(dt, self.requests, self.outcomes, tuple(self.latency), min(self.slos, default=None))


def between(a: Reading, b: Reading) -> Point:
    """What happened from reading ``a`` to reading ``b``: pure, for the tests."""
    dt = max(b.mono - a.mono, 1e-3)
    zero = (0,) * (len(LATENCY_BUCKETS) + 1)
    overall = _Sums()
    tenants: dict[str, _Sums] = {}
    for model in sorted(set(b.requests) | {(t, m) for t, m, _ in b.outcomes} | set(b.latency)):
        mine = tenants.setdefault(model[0], _Sums())
        requests = b.requests.get(model, 0.0) - a.requests.get(model, 0.0)
        latency = [y - x for x, y in zip(a.latency.get(model, zero), b.latency.get(model, zero), strict=True)]
        for sums in (mine, overall):
            sums.requests += requests
            for outcome in OUTCOMES:
                n = b.outcomes.get((*model, outcome), 0) - a.outcomes.get((*model, outcome), 0)
                if n:
                    sums.outcomes[outcome] = sums.outcomes.get(outcome, 0) + n
            sums.latency = [x + y for x, y in zip(sums.latency, latency, strict=True)]
            if requests > 0 and model in b.slo_ms:
                sums.slos.append(b.slo_ms[model])
    return Point(at=b.at, overall=overall.rates(dt), tenants={t: s.rates(dt) for t, s in tenants.items()})


def read(services: Services, clock: Callable[[], float] = time.time,
         mono: Callable[[], float] = time.monotonic) -> Reading:
    """This replica's counters now."""
    metrics = services.metrics
    requests: dict[Model, float] = {}
    for labels, value in metrics.counter_series("inferplex_requests_total").items():
        d = dict(labels)
        key = (d.get("tenant", ""), d.get("model", ""))
        requests[key] = requests.get(key, 0.0) + value
    latency: dict[Model, tuple[int, ...]] = {}
    for labels, (_, counts) in metrics.histogram_series("inferplex_request_duration_seconds").items():
        d = dict(labels)
        key = (d.get("tenant", ""), d.get("model", ""))
        old = latency.get(key)
        latency[key] = counts if old is None else tuple(x + y for x, y in zip(old, counts, strict=True))
    outcomes: dict[tuple[str, str, str], int] = {}
    scheduled = services.gateway.scheduled
    if scheduled is not None:
        for (tenant, key, reason), n in scheduled.core.decisions().items():
            if reason in OUTCOMES:
                rec = services.catalog.by_qualified(key.rpartition("@")[0])
                name = rec.name if rec is not None else key.rpartition("@")[0].partition("__")[2]
                k = (tenant, name, reason)
                outcomes[k] = outcomes.get(k, 0) + n
    slo_ms: dict[Model, float] = {}
    for tenant, name in set(requests) | set(latency):
        with contextlib.suppress(Exception):  # a model deleted since: no SLO to show
            slo_ms[(tenant, name)] = services.catalog.resolve(tenant, name).slo_ms
    return Reading(at=clock(), mono=mono(), requests=requests, outcomes=outcomes, latency=latency,
                   slo_ms=slo_ms)


class History:
    """The newest ``window_s / interval_s`` points of this replica, sampled by a task
    started with the app (``start``) and stopped with it (``close``)."""

    def __init__(self, sample: Callable[[], Reading], interval_s: float = 5.0, window_s: float = 900.0) -> None:
        self.sample = sample
        self.interval_s = interval_s
        self.window_s = window_s
        self.points: deque[Point] = deque(maxlen=max(1, int(window_s / interval_s)))
        self._last: Reading | None = None
        self._task: asyncio.Task[None] | None = None

    def tick(self) -> None:
        reading = self.sample()
        if self._last is not None:
            self.points.append(between(self._last, reading))
        self._last = reading

    def _safe_tick(self) -> None:
        try:
            self.tick()
        except Exception:  # the history (and the app's start) must not die with one bad reading
            log.exception("console history: sampling failed")

    def start(self) -> None:
        self._safe_tick()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="console-history")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self._safe_tick()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

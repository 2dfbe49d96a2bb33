"""The console's pure parts: the history's rates between two readings, the histogram
percentile, the ring of recent admission refusals and drops, and how planner decisions are
tagged for the decisions filter."""

from __future__ import annotations

from collections import deque

from admission.model import Drop
from controlplane.console.api import _kind, _mentions
from controlplane.console.history import History, Reading, between, percentile_ms
from controlplane.metrics import LATENCY_BUCKETS
from controlplane.scheduling import RecentRefusal, _Noted
from tests.unit.test_admission_fakes import make, req


def _hist(**at_bound: int) -> tuple[int, ...]:
    """Counts with ``n`` observations in the bucket whose upper bound is ``b{ms}``."""
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    for name, n in at_bound.items():
        counts[LATENCY_BUCKETS.index(float(name[1:]) / 1000)] += n
    return tuple(counts)


def test_rates_between_two_readings_count_only_what_happened_in_between() -> None:
    a = Reading(at=100.0, mono=10.0, requests={("acme", "m"): 50.0},
                outcomes={("acme", "m", "completed"): 40, ("acme", "m", "late"): 5},
                latency={("acme", "m"): _hist(b10=50)}, slo_ms={("acme", "m"): 100.0})
    b = Reading(at=105.0, mono=15.0, requests={("acme", "m"): 70.0, ("zeta", "n"): 5.0},
                outcomes={("acme", "m", "completed"): 55, ("acme", "m", "late"): 8,
                          ("acme", "m", "quota"): 2, ("zeta", "n", "dropped"): 5},
                latency={("acme", "m"): _hist(b10=60, b50=10), ("zeta", "n"): _hist(b250=5)},
                slo_ms={("acme", "m"): 100.0, ("zeta", "n"): 20.0})
    p = between(a, b)
    assert p.at == 105.0
    assert p.overall.requests_per_s == 5.0  # (20 + 5) / 5 s
    assert p.overall.goodput_per_s == 3.0  # 15 completed / 5 s
    # 15 in time of 15 + 3 late + 5 dropped; quota refusals are not SLO misses
    assert p.overall.slo_attainment == round(15 / 23, 4)
    assert p.overall.refusals_per_s == {"quota": 0.4, "infeasible": 0.0, "queue_full": 0.0, "dropped": 1.0}
    assert p.overall.slo_ms == 20.0  # the tightest SLO among models with requests
    acme = p.tenants["acme"]
    assert acme.requests_per_s == 4.0 and acme.slo_attainment == round(15 / 18, 4) and acme.slo_ms == 100.0
    # acme's 20 requests in the interval: 10 at <= 10 ms, 10 at 25-50 ms: p99 in the 25-50 ms bucket
    assert acme.p99_ms is not None and 25 < acme.p99_ms <= 50
    assert p.tenants["zeta"].slo_attainment == 0.0


def test_an_interval_without_requests_has_no_attainment_nor_p99() -> None:
    a = Reading(at=0.0, mono=0.0, requests={("acme", "m"): 3.0})
    p = between(a, Reading(at=5.0, mono=5.0, requests={("acme", "m"): 3.0}))
    assert p.overall.requests_per_s == 0.0
    assert p.overall.slo_attainment is None and p.overall.p99_ms is None and p.overall.slo_ms is None


def test_percentile_interpolates_inside_its_bucket() -> None:
    assert percentile_ms(_hist(b10=100), 50) == 7.5  # half-way through the 5-10 ms bucket
    assert percentile_ms((0,) * (len(LATENCY_BUCKETS) + 1), 99) is None


def test_the_history_keeps_only_its_window() -> None:
    readings = iter(Reading(at=float(i), mono=float(i), requests={("t", "m"): float(i)}) for i in range(10))
    h = History(lambda: next(readings), interval_s=1.0, window_s=3.0)
    for _ in range(10):
        h.tick()
    assert [p.at for p in h.points] == [7.0, 8.0, 9.0]  # 9 intervals, the newest 3 kept
    assert all(p.overall.requests_per_s == 1.0 for p in h.points)


def test_refusals_and_drops_are_noted_with_tenant_and_the_tenants_model_name() -> None:
    recent: deque[RecentRefusal] = deque(maxlen=2)
    core = _Noted(make({"acme__m": 0}), recent)
    # admitted behind a long one that overruns its prediction: dropped
    assert core.admit(req("long", tenant="acme", model="acme__m", deadline=0.1, work=1000), 0.0) is None
    core.schedule(0.0)
    assert core.admit(req("late", tenant="acme", model="acme__m", deadline=0.020), 0.0) is None
    drops = [d for d in core.schedule(0.0195) if isinstance(d, Drop)]
    assert [d.request_id for d in drops] == ["late"]
    assert [(r.tenant, r.model, r.reason) for r in recent] == [("acme", "m", "dropped")]
    refusal = core.admit(req("never", tenant="acme", model="acme__m", deadline=0.0001), 0.001)
    assert refusal is not None and refusal.reason == "infeasible"
    assert [r.reason for r in recent] == ["dropped", "infeasible"]
    assert recent[-1].message == refusal.message
    core.admit(req("again", tenant="acme", model="acme__m", deadline=0.0001), 0.001)
    assert len(recent) == 2  # bounded: the oldest went


def test_planner_decisions_are_tagged_by_kind_and_the_models_they_name() -> None:
    text = "evicted acme/m2 from worker-0: lowest cost 0.51 ms/MB·s; needed 12 MB for globex/m1.v2"
    assert _kind(text) == "evict"
    known = {("acme", "m2"), ("globex", "m1.v2"), ("acme", "m0")}
    # "ms/MB" has the shape of a name too: only models that exist count
    assert _mentions(text, lambda t, m: (t, m) in known) == [("acme", "m2"), ("globex", "m1.v2")]
    assert _kind("loaded acme/m0 on worker-0: requests wait for it") == "load"
    assert _kind("loading acme/m0 on worker-1 failed: out of memory") == "failed"
    assert _kind("refused acme/m0: no instance has room") == "refused"

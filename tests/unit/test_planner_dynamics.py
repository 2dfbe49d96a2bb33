"""The placement planner over time (issue 12): replication up and down with hysteresis, no
ping-pong, prefetch on rising demand, ready_at with queued loads, demand smoothing, scale.
Virtual clock throughout: every time below is a number the test chose."""

from __future__ import annotations

import random

import pytest

from placement.cluster import ClusterSnapshot, LoadState
from placement.demand import Demand, DemandTracker
from placement.planner import Planner, PlannerConfig, Readiness, ready_at
from tests.unit.planner_fixtures import SimCluster, costs, inst, rate, res, snapshot, spec

NOW = 1000.0
# one copy serves 200 req/s within a 100 ms SLO: batch 4 in 20 ms (batch 8 takes 60 ms, too long)
EXEC = {1: 0.01, 4: 0.02, 8: 0.06}


def hot(name: str = "acme__hot", **kw):
    return spec(name, exec_s=EXEC, max_batch=8, slo_s=0.1, **kw)


def test_capacity_is_the_best_throughput_of_a_batch_that_meets_the_slo() -> None:
    c = costs(exec_s=EXEC, max_batch=8)
    assert c.capacity_per_s(0.1) == pytest.approx(200.0)
    assert c.capacity_per_s(0.2) == pytest.approx(200.0)  # batch 8 fits now, but serves fewer
    assert costs(exec_s={1: 0.01, 8: 0.03}, max_batch=8).capacity_per_s(0.1) == pytest.approx(8 / 0.03)
    assert costs(exec_s=EXEC, max_batch=1).capacity_per_s(0.1) == pytest.approx(100.0)
    assert c.capacity_per_s(0.001) == pytest.approx(100.0)  # nothing meets it: the smallest batch


# ---- replication ---------------------------------------------------------------------------


def test_a_model_above_80_percent_of_one_copy_gets_a_second_on_another_instance() -> None:
    instances = [inst("w-1", 1000, res("acme__hot")), inst("w-2"), inst("w-3")]
    plan = Planner().plan(snapshot(NOW, instances, [hot()], {"acme__hot": rate(170)}))
    assert [(a.model, a.instance_id) for a in plan.loads] == [("acme__hot", "w-2")]
    assert "added a copy of acme/hot" in plan.loads[0].reason and "80%" in plan.loads[0].reason
    # at 150 req/s (75%), nothing
    plan = Planner().plan(snapshot(NOW, instances, [hot()], {"acme__hot": rate(150)}))
    assert plan.actions == ()


def test_replication_adds_enough_copies_at_once_for_the_forecast() -> None:
    instances = [inst("w-1", 1000, res("acme__hot"))] + [inst(f"w-{i}") for i in range(2, 7)]
    plan = Planner().plan(snapshot(NOW, instances, [hot()], {"acme__hot": rate(500)}))
    # 500 / (0.8 × 200) → 4 copies
    assert sorted(a.instance_id for a in plan.loads) == ["w-2", "w-3", "w-4"]


def test_a_loading_copy_counts_so_the_next_pass_adds_none() -> None:
    instances = [inst("w-1", 1000, res("acme__hot")),
                 inst("w-2", 1000, res("acme__hot", state=LoadState.LOADING, since=NOW)), inst("w-3")]
    assert Planner().plan(snapshot(NOW, instances, [hot()], {"acme__hot": rate(300)})).actions == ()


def _two_copies(demand: float, now: float, since: float = 0.0) -> ClusterSnapshot:
    instances = [inst("w-1", 1000, res("acme__hot", since=since)), inst("w-2", 1000, res("acme__hot", since=since))]
    return snapshot(now, instances, [hot()], {"acme__hot": rate(demand)})


def test_a_copy_is_removed_only_below_40_percent_of_the_rest_and_after_the_hold() -> None:
    planner = Planner(PlannerConfig(hold_s=120.0))
    # 100 req/s: one copy would run at 50%: both stay, however long
    for t in range(0, 1000, 10):
        assert planner.plan(_two_copies(100, NOW + t)).actions == ()
    # 70 req/s (35% of one copy): removed once the hold has passed, not before
    planner = Planner(PlannerConfig(hold_s=120.0))
    for t in range(0, 120, 10):
        assert planner.plan(_two_copies(70, NOW + t)).actions == ()
    plan = planner.plan(_two_copies(70, NOW + 120))
    (u,) = plan.unloads
    assert u.model == "acme__hot" and not plan.loads
    assert "removed a copy of acme/hot" in u.reason and "40%" in u.reason and "120 s" in u.reason


def test_the_hold_restarts_when_demand_comes_back() -> None:
    planner = Planner(PlannerConfig(hold_s=120.0))
    for t in range(0, 100, 10):
        planner.plan(_two_copies(70, NOW + t))
    planner.plan(_two_copies(100, NOW + 100))
    for t in range(110, 220, 10):
        assert planner.plan(_two_copies(70, NOW + t)).actions == ()
    assert planner.plan(_two_copies(70, NOW + 230)).unloads


def test_a_young_or_busy_copy_is_not_removed() -> None:
    planner = Planner(PlannerConfig(hold_s=60.0))
    for t in range(0, 200, 10):
        assert planner.plan(_two_copies(10, NOW + t, since=NOW + 150)).actions == ()
    instances = [inst("w-1", 1000, res("acme__hot", in_flight=2)), inst("w-2", 1000, res("acme__hot", in_flight=1))]
    planner = Planner(PlannerConfig(hold_s=0.0))
    assert planner.plan(snapshot(NOW, instances, [hot()], {"acme__hot": rate(10)})).actions == ()


def test_copies_go_one_per_hold() -> None:
    planner = Planner(PlannerConfig(hold_s=60.0))
    cluster = SimCluster([inst(f"w-{i}", 1000, res("acme__hot")) for i in range(1, 5)])
    removed_at = []
    for t in range(0, 400, 10):
        plan = planner.plan(snapshot(NOW + t, cluster.views(), [hot()], {"acme__hot": rate(20)}))
        if plan.unloads:
            removed_at.append(t)
        cluster.apply(plan, NOW + t)
    assert removed_at == [60, 120, 180] and cluster.copies("acme__hot") == 1


# ---- no ping-pong --------------------------------------------------------------------------


def _arrivals(tracker: DemandTracker, model: str, per_s: float, t0: float, t1: float) -> None:
    n = round(per_s * (t1 - t0))
    for k in range(n):
        tracker.observe(model, t0 + (k + 0.5) * (t1 - t0) / n)


def test_demand_swinging_across_the_add_threshold_adds_one_copy_and_removes_none_in_an_hour() -> None:
    cluster = SimCluster([inst("w-1", 1000, res("acme__hot")), inst("w-2"), inst("w-3")])
    tracker, planner = DemandTracker(), Planner(PlannerConfig(wanted_evict_ratio=1.0))
    # 140 ↔ 190 req/s every minute (the one copy serves 200)
    for t in range(0, 3600, 5):
        now = NOW + t
        _arrivals(tracker, "acme__hot", 190 if (t // 60) % 2 else 140, now - 5, now)
        cluster.advance(now)
        cluster.apply(planner.plan(snapshot(now, cluster.views(), [hot()], tracker.snapshot(now))), now)
    assert (cluster.loads, cluster.unloads) == (1, 0)


def test_two_models_alternating_bursts_are_each_loaded_once() -> None:
    models = [spec("acme__a"), spec("globex__b")]
    cluster = SimCluster([inst("w-1", 250), inst("w-2", 250)])
    tracker, planner = DemandTracker(), Planner()
    for t in range(0, 3600, 5):
        now = NOW + t
        busy = "acme__a" if (t // 30) % 2 else "globex__b"
        _arrivals(tracker, busy, 20, now - 5, now)
        cluster.advance(now)
        wanted = tuple(m.name for m in models if m.name == busy and not cluster.copies(m.name))
        cluster.apply(planner.plan(snapshot(now, cluster.views(), models, tracker.snapshot(now), wanted)), now)
    assert (cluster.loads, cluster.unloads) == (2, 0)


def test_a_model_that_does_not_fit_beside_another_does_not_trade_places_with_it() -> None:
    # one instance holds one of them; the resident one is steady, the other swings around it
    models = [spec("acme__a"), spec("globex__b")]
    cluster = SimCluster([inst("w-1", 150, res("acme__a"))])
    tracker, planner = DemandTracker(), Planner()
    for t in range(0, 3600, 5):
        now = NOW + t
        _arrivals(tracker, "acme__a", 1.0, now - 5, now)
        _arrivals(tracker, "globex__b", 1.6 if (t // 60) % 2 else 0.4, now - 5, now)
        cluster.advance(now)
        cluster.apply(planner.plan(snapshot(now, cluster.views(), models, tracker.snapshot(now))), now)
    assert (cluster.loads, cluster.unloads) == (0, 0)


# ---- prefetch ------------------------------------------------------------------------------


def test_rising_demand_loads_a_copy_before_any_request_waits_for_it() -> None:
    tracker = DemandTracker()
    _arrivals(tracker, "globex__bert", 0.2, NOW - 600, NOW - 10)
    _arrivals(tracker, "globex__bert", 5.0, NOW - 10, NOW)
    d = tracker.demand("globex__bert", NOW)
    assert d.rising
    plan = Planner().plan(snapshot(NOW, [inst("w-1")], [spec("globex__bert")], {"globex__bert": d}))
    (load,) = plan.loads
    assert "prefetched globex/bert" in load.reason and "rising" in load.reason


def test_rising_demand_evicts_only_a_much_cheaper_model() -> None:
    """``evict_margin`` 2 (the default); with 16 a 4x denser prefetch evicts nothing, and with
    None nothing ever (free memory only)."""
    models = [spec("acme__a"), spec("globex__bert")]
    w1 = inst("w-1", 100, res("acme__a"))
    rising = Demand(1.0, 4.0)
    margin = PlannerConfig(evict_margin=2.0)
    snap = snapshot(NOW, [w1], models, {"acme__a": rate(1.0), "globex__bert": rising})
    assert [a.model for a in Planner(margin).plan(snap).actions] == ["acme__a", "globex__bert"]  # 4 vs 1: it goes
    sixteen = Planner(PlannerConfig(evict_margin=16.0))
    assert sixteen.plan(snap).actions == ()  # 4 vs 1 is under 16
    hot = snapshot(NOW, [w1], models, {"acme__a": rate(0.1), "globex__bert": rising})
    assert [a.model for a in sixteen.plan(hot).actions] == ["acme__a", "globex__bert"]  # 40x: it goes
    assert Planner(PlannerConfig(evict_margin=None)).plan(hot).actions == ()  # None: free memory only
    plan = Planner(margin).plan(snapshot(NOW, [w1], models, {"acme__a": rate(3.0), "globex__bert": rising}))
    assert plan.actions == ()  # 4 vs 3: it stays
    roomy = snapshot(NOW, [inst("w-1", 200, res("acme__a"))], models, {"acme__a": rate(3.0), "globex__bert": rising})
    assert [a.model for a in Planner(PlannerConfig(evict_margin=None)).plan(roomy).actions] == ["globex__bert"]


def test_trickle_of_demand_prefetches_nothing_and_a_lost_model_is_placed_again() -> None:
    plan = Planner().plan(snapshot(NOW, [inst("w-1")], [spec("globex__bert")], {"globex__bert": rate(0.01)}))
    assert plan.actions == ()
    instances = [inst("w-1", 1000, res("globex__bert"), healthy=False), inst("w-2")]
    plan = Planner().plan(snapshot(NOW, instances, [spec("globex__bert")], {"globex__bert": rate(2)}))
    assert [(a.instance_id, a.reason.split(" on ")[0]) for a in plan.loads] == [("w-2", "re-placed globex/bert")]


# ---- ready_at ------------------------------------------------------------------------------


def test_ready_at_is_now_for_a_loaded_copy_and_its_load_end_for_a_loading_one() -> None:
    m = spec("globex__bert", cold_s=3.0)
    snap = snapshot(NOW, [inst("w-1", 1000, res("globex__bert"))], [m])
    assert ready_at(snap, "globex__bert", NOW + 1) == ready_at(snap, "globex__bert", NOW + 1)
    r = ready_at(snap, "globex__bert", NOW + 1)
    assert r is not None and r.loaded and r.at == NOW + 1
    snap = snapshot(NOW, [inst("w-1", 1000, res("globex__bert", state=LoadState.LOADING, since=NOW - 1))], [m])
    r = ready_at(snap, "globex__bert", NOW)
    assert r is not None and not r.loaded and r.at == NOW + 2.0


def test_ready_at_waits_for_loads_already_queued_on_the_instance() -> None:
    m = spec("globex__bert", cold_s=2.0)
    busy = inst("w-1", 1000, res("acme__x", state=LoadState.LOADING, ready_at=NOW + 5))
    r = ready_at(snapshot(NOW, [busy], [m]), "globex__bert", NOW)
    assert r is not None and (r.instance_id, r.at) == ("w-1", NOW + 7.0)
    r = ready_at(snapshot(NOW, [busy, inst("w-2")], [m]), "globex__bert", NOW)
    assert r is not None and (r.instance_id, r.at) == ("w-2", NOW + 2.0)


def test_loads_without_a_predicted_end_run_one_after_another_in_the_order_asked() -> None:
    models = [spec("acme__a", cold_s=3.0), spec("acme__b", cold_s=2.0), spec("globex__c", cold_s=1.0)]
    w1 = inst("w-1", 1000, res("acme__b", state=LoadState.LOADING, since=NOW - 0.5),
              res("acme__a", state=LoadState.LOADING, since=NOW - 1.0))
    snap = snapshot(NOW, [w1], models)
    readiness = Readiness(snap)
    assert readiness.ready_at("acme__a", NOW).at == NOW + 2.0
    assert readiness.ready_at("acme__b", NOW).at == NOW + 4.0  # after a's load, not beside it
    assert readiness.ready_at("globex__c", NOW).at == NOW + 5.0
    # asked again later, the same answers hold (and nothing waits in the past)
    assert readiness.ready_at("globex__c", NOW + 10).at == NOW + 11.0


def test_ready_at_counts_the_loads_of_a_plan_not_yet_written() -> None:
    a, b = spec("acme__a", cold_s=4.0), spec("globex__b", cold_s=1.0)
    snap = snapshot(NOW, [inst("w-1")], [a, b], wanted=("acme__a",))
    plan = Planner().plan(snap)
    assert ready_at(snap, "acme__a", NOW, plan).at == NOW + 4.0
    r = ready_at(snap, "globex__b", NOW, plan)
    assert r is not None and r.at == NOW + 5.0


def test_loads_planned_together_on_one_instance_queue_one_after_another() -> None:
    models = [spec("acme__a", cold_s=4.0), spec("globex__b", cold_s=1.0)]
    plan = Planner().plan(snapshot(NOW, [inst("w-1")], models, wanted=("acme__a", "globex__b")))
    assert [(a.model, a.ready_at) for a in plan.loads] == [("acme__a", NOW + 4.0), ("globex__b", NOW + 5.0)]


def test_ready_at_prefers_the_instance_whose_cache_makes_the_load_warm() -> None:
    m = spec("globex__bert", cold_s=6.0, warm_s=0.5)
    cached = inst("w-2", 1000, res("acme__x", state=LoadState.LOADING, ready_at=NOW + 2),
                  cached=frozenset({"globex__bert"}))
    r = ready_at(snapshot(NOW, [inst("w-1"), cached], [m]), "globex__bert", NOW)
    assert r is not None and (r.instance_id, r.at) == ("w-2", NOW + 2.5)


def test_ready_at_is_none_where_no_instance_could_take_the_model() -> None:
    snap = snapshot(NOW, [inst("w-1", 100, res("acme__x", in_flight=1))], [spec("acme__x"), spec("globex__b")])
    assert ready_at(snap, "globex__b", NOW) is None


# ---- demand --------------------------------------------------------------------------------


def test_steady_arrivals_give_their_rate_and_are_not_rising() -> None:
    tracker = DemandTracker()
    _arrivals(tracker, "m", 10.0, 0.0, 600.0)
    d = tracker.demand("m", 600.0)
    assert d.rate_per_s == pytest.approx(10.0, rel=0.05)
    assert d.short_rate_per_s == pytest.approx(10.0, rel=0.05)
    assert not d.rising


def test_a_step_up_is_rising_within_seconds_and_forecast_leads_it() -> None:
    tracker = DemandTracker()
    _arrivals(tracker, "m", 1.0, 0.0, 600.0)
    _arrivals(tracker, "m", 20.0, 600.0, 605.0)
    d = tracker.demand("m", 605.0)
    assert d.rising and d.forecast > d.short_rate_per_s > d.rate_per_s


def test_rates_decay_when_arrivals_stop_and_idle_models_are_forgotten() -> None:
    tracker = DemandTracker(short_tau_s=10.0, long_tau_s=100.0)
    _arrivals(tracker, "m", 10.0, 0.0, 1000.0)
    before = tracker.demand("m", 1000.0).rate_per_s
    assert tracker.demand("m", 1000.0 + 100.0).rate_per_s == pytest.approx(before / 2.718281828, rel=1e-6)
    assert "m" in tracker.snapshot(1100.0)
    assert "m" not in tracker.snapshot(1000.0 + 3000.0)


def test_late_arrivals_never_increase_through_negative_decay() -> None:
    tracker = DemandTracker()
    tracker.observe("m", 100.0)
    tracker.observe("m", 50.0)  # reported late
    assert tracker.demand("m", 100.0).short_rate_per_s == pytest.approx(2 / tracker.short_tau_s)


# ---- scale ---------------------------------------------------------------------------------


def test_a_pass_over_10000_models_and_100_instances_completes() -> None:
    rnd = random.Random(12)
    models = [spec(f"t{i % 50}__m{i}", mem_mb=rnd.choice((10, 20, 40)), cold_s=rnd.uniform(0.2, 5.0),
                   exec_s={1: 0.005, 8: 0.02}, max_batch=8) for i in range(10_000)]
    instances = []
    k = 0
    for i in range(100):
        rs = []
        used = 0
        while used + models[k].costs["cpu"].memory_bytes <= 1_000_000_000 and len(rs) < 60:
            m = models[k]
            rs.append(res(m.name, m.costs["cpu"].memory_bytes / 1e6, last_used=rnd.uniform(0, NOW),
                          in_flight=int(rnd.random() < 0.1)))
            used += m.costs["cpu"].memory_bytes
            k += 1
        instances.append(inst(f"w-{i}", 1000, *rs))
    demand = {m.name: rate(1000.0 / (1 + i) ** 1.1, 1200.0 / (1 + i) ** 1.1) for i, m in enumerate(models)}
    wanted = tuple(m.name for m in models[k:k + 300])
    plan = Planner().plan(snapshot(NOW, instances, models, demand, wanted))
    assert len(plan.loads) >= 300 and plan.unloads


# ---- a skewed workload over more models than memory ------------------------------------------


def test_under_a_skewed_workload_hot_models_stay_and_every_waiting_model_is_placed_or_refused() -> None:
    rnd = random.Random(7)
    models = [spec(f"t{i % 4}__m{i}", 100, cold_s=1.0 + (i % 3)) for i in range(40)]
    cluster = SimCluster([inst("w-1", 500), inst("w-2", 500)])  # 10 of 40 fit
    # with the heavier-use guard: one request for a rare model does not push out a hot one
    tracker, planner = DemandTracker(), Planner(PlannerConfig(wanted_evict_ratio=1.0))
    weights = [1.0 / (i + 1) ** 1.2 for i in range(40)]
    scale = 20.0 / sum(weights)
    hot_resident = steps = 0
    for t in range(0, 1800, 5):
        now = NOW + t
        order = list(range(40)) if t < 900 else list(range(39, -1, -1))  # popularity flips half-way
        arrived = []
        for rank, i in enumerate(order):
            n = sum(1 for _ in range(50) if rnd.random() < weights[rank] * scale * 5 / 50)
            if n:
                arrived.append(models[i].name)
                for k in range(n):
                    tracker.observe(models[i].name, now - 5 + 5 * (k + 0.5) / n)
        cluster.advance(now)
        wanted = tuple(m for m in arrived if not cluster.copies(m))
        plan = planner.plan(snapshot(now, cluster.views(), models, tracker.snapshot(now), wanted))
        handled = {a.model for a in plan.loads} | {r.model for r in plan.refusals}
        assert set(wanted) <= handled
        assert all(r.reason and r.tenant_reason for r in plan.refusals)
        cluster.apply(plan, now)
        if t % 900 >= 300:  # warmed up since the last flip
            steps += 1
            hot_resident += sum(1 for i in order[:3] if cluster.copies(models[i].name))
    assert hot_resident >= 0.95 * 3 * steps

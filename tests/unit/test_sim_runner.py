"""The simulator runs the production cores on simulated instances: deterministic, counting
every request's outcome, and showing what memory pressure does under each policy."""

from __future__ import annotations

import admission.scheduler
import placement.planner
import profiler.predictor
from sim.engine import Engine
from sim.instances import ArtifactCache, SimInstance
from sim.runner import Simulation, run
from tests.unit.sim_fixtures import MB, FixedWorkload, Model, profile, uniform_poisson

GB = 1_000_000_000


def _accounted(r) -> bool:  # noqa: ANN001
    return r.arrivals == r.ok + r.late + r.dropped + sum(r.refused.values())


def test_the_runner_drives_the_very_classes_production_imports() -> None:
    sim = Simulation(uniform_poisson(3, 1.0, 10, seed=1), instances=1, instance_memory=GB)
    assert type(sim.scheduler) is admission.scheduler.Scheduler
    assert type(sim.planner) is placement.planner.Planner
    assert type(sim.predictor) is profiler.predictor.LatencyPredictor
    assert sim.planner.config.victim_order == "cost"
    assert Simulation(uniform_poisson(3, 1.0, 10, seed=1), instances=1, instance_memory=GB,
                      policy="static").planner.config.victim_order == "none"


def test_the_same_seed_gives_the_same_result_and_another_seed_another() -> None:
    def once(seed: int) -> dict:
        w = uniform_poisson(30, 20.0, 150, seed=seed)
        return run(w, instances=2, instance_memory=GB, policy="inferplex", seed=seed).outcome()

    a, b = once(3), once(3)
    assert a == b
    assert a["arrivals"] > 2000 and a["loads"] > 10
    assert once(4) != a


def test_scarce_memory_shows_cold_starts_and_evictions_and_static_never_evicts() -> None:
    # 30 models of 100 MB on two instances of 1 GB: 20 fit at once
    results = {p: run(uniform_poisson(30, 30.0, 150, seed=2, load_cold_s=0.05), instances=2,
                      instance_memory=GB, policy=p, seed=2) for p in ("inferplex", "lru", "static")}
    for p in ("inferplex", "lru"):
        r = results[p]
        assert r.cold_starts > 20 and r.evictions.get("room", 0) > 0, p
        assert r.loads >= r.cold_starts and r.warm_loads > 0, p  # an evicted model's files stay cached
        assert _accounted(r), p
    static = results["static"]
    assert static.evictions == {} and static.loads <= 20
    assert static.refused.get("no_capacity", 0) + static.refused.get("cold_infeasible", 0) > 0
    assert _accounted(static)
    # memory held never exceeds the budget
    assert all(0.0 <= u <= 1.0 for u in results["lru"].series["mem_util"])


def test_refusals_are_counted_by_reason() -> None:
    # one model whose load (1 s) cannot meet a 100 ms SLO: its first request is refused at
    # once for the load, the ones after the load runs are admitted
    m = Model("t__slow_load", "t", profile("slow", load_cold_s=1.0), 0.1)
    w = FixedWorkload([m], 5.0, [(0.0, 0), (0.5, 0), (2.0, 0), (2.1, 0)])
    r = run(w, instances=1, instance_memory=GB)
    assert r.refused == {"cold_infeasible": 2}
    assert r.ok == 2 and r.slo_admitted == 1.0 and r.slo_all == 0.5
    assert r.cold_starts == 1 and r.series["refused_cold_infeasible"][0] == 2


def test_a_cold_request_is_refused_before_its_load_only_when_a_typical_load_makes_it_late() -> None:
    # as PlacementService: the load and a batch of one at their median. With noise cv 0.3 a
    # 60 ms load's p99 is about 114 ms, past the 100 ms SLO; its median (57 ms) is not
    fast = Model("t__fast", "t", profile("fast", load_cold_s=0.06), 0.1)
    r = run(FixedWorkload([fast], 2.0, [(0.0, 0)]), instances=1, instance_memory=GB, noise_cv=0.3)
    assert r.cold_starts == 1 and "cold_infeasible" not in r.refused and _accounted(r)
    slow = Model("t__slow", "t", profile("slow", load_cold_s=0.2), 0.1)
    r = run(FixedWorkload([slow], 2.0, [(0.0, 0)]), instances=1, instance_memory=GB, noise_cv=0.3)
    assert r.cold_starts == 1 and r.refused == {"cold_infeasible": 1}


def test_a_request_whose_deadline_cannot_be_met_is_never_served_within_slo() -> None:
    # executes in 50 ms, SLO 10 ms: admission refuses (or the scheduler drops) every one
    m = Model("t__big", "t", profile("big", exec_ms=50.0, load_cold_s=0.001, load_warm_s=0.001), 0.01)
    w = FixedWorkload([m], 10.0, [(0.1 * i, 0) for i in range(1, 60)])
    r = run(w, instances=1, instance_memory=GB)
    assert r.ok == 0 and r.goodput == 0.0
    assert r.refused.get("infeasible", 0) + r.refused.get("cold_infeasible", 0) + r.dropped + r.late == 59
    assert r.late == 0  # nothing runs that admission knew would be late


def test_a_load_occupies_the_instance_and_delays_executions_behind_it() -> None:
    inst = SimInstance("i", "gpu", GB, ArtifactCache(4 * GB))
    ready, warm = inst.start_load("a", 100 * MB, 0.0, 0.5, 0.1, 1.0, 0.5)
    assert (ready, warm) == (0.5, False)
    start, end = inst.execute(0.1, 0.01)
    assert (start, end) == (0.5, 0.51)
    inst.finish_load("a", 0.5)
    inst.unload("a")
    ready, warm = inst.start_load("a", 100 * MB, 1.0, 0.5, 0.1, 1.0, 1.1)
    assert warm and abs(ready - 1.1) < 1e-9  # the cache kept its files: a warm load


def test_the_artifact_cache_drops_the_least_recently_used_past_its_budget() -> None:
    c = ArtifactCache(250)
    for name in ("a", "b"):
        c.touch(name, 100)
    c.touch("a", 100)  # used again
    c.touch("c", 100)
    assert "a" in c and "c" in c and "b" not in c


def test_events_run_in_time_order_and_ties_in_the_order_scheduled() -> None:
    e = Engine()
    seen: list[tuple[float, str]] = []
    for t, name in ((2.0, "late"), (1.0, "first"), (1.0, "second"), (0.5, "earliest")):
        e.at(t, lambda n: seen.append((e.now, n)), name)
    e.run_until(1.5)
    assert seen == [(0.5, "earliest"), (1.0, "first"), (1.0, "second")] and e.now == 1.5
    e.run_until(3.0)
    assert seen[-1] == (2.0, "late") and e.events == 4


def test_the_evict_margin_reaches_the_planner_and_none_makes_optional_loads_take_only_free_room() -> None:
    from sim.runner import Simulation
    w = uniform_poisson(30, 30.0, 150, seed=2, load_cold_s=0.05)
    assert Simulation(w, instances=2, instance_memory=GB, evict_margin=None).planner.config.evict_margin is None
    assert Simulation(w, instances=2, instance_memory=GB).planner.config.evict_margin == 2.0
    # lru ignores it (no optional work)
    assert Simulation(w, instances=2, instance_memory=GB, policy="lru", evict_margin=None).planner.config.victim_order == "lru"
    loose = run(uniform_poisson(30, 30.0, 150, seed=2, load_cold_s=0.05), instances=2, instance_memory=GB, seed=2)
    free_only = run(uniform_poisson(30, 30.0, 150, seed=2, load_cold_s=0.05), instances=2, instance_memory=GB,
                    seed=2, evict_margin=None)
    assert _accounted(loose) and _accounted(free_only)
    # waiting requests still evict; only optional loads stop doing so
    assert free_only.evictions.get("room", 0) > 0 and free_only.loads <= loose.loads

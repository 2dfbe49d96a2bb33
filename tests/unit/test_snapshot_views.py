"""Snapshots built from kept instance views (``SnapshotViews``) and per-model demand
(``DemandTracker.view``) must be the snapshots built afresh, and plan the same: the simulator
uses them at 10,000 models, where rebuilding every view on every cold start was its cost."""

from __future__ import annotations

import random

from placement.cluster import PlannerConfig
from placement.cluster_view import Activity, InstanceState, Pending, SnapshotViews, cluster_snapshot
from placement.planner import Planner
from tests.unit.planner_fixtures import spec

MB = 1_000_000


def test_kept_views_and_lazy_demand_equal_a_fresh_snapshot_and_plan_the_same() -> None:
    rng = random.Random(5)
    names = [f"t{i % 3}__m{i}" for i in range(40)]
    specs = {n: spec(n, mem_mb=rng.choice((100, 300, 700)), cold_s=rng.uniform(0.1, 2.0)) for n in names}
    activity = Activity()
    views = SnapshotViews(activity)
    states = {f"w{i}": InstanceState(f"w{i}", "cpu", 2_000 * MB, True, None, {}, {}) for i in range(4)}
    now = 0.0
    rebuilt_before = 0
    for step in range(300):
        now += rng.expovariate(5.0)
        op = rng.random()
        if op < 0.5:
            m = rng.choice(names)
            activity.begin(m, now)
            if rng.random() < 0.7:
                activity.end(m, now + 0.01)
        elif op < 0.8:  # a load, a ready copy or an unload: the instance's state is a new object
            iid = rng.choice(list(states))
            st = states[iid]
            resident, pending = dict(st.resident), dict(st.pending)
            if pending and rng.random() < 0.5:
                m, p = next(iter(pending.items()))
                del pending[m]
                resident[m] = (p.bytes, now)
            elif resident and rng.random() < 0.4:
                del resident[rng.choice(list(resident))]
            else:
                m = rng.choice([n for n in names if n not in resident and n not in pending] or names)
                pending[m] = Pending(specs[m].costs["cpu"].memory_bytes, now, now + 0.5)
            states[iid] = InstanceState(iid, "cpu", st.budget_bytes, True, None, resident, pending)
        wanted = (rng.choice(names),)
        fresh = cluster_snapshot(now, states.values(), specs, activity, {}, wanted, wall_now=now)
        kept = cluster_snapshot(now, states.values(), specs, activity, {}, wanted, wall_now=now, views=views)
        assert kept.instances == fresh.instances, f"step {step}"
        assert dict(kept.demand) == dict(fresh.demand)
        assert kept.demand.get(wanted[0]) == fresh.demand.get(wanted[0])
        for policy in ("cost", "lru"):
            cfg = PlannerConfig.policy(policy)
            assert Planner(cfg).place(kept) == Planner(cfg).place(fresh)
            assert Planner(cfg).plan(kept) == Planner(cfg).plan(fresh)
        if step == 299:
            rebuilt_before = views.rebuilt
    # views are kept: far fewer rebuilt than 4 per snapshot
    assert rebuilt_before < 4 * 300 * 0.8
    # an unchanged cluster with no activity rebuilds nothing
    n = views.rebuilt
    cluster_snapshot(now, states.values(), specs, activity, {}, (), wall_now=now, views=views)
    cluster_snapshot(now + 1, states.values(), specs, activity, {}, (), wall_now=now + 1, views=views)
    assert views.rebuilt == n

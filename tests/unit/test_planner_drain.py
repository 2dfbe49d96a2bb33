"""Draining an instance (the operator takes it out of service): the planner loads nothing new
there and moves its copies off, a copy with demand only once another copy is ready."""

from __future__ import annotations

from dataclasses import replace

from placement.cluster import Load, LoadState, Unload
from placement.planner import Planner
from tests.unit.planner_fixtures import SimCluster, inst, rate, res, snapshot, spec


def draining(view):  # noqa: ANN001, ANN201 - a fixture helper
    return replace(view, draining=True)


def test_a_cold_model_is_never_loaded_on_a_draining_instance_even_with_more_room() -> None:
    m = spec("acme__a")
    snap = snapshot(0.0, [draining(inst("w1", 10_000)), inst("w2", 150)], [m], wanted=("acme__a",))
    plan = Planner().place(snap)
    assert [(a.model, a.instance_id) for a in plan.actions if isinstance(a, Load)] == [("acme__a", "w2")]


def test_only_draining_instances_means_a_refusal_not_a_load_there() -> None:
    m = spec("acme__a")
    plan = Planner().place(snapshot(0.0, [draining(inst("w1", 10_000))], [m], wanted=("acme__a",)))
    assert not plan.actions
    assert len(plan.refusals) == 1


def test_a_copy_with_demand_moves_make_before_break() -> None:
    m = spec("acme__a", cold_s=1.0)
    cluster = SimCluster([draining(inst("w1", 1000, res("acme__a"))), inst("w2", 1000)])
    planner = Planner()
    demand = {"acme__a": rate(5.0)}
    first = planner.plan(snapshot(0.0, cluster.views(), [m], demand))
    # loaded on w2 first; the draining copy stays while the new one loads
    assert [(type(a), a.instance_id) for a in first.actions] == [(Load, "w2")]
    assert "w1 is draining" in first.actions[0].reason
    cluster.apply(first, 0.0)
    cluster.advance(0.5)
    mid = planner.plan(snapshot(0.5, cluster.views(), [m], demand))
    assert not [a for a in mid.actions if isinstance(a, Unload)]
    cluster.advance(2.0)
    later = planner.plan(snapshot(2.0, cluster.views(), [m], demand))
    assert [(type(a), a.instance_id) for a in later.actions] == [(Unload, "w1")]
    assert "draining" in later.actions[0].reason


def test_an_idle_copy_without_demand_goes_at_once_and_a_busy_one_waits() -> None:
    idle, busy = spec("acme__idle"), spec("acme__busy")
    w1 = draining(inst("w1", 1000, res("acme__idle"), res("acme__busy", in_flight=2)))
    plan = Planner().plan(snapshot(0.0, [w1, inst("w2", 1000)], [idle, busy]))
    assert [(type(a), a.model) for a in plan.actions] == [(Unload, "acme__idle")]


def test_a_copy_ready_elsewhere_lets_the_draining_one_go_and_shrink_picks_the_draining_copy() -> None:
    m = spec("acme__a")
    w1 = draining(inst("w1", 1000, res("acme__a")))
    w2 = inst("w2", 1000, res("acme__a"))
    plan = Planner().plan(snapshot(0.0, [w1, w2], [m], {"acme__a": rate(50.0)}))
    unloads = [a for a in plan.actions if isinstance(a, Unload)]
    assert [(a.model, a.instance_id) for a in unloads] == [("acme__a", "w1")]
    assert not [a for a in plan.actions if isinstance(a, Load) and a.instance_id == "w1"]


def test_a_loading_copy_on_a_draining_instance_is_left_to_finish() -> None:
    m = spec("acme__a")
    w1 = draining(inst("w1", 1000, res("acme__a", state=LoadState.LOADING, ready_at=1.0, since=0.0)))
    plan = Planner().plan(snapshot(0.0, [w1, inst("w2", 1000)], [m], {"acme__a": rate(1.0)}))
    assert not [a for a in plan.actions if isinstance(a, Unload)]

"""The placement planner core (issue 12): where a cold model goes, who is evicted and why,
tenants' memory shares, refusals. Virtual clock throughout."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from placement.cluster import LoadFailure, LoadState, TenantShare
from placement.planner import Planner, PlannerConfig
from tests.support.imports import imported_modules
from tests.unit.planner_fixtures import MB, inst, rate, res, snapshot, spec

NOW = 1000.0


def plan_for(*args, **kwargs):
    return Planner().plan(snapshot(NOW, *args, **kwargs))


# ---- where a cold model goes ---------------------------------------------------------------


def test_cold_model_goes_to_the_least_utilised_instance_with_room() -> None:
    hot = spec("acme__hot", exec_s={1: 0.01})
    m = spec("globex__bert", 180)
    snap_instances = [inst("w-1", 1000, res("acme__hot")), inst("w-2", 1000), inst("w-3", 200, res("acme__x", 100))]
    plan = plan_for(snap_instances, [hot, m], {"acme__hot": rate(50)}, wanted=("globex__bert",))
    assert [(a.model, a.instance_id) for a in plan.actions] == [("globex__bert", "w-2")]
    assert plan.loads[0].ready_at == NOW + 1.0 and not plan.refusals


def test_cold_model_only_on_a_class_it_has_a_profile_for_and_a_server_for_its_platform() -> None:
    m = spec("globex__bert", classes=("gpu",), platform="onnx")
    instances = [inst("w-1", cls="cpu"), inst("w-2", cls="gpu", platforms=frozenset({"torchscript"})),
                 inst("w-3", cls="gpu", platforms=frozenset({"onnx"}))]
    plan = plan_for(instances, [m], wanted=("globex__bert",))
    assert [a.instance_id for a in plan.loads] == ["w-3"]


def test_a_model_already_loading_is_not_loaded_again() -> None:
    m = spec("globex__bert")
    plan = plan_for([inst("w-1", 1000, res("globex__bert", state=LoadState.LOADING)), inst("w-2")],
                    [m], {"globex__bert": rate(10, 30)}, wanted=("globex__bert",))
    assert plan.actions == ()


def test_warm_load_is_used_where_the_instance_caches_the_model() -> None:
    m = spec("globex__bert", cold_s=5.0, warm_s=0.5)
    plan = plan_for([inst("w-1"), inst("w-2", cached=frozenset({"globex__bert"}))], [m],
                    wanted=("globex__bert",))
    (load,) = plan.loads
    assert load.instance_id == "w-2" and load.warm and load.ready_at == NOW + 0.5


# ---- victims by cost -----------------------------------------------------------------------


def test_victim_is_the_lowest_rate_times_reload_time_per_byte() -> None:
    # hot and fast to reload; rarely used but slow to reload; rarely used and fast: the last goes
    models = [spec("acme__hot", 100, 0.5), spec("acme__slow", 100, 20.0), spec("acme__rare", 100, 0.5),
              spec("globex__bert", 180)]
    demand = {"acme__hot": rate(20), "acme__slow": rate(0.1), "acme__rare": rate(0.1)}
    w1 = inst("w-1", 400, res("acme__hot"), res("acme__slow"), res("acme__rare"))
    plan = plan_for([w1], models, demand, wanted=("globex__bert",))
    evicted = [a.model for a in plan.unloads]
    assert evicted[0] == "acme__rare" and "acme__hot" not in evicted
    assert [a.model for a in plan.loads] == ["globex__bert"]
    assert plan.actions.index(plan.unloads[-1]) < plan.actions.index(plan.loads[0])
    assert re.fullmatch(r"evicted acme/rare from w-1: lowest cost [0-9.]+ ms/MB·s; needed 180 MB for "
                        r"globex/bert", plan.unloads[0].reason)


def test_a_big_rarely_used_model_goes_before_a_small_hot_one() -> None:
    models = [spec("acme__small", 50, 1.0), spec("acme__big", 300, 1.0), spec("globex__bert", 100)]
    w1 = inst("w-1", 400, res("acme__small", 50), res("acme__big", 300))
    demand = {"acme__small": rate(5), "acme__big": rate(0.5), "globex__bert": rate(1)}
    plan = plan_for([w1], models, demand, wanted=("globex__bert",))
    assert [a.model for a in plan.unloads] == ["acme__big"]


def test_equal_cost_goes_by_last_use_oldest_first() -> None:
    models = [spec("acme__a"), spec("acme__b"), spec("globex__bert")]
    w1 = inst("w-1", 200, res("acme__a", last_used=900.0), res("acme__b", last_used=100.0))
    plan = plan_for([w1], models, wanted=("globex__bert",))
    assert [a.model for a in plan.unloads] == ["acme__b"]


def test_eviction_prefers_the_instance_where_room_costs_least() -> None:
    models = [spec("acme__hot"), spec("acme__idle"), spec("globex__bert")]
    w1, w2 = inst("w-1", 100, res("acme__hot")), inst("w-2", 100, res("acme__idle"))
    plan = plan_for([w1, w2], models, {"acme__hot": rate(10)}, wanted=("globex__bert",))
    assert [(a.model, a.instance_id) for a in plan.actions] == [("acme__idle", "w-2"), ("globex__bert", "w-2")]


def test_never_evicts_a_copy_with_work_in_flight_or_feasible_queued_work() -> None:
    models = [spec("acme__a"), spec("acme__b"), spec("acme__c"), spec("globex__bert")]
    w1 = inst("w-1", 300, res("acme__a", in_flight=1), res("acme__b", queued=3, queued_feasible=True),
              res("acme__c", state=LoadState.LOADING))
    plan = plan_for([w1], models, wanted=("globex__bert",))
    assert plan.actions == ()
    (refusal,) = plan.refusals
    assert refusal.model == "globex__bert"
    assert "busy" in refusal.reason and "retry" in refusal.reason
    assert "w-1" not in refusal.tenant_reason and "acme" not in refusal.tenant_reason


def test_a_copy_whose_queued_work_can_no_longer_meet_its_deadline_may_go() -> None:
    models = [spec("acme__a"), spec("globex__bert")]
    w1 = inst("w-1", 100, res("acme__a", queued=2, queued_feasible=False))
    plan = plan_for([w1], models, {"acme__a": rate(5), "globex__bert": rate(5)}, wanted=("globex__bert",))
    assert [a.model for a in plan.unloads] == ["acme__a"] and not plan.refusals


def test_unknown_resident_models_are_evicted_first() -> None:
    models = [spec("acme__a"), spec("globex__bert")]
    w1 = inst("w-1", 200, res("acme__a"), res("gone__old"))
    # requests still arrive for the deleted one, but it cannot come back: it costs nothing
    plan = plan_for([w1], models, {"acme__a": rate(1), "gone__old": rate(1)}, wanted=("globex__bert",))
    assert [a.model for a in plan.unloads] == ["gone__old"]


GUARDED = PlannerConfig(wanted_evict_ratio=1.0)


def test_with_the_guard_one_waiting_request_does_not_push_out_a_model_in_heavier_use() -> None:
    models = [spec("acme__hot"), spec("globex__bert")]
    w1 = inst("w-1", 100, res("acme__hot"))
    guarded = Planner(GUARDED)
    plan = guarded.plan(snapshot(NOW, [w1], models, {"acme__hot": rate(5), "globex__bert": rate(0.0, 0.1)},
                                 ("globex__bert",)))
    assert plan.actions == ()
    (r,) = plan.refusals
    assert "heavier use" in r.reason and "heavier use" in r.tenant_reason and "acme" not in r.tenant_reason
    # as its requests keep coming, its demand grows and it is let in
    plan = guarded.plan(snapshot(NOW, [w1], models, {"acme__hot": rate(5), "globex__bert": rate(3, 6)},
                                 ("globex__bert",)))
    assert [a.model for a in plan.actions] == ["acme__hot", "globex__bert"]


def test_the_heavier_use_guard_is_lifted_for_a_tenant_within_its_share_and_is_off_by_default() -> None:
    models = [spec("acme__hot"), spec("globex__bert")]
    w1 = inst("w-1", 100, res("acme__hot"))
    demand = {"acme__hot": rate(5), "globex__bert": rate(0.0, 0.1)}
    plan = Planner(GUARDED).plan(snapshot(NOW, [w1], models, demand, ("globex__bert",),
                                          {"globex": TenantShare(bytes=100 * MB)}))
    assert [a.model for a in plan.actions] == ["acme__hot", "globex__bert"]
    plan = Planner().plan(
        snapshot(NOW, [w1], models, demand, ("globex__bert",)))
    assert [a.model for a in plan.actions] == ["acme__hot", "globex__bert"]


# ---- tenants' memory shares ----------------------------------------------------------------


def test_an_over_share_tenant_cannot_evict_an_under_share_one() -> None:
    models = [spec("acme__a", 100), spec("globex__b1", 100), spec("globex__b2", 100), spec("globex__new")]
    # acme (share 50%) uses 100 of 400 MB; globex (share 50%) uses 200 and wants 100 more
    w1 = inst("w-1", 400, res("acme__a"), res("globex__b1", in_flight=1), res("globex__b2", in_flight=1))
    shares = {"acme": TenantShare(fraction=0.5), "globex": TenantShare(fraction=0.5)}
    plan = plan_for([w1], models, wanted=("globex__new",), shares=shares)
    # 100 MB free: fits without eviction
    assert [a.model for a in plan.loads] == ["globex__new"] and not plan.unloads
    w1 = inst("w-1", 300, res("acme__a"), res("globex__b1", in_flight=1), res("globex__b2", in_flight=1))
    plan = plan_for([w1], models, wanted=("globex__new",), shares=shares)
    assert plan.actions == ()
    (refusal,) = plan.refusals
    assert "memory share" in refusal.reason
    assert "memory share" in refusal.tenant_reason and "acme" not in refusal.tenant_reason


def test_an_under_share_tenant_may_evict_an_over_share_one() -> None:
    models = [spec("acme__new"), spec("globex__b1"), spec("globex__b2")]
    w1 = inst("w-1", 200, res("globex__b1"), res("globex__b2"))
    shares = {"acme": TenantShare(bytes=100 * MB), "globex": TenantShare(bytes=100 * MB)}
    plan = plan_for([w1], models, {"globex__b1": rate(1)}, wanted=("acme__new",), shares=shares)
    assert [a.model for a in plan.unloads] == ["globex__b2"]
    assert [a.model for a in plan.loads] == ["acme__new"]


def test_a_tenant_within_its_share_keeps_its_models_even_when_cheapest() -> None:
    models = [spec("acme__cheap", 100, 0.1), spec("globex__hot", 100, 10.0), spec("globex__new")]
    w1 = inst("w-1", 200, res("acme__cheap"), res("globex__hot"))
    shares = {"acme": TenantShare(fraction=0.5)}
    plan = plan_for([w1], models, {"globex__hot": rate(2), "globex__new": rate(50)}, wanted=("globex__new",),
                    shares=shares)
    assert [a.model for a in plan.unloads] == ["globex__hot"]  # its own, dearer, model goes instead


def test_a_tenant_without_a_share_is_not_protected() -> None:
    models = [spec("acme__a"), spec("globex__new")]
    w1 = inst("w-1", 100, res("acme__a"))
    plan = plan_for([w1], models, wanted=("globex__new",), shares={"globex": TenantShare(fraction=0.5)})
    assert [a.model for a in plan.unloads] == ["acme__a"]


# ---- refusals ------------------------------------------------------------------------------


def _only_refusal(instances, models, **kw):
    plan = plan_for(instances, models, wanted=(models[-1].name,), **kw)
    assert plan.actions == ()
    (r,) = plan.refusals
    assert "not implemented" not in r.reason
    for secret in ("w-1", "w-2", "__"):
        assert secret not in r.tenant_reason
    return r


def test_refusal_with_no_instances_says_to_start_workers() -> None:
    r = _only_refusal([], [spec("globex__bert")])
    assert "start workers" in r.reason


def test_refusal_when_no_instance_is_healthy() -> None:
    r = _only_refusal([inst("w-1", healthy=False)], [spec("globex__bert")])
    assert "healthy" in r.reason


def test_refusal_when_no_instance_serves_the_platform() -> None:
    r = _only_refusal([inst("w-1", platforms=frozenset({"onnx"}))], [spec("globex__bert", platform="torchscript")])
    assert "torchscript" in r.reason and "add an instance" in r.reason


def test_refusal_when_no_class_is_profiled() -> None:
    r = _only_refusal([inst("w-1", cls="cpu")], [spec("globex__bert", classes=("gpu",))])
    assert "profile" in r.reason and "cpu" in r.reason


def test_refusal_when_the_model_is_larger_than_any_budget() -> None:
    r = _only_refusal([inst("w-1", 100), inst("w-2", 150)], [spec("globex__bert", 180)])
    assert "180 MB" in r.reason and "largest 150 MB" in r.reason and "180 MB" in r.tenant_reason


def test_unknown_wanted_model_is_refused() -> None:
    plan = plan_for([inst("w-1")], [], wanted=("globex__gone",))
    assert plan.refusals and plan.refusals[0].model == "globex__gone" and plan.actions == ()


# ---- config --------------------------------------------------------------------------------


def test_config_refuses_thresholds_without_a_hysteresis_band() -> None:
    with pytest.raises(ValueError, match="remove_below"):
        PlannerConfig(add_at=0.5, remove_below=0.6)


# ---- failed loads back off -----------------------------------------------------------------


def test_load_failure_backs_off_exponentially_up_to_a_cap() -> None:
    delays = [LoadFailure.after("boom", NOW, n, base_s=1.0, cap_s=30.0).retry_at - NOW for n in range(1, 8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_model_whose_load_failed_is_not_tried_again_before_its_retry_time() -> None:
    failed = replace(spec("globex__bert"), load_failure=LoadFailure("out of memory", NOW + 8, attempts=2))
    r = _only_refusal([inst("w-1")], [failed])
    assert "out of memory" in r.reason and "attempt 3 in 8 s" in r.reason
    assert "8 s" in r.tenant_reason
    later = Planner().plan(snapshot(NOW + 8, [inst("w-1")], [failed], wanted=("globex__bert",)))
    assert [a.instance_id for a in later.loads] == ["w-1"]


def test_a_load_that_failed_on_one_instance_goes_to_another() -> None:
    failed = replace(spec("globex__bert"), load_failure=LoadFailure("crashed", NOW + 60, instance_id="w-1"))
    plan = plan_for([inst("w-1"), inst("w-2", 500)], [failed], wanted=("globex__bert",))
    assert [a.instance_id for a in plan.loads] == ["w-2"]


# ---- purity --------------------------------------------------------------------------------

CORE = ("cluster", "demand", "victims", "refusals", "planning_pass", "readiness", "planner")
ALLOWED = {"__future__", "collections", "dataclasses", "enum", "math", "typing"}


@pytest.mark.parametrize("module", CORE)
def test_planner_modules_import_nothing_impure(module: str) -> None:
    names = imported_modules("placement", module)
    ours = {n for n in names if n.startswith("placement")}
    assert {n.split(".")[0] for n in names - ours} <= ALLOWED, names
    assert ours <= {f"placement.{m}" for m in CORE}, ours


def test_place_for_a_request_a_cold_load_cannot_serve_in_time_evicts_only_cheaper_copies() -> None:
    models = [spec("acme__hot"), spec("globex__bert")]
    w1 = inst("w-1", 100, res("acme__hot"))
    snap = snapshot(NOW, [w1], models, {"acme__hot": rate(5), "globex__bert": rate(0.0, 0.1)}, ("globex__bert",))
    planner = Planner()
    guarded = planner.place(snap, guarded=True)
    assert guarded.actions == () and "heavier use" in guarded.refusals[0].reason
    # a request the cold load still serves in time is worth the eviction
    assert [a.model for a in planner.place(snap).actions] == ["acme__hot", "globex__bert"]
    # the baselines never guard
    lru = Planner(PlannerConfig.policy("lru")).place(snap, guarded=True)
    assert [a.model for a in lru.actions] == ["acme__hot", "globex__bert"]


def test_a_cold_request_does_not_swap_models_of_about_the_same_worth() -> None:
    """Guarded, with ``evict_margin`` set (2), a newcomer must be that many times denser than
    what it evicts: two models that do not fit together would otherwise trade places on each
    other's cold requests, a load each time. With 16 it must be 16 times denser; with
    no margin (None) a guarded load takes only free memory; an unguarded one still evicts."""
    models = [spec("acme__a"), spec("globex__b")]
    w1 = inst("w-1", 100, res("acme__a"))
    swap = ["acme__a", "globex__b"]
    for b_rate, evicts in ((1.5, False), (2.5, True), (50.0, True)):
        snap = snapshot(NOW, [w1], models, {"acme__a": rate(1), "globex__b": rate(b_rate)}, ("globex__b",))
        plan = Planner(PlannerConfig(evict_margin=2.0)).place(snap, guarded=True)
        assert ([a.model for a in plan.actions] == swap) is evicts, (b_rate, plan)
        assert ([a.model for a in Planner().place(snap, guarded=True).actions] == swap) is evicts  # default 2
        sixteen = Planner(PlannerConfig(evict_margin=16.0)).place(snap, guarded=True)
        assert ([a.model for a in sixteen.actions] == swap) is (b_rate > 16), (b_rate, sixteen)
        free_only = Planner(PlannerConfig(evict_margin=None)).place(snap, guarded=True)
        assert free_only.actions == () and len(free_only.refusals) == 1, (b_rate, free_only)
        assert [a.model for a in Planner().place(snap).actions] == swap
    # free memory is still taken
    roomy = snapshot(NOW, [inst("w-1", 200, res("acme__a"))], models,
                     {"acme__a": rate(1), "globex__b": rate(0.01)}, ("globex__b",))
    assert [a.model for a in Planner(PlannerConfig(evict_margin=None)).place(roomy, guarded=True).actions] \
        == ["globex__b"]


def test_after_a_popularity_shift_the_falling_model_is_the_one_evicted() -> None:
    models = [spec("acme__old"), spec("acme__steady"), spec("acme__new")]
    w1 = inst("w-1", 200, res("acme__old"), res("acme__steady"))
    # old was the hottest over the long horizon, but its recent rate collapsed
    demand = {"acme__old": rate(5, 0.1), "acme__steady": rate(1, 1), "acme__new": rate(0.5, 3)}
    plan = Planner().place(snapshot(NOW, [w1], models, demand, ("acme__new",)))
    assert [(type(a).__name__, a.model) for a in plan.actions] == [("Unload", "acme__old"), ("Load", "acme__new")]


def test_with_equal_eviction_cost_the_instance_that_caches_the_model_wins() -> None:
    m = spec("acme__m", 100, cold_s=1.0, warm_s=0.1)
    full = [res("acme__x", 100, last_used=0.0)]
    snap = snapshot(10.0, [inst("w1", 150, *full), inst("w2", 150, res("acme__y", 100, last_used=0.0),
                                                      cached=frozenset({"acme__m"}))],
                    [m, spec("acme__x", 100), spec("acme__y", 100)], wanted=("acme__m",))
    (load,) = Planner().place(snap).loads
    assert load.instance_id == "w2" and load.warm and "(cached there)" in load.reason


def test_a_load_that_evicts_keeps_its_own_reason() -> None:
    m = spec("acme__m", 100)
    snap = snapshot(10.0, [inst("w1", 150, res("acme__x", 100))], [m, spec("acme__x", 100)], wanted=("acme__m",))
    plan = Planner().place(snap)
    (load,) = plan.loads
    assert load.reason.startswith("loaded acme/m on w1: requests wait for it; ready in")
    (unload,) = plan.unloads
    assert unload.reason.startswith("evicted acme/x from w1: lowest cost")

"""The scheduler core on a virtual clock: EDF, batch choice, drops, deadlines, refusals.

The fake predictor's execute time is 2 ms + 1 ms per row at work 100 (3 ms alone),
growing with ``work``, a sequence dimension.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from admission.instance_queue import Commitments
from admission.model import Dispatch, Drop, InstanceSlot, TenantPolicy
from kserve.errors import InvalidArgument
from tests.unit.test_admission_fakes import MS, SequencePredictor, make, req


def dispatches(decisions: list) -> list[Dispatch]:
    return [d for d in decisions if isinstance(d, Dispatch)]


def test_earliest_deadline_runs_first_across_the_models_an_instance_holds() -> None:
    s = make({"a": 0, "b": 0})
    for rid, model, deadline in (("late", "a", 0.040), ("first", "b", 0.010), ("mid", "a", 0.020)):
        assert s.admit(req(rid, model=model, deadline=deadline), 0.0) is None
    order = []
    now = 0.0
    for _ in range(3):
        (d,) = dispatches(s.schedule(now))
        order.append(d.request_ids)
        now += d.predicted_s
        s.complete(d.batch_id, now, d.predicted_s)
    assert order == [("first",), ("mid",), ("late",)]


def test_one_slot_gets_one_execution_and_the_next_waits_for_complete() -> None:
    s = make({"m": 0})
    for i in range(3):
        s.admit(req(f"r{i}", deadline=0.1), 0.0)
    (d,) = dispatches(s.schedule(0.0))
    assert d.rows == 1 and d.request_ids == ("r0",)
    assert s.schedule(0.001) == []
    s.complete(d.batch_id, 0.003, 0.003)
    assert dispatches(s.schedule(0.003))[0].request_ids == ("r1",)


def test_capacity_two_keeps_two_in_flight_and_chains_their_predicted_times() -> None:
    s = make({"m": 0}, capacity=2)
    for i in range(3):
        s.admit(req(f"r{i}", deadline=0.1), 0.0)
    d1, d2 = dispatches(s.schedule(0.0))
    assert (d1.request_ids, d2.request_ids) == (("r0",), ("r1",))
    # the third now waits for both: 6 ms ahead + 3 ms of its own must fit a 8 ms deadline
    refusal = s.admit(req("tight", deadline=0.008), 0.0)
    assert refusal is not None and refusal.reason == "infeasible"


def test_batch_is_the_largest_that_still_meets_its_earliest_deadline() -> None:
    s = make({"m": 8})
    # due at 8.5 ms: a batch of n rows takes 2 + n ms, so 6 fit and 7 would not
    assert s.admit(req("urgent", deadline=0.0085), 0.0) is None
    for i in range(9):
        assert s.admit(req(f"r{i}", deadline=0.2), 0.0) is None
    (d,) = dispatches(s.schedule(0.0))
    assert d.request_ids == ("urgent", "r0", "r1", "r2", "r3", "r4")
    assert d.rows == 6 and d.predicted_s == pytest.approx(8 * MS)
    s.complete(d.batch_id, 0.008, 0.008)
    (d,) = dispatches(s.schedule(0.008))
    assert d.rows == 4  # the rest: never more than max_batch_size, here fewer are left


def test_batches_never_exceed_max_batch_size_and_count_rows() -> None:
    s = make({"m": 8})
    for i in range(5):
        s.admit(req(f"r{i}", rows=3, deadline=0.5), 0.0)
    (d,) = dispatches(s.schedule(0.0))
    assert d.rows == 6 and len(d.request_ids) == 2
    with pytest.raises(InvalidArgument, match="at most 8 rows"):
        s.admit(req("big", rows=9), 0.0)


def test_requests_with_different_merge_keys_are_never_merged() -> None:
    s = make({"m": 8}, capacity=2)
    s.admit(req("a1", key=("shape", 4)), 0.0)
    s.admit(req("b1", key=("shape", 5)), 0.0)
    s.admit(req("a2", key=("shape", 4)), 0.0)
    batches = sorted(d.request_ids for d in dispatches(s.schedule(0.0)))
    assert batches == [("a1", "a2"), ("b1",)]


def test_non_batching_models_run_one_request_at_a_time() -> None:
    s = make({"m": 0}, capacity=3)
    for i in range(3):
        s.admit(req(f"r{i}", deadline=0.5), 0.0)
    ds = dispatches(s.schedule(0.0))
    assert [d.request_ids for d in ds] == [("r0",), ("r1",), ("r2",)]
    assert all(d.rows == 1 for d in ds)


def test_a_request_that_can_no_longer_make_it_is_dropped_saying_by_how_much() -> None:
    s = make({"m": 0})
    assert s.admit(req("long", deadline=0.1, work=1000), 0.0) is None  # runs 12 ms
    (d,) = dispatches(s.schedule(0.0))
    assert s.admit(req("short", deadline=0.020), 0.0) is None  # 12 + 3 <= 20 ms
    assert s.next_expiry_s() == pytest.approx(0.017)  # latest start: 20 - 3 ms
    assert s.schedule(0.017) == []
    (drop,) = s.schedule(0.0195)  # the long one overran its prediction
    assert isinstance(drop, Drop) and drop.request_id == "short"
    assert drop.late_by_s == pytest.approx(0.0025)
    assert "would have missed its deadline by 3 ms" in drop.message and "'m'" in drop.message
    assert drop.error().http_status == 504
    s.complete(d.batch_id, 0.02, 0.02)
    assert s.schedule(0.02) == [] and s.queued() == 0
    assert s.decisions()[("t", "m", "dropped")] == 1


def test_a_newcomer_that_would_make_an_admitted_request_late_is_refused_saying_so() -> None:
    s = make({"m": 0}, capacity=2)
    assert s.admit(req("r", deadline=0.014), 0.0) is None  # alone: 3 ms
    # due sooner, so it would run first: 12 ms, and r would end at 15 ms, past its 14
    refusal = s.admit(req("urgent", deadline=0.013, work=1000), 0.0)
    assert refusal is not None and refusal.reason == "infeasible"
    assert refusal.message == ("cannot meet the 13 ms SLO of model 'm' without delaying requests "
                               "admitted before it past theirs: the instance time it needs is "
                               "committed for the next 15 ms")
    assert refusal.retry_after_s == pytest.approx(0.015)
    assert s.admit(req("fits", deadline=0.013, work=800), 0.0) is None  # 10 ms: r ends at 13
    first, second = dispatches(s.schedule(0.0))
    assert (first.request_ids, second.request_ids) == (("fits",), ("r",))


def test_queue_inserts_keep_deadline_order_whether_due_last_or_in_between() -> None:
    from admission.instance_queue import TenantLane

    lane, c = TenantLane(), Commitments()
    keys = [(0.020, 1, "a"), (0.030, 2, "b"), (0.010, 3, "c"), (0.030, 4, "d"), (0.025, 5, "e")]
    for i, key in enumerate(keys):  # due last (appended) and due earlier (inserted)
        lane.insert(key, 0.001 * (i + 1))
        c.insert(key, 0.001 * (i + 1), f"t{i}")
    assert lane.keys == c.keys == sorted(keys)
    assert lane.costs == c.costs == [0.003, 0.001, 0.005, 0.002, 0.004]
    assert c.tenants == ["t2", "t0", "t4", "t1", "t3"]
    assert lane.work_until(0.025) == pytest.approx(0.009)
    lane.remove((0.030, 2, "b"))
    c.remove((0.030, 2, "b"))
    assert lane.keys == c.keys == [(0.010, 3, "c"), (0.020, 1, "a"), (0.025, 5, "e"), (0.030, 4, "d")]
    assert lane.total == pytest.approx(0.013)


def test_a_request_already_predicted_late_is_no_promise_that_blocks_newcomers() -> None:
    c = Commitments()
    c.insert((0.010, 1, "on-time"), 0.004, "t")
    c.insert((0.012, 2, "late"), 0.010, "t")  # ends at 14 ms: late already (an overrun ahead)
    c.insert((0.030, 3, "slack"), 0.004, "t")  # ends at 18 ms
    everyone = lambda _t: True  # noqa: E731
    assert c.first_broken((0.005, 9, "new"), 0.005, 0.0, everyone) is None  # 9 <= 10, 23 <= 30
    assert c.first_broken((0.011, 9, "new"), 0.011, 0.0, everyone) is None  # "slack" ends at 29
    assert c.first_broken((0.011, 9, "new"), 0.013, 0.0, everyone) == pytest.approx(0.031)
    assert c.first_broken((0.005, 9, "new"), 0.007, 0.0, everyone) == pytest.approx(0.011)
    assert c.first_broken((0.005, 9, "new"), 0.007, 0.0, lambda t: t != "t") is None


def test_a_tenant_within_its_share_may_push_out_the_queued_work_of_one_over_it() -> None:
    s = make({"m": 8}, capacity=1)
    hog = [req(f"a{i}", tenant="a", deadline=0.05, key="k") for i in range(8)]
    for r in hog:
        assert s.admit(r, 0.0) is None
    (d,) = dispatches(s.schedule(0.0))  # a batch of 8: tenant a is charged for it
    s.complete(d.batch_id, 0.01, 0.01)
    for i in range(40):  # a keeps queueing, up to what the instance can finish in time
        s.admit(req(f"b{i}", tenant="a", at=0.01, deadline=0.04, work=400, key=("w", i)), 0.01)
    assert s.admit(req("late-a", tenant="a", at=0.01, deadline=0.01, work=400), 0.01) is not None
    # tenant b, idle until now, is within its share: its request runs first, a's are pushed
    assert s.admit(req("b", tenant="b", at=0.01, deadline=0.02, work=400), 0.01) is None
    (first,) = dispatches(s.schedule(0.01))
    assert first.request_ids == ("b",)


def test_the_core_honours_the_deadline_it_is_given_not_the_slo() -> None:
    s = make({"m": 0})
    s.admit(req("busy", deadline=0.1), 0.0)
    s.schedule(0.0)  # 3 ms in flight
    # the shell passes min(arrival + SLO, client deadline): 5 ms here, SLO 50 ms
    refusal = s.admit(req("tight", deadline=0.005, slo=0.05), 0.0)
    assert refusal is not None and refusal.reason == "infeasible"
    assert refusal.message.startswith("cannot meet the 5 ms deadline the client set of model 'm'")
    assert s.admit(req("loose", deadline=0.05, slo=0.05), 0.0) is None


def test_infeasible_refusal_gives_the_predicted_breakdown_and_when_to_retry() -> None:
    s = make({"m": 0})
    s.admit(req("ahead", deadline=0.1, work=5900), 0.0)  # 61 ms
    s.schedule(0.0)
    refusal = s.admit(req("r", deadline=0.05, work=1000, slo=0.05), 0.0)  # 12 ms
    assert refusal is not None
    assert refusal.message == ("cannot meet the 50 ms SLO of model 'm': predicted 73 ms "
                               "(queue 61 ms, execute 12 ms)")
    assert refusal.retry_after_s == pytest.approx(0.061)
    assert refusal.error().http_status == 503
    assert s.decisions()[("t", "m", "infeasible")] == 1


def test_a_model_no_instance_holds_counts_its_load_time_and_retrying_cannot_help() -> None:
    s = make({"m": 0, "cold": 0}, instances={"i1": {"m"}})
    s.set_model("acme__cold", s._models["cold"])
    refusal = s.admit(req("r", model="acme__cold", deadline=0.05), 0.0)
    assert refusal is not None
    assert refusal.message == ("cannot meet the 50 ms SLO of model 'cold': predicted 303 ms "
                               "(queue 0 ms, load 300 ms, execute 3 ms)")
    assert refusal.retry_after_s is None
    assert s.admit(req("r2", model="acme__cold", deadline=1.0), 0.0) is None


def test_a_request_that_waited_for_a_cold_load_says_so_and_may_retry_at_once() -> None:
    s = make({"m": 0})
    late = dataclasses.replace(req("r", deadline=0.1, slo=0.1), loading_s=0.111)
    refusal = s.admit(late, 0.112)  # the load took the whole SLO; the model is held now
    assert refusal is not None
    assert refusal.message == ("cannot meet the 100 ms SLO of model 'm': predicted 115 ms "
                               "(queue 1 ms, load 111 ms, execute 3 ms); the model is loaded now, "
                               "a retry does not wait for the load")
    assert refusal.retry_after_s == 0.0
    assert s.admit(req("r2", at=0.112, deadline=0.1), 0.112) is None


def test_unknown_execute_time_admits_and_predicts_with_the_default() -> None:
    p = SequencePredictor()
    p.unknown.add("m")
    s = make({"m": 0}, predictor=p, default_exec_s=0.5)
    assert s.admit(req("r1", deadline=0.01), 0.0) is None  # never refused on a guess
    (d,) = dispatches(s.schedule(0.0))
    assert d.predicted_s == 0.5


def test_quota_refusals_carry_retry_after_and_concurrency_frees_on_answer() -> None:
    s = make({"m": 0})
    s.set_policy("t", TenantPolicy(rate_per_s=2.0, burst=1, max_concurrent=1))
    assert s.admit(req("r1", deadline=1.0), 0.0) is None
    refusal = s.admit(req("r2", deadline=1.0), 0.6)
    assert refusal is not None and refusal.reason == "quota" and "concurrency quota" in refusal.message
    (d,) = dispatches(s.schedule(0.6))
    s.complete(d.batch_id, 0.61, 0.003)
    assert s.admit(req("r3", deadline=1.0), 0.7) is None
    assert s.cancel("r3")  # frees the concurrency place; the token stays spent
    refusal = s.admit(req("r4", deadline=1.0), 0.8)
    assert refusal is not None and "rate quota" in refusal.message
    assert refusal.retry_after_s == pytest.approx(0.4)
    assert refusal.error().retry_after_header() == "1"
    assert s.decisions()[("t", "m", "quota")] == 2


def test_a_queued_request_counts_what_it_adds_to_the_batch_it_will_join() -> None:
    s = make({"m": 8})
    s.admit(req("running", deadline=1.0, key="k"), 0.0)
    s.schedule(0.0)  # 3 ms in flight
    s.admit(req("first", deadline=1.0, key="k"), 0.0)  # opens the next batch: a whole 3 ms
    s.admit(req("second", deadline=1.0, key="k"), 0.0)  # joins it: 1 ms more (4 ms for two)
    probe = req("probe", deadline=2.0, key="other")
    assert s.predict(probe, 0.0).queue_s == pytest.approx(0.003 + 0.003 + 0.001)


def test_the_quota_can_be_asked_before_a_request_is_read_and_asking_takes_nothing() -> None:
    s = make({"m": 0})
    s.set_policy("t", TenantPolicy(rate_per_s=2.0, burst=1))
    assert s.quota_refusal("t", "m", "q0", 0.0) is None
    assert s.quota_refusal("t", "m", "q1", 0.0) is None  # asking twice took no token
    assert s.admit(req("r1", deadline=1.0), 0.0) is None
    early = s.quota_refusal("t", "m", "q2", 0.1)
    assert early is not None and early.reason == "quota" and "rate quota" in early.message
    assert early.retry_after_s == pytest.approx(0.4)
    assert s.quota_refusal("other", "m", "q3", 0.1) is None  # another tenant's own bucket
    assert s.quota_refusal("t", "m", "q4", 0.5) is None
    assert s.decisions()[("t", "m", "quota")] == 1


def test_a_cancelled_request_leaves_the_queue_and_a_dispatched_one_cannot_be_cancelled() -> None:
    s = make({"m": 8})
    for rid in ("a", "b", "c"):
        s.admit(req(rid, deadline=0.1), 0.0)
    assert s.cancel("b") is True and s.cancel("b") is False
    (d,) = dispatches(s.schedule(0.0))
    assert d.request_ids == ("a", "c")
    assert s.cancel("a") is False
    s.complete(d.batch_id, 0.004, 0.004)
    assert s.decisions()[("t", "m", "cancelled")] == 1
    assert s.decisions()[("t", "m", "completed")] == 2


def test_completion_past_the_deadline_is_counted_late_and_a_failure_failed() -> None:
    s = make({"m": 0}, capacity=2)
    s.admit(req("a", deadline=0.01), 0.0)
    s.admit(req("b", deadline=0.05), 0.0)
    d1, d2 = dispatches(s.schedule(0.0))
    s.complete(d1.batch_id, 0.02, 0.02)
    s.complete(d2.batch_id, 0.03, None)
    assert s.decisions()[("t", "m", "late")] == 1 and s.decisions()[("t", "m", "failed")] == 1
    with pytest.raises(ValueError, match="unknown batch"):
        s.complete(d1.batch_id, 0.03, 0.0)


def test_work_moves_to_a_new_instance_that_holds_the_model() -> None:
    s = make({"m": 0}, instances={"i1": {"other"}})
    s.set_model("other", s._models["m"])
    assert s.admit(req("r", deadline=1.0), 0.0) is None  # cold: 300 ms load + 3 ms fits
    assert s.schedule(0.0) == []
    s.set_instances([InstanceSlot("i2", "cpu", frozenset({"m"}))])
    (d,) = dispatches(s.schedule(0.3))
    assert d.instance_id == "i2" and d.request_ids == ("r",)
    assert re.fullmatch(r"b\d+", d.batch_id)


def _deferring_pair():
    """i1 runs 'first' until 3 ms; i2 is loading until 50 ms: 'r' (due at 10 ms) can only
    run in time on i1, so i2, free, leaves it there."""
    s = make({"m": 0}, instances={"i1": {"m"}, "i2": {"m"}})
    i1 = InstanceSlot("i1", "cpu", frozenset({"m"}))
    s.set_instances([i1, InstanceSlot("i2", "cpu", frozenset({"m"}), loading_until_s=0.050)])
    assert s.admit(req("first", deadline=0.1), 0.0) is None
    (d,) = dispatches(s.schedule(0.0))
    assert d.instance_id == "i1"
    assert s.admit(req("r", deadline=0.010), 0.0) is None
    assert s.schedule(0.0) == []
    return s, d


def test_a_free_instance_that_cannot_run_a_request_in_time_leaves_it_to_one_that_can() -> None:
    s, first = _deferring_pair()
    s.complete(first.batch_id, 0.003, 0.003)
    (d,) = dispatches(s.schedule(0.003))
    assert d.instance_id == "i1" and d.request_ids == ("r",)


def test_when_the_instance_it_waited_for_goes_the_request_is_dropped_at_once() -> None:
    s, _first = _deferring_pair()
    # i2 itself is unchanged; only the instance the request was left to went away
    s.set_instances([InstanceSlot("i2", "cpu", frozenset({"m"}), loading_until_s=0.050)])
    (drop,) = s.schedule(0.001)
    assert isinstance(drop, Drop) and drop.request_id == "r"
    assert drop.late_by_s == pytest.approx(0.043)

"""The reconcile leader's pure decision: what moves, what unloads, what stays."""

from __future__ import annotations

import pytest

from placement.reconcile import DesiredPlacement, plan_reconcile
from placement.service import Placed


def _p(iid: str, q: str, version: str = "1", loaded_at: float = 0.0, rev: int = 1) -> DesiredPlacement:
    return DesiredPlacement(iid, q, version, loaded_at, rev)


def _exists(*models: tuple[str, str]):
    known = set(models)
    return lambda q, v: (q, v) in known


def test_placements_on_live_instances_of_existing_models_need_nothing() -> None:
    plan = plan_reconcile([_p("w1", "a__m"), _p("w2", "b__m")], {"w1", "w2"},
                          _exists(("a__m", "1"), ("b__m", "1")), now=100.0)
    assert plan.empty


def test_model_on_vanished_instance_is_moved_and_its_key_dropped() -> None:
    stale = _p("w1", "a__m", rev=7)
    plan = plan_reconcile([stale, _p("w2", "b__m")], {"w2"},
                          _exists(("a__m", "1"), ("b__m", "1")), now=100.0)
    assert len(plan.moves) == 1
    move = plan.moves[0]
    assert (move.qualified, move.version, move.load) == ("a__m", "1", True)
    assert move.stale == (stale,)
    assert plan.unloads == ()


def test_model_still_held_by_a_live_instance_is_not_loaded_again() -> None:
    plan = plan_reconcile([_p("w1", "a__m"), _p("w2", "a__m")], {"w2"},
                          _exists(("a__m", "1")), now=100.0)
    assert [(m.qualified, m.load, [s.instance_id for s in m.stale]) for m in plan.moves] == \
        [("a__m", False, ["w1"])]


def test_deleted_model_is_unloaded_once_older_than_the_grace() -> None:
    old = _p("w1", "a__gone", loaded_at=10.0)
    plan = plan_reconcile([old], {"w1"}, _exists(), now=100.0, grace_s=10.0)
    assert plan.unloads == (old,) and plan.moves == ()


def test_fresh_placement_of_unknown_model_waits_for_the_catalog_cache() -> None:
    # another replica just uploaded and loaded it; this replica's catalog may lag the watch
    fresh = _p("w1", "a__new", loaded_at=95.0)
    plan = plan_reconcile([fresh], {"w1"}, _exists(), now=100.0, grace_s=10.0)
    assert plan.empty


def test_deleted_model_on_vanished_instance_is_just_forgotten() -> None:
    gone = _p("w1", "a__gone", loaded_at=99.0)
    plan = plan_reconcile([gone], set(), _exists(), now=100.0, grace_s=10.0)
    assert plan.unloads == (gone,) and plan.moves == ()


def test_only_the_deleted_version_is_unloaded() -> None:
    v1, v2 = _p("w1", "a__m", "1"), _p("w2", "a__m", "2")
    plan = plan_reconcile([v1, v2], {"w1", "w2"}, _exists(("a__m", "2")), now=100.0)
    assert plan.unloads == (v1,)


def test_a_placement_value_parses_only_when_complete() -> None:
    assert Placed.parse({"version": 3, "bytes": "10", "loaded_at": 1}) == Placed("3", 10, 1.0)
    for bad in ({"version": "1", "bytes": 10}, {"version": "1", "bytes": "x", "loaded_at": 1.0}, []):
        with pytest.raises((KeyError, TypeError, ValueError)):
            Placed.parse(bad)

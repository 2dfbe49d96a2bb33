"""set_instances at scale: only the models of instances that changed are re-indexed, and
every queued request still ends up where its model is."""

from __future__ import annotations

from admission.model import Dispatch, InstanceSlot
from tests.unit.test_admission_fakes import make, req


def _slots(spec: dict[str, set[str]], cls: str = "cpu") -> list[InstanceSlot]:
    return [InstanceSlot(iid, cls, frozenset(ms)) for iid, ms in spec.items()]


def _dispatched(s, now: float = 0.0) -> dict[str, str]:  # noqa: ANN001
    return {rid: d.instance_id for d in s.schedule(now) if isinstance(d, Dispatch) for rid in d.request_ids}


def test_a_queued_request_follows_its_model_to_another_instance_and_others_stay() -> None:
    s = make({"a": 0, "b": 0}, instances={"i1": {"a", "b"}, "i2": set()})
    for rid, model in (("a0", "a"), ("b0", "b"), ("a1", "a")):
        assert s.admit(req(rid, model=model, deadline=1.0), 0.0) is None
    # a moves to i2 before anything runs; b stays on i1
    s.set_instances(_slots({"i1": {"b"}, "i2": {"a"}}))
    got = _dispatched(s)
    assert got["a0"] == "i2" and got["b0"] == "i1"
    assert s.predict(req("probe", model="a", deadline=1.0), 0.0).queue_s > 0  # a1 waits on i2


def test_a_second_copy_shares_the_queue_and_a_removed_instance_takes_nothing_with_it() -> None:
    s = make({"a": 0}, instances={"i1": {"a"}})
    for i in range(3):
        assert s.admit(req(f"r{i}", model="a", deadline=1.0), 0.0) is None
    s.set_instances(_slots({"i1": {"a"}, "i2": {"a"}}))
    assert sorted(_dispatched(s).values()) == ["i1", "i2"]
    s.set_instances(_slots({"i2": {"a"}}))
    assert s.queued() == 1 and s.predict(req("p", model="a", deadline=1.0), 0.0).exec_s > 0


def test_the_same_slots_again_change_nothing_and_a_new_class_is_seen() -> None:
    s = make({"a": 0}, instances={"i1": {"a"}})
    assert s.admit(req("r0", model="a", deadline=1.0), 0.0) is None
    before = s.predict(req("p", model="a", deadline=1.0), 0.0)
    s.set_instances(_slots({"i1": {"a"}}))
    assert s.predict(req("p", model="a", deadline=1.0), 0.0) == before
    s.set_instances(_slots({"i1": {"a"}}, cls="gpu"))
    assert _dispatched(s) == {"r0": "i1"}

"""An instance busy loading a model runs nothing else until the load ends: the scheduler
core counts the load (``InstanceSlot.loading_until_s``) in what it admits and plans."""

from __future__ import annotations

from admission.model import Dispatch, InstanceSlot
from tests.unit.test_admission_fakes import make, req


def _busy_loading(s, until: float) -> None:  # noqa: ANN001
    s.set_instances([InstanceSlot("i1", "cpu", frozenset({"m"}), loading_until_s=until)])


def test_a_request_that_cannot_finish_before_a_queued_load_ends_is_refused() -> None:
    s = make({"m": 0})
    _busy_loading(s, 0.5)  # 500 ms of load queued there; a 3 ms execution waits for it
    refusal = s.admit(req("r", deadline=0.1), 0.0)
    assert refusal is not None and refusal.reason == "infeasible"
    assert s.admit(req("ok", deadline=0.6), 0.0) is None


def test_a_dispatch_behind_a_load_is_planned_to_end_after_it_and_the_load_outlives_complete() -> None:
    s = make({"m": 0})
    _busy_loading(s, 0.2)
    for i in range(2):
        assert s.admit(req(f"r{i}", deadline=1.0), 0.0) is None
    (d,) = [x for x in s.schedule(0.0) if isinstance(x, Dispatch)]
    # completed early (the fake's 3 ms): what is left still waits for the load
    s.complete(d.batch_id, 0.003, 0.003)
    assert s.predict(req("probe", deadline=1.0), 0.003).queue_s >= 0.2 - 0.003 - 1e-9


def test_a_load_that_ended_changes_nothing() -> None:
    s = make({"m": 0})
    _busy_loading(s, 0.5)
    assert s.admit(req("r", at=0.6, deadline=0.1), 0.6) is None

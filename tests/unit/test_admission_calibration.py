"""Admission learns how much later than planned batches finish, and adds it (issue 9:
>= 99.9% of admitted requests within their SLO). Virtual clock, fake predictor."""

from __future__ import annotations

import pytest

from admission.calibration import AdmissionCalibration
from admission.model import Dispatch
from tests.unit.test_admission_fakes import MS, make, req

EXEC = 3 * MS  # the fake predictor's batch-1 execute time (base 2 ms + 1 ms per row)


def run_late(s, n: int, late_s: float, start: float = 0.0) -> float:
    """``n`` requests, one at a time, each answered ``late_s`` after its plan; the clock after."""
    now = start
    for i in range(n):
        assert s.admit(req(f"r{start}-{i}", at=now, deadline=0.05), now) is None
        (d,) = [x for x in s.schedule(now) if isinstance(x, Dispatch)]
        now += d.predicted_s + late_s
        s.complete(d.batch_id, now, d.predicted_s)
    return now


def test_no_margin_while_batches_finish_as_planned() -> None:
    s = make({"m": 0})
    now = run_late(s, 100, 0.0)
    assert s.margin_s(now) == 0.0
    assert s.admit(req("edge", at=now, deadline=EXEC), now) is None  # exactly the execute time fits


def test_batches_that_finish_late_make_admission_refuse_what_would_miss_by_as_much() -> None:
    s = make({"m": 0})
    now = run_late(s, 100, 4 * MS)
    assert s.margin_s(now) == pytest.approx(4 * MS)
    # 3 ms of execute fits a 5 ms deadline by the plan, not with 4 ms of lateness
    refusal = s.admit(req("tight", at=now, deadline=5 * MS), now)
    assert refusal is not None and refusal.reason == "infeasible"
    assert "margin 4 ms for recent prediction error" in refusal.message
    assert "predicted 7 ms" in refusal.message
    assert s.admit(req("roomy", at=now, deadline=8 * MS), now) is None


def test_the_margin_is_forgotten_once_its_errors_are_old() -> None:
    # a margin that refused everything would never see a new error: it expires with time
    s = make({"m": 0})
    now = run_late(s, 100, 4 * MS)
    later = now + 11.0  # past the 10 s horizon
    assert s.margin_s(later) == 0.0
    assert s.admit(req("after", at=later, deadline=5 * MS), later) is None


def test_a_few_late_batches_do_not_move_the_margin_until_enough_are_known() -> None:
    s = make({"m": 0})
    now = run_late(s, 10, 20 * MS)  # under min_samples
    assert s.margin_s(now) == 0.0


def test_the_shells_measured_delay_adds_to_the_margin() -> None:
    s = make({"m": 0})
    s.set_external_delay(2 * MS)
    refusal = s.admit(req("x", at=0.0, deadline=4 * MS), 0.0)
    assert refusal is not None and "margin 2 ms" in refusal.message
    with pytest.raises(ValueError):
        s.set_external_delay(-1.0)


def test_calibration_percentile_over_a_window() -> None:
    c = AdmissionCalibration(window=100, percentile=99.0, min_samples=10, refresh_every=1)
    for i in range(100):
        c.observe(float(i), 0.001 * (i % 10))  # 0..9 ms, 10 of each
    assert c.margin_s(99.0) == pytest.approx(0.009)
    for i in range(100, 200):  # the window slides: only on-plan errors are left
        c.observe(float(i) * 0.01 + 99.0, -0.001)
    assert c.margin_s(101.0) == 0.0  # never negative

"""Admission learns how much later than planned batches finish, and adds it (issue 9:
>= 99.9% of admitted requests within their SLO). Virtual clock, fake predictor."""

from __future__ import annotations

import pytest

from admission.calibration import AdmissionCalibration
from admission.model import Dispatch
from tests.unit.test_admission_fakes import MS, make, req

EXEC = 3 * MS  # the fake predictor's batch-1 execute time (base 2 ms + 1 ms per row)


def run_late(s, n: int, late_s: float, start: float = 0.0, model: str = "m") -> float:
    """``n`` requests, one at a time, each answered ``late_s`` after its plan; the clock after."""
    now = start
    for i in range(n):
        assert s.admit(req(f"r{model}{start}-{i}", model=model, at=now, deadline=0.05), now) is None
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


def test_once_its_errors_are_too_few_the_margin_decays_instead_of_dropping_to_zero() -> None:
    """After an overload a margin that fell to zero at once let a burst in that overloaded the
    instance again; one that stood for the whole horizon refused nearly everything."""
    c = AdmissionCalibration(min_samples=10, refresh_every=1, horizon_s=3.0, half_life_s=1.0)
    for i in range(20):
        c.observe(i * 0.01, 0.1)  # 100 ms late, in a burst at t = 0..0.19
    assert c.margin_s(0.2) == pytest.approx(0.1)
    assert c.margin_s(3.5) == pytest.approx(0.1 * 0.5 ** 3.3)  # the burst expired: 1 s half-life from t=0.2
    assert c.margin_s(20.0) < 1e-6
    for i in range(20):  # on plan again: the percentile of the new errors, not the decayed value
        c.observe(21.0 + i * 0.01, 0.0)
    assert c.margin_s(21.3) == 0.0


def test_a_few_late_batches_do_not_move_the_margin_until_enough_are_known() -> None:
    s = make({"m": 0})
    now = run_late(s, 10, 20 * MS)  # under min_samples
    assert s.margin_s(now) == 0.0


def test_on_an_idle_instance_a_request_gets_its_own_models_margin() -> None:
    """Nothing ahead of it: only its own batch can make it late, so a small model is not
    refused for a large model's lateness; with work ahead, every model's errors count."""
    s = make({"small": 0, "big": 0})
    now = run_late(s, 100, 0.0, model="small")
    now = run_late(s, 100, 10 * MS, start=now, model="big")
    assert s.margin_s(now) == pytest.approx(10 * MS)  # over all models' batches
    # the big model's own record on an idle instance is its own lateness
    refusal = s.admit(req("big-idle", model="big", at=now, deadline=12 * MS), now)
    assert refusal is not None and "margin 10 ms" in refusal.message
    # idle: 3 ms of execute fits 4 ms by the small model's own record
    assert s.admit(req("idle", model="small", at=now, deadline=4 * MS), now) is None
    # behind it, the big model's lateness can reach this one too
    refusal = s.admit(req("behind", model="small", at=now, deadline=12 * MS), now)
    assert refusal is not None and "margin 10 ms" in refusal.message


def test_a_model_with_few_batches_of_its_own_gets_every_models_margin() -> None:
    s = make({"new": 0, "big": 0})
    now = run_late(s, 10, 0.0, model="new")  # under min_samples of its own
    now = run_late(s, 100, 10 * MS, start=now, model="big")
    refusal = s.admit(req("idle-new", model="new", at=now, deadline=4 * MS), now)
    assert refusal is not None and "margin 10 ms" in refusal.message


def test_the_shells_measured_delay_adds_to_the_margin() -> None:
    s = make({"m": 0})
    s.set_external_delay(2 * MS)
    refusal = s.admit(req("x", at=0.0, deadline=4 * MS), 0.0)
    assert refusal is not None and "margin 2 ms" in refusal.message
    with pytest.raises(ValueError):
        s.set_external_delay(-1.0)


def test_calibration_percentile_over_a_window() -> None:
    c = AdmissionCalibration(window=100, percentile=99.0, min_samples=10, refresh_every=1, horizon_s=1000.0)
    for i in range(100):
        c.observe(float(i), 0.001 * (i % 10))  # 0..9 ms, 10 of each
    assert c.margin_s(99.0) == pytest.approx(0.009)
    for i in range(100, 200):  # the window slides: only on-plan errors are left
        c.observe(float(i) * 0.01 + 99.0, -0.001)
    assert c.margin_s(101.0) == 0.0  # never negative

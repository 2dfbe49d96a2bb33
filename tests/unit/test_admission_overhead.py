"""The dispatch overhead the core adds to execute times: round trip minus compute."""

from __future__ import annotations

import pytest

from admission.overhead import DispatchOverhead, RollingPercentile


def test_overhead_is_round_trip_minus_compute_at_the_percentile_per_model() -> None:
    o = DispatchOverhead(window=100, percentile=95.0, refresh_every=1)
    for i in range(100):
        o.observe("a", 0.010 + i * 1e-5, 0.010)  # 0 .. 0.99 ms beyond the compute
    assert o.seconds("a") == pytest.approx(0.94e-3)
    o.observe("b", 0.050, 0.045)
    assert o.seconds("b") == pytest.approx(0.005)  # its own, not a's


def test_a_model_never_dispatched_gets_what_all_models_cost() -> None:
    o = DispatchOverhead(window=10, percentile=100.0)
    o.observe("a", 0.003, 0.001)
    o.observe("b", 0.004, 0.001)
    assert o.seconds("new") == pytest.approx(0.003)
    assert DispatchOverhead().seconds("new") == 0.0  # nothing seen: nothing assumed


def test_without_a_reported_compute_nothing_is_learned_and_negatives_clamp() -> None:
    o = DispatchOverhead()
    o.observe("a", 0.003, None)
    assert o.seconds("a") == 0.0
    o.observe("a", 0.001, 0.002)  # clocks disagree: never a negative overhead
    assert o.seconds("a") == 0.0


def test_the_window_forgets_old_samples() -> None:
    o = DispatchOverhead(window=4, percentile=100.0, refresh_every=1)
    o.observe("a", 0.100, 0.0)
    for _ in range(4):
        o.observe("a", 0.002, 0.0)
    assert o.seconds("a") == pytest.approx(0.002)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        DispatchOverhead(window=0)
    with pytest.raises(ValueError):
        DispatchOverhead(percentile=101)


def test_a_model_whose_own_dispatches_are_stale_gets_what_all_models_cost_now() -> None:
    """A model admission keeps refusing is never dispatched: its slow first dispatches after
    a cold load must not stand for good (and refuse it for good)."""
    now = [0.0]
    o = DispatchOverhead(window=10, percentile=50.0, refresh_every=1, stale_s=10.0, clock=lambda: now[0])
    o.observe("cold", 0.028, 0.001)  # 27 ms: its first dispatch, right after its load
    for _ in range(5):
        now[0] += 2.0
        o.observe("busy", 0.003, 0.001)
        assert o.seconds("cold") == pytest.approx(0.027)  # its own, while it is recent
    now[0] += 1.0  # 11 s since its own last dispatch
    assert o.seconds("cold") == pytest.approx(0.002)  # the median of all models': the busy one's
    o.observe("cold", 0.030, 0.001)  # dispatched again: its own numbers count again
    assert o.seconds("cold") == pytest.approx(0.027)  # the median of its 27 and 29 ms (nearest rank)


def test_rolling_percentile_reads_as_a_fresh_sort_after_every_add_and_drop() -> None:
    """Its sorted copy is kept in step with the window: after values enter, the window
    slides and a horizon drops the oldest, each re-read equals the nearest rank of a fresh
    sort of what the window holds."""
    import math
    import random

    rng = random.Random(11)
    rp = RollingPercentile(window=30, percentile=95.0, refresh_every=1)
    for i in range(2000):
        if len(rp) and rng.random() < 0.3:
            rp.drop_oldest()
            rp.refresh()
        else:
            rp.add(round(rng.gauss(0.0, 1.0), 2))  # ties, and negatives as calibration has
        held = sorted(rp.values)
        want = held[max(1, math.ceil(0.95 * len(held))) - 1] if held else 0.0
        assert rp.value == want, i
    with pytest.raises(ValueError):
        rp.add(float("nan"))

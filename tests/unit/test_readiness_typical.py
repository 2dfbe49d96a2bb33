"""placement.readiness.typical_ready: when a cold model is typically ready, for the early
refusal the control plane and the simulator both make."""

from __future__ import annotations

import pytest

from placement.readiness import ReadyAt, typical_ready, typical_ready_on
from tests.unit.planner_fixtures import inst, snapshot, spec

NOW = 100.0


class Medians:
    """A predictor that knows only medians (what typical_ready asks for)."""

    def __init__(self, load: float | None, warm: float | None = None, exec1: float | None = 0.004) -> None:
        self.load, self.warm, self.exec1 = load, warm, exec1
        self.asked: list[float | None] = []

    def load_time(self, model: str, instance_class: str, percentile: float | None = None, *,
                  warm: bool = False) -> float | None:
        self.asked.append(percentile)
        return self.warm if warm else self.load

    def exec_time(self, model: str, instance_class: str, batch: int,
                  percentile: float | None = None) -> float | None:
        self.asked.append(percentile)
        return self.exec1


def test_its_own_load_counts_at_the_median_and_the_loads_queued_before_it_at_the_plan() -> None:
    m = spec("acme__m", cold_s=0.2, warm_s=0.05, exec_s={1: 0.01})
    # the planner has it ready 0.3 s from now: 0.1 s of loads queued ahead, its own p99 0.2 s
    got = typical_ready_on(m, "cpu", False, NOW + 0.3, NOW, Medians(load=0.12))
    assert got == pytest.approx((0.3 - 0.2 + 0.12, 0.004))
    # every number it asked for was a median
    p = Medians(load=0.12, warm=0.03)
    warm = typical_ready_on(m, "cpu", True, NOW + 0.15, NOW, p)
    assert warm == pytest.approx((0.15 - 0.05 + 0.03, 0.004)) and set(p.asked) == {50.0}


def test_with_nothing_measured_it_refuses_nobody() -> None:
    m = spec("acme__m", cold_s=0.2, exec_s={1: 0.01})
    assert typical_ready_on(m, "cpu", False, NOW + 0.2, NOW, Medians(load=None)) is None
    # no profile for the class
    assert typical_ready_on(m, "gpu", False, NOW + 0.2, NOW, Medians(load=0.1)) is None
    # no median execute time yet: the profile's fastest batch
    assert typical_ready_on(m, "cpu", False, NOW + 0.2, NOW, Medians(load=0.1, exec1=None)) \
        == pytest.approx((0.1, 0.01))
    # a warm load with no warm median counts cold
    assert typical_ready_on(m, "cpu", True, NOW + 0.2, NOW, Medians(load=0.1, warm=None))[0] \
        == pytest.approx(0.2 - 0.2 + 0.1)


def test_read_from_a_snapshot_the_instance_class_and_its_cache_decide() -> None:
    m = spec("acme__m", cold_s=0.2, warm_s=0.05, exec_s={1: 0.01})
    snap = snapshot(NOW, [inst("w-1"), inst("w-2", cached=frozenset({"acme__m"}))], [m])
    p = Medians(load=0.12, warm=0.03)
    assert typical_ready(snap, "acme__m", ReadyAt("w-1", NOW + 0.2, False), p) == pytest.approx((0.12, 0.004))
    assert typical_ready(snap, "acme__m", ReadyAt("w-2", NOW + 0.05, False), p) == pytest.approx((0.03, 0.004))
    assert typical_ready(snap, "acme__m", ReadyAt("gone", NOW, False), p) is None
    assert typical_ready(snap, "acme__other", ReadyAt("w-1", NOW, False), p) is None

"""The stored profile: validation, JSON round trip, merging live data over stored."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from profiler.profile import ClassProfile, LatencyStats, ModelProfile


def test_stats_of_samples_and_ordering_rule() -> None:
    s = LatencyStats.of([0.3, 0.1, 0.2])
    assert (s.p50_s, s.n) == (0.2, 3)
    assert s.p99_s == pytest.approx(0.298)
    with pytest.raises(ValidationError, match="below p50"):
        LatencyStats(p50_s=2.0, p99_s=1.0, n=3)
    with pytest.raises(ValidationError):
        LatencyStats(p50_s=float("inf"), p99_s=float("inf"), n=1)
    with pytest.raises(ValueError):
        LatencyStats.of([])


def test_batch_sizes_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="batch sizes must be >= 1"):
        ClassProfile(exec={0: LatencyStats(p50_s=0.1, p99_s=0.1, n=1)})


def test_json_round_trip_keeps_integer_batch_keys() -> None:
    mp = ModelProfile(classes={"cpu": ClassProfile(
        exec={8: LatencyStats.of([0.4]), 2: LatencyStats.of([0.1])}, memory_bytes=10,
        observations=2, updated_at=5.0)})
    back = ModelProfile.model_validate_json(mp.model_dump_json())
    assert back == mp
    assert list(back.classes["cpu"].exec) == [2, 8]


def test_merged_overlays_newer_per_batch_and_keeps_other_classes() -> None:
    old = ModelProfile(classes={
        "cpu": ClassProfile(load_time_cold_s=LatencyStats.of([2.0]), exec={1: LatencyStats.of([0.1]),
                            2: LatencyStats.of([0.2])}, memory_bytes=100, observations=50, updated_at=10.0),
        "h200": ClassProfile(exec={1: LatencyStats.of([0.01])}),
    })
    live = ModelProfile(classes={
        "cpu": ClassProfile(exec={2: LatencyStats.of([0.25])}, observations=70, updated_at=20.0),
        "a100": ClassProfile(exec={1: LatencyStats.of([0.02])}),
    })
    m = old.merged(live)
    assert set(m.classes) == {"cpu", "h200", "a100"}
    cpu = m.classes["cpu"]
    assert cpu.exec[1].p50_s == 0.1 and cpu.exec[2].p50_s == 0.25
    assert cpu.load_time_cold_s == LatencyStats.of([2.0])
    assert (cpu.memory_bytes, cpu.observations, cpu.updated_at) == (100, 70, 20.0)


def test_with_class_replaces_one_class_without_mutating() -> None:
    mp = ModelProfile(classes={"cpu": ClassProfile(memory_bytes=1)})
    new = mp.with_class("cpu", ClassProfile(memory_bytes=2))
    assert mp.classes["cpu"].memory_bytes == 1
    assert new.classes["cpu"].memory_bytes == 2

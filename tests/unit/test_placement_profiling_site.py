from __future__ import annotations

from placement.profiling_site import (
    InstanceSnapshot,
    choose_profiling_instance,
    estimate_model_bytes,
)

MB = 1 << 20


def test_estimate_is_twice_file_size_with_a_floor() -> None:
    assert estimate_model_bytes(10) == MB
    assert estimate_model_bytes(3 * MB) == 6 * MB


def test_profiling_prefers_an_idle_instance_over_a_busy_one_with_more_room() -> None:
    busy = InstanceSnapshot("a", 1000, 0, models=frozenset({"t__m"}))
    idle = InstanceSnapshot("b", 500, 100)
    plan = choose_profiling_instance(200, [busy, idle])
    assert plan.instance_id == "b" and plan.idle


def test_profiling_without_an_idle_instance_takes_the_least_busy_and_says_so() -> None:
    two = InstanceSnapshot("a", 1000, 0, models=frozenset({"t__m", "t__n"}))
    one = InstanceSnapshot("b", 1000, 0, models=frozenset({"t__m"}))
    plan = choose_profiling_instance(200, [two, one])
    assert plan.instance_id == "b" and not plan.idle


def test_profiling_for_a_class_only_considers_that_class() -> None:
    cpu = InstanceSnapshot("a", 1000, 0, instance_class="cpu")
    gpu = InstanceSnapshot("b", 1000, 0, instance_class="gpu-h200", models=frozenset({"t__m"}))
    assert choose_profiling_instance(10, [cpu, gpu], "gpu-h200").instance_id == "b"
    plan = choose_profiling_instance(10, [cpu], "gpu-h200")
    assert not plan.placed and "class 'gpu-h200'" in plan.reason


def test_profiling_needs_room_and_health() -> None:
    full = InstanceSnapshot("a", 100, 90)
    sick = InstanceSnapshot("b", 1000, 0, healthy=False)
    assert not choose_profiling_instance(50, [full, sick]).placed

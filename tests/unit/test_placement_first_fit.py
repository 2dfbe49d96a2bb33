from __future__ import annotations

from placement.first_fit import (
    InstanceSnapshot,
    choose_instance,
    choose_profiling_instance,
    estimate_model_bytes,
)

MB = 1 << 20


def test_picks_first_instance_with_enough_free_memory_in_order() -> None:
    snap = [
        InstanceSnapshot("a", 100 * MB, 95 * MB),
        InstanceSnapshot("b", 100 * MB, 50 * MB),
        InstanceSnapshot("c", 100 * MB, 0),
    ]
    plan = choose_instance("t__m", 40 * MB, snap)
    assert plan.placed and plan.instance_id == "b" and not plan.already_loaded


def test_exact_fit_is_accepted() -> None:
    plan = choose_instance("t__m", 10 * MB, [InstanceSnapshot("a", 100 * MB, 90 * MB)])
    assert plan.instance_id == "a"


def test_model_already_loaded_wins_over_free_room() -> None:
    snap = [InstanceSnapshot("a", 100 * MB, 0), InstanceSnapshot("b", 100 * MB, 99 * MB,
                                                                  models=frozenset({"t__m"}))]
    plan = choose_instance("t__m", 50 * MB, snap)
    assert plan.instance_id == "b" and plan.already_loaded


def test_unhealthy_instances_are_skipped_even_if_they_hold_the_model() -> None:
    snap = [InstanceSnapshot("a", 100 * MB, 0, healthy=False, models=frozenset({"t__m"})),
            InstanceSnapshot("b", 100 * MB, 0)]
    assert choose_instance("t__m", MB, snap).instance_id == "b"


def test_no_room_reason_names_the_gap_and_says_eviction_is_missing() -> None:
    snap = [InstanceSnapshot("a", 100 * MB, 80 * MB), InstanceSnapshot("b", 100 * MB, 70 * MB)]
    plan = choose_instance("t__m", 50 * MB, snap)
    assert not plan.placed
    assert str(30 * MB) in plan.reason and "on b" in plan.reason and "eviction" in plan.reason


def test_no_instances_and_no_healthy_instances_have_distinct_reasons() -> None:
    assert "no inference instances are registered" in choose_instance("m", 1, []).reason
    plan = choose_instance("m", 1, [InstanceSnapshot("a", MB, 0, healthy=False)])
    assert not plan.placed and "healthy" in plan.reason


def test_used_over_capacity_means_zero_free() -> None:
    inst = InstanceSnapshot("a", 10, 25)
    assert inst.free_bytes == 0
    assert not choose_instance("m", 1, [inst]).placed


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

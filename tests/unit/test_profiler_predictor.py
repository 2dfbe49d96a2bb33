"""The predictor: percentiles over windows, interpolation, seeding, per-class separation."""

from __future__ import annotations

import numpy as np
import pytest

from profiler.predictor import LatencyPredictor, PredictorConfig
from profiler.profile import ClassProfile, LatencyStats, ModelProfile, percentile


def _stats(p50: float, p99: float, n: int = 100) -> LatencyStats:
    return LatencyStats(p50_s=p50, p99_s=p99, n=n)


def test_percentile_matches_numpy_linear_interpolation() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 32, 50):
        xs = sorted(rng.exponential(size=n).tolist())
        for pct in (0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0):
            assert percentile(xs, pct) == pytest.approx(float(np.percentile(xs, pct)), rel=1e-12)


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50.0)
    with pytest.raises(ValueError):
        percentile([1.0], 101.0)


def test_unknown_model_or_class_answers_none() -> None:
    p = LatencyPredictor()
    assert p.exec_time("m", "cpu", 1) is None
    assert p.load_time("m", "cpu") is None
    p.observe_exec("m", "cpu", 1, 0.01)
    assert p.exec_time("m", "gpu", 1) is None
    assert p.load_time("m", "cpu") is None  # exec known, load not


def test_default_percentile_is_p99_over_the_window() -> None:
    p = LatencyPredictor(PredictorConfig(window=50))
    samples = [0.001 * i for i in range(1, 51)]
    for s in samples:
        p.observe_exec("m", "cpu", 4, s)
    # conservative tail: the upper closest rank, which over 50 samples is their max
    assert p.exec_time("m", "cpu", 4) == pytest.approx(float(np.percentile(samples, 99, method="higher")))
    assert p.exec_time("m", "cpu", 4) == pytest.approx(max(samples))
    assert p.exec_time("m", "cpu", 4, percentile=50) == pytest.approx(float(np.median(samples)))


def test_interpolated_tail_when_not_conservative() -> None:
    p = LatencyPredictor(PredictorConfig(window=50, conservative_tail=False))
    samples = [0.001 * i for i in range(1, 51)]
    for s in samples:
        p.observe_exec("m", "cpu", 4, s)
    assert p.exec_time("m", "cpu", 4) == pytest.approx(float(np.percentile(samples, 99)))


def test_upper_rank_matches_numpy_higher_and_stays_below_max_over_big_windows() -> None:
    from profiler.profile import percentile_upper

    values = sorted(float(v) for v in np.random.default_rng(3).exponential(size=400))
    for pct in (50.0, 90.0, 99.0, 99.9, 100.0, 0.0):
        assert percentile_upper(values, pct) == pytest.approx(float(np.percentile(values, pct, method="higher")))
    assert percentile_upper(values, 99.0) < values[-1]


def test_configured_default_percentile_is_used() -> None:
    p = LatencyPredictor(PredictorConfig(window=10, percentile=50.0))
    for s in (1.0, 2.0, 3.0):
        p.observe_exec("m", "cpu", 1, s)
    assert p.exec_time("m", "cpu", 1) == pytest.approx(2.0)


def test_window_keeps_only_the_most_recent_observations() -> None:
    p = LatencyPredictor(PredictorConfig(window=10))
    for _ in range(10):
        p.observe_exec("m", "cpu", 1, 5.0)  # an old slow period
    for _ in range(10):
        p.observe_exec("m", "cpu", 1, 1.0)
    assert p.exec_time("m", "cpu", 1) == pytest.approx(1.0)
    p.observe_exec("m", "cpu", 1, 2.0)  # evicts one 1.0; cache must not answer stale
    assert p.exec_time("m", "cpu", 1, percentile=100) == pytest.approx(2.0)


def test_load_window_evicts_and_answers_percentile() -> None:
    p = LatencyPredictor(PredictorConfig(window=3, min_live_observations=1))
    for s in (9.0, 1.0, 2.0, 3.0):
        p.observe_load("m", "cpu", s)
    assert p.load_time("m", "cpu", percentile=100) == pytest.approx(3.0)
    assert p.load_time("m", "cpu", percentile=0) == pytest.approx(1.0)


def _linear_model(p: LatencyPredictor, batches: list[int], base: float = 0.002, per: float = 0.001,
                  n: int = 10) -> None:
    for b in batches:
        for _ in range(n):
            p.observe_exec("m", "cpu", b, base + per * b)


def test_unmeasured_batch_is_interpolated_between_neighbours() -> None:
    p = LatencyPredictor()
    _linear_model(p, [2, 8])
    # exactly linear data: interpolation reproduces the line
    assert p.exec_time("m", "cpu", 5) == pytest.approx(0.002 + 0.005)
    assert p.exec_time("m", "cpu", 3) == pytest.approx(0.002 + 0.003)


def test_below_smallest_measured_uses_smallest() -> None:
    p = LatencyPredictor()
    _linear_model(p, [4, 8])
    assert p.exec_time("m", "cpu", 1) == pytest.approx(0.006)


def test_above_largest_extrapolates_from_the_two_largest() -> None:
    p = LatencyPredictor()
    _linear_model(p, [1, 2, 4, 8])
    assert p.exec_time("m", "cpu", 16) == pytest.approx(0.002 + 0.016)
    assert p.exec_time("m", "cpu", 64) == pytest.approx(0.002 + 0.064)


def test_extrapolation_from_one_point_is_proportional() -> None:
    p = LatencyPredictor()
    _linear_model(p, [2])
    assert p.exec_time("m", "cpu", 8) == pytest.approx(0.004 * 4)


def test_predictions_monotone_and_never_zero_even_with_noisy_windows() -> None:
    p = LatencyPredictor()
    # a noisy measurement made batch 4 look faster than batch 2, and 8 faster than 4
    for b, s in ((1, 0.010), (2, 0.020), (4, 0.015), (8, 0.012)):
        for _ in range(10):
            p.observe_exec("m", "cpu", b, s)
    preds = [p.exec_time("m", "cpu", b) for b in range(1, 65)]
    assert all(v is not None and v > 0 for v in preds)
    assert all(b >= a for a, b in zip(preds, preds[1:], strict=False)), preds
    assert preds[63] >= 0.020  # never below the nearest measured value


def test_zero_or_negative_batch_and_bad_seconds_are_refused() -> None:
    p = LatencyPredictor()
    with pytest.raises(ValueError):
        p.exec_time("m", "cpu", 0)
    with pytest.raises(ValueError):
        p.observe_exec("m", "cpu", 0, 0.1)
    with pytest.raises(ValueError):
        p.observe_exec("m", "cpu", 1, float("nan"))
    with pytest.raises(ValueError):
        p.observe_load("m", "cpu", -1.0)


def _profile() -> ClassProfile:
    return ClassProfile(
        load_time_cold_s=_stats(2.0, 3.0, 1),
        load_time_warm_s=_stats(1.0, 1.5, 2),
        exec={1: _stats(0.010, 0.020), 4: _stats(0.030, 0.050)},
        memory_bytes=1 << 20,
        observations=200,
        updated_at=1000.0,
    )


def test_seeded_profile_answers_before_live_observations() -> None:
    p = LatencyPredictor()
    p.seed_from_profile("m", "cpu", _profile())
    assert p.exec_time("m", "cpu", 1) == pytest.approx(0.020)
    assert p.exec_time("m", "cpu", 1, percentile=50) == pytest.approx(0.010)
    assert p.exec_time("m", "cpu", 2) == pytest.approx(0.020 + (0.050 - 0.020) / 3)
    assert p.load_time("m", "cpu") == pytest.approx(3.0)  # cold: the conservative one
    assert p.load_time("m", "cpu", percentile=50) == pytest.approx(2.0)


def test_live_observations_override_seed_once_there_are_enough() -> None:
    p = LatencyPredictor(PredictorConfig(window=20, min_live_observations=5))
    p.seed_from_profile("m", "cpu", _profile())
    for i in range(4):
        p.observe_exec("m", "cpu", 1, 0.100)
        p.observe_load("m", "cpu", 9.0)
        assert p.exec_time("m", "cpu", 1) == pytest.approx(0.020), i
        assert p.load_time("m", "cpu") == pytest.approx(3.0)
    p.observe_exec("m", "cpu", 1, 0.100)
    p.observe_load("m", "cpu", 9.0)
    assert p.exec_time("m", "cpu", 1) == pytest.approx(0.100)
    assert p.load_time("m", "cpu") == pytest.approx(9.0)
    # batch 4 still seeded; monotone curve lifts it to at least batch 1's live value
    assert p.exec_time("m", "cpu", 4) == pytest.approx(0.100)


def test_live_batch_not_in_seed_is_used_immediately() -> None:
    p = LatencyPredictor()
    p.seed_from_profile("m", "cpu", _profile())
    p.observe_exec("m", "cpu", 16, 0.400)
    assert p.exec_time("m", "cpu", 16) == pytest.approx(0.400)
    assert p.exec_time("m", "cpu", 10) == pytest.approx(0.050 + (0.400 - 0.050) * 6 / 12)


def test_seeded_is_false_for_a_state_made_by_a_cold_load() -> None:
    p = LatencyPredictor()
    assert not p.seeded("m", "cpu")
    p.observe_load("m", "cpu", 1.0)  # what placement does after a cold load
    assert p.known("m") == ["cpu"] and not p.seeded("m", "cpu")
    p.seed_from_profile("m", "cpu", _profile())
    assert p.seeded("m", "cpu") and not p.seeded("m", "h200")


def test_instance_classes_are_kept_apart() -> None:
    p = LatencyPredictor(PredictorConfig(min_live_observations=1))
    p.observe_exec("m", "cpu", 1, 0.050)
    p.observe_exec("m", "h200", 1, 0.002)
    assert p.exec_time("m", "cpu", 1) == pytest.approx(0.050)
    assert p.exec_time("m", "h200", 1) == pytest.approx(0.002)
    assert p.known("m") == ["cpu", "h200"]


def test_forget_drops_every_class_of_the_model_only() -> None:
    p = LatencyPredictor()
    p.seed_from_profile("m", "cpu", _profile())
    p.seed_from_profile("m", "h200", _profile())
    p.observe_exec("other", "cpu", 1, 0.5)
    p.forget("m")
    assert p.exec_time("m", "cpu", 1) is None
    assert p.exec_time("m", "h200", 1) is None
    assert p.known("m") == []
    assert p.exec_time("other", "cpu", 1) == pytest.approx(0.5)


def test_snapshot_overlays_live_windows_on_the_seed() -> None:
    p = LatencyPredictor(PredictorConfig(window=10, min_live_observations=3))
    p.seed_from_profile("m", "cpu", _profile())
    for i in range(12):
        p.observe_exec("m", "cpu", 4, 0.040, at=2000.0 + i)
    p.observe_exec("m", "cpu", 1, 0.5, at=1500.0)  # too few to replace the seed
    p.observe_load("m", "cpu", 1.25, at=1800.0)
    snap = p.snapshot("m").classes["cpu"]
    assert snap.exec[4] == LatencyStats(p50_s=0.040, p99_s=0.040, n=10)
    assert snap.exec[1] == _stats(0.010, 0.020)
    assert snap.load_time_cold_s == _stats(2.0, 3.0, 1)
    assert snap.load_time_observed_s == LatencyStats(p50_s=1.25, p99_s=1.25, n=1)
    assert snap.memory_bytes == 1 << 20
    assert snap.observations == 200 + 12 + 1 + 1
    assert snap.updated_at == 2011.0
    # the snapshot round-trips through the store's JSON
    assert ModelProfile.model_validate_json(p.snapshot("m").model_dump_json()) == p.snapshot("m")


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        PredictorConfig(window=0)
    with pytest.raises(ValueError):
        PredictorConfig(percentile=120.0)


def test_warm_loads_are_kept_apart_from_cold_ones() -> None:
    p = LatencyPredictor(PredictorConfig(window=20, min_live_observations=5))
    assert p.load_time("m", "cpu", warm=True) is None  # nothing known
    p.observe_load("m", "cpu", 4.0)  # a cold load, no profile: it answers both until warm ones come
    assert p.load_time("m", "cpu", warm=True) is None and p.load_time("m", "cpu") == pytest.approx(4.0)
    p.observe_load("m", "cpu", 0.5, warm=True)
    assert p.load_time("m", "cpu", warm=True) == pytest.approx(0.5)
    assert p.load_time("m", "cpu") == pytest.approx(4.0)  # the warm load does not lower the cold one
    seeded = LatencyPredictor(PredictorConfig(window=20, min_live_observations=5))
    seeded.seed_from_profile("m", "cpu", _profile())
    assert seeded.load_time("m", "cpu", warm=True) == pytest.approx(1.5)  # the profile's warm p99
    for _ in range(5):
        seeded.observe_load("m", "cpu", 0.2, warm=True)
    assert seeded.load_time("m", "cpu", warm=True) == pytest.approx(0.2)
    assert seeded.load_time("m", "cpu") == pytest.approx(3.0)


def test_sliding_window_answers_as_a_fresh_sort_at_every_step() -> None:
    """The window keeps its sorted copy in step with each sample in and each sample out:
    its percentiles, and the curves kept between observations, must equal those of a fresh
    sort of the last ``window`` samples after every single observation."""
    rng = np.random.default_rng(3)
    cfg = PredictorConfig(window=20, min_live_observations=5)
    p = LatencyPredictor(cfg)
    p.seed_from_profile("m", "cpu", ClassProfile(exec={1: _stats(0.004, 0.005), 4: _stats(0.010, 0.012)}))
    seen: dict[int, list[float]] = {1: [], 4: []}
    for i in range(400):
        batch = 1 if i % 3 else 4
        # heavy ties and a rising then falling level: maxima arrive and leave the window
        x = round(float(rng.exponential(0.003)) + 0.002 * (1 + np.sin(i / 40)), 4)
        p.observe_exec("m", "cpu", batch, x)
        seen[batch].append(x)
        for b, xs in seen.items():
            tail = sorted(xs[-20:])
            if len(tail) >= 5:
                want99 = tail[min(len(tail) - 1, int(np.ceil((len(tail) - 1) * 0.99 - 1e-12)))]
                own = want99
            else:
                own = {1: 0.005, 4: 0.012}[b]
            seen_point = p._point(p._state["m", "cpu"], b, 99.0)
            assert seen_point == pytest.approx(own)
        one, four = p.exec_time("m", "cpu", 1), p.exec_time("m", "cpu", 4)
        assert one == pytest.approx(p._point(p._state["m", "cpu"], 1, 99.0))
        assert four == pytest.approx(max(one, p._point(p._state["m", "cpu"], 4, 99.0)))
        assert p.exec_time("m", "cpu", 1, 50.0) == pytest.approx(np.percentile(seen[1][-20:], 50.0)
                                                                 if len(seen[1]) >= 5 else 0.004)

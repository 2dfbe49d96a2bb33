"""Predictions by input size: a model whose cost grows with its sequence length.

The fake transformer has three inputs of [batch, seq] (ids, mask, types), so a request
of batch b at sequence length s has 3*b*s input elements; it costs a fixed 2 ms plus
0.06 ms per element (all-MiniLM-L6-v2's shape: 128 tokens ~ 25 ms, one token ~ 2 ms).
"""

from __future__ import annotations

import pytest

from profiler.curve import SizeCurve, size_bucket
from profiler.predictor import LatencyPredictor, PredictorConfig
from profiler.profile import ClassProfile, LatencyStats, ModelProfile, SizePoint, request_elements

SEQS = (1, 8, 32, 128)


def cost(batch: int, seq: int) -> float:
    return 0.002 + 0.00006 * 3 * batch * seq


def elements(batch: int, seq: int) -> int:
    return request_elements([(batch, seq)] * 3)


def _stats(seconds: float) -> LatencyStats:
    return LatencyStats(p50_s=seconds, p99_s=seconds * 1.1, n=60)


def sized_profile() -> ClassProfile:
    """What profile_model stores for it: exec per batch at seq 1, and every (batch, seq)."""
    return ClassProfile(
        exec={b: _stats(cost(b, 1)) for b in (1, 2)},
        sizes=[SizePoint(elements=elements(b, s), batch=b, stats=_stats(cost(b, s)))
               for b in (1, 2) for s in SEQS])


def seeded(profile: ClassProfile | None = None, **config: int) -> LatencyPredictor:
    p = LatencyPredictor(PredictorConfig(**config))
    p.seed_from_profile("bert", "cpu", profile or sized_profile())
    return p


def test_request_elements_counts_every_dimension_and_adds_up_over_a_batch() -> None:
    assert request_elements([(1, 128), (1, 128), (1, 128)]) == 384
    assert request_elements([(4, 3, 2), (4,)]) == 28
    assert request_elements([]) == 0
    # two requests merged along the batch dimension: the batch's elements are their sum
    assert request_elements([(3, 16)]) == request_elements([(1, 16)]) + request_elements([(2, 16)])
    with pytest.raises(ValueError, match="negative dimension"):
        request_elements([(1, -1)])


def test_measured_sizes_are_predicted_as_measured() -> None:
    p = seeded()
    for b in (1, 2):
        for s in SEQS:
            assert p.exec_time_for("bert", "cpu", b, elements(b, s)) == pytest.approx(cost(b, s) * 1.1)
            assert p.exec_time("bert", "cpu", b, percentile=50, elements=elements(b, s)) == \
                pytest.approx(cost(b, s))


def test_the_issue_case_128_tokens_is_not_predicted_as_one() -> None:
    p = seeded()
    one, many = p.exec_time("bert", "cpu", 1), p.exec_time_for("bert", "cpu", 1, elements(1, 128))
    assert one == pytest.approx(cost(1, 1) * 1.1)  # batch-only: what it always said
    assert many is not None and many > 10 * one


def test_between_measured_sizes_is_interpolated_linearly_in_elements() -> None:
    p = seeded()
    lo, hi = elements(1, 32), elements(2, 32)  # 96 and 192 elements, nothing measured between
    mid = (lo + hi) // 2
    want = cost(1, 32) * 1.1 + (cost(2, 32) - cost(1, 32)) * 1.1 * (mid - lo) / (hi - lo)
    assert p.exec_time_for("bert", "cpu", 1, mid) == pytest.approx(want)
    got = [p.exec_time_for("bert", "cpu", 1, e) for e in range(1, 800, 7)]
    assert got == sorted(got)  # never faster for more input


def test_above_the_largest_size_is_conservative() -> None:
    p = seeded()
    largest = elements(2, 128)
    at_largest = p.exec_time_for("bert", "cpu", 2, largest)
    assert at_largest is not None
    for factor in (1.5, 2, 4):
        e = int(largest * factor)
        got = p.exec_time_for("bert", "cpu", 4, e)
        assert got is not None
        # never below the largest's time scaled by size, and above the true cost of that size
        assert got >= at_largest * e / largest - 1e-12
        assert got >= (0.002 + 0.00006 * e) * 1.1 - 1e-12


def test_below_the_smallest_size_is_the_smallest_time() -> None:
    p = seeded()
    smallest = p.exec_time_for("bert", "cpu", 1, elements(1, 1))
    assert p.exec_time_for("bert", "cpu", 1, 1) == smallest
    assert p.exec_time_for("bert", "cpu", 1, 0) == smallest


def test_batch_only_callers_get_what_they_got_before() -> None:
    with_sizes = seeded()
    without = seeded(ClassProfile(exec=sized_profile().exec))
    for b in (1, 2, 3, 8):
        for pct in (50.0, 99.0):
            assert with_sizes.exec_time("bert", "cpu", b, percentile=pct) == \
                without.exec_time("bert", "cpu", b, percentile=pct)
    # and live observations at real sizes still reach the batch curve, as before
    for _ in range(10):
        with_sizes.observe_exec("bert", "cpu", 1, 0.03, elements=elements(1, 128))
        without.observe_exec("bert", "cpu", 1, 0.03)
    assert with_sizes.exec_time("bert", "cpu", 1) == without.exec_time("bert", "cpu", 1) == 0.03


def test_a_profile_stored_before_sizes_loads_and_answers_by_batch() -> None:
    stored = {"classes": {"cpu": {"exec": {"1": {"p50_s": 0.002, "p99_s": 0.003, "n": 60}}}}}
    cp = ModelProfile.model_validate(stored).classes["cpu"]
    assert cp.sizes == []
    p = seeded(cp)
    assert p.exec_time_for("bert", "cpu", 1, 384) == p.exec_time("bert", "cpu", 1) == 0.003


def test_enough_live_observations_replace_the_profile_at_their_size() -> None:
    p = seeded(min_live_observations=10)
    e = elements(1, 128)
    for _ in range(9):
        p.observe_exec("bert", "cpu", 1, 0.040, elements=e)
    assert p.exec_time_for("bert", "cpu", 1, e) == pytest.approx(cost(1, 128) * 1.1)  # too few yet
    p.observe_exec("bert", "cpu", 1, 0.040, elements=e)
    assert p.exec_time_for("bert", "cpu", 1, e) == pytest.approx(0.040)
    # the curve moved around it too, not only at that exact size
    assert p.exec_time_for("bert", "cpu", 1, e - 20) > cost(1, 128) * 1.1 * (e - 20) / e


def test_a_live_size_the_profile_never_measured_enters_the_curve_at_once() -> None:
    p = seeded()
    e = elements(1, 48)  # between measured sizes (96 and 192 elements), none in its bucket
    before = p.exec_time_for("bert", "cpu", 1, e)
    p.observe_exec("bert", "cpu", 1, 0.030, elements=e)
    after = p.exec_time_for("bert", "cpu", 1, e)
    assert before is not None and before < 0.030 and after == pytest.approx(0.030)


def test_live_traffic_alone_builds_a_size_curve_that_extrapolates_up() -> None:
    p = LatencyPredictor()
    for s in (8, 32):
        p.observe_exec("bert", "cpu", 1, cost(1, s), elements=elements(1, s))
    e_big = elements(1, 128)
    got = p.exec_time_for("bert", "cpu", 1, e_big)
    assert got is not None and got >= cost(1, 32) * e_big / elements(1, 32)
    assert got >= cost(1, 128)  # the size never seen is not predicted as the smallest


def test_snapshot_carries_the_size_points_and_round_trips() -> None:
    p = seeded()
    p.observe_exec("bert", "cpu", 1, 0.030, elements=elements(1, 48), at=5.0)
    cp = p.snapshot("bert").classes["cpu"]
    assert [pt.elements for pt in cp.sizes] == sorted(pt.elements for pt in cp.sizes)
    live = [pt for pt in cp.sizes if pt.batch is None]
    assert [(pt.elements, pt.stats.n) for pt in live] == [(elements(1, 48), 1)]
    again = ClassProfile.model_validate_json(cp.model_dump_json())
    assert again == cp
    merged = sized_profile().merged(cp)
    assert len(merged.sizes) == len(sized_profile().sizes) + 1


def test_size_buckets_tile_the_integers() -> None:
    prev_hi = 1
    for e in range(1, 5000):
        lo, hi = size_bucket(e)
        assert lo <= e < hi and hi <= max(lo + 1, int(lo * 1.2) + 1)
        if lo == e:
            assert lo == prev_hi  # contiguous: each bucket starts where the last ended
        prev_hi = hi
    assert size_bucket(0) == size_bucket(1) == (1, 2)


def test_curve_extrapolation_takes_the_steeper_of_chord_and_last_segment() -> None:
    flat = SizeCurve([(10, 1.0), (20, 1.1)])  # overhead-dominated: the chord is steeper
    assert flat.at(40) == pytest.approx(1.1 * 40 / 20)
    steep = SizeCurve([(10, 1.0), (20, 3.0)])  # steepening (quadratic): the segment is
    assert steep.at(40) == pytest.approx(3.0 + 0.2 * 20)
    noisy = SizeCurve([(10, 2.0), (20, 1.0), (20, 1.5)])  # noise is flattened, the slower kept
    assert (noisy.xs, noisy.ys) == ([10, 20], [2.0, 2.0])

"""Simulator profiles: interpolation between measured batch sizes, the cited GPU table,
the models measured here, and a stored inferplex profile read back."""

from __future__ import annotations

import pytest

from profiler.profile import ClassProfile, LatencyStats, ModelProfile
from sim.profiles import GPU_PROFILES, Profile, from_inferplex_profile, measured_profiles


def _p(points, **kw) -> Profile:
    return Profile(name="x", bytes=1, load_cold_s=0.2, load_warm_s=0.1, exec_s=tuple(points), max_batch=64,
                   source="test", **kw)


def test_exec_at_interpolates_between_batches_and_extrapolates_the_last_slope():
    p = _p([(1, 0.002), (4, 0.005), (8, 0.007)])
    assert p.exec_at(1) == 0.002 and p.exec_at(4) == 0.005
    assert p.exec_at(2) == pytest.approx(0.003)
    assert p.exec_at(6) == pytest.approx(0.006)
    assert p.exec_at(16) == pytest.approx(0.007 + 8 * 0.0005)
    assert _p([(2, 0.004)]).exec_at(1) == 0.004 and _p([(2, 0.004)]).exec_at(6) == pytest.approx(0.012)


@pytest.mark.parametrize("profile", [*GPU_PROFILES.values(), *measured_profiles().values()], ids=lambda p: p.name)
def test_exec_at_is_monotone_in_the_batch(profile):
    times = [profile.exec_at(b) for b in range(1, 2 * profile.max_batch + 1)]
    assert all(b >= a for a, b in zip(times, times[1:], strict=False))
    assert times[0] > 0


def test_profiles_reject_points_that_fall_or_are_out_of_order():
    with pytest.raises(ValueError, match="ascending"):
        _p([(4, 0.002), (2, 0.003)])
    with pytest.raises(ValueError, match="not fall"):
        _p([(1, 0.003), (2, 0.002)])
    with pytest.raises(ValueError, match="batch must be >= 1"):
        _p([(1, 0.003)]).exec_at(0)


def test_every_gpu_profile_cites_its_source_and_is_plausible():
    assert {"resnet50-v100", "bert-large-v100", "distilbert6l-v100"} <= set(GPU_PROFILES)
    for p in GPU_PROFILES.values():
        assert p.source.strip() and "DeepLearningExamples" in p.source
        assert 1e6 < p.bytes < 2e9 and p.load_cold_s > p.load_warm_s > 0
        assert 0.0005 < p.exec_at(1) < 0.05
    assert GPU_PROFILES["bert-large-v100"].exec_at(1) > GPU_PROFILES["resnet50-v100"].exec_at(1)


def test_measured_profiles_come_from_this_machine():
    got = measured_profiles()
    assert got and all("measured here" in p.source for p in got.values())


def _class_profile() -> ClassProfile:
    return ClassProfile(
        load_time_cold_s=LatencyStats(p50_s=0.15, p99_s=0.2, n=3),
        load_time_warm_s=LatencyStats(p50_s=0.09, p99_s=0.1, n=3),
        exec={1: LatencyStats(p50_s=0.004, p99_s=0.006, n=20), 4: LatencyStats(p50_s=0.0039, p99_s=0.007, n=20),
              8: LatencyStats(p50_s=0.009, p99_s=0.012, n=20)},
        memory_bytes=12_345_678, observations=60)


def test_from_inferplex_profile_reads_the_api_answer_and_the_stored_record():
    view = {"name": "m", "version": 1, "status": "ready",
            "classes": {"cpu": _class_profile().model_dump(mode="json")}}
    p = from_inferplex_profile("m", view, None)
    assert p.bytes == 12_345_678 and p.load_cold_s == 0.15 and p.load_warm_s == 0.09
    assert p.exec_s == ((1, 0.004), (4, 0.004), (8, 0.009))   # a dip at batch 4 is flattened
    assert p.exec_p99_at(8) == 0.012 and p.max_batch == 8
    stored = ModelProfile(classes={"cpu": _class_profile()}).model_dump(mode="json")
    assert from_inferplex_profile("m", stored, 999).bytes == 999
    assert from_inferplex_profile("m", _class_profile().model_dump(mode="json"), 5).exec_at(2) == pytest.approx(0.004)


def test_from_inferplex_profile_says_what_is_missing():
    with pytest.raises(ValueError, match="no measured profile yet"):
        from_inferplex_profile("m", {"classes": {}}, 1)
    with pytest.raises(ValueError, match="no profile for instance class 'h200'"):
        from_inferplex_profile("m", {"classes": {"cpu": _class_profile().model_dump(mode="json")}}, 1,
                               instance_class="h200")
    no_exec = ClassProfile(load_time_warm_s=LatencyStats(p50_s=0.1, p99_s=0.1, n=1)).model_dump(mode="json")
    with pytest.raises(ValueError, match="no execute times"):
        from_inferplex_profile("m", no_exec, 1)

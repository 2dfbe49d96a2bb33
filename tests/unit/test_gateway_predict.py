"""The gateway seeds the predictor from the stored profile, even after a cold load."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from controlplane.gateway import Gateway
from controlplane.settings import Settings
from profiler.predictor import LatencyPredictor
from profiler.profile import ClassProfile, LatencyStats, ModelProfile


def _gateway(predictor: LatencyPredictor) -> Gateway:
    none = cast(Any, None)
    return Gateway(none, none, none, none, predictor, none, Settings(scheduler=False))


def _driver(instance_class: str) -> Any:
    return SimpleNamespace(info=SimpleNamespace(instance_class=instance_class))


def _record(profile: dict | None) -> Any:
    return SimpleNamespace(qualified_name="t1--m", profile=profile)


def _stored_profile() -> dict:
    exec_stats = {1: LatencyStats(p50_s=0.010, p99_s=0.020, n=100)}
    return ModelProfile(classes={"cpu": ClassProfile(exec=exec_stats)}).model_dump(mode="json")


def test_a_cold_load_does_not_keep_the_stored_profile_from_seeding() -> None:
    predictor = LatencyPredictor()
    predictor.observe_load("t1--m", "cpu", 0.5)  # ensure_loaded's cold load ran first
    prediction = _gateway(predictor)._predict(_record(_stored_profile()), _driver("cpu"), 1)
    assert prediction is not None
    assert prediction.p50_s == pytest.approx(0.010) and prediction.p99_s == pytest.approx(0.020)
    assert predictor.seeded("t1--m", "cpu")


def test_no_profile_for_the_class_leaves_the_predictor_unseeded() -> None:
    predictor = LatencyPredictor()
    gateway = _gateway(predictor)
    assert gateway._predict(_record(_stored_profile()), _driver("h200"), 1) is None
    assert gateway._predict(_record(None), _driver("cpu"), 1) is None
    assert not predictor.seeded("t1--m", "h200") and not predictor.seeded("t1--m", "cpu")

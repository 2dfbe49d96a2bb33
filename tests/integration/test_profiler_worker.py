"""Offline profiling against a real ``inferplex worker`` through the real TritonDriver."""

from __future__ import annotations

import pytest

from kserve.errors import InvalidArgument
from placement.driver import InstanceDriver
from profiler.offline import profile_model
from profiler.predictor import LatencyPredictor


def _artifact(kind: str, name: str) -> tuple[dict, dict[str, bytes]]:
    from tests.support import models

    art = getattr(models, kind)(name)
    return art.config, art.repo_files()


async def test_profile_of_a_real_model_feeds_the_predictor(driver: InstanceDriver) -> None:
    config, files = _artifact("mlp_onnx", "prof_mlp")
    fetches = 0

    async def fetch() -> dict[str, bytes]:
        nonlocal fetches
        fetches += 1
        return files

    stages: list[str] = []
    prof = await profile_model(driver, "prof_mlp", config, fetch, batch_sizes=[1, 4, 16], warmup=2,
                               min_runs_per_batch=10, runs_per_batch=40, loads=2, max_seconds=30,
                               progress=lambda s, f: stages.append(s), keep_loaded=True)
    try:
        assert fetches == 2
        assert prof.load_time_cold_s is not None and prof.load_time_cold_s.p50_s > 0
        assert prof.load_time_warm_s is not None and prof.load_time_warm_s.n == 1
        assert sorted(prof.exec) == [1, 4, 16]
        for stats in prof.exec.values():
            assert 0 < stats.p50_s <= stats.p99_s < 1.0
            assert 20 <= stats.n <= 40
        assert prof.memory_bytes is not None and prof.memory_bytes > 0
        assert stages[0].startswith("load cold") and stages[-1] == "done"
        # the runs were real executions on the instance, at the batch sizes asked for
        stats = await driver.statistics("prof_mlp")
        entry = next(e for e in stats["model_stats"] if e["name"] == "prof_mlp")
        measured = sum(s.n for s in prof.exec.values()) + 2 * 3  # + warm-up runs
        assert int(entry["inference_count"]) >= sum(b * s.n for b, s in prof.exec.items())
        assert int(entry["execution_count"]) >= measured
    finally:
        await driver.unload("prof_mlp")

    predictor = LatencyPredictor()
    predictor.seed_from_profile("prof_mlp", "cpu", prof)
    p4, p8, p16 = (predictor.exec_time("prof_mlp", "cpu", b) for b in (4, 8, 16))
    assert p4 is not None and p8 is not None and p16 is not None
    assert p4 <= p8 <= p16 and p8 > 0
    assert predictor.load_time("prof_mlp", "cpu") == pytest.approx(prof.load_time_cold_s.p99_s)


async def test_profiling_unloads_the_model_by_default(driver: InstanceDriver) -> None:
    config, files = _artifact("cnn_onnx", "prof_cnn")
    prof = await profile_model(driver, "prof_cnn", config, files, batch_sizes=[1, 2], warmup=1,
                               min_runs_per_batch=5, runs_per_batch=10, loads=1, max_seconds=20)
    assert sorted(prof.exec) == [1, 2]
    assert "prof_cnn" not in {m.name for m in await driver.index() if m.state == "READY"}


async def test_a_bad_model_fails_clearly_and_the_worker_keeps_serving(driver: InstanceDriver) -> None:
    config, _ = _artifact("mlp_onnx", "prof_bad")
    with pytest.raises(InvalidArgument):
        await profile_model(driver, "prof_bad", config, {"1/model.onnx": b"not an onnx model"})
    assert await driver.is_ready()
    config, files = _artifact("mlp_onnx", "prof_after")
    prof = await profile_model(driver, "prof_after", config, files, batch_sizes=[1], warmup=0,
                               min_runs_per_batch=3, runs_per_batch=3, loads=1)
    assert prof.exec[1].n == 3

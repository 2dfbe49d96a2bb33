"""Offline profiling logic against a fake driver on a virtual clock (pure core: fakes allowed)."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

from kserve.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from placement.driver import InferTiming, InstanceDriver, InstanceInfo, ModelState
from profiler.offline import (
    EXERCISE_INT_MAX,
    EXERCISE_MIN_S,
    compute_ns,
    default_batch_sizes,
    input_specs,
    memory_from_statistics,
    profile_model,
    synthetic_inputs,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeDriver(InstanceDriver):
    """Loads take ``load_s``, a batch of b takes ``exec_s(b, call_no)``, all on ``clock``."""

    def __init__(self, clock: Clock, exec_s: Any = None, load_s: float = 0.5,
                 memory: int | None = 4096, fail_infer_at: int | None = None) -> None:
        self.info = InstanceInfo("i1", "127.0.0.1:1", "127.0.0.1:2", 1 << 30)
        self.clock = clock
        self.exec_s = exec_s or (lambda b, n: 0.001 * b)
        self.load_s = load_s
        self.memory = memory
        self.fail_infer_at = fail_infer_at
        self.calls: list[str] = []
        self.loaded: set[str] = set()
        self.infer_inputs: list[dict[str, np.ndarray]] = []
        self.n_infer = 0

    async def is_ready(self) -> bool:
        return True

    async def index(self) -> list[ModelState]:
        return [ModelState(n, "1", "READY") for n in self.loaded]

    async def load(self, name: str, config: dict[str, Any], files: dict[str, bytes]) -> float:
        assert files == {"1/model.onnx": b"bytes"}
        self.calls.append("load")
        self.clock.t += self.load_s
        self.loaded.add(name)
        return self.load_s

    async def unload(self, name: str) -> None:
        self.calls.append("unload")
        self.loaded.discard(name)

    async def statistics(self, name: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": name, "version": "1"}
        if self.memory is not None:
            entry["memory_usage"] = [{"type": "CPU", "id": 0, "byte_size": self.memory}]
        return {"model_stats": [entry]}

    async def infer_arrays(self, name: str, inputs: dict[str, np.ndarray],
                           output_names: list[str] | None = None,
                           timeout_s: float | None = None) -> InferTiming:
        assert name in self.loaded
        self.n_infer += 1
        if self.fail_infer_at is not None and self.n_infer >= self.fail_infer_at:
            raise InvalidArgument("boom")
        self.infer_inputs.append(inputs)
        batch = next(iter(inputs.values())).shape[0]
        dt = self.exec_s(batch, self.n_infer)
        self.clock.t += dt
        return InferTiming(outputs={}, round_trip_s=dt)

    async def close(self) -> None:
        pass


FILES = {"1/model.onnx": b"bytes"}


def _config(max_batch: int = 8, dims: tuple[int, ...] = (3, 1), **extra: Any) -> dict[str, Any]:
    """Fixed dims by default: one profile point per batch size (sizes: test_profiler_dynamic)."""
    return {"name": "m", "max_batch_size": max_batch,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": list(dims)}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}], **extra}


def test_default_batch_sizes_are_powers_of_two_up_to_max() -> None:
    assert default_batch_sizes(0) == [1]
    assert default_batch_sizes(1) == [1]
    assert default_batch_sizes(8) == [1, 2, 4, 8]
    assert default_batch_sizes(6) == [1, 2, 4, 6]


def test_synthetic_inputs_follow_the_config() -> None:
    specs = input_specs({"input": [
        {"name": "img", "data_type": "TYPE_FP16", "dims": ["3", "-1"]},
        {"name": "ids", "data_type": "INT64", "dims": [4]},
        {"name": "txt", "data_type": "TYPE_STRING", "dims": [1]},
    ]})
    rng = np.random.default_rng(0)
    batched = synthetic_inputs(specs, 4, True, rng)
    assert batched["img"].shape == (4, 3, 1) and batched["img"].dtype == np.float16
    assert batched["ids"].shape == (4, 4) and not batched["ids"].any()
    assert batched["txt"].dtype == np.object_ and isinstance(batched["txt"][0, 0], bytes)
    unbatched = synthetic_inputs(specs, 1, False, rng)
    assert unbatched["img"].shape == (3, 1)


def test_bf16_inputs_are_profiled_like_any_other() -> None:
    # upload accepts BF16 models; input_specs refusing them ended the upload `failed`
    specs = input_specs({"input": [{"name": "x", "data_type": "TYPE_BF16", "dims": [2]},
                                   {"name": "y", "data_type": "BF16", "dims": [1]}]})
    assert [s.dtype for s in specs] == [np.dtype(ml_dtypes.bfloat16)] * 2
    arr = synthetic_inputs(specs, 3, True, np.random.default_rng(0))["x"]
    assert arr.shape == (3, 2) and arr.dtype == np.dtype(ml_dtypes.bfloat16)


def test_bad_config_says_what_is_missing() -> None:
    with pytest.raises(InvalidArgument, match="no 'input'"):
        input_specs({"name": "m"})
    with pytest.raises(InvalidArgument, match="data_type"):
        input_specs({"input": [{"name": "x", "data_type": "TYPE_COMPLEX", "dims": [1]}]})
    with pytest.raises(InvalidArgument, match="TYPE_BF16, TYPE_STRING"):
        input_specs({"input": [{"name": "x", "dims": [1]}]})
    with pytest.raises(InvalidArgument, match="non-integer dims"):
        input_specs({"input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["a"]}]})


def test_memory_read_from_statistics_or_none() -> None:
    stats = {"model_stats": [{"name": "a", "memory_usage": [{"byte_size": 10}, {"byte_size": "5"}]},
                             {"name": "b"}]}
    assert memory_from_statistics(stats, "a") == 15
    assert memory_from_statistics(stats, "b") is None
    assert memory_from_statistics({}, "a") is None


def test_compute_ns_sums_the_three_phases_over_versions_or_none() -> None:
    def entry(name: str, **phases: int) -> dict:
        return {"name": name, "inference_stats": {k: {"count": 1, "ns": v} for k, v in phases.items()}}
    stats = {"model_stats": [entry("a", compute_input=1, compute_infer=20, compute_output=300, queue=9),
                             entry("a", compute_infer=4000), entry("b", compute_infer=7)]}
    assert compute_ns(stats, "a") == 4321
    assert compute_ns({"model_stats": [{"name": "a"}]}, "a") == 0
    assert compute_ns(stats, "c") is None


async def test_profile_times_cold_and_warm_loads_and_every_batch() -> None:
    clock = Clock()
    driver = FakeDriver(clock)
    fetches = 0

    async def fetch() -> dict[str, bytes]:
        nonlocal fetches
        fetches += 1
        clock.t += 2.0 if fetches == 1 else 0.1  # the artifact store is cold only once
        return FILES

    seen: list[tuple[str, float]] = []
    prof = await profile_model(driver, "m", _config(8), fetch, warmup=2, min_runs_per_batch=10,
                               clock=clock, wall_clock=lambda: 1234.0,
                               progress=lambda s, f: seen.append((s, f)))
    assert prof.load_time_cold_s is not None and prof.load_time_cold_s.p50_s == pytest.approx(2.5)
    assert prof.load_time_warm_s is not None and prof.load_time_warm_s.p50_s == pytest.approx(0.6)
    assert prof.load_time_warm_s.n == 2
    assert sorted(prof.exec) == [1, 2, 4, 8]
    for b, st in prof.exec.items():
        assert st.p50_s == pytest.approx(0.001 * b) and st.p99_s == pytest.approx(0.001 * b)
        # constant latency is stable after the second chunk
        assert st.n == 20
    assert prof.memory_bytes == 4096
    assert prof.updated_at == 1234.0
    assert prof.observations == 3 + 4 * 20
    assert driver.calls == ["load", "unload", "load", "unload", "load", "unload"]
    assert not driver.loaded
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert ("batch 4", pytest.approx(5 / 7)) in seen  # 3 loads + 2 batches done


async def test_inputs_carry_the_batch_dimension_only_when_batching() -> None:
    driver = FakeDriver(Clock(), exec_s=lambda b, n: 0.002)
    await profile_model(driver, "m", _config(4), FILES, warmup=0, min_runs_per_batch=2, loads=1,
                        clock=driver.clock)
    assert {x["x"].shape for x in driver.infer_inputs} == {(1, 3, 1), (2, 3, 1), (4, 3, 1)}

    driver = FakeDriver(Clock(), exec_s=lambda b, n: 0.002)
    prof = await profile_model(driver, "m", _config(0), FILES, warmup=0, min_runs_per_batch=2,
                               loads=1, clock=driver.clock)
    assert {x["x"].shape for x in driver.infer_inputs} == {(3, 1)}
    assert list(prof.exec) == [1] and prof.load_time_warm_s is None


async def test_unstable_latency_runs_until_the_run_cap() -> None:
    # alternating 1 ms / 10 ms with a growing tail: p99 keeps moving, never stable
    driver = FakeDriver(Clock(), exec_s=lambda b, n: 0.001 if n % 2 else 0.010 + n * 1e-4)
    prof = await profile_model(driver, "m", _config(1), FILES, warmup=0, min_runs_per_batch=10,
                               runs_per_batch=55, loads=1, clock=driver.clock, max_seconds=1e9)
    assert prof.exec[1].n == 55


async def test_time_cap_limits_each_batch_to_one_chunk() -> None:
    driver = FakeDriver(Clock(), exec_s=lambda b, n: 0.001 if n % 2 else 0.010 + n * 1e-4)
    prof = await profile_model(driver, "m", _config(8), FILES, warmup=0, min_runs_per_batch=10,
                               runs_per_batch=1000, loads=1, clock=driver.clock, max_seconds=0.05)
    assert sorted(prof.exec) == [1, 2, 4, 8]
    assert all(st.n == 10 for st in prof.exec.values())


async def test_keep_loaded_leaves_the_model_loaded() -> None:
    driver = FakeDriver(Clock(), memory=None)
    prof = await profile_model(driver, "m", _config(2), FILES, warmup=0, min_runs_per_batch=2,
                               loads=1, keep_loaded=True, clock=driver.clock)
    assert driver.loaded == {"m"}
    assert prof.memory_bytes is None


async def test_failure_midway_unloads_and_propagates() -> None:
    driver = FakeDriver(Clock(), fail_infer_at=5)
    with pytest.raises(InvalidArgument, match="boom"):
        await profile_model(driver, "m", _config(4), FILES, warmup=0, min_runs_per_batch=3,
                            loads=1, clock=driver.clock)
    assert not driver.loaded


async def test_load_that_does_not_fit_propagates_without_unload() -> None:
    class Full(FakeDriver):
        async def load(self, name: str, config: dict[str, Any], files: dict[str, bytes]) -> float:
            raise ResourceExhausted("needs 2 GiB, 1 GiB free")

    driver = Full(Clock())
    with pytest.raises(ResourceExhausted):
        await profile_model(driver, "m", _config(4), FILES, clock=driver.clock)
    assert driver.calls == []


async def test_batch_sizes_beyond_max_batch_size_are_refused() -> None:
    driver = FakeDriver(Clock())
    with pytest.raises(InvalidArgument, match="max_batch_size is 4"):
        await profile_model(driver, "m", _config(4), FILES, batch_sizes=[1, 8], clock=driver.clock)
    assert driver.calls == []


async def test_memory_falls_back_to_the_instance_used_memory_delta() -> None:
    class Reporting(FakeDriver):
        async def memory_used(self) -> int | None:
            return 1000 + 500 * len(self.loaded)

    driver = Reporting(Clock(), memory=None)
    prof = await profile_model(driver, "m", _config(1), FILES, warmup=0, min_runs_per_batch=2,
                               clock=driver.clock)
    assert prof.memory_bytes == 500


class ComputeReporting(FakeDriver):
    """Reports compute time (statistics) as 40% of each round trip, like an instance
    whose transport and serialisation take the rest."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.compute_ns = 0

    async def infer_arrays(self, name: str, inputs: dict[str, np.ndarray],
                           output_names: list[str] | None = None,
                           timeout_s: float | None = None) -> InferTiming:
        timing = await super().infer_arrays(name, inputs, output_names, timeout_s)
        self.compute_ns += round(timing.round_trip_s * 0.4e9)
        return timing

    async def statistics(self, name: str | None = None) -> dict[str, Any]:
        stats = await super().statistics(name)
        part = {"count": self.n_infer, "ns": self.compute_ns // 2}
        stats["model_stats"][0]["inference_stats"] = {
            "compute_input": {"count": self.n_infer, "ns": 0}, "compute_infer": part,
            "compute_output": {"count": self.n_infer, "ns": self.compute_ns - part["ns"]}}
        return stats


async def test_compute_timing_uses_the_instance_statistics_not_the_round_trip() -> None:
    driver = ComputeReporting(Clock())
    prof = await profile_model(driver, "m", _config(4), FILES, warmup=3, min_runs_per_batch=5,
                               loads=1, clock=driver.clock, timing="compute")
    for b, st in prof.exec.items():
        # warm-up runs must not leak into the first measured delta
        assert st.p50_s == pytest.approx(0.0004 * b) and st.p99_s == pytest.approx(0.0004 * b)


async def test_compute_timing_falls_back_to_round_trip_without_statistics() -> None:
    driver = FakeDriver(Clock())
    prof = await profile_model(driver, "m", _config(2), FILES, warmup=0, min_runs_per_batch=5,
                               loads=1, clock=driver.clock, timing="compute")
    assert prof.exec[2].p50_s == pytest.approx(0.002)
    with pytest.raises(ValueError, match="timing"):
        await profile_model(driver, "m", _config(2), FILES, clock=driver.clock, timing="wall")


class LoopDriver(FakeDriver):
    """A model whose running time is its integer input 'n' (microseconds per unit), stopped
    like an inferplex worker stops it past ``timeout_s``."""

    def __init__(self) -> None:
        super().__init__(Clock())
        self.timeouts: list[float | None] = []

    async def infer_arrays(self, name: str, inputs: dict[str, np.ndarray],
                           output_names: list[str] | None = None,
                           timeout_s: float | None = None) -> InferTiming:
        self.timeouts.append(timeout_s)
        took = 1e-4 + float(inputs["n"].max()) * 1e-6
        if timeout_s is not None and took > timeout_s:
            raise DeadlineExceeded("execution of model 'm' was stopped at its deadline")
        self.clock.t += took
        return InferTiming(outputs={}, round_trip_s=took)


def _loop_config() -> dict[str, Any]:
    return {"name": "m", "max_batch_size": 0,
            "input": [{"name": "n", "data_type": "TYPE_INT64", "dims": [1]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]}


async def test_a_model_whose_time_its_integer_inputs_control_is_refused_by_the_exercise_run() -> None:
    driver = LoopDriver()
    with pytest.raises(InvalidArgument, match="ran past .* the model's running time must not be controlled"):
        await profile_model(driver, "m", _loop_config(), FILES, warmup=0, min_runs_per_batch=5,
                            loads=1, clock=driver.clock, exec_timeout_s=5.0)
    # every execution was bounded; the exercise run by 10x the measured time, at least 50 ms
    assert all(t is not None for t in driver.timeouts)
    assert driver.timeouts[-1] == pytest.approx(EXERCISE_MIN_S)
    assert not driver.loaded  # unloaded although the profile failed


async def test_a_model_that_merely_rejects_exercise_inputs_is_profiled() -> None:
    """An embedding's index input refuses large values: that is the model's right."""
    driver = LoopDriver()
    original = driver.infer_arrays
    refused: list[int] = []

    async def embedding(name: str, inputs: dict[str, np.ndarray], output_names: list[str] | None = None,
                        timeout_s: float | None = None) -> InferTiming:
        if inputs["n"].max() >= 1000:
            refused.append(int(inputs["n"].max()))
            raise InvalidArgument("index out of range")
        return await original(name, inputs, output_names, timeout_s)

    driver.infer_arrays = embedding  # type: ignore[method-assign]
    prof = await profile_model(driver, "m", _loop_config(), FILES, warmup=0, min_runs_per_batch=5,
                               loads=1, clock=driver.clock, exec_timeout_s=5.0)
    assert list(prof.exec) == [1]
    assert len(refused) == 1 and refused[0] >= EXERCISE_INT_MAX // 2  # the exercise run, refused

"""Profiling a model with a dynamic sequence dimension records several sizes
(the fake driver of test_profiler_offline, on its virtual clock)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kserve.errors import InvalidArgument
from placement.driver import InferTiming
from profiler.offline import dynamic_sizes, input_specs, profile_model, synthetic_inputs
from profiler.predictor import LatencyPredictor
from profiler.profile import request_elements
from tests.unit.test_profiler_offline import FILES, Clock, FakeDriver

FIXED_S, PER_ELEMENT_S = 0.002, 0.00006


def transformer(max_batch: int = 4) -> dict[str, Any]:
    """all-MiniLM-L6-v2's inputs: three INT64 [batch, seq] tensors."""
    return {"name": "m", "max_batch_size": max_batch,
            "input": [{"name": n, "data_type": "TYPE_INT64", "dims": [-1]}
                      for n in ("input_ids", "attention_mask", "token_type_ids")],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [-1, 384]}]}


class SequenceModel(FakeDriver):
    """Costs a fixed 2 ms plus 0.06 ms per input element; refuses sequences longer
    than ``max_seq`` (positional embeddings end there), as a real transformer does."""

    def __init__(self, clock: Clock, max_seq: int | None = None) -> None:
        super().__init__(clock)
        self.max_seq = max_seq
        self.shapes: list[tuple[tuple[int, ...], ...]] = []

    async def infer_arrays(self, name: str, inputs: dict[str, np.ndarray],
                           output_names: list[str] | None = None,
                           timeout_s: float | None = None) -> InferTiming:
        shapes = tuple(a.shape for a in inputs.values())
        self.shapes.append(shapes)
        if self.max_seq is not None and shapes[0][-1] > self.max_seq:
            raise InvalidArgument(f"sequence of {shapes[0][-1]} is longer than {self.max_seq}")
        dt = FIXED_S + PER_ELEMENT_S * request_elements(shapes)
        self.clock.t += dt
        return InferTiming(outputs={}, round_trip_s=dt)


async def _profile(driver: SequenceModel, config: dict[str, Any], **kw: Any) -> Any:
    return await profile_model(driver, "m", config, FILES, warmup=1, min_runs_per_batch=5,
                               loads=1, clock=driver.clock, max_seconds=1e9, **kw)


async def test_every_batch_is_profiled_at_several_sequence_lengths() -> None:
    driver = SequenceModel(Clock())
    prof = await _profile(driver, transformer(4))
    want = [(3 * b * s, b) for b in (1, 2, 4) for s in (1, 8, 32, 128)]
    assert sorted((p.elements, p.batch) for p in prof.sizes) == sorted(want)
    for p in prof.sizes:
        assert p.stats.p50_s == pytest.approx(FIXED_S + PER_ELEMENT_S * p.elements)
    # exec keeps its meaning: per batch size at sequence length 1
    assert {b: st.p50_s for b, st in prof.exec.items()} == pytest.approx(
        {b: FIXED_S + PER_ELEMENT_S * 3 * b for b in (1, 2, 4)})
    # every input of one execution got the same sequence length
    assert all(len(set(shapes)) == 1 for shapes in driver.shapes)
    assert {shapes[0] for shapes in driver.shapes} == {(b, s) for b in (1, 2, 4) for s in (1, 8, 32, 128)}
    assert prof.observations == 1 + sum(p.stats.n for p in prof.sizes)


async def test_the_element_budget_caps_the_sizes_of_large_batches() -> None:
    driver = SequenceModel(Clock())
    prof = await _profile(driver, transformer(4), max_profile_elements=3 * 4 * 32)
    by_batch: dict[int, list[int]] = {}
    for p in prof.sizes:
        by_batch.setdefault(p.batch or 0, []).append(p.elements // (3 * (p.batch or 1)))
    assert by_batch == {1: [1, 8, 32, 128], 2: [1, 8, 32], 4: [1, 8, 32]}
    assert max(request_elements(s) for s in driver.shapes) == 3 * 4 * 32


async def test_sizes_the_model_refuses_are_skipped_with_the_larger_ones() -> None:
    driver = SequenceModel(Clock(), max_seq=32)
    prof = await _profile(driver, transformer(2))
    assert sorted((p.batch, p.elements // (3 * (p.batch or 1))) for p in prof.sizes) == \
        [(1, 1), (1, 8), (1, 32), (2, 1), (2, 8), (2, 32)]
    # refused once (batch 1), never tried again at batch 2
    assert sum(1 for shapes in driver.shapes if shapes[0][-1] == 128) == 1


async def test_a_fixed_shape_model_gets_one_size_per_batch() -> None:
    driver = SequenceModel(Clock())
    config = dict(transformer(2), input=[{"name": "x", "data_type": "TYPE_FP32", "dims": [3, 5]}])
    prof = await _profile(driver, config)
    assert [(p.elements, p.batch) for p in prof.sizes] == [(15, 1), (30, 2)]


async def test_the_profile_predicts_a_long_sequence_at_its_cost() -> None:
    driver = SequenceModel(Clock())
    prof = await _profile(driver, transformer(4))
    predictor = LatencyPredictor()
    predictor.seed_from_profile("m", "cpu", prof)
    for b, s in ((1, 128), (2, 64), (4, 100)):
        e = 3 * b * s
        assert predictor.exec_time_for("m", "cpu", b, e) == pytest.approx(FIXED_S + PER_ELEMENT_S * e)
    above = predictor.exec_time_for("m", "cpu", 4, 3 * 4 * 512)
    assert above is not None and above >= FIXED_S + PER_ELEMENT_S * 3 * 4 * 512
    assert predictor.exec_time("m", "cpu", 1) == pytest.approx(FIXED_S + PER_ELEMENT_S * 3)


def test_synthetic_inputs_set_every_dynamic_dim_to_the_size() -> None:
    specs = input_specs({"input": [{"name": "img", "data_type": "TYPE_FP32", "dims": [3, -1, -1]},
                                   {"name": "k", "data_type": "TYPE_INT32", "dims": [2]}]})
    rng = np.random.default_rng(0)
    out = synthetic_inputs(specs, 2, True, rng, size=8)
    assert out["img"].shape == (2, 3, 8, 8) and out["k"].shape == (2, 2)
    assert synthetic_inputs(specs, 1, False, rng, size=4)["img"].shape == (3, 4, 4)
    assert synthetic_inputs(specs, 2, True, rng)["img"].shape == (2, 3, 1, 1)  # as before sizes
    # 3*s*s + 2 elements per row: s=128 is 49154, over a 2**15 budget at batch 1
    assert dynamic_sizes(specs, 1, True, max_elements=1 << 15) == [1, 8, 32]
    fixed = input_specs({"input": [{"name": "k", "data_type": "TYPE_INT32", "dims": [2]}]})
    assert dynamic_sizes(fixed, 8, True) == [1]


async def test_large_points_stop_after_a_few_runs_once_their_time_share_is_spent() -> None:
    driver = SequenceModel(Clock())
    prof = await profile_model(driver, "m", transformer(2), FILES, warmup=3, min_runs_per_batch=20,
                               loads=1, clock=driver.clock, max_seconds=0.01)
    runs = {(p.batch, p.elements // (3 * (p.batch or 1))): p.stats.n for p in prof.sizes}
    assert all(n == 20 for (_, s), n in runs.items() if s == 1)  # size 1: a full chunk, as before
    assert all(n == 3 for (_, s), n in runs.items() if s > 1)
    # one warm-up run per larger size: the batch is warm already
    assert sum(1 for shapes in driver.shapes if shapes[0] == (2, 128)) == 1 + 3


async def test_a_point_near_the_execution_limit_is_the_largest_profiled() -> None:
    driver = SequenceModel(Clock())
    # 3*1*32 elements take 2 ms + 5.8 ms: over a 40 ms limit / 8, so nothing larger runs
    prof = await _profile(driver, transformer(2), exec_timeout_s=0.04)
    sizes = sorted((p.batch, p.elements // (3 * (p.batch or 1))) for p in prof.sizes)
    assert sizes == [(1, 1), (1, 8), (1, 32), (2, 1), (2, 8)]
    assert max(request_elements(s) for s in driver.shapes) == 3 * 1 * 32

"""The placement benchmark's pure parts: popularity, schedules, metric parsing, attainment."""

from __future__ import annotations

import io

import numpy as np
import pytest

from bench import _placement_setup as ps
from bench.loadgen import Outcome, Record


def _rec(model: str, scheduled: float, outcome: Outcome, latency_s: float | None = 0.01) -> Record:
    if outcome is Outcome.NOT_SENT:
        return Record(model, "t", model, scheduled, None, None, outcome, "not sent")
    return Record(model, "t", model, scheduled, scheduled, scheduled + (latency_s or 0.0), outcome, "200")


def test_zipf_weights_follow_the_power_law_and_sum_to_one() -> None:
    w = ps.zipf_weights(100, 1.1)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(2 ** 1.1)
    assert all(np.diff(w) < 0)
    with pytest.raises(ValueError):
        ps.zipf_weights(0, 1.1)


def test_phase_rates_are_a_seeded_permutation_of_one_popularity() -> None:
    a, b = ps.phase_rates(100.0, 20, 1.1, seed=1), ps.phase_rates(100.0, 20, 1.1, seed=2)
    assert a.sum() == pytest.approx(100.0)
    np.testing.assert_allclose(np.sort(a), np.sort(b))  # same popularity...
    assert not np.allclose(a, b)  # ...over other models
    np.testing.assert_array_equal(a, ps.phase_rates(100.0, 20, 1.1, seed=1))


def test_schedules_are_reproducible_and_each_phase_stays_in_its_window() -> None:
    phases = [ps.Phase("before", 0.0, 10.0, (50.0, 1.0)), ps.Phase("after", 10.0, 10.0, (1.0, 50.0))]
    s = ps.schedules(phases, seed=7)
    assert s == ps.schedules(phases, seed=7)
    assert s != ps.schedules(phases, seed=8)
    hot_before = [t for t in s[0] if t < 10.0]
    hot_after = [t for t in s[1] if t >= 10.0]
    assert 400 < len(hot_before) < 600 and 400 < len(hot_after) < 600
    assert all(0.0 <= t < 20.0 for sched in s for t in sched)
    assert all(a <= b for sched in s for a, b in zip(sched, sched[1:], strict=False))
    with pytest.raises(ValueError):
        ps.schedules([ps.Phase("a", 0, 1, (1.0,)), ps.Phase("b", 1, 1, (1.0, 2.0))], seed=0)


METRICS = """# HELP inferplex_model_loads_total Model loads.
# TYPE inferplex_model_loads_total counter
inferplex_model_loads_total{tenant="acme",model="a",outcome="ok"} 3
inferplex_model_loads_total{tenant="acme",model="b",outcome="ok"} 2
inferplex_model_loads_total{tenant="acme",model="b",outcome="failed"} 1
# HELP inferplex_evictions_total Unloads.
# TYPE inferplex_evictions_total counter
inferplex_cold_starts_total 4.5e+00
"""


def test_metric_totals_sum_over_labels_and_tell_absent_from_zero() -> None:
    fams = ["inferplex_model_loads_total", "inferplex_evictions_total", "inferplex_cold_starts_total",
            "inferplex_model_bytes_loaded_total"]
    got = ps.metric_totals(METRICS, fams)
    assert got == {"inferplex_model_loads_total": 6.0, "inferplex_evictions_total": 0.0,
                   "inferplex_cold_starts_total": 4.5, "inferplex_model_bytes_loaded_total": None}
    ok = ps.metric_totals(METRICS, ["inferplex_model_loads_total"], where={"outcome": "ok"})
    assert ok == {"inferplex_model_loads_total": 5.0}
    assert ps.counter_delta({"x": 5.0, "y": 1.0}, {"x": 2.0, "y": None}) == {"x": 3.0, "y": None}


def test_attainment_counts_refusals_as_misses_and_leaves_unsent_out() -> None:
    slos = {"m": 50.0}
    records = [_rec("m", 0.1, Outcome.OK, 0.010), _rec("m", 0.2, Outcome.OK, 0.060),  # in time / late
               _rec("m", 0.3, Outcome.INFEASIBLE), _rec("m", 0.4, Outcome.NOT_SENT),
               _rec("m", 1.5, Outcome.OK, 0.010)]
    a = ps.attainment(records, slos, 0.0, 1.0)
    assert (a.sent, a.within_slo, a.refused, a.not_sent) == (3, 1, 1, 1)
    assert a.attainment == pytest.approx(1 / 3)
    assert a.goodput_rps == pytest.approx(1.0)
    series = ps.attainment_series(records, slos, 2.0, 1.0)
    assert series == [(0.0, pytest.approx(1 / 3)), (1.0, 1.0)]
    assert ps.attainment([], slos, 0.0, 1.0).attainment is None


def test_counter_samples_give_rates_per_minute_and_values_at_phase_edges() -> None:
    fam = "inferplex_cold_starts_total"
    samples = [(0.0, {fam: 0.0}), (10.0, {fam: 5.0}), (20.0, {fam: None}), (30.0, {fam: 15.0})]
    assert ps.rate_per_minute(samples, fam) == [(5.0, 30.0), (20.0, 30.0)]
    assert ps.value_at(samples, fam, 12.0) == 5.0
    assert ps.value_at(samples, fam, 25.0) == 5.0  # the gap keeps the last value seen
    assert ps.value_at(samples, "absent", 25.0) is None


def test_ideal_miss_fraction_keeps_the_most_requests_per_byte() -> None:
    # model 1 is twice as popular as model 2 but four times the bytes: per byte, 0 and 2 win
    rates, sizes = [6.0, 3.0, 1.0], [10, 40, 10]
    assert ps.ideal_miss_fraction(rates, sizes, 20) == pytest.approx(0.3)
    assert ps.ideal_miss_fraction(rates, sizes, 60) == 0.0
    assert ps.hot_set([1.0, 6.0, 3.0], 0.6) == [1]
    assert ps.hot_set([1.0, 6.0, 3.0], 0.95) == [1, 2, 0]


def test_offered_rate_pays_for_the_loads_the_misses_cause() -> None:
    assert ps.offered_rate(100.0, 0.0, 0.1, 1.0) == pytest.approx(100.0)
    # 10% of requests each add a 100 ms load: 0.01 + 0.01 s of instance time per request
    assert ps.offered_rate(100.0, 0.1, 0.1, 0.6) == pytest.approx(30.0)
    with pytest.raises(ValueError):
        ps.offered_rate(100.0, 0.1, 0.1, 0.0)


def test_onnx_dense_model_keeps_rows_apart_and_its_type_in_the_name() -> None:
    import onnxruntime as ort

    models = ps.model_set(4, types=(("onnx", 16, 3, 4), ("onnx", 32, 2, 2)), max_batch_size=4)
    assert [m.name for m in models] == ["m000_onnx16", "m001_onnx32", "m002_onnx16", "m003_onnx32"]
    assert [ps.model_type(m.name) for m in models[:2]] == ["onnx16", "onnx32"]
    assert models[0].artifact.data == models[2].artifact.data and models[2].artifact.config["name"] == "m002_onnx16"
    session = ort.InferenceSession(models[0].artifact.data, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    batch = session.run(None, {"INPUT0": x})[0]
    alone = session.run(None, {"INPUT0": x[1:2]})[0]
    assert batch.shape == (3, 16)
    np.testing.assert_allclose(batch[1], alone[0], rtol=1e-5, atol=1e-6)
    assert ps.upload_options(models[0]) == {"max_batch_size": 4, "slo_ms": 0.0}


def test_torchscript_twin_computes_what_the_onnx_model_does() -> None:
    import onnxruntime as ort
    import torch

    onnx_art = ps.onnx_dense("a", 3, 16, 4)
    pt_art = ps.torchscript_dense("b", 3, 16, 4)
    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    want = ort.InferenceSession(onnx_art.data, providers=["CPUExecutionProvider"]).run(None, {"INPUT0": x})[0]
    got = torch.jit.load(io.BytesIO(pt_art.data))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert ps.upload_options(ps.BenchModel("b", pt_art, {}, 8, 100.0))["inputs"] == [
        {"name": "INPUT__0", "datatype": "FP32", "dims": [16]}]


def test_a_policy_entry_may_set_the_eviction_margin_for_its_run() -> None:
    from bench.placement_eviction import policy_env

    assert policy_env("cost") == {"INFERPLEX_PLACEMENT_POLICY": "cost"}
    assert policy_env("cost@16") == {"INFERPLEX_PLACEMENT_POLICY": "cost", "INFERPLEX_PLACEMENT_EVICT_MARGIN": "16"}
    assert policy_env("lru") == {"INFERPLEX_PLACEMENT_POLICY": "lru"}

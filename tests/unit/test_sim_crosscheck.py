"""The cross-check benchmark's pure parts and its simulated half (the real half needs
``inferplex up``: it runs only in the benchmark itself)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench import loadgen
from bench import sim_crosscheck as xc
from sim.profiles import Profile
from sim.workload import SimModel, poisson_workload


def _profile(name: str, ms: float) -> Profile:
    return Profile(name=name, bytes=20 << 20, load_cold_s=0.08, load_warm_s=0.06,
                   exec_s=((1, ms / 1e3), (2, 1.9 * ms / 1e3), (4, 3.6 * ms / 1e3)), max_batch=4,
                   source="test", exec_p99_s=((1, 1.3 * ms / 1e3), (2, 2.4 * ms / 1e3), (4, 4.5 * ms / 1e3)))


def test_slo_is_factor_times_p99_plus_overhead_rounded_up_with_a_floor():
    assert xc.slo_ms(8.89, 5.0) == 55.0
    assert xc.slo_ms(1.0, 5.0) == 20.0
    assert xc.slo_ms(13.95, 5.0) == 80.0


def test_overhead_is_added_to_every_execution_and_noise_follows_the_profiles_spread():
    p = xc.with_overhead(_profile("a", 5.0), 0.002)
    assert p.exec_at(1) == pytest.approx(0.007) and p.exec_at(4) == pytest.approx(0.020)
    assert p.exec_p99_at(1) == pytest.approx(0.0085)
    assert "overhead" in p.source
    tight = xc.noise_cv([_profile("a", 5.0)])
    wide = xc.noise_cv([Profile("b", 1, 0.1, 0.1, ((1, 0.005),), 1, "t", exec_p99_s=((1, 0.015),))])
    assert 0.05 < tight < 0.2 < wide


def test_warm_up_loads_every_model_first_then_replays_the_workload_later():
    w = poisson_workload(3, 30, 20.0, 1)
    models = [SimModel(f"m{i}", "t", _profile(f"m{i}", 4.0), 0.05) for i in range(3)]
    warm = xc.warmed(w, models, 5.0)
    chunks = list(warm.chunks())
    assert list(chunks[0].model) == [0, 1, 2] and chunks[0].t.max() < 5.0
    orig = np.concatenate([c.t for c in w.chunks()])
    later = np.concatenate([c.t for c in chunks[1:]])
    assert np.allclose(later, orig + 5.0) and warm.duration_s == 35.0
    scheds = xc.schedules(w)
    assert sum(map(len, scheds)) == len(orig) and all(s == sorted(s) for s in scheds)
    with pytest.raises(ValueError, match="warm-up needs"):
        xc.warmed(w, models, 1.0)


def test_observed_noise_resamples_the_real_executions_relative_to_the_profile():
    ratios = xc.observed_ratios([{"model": "acme__a", "batch": 1, "observed_s": 0.010},
                                 {"model": "acme__a", "batch": 4, "observed_s": 0.018},
                                 {"model": "acme__zz", "batch": 1, "observed_s": 1.0}], {"a": _profile("a", 5.0)})
    assert ratios == pytest.approx([2.0, 1.0])
    noise = xc.ObservedNoise(ratios * 50, seed=3)
    draws = {noise.factor() for _ in range(200)}
    assert draws == {1.0, 2.0} and noise.quantile(0) == 1.0 and noise.quantile(100) == 2.0


def test_real_outcome_counts_refusals_drops_and_late_answers():
    def rec(model, outcome, latency):
        return loadgen.Record("s", "t", model, 0.0, 0.0, None if latency is None else latency, outcome,
                              "200" if outcome is loadgen.Outcome.OK else "503")
    records = [rec("a", loadgen.Outcome.OK, 0.010), rec("a", loadgen.Outcome.OK, 0.090),
               rec("b", loadgen.Outcome.INFEASIBLE, None), rec("b", loadgen.Outcome.DROPPED, None),
               rec("b", loadgen.Outcome.OK, 0.020),
               loadgen.Record("s", "t", "b", 0.0, None, None, loadgen.Outcome.NOT_SENT, "not sent")]
    o = xc.real_outcome(records, {"a": 50.0, "b": 50.0})
    assert (o.sent, o.refused, o.dropped, o.ok_in_slo, o.late, o.other) == (5, 1, 1, 2, 1, 0)
    assert o.slo_admitted == pytest.approx(2 / 4) and o.slo_all == pytest.approx(2 / 5)
    assert o.per_model == (("a", 2, 1), ("b", 1, 1))


def test_simulated_half_counts_only_after_the_warm_up_and_tells_models_apart():
    w = poisson_workload(3, 60, 40.0, 2)
    models = [SimModel(f"m{i}", "t", _profile(f"m{i}", 4.0 + 2 * i), 0.06) for i in range(3)]
    o = xc.simulate(w, models, 1 << 30, 1, 0.05, 5.0, "sim")
    n = sum(len(c) for c in w.chunks())
    assert o.sent == n                       # the warm-up's three arrivals are not counted
    assert o.refused == 0 and o.slo_admitted is not None and o.slo_admitted > 0.98
    assert sum(a for _, a, _ in o.per_model) == o.ok_in_slo + o.late
    assert [m for m, _, _ in o.per_model] == ["m0", "m1", "m2"]
    assert 4.0 < o.p50_ms < 60.0


def test_the_report_is_written_from_both_halves(tmp_path, monkeypatch):
    def fake_real(tmp, bench_models, memory, plan):
        profiles = {m.name: _profile(m.name, 5.0) for m in bench_models}
        levels = [[loadgen.Record("s", xc.TENANT, m.name, t, t, t + 0.012, loadgen.Outcome.OK, "200")
                   for m, s in zip(bench_models, scheds, strict=True) for t in s]
                  for scheds, _ in plan(profiles, 0.002)]
        samples = [[{"model": f"{xc.TENANT}__{m.name}", "batch": 1, "observed_s": 0.005 * f}
                    for m in bench_models for f in (0.9, 1.0, 1.1, 2.0)]] * len(levels)
        return xc.RealRun(levels, samples, profiles, {}, 0.002, 1.0, memory)

    monkeypatch.setattr(xc, "real_half", fake_real)
    monkeypatch.setattr(loadgen, "pin_driver", lambda cpus: None)
    out = tmp_path / "x.md"
    assert xc.main(["--minutes", "0.25", "--models", "2", "--utilization", "0.4,0.8", "--out", str(out)]) == 0
    text = out.read_text()
    assert len(re.findall(r"^\| (40|80)% \| [\d.]+ \| real \|", text, re.M)) == 2
    assert len(re.findall(r"^\| (40|80)% \| [\d.]+ \| sim: (profiles as read|\+ 2\.00 ms overhead) \|", text, re.M)) == 4
    assert len(re.findall(r"^\| (40|80)% \| [\d.]+ \| sim: \+ overhead, 8 real executions' spread", text, re.M)) == 2
    assert text.count("**met**") + text.count("**missed**") == 6
    assert out.with_suffix(".png").stat().st_size > 1000

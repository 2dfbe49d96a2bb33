"""The simulator's workloads: seeded, time-ordered, at the rates and shapes asked for;
the Azure trace reader round-trips a written trace and names a malformed file's line."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest

from sim.azure_trace import TraceFormatError, from_azure_csv, read_invocations
from sim.profiles import GPU_PROFILES
from sim.workload import Arrival, azure_like, gamma_workload, poisson_workload


def _arrays(w):
    chunks = list(w.chunks())
    return np.concatenate([c.t for c in chunks]), np.concatenate([c.model for c in chunks])


GENERATORS = {
    "azure": lambda seed: azure_like(300, 600, 50.0, seed),
    "poisson": lambda seed: poisson_workload(50, 600, 40.0, seed, shift=True),
    "gamma": lambda seed: gamma_workload(50, 600, 40.0, seed, cv=3.0, shift=True),
}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_same_seed_gives_the_same_trace_and_another_seed_another(kind):
    a = list(GENERATORS[kind](7).arrivals())
    b = list(GENERATORS[kind](7).arrivals())
    c = list(GENERATORS[kind](8).arrivals())
    assert a == b and len(a) > 1000
    assert a != c
    w = GENERATORS[kind](7)
    assert list(w.arrivals()) == list(w.arrivals())  # iterating twice replays it


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_arrivals_are_time_ordered_within_the_duration_and_name_real_models(kind):
    w = GENERATORS[kind](3)
    t, m = _arrays(w)
    assert np.all(np.diff(t) >= 0)
    assert t.min() >= 0 and t.max() < w.duration_s
    assert m.min() >= 0 and m.max() < len(w.models)
    first = next(iter(w.arrivals()))
    assert isinstance(first, Arrival) and first.rows == 1 and first.t == t[0]


@pytest.mark.parametrize(("kind", "rate", "tol"), [("poisson", 200.0, 0.03), ("gamma", 200.0, 0.05),
                                                  ("azure", 200.0, 0.08)])
def test_the_mean_rate_is_the_one_asked_for(kind, rate, tol):
    dur = 1800
    w = {"poisson": lambda: poisson_workload(100, dur, rate, 1),
         "gamma": lambda: gamma_workload(100, dur, rate, 1, cv=2.0),
         "azure": lambda: azure_like(2000, dur, rate, 1)}[kind]()
    n = sum(len(c) for c in w.chunks())
    assert abs(n / dur - rate) / rate < tol
    assert w.model_rates is not None and abs(w.model_rates.sum() - rate) / rate < 1e-6


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_interarrivals_have_the_requested_cv(cv):
    w = gamma_workload(4, 1500, 40.0, 5, cv=cv, zipf_s=0.0)  # 10 req/s each
    t, m = _arrays(w)
    gaps = np.diff(t[m == 0])
    assert len(gaps) > 10_000
    assert abs(gaps.std() / gaps.mean() - cv) / cv < 0.12
    assert abs(len(gaps) / 1500 - 10.0) / 10.0 < 0.1


def test_poisson_interarrivals_have_cv_one_and_zipf_shares():
    w = poisson_workload(20, 1200, 100.0, 2, zipf_s=1.0)
    t, m = _arrays(w)
    gaps = np.diff(t)
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05
    counts = np.bincount(m, minlength=20)
    top = np.sort(counts)[::-1]
    # Zipf s=1: the top model gets twice the second's requests, ten times the tenth's
    assert 1.7 < top[0] / top[1] < 2.3 and 7 < top[0] / top[9] < 13


@pytest.mark.parametrize("kind", ["poisson", "gamma"])
def test_the_popularity_shift_at_half_time_changes_the_top_model(kind):
    make = {"poisson": lambda **k: poisson_workload(30, 1200, 60.0, 4, zipf_s=1.2, **k),
            "gamma": lambda **k: gamma_workload(30, 1200, 60.0, 4, cv=1.5, zipf_s=1.2, **k)}[kind]
    t, m = _arrays(make(shift=True))
    before = np.bincount(m[t < 600], minlength=30)
    after = np.bincount(m[t >= 600], minlength=30)
    assert before.argmax() != after.argmax()
    t2, m2 = _arrays(make(shift=False))
    assert np.bincount(m2[t2 < 600], minlength=30).argmax() == np.bincount(m2[t2 >= 600], minlength=30).argmax()


def test_azure_like_popularity_spans_orders_of_magnitude_and_few_tenants_own_many_models():
    w = azure_like(5000, 3600, 500.0, 1)
    rates = np.sort(w.model_rates)
    assert rates[-1] / rates[len(rates) // 100] > 1e5      # top vs 1st percentile of expected rates
    _, m = _arrays(w)
    counts = np.bincount(m, minlength=5000)
    seen = np.sort(counts[counts > 0])
    assert seen[-1] / seen[0] > 1e4                         # observed, an hour
    assert (counts == 0).sum() > 250                        # some functions silent all hour
    owners = np.unique([x.tenant for x in w.models], return_counts=True)[1]
    assert len(owners) == 100
    assert np.sort(owners)[-5:].sum() > 0.3 * 5000          # the top five tenants own a third


def test_azure_like_rates_change_from_minute_to_minute():
    w = azure_like(500, 1800, 300.0, 2)
    t, m = _arrays(w)
    hot = int(np.argmax(w.model_rates))
    per_min = np.bincount((t[m == hot] // 60).astype(int), minlength=30)
    # far more spread than a constant-rate Poisson stream's sqrt(mean)
    assert per_min.std() > 2.0 * np.sqrt(per_min.mean())


def test_slo_is_a_multiple_of_batch1_with_a_floor():
    w = poisson_workload(40, 60, 10.0, 1, profiles=list(GPU_PROFILES.values()))
    for x in w.models:
        assert x.slo_s == pytest.approx(max(0.1, 10 * x.profile.exec_at(1)))
    assert {x.slo_s for x in poisson_workload(5, 60, 10.0, 1, slo_s=0.25).models} == {0.25}


def test_generation_is_fast():
    w = azure_like(10_000, 120, 2000.0, 1)
    start = time.perf_counter()
    n = sum(1 for _ in w.arrivals())
    rate = n / (time.perf_counter() - start)
    assert n > 200_000
    assert rate > 250_000  # >= 1M/s on an idle core; lenient for a shared machine


def test_bad_arguments_are_refused_with_what_to_fix():
    with pytest.raises(ValueError, match="rate"):
        poisson_workload(3, 60, 0.0, 1)
    with pytest.raises(ValueError, match="coefficient of variation"):
        gamma_workload(3, 60, 1.0, 1, cv=0.0)
    with pytest.raises(ValueError, match="at least one model"):
        azure_like(0, 60, 1.0, 1)


# --- the trace reader -----------------------------------------------------------------------

def _write_trace(path: Path, rows: list[tuple[str, str, str, str, list[int]]], minutes: int) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["HashOwner", "HashApp", "HashFunction", "Trigger", *range(1, minutes + 1)])
        for owner, app, fn, trig, counts in rows:
            w.writerow([owner, app, fn, trig, *counts])


@pytest.fixture
def trace(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"own{i % 3}", f"app{i}", f"fn{i}", "http" if i % 2 else "timer",
             list(rng.poisson(20.0 / (i + 1), 10))) for i in range(8)]
    rows[0][4][3] = 0
    d1, d2 = tmp_path / "invocations_per_function_md.anon.d01.csv", tmp_path / "invocations_per_function_md.anon.d02.csv"
    _write_trace(d1, rows, 10)
    _write_trace(d2, [(o, a, f, tr, c[::-1]) for o, a, f, tr, c in rows[:5]], 10)
    return [d1, d2], rows


def test_trace_reader_round_trips_the_counts_of_a_written_trace(trace):
    paths, rows = trace
    got = read_invocations(paths)
    assert got.counts.shape == (8, 20)
    for i, (o, a, f, _, c) in enumerate(rows):
        j = [k for k, fn in enumerate(got.functions) if (fn.owner, fn.app, fn.function) == (o, a, f)][0]
        assert list(got.counts[j, :10]) == c
        assert list(got.counts[j, 10:]) == (c[::-1] if i < 5 else [0] * 10)
    w = from_azure_csv(paths, n_models=8, seed=1, spread="uniform")
    t, m = _arrays(w)
    assert w.duration_s == 20 * 60 and np.all(np.diff(t) >= 0)
    per_minute = np.zeros((8, 20), dtype=int)
    np.add.at(per_minute, (m, (t // 60).astype(int)), 1)
    order = [[k for k, fn in enumerate(got.functions) if fn.function == x.name.split("-")[1]][0] for x in w.models]
    assert (per_minute == got.counts[order]).all()   # uniform spread keeps every minute's count exactly
    assert {x.tenant for x in w.models} == {"owner-own0", "owner-own1", "owner-own2"}


def test_trace_top_mapping_keeps_the_most_invoked_and_hash_keeps_every_invocation(trace):
    paths, rows = trace
    top = from_azure_csv(paths, n_models=3, seed=1)
    assert [x.name.split("-")[1] for x in top.models] == ["fn0", "fn1", "fn2"]
    hashed = from_azure_csv(paths, n_models=3, seed=1, mapping="hash")
    total = sum(sum(c) for *_, c in rows) + sum(sum(c) for *_, c in rows[:5])
    assert sum(len(c) for c in hashed.chunks()) == total
    even = from_azure_csv(paths, n_models=8, seed=1, spread="even", time_scale=0.5, minutes=(2, 6))
    t, _ = _arrays(even)
    assert even.duration_s == 4 * 30 and t.max() < 120


def test_trace_reader_rejects_a_malformed_file_naming_file_and_line(tmp_path):
    bad = tmp_path / "invocations_per_function_md.anon.d01.csv"
    _write_trace(bad, [("o", "a", "f", "http", [1, 2, 3])], 3)
    with bad.open("a") as fh:
        fh.write("o,a,g,http,1,x,3\n")
    with pytest.raises(TraceFormatError, match=r"d01\.csv, line 3: minute 2 holds 'x'"):
        read_invocations([bad])
    short = tmp_path / "short.csv"
    _write_trace(short, [("o", "a", "f", "http", [1, 2])], 3)
    with pytest.raises(TraceFormatError, match=r"short\.csv, line 2: 6 fields, the header has 7"):
        from_azure_csv([short], 2, 1)
    header = tmp_path / "header.csv"
    header.write_text("Owner,App,Function,Trigger,1\n")
    with pytest.raises(TraceFormatError, match=r"header\.csv, line 1: the header must start with HashOwner"):
        read_invocations([header])
    neg = tmp_path / "neg.csv"
    _write_trace(neg, [("o", "a", "f", "http", [1, -2, 3])], 3)
    with pytest.raises(TraceFormatError, match=r"neg\.csv, line 2: minute 2 holds -2"):
        read_invocations([neg])


def test_trace_reader_takes_gzipped_files_and_sizes_models_by_app_memory(trace, tmp_path):
    import gzip

    paths, rows = trace
    gz = tmp_path / "invocations_per_function_md.anon.d01.csv.gz"
    gz.write_bytes(gzip.compress(paths[0].read_bytes()))
    assert (read_invocations([gz]).counts == read_invocations([paths[0]]).counts).all()
    mem = tmp_path / "app_memory_percentiles.anon.d01.csv"
    with mem.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["HashOwner", "HashApp", "SampleCount", "AverageAllocatedMb"])
        for i, (owner, app, *_) in enumerate(rows):
            w.writerow([owner, app, 10, 100 + 50 * i])  # app i uses more memory as i grows
    profs = [GPU_PROFILES["resnet50-v100"], GPU_PROFILES["bert-large-v100"]]
    wl = from_azure_csv([gz], n_models=8, seed=1, profiles=profs, memory_paths=[mem])
    by_fn = {x.name.split("-")[1]: x.profile.name for x in wl.models}
    assert by_fn["fn0"] == "resnet50-v100" and by_fn["fn7"] == "bert-large-v100"
    bad = tmp_path / "app_memory_bad.csv"
    bad.write_text("HashOwner,HashApp,AverageAllocatedMb\nown0,app0,lots\n")
    with pytest.raises(TraceFormatError, match=r"app_memory_bad\.csv, line 2: AverageAllocatedMb holds 'lots'"):
        from_azure_csv([gz], n_models=8, seed=1, memory_paths=[bad])


def test_trace_poisson_spread_and_rate_scale_keep_the_counts_on_average(tmp_path):
    path = tmp_path / "invocations_per_function_md.anon.d01.csv"
    _write_trace(path, [("o", "a", f"f{i}", "http", [200 + 10 * i] * 30) for i in range(3)], 30)
    total = sum((200 + 10 * i) * 30 for i in range(3))
    pois = from_azure_csv([path], 3, seed=2, spread="poisson")
    assert abs(sum(len(c) for c in pois.chunks()) - total) < 4 * total ** 0.5
    half = from_azure_csv([path], 3, seed=2, rate_scale=0.5)
    assert abs(sum(len(c) for c in half.chunks()) - total / 2) <= 30 * 3
    assert half.mean_rate == pytest.approx(total / 2 / (30 * 60))
    with pytest.raises(ValueError, match="spread must be one of"):
        from_azure_csv([path], 3, seed=2, spread="bursty")

"""The peers trace: one popularity ranking across offered-load levels, arrivals per level."""

from __future__ import annotations

from types import SimpleNamespace

from bench.peers import workload as wl

MODELS = [SimpleNamespace(name=f"m{i:02d}") for i in range(12)]


def _hottest(level: wl.Level, half: int) -> str:
    mid = level.duration_s / 2
    counts = {name: sum(1 for t in times if (t >= mid) == bool(half)) for name, times in level.schedules.items()}
    return max(counts, key=lambda name: counts[name])


def test_levels_sharing_a_popularity_seed_rank_models_alike_but_draw_their_own_arrivals() -> None:
    a = wl.level(MODELS, 400.0, 20.0, seed=8, popularity_seed=7)  # type: ignore[arg-type]
    b = wl.level(MODELS, 800.0, 20.0, seed=9, popularity_seed=7)  # type: ignore[arg-type]
    for half in (0, 1):
        assert _hottest(a, half) == _hottest(b, half)
    assert a.schedules != b.schedules
    assert 1.5 < b.requests / a.requests < 2.5  # twice the rate: about twice the requests


def test_without_a_popularity_seed_each_seed_draws_its_own_ranking() -> None:
    rankings = {tuple(_hottest(wl.level(MODELS, 400.0, 20.0, seed=s), h)  # type: ignore[arg-type]
                      for h in (0, 1)) for s in range(6)}
    assert len(rankings) > 1


def test_the_runner_gives_the_warm_up_and_every_level_one_ranking(tmp_path) -> None:
    from bench.peers import runner
    spec = runner.Spec(models_dir=str(tmp_path), cpus="1", threads=1, model_memory_bytes=1, driver_cpus="0",
                       capacity_rps=500.0, levels=[0.5, 1.0, 2.0], level_s=20.0, warmup_s=20.0,
                       warmup_level=0.5, seed=8, zipf_s=1.0, workdir=str(tmp_path))
    warm, levels = spec.trace(MODELS)  # type: ignore[arg-type]
    a, b = _hottest(warm, 0), _hottest(warm, 1)
    assert a != b  # the popularity shifts half-way
    trace = [warm, *levels]
    for before, after in zip(trace, trace[1:], strict=False):
        # each level begins with the ranking the one before ended with, and shifts half-way
        assert _hottest(after, 0) == _hottest(before, 1) and {_hottest(after, 0), _hottest(after, 1)} == {a, b}

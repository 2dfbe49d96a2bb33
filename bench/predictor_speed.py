"""How fast the predictor answers (issue 5: "fast, microseconds per call").

    python -m bench.predictor_speed

Builds a LatencyPredictor over many models with live windows at batch sizes 1, 2, 4, 8,
then times, side by side in one run: a prediction for a measured batch size (cached curve),
one for an unmeasured batch size (interpolated), the first prediction after a new
observation (curve rebuilt), an observation, and a load-time prediction; the same by input
size (``exec_time_for``: live windows at ELEMENTS, a measured size, one between, one above
all, and a sized observation followed by a prediction); next to the naive
way of answering (numpy.percentile over the window on every call), as a ratio.
Writes bench/results/predictor_speed.{md,png}.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench._common import pyplot
from profiler.predictor import LatencyPredictor

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = (1, 2, 4, 8)
ELEMENTS = (3, 24, 96, 384, 768, 1536)  # a 3-input transformer at seq 1..128, batch 1..4


def _build(models: int, window: int, rng: random.Random) -> tuple[LatencyPredictor, dict[tuple[str, int], list[float]]]:
    predictor = LatencyPredictor()
    raw: dict[tuple[str, int], list[float]] = {}
    for m in range(models):
        name = f"t__m{m}"
        for b in BATCHES:
            values = [0.001 * b * rng.uniform(0.9, 1.2) for _ in range(window)]
            raw[(name, b)] = values
            for v in values:
                predictor.observe_exec(name, "cpu", b, v)
        for e in ELEMENTS:
            for _ in range(window):
                predictor.observe_exec(name, "cpu", 1, 0.002 + 6e-5 * e * rng.uniform(0.9, 1.2), elements=e)
        for _ in range(20):
            predictor.observe_load(name, "cpu", rng.uniform(0.05, 0.08))
    return predictor, raw


def _time_per_call(fn: Callable[[int], object], calls: int) -> float:
    """Microseconds per call, best of 5 rounds (the machine is shared)."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(calls):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def run(models: int, calls: int) -> dict[str, float]:
    rng = random.Random(7)
    predictor, raw = _build(models, predictor_window := LatencyPredictor().config.window, rng)
    names = [f"t__m{m}" for m in range(models)]
    keys = [(names[i % models], BATCHES[i % len(BATCHES)]) for i in range(calls)]
    # warm every curve once so "cached" means cached
    for name in names:
        predictor.exec_time(name, "cpu", 1)
        predictor.exec_time_for(name, "cpu", 1, 3)
    sized = [ELEMENTS[i % len(ELEMENTS)] for i in range(calls)]

    def cached(i: int) -> object:
        name, b = keys[i]
        return predictor.exec_time(name, "cpu", b)

    def interpolated(i: int) -> object:
        return predictor.exec_time(keys[i][0], "cpu", 3)

    def observe(i: int) -> object:
        name, b = keys[i]
        predictor.observe_exec(name, "cpu", b, 0.001 * b)
        return None

    def after_observe(i: int) -> object:
        name, b = keys[i]
        predictor.observe_exec(name, "cpu", b, 0.001 * b)
        return predictor.exec_time(name, "cpu", b)

    def by_size(i: int) -> object:
        return predictor.exec_time_for(keys[i][0], "cpu", 1, sized[i])

    def by_size_between(i: int) -> object:
        return predictor.exec_time_for(keys[i][0], "cpu", 1, 200)

    def by_size_above(i: int) -> object:
        return predictor.exec_time_for(keys[i][0], "cpu", 4, 6144)

    def after_sized_observe(i: int) -> object:
        name = keys[i][0]
        predictor.observe_exec(name, "cpu", 1, 0.01, elements=sized[i])
        return predictor.exec_time_for(name, "cpu", 1, sized[i])

    def load(i: int) -> object:
        return predictor.load_time(keys[i][0], "cpu")

    def naive(i: int) -> object:
        return float(np.percentile(raw[keys[i]], 99))

    return {
        "exec_time, measured batch (cached)": _time_per_call(cached, calls),
        "exec_time, unmeasured batch (interpolated)": _time_per_call(interpolated, calls),
        "observe_exec": _time_per_call(observe, calls),
        "observe_exec + exec_time (curve rebuilt)": _time_per_call(after_observe, calls),
        "exec_time_for, measured size (cached)": _time_per_call(by_size, calls),
        "exec_time_for, between sizes (interpolated)": _time_per_call(by_size_between, calls),
        "exec_time_for, above all sizes (extrapolated)": _time_per_call(by_size_above, calls),
        "observe_exec(elements=) + exec_time_for (curve rebuilt)": _time_per_call(after_sized_observe, calls),
        "load_time": _time_per_call(load, calls),
        f"naive: numpy.percentile over a {predictor_window}-sample window": _time_per_call(naive, calls),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--calls", type=int, default=20000)
    args = p.parse_args(argv)
    results = run(args.models, args.calls)
    naive = results[next(k for k in results if k.startswith("naive"))]
    lines = [
        "# Predictor speed",
        "",
        f"Command: `python -m bench.predictor_speed --models {args.models} --calls {args.calls}` — "
        f"{platform.machine()}, {platform.python_version()}; {args.models} models x batch sizes "
        f"{list(BATCHES)} and sizes {list(ELEMENTS)} (elements) with full live windows; best of 5 rounds of {args.calls} calls each.",
        "",
        "| call | µs per call | naive / this |",
        "|---|---:|---:|",
    ]
    for name, us in results.items():
        lines.append(f"| {name} | {us:.2f} | {naive / us:.1f} |")
    lines += ["", "Target (issue 5): microseconds per call."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "predictor_speed.md").write_text("\n".join(lines) + "\n")

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh(list(results), list(results.values()), color="tab:blue")
    ax.set_xlabel("µs per call")
    ax.set_title("LatencyPredictor call cost")
    fig.tight_layout()
    fig.savefig(RESULTS / "predictor_speed.png", dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

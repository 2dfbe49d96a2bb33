"""Arrival schedules for the open-loop load driver: pure, seeded, bounded.

Each schedule is a sorted list of send offsets in seconds from the start of a run,
all in ``[0, duration_s)`` and at most ``max_count`` of them. The same arguments
always give the same list, so a benchmark's offered load is reproducible.
"""

from __future__ import annotations

import math

import numpy as np

from kserve.errors import InvalidArgument

# A schedule is materialised in memory; this bounds a typo (rate 1e9) to a clear error
# instead of a machine that swaps.
MAX_ARRIVALS = 10_000_000


def _check(name: str, value: float, *, zero_ok: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise InvalidArgument(f"{name} must be a finite number {bound}, got {value!r}")


def _bounds(duration_s: float, max_count: int | None, expected: float) -> int:
    """The count limit to apply, refusing schedules too large to hold."""
    _check("duration_s", duration_s)
    if max_count is not None and max_count < 0:
        raise InvalidArgument(f"max_count must be >= 0 or None, got {max_count}")
    limit = MAX_ARRIVALS if max_count is None else min(max_count, MAX_ARRIVALS)
    if max_count is None and expected > MAX_ARRIVALS:
        raise InvalidArgument(f"the schedule would hold ~{expected:.0f} arrivals, over {MAX_ARRIVALS}: "
                              "lower the rate or the duration, or set max_count")
    return limit


def _poisson_in(rng: np.random.Generator, rate_per_s: float, start: float, end: float) -> np.ndarray:
    """Arrival times of a Poisson process of this rate in [start, end)."""
    if rate_per_s == 0 or end <= start:
        return np.empty(0)
    # Given their count, Poisson arrivals in a window are uniform in it: exact, and one draw
    # per window instead of a loop over exponential gaps.
    n = rng.poisson(rate_per_s * (end - start))
    return np.sort(rng.uniform(start, end, n))


def poisson(rate_per_s: float, duration_s: float, seed: int, max_count: int | None = None) -> list[float]:
    """Poisson arrivals (exponential gaps, mean ``rate_per_s``) over ``duration_s`` seconds."""
    _check("rate_per_s", rate_per_s)
    limit = _bounds(duration_s, max_count, rate_per_s * duration_s)
    times = _poisson_in(np.random.default_rng(seed), rate_per_s, 0.0, duration_s)
    return [float(t) for t in times[:limit]]


def on_off(rate_on: float, rate_off: float, on_s: float, off_s: float, duration_s: float, seed: int,
           max_count: int | None = None) -> list[float]:
    """Bursty arrivals: Poisson at ``rate_on`` for ``on_s`` seconds, then at ``rate_off`` (0 for
    silence) for ``off_s`` seconds, repeated from an on period at 0 until ``duration_s``."""
    _check("rate_on", rate_on)
    _check("rate_off", rate_off, zero_ok=True)
    _check("on_s", on_s)
    _check("off_s", off_s, zero_ok=True)
    period = on_s + off_s
    limit = _bounds(duration_s, max_count, max(rate_on, rate_off) * duration_s)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    count = 0
    for k in range(math.ceil(duration_s / period)):
        start = k * period
        for rate, lo, hi in ((rate_on, start, start + on_s), (rate_off, start + on_s, start + period)):
            part = _poisson_in(rng, rate, lo, min(hi, duration_s))
            parts.append(part)
            count += len(part)
        if count >= limit:
            break
    times = np.concatenate(parts) if parts else np.empty(0)
    return [float(t) for t in times[:limit]]


def constant(rate_per_s: float, duration_s: float, max_count: int | None = None) -> list[float]:
    """Evenly spaced arrivals, ``1 / rate_per_s`` apart, the first at 0 (needs no seed)."""
    _check("rate_per_s", rate_per_s)
    limit = _bounds(duration_s, max_count, rate_per_s * duration_s)
    # index * gap, not a running sum, so rounding does not drift over a long schedule
    n = min(limit, math.ceil(duration_s * rate_per_s))
    times = [i / rate_per_s for i in range(n)]
    return [t for t in times if t < duration_s]

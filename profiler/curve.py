"""Execute time as a function of input size: a monotone piecewise-linear curve.

The predictor keeps one per (model, instance class, percentile), over the input
elements of an execution (``profile.request_elements``). Points come from the offline
profile (exact sizes) and from live traffic, bucketed geometrically so a model served
at every sequence length from 1 to 512 keeps a few dozen windows, not hundreds.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

BUCKETS_PER_OCTAVE = 4
"""Live observations share a window when their elements are within a factor 2**(1/4)
(about 19%) of each other: fine enough that a bucket's p99 is close to each size's,
coarse enough that a window fills at a few requests per size."""


def _bucket_floor(k: int) -> int:
    return math.ceil(2.0 ** (k / BUCKETS_PER_OCTAVE))


def size_bucket(elements: int) -> tuple[int, int]:
    """(lowest, one past the highest) element count of ``elements``' bucket; sizes 1..8
    each get their own (the grid is finer than integers there)."""
    e = max(1, elements)
    k = math.floor(BUCKETS_PER_OCTAVE * math.log2(e))
    # float log2 may land one bucket off at an exact power; settle it with integers
    while _bucket_floor(k + 1) <= e:
        k += 1
    while _bucket_floor(k) > e:
        k -= 1
    lo = _bucket_floor(k)
    hi = _bucket_floor(k + 1)
    while hi <= lo:  # below 8 elements several k share a floor: the next distinct one
        k += 1
        hi = _bucket_floor(k + 1)
    return lo, hi


class SizeCurve:
    """Seconds at a number of input elements, from measured (elements, seconds) points.

    - at a measured size: its value;
    - between two: linear interpolation (the curve is made non-decreasing first: a larger
      input is never predicted faster, whatever a noisy window says);
    - below the smallest: the smallest's value (fixed overheads dominate there);
    - above the largest: the larger of the last segment extended and the largest point
      scaled by the size ratio (``extrapolate``).
    """

    __slots__ = ("xs", "ys")

    def __init__(self, points: Iterable[tuple[int, float]]) -> None:
        merged: dict[int, float] = {}
        for x, y in points:
            merged[x] = max(y, merged.get(x, y))  # two batches of one size: the slower
        self.xs = sorted(merged)
        self.ys: list[float] = []
        running = 0.0
        for x in self.xs:
            running = max(running, merged[x])
            self.ys.append(running)

    def __bool__(self) -> bool:
        return bool(self.xs)

    def at(self, elements: int) -> float:
        xs, ys = self.xs, self.ys
        i = bisect.bisect_left(xs, elements)
        if i < len(xs) and xs[i] == elements:
            return ys[i]
        if i == 0:
            return ys[0]
        if i == len(xs):
            return self.extrapolate(elements)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (elements - x0) / (x1 - x0)

    def extrapolate(self, elements: int) -> float:
        """Above the largest measured size. Proportional scaling (the largest point's
        seconds per element, where fixed overheads are already amortised, held for the
        extra elements) is the floor: per-element cost does not fall past the measured
        range for dense kernels, so it never predicts low where the curve was flattening.
        Where it was steepening (attention is quadratic in sequence length), the last
        segment's slope is steeper than the chord from the origin and wins."""
        xs, ys = self.xs, self.ys
        x_hi, y_hi = xs[-1], ys[-1]
        scaled = y_hi * elements / x_hi
        if len(xs) == 1:
            return scaled
        slope = (y_hi - ys[-2]) / (x_hi - xs[-2])
        return max(scaled, y_hi + slope * (elements - x_hi))

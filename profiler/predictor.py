"""The latency predictor that admission and placement ask before acting.

Pure and clock-free: it only knows what it was told (a seeded profile and the
observations fed back), so it is deterministic in tests and in the simulator.
Each answer is a percentile (default p99) over a sliding window of the most
recent observations per (model, instance class, batch size); until a key has
enough live observations, the offline profile answers for it.

Told the request's input elements (``exec_time(..., elements=n)``), it answers from
the size curve instead: execute time over input elements (batch and every dynamic
dimension, ``profile.request_elements``), from the profile's size points and live
windows per size bucket (``curve``). Batch-only questions get the batch curve, as
before sizes were known; so does a size question while nothing is known by size.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

from profiler.curve import SizeCurve, size_bucket
from profiler.profile import (
    ClassProfile,
    LatencyStats,
    ModelProfile,
    SizePoint,
    percentile,
    percentile_upper,
)
from profiler.window import SortedWindow

ClassKey = tuple[str, str]  # (model, instance_class)


@dataclass(frozen=True, slots=True)
class PredictorConfig:
    window: int = 50
    """Most recent observations kept per (model, class, batch), per (model, class, size
    bucket) and per (model, class) for loads."""
    percentile: float = 99.0
    """Percentile answered when the caller does not ask for one."""
    min_live_observations: int = 10
    """Live observations a key needs before they replace the offline profile's numbers:
    a p99 over three samples is just their max, worse than a profile over hundreds."""
    conservative_tail: bool = True
    """Percentiles above the median take the upper closest rank instead of interpolating:
    over a window under 100 samples the p99 is then the window's max, never a value
    between the two largest that the next execution exceeds more often than 1%."""

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0.0 <= self.percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {self.percentile}")
        if self.min_live_observations < 1:
            raise ValueError(f"min_live_observations must be >= 1, got {self.min_live_observations}")


class _Window(SortedWindow):
    """Recent samples (``SortedWindow``: a percentile is a lookup, and a busy model's window
    changes on every execution) and how many were ever seen."""

    __slots__ = ("total", "conservative")

    def __init__(self, size: int, conservative: bool = True) -> None:
        super().__init__(size)
        self.total = 0  # all-time count, for the API's "observations"
        self.conservative = conservative

    def add(self, value: float) -> None:
        super().add(value)
        self.total += 1

    def percentile(self, pct: float) -> float:
        if self.conservative and pct > 50.0:
            return percentile_upper(self.ordered, pct)
        return percentile(self.ordered, pct)

    def stats(self) -> LatencyStats:
        return LatencyStats(p50_s=self.percentile(50.0), p99_s=self.percentile(99.0), n=len(self))


class _SizeWindow(_Window):
    """A size bucket's recent samples and the elements of each: the bucket's point sits
    at the smallest size in its window, so every sample behind the percentile was at
    least that large (conservative within the bucket, exact when it holds one size)."""

    __slots__ = ("_elements", "_min", "lo", "hi")

    def __init__(self, size: int, bucket: tuple[int, int], conservative: bool = True) -> None:
        super().__init__(size, conservative)
        self.lo, self.hi = bucket  # the element counts it holds: lo <= elements < hi
        self._elements: deque[int] = deque(maxlen=size)
        self._min: int | None = None

    def add_sized(self, value: float, elements: int) -> None:
        self.add(value)
        self._elements.append(elements)
        self._min = None

    def min_elements(self) -> int:
        if self._min is None:
            self._min = min(self._elements)
        return self._min


def _seed_value(stats: LatencyStats, pct: float) -> float:
    """A percentile from a p50/p99 summary: p50 below the median, p99 above p99,
    linear in between (the profile holds nothing finer)."""
    if pct <= 50.0:
        return stats.p50_s
    if pct >= 99.0:
        return stats.p99_s
    return stats.p50_s + (stats.p99_s - stats.p50_s) * (pct - 50.0) / 49.0


_Curve = tuple[list[int], list[float], dict[int, float], dict[int, float]]


@dataclass(slots=True)
class _ClassState:
    seed: ClassProfile | None = None
    exec_live: dict[int, _Window] = field(default_factory=dict)
    load_live: _Window | None = None
    warm_live: _Window | None = None  # loads from the instance's own artifact cache
    last_observed_at: float = 0.0
    size_live: dict[int, _SizeWindow] = field(default_factory=dict)  # by bucket floor
    # percentile -> (sorted batch sizes, non-decreasing seconds, each batch's own point,
    # batch size -> its seconds on the curve); dropped when a point it was built from moves
    curves: dict[float, _Curve] = field(default_factory=dict)
    size_curves: dict[float, SizeCurve] = field(default_factory=dict)  # dropped on every sized change

    def changed(self) -> None:
        self.curves.clear()
        self.size_curves.clear()


class LatencyPredictor:
    """``exec_time`` / ``load_time`` per (model key, instance class)."""

    def __init__(self, config: PredictorConfig | None = None) -> None:
        self.config = config or PredictorConfig()
        self._state: dict[ClassKey, _ClassState] = {}
        self._by_model: dict[str, set[str]] = {}

    # ---- feeding -------------------------------------------------------------------

    def _class_state(self, model: str, instance_class: str) -> _ClassState:
        key = (model, instance_class)
        st = self._state.get(key)
        if st is None:
            st = self._state[key] = _ClassState()
            self._by_model.setdefault(model, set()).add(instance_class)
        return st

    def seed_from_profile(self, model: str, instance_class: str, profile: ClassProfile) -> None:
        """Use an offline profile where live observations are still too few."""
        st = self._class_state(model, instance_class)
        st.seed = profile
        st.changed()

    def seeded(self, model: str, instance_class: str) -> bool:
        """Whether an offline profile seeds (model, instance_class)."""
        st = self._state.get((model, instance_class))
        return st is not None and st.seed is not None

    def observe_exec(self, model: str, instance_class: str, batch: int, seconds: float,
                     *, elements: int | None = None, at: float | None = None) -> None:
        """One real execution of ``batch`` requests took ``seconds``; ``elements`` (its
        input elements, ``profile.request_elements``) refines the size curve too; ``at``
        (epoch seconds, optional) only dates the snapshot."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        _check_seconds(seconds)
        if elements is not None:
            _check_elements(elements)
        st = self._class_state(model, instance_class)
        win = st.exec_live.get(batch)
        if win is None:
            win = st.exec_live[batch] = _Window(self.config.window, self.config.conservative_tail)
        win.add(seconds)  # sized or not: the batch curve answers batch-only callers as before
        if elements is not None:
            e = max(1, elements)
            bucket = size_bucket(e)
            sized = st.size_live.get(bucket[0])
            if sized is None:
                sized = st.size_live[bucket[0]] = _SizeWindow(self.config.window, bucket,
                                                              self.config.conservative_tail)
            sized.add_sized(seconds, e)
            st.size_curves.clear()
        # a p99 over 50 samples moves only when a new maximum arrives or the old one leaves
        # the window: a curve whose point for this batch stands is kept
        for pct in [q for q, curve in st.curves.items() if curve[2].get(batch) != self._point(st, batch, q)]:
            del st.curves[pct]
        if at is not None:
            st.last_observed_at = max(st.last_observed_at, at)

    def observe_load(self, model: str, instance_class: str, seconds: float,
                     *, at: float | None = None, warm: bool = False) -> None:
        """``warm``: the instance loaded the files from its own artifact cache (none sent)."""
        _check_seconds(seconds)
        st = self._class_state(model, instance_class)
        if warm:
            if st.warm_live is None:
                st.warm_live = _Window(self.config.window, self.config.conservative_tail)
            st.warm_live.add(seconds)
        else:
            if st.load_live is None:
                st.load_live = _Window(self.config.window, self.config.conservative_tail)
            st.load_live.add(seconds)
        if at is not None:
            st.last_observed_at = max(st.last_observed_at, at)

    def forget(self, model: str) -> None:
        """Drop everything about ``model`` (it was deleted)."""
        for cls_name in self._by_model.pop(model, set()):
            self._state.pop((model, cls_name), None)

    # ---- asking --------------------------------------------------------------------

    def exec_time(self, model: str, instance_class: str, batch: int,
                  percentile: float | None = None, *, elements: int | None = None) -> float | None:
        """Predicted seconds to execute a batch of ``batch``; None if nothing is known.

        With ``elements``, the answer of ``exec_time_for``. Without, by batch size:
        unmeasured batch sizes are interpolated linearly between the nearest measured
        ones; above the largest, extrapolated from the two largest (never below the
        largest's value); below the smallest, the smallest's value. Never zero
        unless zero was measured.
        """
        if elements is not None:
            return self.exec_time_for(model, instance_class, batch, elements, percentile)
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        st = self._state.get((model, instance_class))
        if st is None:
            return None
        pct = self.config.percentile if percentile is None else percentile
        curve = st.curves.get(pct)
        if curve is None:
            curve = st.curves[pct] = self._build_curve(st, pct)
        batches, values, _points, measured = curve
        v = measured.get(batch)
        if v is not None:
            return v
        if not batches:
            return None
        i = bisect.bisect_left(batches, batch)
        if i < len(batches) and batches[i] == batch:
            return values[i]
        if i == 0:
            return values[0]
        if i == len(batches):
            return _extrapolate(batches, values, batch)
        b0, b1 = batches[i - 1], batches[i]
        v0, v1 = values[i - 1], values[i]
        return v0 + (v1 - v0) * (batch - b0) / (b1 - b0)

    def exec_time_for(self, model: str, instance_class: str, batch: int, elements: int,
                      percentile: float | None = None) -> float | None:
        """Predicted seconds to execute ``batch`` requests of ``elements`` input elements in
        all (``profile.request_elements`` of the merged batch); None if nothing is known.

        From the size curve (``curve.SizeCurve``: interpolated between measured sizes,
        the smallest's time below them, conservative above them). While nothing is known
        by size (a profile stored before sizes were measured, no sized observation yet),
        the batch-size answer.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        _check_elements(elements)
        st = self._state.get((model, instance_class))
        if st is None:
            return None
        pct = self.config.percentile if percentile is None else percentile
        curve = st.size_curves.get(pct)
        if curve is None:
            curve = st.size_curves[pct] = SizeCurve(
                (e, _value(src, pct)) for e, _b, src in self._size_points(st))
        if not curve:
            return self.exec_time(model, instance_class, batch, pct)
        return curve.at(elements)

    def load_time(self, model: str, instance_class: str,
                  percentile: float | None = None, *, warm: bool = False) -> float | None:
        """Predicted seconds from 'load' to ready; None if nothing is known.

        Without enough live loads the profile's cold-store number answers, the
        conservative one. ``warm``: a load from the instance's own artifact cache: the live
        warm loads, else the profile's warm number; None when neither is known (the caller
        then counts it cold).
        """
        st = self._state.get((model, instance_class))
        if st is None:
            return None
        pct = self.config.percentile if percentile is None else percentile
        if warm:
            win = st.warm_live
            if win is not None and (len(win) >= self.config.min_live_observations
                                    or st.seed is None or st.seed.load_time_warm_s is None):
                return win.percentile(pct)
            if st.seed is not None and st.seed.load_time_warm_s is not None:
                return _seed_value(st.seed.load_time_warm_s, pct)
            return None
        live = st.load_live
        seed = None
        if st.seed is not None:
            seed = st.seed.load_time_cold_s or st.seed.load_time_warm_s
        if live is not None and (len(live) >= self.config.min_live_observations or seed is None):
            return live.percentile(pct)
        if seed is not None:
            return _seed_value(seed, pct)
        return None

    def known(self, model: str) -> list[str]:
        """Instance classes with anything known about ``model``."""
        return sorted(self._by_model.get(model, ()))

    def snapshot(self, model: str) -> ModelProfile:
        """What the predictor currently believes, in the stored profile's shape."""
        classes: dict[str, ClassProfile] = {}
        for cls_name in self.known(model):
            st = self._state[(model, cls_name)]
            seed = st.seed or ClassProfile()
            exec_stats = dict(seed.exec)
            live_total = 0
            for batch, win in st.exec_live.items():
                live_total += win.total
                if len(win) >= self.config.min_live_observations or batch not in exec_stats:
                    exec_stats[batch] = win.stats()
            observed_load = seed.load_time_observed_s
            if st.load_live is not None:
                live_total += st.load_live.total
                observed_load = st.load_live.stats()
            sizes = [SizePoint(elements=e, batch=b, stats=src if isinstance(src, LatencyStats) else src.stats())
                     for e, b, src in self._size_points(st)]
            classes[cls_name] = ClassProfile(
                load_time_cold_s=seed.load_time_cold_s,
                load_time_warm_s=seed.load_time_warm_s,
                load_time_observed_s=observed_load,
                exec=exec_stats,
                sizes=sizes,
                memory_bytes=seed.memory_bytes,
                observations=seed.observations + live_total,
                updated_at=max(seed.updated_at, st.last_observed_at),
            )
        return ModelProfile(classes=classes)

    # ---- internals -----------------------------------------------------------------

    def _size_points(self, st: _ClassState) -> list[tuple[int, int | None, LatencyStats | _SizeWindow]]:
        """(elements, batch, source) behind the size curve: the profile's points, except
        where a live bucket holds enough observations to replace those in its range; a
        thinner live bucket only where the profile has nothing in its range."""
        seed = list(st.seed.sizes) if st.seed is not None else []
        out: list[tuple[int, int | None, LatencyStats | _SizeWindow]] = []
        for win in st.size_live.values():
            lo, hi = win.lo, win.hi
            if seed and any(lo <= p.elements < hi for p in seed):
                if len(win) < self.config.min_live_observations:
                    continue  # too thin to overrule the profile in its range
                seed = [p for p in seed if not lo <= p.elements < hi]
            out.append((win.min_elements(), None, win))
        out.extend((p.elements, p.batch, p.stats) for p in seed)
        return out  # unordered: SizeCurve and ClassProfile.sizes sort

    def _point(self, st: _ClassState, batch: int, pct: float) -> float | None:
        """The batch's own point on the curve (before the running maximum): its live window's
        once it holds enough, else the profile's, else the thinner window's."""
        win = st.exec_live.get(batch)
        seed = st.seed.exec.get(batch) if st.seed is not None else None
        if win is not None and (len(win) >= self.config.min_live_observations or seed is None):
            return win.percentile(pct)
        return _seed_value(seed, pct) if seed is not None else None

    def _build_curve(self, st: _ClassState, pct: float) -> _Curve:
        points: dict[int, float] = {}
        for batch in {*(st.seed.exec if st.seed is not None else ()), *st.exec_live}:
            v = self._point(st, batch, pct)
            if v is not None:
                points[batch] = v
        batches = sorted(points)
        values: list[float] = []
        running = 0.0
        for b in batches:
            # A bigger batch is never faster; noisy windows can say otherwise, and an
            # admission decision must not pick a bigger batch because of noise.
            running = max(running, points[b])
            values.append(running)
        return batches, values, points, dict(zip(batches, values, strict=True))


def _extrapolate(batches: list[int], values: list[float], batch: int) -> float:
    b_hi, v_hi = batches[-1], values[-1]
    if len(batches) == 1:
        return v_hi * batch / b_hi
    b_lo, v_lo = batches[-2], values[-2]
    slope = max(0.0, (v_hi - v_lo) / (b_hi - b_lo))
    return v_hi + slope * (batch - b_hi)


def _value(src: LatencyStats | _Window, pct: float) -> float:
    return _seed_value(src, pct) if isinstance(src, LatencyStats) else src.percentile(pct)


def _check_elements(elements: int) -> None:
    if elements < 0:
        raise ValueError(f"elements must be >= 0 (a request's input elements), got {elements}")


def _check_seconds(seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds >= 0.0):
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")

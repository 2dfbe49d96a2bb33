"""What a dispatch costs beyond the model's execute time, learned from every dispatch.

The predictor knows execute time: what the instance reports it computed. An instance
slot is held longer than that: the request travels to the instance (and, on the
embedded worker, into the model's sandboxed host) and its answer comes back. On a
fast model that round trip is most of the time, and a scheduler that counted only the
compute would chain dispatches that end later than it thinks, admit work that then
misses its deadline, and leave the instance idle between them. So every completed
dispatch's round trip minus its reported compute is kept per model (its tensors' size
is part of the cost), and the core's execute times are the predictor's plus this
overhead at a high percentile. A model never dispatched yet gets the overhead seen on
all models.
"""

from __future__ import annotations

import math
from collections import deque


class _Samples:
    __slots__ = ("values", "cached", "since")

    def __init__(self, window: int) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.cached = 0.0  # the percentile, re-read every few samples
        self.since = 0  # samples since it was


class DispatchOverhead:
    """Per-model round trip minus compute, at ``percentile`` over the last ``window``."""

    def __init__(self, window: int = 200, percentile: float = 95.0, refresh_every: int = 16) -> None:
        if window < 1 or refresh_every < 1:
            raise ValueError("window and refresh_every must be >= 1")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")
        self.window, self.pct, self.refresh_every = window, percentile, refresh_every
        self._models: dict[str, _Samples] = {}
        self._all = _Samples(window)

    def observe(self, model: str, round_trip_s: float, compute_s: float | None) -> None:
        """One dispatch answered; without a reported compute time nothing is learned."""
        if compute_s is None or not math.isfinite(round_trip_s) or not math.isfinite(compute_s):
            return
        extra = max(0.0, round_trip_s - compute_s)
        s = self._models.get(model)
        if s is None:
            s = self._models[model] = _Samples(self.window)
        # the percentile is re-read every few samples (at once while a window is short):
        # the core asks for it on every prediction, far more often than dispatches end
        for samples in (s, self._all):
            samples.values.append(extra)
            samples.since += 1
            if samples.since >= self.refresh_every or len(samples.values) < self.refresh_every:
                self._refresh(samples)

    def seconds(self, model: str) -> float:
        s = self._models.get(model)
        if s is None or not s.values:
            return self._all.cached
        return s.cached

    def _refresh(self, s: _Samples) -> None:
        ordered = sorted(s.values)
        # nearest rank: a small window's answer is one of its samples, never below the rank
        rank = max(1, math.ceil(self.pct / 100.0 * len(ordered)))
        s.cached = ordered[rank - 1]
        s.since = 0

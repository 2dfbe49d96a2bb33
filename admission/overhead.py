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
all models, and so does one whose own newest dispatch is older than ``stale_s``: a model
that admission keeps refusing is never dispatched, so its own numbers (say, the slow first
dispatches after its cold load, or a burst of contention) would otherwise stand for good
and refuse it for good.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from profiler.window import SortedWindow


class RollingPercentile(SortedWindow):
    """The ``percentile`` of the last ``window`` values (nearest rank: a small window's
    answer is one of its values, never below the rank), re-read every ``refresh_every``
    values (at once while the window is short): readers ask far more often than values
    arrive. A re-read is a lookup in the sorted copy (``SortedWindow``)."""

    __slots__ = ("pct", "refresh_every", "value", "_since")

    def __init__(self, window: int, percentile: float, refresh_every: int = 16) -> None:
        if window < 1 or refresh_every < 1:
            raise ValueError("window and refresh_every must be >= 1")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")
        super().__init__(window)
        self.pct, self.refresh_every = percentile, refresh_every
        self.value = 0.0  # the percentile as last read (0 while empty)
        self._since = 0

    def add(self, v: float) -> None:
        super().add(v)
        self._since += 1
        if self._since >= self.refresh_every or len(self.values) < self.refresh_every:
            self.refresh()

    def refresh(self) -> None:
        self._since = 0
        ordered = self.ordered
        if not ordered:
            self.value = 0.0
            return
        self.value = ordered[max(1, math.ceil(self.pct / 100.0 * len(ordered))) - 1]


class DispatchOverhead:
    """Per-model round trip minus compute, at ``percentile`` over the last ``window``;
    all models' while a model's own are missing or older than ``stale_s`` (``clock``)."""

    def __init__(self, window: int = 200, percentile: float = 95.0, refresh_every: int = 16,
                 stale_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.pct, self.refresh_every = window, percentile, refresh_every
        self.stale_s, self.clock = stale_s, clock
        self._models: dict[str, RollingPercentile] = {}
        self._last: dict[str, float] = {}  # model -> when its newest dispatch was learned
        self._all = RollingPercentile(window, percentile, refresh_every)

    def observe(self, model: str, round_trip_s: float, compute_s: float | None) -> None:
        """One dispatch answered; without a reported compute time nothing is learned."""
        if compute_s is None or not math.isfinite(round_trip_s) or not math.isfinite(compute_s):
            return
        extra = max(0.0, round_trip_s - compute_s)
        s = self._models.get(model)
        if s is None:
            s = self._models[model] = RollingPercentile(self.window, self.pct, self.refresh_every)
        s.add(extra)
        self._last[model] = self.clock()
        self._all.add(extra)

    def seconds(self, model: str) -> float:
        s = self._models.get(model)
        if s is None or not len(s) or self.clock() - self._last[model] > self.stale_s:
            return self._all.value
        return s.value

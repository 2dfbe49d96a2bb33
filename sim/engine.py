"""The simulator's discrete-event engine and the virtual clock the cores are given.

Events are ``(time, seq, callback, argument)`` on a heap: earliest first, and among
events at the same instant, the one scheduled first (``seq``), so a run is a pure
function of its inputs and seed. Nothing here reads the wall clock: the cores see
only ``Clock.now``, which the engine advances to each event's time before running it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

Callback = Callable[[Any], None]


class Clock:
    """Virtual seconds since the simulation began: what the cores are told ``now`` is."""

    __slots__ = ("now",)

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Engine:
    """A heap of timed callbacks run in time order on one virtual clock."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self._heap: list[tuple[float, int, Callback, Any]] = []
        self._seq = 0
        self.events = 0  # callbacks run so far

    @property
    def now(self) -> float:
        return self.clock.now

    def at(self, t: float, callback: Callback, arg: Any = None) -> None:
        """Run ``callback(arg)`` at virtual time ``t`` (never before now)."""
        if not t >= self.clock.now:  # also refuses NaN
            if math.isnan(t):
                raise ValueError("event time is NaN")
            t = self.clock.now
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, callback, arg))

    def after(self, delay_s: float, callback: Callback, arg: Any = None) -> None:
        self.at(self.clock.now + delay_s, callback, arg)

    def pending(self) -> int:
        return len(self._heap)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, t_end: float) -> None:
        """Run every event due no later than ``t_end``; the clock ends at ``t_end``."""
        heap, clock, pop = self._heap, self.clock, heapq.heappop
        n = 0
        while heap and heap[0][0] <= t_end:
            t, _seq, callback, arg = pop(heap)
            clock.now = t
            callback(arg)
            n += 1
        self.events += n
        clock.now = max(clock.now, t_end)

"""A sliding window of the last ``size`` numbers with a sorted copy kept in step.

One insertion and one removal per value (``bisect``), so a percentile over the window is an
index, not a sort: the predictor's windows and admission's rolling percentiles change on
nearly every request and are read more often still.
"""

from __future__ import annotations

import bisect
from collections import deque


class SortedWindow:
    __slots__ = ("values", "ordered")

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)
        """Oldest first."""
        self.ordered: list[float] = []
        """The same values, ascending."""

    def __len__(self) -> int:
        return len(self.values)

    def add(self, v: float) -> None:
        if v != v:
            raise ValueError("a sorted window takes numbers, got NaN")
        if len(self.values) == self.values.maxlen:
            self._forget(self.values[0])
        self.values.append(v)
        bisect.insort(self.ordered, v)

    def drop_oldest(self) -> None:
        self._forget(self.values.popleft())

    def _forget(self, v: float) -> None:
        del self.ordered[bisect.bisect_left(self.ordered, v)]

"""How late admitted requests finish against what admission predicted, learned online.

Admission refuses a request when its predicted completion falls after its deadline. The
prediction counts the queue ahead, the load and the execute time at the predictor's
percentile, and the dispatch round trip; it cannot see everything that delays a
request: later arrivals with earlier deadlines run first, batches are formed after it
was admitted, executions vary, and the control plane's own event loop is busy under a
flood. Each of these is small and each is already bounded where it can be, but together
they made about 1% of admitted requests miss at full load. A promise kept 99.9% of the
time needs their sum.

So the core keeps, for every batch it dispatches, when it expects the answer (the
instance's planned busy-until), and when the batch completes, each member's error: actual
minus planned. A batch that grew after its members were admitted is in that plan (the
batch choice still meets every deadline in it), so what is learned is what the plan did
not foresee: a longer execute time or round trip, or the shell's own delay, by which
everything queued behind on that instance is late too. The margin admission adds is a
high percentile of the recent errors (never negative). Recent means both the last
``window`` errors and the last ``horizon_s`` seconds: a margin that made admission refuse
everything would otherwise never see a new error and never shrink. Once too few recent
errors are left to say anything, the last margin decays (halving every ``half_life_s``)
instead of dropping to zero: after an overload a margin that fell to zero at once let a
burst in that overloaded the instance again, and one that stood for the whole horizon
refused nearly everything (at 1x capacity on one shared core: a 106 ms margin for 10 s).

The scheduler keeps one over every model's batches, for a request with work ahead of it,
and one per model, for a request on an idle instance, where only its own batch can make
it late.

Pure: every call takes ``now``.
"""

from __future__ import annotations

from collections import deque

from admission.overhead import RollingPercentile


class AdmissionCalibration:
    def __init__(self, window: int = 1000, percentile: float = 99.0, horizon_s: float = 3.0,
                 min_samples: int = 50, refresh_every: int = 25, half_life_s: float = 1.0) -> None:
        if horizon_s <= 0 or min_samples < 1 or half_life_s <= 0:
            raise ValueError("horizon_s and half_life_s must be > 0 and min_samples >= 1")
        self.horizon_s, self.min_samples, self.half_life_s = horizon_s, min_samples, half_life_s
        self._last = (0.0, 0.0)  # (when, margin) the last margin read from enough errors
        self._errors = RollingPercentile(window, percentile, refresh_every)
        self._times: deque[float] = deque(maxlen=window)  # when each error was seen, oldest first

    def observe(self, now: float, error_s: float) -> None:
        """A request finished ``error_s`` later than predicted (negative: earlier)."""
        self._expire(now)
        self._times.append(now)
        self._errors.add(error_s)

    def margin_s(self, now: float) -> float:
        """What admission adds to a prediction now: 0 until enough recent errors are known."""
        if self._times and self._times[0] < now - self.horizon_s:
            self._expire(now)
            self._errors.refresh()
        if len(self._errors) < self.min_samples:
            when, margin = self._last
            return margin * 0.5 ** (max(0.0, now - when) / self.half_life_s) if margin > 0 else 0.0
        margin = max(0.0, self._errors.value)
        self._last = (now, margin)
        return margin

    def settled(self, now: float) -> bool:
        """Whether enough recent errors are known for ``margin_s`` to say something."""
        if self._times and self._times[0] < now - self.horizon_s:
            self._expire(now)
            self._errors.refresh()
        return len(self._errors) >= self.min_samples

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] < now - self.horizon_s:
            self._times.popleft()
            self._errors.drop_oldest()

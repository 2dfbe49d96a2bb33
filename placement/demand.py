"""Per-model demand: a smoothed request rate and its trend, on an injected clock (issue 12).

Each model keeps two exponentially decaying event rates, a short one (``short_tau_s``) that
follows a change within seconds and a long one (``long_tau_s``) that is steady enough to keep
or evict by. At time t the estimate is ``sum over arrivals a of exp(-(t - a)/tau) / tau``:
``count`` events at one instant add ``count / tau``, and the sum decays between them, so no
window or buffer is kept. Demand is rising when the short rate is well above the long one;
the planner prefetches and replicates on ``forecast`` (the short rate pushed one more step
along the trend) and keeps or removes copies on ``sustained`` (the larger of the two, so a
copy stays until both have fallen).

Pure: no time is read here; the caller says when each arrival happened and when it asks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Demand:
    """A model's request rate (requests per second) as the planner sees it."""

    rate_per_s: float = 0.0
    """Long-horizon rate: what eviction cost and the removal of copies go by."""
    short_rate_per_s: float = 0.0
    """Short-horizon rate: follows a rise within seconds."""
    rising_ratio: float = 1.5
    """Short over long above which demand counts as rising."""

    @property
    def sustained(self) -> float:
        return max(self.rate_per_s, self.short_rate_per_s)

    @property
    def falling(self) -> bool:
        return self.short_rate_per_s * self.rising_ratio < self.rate_per_s

    @property
    def keep_value(self) -> float:
        """The rate a resident copy is worth keeping for: the recent rate while demand falls
        (a popularity shift makes yesterday's hot model cheap to lose within seconds, not
        after the long horizon), else ``sustained``."""
        return self.short_rate_per_s if self.falling else self.sustained

    @property
    def rising(self) -> bool:
        return self.short_rate_per_s > 0.0 and self.short_rate_per_s > self.rising_ratio * self.rate_per_s

    @property
    def forecast(self) -> float:
        """The rate expected a little ahead: the short rate plus its lead over the long one."""
        return self.short_rate_per_s + max(0.0, self.short_rate_per_s - self.rate_per_s)


@dataclass(slots=True)
class _Rates:
    short: float
    long: float
    at: float


class DemandTracker:
    """Smoothed arrival rates per model. Mutable, deterministic, clock-injected; arrivals
    reported out of order are folded in at the latest time seen (never a negative decay)."""

    def __init__(self, short_tau_s: float = 10.0, long_tau_s: float = 120.0,
                 rising_ratio: float = 1.5, forget_below_per_s: float = 1e-4) -> None:
        if not 0.0 < short_tau_s < long_tau_s:
            raise ValueError(f"need 0 < short_tau_s < long_tau_s, got {short_tau_s} and {long_tau_s}")
        if rising_ratio <= 1.0:
            raise ValueError(f"rising_ratio must be above 1, got {rising_ratio}")
        self.short_tau_s = short_tau_s
        self.long_tau_s = long_tau_s
        self.rising_ratio = rising_ratio
        self.forget_below_per_s = forget_below_per_s
        self._rates: dict[str, _Rates] = {}

    def _decayed(self, r: _Rates, now: float) -> tuple[float, float]:
        dt = max(0.0, now - r.at)
        return r.short * math.exp(-dt / self.short_tau_s), r.long * math.exp(-dt / self.long_tau_s)

    def observe(self, model: str, now: float, count: int = 1) -> None:
        """``count`` requests for ``model`` arrived at ``now`` (admitted or not: demand is
        what tenants asked for)."""
        if count <= 0:
            return
        r = self._rates.get(model)
        if r is None:
            self._rates[model] = _Rates(count / self.short_tau_s, count / self.long_tau_s, now)
            return
        short, long = self._decayed(r, now)
        r.short = short + count / self.short_tau_s
        r.long = long + count / self.long_tau_s
        r.at = max(r.at, now)

    def demand(self, model: str, now: float) -> Demand:
        r = self._rates.get(model)
        if r is None:
            return Demand(rising_ratio=self.rising_ratio)
        short, long = self._decayed(r, now)
        return Demand(long, short, self.rising_ratio)

    def snapshot(self, now: float) -> dict[str, Demand]:
        """Every model with demand left at ``now``; models whose rates decayed below
        ``forget_below_per_s`` are dropped (the tracker's size follows the active set)."""
        out: dict[str, Demand] = {}
        gone = []
        exp, short_tau, long_tau = math.exp, self.short_tau_s, self.long_tau_s
        ratio, floor = self.rising_ratio, self.forget_below_per_s
        # inlined demand(): a snapshot reads every model with demand, thousands at a time
        for model, r in self._rates.items():
            dt = now - r.at if now > r.at else 0.0
            short, long = r.short * exp(-dt / short_tau), r.long * exp(-dt / long_tau)
            if short < floor and long < floor:
                gone.append(model)
                continue
            out[model] = Demand(long, short, ratio)
        for model in gone:
            del self._rates[model]
        return out

    def view(self, now: float, only: Mapping[str, object] | None = None) -> DemandView:
        """``snapshot(now)`` computed per model when asked (restricted to ``only``'s keys):
        a pass that reads a few models' demand does not pay for every model's. Valid while
        no arrival is observed (a synchronous planner call)."""
        return DemandView(self, now, only)

    def forget(self, model: str) -> None:
        """A deleted model."""
        self._rates.pop(model, None)


class DemandView(Mapping[str, Demand]):
    """What ``DemandTracker.snapshot`` would answer, one model at a time (memoised)."""

    def __init__(self, tracker: DemandTracker, now: float, only: Mapping[str, object] | None) -> None:
        self._tracker, self._now, self._only = tracker, now, only
        self._memo: dict[str, Demand | None] = {}
        self._all: dict[str, Demand] | None = None

    def _one(self, model: str) -> Demand | None:
        if model in self._memo:
            return self._memo[model]
        d = None
        r = self._tracker._rates.get(model)
        if r is not None and (self._only is None or model in self._only):
            t = self._tracker
            short, long = t._decayed(r, self._now)
            if short >= t.forget_below_per_s or long >= t.forget_below_per_s:
                d = Demand(long, short, t.rising_ratio)
        self._memo[model] = d
        return d

    def __getitem__(self, model: str) -> Demand:
        d = self._one(model)
        if d is None:
            raise KeyError(model)
        return d

    def get(self, model: str, default: Demand | None = None) -> Demand | None:  # type: ignore[override]
        d = self._one(model)
        return default if d is None else d

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self._one(model) is not None

    def _every(self) -> dict[str, Demand]:
        if self._all is None:
            self._all = {m: d for m in list(self._tracker._rates) if (d := self._one(m)) is not None}
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._every())

    def __len__(self) -> int:
        return len(self._every())


def decayed(d: Demand, dt_s: float, short_tau_s: float, long_tau_s: float) -> Demand:
    """``d`` as it stands ``dt_s`` later with no arrivals (a peer's published demand, aged)."""
    dt = max(0.0, dt_s)
    return Demand(d.rate_per_s * math.exp(-dt / long_tau_s), d.short_rate_per_s * math.exp(-dt / short_tau_s),
                  d.rising_ratio)


def merged(*parts: Mapping[str, Demand]) -> dict[str, Demand]:
    """Several replicas' demand as one: rates add (each replica sees its own arrivals)."""
    out: dict[str, Demand] = {}
    for part in parts:
        for model, d in part.items():
            cur = out.get(model)
            out[model] = d if cur is None else Demand(cur.rate_per_s + d.rate_per_s,
                                                      cur.short_rate_per_s + d.short_rate_per_s,
                                                      cur.rising_ratio)
    return out
